"""The Replicate emulator's state: predictions of hosted Nano Banana models as the official
`replicate` client creates and reads them (`predictions.create(model=..., input=...,
webhook=..., webhook_events_filter=[...])`, `predictions.get(id)`, `predictions.cancel(id)`,
`webhooks.default.secret()`), and the signed webhook a prediction's end sends.

A prediction moves starting -> processing -> succeeded | failed | canceled by the injected
clock (base/state.py: PENDING, RUNNING, FINISHED), evaluated whenever someone looks; tests
force it with `advance`/`complete`, never by sleeping. A succeeded prediction's `output` is
the URL of its image, served by the emulator under /files (Replicate's delivery host),
removed `output_ttl_seconds` after the prediction ended (the service keeps API outputs an
hour).

Deliveries are signed as Replicate documents (docs "Verify webhooks"): Standard Webhooks
headers `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
"<id>.<timestamp>.<body>" with the account's default secret (`whsec_...`, served at
GET /v1/webhooks/default/secret); the body is the whole prediction.

Faults: LaneFaults (base/lane_faults.py) in Replicate's answers: down (503 on every call),
500 and 429 on creates, `refuse` (the prediction fails with E005, "flagged as sensitive",
Replicate's content-policy error), `stall` (created, the answer held), `slow` (the
prediction takes `slow_seconds` longer on the clock). Lost, duplicated and held callbacks
are the outbox's WebhookFaults (`state.webhooks.faults`).
"""

from __future__ import annotations

import json
import math
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bananabatch.emulator.base.lane_faults import LaneFaults, StallGate
from bananabatch.emulator.base.outbox import (
    Pending,
    WebhookOutbox,
    new_signing_secret,
    standard_headers,
)
from bananabatch.emulator.base.routes import HttpError
from bananabatch.emulator.base.state import (
    FINISHED,
    PENDING,
    RUNNING,
    Accepted,
    EmulatorStateBase,
)
from bananabatch.emulator.faults import FaultPlan
from bananabatch.emulator.render import render_png

Json = dict[str, Any]
# Replicate's own content-policy failure (its error code E005).
SENSITIVE: Final = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
TERMINAL: Final = frozenset({"succeeded", "failed", "canceled"})
EVENTS: Final = frozenset({"start", "output", "logs", "completed"})
_ALPHABET: Final = string.ascii_lowercase + string.digits
# The models the emulator hosts and the sizes each takes (Replicate's names).
DEFAULT_MODELS: Final = frozenset({"google/nano-banana-pro", "google/nano-banana-2"})


class ReplicateApiError(HttpError):
    """An HTTP error answer as Replicate gives it (RFC 7807 problem details)."""

    def __init__(
        self, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body: Json = {"title": title, "detail": detail, "status": status}
        self.headers = dict(headers or {})


@dataclass
class ReplicateEmulatorConfig:
    pending_seconds: float = 1.0
    running_seconds: float = 2.0
    # None accepts any non-empty token; a value requires exactly that token.
    api_token: str | None = None
    models: frozenset[str] = DEFAULT_MODELS
    output_ttl_seconds: float = 3600.0
    lane_faults: LaneFaults = field(default_factory=LaneFaults)
    # The shared lifecycle's fault plan: `stick(...)` patterns over the prompt.
    faults: FaultPlan = field(default_factory=FaultPlan)
    clock: Callable[[], float] = time.time
    workdir: Path | None = None


@dataclass
class Prediction:
    prediction_id: str
    seq: int
    model: str
    input: Json
    created: float
    origin: str
    webhook: str | None
    events: frozenset[str]
    refused: bool = False
    stuck: bool = False
    extra_seconds: float = 0.0
    forced: int = PENDING
    status: str = "starting"
    started: float | None = None
    completed: float | None = None
    error: str | None = None
    output_file: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class Counters:
    creates: int = 0
    creates_refused: int = 0
    gets: int = 0
    images: int = 0
    downloads: int = 0


class ReplicateEmulatorState(EmulatorStateBase[ReplicateEmulatorConfig, Prediction]):
    def __init__(self, config: ReplicateEmulatorConfig | None = None) -> None:
        super().__init__(
            config or ReplicateEmulatorConfig(), prefix="bananabatch-rep-", subdirs=("files",)
        )
        self.webhooks: WebhookOutbox = WebhookOutbox()
        self.signing_secret = new_signing_secret()
        self.counters = Counters()
        self.gate = StallGate()

    @property
    def lane_faults(self) -> LaneFaults:
        return self.config.lane_faults

    @lane_faults.setter
    def lane_faults(self, plan: LaneFaults) -> None:
        with self._lock:
            self.config.lane_faults = plan

    def close(self) -> None:
        self.gate.release()
        super().close()

    def release_stalled(self) -> int:
        return self.gate.release()

    # --- what the base asks ------------------------------------------------------------------

    def handle(self, work: Prediction) -> str:
        return work.prediction_id

    def _work(self, handle: str) -> Prediction:
        with self._lock:
            found = self._works.get(handle)
        if found is None:
            raise ReplicateApiError(404, "Not found", "The requested resource could not be found.")
        return found

    def get_work(self, handle: str) -> Prediction:
        work = self._work(handle)
        self._settle(work)
        return work

    def status_of(self, work: Prediction) -> str:
        return work.status

    def _stage(self, work: Prediction, now: float) -> int:
        stage = super()._stage(work, now)
        if stage == FINISHED and work.forced < FINISHED and work.extra_seconds:
            # A slow prediction runs its extra seconds longer on the clock.
            took = self.config.pending_seconds + self.config.running_seconds + work.extra_seconds
            if now - work.created < took:
                return RUNNING
        return stage

    # --- auth and the provider's own faults ----------------------------------------------------

    def check_token(self, authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ").removeprefix("Token ").strip()
        if not token or (self.config.api_token is not None and token != self.config.api_token):
            raise ReplicateApiError(
                401, "Unauthenticated", "You did not pass a valid authentication token"
            )

    def check_up(self) -> None:
        if self.lane_faults.down:
            # Retry-After: 0 so the client's own retries of a GET (up to ten, honouring
            # the header) end at once instead of backing off for a minute.
            raise ReplicateApiError(
                self.lane_faults.down_status,
                "Service Unavailable",
                "Replicate is down (emulated).",
                {"retry-after": "0"},
            )

    # --- predictions -----------------------------------------------------------------------

    def create(self, model: str, body: Mapping[str, Any], origin: str) -> tuple[Prediction, bool]:
        """A new prediction, and whether its answer must stall first."""
        with self._lock:
            self.check_up()
            faults = self.lane_faults
            if faults.take_server_error():
                self.counters.creates_refused += 1
                raise ReplicateApiError(500, "Internal Server Error", "(emulated)")
            if faults.take_rate_limit():
                self.counters.creates_refused += 1
                raise ReplicateApiError(
                    429,
                    "Request was throttled",
                    "Request was throttled. Your rate limit resets in ~"
                    f"{faults.retry_after_seconds}s.",
                    {"retry-after": str(faults.retry_after_seconds)},
                )
        if model not in self.config.models:
            raise ReplicateApiError(404, "Not found", f"Model {model} does not exist.")
        given = body.get("input")
        if not isinstance(given, Mapping):
            raise ReplicateApiError(
                422, "Input validation failed", "input: Invalid type. Expected: object"
            )
        prompt = given.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ReplicateApiError(422, "Input validation failed", "input: prompt is required")
        webhook = body.get("webhook")
        events = body.get("webhook_events_filter") or sorted(EVENTS)
        if webhook is not None and not isinstance(webhook, str):
            raise ReplicateApiError(422, "Invalid webhook", "webhook: expected a URL")
        if not isinstance(events, list) or not set(events) <= EVENTS:
            raise ReplicateApiError(
                422, "Invalid webhook_events_filter", f"expected some of {sorted(EVENTS)}"
            )
        with self._lock:
            prediction = Prediction(
                prediction_id="".join(secrets.choice(_ALPHABET) for _ in range(26)),
                seq=next(self._seq),
                model=model,
                input=dict(given),
                created=self.now(),
                origin=origin,
                webhook=webhook,
                events=frozenset(events),
                refused=faults.refuses(prompt),
                stuck=self.faults.is_stuck(prompt),
            )
            if faults.take_slow():
                prediction.extra_seconds = faults.slow_seconds
            self._works[prediction.prediction_id] = prediction
            self.counters.creates += 1
            # Keyed by prompt (a test's lines have distinct prompts): the same line paid
            # twice shows as a duplicate.
            self.accepted.append(Accepted(prediction.prediction_id, prompt, prompt))
            stall = faults.take_stall()
        self._announce(prediction, "start")
        return prediction, stall

    def get(self, prediction_id: str) -> Prediction:
        with self._lock:
            self.check_up()
            self.counters.gets += 1
        return self.get_work(prediction_id)

    def cancel(self, prediction_id: str) -> Prediction:
        with self._lock:
            self.check_up()
        prediction = self.get_work(prediction_id)
        with prediction.lock:
            if not prediction.terminal:
                self._finish(prediction, "canceled", None)
        return prediction

    def _settle(self, prediction: Prediction) -> None:
        with prediction.lock:
            if prediction.terminal:
                return
            now = self.now()
            stage = self._stage(prediction, now)
            if stage >= RUNNING and prediction.started is None:
                prediction.started = now
                prediction.status = "processing"
            if stage < FINISHED:
                return
            if prediction.refused:
                self._finish(prediction, "failed", SENSITIVE)
                return
            self._render(prediction)
            self._finish(prediction, "succeeded", None)

    def _render(self, prediction: Prediction) -> None:
        given = prediction.input
        ratio = given.get("aspect_ratio")
        size = given.get("resolution")
        image = render_png(
            str(given["prompt"]),
            ratio if isinstance(ratio, str) and ratio != "match_input_image" else None,
            size if isinstance(size, str) else None,
        )
        name = f"{prediction.prediction_id}.png"
        (self.workdir / "files" / name).write_bytes(image)
        prediction.output_file = name
        with self._lock:
            self.counters.images += 1

    def _finish(self, prediction: Prediction, status: str, error: str | None) -> None:
        prediction.status = status
        prediction.error = error
        prediction.completed = self.now()
        if prediction.started is None:
            prediction.started = prediction.completed
        self._announce(prediction, "completed")

    def _announce(self, prediction: Prediction, event: str) -> None:
        if prediction.webhook is None or event not in prediction.events:
            return
        body = json.dumps(self.prediction_json(prediction)).encode()
        headers = standard_headers(
            self.signing_secret, f"msg_{uuid.uuid4().hex}", int(self.webhooks.clock()), body
        )
        self.webhooks.enqueue([Pending(prediction.webhook, headers, body)])

    def works_input(self, prediction_id: str) -> Json:
        """What a prediction was asked (tests look at it)."""
        return dict(self._work(prediction_id).input)

    def output_path(self, name: str) -> Path | None:
        """An output file while the service still keeps it."""
        prediction_id = name.removesuffix(".png")
        with self._lock:
            prediction = self._works.get(prediction_id)
            self.counters.downloads += 1
        if prediction is None or prediction.output_file != name or prediction.completed is None:
            return None
        if self.now() >= prediction.completed + self.config.output_ttl_seconds:
            return None
        return self.workdir / "files" / name

    def prediction_json(self, prediction: Prediction) -> Json:
        output: str | None = None
        removed = False
        if prediction.output_file is not None and prediction.completed is not None:
            removed = self.now() >= prediction.completed + self.config.output_ttl_seconds
            if not removed:
                output = f"{prediction.origin}/files/{prediction.output_file}"
        base = f"{prediction.origin}/v1/predictions/{prediction.prediction_id}"
        metrics: Json = {}
        if prediction.completed is not None and prediction.started is not None:
            metrics["predict_time"] = round(prediction.completed - prediction.started, 3)
        return {
            "id": prediction.prediction_id,
            "model": prediction.model,
            "version": "hidden",
            "input": prediction.input,
            "logs": "",
            "output": output,
            "data_removed": removed,
            "error": prediction.error,
            "status": prediction.status,
            "created_at": _iso(prediction.created),
            "started_at": _iso(prediction.started),
            "completed_at": _iso(prediction.completed),
            "urls": {"get": base, "cancel": f"{base}/cancel"},
            "metrics": metrics,
        }


def _iso(stamp: float | None) -> str | None:
    if stamp is None or not math.isfinite(stamp):
        return None
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
