"""Run the emulator: in a background thread on a free loopback port (tests, `local run`), or
in the foreground (`bananabatch emulator`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType

import uvicorn

from bananabatch.emulator.app import create_app
from bananabatch.emulator.store import EmulatorConfig, EmulatorState
from bananabatch.log import get_logger

_log = get_logger("bananabatch.emulator")


class EmulatorServer:
    """`with EmulatorServer(config) as emu:` serves on `emu.base_url`; `emu.state` is the
    control API. Stops and removes its files on exit."""

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1") -> None:
        self.state = EmulatorState(config)
        self.host = host
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        # Bound and listening before the thread starts: connections queue in the backlog
        # until uvicorn accepts them, so callers never race the startup.
        sock = _listen(self.host, 0)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.state))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"gemini-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, *, now: bool = False) -> None:
        """now: do not wait for requests in flight (the client is gone: Ctrl-C)."""
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = now
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._server = self._thread = None
        self.state.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(now=exc_type is not None)


def run_forever(
    host: str,
    port: int,
    config: EmulatorConfig | None = None,
    *,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C). on_listening(base_url) is called once the port is
    bound, so nothing announces a server that a busy port then refuses."""
    sock = _listen(host, port)
    state = EmulatorState(config)
    bound = sock.getsockname()[1]
    _log.info("Gemini Batch emulator listening", extra={"base_url": f"http://{host}:{bound}"})
    if on_listening is not None:
        on_listening(f"http://{host}:{bound}")
    try:
        uvicorn.Server(_uvicorn_config(state)).run(sockets=[sock])
    finally:
        state.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it every keep-alive request waits out a 40 ms
    # delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _uvicorn_config(state: EmulatorState) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(state),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
