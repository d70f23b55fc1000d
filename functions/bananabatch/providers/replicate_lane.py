"""The async-callback lane on Replicate's predictions API, through the official `replicate`
client: `submit` creates a prediction of the hosted model (with a webhook for its end when
the runner gives a URL) and answers its id at once; `poll` reads it; `parse_webhook`
verifies a delivery with Replicate's documented scheme and reads the prediction it carries.

Replicate's scheme (replicate.com/docs/topics/webhooks/verify-webhook): Standard Webhooks
headers `webhook-id`, `webhook-timestamp` and `webhook-signature` (space-separated
`v1,<base64 HMAC-SHA256>` entries) over "<id>.<timestamp>.<raw body>", keyed with the
account's default signing secret (`whsec_<base64>`, from `webhooks.default.secret()`). The
check is the client's own `Webhooks.validate`, with a five-minute tolerance; around it the
receiver's usual bounds (body size, ids without control or bidi characters). Nothing else
verifies: one scheme for this provider.

A prediction's `output` for the Nano Banana models is the URL of the image, kept by the
service for an hour after it ends: a result is fetched as soon as the task is seen done.
What the catalog's models are called on Replicate is dated data below (read 2026-12-07);
`BANANABATCH_REPLICATE_MODELS` overrides it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import httpx
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.webhook import Webhooks, WebhookSigningSecret, WebhookValidationError

from bananabatch.config import Settings
from bananabatch.core import catalog
from bananabatch.errors import OutcomeUnknown, PermanentError, TransientError
from bananabatch.pipeline.references import sniff_image_mime
from bananabatch.ports import ImageRequest, ImageResult, TaskStatus
from bananabatch.providers.lane_errors import (
    TRANSPORT,
    lane_request_problem,
    status_error,
    transport_error,
)
from bananabatch.webhooks import WebhookRejected, check_key, standard_webhook_headers

LANE: Final = "replicate"
#: Replicate's names for the catalog's models (dated data in core/catalog.py).
DEFAULT_MODELS: Final[Mapping[str, str]] = catalog.REPLICATE_NAMES
TOLERANCE_SECONDS: Final = 5 * 60
# Replicate's content-policy failure: "... flagged as sensitive ... (E005)".
_REFUSAL_MARKERS: Final = ("(E005)", "flagged as sensitive")
_PENDING: Final = frozenset({"starting", "processing"})
# The image sizes the Nano Banana models on Replicate take as `resolution`.
_RESOLUTIONS: Final = frozenset({"1K", "2K", "4K"})
FETCH_TIMEOUT_S: Final = 60.0
_RESETS_IN: Final = re.compile(r"resets in ~?(\d+)\s*s")


class _BoundedTransport(httpx.HTTPTransport):
    """The client sends a create with `timeout=None` (no timeout at all) unless it asks the
    service to hold the answer (`wait`): a hung create would hold the runner forever. This
    puts the lane's own bound back on any request that carries none."""

    def __init__(self, bound: httpx.Timeout) -> None:
        super().__init__()
        self._bound = bound.as_dict()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        given = request.extensions.get("timeout") or {}
        if all(value is None for value in given.values()):
            request.extensions["timeout"] = self._bound
        return super().handle_request(request)


@dataclass(frozen=True)
class ReplicateDelivery:
    """A verified delivery: which prediction, in which state (nothing fetched)."""

    webhook_id: str
    timestamp: int
    prediction_id: str
    status: str
    payload: Mapping[str, Any]


class ReplicateLane:
    """An AsyncImageLane (ports.py) on Replicate. The receiver builds one with only the
    webhook secret (it holds no API token and sends nothing)."""

    name = LANE

    def __init__(
        self,
        *,
        api_token: str | None,
        base_url: str | None = None,
        webhook_secret: str | None = None,
        models: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.models = dict(models or DEFAULT_MODELS)
        self.webhook_secret = webhook_secret
        self._clock = clock
        bound = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._client = Client(
            api_token=api_token or None,
            base_url=base_url or None,
            timeout=bound,
            transport=_BoundedTransport(bound),
        )

    # --- submit --------------------------------------------------------------------------

    def submit(self, request: ImageRequest, *, webhook_url: str | None) -> str:
        model = self._model(request)
        given: dict[str, Any] = {"prompt": request.prompt, "output_format": "png"}
        if request.aspect_ratio:
            given["aspect_ratio"] = request.aspect_ratio
        if request.image_size in _RESOLUTIONS:
            given["resolution"] = request.image_size
        if request.reference_images:
            given["image_input"] = list(request.reference_images)
        params: dict[str, Any] = {}
        if webhook_url:
            # Only the end: the image or the failure. Start, output and logs events would
            # cost a receiver invocation each and say nothing we act on.
            params = {"webhook": webhook_url, "webhook_events_filter": ["completed"]}
        try:
            prediction = self._client.predictions.create(model=model, input=given, **params)
        except ReplicateError as exc:
            raise self._status_error(request, exc) from exc
        except TRANSPORT as exc:
            raise transport_error(
                exc, lane=self.name, job_id=request.job_id, key=request.key
            ) from exc
        except (ValueError, TypeError) as exc:
            # An answer the client could not read: the prediction may exist.
            raise OutcomeUnknown(
                f"{self.name}: an unreadable answer to create ({type(exc).__name__}); the "
                "prediction may exist",
                job_id=request.job_id,
                key=request.key,
            ) from exc
        return check_key(str(prediction.id), "prediction id")

    def _model(self, request: ImageRequest) -> str:
        problem = lane_request_problem(
            request,
            self.models,
            lane=self.name,
            not_served="not hosted on this lane",
            sent_to="Replicate",
            reference_problem=_unreadable_references,
        )
        if problem is not None:
            raise problem
        return self.models[request.model]

    def _status_error(self, request: ImageRequest, exc: ReplicateError) -> Exception:
        status = exc.status or 0
        detail = exc.detail or exc.title or "no detail"
        return status_error(
            status,
            detail,
            lane=self.name,
            model=request.model,
            job_id=request.job_id,
            key=request.key,
            refused=_is_refusal(detail),
            retry_after=_retry_after(detail),
        )

    # --- poll ----------------------------------------------------------------------------

    def poll(self, task_id: str) -> TaskStatus:
        try:
            prediction = self._client.predictions.get(task_id)
        except ReplicateError as exc:
            if exc.status == 404:
                return TaskStatus(
                    task_id, "failed", error=f"{self.name}: prediction {task_id} is unknown"
                )
            raise TransientError(
                f"{self.name}: reading prediction {task_id}: HTTP {exc.status}: "
                f"{exc.detail or exc.title}"
            ) from exc
        except TRANSPORT as exc:
            raise TransientError(
                f"{self.name}: reading prediction {task_id}: {type(exc).__name__}"
            ) from exc
        return self._status(task_id, prediction.dict())

    def _status(self, task_id: str, payload: Mapping[str, Any]) -> TaskStatus:
        status = payload.get("status")
        if status in _PENDING:
            return TaskStatus(task_id, "pending")
        if status == "succeeded":
            return TaskStatus(task_id, "succeeded", result=self._fetch(task_id, payload))
        error = str(payload.get("error") or f"prediction {status}")
        if status == "canceled":
            return TaskStatus(task_id, "failed", error=f"{self.name}: canceled", maybe_billed=False)
        if status == "failed":
            return TaskStatus(
                task_id, "failed", error=f"{self.name}: {error}", refused=_is_refusal(error)
            )
        raise TransientError(f"{self.name}: prediction {task_id}: unknown status {status!r}")

    def _fetch(self, task_id: str, payload: Mapping[str, Any]) -> ImageResult:
        output = payload.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise PermanentError(
                f"{self.name}: prediction {task_id} succeeded without an output URL (removed: "
                "Replicate keeps outputs an hour): the paid image is lost"
            )
        try:
            response = httpx.get(url, timeout=FETCH_TIMEOUT_S, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise TransientError(
                f"{self.name}: fetching the output of {task_id}: {type(exc).__name__}"
            ) from exc
        if response.status_code == 404:
            raise PermanentError(
                f"{self.name}: the output of prediction {task_id} is gone (404; Replicate "
                "keeps it an hour): the paid image is lost"
            )
        if response.status_code != 200:
            raise TransientError(
                f"{self.name}: fetching the output of {task_id}: HTTP {response.status_code}"
            )
        mime = sniff_image_mime(response.content[:16])
        if mime is None:
            raise PermanentError(f"{self.name}: the output of {task_id} is not an image")
        metrics = payload.get("metrics")
        ref = f"{task_id}"
        if isinstance(metrics, Mapping) and isinstance(metrics.get("predict_time"), (int, float)):
            ref = f"{task_id} ({metrics['predict_time']}s)"
        return ImageResult(image=response.content, mime_type=mime, provider_ref=ref)

    # --- webhooks ------------------------------------------------------------------------

    def verify_delivery(self, headers: Mapping[str, str], body: bytes) -> ReplicateDelivery:
        """A verified delivery, or WebhookRejected (400 malformed, 401 unsigned, forged or
        stale, 404 not enabled, 413 too large). Reads nothing from the provider."""
        lower, webhook_id, stamp = self._bounded(headers, body)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WebhookRejected(400, "delivery body: expected UTF-8 JSON") from exc
        assert self.webhook_secret is not None
        # The client's check reads any "<version>,<signature>" entry; Replicate's scheme is
        # v1 HMAC only, so only v1 entries are handed to it (one scheme per provider).
        entries = [e for e in lower["webhook-signature"].split() if e.startswith("v1,")]
        if not entries:
            raise WebhookRejected(401, f"delivery {webhook_id}: expected a v1 signature entry")
        try:
            Webhooks.validate(
                headers={**lower, "webhook-signature": " ".join(entries)},
                body=text,
                secret=WebhookSigningSecret(key=self.webhook_secret),
            )
        except (WebhookValidationError, ValueError) as exc:
            # ValueError: a signature entry that is not base64, a secret of another shape.
            raise WebhookRejected(
                401, f"forged Replicate delivery {webhook_id}: {type(exc).__name__}"
            ) from exc
        prediction_id, status, payload = _prediction_of(text)
        return ReplicateDelivery(webhook_id, stamp, prediction_id, status, payload)

    def _bounded(self, headers: Mapping[str, str], body: bytes) -> tuple[dict[str, str], str, int]:
        """The checks made before the secret is touched: enabled, size, the three headers,
        ids without control characters, a timestamp within the tolerance."""
        if not self.webhook_secret:
            raise WebhookRejected(
                404, "Replicate webhooks are not enabled: no signing secret is configured"
            )
        lower, webhook_id, stamp = standard_webhook_headers(headers, body)
        if abs(self._clock() - stamp) > TOLERANCE_SECONDS:
            raise WebhookRejected(401, f"stale or future delivery {webhook_id}: timestamp {stamp}")
        return lower, webhook_id, stamp

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> TaskStatus:
        """Verify a delivery and read the prediction it carries (its image fetched when it
        succeeded)."""
        delivery = self.verify_delivery(headers, body)
        return self._status(delivery.prediction_id, delivery.payload)

    def close(self) -> None:
        self._client._client.close()


def from_settings(settings: Settings) -> ReplicateLane:
    """The lane as a deployment configures it (a receiver-only deployment has no token:
    it only verifies)."""
    return ReplicateLane(
        api_token=settings.replicate_api_token,
        base_url=settings.replicate_base_url,
        webhook_secret=settings.replicate_webhook_secret,
        models=settings.replicate_models or None,
    )


def _prediction_of(text: str) -> tuple[str, str, dict[str, Any]]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WebhookRejected(400, f"delivery body: expected JSON; {exc.msg}") from exc
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "delivery body: expected a prediction object")
    prediction_id, status = payload.get("id"), payload.get("status")
    if not isinstance(prediction_id, str) or not prediction_id or "/" in prediction_id:
        raise WebhookRejected(400, "delivery body: expected the prediction's id")
    if not isinstance(status, str):
        raise WebhookRejected(400, "delivery body: expected the prediction's status")
    return check_key(prediction_id, "id"), check_key(status, "status"), payload


def _is_refusal(text: str) -> bool:
    return any(marker in text for marker in _REFUSAL_MARKERS)


def _retry_after(detail: str) -> timedelta | None:
    """Replicate says when a throttle ends only in words ("... resets in ~30s."): the
    client's error keeps the body, not the headers."""
    match = _RESETS_IN.search(detail)
    return timedelta(seconds=int(match.group(1))) if match else None


def _unreadable_references(references: Sequence[str]) -> str | None:
    unreadable = [u for u in references if not u.startswith("https://")]
    if not unreadable:
        return None
    return (
        "Replicate reads reference images by https URL only; found "
        f"{unreadable[0].split('?', 1)[0]!r}"
    )
