"""Webhook verification, one scheme per mode: static Standard Webhooks (HMAC "v1") only in
static mode; the documented RS256 JWT (issuer and audience required) or the delivered
"v1a" Ed25519 form only in dynamic mode. Bounded before any key is looked at: body cap,
timestamp window, ids without control or bidi characters; key-set refetches throttled.
Deliveries are made by the emulator's dispatcher, so the signing side is the same code the
end-to-end tests receive from."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from standardwebhooks import Webhook

from bananabatch.config import DEFAULT_WEBHOOK_ISSUER, Settings, WebhookMode
from bananabatch.emulator.base.outbox import Pending
from bananabatch.emulator.webhooks import KID_RSA, DynamicScheme, WebhookDispatcher
from bananabatch.errors import ConfigError
from bananabatch.webhooks import (
    MAX_BODY_BYTES,
    JwksCache,
    WebhookRejected,
    WebhookVerifier,
    verifier_for,
)

# Real time, read afresh before every test (fixture below): the standardwebhooks library and
# PyJWT check timestamps against the wall clock themselves, so a value read at collection
# would go stale when the whole suite takes longer than their 5-minute window.
NOW = float(int(time.time()))
HOOK = "https://receiver.test/hook"


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    global NOW
    NOW = float(int(time.time()))


BODY = b'{"type":"batch.succeeded","version":"v1","data":{"id":"batches/abc"}}'
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _capture(dispatcher: WebhookDispatcher) -> list[Pending]:
    sent: list[Pending] = []

    def sender(uri: str, headers: Mapping[str, str], body: bytes) -> int:
        sent.append(Pending(uri, dict(headers), body))
        return 200

    dispatcher.sender = sender
    return sent


def _jwks(dispatcher: WebhookDispatcher) -> JwksCache:
    return JwksCache("http://emulator/.well-known/jwks.json", fetch=lambda _u: dispatcher.jwks())


def _static_verifier(secret: str = SECRET) -> WebhookVerifier:
    return WebhookVerifier.static(secret, clock=lambda: NOW)


def _dynamic_verifier(
    dispatcher: WebhookDispatcher, *, audience: str = HOOK, issuer: str = DEFAULT_WEBHOOK_ISSUER
) -> WebhookVerifier:
    return WebhookVerifier.dynamic(
        _jwks(dispatcher), audience=audience, issuer=issuer, clock=lambda: NOW
    )


def _static(
    secret: str, stamp: float | None = None, msg_id: str = "msg_1", body: bytes = BODY
) -> dict[str, str]:
    stamp = NOW if stamp is None else stamp
    when = datetime.fromtimestamp(stamp, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp)),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
    }


def _dynamic_delivery(
    dispatcher: WebhookDispatcher, state: str = "BATCH_STATE_SUCCEEDED", uri: str = HOOK
) -> Pending:
    sent = _capture(dispatcher)
    dispatcher.batch_finished("batches/abc", state, {"uris": [uri]})
    dispatcher.flush()
    return sent[0]


def _v1a(key: ed25519.Ed25519PrivateKey, body: bytes, msg_id: str = "msg_1") -> dict[str, str]:
    stamp = str(int(NOW))
    signed = key.sign(f"{msg_id}.{stamp}.".encode() + body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1a," + base64.b64encode(signed).decode(),
    }


# --- static mode: HMAC v1 only --------------------------------------------------------------


def test_a_static_delivery_signed_with_the_secret_is_accepted() -> None:
    delivery = _static_verifier().verify(_static(SECRET), BODY)
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
        _static_verifier().verify(headers(), BODY)
    assert refused.value.status == status


def test_a_tampered_body_breaks_the_static_signature() -> None:
    with pytest.raises(WebhookRejected, match="forged") as refused:
        _static_verifier().verify(_static(SECRET), BODY.replace(b"abc", b"xyz"))
    assert refused.value.status == 401


@pytest.mark.parametrize("scheme", ["jwt", "v1a"])
def test_static_mode_refuses_a_genuine_per_job_signature(scheme: DynamicScheme) -> None:
    # Signed by the provider's published keys, but static mode trusts the secret only.
    pending = _dynamic_delivery(WebhookDispatcher(clock=lambda: NOW, dynamic_scheme=scheme))
    with pytest.raises(WebhookRejected, match="static webhooks are signed") as refused:
        _static_verifier().verify(pending.headers, pending.body)
    assert refused.value.status == 401


def test_the_emulator_signs_static_deliveries_with_the_secret_it_handed_out() -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW)
    sent = _capture(dispatcher)
    secret = dispatcher.register("http://app/hook", ["batch.succeeded"])["new_signing_secret"]
    dispatcher.batch_finished("batches/abc", "BATCH_STATE_SUCCEEDED", None)
    assert dispatcher.flush() == [200]
    delivery = _static_verifier(secret).verify(sent[0].headers, sent[0].body)
    assert (delivery.scheme, delivery.batch_name) == ("static", "batches/abc")


# --- dynamic mode: JWT (issuer + audience) or v1a -------------------------------------------


@pytest.mark.parametrize("scheme", ["jwt", "v1a"])
def test_dynamic_deliveries_verify_against_the_published_keys(scheme: DynamicScheme) -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW, dynamic_scheme=scheme)
    sent = _capture(dispatcher)
    config = {"uris": [HOOK], "user_metadata": {"batch_id": "b1"}}
    dispatcher.batch_finished("batches/abc", "BATCH_STATE_FAILED", config)
    dispatcher.flush()
    delivery = _dynamic_verifier(dispatcher).verify(sent[0].headers, sent[0].body)
    assert (delivery.scheme, delivery.event_type) == (scheme, "batch.failed")
    assert delivery.payload["data"]["user_metadata"] == {"batch_id": "b1"}


def test_the_emulator_signs_per_job_deliveries_v1a_unless_told_jwt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BANANABATCH_EMULATOR_WEBHOOK_SIGNATURE", raising=False)
    assert (
        _dynamic_delivery(WebhookDispatcher(clock=lambda: NOW))
        .headers["webhook-signature"]
        .startswith("v1a,")
    )
    monkeypatch.setenv("BANANABATCH_EMULATOR_WEBHOOK_SIGNATURE", "jwt")
    signature = _dynamic_delivery(WebhookDispatcher(clock=lambda: NOW)).headers["webhook-signature"]
    assert jwt.get_unverified_header(signature)["alg"] == "RS256"


@pytest.mark.parametrize("scheme", ["jwt", "v1a"])
def test_dynamic_deliveries_signed_by_someone_else_are_refused(scheme: DynamicScheme) -> None:
    impostor = WebhookDispatcher(clock=lambda: NOW, dynamic_scheme=scheme)
    pending = _dynamic_delivery(impostor)
    with pytest.raises(WebhookRejected, match="forged") as refused:
        _dynamic_verifier(WebhookDispatcher()).verify(pending.headers, pending.body)
    assert refused.value.status == 401


def test_dynamic_mode_refuses_an_hmac_signature() -> None:
    with pytest.raises(WebhookRejected, match="per-job webhooks are signed") as refused:
        _dynamic_verifier(WebhookDispatcher()).verify(_static(SECRET), BODY)
    assert refused.value.status == 401


def test_a_v1a_signature_over_another_body_is_refused() -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW, dynamic_scheme="v1a")
    pending = _dynamic_delivery(dispatcher)
    other = pending.body.replace(b"batches/abc", b"batches/xyz")
    with pytest.raises(WebhookRejected, match="forged"):
        _dynamic_verifier(dispatcher).verify(pending.headers, other)


def test_a_jwt_minted_for_another_receiver_is_refused() -> None:
    # The provider's own key signed it, for someone else's webhook URL.
    dispatcher = WebhookDispatcher(clock=lambda: NOW, dynamic_scheme="jwt")
    pending = _dynamic_delivery(dispatcher, uri="https://someone-else.test/hook")
    refusals = 0
    for _ in range(50):
        with pytest.raises(WebhookRejected, match="not meant for this receiver") as refused:
            _dynamic_verifier(dispatcher).verify(pending.headers, pending.body)
        refusals += refused.value.status == 401
    assert refusals == 50


def test_a_jwt_from_another_issuer_is_refused() -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW, dynamic_scheme="jwt", issuer="https://x.test")
    pending = _dynamic_delivery(dispatcher)
    with pytest.raises(WebhookRejected, match="not meant for this receiver"):
        _dynamic_verifier(dispatcher).verify(pending.headers, pending.body)


def _jwt_with(claims: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID_RSA})


@pytest.mark.parametrize("missing", ["iss", "aud", "exp", "iat"])
def test_a_jwt_without_issuer_audience_or_times_is_refused(missing: str) -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW)
    claims = {"iss": DEFAULT_WEBHOOK_ISSUER, "aud": HOOK, "iat": int(NOW), "exp": int(NOW) + 300}
    del claims[missing]
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(NOW)),
        "webhook-signature": _jwt_with(claims, dispatcher._rsa),
    }
    with pytest.raises(WebhookRejected, match="required claim") as refused:
        _dynamic_verifier(dispatcher).verify(headers, BODY)
    assert refused.value.status == 401


def test_a_stale_dynamic_jwt_delivery_is_refused() -> None:
    dispatcher = WebhookDispatcher(clock=lambda: NOW - 3600, dynamic_scheme="jwt")
    pending = _dynamic_delivery(dispatcher)
    with pytest.raises(WebhookRejected, match="stale") as refused:
        _dynamic_verifier(dispatcher).verify(pending.headers, pending.body)
    assert refused.value.status == 401


def test_dynamic_mode_without_an_audience_is_a_configuration_error() -> None:
    settings = Settings(webhook_mode=WebhookMode.DYNAMIC)
    with pytest.raises(ConfigError, match="audience"):
        verifier_for(settings)
    configured = Settings(webhook_mode=WebhookMode.DYNAMIC, webhook_url=HOOK)
    assert verifier_for(configured).mode is WebhookMode.DYNAMIC


def test_static_mode_without_a_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="secret"):
        verifier_for(Settings(webhook_mode=WebhookMode.STATIC))


# --- bounds: body cap, ids ---------------------------------------------------------------------


def test_a_body_over_the_cap_is_refused_with_413_before_any_key_is_fetched() -> None:
    fetched: list[str] = []

    def fetch(url: str) -> Mapping[str, Any]:
        fetched.append(url)
        return {"keys": []}

    jwks = JwksCache("http://x", fetch=fetch)
    verifier = WebhookVerifier.dynamic(jwks, audience=HOOK, clock=lambda: NOW)
    padding = "x" * MAX_BODY_BYTES
    big = json.dumps({"type": "batch.succeeded", "data": {"id": "b", "pad": padding}}).encode()
    with pytest.raises(WebhookRejected, match="at most") as refused:
        verifier.verify(_v1a(ed25519.Ed25519PrivateKey.generate(), big), big)
    assert refused.value.status == 413
    assert fetched == []


def test_a_body_at_the_cap_is_verified() -> None:
    dispatcher = WebhookDispatcher()
    head = b'{"type":"batch.succeeded","data":{"id":"batches/abc"},"pad":"'
    body = head + b"x" * (MAX_BODY_BYTES - len(head) - 2) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    delivery = _dynamic_verifier(dispatcher).verify(_v1a(dispatcher._ed, body), body)
    assert delivery.batch_name == "batches/abc"


@pytest.mark.parametrize(
    "char", ["\u202e", "\u2066", "\u200b", "\x00", "\x1b", "\n", "\u2028", "\ufeff"]
)
@pytest.mark.parametrize("where", ["webhook-id", "data.id", "member name", "type"])
def test_control_and_bidi_characters_in_keys_are_refused(char: str, where: str) -> None:
    dispatcher = WebhookDispatcher()
    msg_id = f"msg_{char}1" if where == "webhook-id" else "msg_1"
    event: dict[str, Any] = {
        "type": f"batch.succ{char}eeded" if where == "type" else "batch.succeeded",
        "data": {"id": f"ab{char}c" if where == "data.id" else "abc"},
    }
    if where == "member name":
        event["data"]["user_metadata"] = {f"job{char}": "x"}
    body = json.dumps(event, ensure_ascii=False).encode()
    with pytest.raises(WebhookRejected, match="control or bidi") as refused:
        _dynamic_verifier(dispatcher).verify(_v1a(dispatcher._ed, body, msg_id), body)
    assert refused.value.status == 400


def test_a_batch_id_naming_a_path_is_refused() -> None:
    dispatcher = WebhookDispatcher()
    body = b'{"type":"batch.succeeded","data":{"id":"batches/a/../b"}}'
    with pytest.raises(WebhookRejected, match="expected a batch id"):
        _dynamic_verifier(dispatcher).verify(_v1a(dispatcher._ed, body), body)


# --- key-set throttling ------------------------------------------------------------------------


def test_a_hundred_forged_deliveries_cause_one_key_set_fetch() -> None:
    dispatcher = WebhookDispatcher()
    fetches: list[str] = []

    def fetch(url: str) -> Mapping[str, Any]:
        fetches.append(url)
        return dispatcher.jwks()

    clock = [1000.0]
    jwks = JwksCache("http://emulator/jwks", fetch=fetch, clock=lambda: clock[0])
    verifier = WebhookVerifier.dynamic(jwks, audience=HOOK, clock=lambda: NOW)
    impostor = ed25519.Ed25519PrivateKey.generate()
    impostor_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for n in range(100):
        if n % 2:
            headers = _v1a(impostor, BODY, msg_id=f"msg_{uuid.uuid4()}")
        else:
            claims = {"iss": DEFAULT_WEBHOOK_ISSUER, "aud": HOOK, "iat": int(NOW)}
            token = jwt.encode(
                claims | {"exp": int(NOW) + 300},
                impostor_rsa,
                algorithm="RS256",
                headers={"kid": f"unknown-{n}"},
            )
            headers = {
                "webhook-id": f"msg_{n}",
                "webhook-timestamp": str(int(NOW)),
                "webhook-signature": token,
            }
        with pytest.raises(WebhookRejected, match="forged"):
            verifier.verify(headers, BODY)
        clock[0] += 0.1  # 100 deliveries within 10 seconds
    assert len(fetches) == 1
    assert jwks.fetches == 1


def test_an_unknown_key_is_refetched_once_the_cooldown_has_passed() -> None:
    # A rotated key becomes usable within the cooldown, without a fetch per delivery.
    old, new = WebhookDispatcher(), WebhookDispatcher()
    current = [old]
    clock = [0.0]
    jwks = JwksCache("http://jwks", fetch=lambda _u: current[0].jwks(), clock=lambda: clock[0])
    verifier = WebhookVerifier.dynamic(jwks, audience=HOOK, clock=lambda: NOW)
    verifier.verify(_v1a(old._ed, BODY), BODY)
    current[0] = new
    clock[0] = 10.0
    with pytest.raises(WebhookRejected, match="forged"):
        verifier.verify(_v1a(new._ed, BODY), BODY)
    clock[0] = 61.0
    assert verifier.verify(_v1a(new._ed, BODY), BODY).scheme == "v1a"
    assert jwks.fetches == 2


# --- the emulator's fault switches and cancelled events ---------------------------------------


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


def test_the_emulator_announces_cancellation_only_when_told_to() -> None:
    # The service documents no batch.cancelled event: cancellation is learned by polling.
    quiet = WebhookDispatcher(clock=lambda: NOW)
    sent = _capture(quiet)
    quiet.batch_finished("batches/abc", "BATCH_STATE_CANCELLED", {"uris": [HOOK]})
    assert quiet.flush() == []
    assert sent == []
    loud = WebhookDispatcher(clock=lambda: NOW, announce_cancelled=True)
    pending = _dynamic_delivery(loud, state="BATCH_STATE_CANCELLED")
    assert _dynamic_verifier(loud).verify(pending.headers, pending.body).event_type == (
        "batch.cancelled"
    )


# --- registration ------------------------------------------------------------------------------


def test_static_webhooks_are_registered_under_the_configured_api_version() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from bananabatch.webhooks import register_static_webhook

    seen: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            seen.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
            answer = json.dumps(
                {"id": "hook1", "uri": HOOK, "new_signing_secret": SECRET, "state": "enabled"}
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for version in ("v1beta", "v1"):
            settings = Settings(
                gemini_api_key="k", gemini_base_url=base, webhook_api_version=version
            )
            registration = register_static_webhook(settings, HOOK)
            assert (registration.webhook_id, registration.signing_secret) == ("hook1", SECRET)
    finally:
        server.shutdown()
    assert [path.split("?")[0] for path, _ in seen] == ["/v1beta/webhooks", "/v1/webhooks"]
    assert seen[0][1]["subscribed_events"] == ["batch.succeeded", "batch.failed", "batch.expired"]
    assert Settings().webhook_api_version == "v1beta"
