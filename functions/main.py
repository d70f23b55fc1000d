"""Cloud Functions entry points. Each turns one event into one call into the package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import ServiceUnavailable

from bananabatch import entrypoints, wiring
from bananabatch.errors import TransientError
from bananabatch.openai_webhooks import OPENAI_WEBHOOK_PATH
from bananabatch.webhooks import MAX_BODY_BYTES


@contextmanager
def _redelivered() -> Iterator[None]:
    """A TransientError, already logged as one structured line, becomes a plain 503: the
    platform redelivers the event, and the framework prints no traceback for an HTTP error
    (it does for an exception, which would bury the log in expected, recovered failures)."""
    try:
        yield
    except TransientError as exc:
        raise ServiceUnavailable(description=str(exc)[:500]) from None


@functions_framework.cloud_event
def on_upload(event: CloudEvent) -> None:
    """A JSONL object was finalized in the inbox bucket (Eventarc)."""
    with _redelivered():
        entrypoints.upload(wiring.current(), event.get_attributes(), event.get_data())


@functions_framework.cloud_event
def on_tick(event: CloudEvent) -> None:
    """Cloud Scheduler's tick arrived on its Pub/Sub topic."""
    with _redelivered():
        entrypoints.tick_event(wiring.current(), event.get_attributes(), event.get_data())


@functions_framework.cloud_event
def on_batch_done(event: CloudEvent) -> None:
    """A provider batch finished: collect its results."""
    with _redelivered():
        entrypoints.batch_done(wiring.current(), event.get_attributes(), event.get_data())


@functions_framework.cloud_event
def on_billing_alert(event: CloudEvent) -> None:
    """A Cloud Billing budget notification: the kill switch pauses all submission."""
    with _redelivered():
        entrypoints.billing_alert(wiring.current(), event.get_attributes(), event.get_data())


@functions_framework.http
def on_gemini_webhook(request: flask.Request) -> tuple[dict[str, Any], int]:
    """A webhook delivery (HTTP): verified, then announced as batch-done. Gemini's at the
    function's URL; OpenAI's at its sub-path /openai (the URL registered with OpenAI);
    Replicate's at /replicate (the webhook URL each prediction names)."""
    # Read at most one byte past the cap: a bigger body is refused (413) without being read.
    body = request.stream.read(MAX_BODY_BYTES + 1)
    # No provider: the receiver only verifies and publishes (it holds no provider key).
    runtime = wiring.current(with_provider=False)
    if request.path.rstrip("/").endswith(OPENAI_WEBHOOK_PATH):
        return entrypoints.openai_webhook(runtime, dict(request.headers), body)
    if entrypoints.async_lane_of(request.path) == "replicate":
        return entrypoints.replicate_webhook(runtime, dict(request.headers), body)
    return entrypoints.gemini_webhook(runtime, dict(request.headers), body)
