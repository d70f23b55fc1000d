"""A local OpenAI Batch API for image requests: the unmodified `openai` SDK talks to it over
loopback (`base_url` / OPENAI_BASE_URL = `OpenAIEmulatorServer.base_url`)."""

from bananabatch.emulator.openai.server import OpenAIEmulatorServer
from bananabatch.emulator.openai.store import (
    ManualClock,
    OpenAIEmulatorConfig,
    OpenAIEmulatorState,
)

__all__ = ["ManualClock", "OpenAIEmulatorConfig", "OpenAIEmulatorServer", "OpenAIEmulatorState"]
