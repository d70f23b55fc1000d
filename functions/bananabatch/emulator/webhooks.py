"""The emulator's webhook deliveries (reference: gemini-webhooks.md), both schemes:

- static: `POST /v1/webhooks` registers a URI and returns `new_signing_secret`
  ("whsec_..."); deliveries are signed "v1,<HMAC-SHA256>" per Standard Webhooks;
- dynamic: a batch created with `webhookConfig.uris` is announced to those URIs only,
  signed the way live deliveries are, "v1a,<Ed25519>" over "<id>.<timestamp>.<body>"
  (field sheet §1 row 9), or, with `dynamic_scheme = "jwt"`, the documented form: an RS256
  JWT naming the issuer and the delivery URI as audience. The scheme is chosen per
  dispatcher, or for a whole emulator process by BANANABATCH_EMULATOR_WEBHOOK_SIGNATURE
  (`v1a` or `jwt`). The public keys (RSA and OKP) are served at `/.well-known/jwks.json`.

No `batch.cancelled` event is documented (field sheet §1 row 8), so a cancelled batch is
announced only when `announce_cancelled` is set: the receiver must learn cancellation by
polling, and must still accept the event if it comes.

Nothing is sent by a timer: deliveries queue up when a batch turns terminal and go out
when a test (or the local runner) calls `flush()`, so no test depends on timing. Fault
switches drop, duplicate or hold deliveries; held ones go out after `release()` (the shared
outbox, emulator/base/outbox.py).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bananabatch.emulator.base.outbox import (
    Pending,
    WebhookOutbox,
    new_signing_secret,
    standard_headers,
)

KID_RSA = "emulator-rsa-1"
KID_ED25519 = "emulator-ed25519-1"
# The issuer the emulator's JWTs name: the receiver's default (config.DEFAULT_WEBHOOK_ISSUER).
JWT_ISSUER = "https://generativelanguage.googleapis.com"
ENV_SIGNATURE = "BANANABATCH_EMULATOR_WEBHOOK_SIGNATURE"
DynamicScheme = Literal["v1a", "jwt"]
EVENT_BY_STATE = {
    "BATCH_STATE_SUCCEEDED": "batch.succeeded",
    "BATCH_STATE_FAILED": "batch.failed",
    "BATCH_STATE_CANCELLED": "batch.cancelled",
    "BATCH_STATE_EXPIRED": "batch.expired",
}


def _scheme_from_env() -> DynamicScheme:
    raw = os.environ.get(ENV_SIGNATURE, "v1a").strip().lower() or "v1a"
    if raw not in ("v1a", "jwt"):
        raise ValueError(f"{ENV_SIGNATURE}: expected v1a or jwt; found {raw!r}")
    return "jwt" if raw == "jwt" else "v1a"


@dataclass
class Registration:
    webhook_id: str
    uri: str
    secret: str
    events: list[str]


@dataclass
class WebhookDispatcher(WebhookOutbox):
    dynamic_scheme: DynamicScheme = field(default_factory=_scheme_from_env)
    issuer: str = JWT_ISSUER
    # The service documents no batch.cancelled; set this to send one anyway.
    announce_cancelled: bool = False
    registrations: dict[str, Registration] = field(default_factory=dict)
    _rsa: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _ed: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    # --- registration and keys ----------------------------------------------------------

    def register(self, uri: str, events: list[str], name: str | None = None) -> dict[str, Any]:
        secret = new_signing_secret()
        hook = Registration(uuid.uuid4().hex[:36], uri, secret, events)
        with self._lock:
            self.registrations[hook.webhook_id] = hook
        return {
            "id": hook.webhook_id,
            "name": name or "",
            "uri": uri,
            "subscribed_events": events,
            "state": "enabled",
            "new_signing_secret": secret,
        }

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._rsa.public_key()))
        ed_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self._ed.public_key()))
        return {
            "keys": [
                rsa_jwk | {"kid": KID_RSA, "alg": "RS256", "use": "sig"},
                ed_jwk | {"kid": KID_ED25519, "alg": "EdDSA", "use": "sig"},
            ]
        }

    # --- events -------------------------------------------------------------------------

    def batch_finished(
        self, batch_name: str, state: str, webhook_config: Mapping[str, Any] | None
    ) -> None:
        """Queue the deliveries a batch's terminal state causes."""
        event = EVENT_BY_STATE.get(state)
        if event is None or (event == "batch.cancelled" and not self.announce_cancelled):
            return
        data: dict[str, Any] = {"id": batch_name}
        config = dict(webhook_config or {})
        if config.get("user_metadata"):
            data["user_metadata"] = config["user_metadata"]
        stamp = int(self.clock())
        body = json.dumps(
            {"type": event, "version": "v1", "timestamp": _rfc3339(stamp), "data": data}
        ).encode()
        uris = [str(u) for u in config.get("uris") or []]
        if uris:
            # Per-job URIs replace the project's registered webhooks for this job.
            out = [Pending(uri, self._dynamic_headers(uri, stamp, body), body) for uri in uris]
        else:
            out = self._registered_deliveries(event, stamp, body)
        self.enqueue(out)

    def _registered_deliveries(self, event: str, stamp: int, body: bytes) -> list[Pending]:
        """One delivery per registered webhook subscribed to the event, HMAC-signed."""
        with self._lock:
            hooks = list(self.registrations.values())
        out: list[Pending] = []
        for hook in hooks:
            if hook.events and event not in hook.events:
                continue
            headers = standard_headers(hook.secret, f"msg_{uuid.uuid4()}", stamp, body)
            out.append(Pending(hook.uri, headers, body))
        return out

    def _dynamic_headers(self, uri: str, stamp: int, body: bytes) -> dict[str, str]:
        msg_id = f"msg_{uuid.uuid4()}"
        if self.dynamic_scheme == "v1a":
            signed = self._ed.sign(f"{msg_id}.{stamp}.".encode() + body)
            signature = "v1a," + base64.b64encode(signed).decode()
        else:
            signature = jwt.encode(
                {"iat": stamp, "exp": stamp + 300, "iss": self.issuer, "aud": uri},
                self._rsa,
                algorithm="RS256",
                headers={"kid": KID_RSA},
            )
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature,
            "content-type": "application/json",
        }


def _dt(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _rfc3339(stamp: int) -> str:
    return _dt(stamp).strftime("%Y-%m-%dT%H:%M:%SZ")
