"""The OpenAI emulator's webhook deliveries: project-level endpoints registered through
`POST /v1/webhook_endpoints` (the SDK's `client.webhooks.create`), each with its own
`whsec_` signing secret; events `batch.completed|failed|expired|cancelled` with a thin
payload (`data.id`), signed Standard Webhooks `v1,<HMAC-SHA256>` over
"<id>.<timestamp>.<body>", which is what the SDK's `webhooks.unwrap` verifies.

As on every emulator, nothing is sent by a timer: deliveries queue when a batch ends and go
out on `flush()`; fault switches drop, duplicate or hold them (emulator/base/outbox.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bananabatch.emulator.base.outbox import (
    Pending,
    WebhookOutbox,
    new_signing_secret,
    standard_headers,
)

EVENTS = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")


@dataclass
class Endpoint:
    endpoint_id: str
    url: str
    secret: str
    events: list[str]


@dataclass
class OpenAIWebhooks(WebhookOutbox):
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def register(self, url: str, events: list[str], name: str | None = None) -> dict[str, Any]:
        secret = new_signing_secret()
        hook = Endpoint(f"we_{uuid.uuid4().hex[:24]}", url, secret, list(events))
        with self._lock:
            self.endpoints[hook.endpoint_id] = hook
        return {
            "id": hook.endpoint_id,
            "object": "webhook_endpoint",
            "name": name or "",
            "url": url,
            "event_types": hook.events,
            "status": "enabled",
            "created_at": int(self.clock()),
            "signing_secret": secret,
        }

    def batch_finished(self, batch_id: str, status: str, finished_at: int) -> None:
        event = f"batch.{status}"
        if event not in EVENTS:
            return
        with self._lock:
            hooks = [h for h in self.endpoints.values() if not h.events or event in h.events]
        stamp = int(self.clock())
        body = json.dumps(
            {
                "id": f"evt_{uuid.uuid4().hex[:24]}",
                "object": "event",
                "created_at": finished_at,
                "type": event,
                "data": {"id": batch_id},
            }
        ).encode()
        self.enqueue(Pending(hook.url, _signed(hook.secret, stamp, body), body) for hook in hooks)


def _signed(secret: str, stamp: int, body: bytes) -> dict[str, str]:
    return standard_headers(secret, f"wh_{uuid.uuid4().hex}", stamp, body)


def headers_for(secret: str, body: bytes, stamp: int | None = None) -> Mapping[str, str]:
    """Headers of a genuine delivery of `body` (tests forge variations of it)."""
    return _signed(secret, int(time.time()) if stamp is None else stamp, body)
