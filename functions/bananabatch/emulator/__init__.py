"""A local Gemini Batch API: the unmodified google-genai SDK talks to it over loopback.

`EmulatorServer(config)` runs it in a thread for tests and `bananabatch local run`;
`run_forever(host, port, config)` serves it in the foreground for `bananabatch emulator`.
"""

from bananabatch.emulator.faults import FaultPlan, JobFault, RowFault
from bananabatch.emulator.server import EmulatorServer, run_forever
from bananabatch.emulator.store import EmulatorConfig, EmulatorState, ManualClock

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "FaultPlan",
    "JobFault",
    "ManualClock",
    "RowFault",
    "run_forever",
]
