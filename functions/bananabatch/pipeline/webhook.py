"""A verified webhook delivery becomes a batch-done message, and nothing else.

The receiver is the one public endpoint, so it holds no database rights and reads or writes
no state: it publishes the provider's batch name on the batch-done topic, and the collector
(which has the rights) finds the batch. Duplicate suppression lives there too, not here: a
provider retry or a replay within the signature's five-minute window costs one extra
batch-done message, which the collector absorbs (its lease and cursor make a second
collection of a batch a no-op). A delivery about a batch this deployment did not create is
dropped by the collector with a log line.

Cancellation is learned by polling (the tick): no `batch.cancelled` event is documented.
One that arrives anyway is handled like any other terminal event.
"""

from __future__ import annotations

import json
from typing import Any, Final

from bananabatch.log import get_logger, labels
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Where
from bananabatch.webhooks import Delivery

log = get_logger(__name__)

# Gemini's, and OpenAI's batch.completed (openai_webhooks.py); the others share names.
BATCH_EVENTS: Final = frozenset(
    {"batch.succeeded", "batch.completed", "batch.failed", "batch.expired", "batch.cancelled"}
)
SCHEMA_VERSION: Final = 1


def handle_delivery(rt: Runtime, delivery: Delivery) -> dict[str, Any]:
    """Publish a verified batch event for the collector; touches no state."""
    with labels(batch_name=delivery.batch_name):
        if delivery.event_type not in BATCH_EVENTS or delivery.batch_name is None:
            log.info("webhook event ignored", extra={"event_type": delivery.event_type})
            return {"status": "ignored", "event": delivery.event_type}
        message = {
            "schema_version": SCHEMA_VERSION,
            "provider_name": delivery.batch_name,
            "event": delivery.event_type,
            "webhook_id": delivery.webhook_id,
        }
        rt.bus.publish(
            rt.settings.topic_batch_done,
            json.dumps(message, separators=(",", ":")).encode(),
            {"provider_name": delivery.batch_name, "source": "webhook"},
        )
        log.info(
            "webhook delivered: %s",
            delivery.event_type,
            extra={"scheme": delivery.scheme, "webhook_id": delivery.webhook_id},
        )
        return {"status": "accepted", "batch_name": delivery.batch_name}


def batch_id_for(rt: Runtime, provider_name: str) -> str | None:
    """The batch this deployment created under a provider's name, or None (logged)."""
    matches = list(
        rt.state.query("batches", [Where("provider_name", "==", provider_name)], limit=1)
    )
    if not matches:
        with labels(batch_name=provider_name):
            log.warning("webhook for a batch this deployment did not create")
        return None
    return str(matches[0]["batch_id"])
