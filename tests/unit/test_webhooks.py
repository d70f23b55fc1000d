"""Webhook verification: static Standard Webhooks (HMAC), dynamic RS256 JWT and the v1a
Ed25519 variant. Deliveries are made by the emulator's dispatcher, so the signing side is
the same code the end-to-end tests receive from."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from bananabatch.emulator.webhooks import Pending, WebhookDispatcher
from bananabatch.webhooks import JwksCache, WebhookRejected, WebhookVerifier

# Real time, read afresh before every test (fixture below): the standardwebhooks library and
# PyJWT check timestamps against the wall clock themselves, so a value read at collection
# would go stale when the whole suite takes longer than their 5-minute window.
NOW = float(int(time.time()))


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    global NOW
    NOW = float(int(time.time()))


BODY = b'{"type":"batch.succeeded","version":"v1","data":{"id":"batches/abc"}}'


def _capture(dispatcher: WebhookDispatcher) -> list[Pending]:
    sent: list[Pending] = []

    def sender(uri: str, headers: Mapping[str, str], body: bytes) -> int:
        sent.append(Pending(uri, dict(headers), body))
        return 200

    dispatcher.sender = sender
    return sent


def _verifier(dispatcher: WebhookDispatcher, secret: str | None = None) -> WebhookVerifier:
    jwks = JwksCache("http://emulator/.well-known/jwks.json", fetch=lambda _u: dispatcher.jwks())
    return WebhookVerifier(secret=secret, jwks=jwks, clock=lambda: NOW)


def _static(secret: str, stamp: float | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    stamp = NOW if stamp is None else stamp
    when = datetime.fromtimestamp(stamp, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp)),
        "webhook-signature": Webhook(secret).sign(msg_id, when, BODY.decode()),
    }


SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_static_delivery_signed_with_the_secret_is_accepted() -> None:
    delivery = _verifier(WebhookDispatcher(), SECRET).verify(_static(SECRET), BODY)
    assert (delivery.scheme, delivery.event_type, delivery.batch_name) == (
        "static",
        "batch.succeeded",
        "batches/abc",
    )


@pytest.mark.parametrize(
    ("headers", "status", "why"),
    [
        (lambda: {}, 401, "unsigned"),
        (lambda: {"webhook-id": "msg_1", "webhook-timestamp": str(int(NOW))}, 401, "unsigned"),
        (lambda: _static("whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="), 401, "forged"),
        (lambda: _static(SECRET, stamp=NOW - 301), 401, "stale"),
        (lambda: _static(SECRET, stamp=NOW + 301), 401, "stale"),
        (lambda: {**_static(SECRET), "webhook-timestamp": "soon"}, 400, "Unix seconds"),
    ],
    ids=["no-headers", "no-signature", "forged", "stale-past", "stale-future", "bad-stamp"],
)
def test_unsigned_forged_and_stale_static_deliveries_are_refused_with_a_clear_4xx(
    headers: Callable[[], dict[str, str]], status: int, why: str
) -> None:
    with pytest.raises(WebhookRejected, match=why) as refused:
        _verifier(WebhookDispatcher(), SECRET).verify(headers(), BODY)
    assert refused.value.status == status


def test_a_tampered_body_breaks_the_static_signature() -> None:
    with pytest.raises(WebhookRejected, match="forged") as refused:
        _verifier(WebhookDispatcher(), SECRET).verify(_static(SECRET), BODY.replace(b"abc", b"xyz"))
    assert refused.value.status == 401


def test_the_emulator_signs_static_deliveries_with_the_secret_it_handed_out() -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW)
    sent = _capture(dispatcher)
    secret = dispatcher.register("http://app/hook", ["batch.succeeded"])["new_signing_secret"]
    dispatcher.batch_finished("batches/abc", "BATCH_STATE_SUCCEEDED", None)
    assert dispatcher.flush() == [200]
    delivery = _verifier(dispatcher, secret).verify(sent[0].headers, sent[0].body)
    assert (delivery.scheme, delivery.batch_name) == ("static", "batches/abc")


@pytest.mark.parametrize("scheme", ["jwt", "ed25519"])
def test_dynamic_deliveries_verify_against_the_published_keys(scheme: str) -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW, dynamic_scheme=scheme)  # type: ignore[arg-type]
    sent = _capture(dispatcher)
    config = {"uris": ["http://app/hook"], "user_metadata": {"batch_id": "b1"}}
    dispatcher.batch_finished("batches/abc", "BATCH_STATE_FAILED", config)
    dispatcher.flush()
    delivery = _verifier(dispatcher).verify(sent[0].headers, sent[0].body)
    assert (delivery.scheme, delivery.event_type) == (scheme, "batch.failed")
    assert delivery.payload["data"]["user_metadata"] == {"batch_id": "b1"}


@pytest.mark.parametrize("scheme", ["jwt", "ed25519"])
def test_dynamic_deliveries_signed_by_someone_else_are_refused(scheme: str) -> None:
    impostor = WebhookDispatcher(clock=lambda: NOW, dynamic_scheme=scheme)  # type: ignore[arg-type]
    sent = _capture(impostor)
    impostor.batch_finished("batches/abc", "BATCH_STATE_SUCCEEDED", {"uris": ["http://app"]})
    impostor.flush()
    with pytest.raises(WebhookRejected, match="forged") as refused:
        _verifier(WebhookDispatcher()).verify(sent[0].headers, sent[0].body)
    assert refused.value.status == 401


def test_a_stale_dynamic_jwt_delivery_is_refused() -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW - 3600)
    sent = _capture(dispatcher)
    dispatcher.batch_finished("batches/abc", "BATCH_STATE_SUCCEEDED", {"uris": ["http://app"]})
    dispatcher.flush()
    with pytest.raises(WebhookRejected, match="stale") as refused:
        _verifier(dispatcher).verify(sent[0].headers, sent[0].body)
    assert refused.value.status == 401


def test_dropped_duplicated_and_delayed_deliveries_follow_the_fault_switches() -> None:
    dispatcher = WebhookDispatcher(clock=time.time)
    sent = _capture(dispatcher)
    dispatcher.faults.drop, dispatcher.faults.duplicate, dispatcher.faults.delay = 1, 1, 1
    config = {"uris": ["http://app"]}
    for name in ("batches/dropped", "batches/twice", "batches/late"):
        dispatcher.batch_finished(name, "BATCH_STATE_SUCCEEDED", config)
    dispatcher.flush()
    assert [p.body.count(b"twice") for p in sent] == [1, 1]
    assert sent[0].headers["webhook-id"] == sent[1].headers["webhook-id"]
    assert dispatcher.release() == 1
    dispatcher.flush()
    assert b"batches/late" in sent[2].body
    assert len(sent) == 3
