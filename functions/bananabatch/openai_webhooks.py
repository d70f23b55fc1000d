"""Verifying OpenAI webhook deliveries (field sheet §3.1): batch.completed, batch.failed,
batch.expired and batch.cancelled, from a project-level webhook endpoint, signed Standard
Webhooks "v1,<HMAC-SHA256>" with that endpoint's `whsec_` secret.

Verification is the SDK's own: `client.webhooks.unwrap(body, headers, secret=...)`, which
checks the signature and the five-minute timestamp window and parses the event. Around it,
the same bounds as the Gemini receiver (webhooks.py): the body is capped (413), the ids
carried may hold no control, bidi or invisible characters, and an unsigned or undated
delivery is refused before the secret is touched. The payload is thin (`data.id`, the batch
id): the collector fetches the batch itself, so a verified delivery can only ever make us
look at a batch we created, sooner.

The receiver holds no OpenAI API key: the client exists only to verify, and sends nothing.
A failed verification never loses a job: the tick polls every unfinished batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

import openai

from bananabatch.config import ENV_OPENAI_WEBHOOK_SECRET, Settings
from bananabatch.errors import ConfigError, PermanentError
from bananabatch.webhooks import Delivery, WebhookRejected, check_key, standard_webhook_headers

#: The batch events OpenAI sends; all four are terminal states of a batch.
BATCH_EVENTS: Final = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")
SCHEME: Final = "openai"
#: The receiver function's sub-path that takes OpenAI deliveries: register the endpoint
#: as "<on_gemini_webhook URL>/openai".
OPENAI_WEBHOOK_PATH: Final = "/openai"
# The receiver never calls the API: the client is only a verifier.
_NO_KEY: Final = "unused-webhook-receiver"


@lru_cache(maxsize=4)
def _client(secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=_NO_KEY, webhook_secret=secret, max_retries=0)


def verify(secret: str | None, headers: Mapping[str, str], body: bytes) -> Delivery:
    """A verified delivery, or WebhookRejected (400 malformed, 401 unsigned, forged or
    stale, 413 too large). ConfigError when no secret is configured."""
    if not secret:
        raise ConfigError(
            f"OpenAI webhooks need the endpoint's signing secret: set {ENV_OPENAI_WEBHOOK_SECRET}"
        )
    lower, webhook_id, stamp = standard_webhook_headers(headers, body)
    try:
        _client(secret).webhooks.verify_signature(body, lower, secret=secret)
    except openai.InvalidWebhookSignatureError as exc:
        raise WebhookRejected(401, f"forged or stale OpenAI delivery {webhook_id}: {exc}") from exc
    except ValueError as exc:  # a secret the SDK cannot decode
        raise ConfigError(f"{ENV_OPENAI_WEBHOOK_SECRET} is not a usable secret: {exc}") from exc
    try:
        # Verified above; unwrap verifies again (cheap) and parses into the SDK's event.
        event = _client(secret).webhooks.unwrap(body, lower, secret=secret)
    except ValueError as exc:
        raise WebhookRejected(400, f"delivery body: expected a JSON event; {exc}") from exc
    return _delivery(webhook_id, stamp, event)


def _delivery(webhook_id: str, stamp: int, event: Any) -> Delivery:
    event_type = getattr(event, "type", None)
    if not isinstance(event_type, str):
        raise WebhookRejected(400, "delivery body: expected a string 'type'")
    check_key(event_type, "type")
    batch_id: str | None = None
    if event_type in BATCH_EVENTS:
        raw = getattr(getattr(event, "data", None), "id", None)
        if not isinstance(raw, str) or not raw:
            raise WebhookRejected(400, f"{event_type}: expected data.id, the batch id")
        batch_id = check_key(raw, "data.id")
        if "/" in batch_id:
            raise WebhookRejected(400, f"data.id: expected a batch id; found {raw[:80]!r}")
    payload = event.to_dict() if hasattr(event, "to_dict") else {}
    return Delivery(
        webhook_id=webhook_id,
        timestamp=stamp,
        scheme=SCHEME,
        event_type=event_type,
        batch_name=batch_id,
        payload=payload if isinstance(payload, dict) else {},
    )


def register_webhook(settings: Settings, url: str, *, name: str = "bananabatch") -> tuple[str, str]:
    """Register a project webhook endpoint for the four batch events (the SDK's
    `webhooks.create`); returns its id and its signing secret, shown only this once."""
    if not settings.openai_api_key:
        raise ConfigError("registering an OpenAI webhook needs OPENAI_API_KEY")
    client = openai.OpenAI(
        api_key=settings.openai_api_key, base_url=settings.openai_base_url or None, max_retries=0
    )
    try:
        hook = client.webhooks.create(event_types=list(BATCH_EVENTS), name=name, url=url)
    except openai.APIError as exc:
        raise PermanentError(f"registering the OpenAI webhook for {url}: {exc}") from exc
    finally:
        client.close()
    if not hook.id or not hook.signing_secret:
        raise PermanentError(f"OpenAI webhook registration for {url}: no id or secret returned")
    return hook.id, hook.signing_secret
