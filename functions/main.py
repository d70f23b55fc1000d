"""Cloud Functions entry points. Each turns one event into one call into the package."""

from __future__ import annotations

from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent

from bananabatch import entrypoints, wiring
from bananabatch.webhooks import MAX_BODY_BYTES


@functions_framework.cloud_event
def on_upload(event: CloudEvent) -> None:
    """A JSONL object was finalized in the inbox bucket (Eventarc)."""
    entrypoints.upload(wiring.current(), event.get_attributes(), event.get_data())


@functions_framework.cloud_event
def on_tick(event: CloudEvent) -> None:
    """Cloud Scheduler's tick arrived on its Pub/Sub topic."""
    entrypoints.tick_event(wiring.current(), event.get_attributes(), event.get_data())


@functions_framework.cloud_event
def on_batch_done(event: CloudEvent) -> None:
    """A provider batch finished: collect its results."""
    entrypoints.batch_done(wiring.current(), event.get_attributes(), event.get_data())


@functions_framework.cloud_event
def on_billing_alert(event: CloudEvent) -> None:
    """A Cloud Billing budget notification: the kill switch pauses all submission."""
    entrypoints.billing_alert(wiring.current(), event.get_attributes(), event.get_data())


@functions_framework.http
def on_gemini_webhook(request: flask.Request) -> tuple[dict[str, Any], int]:
    """A Gemini webhook delivery (HTTP): verified, then announced as batch-done."""
    # Read at most one byte past the cap: a bigger body is refused (413) without being read.
    body = request.stream.read(MAX_BODY_BYTES + 1)
    # No provider: the receiver only verifies and publishes (it holds no Gemini key).
    return entrypoints.gemini_webhook(
        wiring.current(with_provider=False), dict(request.headers), body
    )
