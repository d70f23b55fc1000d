"""What each Cloud Function does with its event: parse, label the logs, delegate, and
translate the error family into the platform's retry decision.

PermanentError: logged and swallowed (returning normally acknowledges the event, so a
poison message is not retried forever). TransientError: logged as one structured warning
and raised, so the platform redelivers the event (functions/main.py answers it with a plain
503, so no traceback is printed for a failure that is expected and recovered). Anything
unexpected: raised with its traceback, so the platform redelivers it and a person sees it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Final

from bananabatch import log, openai_webhooks
from bananabatch.config import WebhookMode
from bananabatch.errors import BananaError, ConfigError, PermanentError, TransientError
from bananabatch.events import parse_pubsub_event, parse_upload_event
from bananabatch.pipeline import collect, intake, pause, tasks, thumbnails, tick, webhook
from bananabatch.pipeline.runtime import Runtime
from bananabatch.providers.replicate_lane import ReplicateLane
from bananabatch.webhooks import MAX_ID_CHARS, WebhookRejected, WebhookVerifier, verifier_for

logger = log.get_logger(__name__)

# A collector invocation stops taking new rows after this many seconds and hands the rest
# to a fresh invocation, well inside the 540 s function timeout the infra sets.
COLLECT_BUDGET_SECONDS: Final = 420.0
# What a batch-done message without a `kind` is: every message published before thumbnails
# had their own kind, and every "collect this batch" message since.
BATCH_DONE_KIND: Final = "batch_done"


def _failure_fields(exc: BananaError) -> dict[str, str | None]:
    return {
        "error": str(exc),
        "error_type": type(exc).__name__,
        "job_id": exc.job_id,
        "batch_id": exc.batch_id,
        "key": exc.key,
    }


@contextmanager
def _handled(rt: Runtime, entry: str, event_id: str | None) -> Iterator[None]:
    log.configure(rt.settings.log_level)
    with log.labels(execution_id=event_id, entry_point=entry):
        try:
            yield
        except TransientError as exc:
            logger.warning(
                "transient failure; the platform redelivers the event",
                extra=_failure_fields(exc),
            )
            raise
        except PermanentError as exc:
            logger.error(
                "permanent failure; event acknowledged without retry",
                extra=_failure_fields(exc),
            )


def upload(rt: Runtime, attributes: Mapping[str, Any], data: Any) -> str | None:
    job_id: str | None = None
    with _handled(rt, "on_upload", attributes.get("id")):
        obj = parse_upload_event(data)
        if obj is None:
            # The notification only sends finalizations; anything else is acknowledged.
            logger.info("upload event for something other than a new object; ignored")
            return None
        job_id = intake.handle_upload(rt, obj.source(), obj.metadata)
    return job_id


def tick_event(rt: Runtime, attributes: Mapping[str, Any], data: Any) -> None:
    with _handled(rt, "on_tick", attributes.get("id")):
        parse_pubsub_event(data)
        tick.handle_tick(rt)


def batch_done(rt: Runtime, attributes: Mapping[str, Any], data: Any) -> None:
    """The batch-done topic carries two kinds of message: "a batch is done, collect it"
    (no `kind`, the original shape, still what the tick and webhooks publish) and the
    collector's "make these thumbnails" (`kind` "thumbnails")."""
    clock = rt.monotonic
    started = clock()
    with _handled(rt, "on_batch_done", attributes.get("id")):
        payload = parse_pubsub_event(data).message.payload()
        kind = payload.get("kind", BATCH_DONE_KIND)
        if kind == thumbnails.KIND:
            thumbnails.handle_thumbnails(rt, thumbnails.parse_request(payload))
            return
        if kind == tasks.KIND:
            # An async lane's task announced by its verified callback (pipeline/tasks.py).
            tasks.handle_done(rt, payload)
            return
        if kind != BATCH_DONE_KIND:
            raise PermanentError(
                f"batch-done message: expected kind {BATCH_DONE_KIND!r} or "
                f"{thumbnails.KIND!r}; found {kind!r}"
            )
        batch_id = payload.get("batch_id")
        provider_name = payload.get("provider_name")
        if batch_id is None and isinstance(provider_name, str) and provider_name:
            # From the webhook receiver, which names the provider's batch and reads nothing.
            batch_id = webhook.batch_id_for(rt, provider_name)
            if batch_id is None:
                return
        if not isinstance(batch_id, str) or not batch_id:
            raise PermanentError(
                f"batch-done message: expected a batch_id string; found {payload!r}"
            )
        collect.handle_batch_done(
            rt, batch_id, should_stop=lambda: clock() - started > COLLECT_BUDGET_SECONDS
        )


def billing_alert(rt: Runtime, attributes: Mapping[str, Any], data: Any) -> str | None:
    """A Cloud Billing budget notification (the kill switch, infra/killswitch.py)."""
    done: str | None = None
    with _handled(rt, "on_billing_alert", attributes.get("id")):
        message = parse_pubsub_event(data).message
        done = pause.handle_budget_notification(rt, message.attributes, message.payload())
        logger.info("budget notification handled", extra={"outcome": done})
    return done


_verifiers: dict[tuple[object, ...], WebhookVerifier] = {}


def _verifier(rt: Runtime) -> WebhookVerifier:
    s = rt.settings
    cache_key = (
        s.webhook_mode,
        s.webhook_secret,
        s.webhook_jwks_url,
        s.webhook_audience or s.webhook_url,
        s.webhook_issuer,
    )
    if cache_key not in _verifiers:
        # Kept per process so the JWKS cache (and its refetch throttle) survives between
        # requests on a warm instance.
        _verifiers[cache_key] = verifier_for(s)
    return _verifiers[cache_key]


def async_lane_of(path: str) -> str | None:
    """The async lane whose callbacks the receiver takes at this path's sub-path, if any."""
    tail = path.rstrip("/")
    for lane, sub_path in tasks.WEBHOOK_PATHS.items():
        if tail.endswith(sub_path):
            return lane
    return None


@lru_cache(maxsize=4)
def _replicate_verifier(secret: str) -> ReplicateLane:
    # No token: the receiver only verifies, and sends nothing to Replicate.
    return ReplicateLane(api_token=None, webhook_secret=secret)


def replicate_webhook(
    rt: Runtime, headers: Mapping[str, str], body: bytes
) -> tuple[dict[str, Any], int]:
    """Verify a Replicate callback with Replicate's scheme (and only it) and announce the
    task; answers 404 when no Replicate signing secret is configured. Reads no state."""
    log.configure(rt.settings.log_level)
    webhook_id = headers.get("webhook-id") or headers.get("Webhook-Id")
    with log.labels(
        execution_id=webhook_id[:MAX_ID_CHARS].encode("unicode_escape").decode()
        if webhook_id
        else None,
        entry_point="on_gemini_webhook/replicate",
    ):
        secret = rt.settings.replicate_webhook_secret
        if not secret:
            return {"error": "Replicate webhooks are not enabled on this deployment"}, 404
        try:
            delivery = _replicate_verifier(secret).verify_delivery(headers, body)
        except WebhookRejected as exc:
            logger.warning(
                "webhook refused",
                extra={"status": exc.status, "error": str(exc), "alert": "webhook_refused"},
            )
            return {"error": str(exc)}, exc.status
        if delivery.status in ("starting", "processing"):
            return {"status": "ignored", "event": delivery.status}, 200
        return tasks.publish_done(rt, "replicate", delivery.prediction_id, delivery.webhook_id), 200


def openai_webhook(
    rt: Runtime, headers: Mapping[str, str], body: bytes
) -> tuple[dict[str, Any], int]:
    """Verify an OpenAI webhook delivery with the SDK and hand it on, as gemini_webhook
    does; answers 404 when no OpenAI webhook secret is configured."""
    log.configure(rt.settings.log_level)
    webhook_id = headers.get("webhook-id") or headers.get("Webhook-Id")
    with log.labels(
        execution_id=webhook_id[:MAX_ID_CHARS].encode("unicode_escape").decode()
        if webhook_id
        else None,
        entry_point="on_gemini_webhook/openai",
    ):
        if not rt.settings.openai_webhook_secret:
            return {"error": "OpenAI webhooks are not enabled on this deployment"}, 404
        try:
            delivery = openai_webhooks.verify(rt.settings.openai_webhook_secret, headers, body)
            return webhook.handle_delivery(rt, delivery), 200
        except ConfigError as exc:
            logger.error("webhook receiver misconfigured", extra={"error": str(exc)})
            return {"error": "webhook receiver misconfigured"}, 500
        except WebhookRejected as exc:
            logger.warning(
                "webhook refused",
                extra={"status": exc.status, "error": str(exc), "alert": "webhook_refused"},
            )
            return {"error": str(exc)}, exc.status


def gemini_webhook(
    rt: Runtime, headers: Mapping[str, str], body: bytes
) -> tuple[dict[str, Any], int]:
    """Verify a Gemini webhook delivery and hand it on; answers (JSON body, HTTP status).
    Reads and writes no state: the receiver's identity may only publish."""
    log.configure(rt.settings.log_level)
    webhook_id = headers.get("webhook-id") or headers.get("Webhook-Id")
    with log.labels(
        execution_id=webhook_id[:MAX_ID_CHARS].encode("unicode_escape").decode()
        if webhook_id
        else None,
        entry_point="on_gemini_webhook",
    ):
        if rt.settings.webhook_mode is WebhookMode.OFF:
            return {"error": "webhooks are not enabled on this deployment"}, 404
        try:
            delivery = _verifier(rt).verify(headers, body)
            return webhook.handle_delivery(rt, delivery), 200
        except ConfigError as exc:
            # Not the caller's fault: answer 500 so the provider retries once this is fixed
            # (the tick polls the batch meanwhile).
            logger.error("webhook receiver misconfigured", extra={"error": str(exc)})
            return {"error": "webhook receiver misconfigured"}, 500
        except WebhookRejected as exc:
            # One structured record per refusal: the log-based metric behind the
            # "refused webhook deliveries" alert counts these.
            logger.warning(
                "webhook refused",
                extra={"status": exc.status, "error": str(exc), "alert": "webhook_refused"},
            )
            return {"error": str(exc)}, exc.status
