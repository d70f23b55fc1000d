"""Verifying Gemini webhook deliveries (../shared/reference/gemini-webhooks.md, field sheet
§1 rows 8-9).

One scheme per mode, so a secret or key meant for one path can never open the other:

- static (a project webhook): Standard Webhooks "v1,<HMAC-SHA256>" over
  "<id>.<timestamp>.<body>" with the registration's `whsec_` secret, and nothing else;
- dynamic (per-batch URIs): the documented RS256 JWT in `webhook-signature`, with issuer and
  audience required, or the form live deliveries carry, "v1a,<Ed25519>" over the same
  "<id>.<timestamp>.<body>" bytes, checked against the OKP keys of the provider's JWKS.
  Nothing else; an HMAC "v1" entry is refused.

Every delivery is bounded before any key is looked at: the body is capped (413), the
timestamp must be within five minutes, and the ids it carries may hold no control, bidi or
other invisible format characters. Key-set fetches are throttled, so forged deliveries cannot
turn the receiver into a JWKS fetcher: at most one refetch per cooldown, whatever arrives.

A failed verification never loses a job: the scheduler tick polls every unfinished batch.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

from bananabatch.config import DEFAULT_WEBHOOK_ISSUER, Settings, WebhookMode
from bananabatch.errors import ConfigError, PermanentError, TransientError

TOLERANCE_SECONDS: Final = 5 * 60
JWKS_CACHE_SECONDS: Final = 5 * 60
# The least time between two fetches of the key set, however many deliveries fail to verify.
JWKS_REFETCH_COOLDOWN_SECONDS: Final = 60
DEFAULT_JWKS_URL: Final = "https://generativelanguage.googleapis.com/.well-known/jwks.json"
# Batch events are a thin envelope (type, version, timestamp, an id and user_metadata): a few
# hundred bytes. 64 KiB leaves room for generous user_metadata and refuses anything bulky.
MAX_BODY_BYTES: Final = 64 * 1024
# Longest webhook-id, key id or batch id accepted (observed: "msg_<uuid>", 40 characters).
MAX_ID_CHARS: Final = 200
# Control (Cc), format (Cf: bidi overrides, zero-width joiners...), line/paragraph
# separators and surrogates: nothing a genuine id or JSON member name contains, and
# everything that makes a log line or a stored key read differently from what it is.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


class WebhookRejected(PermanentError):
    """A delivery we refuse; status is the HTTP answer (400 malformed, 401 unsigned, forged,
    stale or of the wrong scheme for this mode, 413 too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    timestamp: int
    scheme: str  # "static", "jwt" or "v1a"
    event_type: str
    batch_name: str | None
    payload: Mapping[str, Any]


class JwksCache:
    """The provider's public keys: cached for five minutes, refetched on request (a key we
    do not know) at most once per cooldown. `fetches` counts the fetches made."""

    def __init__(
        self,
        url: str,
        *,
        fetch: Callable[[str], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cooldown_seconds: float = JWKS_REFETCH_COOLDOWN_SECONDS,
    ) -> None:
        self.url = url
        self._fetch = fetch or _http_fetch
        self._clock = clock
        self._cooldown = cooldown_seconds
        self._lock = threading.Lock()
        self._keys: list[Mapping[str, Any]] = []
        self._fetched_at: float | None = None
        self.fetches = 0

    def keys(self, *, refresh: bool = False) -> list[Mapping[str, Any]]:
        """The cached keys; `refresh` asks for a refetch, granted only past the cooldown."""
        with self._lock:
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            if age is None or age > JWKS_CACHE_SECONDS or (refresh and age >= self._cooldown):
                doc = self._fetch(self.url)
                self.fetches += 1
                # Counted as a fetch even if it fails, so a failing endpoint is not hammered.
                self._fetched_at = now
                keys = doc.get("keys")
                if not isinstance(keys, list):
                    raise TransientError(f"JWKS at {self.url}: expected a 'keys' list")
                self._keys = [k for k in keys if isinstance(k, Mapping)]
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
    """Verifies deliveries for one mode. Build it with `static` or `dynamic`."""

    def __init__(
        self,
        mode: WebhookMode,
        *,
        secret: str | None = None,
        jwks: JwksCache | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode is WebhookMode.STATIC:
            if not secret:
                raise ConfigError("static webhooks need the registration's signing secret")
            self._static: Webhook | None = Webhook(secret)
        elif mode is WebhookMode.DYNAMIC:
            if jwks is None or not audience or not issuer:
                raise ConfigError(
                    "dynamic webhooks need a JWKS URL, the audience (this receiver's URL) and"
                    " the issuer the provider's tokens name"
                )
            self._static = None
        else:
            raise ConfigError(f"webhook mode {mode.value!r} verifies nothing")
        self.mode = mode
        self._jwks = jwks
        self._audience = audience
        self._issuer = issuer
        self._clock = clock

    @classmethod
    def static(cls, secret: str, *, clock: Callable[[], float] = time.time) -> WebhookVerifier:
        return cls(WebhookMode.STATIC, secret=secret, clock=clock)

    @classmethod
    def dynamic(
        cls,
        jwks: JwksCache,
        *,
        audience: str,
        issuer: str = DEFAULT_WEBHOOK_ISSUER,
        clock: Callable[[], float] = time.time,
    ) -> WebhookVerifier:
        return cls(WebhookMode.DYNAMIC, jwks=jwks, audience=audience, issuer=issuer, clock=clock)

    def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        if len(body) > MAX_BODY_BYTES:
            raise WebhookRejected(
                413, f"delivery body: expected at most {MAX_BODY_BYTES} bytes; found {len(body)}"
            )
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
        check_key(webhook_id, "webhook-id")
        try:
            timestamp = int(stamp)
        except ValueError as exc:
            raise WebhookRejected(
                400, f"webhook-timestamp: expected Unix seconds; found {stamp[:40]!r}"
            ) from exc
        if abs(self._clock() - timestamp) > TOLERANCE_SECONDS:
            raise WebhookRejected(
                401,
                f"stale delivery {webhook_id}: timestamp {timestamp} is outside the"
                f" {TOLERANCE_SECONDS // 60}-minute window",
            )
        entries = signature.split()
        if self.mode is WebhookMode.STATIC:
            if not any(e.startswith("v1,") for e in entries):
                raise WebhookRejected(
                    401, "static webhooks are signed 'v1,<HMAC>' only; found another scheme"
                )
            scheme = self._verify_static(lower, body)
        elif any(e.startswith("v1a,") for e in entries):
            scheme = self._verify_ed25519(webhook_id, stamp, body, entries)
        elif len(entries) == 1 and signature.count(".") == 2 and "," not in signature:
            scheme = self._verify_jwt(signature)
        else:
            raise WebhookRejected(
                401, "per-job webhooks are signed 'v1a,<Ed25519>' or with a JWT; found neither"
            )
        payload = _parse(body)
        event_type = payload.get("type")
        if not isinstance(event_type, str):
            raise WebhookRejected(400, "delivery body: expected a string 'type'")
        check_key(event_type, "type")
        return Delivery(
            webhook_id=webhook_id,
            timestamp=timestamp,
            scheme=scheme,
            event_type=event_type,
            batch_name=batch_name_of(payload),
            payload=payload,
        )

    def _verify_static(self, headers: Mapping[str, str], body: bytes) -> str:
        assert self._static is not None
        try:
            self._static.verify(body, dict(headers))
        except (WebhookVerificationError, ValueError) as exc:
            raise WebhookRejected(401, f"forged or malformed static signature: {exc}") from exc
        return "static"

    def _verify_ed25519(self, webhook_id: str, stamp: str, body: bytes, entries: list[str]) -> str:
        message = f"{webhook_id}.{stamp}.".encode() + body
        signatures = _v1a_signatures(entries)
        if not signatures:
            raise WebhookRejected(401, "webhook-signature: malformed v1a entry")
        for refresh in (False, True):
            for public in _ed25519_keys(self._keys(refresh=refresh)):
                if _verifies_any(public, signatures, message):
                    return "v1a"
        raise WebhookRejected(
            401, "forged delivery: no published Ed25519 key verifies the signature"
        )

    def _verify_jwt(self, token: str) -> str:
        kid = _jwt_kid(token)
        for refresh in (False, True):
            for jwk in self._keys(refresh=refresh):
                matches = (kid is None or jwk.get("kid") == kid) and jwk.get("kty") == "RSA"
                if matches and self._jwt_verified_by(token, jwk):
                    return "jwt"
        raise WebhookRejected(401, "forged delivery: no published RS256 key verifies the JWT")

    def _jwt_verified_by(self, token: str, jwk: Mapping[str, Any]) -> bool:
        """Whether this RSA key verifies the token; a token the key verifies but that is
        stale, for another receiver or missing a claim is refused outright."""
        try:
            key = jwt.PyJWK(dict(jwk)).key
            jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud"]},
                leeway=TOLERANCE_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise WebhookRejected(401, f"stale JWT: {exc}") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            # Signed by the provider, but for another receiver: a token lifted from
            # someone else's delivery.
            raise WebhookRejected(401, f"JWT not meant for this receiver: {exc}") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise WebhookRejected(401, f"JWT lacks a required claim: {exc}") from exc
        except jwt.PyJWTError:
            return False
        return True

    def _keys(self, *, refresh: bool = False) -> list[Mapping[str, Any]]:
        assert self._jwks is not None
        return self._jwks.keys(refresh=refresh)


def _v1a_signatures(entries: list[str]) -> list[bytes]:
    """The decodable `v1a,<base64>` entries of a webhook-signature header."""
    signatures = []
    for entry in entries:
        if not entry.startswith("v1a,"):
            continue
        try:
            signatures.append(base64.b64decode(entry[4:], validate=True))
        except (binascii.Error, ValueError):
            continue
    return signatures


def _ed25519_keys(jwks: list[Mapping[str, Any]]) -> Iterator[Ed25519PublicKey]:
    """The usable Ed25519 public keys of a key set (others are skipped, not errors)."""
    for jwk in jwks:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        try:
            public = jwt.PyJWK(dict(jwk)).key
        except jwt.PyJWTError:
            continue
        if isinstance(public, Ed25519PublicKey):
            yield public


def _verifies_any(public: Ed25519PublicKey, signatures: list[bytes], message: bytes) -> bool:
    for sig in signatures:
        try:
            public.verify(sig, message)
        except InvalidSignature:
            continue
        return True
    return False


def _jwt_kid(token: str) -> str | None:
    """The key id a JWT's header names, checked; None when it names none."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as exc:
        raise WebhookRejected(401, f"malformed JWT signature: {exc}") from exc
    if kid is None:
        return None
    if not isinstance(kid, str):
        raise WebhookRejected(401, "JWT header: expected a string kid")
    check_key(kid, "JWT kid")
    return kid


def verifier_for(settings: Settings) -> WebhookVerifier:
    """The verifier a deployment's settings call for (ConfigError when one is missing)."""
    if settings.webhook_mode is WebhookMode.STATIC:
        if not settings.webhook_secret:
            raise ConfigError(
                "static webhooks need the signing secret:"
                " set BANANABATCH_WEBHOOK_SECRET (whsec_...)"
            )
        return WebhookVerifier.static(settings.webhook_secret)
    audience = settings.webhook_audience or settings.webhook_url
    if not audience:
        raise ConfigError(
            "dynamic webhooks need the audience their tokens name: set"
            " BANANABATCH_WEBHOOK_AUDIENCE (or BANANABATCH_WEBHOOK_URL) to this receiver's URL"
        )
    return WebhookVerifier.dynamic(
        JwksCache(settings.webhook_jwks_url or DEFAULT_JWKS_URL),
        audience=audience,
        issuer=settings.webhook_issuer,
    )


def check_key(value: str, what: str) -> str:
    """Refuse ids that carry control, bidi or other invisible characters, or are too long."""
    if len(value) > MAX_ID_CHARS:
        raise WebhookRejected(400, f"{what}: expected at most {MAX_ID_CHARS} characters")
    for index, char in enumerate(value):
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise WebhookRejected(
                400,
                f"{what}: control or bidi character U+{ord(char):04X} at position {index}",
            )
    return value


def standard_webhook_headers(
    headers: Mapping[str, str], body: bytes
) -> tuple[dict[str, str], str, int]:
    """The checks of a Standard Webhooks delivery (OpenAI's, Replicate's) made before its
    secret is touched: the body's size, the three headers, an id without control characters,
    a timestamp in Unix seconds. Returns the headers lower-cased, the id and the timestamp;
    WebhookRejected (413, 401, 400) says what is wrong. The signature, and how stale a
    timestamp may be, are each provider's to check."""
    if len(body) > MAX_BODY_BYTES:
        raise WebhookRejected(
            413, f"delivery body: expected at most {MAX_BODY_BYTES} bytes; found {len(body)}"
        )
    lower = {k.lower(): v for k, v in headers.items()}
    webhook_id, stamp = lower.get("webhook-id"), lower.get("webhook-timestamp")
    if not webhook_id or not stamp or not lower.get("webhook-signature"):
        raise WebhookRejected(
            401,
            "unsigned delivery: expected webhook-id, webhook-timestamp and webhook-signature"
            " headers",
        )
    check_key(webhook_id, "webhook-id")
    if not stamp.isdigit():
        raise WebhookRejected(
            400, f"webhook-timestamp: expected Unix seconds; found {stamp[:40]!r}"
        )
    return lower, webhook_id, int(stamp)


def _check_member_names(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise WebhookRejected(400, "delivery body: nested deeper than 32 levels")
    if isinstance(value, Mapping):
        for name, item in value.items():
            check_key(str(name), "delivery body member name")
            _check_member_names(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_member_names(item, depth + 1)


def _parse(body: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WebhookRejected(400, f"delivery body: expected JSON; {exc}") from exc
    if not isinstance(payload, Mapping):
        raise WebhookRejected(400, "delivery body: expected a JSON object")
    _check_member_names(payload)
    return payload


def batch_name_of(payload: Mapping[str, Any]) -> str | None:
    """`batches/<id>` from the event's data.id, whether or not it carries the prefix."""
    data = payload.get("data")
    if not isinstance(data, Mapping):
        return None
    raw = data.get("id") or data.get("name")
    if not isinstance(raw, str) or not raw:
        return None
    check_key(raw, "data.id")
    name = raw if raw.startswith("batches/") else f"batches/{raw}"
    if "/" in name.removeprefix("batches/"):
        raise WebhookRejected(400, f"data.id: expected a batch id; found {raw[:80]!r}")
    return name


# The batch events the service documents (field sheet §1 row 8): no batch.cancelled, which
# is learned by polling.
STATIC_EVENTS: Final = ("batch.succeeded", "batch.failed", "batch.expired")


@dataclass(frozen=True)
class Registration:
    webhook_id: str
    signing_secret: str


def register_static_webhook(
    settings: Settings, uri: str, *, name: str | None = None
) -> Registration:
    """Register a project webhook for batch events under the configured API version
    (`v1beta` by default: webhooks are a Beta API); returns its id and the signing secret,
    which the service shows only once."""
    from google import genai
    from google.genai import types

    if not settings.gemini_api_key:
        raise ConfigError("registering a webhook needs an API key: set GEMINI_API_KEY")
    client = genai.Client(
        api_key=settings.gemini_api_key,
        http_options=types.HttpOptions(
            base_url=settings.gemini_base_url, api_version=settings.webhook_api_version
        ),
    )
    hook = client.webhooks.create(uri=uri, subscribed_events=list(STATIC_EVENTS), name=name)
    if not hook.id or not hook.new_signing_secret:
        raise PermanentError(
            f"webhook registration for {uri}: expected an id and a new_signing_secret;"
            f" found id={hook.id!r}"
        )
    return Registration(webhook_id=hook.id, signing_secret=hook.new_signing_secret)
