"""Run the Replicate emulator on a free loopback port (tests, the local run)."""

from __future__ import annotations

from bananabatch.emulator.base.server import LoopbackServer
from bananabatch.emulator.replicate.app import create_app
from bananabatch.emulator.replicate.store import ReplicateEmulatorConfig, ReplicateEmulatorState


class ReplicateEmulatorServer(LoopbackServer[ReplicateEmulatorState]):
    """`with ReplicateEmulatorServer(config) as emu:` serves on `emu.base_url` (what the
    client's base_url and REPLICATE_BASE_URL take); `emu.state` is the control API."""

    thread_name = "replicate-emulator"

    def __init__(
        self, config: ReplicateEmulatorConfig | None = None, *, host: str = "127.0.0.1"
    ) -> None:
        state = ReplicateEmulatorState(config)
        super().__init__(state, create_app(state), host=host)

    def stop(self, *, now: bool = False) -> None:
        # A stalled answer would hold the server's shutdown for its whole wait.
        self.state.release_stalled()
        super().stop(now=now)
