"""A local Replicate predictions API hosting Nano Banana models: the unmodified official
`replicate` client talks to it over loopback, and it sends signed webhooks."""

from bananabatch.emulator.base.lane_faults import LaneFaults
from bananabatch.emulator.replicate.server import ReplicateEmulatorServer
from bananabatch.emulator.replicate.store import ReplicateEmulatorConfig, ReplicateEmulatorState

__all__ = [
    "LaneFaults",
    "ReplicateEmulatorConfig",
    "ReplicateEmulatorServer",
    "ReplicateEmulatorState",
]
