"""OpenAI webhook deliveries are verified with the SDK's own unwrap, and only genuine, fresh,
well-formed batch events get through (openai_webhooks.py)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from bananabatch.emulator.openai.webhooks import OpenAIWebhooks, headers_for
from bananabatch.errors import ConfigError
from bananabatch.openai_webhooks import verify
from bananabatch.webhooks import MAX_BODY_BYTES, WebhookRejected

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(b"a secret nobody handed out......").decode()


def event(batch_id: str = "batch_abc123", kind: str = "batch.completed") -> bytes:
    body = {
        "id": "evt_1",
        "object": "event",
        "created_at": int(time.time()),
        "type": kind,
        "data": {"id": batch_id},
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "kind", ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]
)
def test_a_genuine_batch_event_is_verified_and_names_its_batch(kind: str) -> None:
    body = event(kind=kind)
    delivery = verify(SECRET, dict(headers_for(SECRET, body)), body)
    assert (delivery.event_type, delivery.batch_name, delivery.scheme) == (
        kind,
        "batch_abc123",
        "openai",
    )


def test_headers_are_matched_whatever_their_case() -> None:
    body = event()
    headers = {k.title(): v for k, v in headers_for(SECRET, body).items()}
    assert verify(SECRET, headers, body).batch_name == "batch_abc123"


def _refused(headers: dict[str, str], body: bytes, secret: str = SECRET) -> int:
    with pytest.raises(WebhookRejected) as caught:
        verify(secret, headers, body)
    return caught.value.status


def test_forged_stale_tampered_unsigned_and_undated_deliveries_are_refused() -> None:
    body = event()
    genuine = dict(headers_for(SECRET, body))
    stale = dict(headers_for(SECRET, body, stamp=int(time.time()) - 10 * 60))
    future = dict(headers_for(SECRET, body, stamp=int(time.time()) + 10 * 60))
    cases: dict[str, tuple[dict[str, str], bytes]] = {
        "forged": (dict(headers_for(OTHER, body)), body),
        "stale": (stale, body),
        "future": (future, body),
        "tampered": (genuine, event("batch_someone_elses")),
        "unsigned": ({k: v for k, v in genuine.items() if k != "webhook-signature"}, body),
        "undated": (genuine | {"webhook-timestamp": "soon"}, body),
    }
    statuses = {why: _refused(*case) for why, case in cases.items()}
    assert statuses == {why: 400 if why == "undated" else 401 for why in cases}


def test_an_oversized_body_is_refused_unread() -> None:
    body = b" " * (MAX_BODY_BYTES + 1)
    assert _refused(dict(headers_for(SECRET, body)), body) == 413


@pytest.mark.parametrize(
    ("batch_id", "why"), [("batch_\u202eevil", "control or bidi"), ("../batch_x", "batch id")]
)
def test_a_signed_event_with_a_hostile_batch_id_is_refused(batch_id: str, why: str) -> None:
    body = event(batch_id)
    with pytest.raises(WebhookRejected, match=why) as caught:
        verify(SECRET, dict(headers_for(SECRET, body)), body)
    assert caught.value.status == 400


def test_a_signed_body_that_is_not_json_is_malformed() -> None:
    body = b"not json"
    assert _refused(dict(headers_for(SECRET, body)), body) == 400


def test_events_other_than_batch_ones_verify_but_name_no_batch() -> None:
    body = event(kind="response.completed")
    delivery = verify(SECRET, dict(headers_for(SECRET, body)), body)
    assert delivery.batch_name is None


def test_no_secret_is_a_configuration_error() -> None:
    body = event()
    with pytest.raises(ConfigError, match="OPENAI_WEBHOOK_SECRET"):
        verify(None, dict(headers_for(SECRET, body)), body)


def test_the_emulator_signs_what_the_sdk_verifies_and_applies_delivery_faults() -> None:
    sent: list[tuple[str, dict[str, str], bytes]] = []

    def sender(uri: str, headers: Any, body: bytes) -> int:
        sent.append((uri, dict(headers), body))
        return 200

    hooks = OpenAIWebhooks(sender=sender)
    registration = hooks.register("http://receiver.test/openai", ["batch.completed"])
    hooks.faults.duplicate = 1
    hooks.batch_finished("batch_1", "completed", int(time.time()))
    hooks.batch_finished("batch_2", "failed", int(time.time()))  # not subscribed
    assert hooks.flush() == [200, 200]
    assert sent[0] == sent[1]  # a duplicate carries the same webhook-id
    delivery = verify(registration["signing_secret"], sent[0][1], sent[0][2])
    assert delivery.batch_name == "batch_1"
    hooks.faults.drop = 1
    hooks.batch_finished("batch_3", "completed", int(time.time()))
    assert hooks.flush() == []


def test_registering_an_endpoint_returns_its_secret_and_deliveries_verify_with_it() -> None:
    from bananabatch.config import Settings
    from bananabatch.emulator.openai import OpenAIEmulatorServer
    from bananabatch.openai_webhooks import register_webhook

    with OpenAIEmulatorServer() as emu:
        settings = Settings(openai_api_key="k", openai_base_url=emu.base_url)
        endpoint_id, secret = register_webhook(settings, "https://receiver.test/openai")
        (registered,) = emu.state.webhooks.endpoints.values()
        assert (registered.endpoint_id, registered.secret) == (endpoint_id, secret)
        assert registered.events == [
            "batch.completed",
            "batch.failed",
            "batch.expired",
            "batch.cancelled",
        ]
        body = event()
        assert verify(secret, dict(headers_for(secret, body)), body).batch_name == "batch_abc123"
