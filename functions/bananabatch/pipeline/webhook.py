"""A verified webhook delivery becomes a batch-done message; a replay becomes a 409.

Replay protection is a record per webhook-id, created before anything else. A delivery
whose record says "published" is a replay. One whose earlier attempt died before
publishing is allowed through, because the provider retries only deliveries we failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bananabatch.core.states import BATCH_PROVIDER_TERMINAL
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import submit
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Doc, Where
from bananabatch.webhooks import Delivery, WebhookRejected

log = get_logger(__name__)

BATCH_EVENTS = frozenset({"batch.succeeded", "batch.failed", "batch.expired", "batch.cancelled"})
# Deliveries are retried for 24 h; a record kept a day longer covers every replay window.
RECORD_TTL = timedelta(days=2)


def handle_delivery(rt: Runtime, delivery: Delivery) -> dict[str, Any]:
    path = f"webhook_deliveries/{_safe_id(delivery.webhook_id)}"
    now = rt.now()
    rt.state.create(
        path,
        {
            "webhook_id": delivery.webhook_id,
            "state": "received",
            "received_at": now.isoformat(),
            "expire_at": (now + RECORD_TTL).isoformat(),
            "event_type": delivery.event_type,
        },
    )
    record = rt.state.get(path) or {}
    if record.get("state") == "published":
        raise WebhookRejected(409, f"replayed delivery {delivery.webhook_id}: already handled")
    with labels(batch_name=delivery.batch_name):
        if delivery.event_type not in BATCH_EVENTS or delivery.batch_name is None:
            log.info("webhook event ignored", extra={"event_type": delivery.event_type})
            _mark(rt, path)
            return {"status": "ignored", "event": delivery.event_type}
        matches = list(
            rt.state.query("batches", [Where("provider_name", "==", delivery.batch_name)], limit=1)
        )
        if not matches:
            log.warning("webhook for a batch this deployment did not create")
            _mark(rt, path)
            return {"status": "unknown batch"}
        batch = rt.repo.require_batch(str(matches[0]["batch_id"]))
        with labels(job_id=batch.job_id, batch_id=batch.batch_id):
            # The collector re-reads the provider's state, so announcing a batch that is not
            # yet terminal in our records is harmless.
            submit.publish_batch_done(rt, batch)
            log.info(
                "webhook delivered: %s",
                delivery.event_type,
                extra={
                    "scheme": delivery.scheme,
                    "already_terminal": batch.state in BATCH_PROVIDER_TERMINAL,
                },
            )
        _mark(rt, path)
        return {"status": "accepted", "batch_id": batch.batch_id}


def _mark(rt: Runtime, path: str) -> None:
    def published(doc: Doc | None) -> Doc | None:
        return None if doc is None else {**doc, "state": "published"}

    rt.state.update(path, published)


def _safe_id(webhook_id: str) -> str:
    # Document ids may not contain "/"; webhook ids are "msg_<uuid>" in practice.
    return webhook_id.replace("/", "_")[:200]
