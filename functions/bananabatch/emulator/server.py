"""Run the emulator: in a background thread on a free loopback port (tests, `local run`), or
in the foreground (`bananabatch emulator`). The serving itself is shared by every emulator
(emulator/base/server.py)."""

from __future__ import annotations

from collections.abc import Callable

from bananabatch.emulator.app import create_app
from bananabatch.emulator.base.server import LoopbackServer, serve_forever
from bananabatch.emulator.store import EmulatorConfig, EmulatorState


class EmulatorServer(LoopbackServer[EmulatorState]):
    """`with EmulatorServer(config) as emu:` serves on `emu.base_url`; `emu.state` is the
    control API. Stops and removes its files on exit."""

    thread_name = "gemini-emulator"

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1") -> None:
        state = EmulatorState(config)
        super().__init__(state, create_app(state), host=host)


def run_forever(
    host: str,
    port: int,
    config: EmulatorConfig | None = None,
    *,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C). on_listening(base_url) is called once the port is
    bound, so nothing announces a server that a busy port then refuses."""
    state = EmulatorState(config)
    serve_forever(
        host,
        port,
        state,
        create_app(state),
        label="Gemini Batch emulator",
        on_listening=on_listening,
    )
