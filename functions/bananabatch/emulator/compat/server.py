"""Run the OpenAI-compatible images emulator on a free loopback port (tests, the local run)."""

from __future__ import annotations

from bananabatch.emulator.base.server import LoopbackServer
from bananabatch.emulator.compat.app import create_app
from bananabatch.emulator.compat.store import CompatEmulatorConfig, CompatEmulatorState


class CompatEmulatorServer(LoopbackServer[CompatEmulatorState]):
    """`with CompatEmulatorServer(config) as emu:` serves on `emu.base_url` (".../v1", what
    the SDK's base_url takes); `emu.state` is the control API."""

    thread_name = "compat-emulator"
    root = "/v1"

    def __init__(
        self, config: CompatEmulatorConfig | None = None, *, host: str = "127.0.0.1"
    ) -> None:
        state = CompatEmulatorState(config)
        super().__init__(state, create_app(state), host=host)

    def stop(self, *, now: bool = False) -> None:
        # A stalled answer would hold the server's shutdown for its whole wait.
        self.state.release_stalled()
        super().stop(now=now)
