"""A stack (tests/support/stacks.py) whose gpt-image lines go to the OpenAI Batch emulator.

`open_openai_stack` opens the usual stack, local or emulated Google Cloud, with an OpenAI
Batch emulator beside the Gemini one and the settings that send gpt-image batches to it.
The stack's `emulator` is then the OpenAI emulator: its control API has the Gemini
emulator's names (faults, complete_all, batch_names, submitted_keys, duplicate_keys,
counters.batches_created, flush_webhooks), so `assert_invariants` and the scenarios read
the provider the lines went to. The Gemini emulator stays reachable as `gemini_of(stack)`.

With `webhooks=True` a project webhook endpoint is registered at the OpenAI emulator and its
deliveries go to the receiver's /openai sub-path (on_gemini_webhook, through
functions-framework), verified with the endpoint's signing secret.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final, cast

import pytest
from flask.testing import FlaskClient

from bananabatch.emulator.openai import ManualClock, OpenAIEmulatorConfig, OpenAIEmulatorServer
from bananabatch.emulator.openai.webhooks import EVENTS
from bananabatch.emulator.server import EmulatorServer
from bananabatch.openai_webhooks import OPENAI_WEBHOOK_PATH
from tests.support.stacks import (
    WEBHOOK_FUNCTION,
    WEBHOOK_URL,
    Stack,
    StackKind,
    _client,
    open_stack,
)

OPENAI_WEBHOOK_URL: Final = WEBHOOK_URL + OPENAI_WEBHOOK_PATH
_GEMINI: Final = "_gemini_emulator"


def openai_zero_delays(**overrides: Any) -> OpenAIEmulatorConfig:
    """Batches finish the first time anyone looks at them."""
    fields: dict[str, Any] = {
        "pending_seconds": 0.0,
        "running_seconds": 0.0,
        "clock": ManualClock(),
    }
    return OpenAIEmulatorConfig(**(fields | overrides))


def openai_held(**overrides: Any) -> OpenAIEmulatorConfig:
    """Batches never finish on their own: only emulator.state.complete() moves them."""
    fields: dict[str, Any] = {
        "pending_seconds": math.inf,
        "running_seconds": math.inf,
        "clock": ManualClock(),
    }
    return OpenAIEmulatorConfig(**(fields | overrides))


def openai_emulator(stack: Stack) -> OpenAIEmulatorServer:
    return cast(OpenAIEmulatorServer, stack.emulator)


def gemini_of(stack: Stack) -> EmulatorServer:
    gemini: EmulatorServer = getattr(stack, _GEMINI)
    return gemini


@contextmanager
def open_openai_stack(
    request: pytest.FixtureRequest,
    kind: StackKind,
    tmp: Path,
    config: OpenAIEmulatorConfig | None = None,
    *,
    webhooks: bool = False,
    **settings: Any,
) -> Iterator[Stack]:
    with ExitStack() as exits:
        oai = exits.enter_context(OpenAIEmulatorServer(config or openai_zero_delays()))
        fields: dict[str, Any] = {
            "openai_enabled": True,
            "openai_api_key": "test-key",
            "openai_base_url": oai.base_url,
        }
        if webhooks:
            registration = oai.state.webhooks.register(OPENAI_WEBHOOK_URL, list(EVENTS))
            fields["openai_webhook_secret"] = registration["signing_secret"]
        stack = exits.enter_context(open_stack(request, kind, tmp, **(fields | settings)))
        setattr(stack, _GEMINI, stack.emulator)
        # Duck-typed on purpose: the OpenAI emulator answers the Gemini one's control API.
        stack.emulator = cast(EmulatorServer, oai)
        if webhooks:
            client = _client(WEBHOOK_FUNCTION, "http")

            def send(_uri: str, headers: Mapping[str, str], body: bytes) -> int:
                return post_openai_webhook(client, headers, body)

            oai.state.webhooks.sender = send
        yield stack


def post_openai_webhook(client: FlaskClient, headers: Mapping[str, str], body: bytes) -> int:
    """POST one OpenAI delivery to the receiver's /openai sub-path; returns the status."""
    return client.post(OPENAI_WEBHOOK_PATH, data=body, headers=dict(headers)).status_code


def webhook_client() -> FlaskClient:
    return _client(WEBHOOK_FUNCTION, "http")
