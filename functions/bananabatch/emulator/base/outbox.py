"""A webhook outbox: deliveries queue when something ends and go out when a test (or the
local runner) calls `flush()`, never by a timer, so no test depends on timing. Fault
switches drop, duplicate or hold deliveries; held ones go out after `release()`.

Every emulator's signed callbacks pass through one of these; what differs per provider
(event names, payloads, signing scheme) stays in the emulator's own module."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

Sender = Callable[[str, Mapping[str, str], bytes], int]


@dataclass
class WebhookFaults:
    # The next N deliveries vanish (the receiver never hears of them).
    drop: int = 0
    # The next N deliveries are sent twice, with the same webhook-id.
    duplicate: int = 0
    # The next N deliveries are held until release().
    delay: int = 0


@dataclass
class Pending:
    uri: str
    headers: dict[str, str]
    body: bytes


def http_send(uri: str, headers: Mapping[str, str], body: bytes) -> int:
    return httpx.post(uri, content=body, headers=dict(headers), timeout=10.0).status_code


@dataclass
class WebhookOutbox:
    # Wall-clock seconds by default: receivers check the timestamp against their own clock.
    clock: Callable[[], float] = time.time
    sender: Sender = http_send
    faults: WebhookFaults = field(default_factory=WebhookFaults)
    # (webhook-id, HTTP status) of every delivery sent, in order.
    delivered: list[tuple[str, int]] = field(default_factory=list)
    _queue: list[Pending] = field(default_factory=list)
    _held: list[Pending] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueue(self, deliveries: Iterable[Pending]) -> None:
        """Queue deliveries through the configured faults."""
        with self._lock:
            for pending in deliveries:
                self._enqueue(pending)

    def _enqueue(self, pending: Pending) -> None:
        """One delivery through the faults (the caller holds the lock)."""
        if self.faults.drop > 0:
            self.faults.drop -= 1
            return
        # One fault per delivery, in this order, so counts compose predictably.
        if self.faults.duplicate > 0:
            self.faults.duplicate -= 1
            self._queue.extend([pending, pending])
        elif self.faults.delay > 0:
            self.faults.delay -= 1
            self._held.append(pending)
        else:
            self._queue.append(pending)

    def flush(self) -> list[int]:
        """Send every queued delivery now; returns the HTTP statuses received."""
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
        """Let held deliveries go out on the next flush; returns how many."""
        with self._lock:
            held, self._held = self._held, []
            self._queue.extend(held)
        return len(held)

    def pending_count(self) -> int:
        """Deliveries queued or held, not yet sent."""
        with self._lock:
            return len(self._queue) + len(self._held)


def new_signing_secret() -> str:
    """A Standard Webhooks secret: "whsec_" and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def standard_headers(secret: str, msg_id: str, stamp: int, body: bytes) -> dict[str, str]:
    """Headers of a Standard Webhooks delivery signed `v1,<HMAC-SHA256>` over
    "<id>.<timestamp>.<body>" with `secret` (whsec_...)."""
    when = datetime.fromtimestamp(stamp, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
        "content-type": "application/json",
    }
