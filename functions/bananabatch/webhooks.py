"""Verifying Gemini webhook deliveries (../shared/reference/gemini-webhooks.md).

Static project webhooks are signed per Standard Webhooks ("v1,<HMAC-SHA256>" over
"<id>.<timestamp>.<body>"), verified with the `standardwebhooks` library. Dynamic per-batch
webhooks are documented as an RS256 JWT checked against a JWKS; one live report shows the
asymmetric Standard Webhooks form ("v1a,<Ed25519>") instead. The sources conflict, so both
are accepted, each with the same five-minute timestamp window.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

from bananabatch.errors import PermanentError, TransientError

TOLERANCE_SECONDS: Final = 5 * 60
JWKS_CACHE_SECONDS: Final = 5 * 60
DEFAULT_JWKS_URL: Final = "https://generativelanguage.googleapis.com/.well-known/jwks.json"


class WebhookRejected(PermanentError):
    """A delivery we refuse; status is the HTTP answer (400 malformed, 401 unsigned or
    forged or stale, 409 replayed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    timestamp: int
    scheme: str  # "static", "jwt" or "ed25519"
    event_type: str
    batch_name: str | None
    payload: Mapping[str, Any]


class JwksCache:
    """The provider's public keys, cached for five minutes and refetched once on a miss."""

    def __init__(
        self,
        url: str,
        *,
        fetch: Callable[[str], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch or _http_fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[Mapping[str, Any]] = []
        self._fetched_at: float | None = None

    def keys(self, *, refresh: bool = False) -> list[Mapping[str, Any]]:
        with self._lock:
            stale = (
                self._fetched_at is None or self._clock() - self._fetched_at > JWKS_CACHE_SECONDS
            )
            if refresh or stale:
                doc = self._fetch(self.url)
                keys = doc.get("keys")
                if not isinstance(keys, list):
                    raise TransientError(f"JWKS at {self.url}: expected a 'keys' list")
                self._keys = [k for k in keys if isinstance(k, Mapping)]
                self._fetched_at = self._clock()
            return list(self._keys)


def _http_fetch(url: str) -> Mapping[str, Any]:
    try:
        response = httpx.get(url, timeout=10.0)
        response.raise_for_status()
        doc = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise TransientError(f"could not fetch JWKS from {url}: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise TransientError(f"JWKS at {url}: expected a JSON object")
    return doc


class WebhookVerifier:
    def __init__(
        self,
        *,
        secret: str | None,
        jwks: JwksCache | None,
        audience: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret and jwks is None:
            raise PermanentError("webhook verification needs a signing secret or a JWKS URL")
        self._static = Webhook(secret) if secret else None
        self._jwks = jwks
        self._audience = audience
        self._clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        lower = {k.lower(): v for k, v in headers.items()}
        webhook_id = lower.get("webhook-id")
        signature = lower.get("webhook-signature")
        stamp = lower.get("webhook-timestamp")
        if not webhook_id or not signature or not stamp:
            raise WebhookRejected(
                401,
                "unsigned delivery: expected webhook-id, webhook-timestamp and"
                " webhook-signature headers",
            )
        try:
            timestamp = int(stamp)
        except ValueError as exc:
            raise WebhookRejected(
                400, f"webhook-timestamp: expected Unix seconds; found {stamp!r}"
            ) from exc
        if abs(self._clock() - timestamp) > TOLERANCE_SECONDS:
            raise WebhookRejected(
                401,
                f"stale delivery {webhook_id}: timestamp {timestamp} is outside the"
                f" {TOLERANCE_SECONDS // 60}-minute window",
            )
        entries = signature.split()
        if any(e.startswith("v1,") for e in entries):
            scheme = self._verify_static(lower, body)
        elif any(e.startswith("v1a,") for e in entries):
            scheme = self._verify_ed25519(webhook_id, stamp, body, entries)
        elif signature.count(".") == 2:
            scheme = self._verify_jwt(signature)
        else:
            raise WebhookRejected(401, "webhook-signature: no v1, v1a or JWT signature found")
        payload = _parse(body)
        return Delivery(
            webhook_id=webhook_id,
            timestamp=timestamp,
            scheme=scheme,
            event_type=str(payload.get("type", "")),
            batch_name=batch_name_of(payload),
            payload=payload,
        )

    def _verify_static(self, headers: Mapping[str, str], body: bytes) -> str:
        if self._static is None:
            raise WebhookRejected(
                401, "static signature received but no signing secret is configured"
            )
        try:
            self._static.verify(body, dict(headers))
        except (WebhookVerificationError, ValueError) as exc:
            raise WebhookRejected(401, f"forged or malformed static signature: {exc}") from exc
        return "static"

    def _verify_ed25519(self, webhook_id: str, stamp: str, body: bytes, entries: list[str]) -> str:
        message = f"{webhook_id}.{stamp}.".encode() + body
        keys = [k for k in self._keys() if k.get("kty") == "OKP" and k.get("crv") == "Ed25519"]
        for refresh in (False, True):
            for entry in (e for e in entries if e.startswith("v1a,")):
                try:
                    signature = base64.b64decode(entry[4:], validate=True)
                except ValueError:
                    continue
                for jwk in keys:
                    public = jwt.PyJWK(dict(jwk)).key
                    if not isinstance(public, Ed25519PublicKey):
                        continue
                    try:
                        public.verify(signature, message)
                        return "ed25519"
                    except InvalidSignature:
                        continue
            if not refresh:
                keys = [k for k in self._keys(refresh=True) if k.get("kty") == "OKP"]
        raise WebhookRejected(
            401, "forged delivery: no published Ed25519 key verifies the signature"
        )

    def _verify_jwt(self, token: str) -> str:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise WebhookRejected(401, f"malformed JWT signature: {exc}") from exc
        for refresh in (False, True):
            for jwk in self._keys(refresh=refresh):
                if kid is not None and jwk.get("kid") != kid:
                    continue
                if jwk.get("kty") != "RSA":
                    continue
                try:
                    jwt.decode(
                        token,
                        jwt.PyJWK(dict(jwk)).key,
                        algorithms=["RS256"],
                        audience=self._audience,
                        options={"require": ["exp"], "verify_aud": self._audience is not None},
                        leeway=TOLERANCE_SECONDS,
                    )
                    return "jwt"
                except jwt.ExpiredSignatureError as exc:
                    raise WebhookRejected(401, f"stale JWT: {exc}") from exc
                except jwt.PyJWTError:
                    continue
        raise WebhookRejected(401, "forged delivery: no published RS256 key verifies the JWT")

    def _keys(self, *, refresh: bool = False) -> list[Mapping[str, Any]]:
        if self._jwks is None:
            raise WebhookRejected(
                401, "asymmetric signature received but no JWKS URL is configured"
            )
        return self._jwks.keys(refresh=refresh)


def _parse(body: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise WebhookRejected(400, f"delivery body: expected JSON; {exc}") from exc
    if not isinstance(payload, Mapping):
        raise WebhookRejected(400, "delivery body: expected a JSON object")
    return payload


def batch_name_of(payload: Mapping[str, Any]) -> str | None:
    """`batches/<id>` from the event's data.id, whether or not it carries the prefix."""
    data = payload.get("data")
    if not isinstance(data, Mapping):
        return None
    raw = data.get("id") or data.get("name")
    if not isinstance(raw, str) or not raw:
        return None
    return raw if raw.startswith("batches/") else f"batches/{raw}"
