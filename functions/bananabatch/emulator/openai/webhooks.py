"""The OpenAI emulator's webhook deliveries: project-level endpoints registered through
`POST /v1/webhook_endpoints` (the SDK's `client.webhooks.create`), each with its own
`whsec_` signing secret; events `batch.completed|failed|expired|cancelled` with a thin
payload (`data.id`), signed Standard Webhooks `v1,<HMAC-SHA256>` over
"<id>.<timestamp>.<body>", which is what the SDK's `webhooks.unwrap` verifies.

As on the Gemini emulator, nothing is sent by a timer: deliveries queue when a batch ends and
go out on `flush()`; fault switches drop, duplicate or hold them (the Gemini emulator's
WebhookFaults).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

from bananabatch.emulator.webhooks import Pending, Sender, WebhookFaults, _http_send

EVENTS = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")


@dataclass
class Endpoint:
    endpoint_id: str
    url: str
    secret: str
    events: list[str]


@dataclass
class OpenAIWebhooks:
    # Wall-clock seconds: the SDK checks the timestamp against time.time().
    clock: Callable[[], float] = time.time
    sender: Sender = _http_send
    faults: WebhookFaults = field(default_factory=WebhookFaults)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    delivered: list[tuple[str, int]] = field(default_factory=list)
    _queue: list[Pending] = field(default_factory=list)
    _held: list[Pending] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, url: str, events: list[str], name: str | None = None) -> dict[str, Any]:
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
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
        with self._lock:
            for hook in hooks:
                self._enqueue(Pending(hook.url, _signed(hook.secret, stamp, body), body))

    def _enqueue(self, pending: Pending) -> None:
        if self.faults.drop > 0:
            self.faults.drop -= 1
            return
        if self.faults.duplicate > 0:
            self.faults.duplicate -= 1
            self._queue.extend([pending, pending])
        elif self.faults.delay > 0:
            self.faults.delay -= 1
            self._held.append(pending)
        else:
            self._queue.append(pending)

    def flush(self) -> list[int]:
        with self._lock:
            batch, self._queue = self._queue, []
        statuses = []
        for pending in batch:
            status = self.sender(pending.uri, pending.headers, pending.body)
            statuses.append(status)
            with self._lock:
                self.delivered.append((pending.headers["webhook-id"], status))
        return statuses

    def release(self) -> int:
        with self._lock:
            held, self._held = self._held, []
            self._queue.extend(held)
        return len(held)


def _signed(secret: str, stamp: int, body: bytes) -> dict[str, str]:
    msg_id = f"wh_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(stamp, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
        "content-type": "application/json",
    }


def headers_for(secret: str, body: bytes, stamp: int | None = None) -> Mapping[str, str]:
    """Headers of a genuine delivery of `body` (tests forge variations of it)."""
    return _signed(secret, int(time.time()) if stamp is None else stamp, body)
