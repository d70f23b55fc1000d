"""An OpenAI-compatible images endpoint (a third-party gateway serving Nano Banana models):
the unmodified `openai` SDK's `images.generate` talks to it over loopback."""

from bananabatch.emulator.base.lane_faults import LaneFaults
from bananabatch.emulator.compat.server import CompatEmulatorServer
from bananabatch.emulator.compat.store import CompatEmulatorConfig, CompatEmulatorState

__all__ = ["CompatEmulatorConfig", "CompatEmulatorServer", "CompatEmulatorState", "LaneFaults"]
