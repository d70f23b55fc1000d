"""Run the OpenAI Batch emulator in a background thread on a free loopback port (tests, the
local runner) or in the foreground."""

from __future__ import annotations

import threading
from types import TracebackType

import uvicorn

from bananabatch.emulator.openai.app import create_app
from bananabatch.emulator.openai.store import OpenAIEmulatorConfig, OpenAIEmulatorState
from bananabatch.emulator.server import _listen


class OpenAIEmulatorServer:
    """`with OpenAIEmulatorServer(config) as emu:` serves on `emu.base_url` (".../v1", what
    the SDK's base_url and OPENAI_BASE_URL take); `emu.state` is the control API."""

    def __init__(
        self, config: OpenAIEmulatorConfig | None = None, *, host: str = "127.0.0.1"
    ) -> None:
        self.state = OpenAIEmulatorState(config)
        self.host = host
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> OpenAIEmulatorServer:
        sock = _listen(self.host, 0)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.state),
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
        )
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"openai-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, *, now: bool = False) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = now
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._server = self._thread = None
        self.state.close()

    def __enter__(self) -> OpenAIEmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(now=exc_type is not None)
