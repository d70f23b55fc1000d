"""Run the OpenAI Batch emulator in a background thread on a free loopback port (tests, the
local runner); the serving is shared by every emulator (emulator/base/server.py)."""

from __future__ import annotations

from bananabatch.emulator.base.server import LoopbackServer
from bananabatch.emulator.openai.app import create_app
from bananabatch.emulator.openai.store import OpenAIEmulatorConfig, OpenAIEmulatorState


class OpenAIEmulatorServer(LoopbackServer[OpenAIEmulatorState]):
    """`with OpenAIEmulatorServer(config) as emu:` serves on `emu.base_url` (".../v1", what
    the SDK's base_url and OPENAI_BASE_URL take); `emu.state` is the control API."""

    thread_name = "openai-emulator"
    root = "/v1"

    def __init__(
        self, config: OpenAIEmulatorConfig | None = None, *, host: str = "127.0.0.1"
    ) -> None:
        state = OpenAIEmulatorState(config)
        super().__init__(state, create_app(state), host=host)
