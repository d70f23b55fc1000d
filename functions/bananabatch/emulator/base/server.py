"""Serve an emulator's Starlette app: in a background thread on a free loopback port (tests,
`local run`), or in the foreground (`bananabatch emulator`)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import ClassVar, Generic, Protocol, Self, TypeVar

import uvicorn
from starlette.applications import Starlette

from bananabatch.log import get_logger

_log = get_logger("bananabatch.emulator")


class Closeable(Protocol):
    def close(self) -> None: ...


StateT = TypeVar("StateT", bound=Closeable)


class LoopbackServer(Generic[StateT]):
    """`with Server(...) as emu:` serves on `emu.base_url`; `emu.state` is the control API.
    Stops and closes its state (which removes its files) on exit. Subclasses name the thread
    (`thread_name`) and the path clients put under the host (`root`, e.g. "/v1")."""

    thread_name: ClassVar[str] = "emulator"
    root: ClassVar[str] = ""

    def __init__(self, state: StateT, app: Starlette, *, host: str = "127.0.0.1") -> None:
        self.state = state
        self.host = host
        self.port = 0
        self._app = app
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.root

    def start(self) -> Self:
        # Bound and listening before the thread starts: connections queue in the backlog
        # until uvicorn accepts them, so callers never race the startup.
        sock = listen(self.host, 0)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self._app))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"{self.thread_name}-{self.port}",
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(now=exc_type is not None)


def serve_forever(
    host: str,
    port: int,
    state: Closeable,
    app: Starlette,
    *,
    label: str,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C). on_listening(base_url) is called once the port is
    bound, so nothing announces a server that a busy port then refuses."""
    try:
        sock = listen(host, port)
        bound = sock.getsockname()[1]
        _log.info(f"{label} listening", extra={"base_url": f"http://{host}:{bound}"})
        if on_listening is not None:
            on_listening(f"http://{host}:{bound}")
        uvicorn.Server(uvicorn_config(app)).run(sockets=[sock])
    finally:
        state.close()


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it every keep-alive request waits out a 40 ms
    # delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def uvicorn_config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
