"""The synchronous lanes' runner: one item through its providers in order, with failover,
a per-provider circuit breaker and an attempt ledger (issue 20 point 3).

- The item is claimed PENDING -> SUBMITTED by the caller (pipeline/urgent.py) before any
  call; each attempt is then claimed too, `jobs/{job}/attempts/{key}@{n}` created only if
  absent, before its call, and marked with its outcome after. The ledger says which
  provider was asked what, and when an attempt's outcome is unknown.
- A definite failure (5xx, 429, connection refused, provider down: TransientError, or a
  third party refusing our key) moves the item to the next provider and counts against
  the provider's breaker.
- An attempt whose outcome is unknown (OutcomeUnknown: the request may have been
  generated and billed) ends the item FAILED, saying so, unless the owner opted in to
  failing over anyway (Settings.failover_on_unknown).
- A content-policy refusal (ContentRefused) ends it BLOCKED: never tried elsewhere.
- An answer without an image ends it FAILED: it was answered (and billed).
- A provider whose breaker is open is skipped; when every provider of the item is shut,
  nothing is paid and the item waits PENDING for the tick (urgent.recover), by when a
  breaker will let a probe through.
- Gemini's own refusals that pause the deployment (depleted credits, the spend window,
  a refused key) pause it as before, and the item waits PENDING.

Up to ROUNDS passes over the providers, with a short backoff between passes.

A line routed to async-callback lanes (StagedSync.kind ASYNC_KIND) goes through the same
passes, claims and breakers; an attempt is a create (`submit`) with the receiver's URL for
its callback, and once the provider has answered a task id the task is remembered and the
item stays SUBMITTED: its callback or the tick's poll settles it (pipeline/tasks.py). One
attempt, of either kind, is pipeline/lane_call.py's; the passes, the ledger, the breakers
and the outcomes they share are here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bananabatch.config import COMPAT_PREFIX
from bananabatch.core.breaker import Breaker, Gate
from bananabatch.core.pricing import Lane
from bananabatch.core.records import ItemRecord
from bananabatch.core.results import Usage
from bananabatch.core.states import ItemState
from bananabatch.errors import (
    BananaError,
    ModelUnavailable,
    OutcomeUnknown,
    PermanentError,
    PriceUnknown,
    ProviderAuthError,
    TransientError,
)
from bananabatch.log import get_logger
from bananabatch.pipeline.outcomes import image_location, write_image, write_thumbnail_if_decodable
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import ImageRequest, ImageResult
from bananabatch.providers.gemini_standard import NAME as GEMINI_STANDARD

log = get_logger(__name__)

ROUNDS: Final = 3
TIMEOUT_S: Final = 300.0
BREAKERS: Final = "breakers"
# Attempt outcomes in the ledger.
CALLING: Final = "calling"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"  # definite: nothing made, nothing billed
UNKNOWN: Final = "unknown"
REFUSED: Final = "refused"  # content policy
ANSWERED: Final = "answered"  # answered without an image
PAUSED: Final = "paused"  # a refusal that paused the deployment
INVALID: Final = "invalid"  # the request cannot be made on this lane
TASK: Final = "task"  # an async lane accepted it: its task settles it (pipeline/tasks.py)
#: StagedSync.kind of a line routed to async-callback lanes.
ASYNC_KIND: Final = "async"


def attempts_collection(job_id: str) -> str:
    return f"jobs/{job_id}/attempts"


def attempt_path(job_id: str, key: str, n: int) -> str:
    # Keys may hold "@"; the attempt number after the last one is what makes ids unique.
    return f"{attempts_collection(job_id)}/{key}@{n}"


def breaker_path(lane: str) -> str:
    return f"{BREAKERS}/{lane}"


@dataclass(frozen=True)
class StagedSync:
    """One line of a job's sync-lane file (requests/urgent.jsonl), as intake staged it."""

    key: str
    model: str
    request: Mapping[str, Any]
    # Providers in order (core/routing.py); files staged before the lanes had none.
    lanes: tuple[str, ...] = (GEMINI_STANDARD,)
    # Each lane's per-image price for the line, where it is priced per image.
    prices: Mapping[str, float] = field(default_factory=dict)
    prompt: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    # "sync", or ASYNC_KIND: the lanes are async-callback ones (submit, then a task).
    kind: str = "sync"

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> StagedSync:
        return cls(
            key=str(doc["key"]),
            model=str(doc["model"]),
            request=doc["request"],
            lanes=tuple(doc.get("lanes") or (GEMINI_STANDARD,)),
            prices={str(k): float(v) for k, v in (doc.get("prices") or {}).items()},
            prompt=doc.get("prompt"),
            aspect_ratio=doc.get("aspect_ratio"),
            image_size=doc.get("image_size"),
            kind=str(doc.get("kind") or "sync"),
        )

    def image_request(self, job_id: str, attempt_id: str) -> ImageRequest:
        return ImageRequest(
            job_id=job_id,
            key=self.key,
            attempt_id=attempt_id,
            model=self.model,
            prompt=self.prompt,
            aspect_ratio=self.aspect_ratio,
            image_size=self.image_size,
            gemini_request=self.request,
        )


# --- the breaker in the state store -----------------------------------------------------------


def may_call(rt: Runtime, lane: str) -> bool:
    """Whether `lane` may be called now: its breaker is closed, or open and due for a probe
    that this caller took (a transaction: of two callers, one probes)."""
    breaker = Breaker.from_doc(lane, rt.state.get(breaker_path(lane)))
    gate = breaker.gate(rt.now())
    if gate is Gate.GO:
        return True
    if gate is Gate.SHUT:
        return False
    taken: list[bool] = []

    def take(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        taken.clear()
        current = Breaker.from_doc(lane, doc)
        if current.gate(rt.now()) is not Gate.PROBE:
            taken.append(False)
            return None
        taken.append(True)
        return current.take_probe(rt.now()).to_doc()

    rt.state.update(breaker_path(lane), take)
    if taken and taken[0]:
        log.warning("provider breaker: probing", extra={"lane": lane})
    return bool(taken and taken[0])


def shut_lanes(rt: Runtime, names: Iterable[str]) -> frozenset[str]:
    """The lanes among `names` whose breaker is open now and not yet due for a probe
    (read only: no probe is taken). Intake routes a file's lines without them, so a bulk
    line goes to the next cheapest lane (batch at worst) instead of waiting for them."""
    now = rt.now()
    shut = frozenset(
        name
        for name in names
        if Breaker.from_doc(name, rt.state.get(breaker_path(name))).gate(now) is Gate.SHUT
    )
    if shut:
        log.warning("breaker open: new lines are routed without", extra={"lanes": sorted(shut)})
    return shut


def record_call(rt: Runtime, lane: str, *, ok: bool) -> Breaker:
    """Count one call's outcome against the lane's breaker; returns the breaker after."""
    now = rt.now()
    before = Breaker.from_doc(lane, rt.state.get(breaker_path(lane)))
    if not before.worth_writing(ok):
        return before
    after: list[Breaker] = []

    def count(doc: dict[str, Any] | None) -> dict[str, Any]:
        current = Breaker.from_doc(lane, doc)
        after[:] = [current.record(ok, now)]
        return after[0].to_doc()

    rt.state.update(breaker_path(lane), count)
    breaker = after[0] if after else before
    if breaker.is_open and not before.is_open:
        log.error(
            "provider breaker opened: calls go to the next provider",
            extra={"lane": lane, "open_until": str(breaker.open_until)},
        )
    elif before.is_open and not breaker.is_open:
        log.warning("provider breaker closed: the probe succeeded", extra={"lane": lane})
    return breaker


# --- the attempt ledger ---------------------------------------------------------------------------


def claim_attempt(rt: Runtime, job_id: str, key: str, lane: str) -> int:
    """Claim the item's next attempt on `lane` before its call: the first number whose
    ledger entry this call creates."""
    n = 1
    while not rt.state.create(
        attempt_path(job_id, key, n),
        {
            "job_id": job_id,
            "key": key,
            "n": n,
            "lane": lane,
            "outcome": CALLING,
            "at": rt.now().isoformat(),
        },
    ):
        n += 1
    return n


def finish_attempt(
    rt: Runtime, job_id: str, key: str, n: int, outcome: str, error: str = ""
) -> None:
    def mark(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        return {**doc, "outcome": outcome, "error": error[:500], "done_at": rt.now().isoformat()}

    rt.state.update(attempt_path(job_id, key, n), mark)


def attempts(rt: Runtime, job_id: str, key: str | None = None) -> list[dict[str, Any]]:
    """The ledger's entries of a job (of one key), in no particular order."""
    docs = list(rt.state.query(attempts_collection(job_id)))
    return [doc for doc in docs if key is None or doc.get("key") == key]


# --- one item through its providers --------------------------------------------------------------


@dataclass
class Tried:
    errors: list[str] = field(default_factory=list)
    called: int = 0
    shut: int = 0  # skipped for an open breaker


#: One attempt on one provider: the item's record once it answered, or None to go on
#: (pipeline/lane_call.py's `attempt`, by the lane's kind).
Attempt = Callable[
    [
        Runtime,
        ItemRecord,
        StagedSync,
        str,
        Tried,
        Callable[[], None],
        Callable[[Runtime, BananaError], bool],
    ],
    ItemRecord | None,
]


def serve(
    rt: Runtime,
    item: ItemRecord,
    staged: StagedSync,
    *,
    before_call: Callable[[], None] = lambda: None,
    paused_by: Callable[[Runtime, BananaError], bool] = lambda _rt, _exc: False,
    sleep: Callable[[float], None] = time.sleep,
    attempt: Attempt,
) -> ItemRecord:
    """The item after its providers were tried (module docstring). The item must be
    claimed (SUBMITTED) by the caller. `before_call` runs before each call (the rate
    limit); `paused_by` starts the deployment pause a Gemini refusal calls for; `attempt`
    makes one attempt on one provider."""
    tried = Tried()
    for round_no in range(ROUNDS):
        if round_no:
            sleep(min(4.0, 0.5 * 2 ** (round_no - 1)))
        called_this_round = False
        for lane_name in staged.lanes:
            if not may_call(rt, lane_name):
                tried.errors.append(f"{lane_name}: breaker open, not called")
                tried.shut += 1
                continue
            called_this_round = True
            done = attempt(rt, item, staged, lane_name, tried, before_call, paused_by)
            if done is not None:
                return done
        if not called_this_round:
            break
    now = rt.now()
    if tried.called == 0 and tried.shut:
        # Nothing was asked of anyone: wait for a breaker to let a probe through.
        log.warning("every provider of the item is shut; it waits", extra={"key": item.key})
        return item.model_copy(
            update={"state": ItemState.PENDING, "updated_at": now, "reason": None}
        )
    return item.model_copy(
        update={
            "state": ItemState.FAILED,
            "reason": "every provider failed: " + "; ".join(dict.fromkeys(tried.errors)),
            "updated_at": now,
        }
    )


def unknown_outcome(
    rt: Runtime, item: ItemRecord, lane_name: str, n: int, exc: OutcomeUnknown, tried: Tried
) -> ItemRecord | None:
    """An attempt whose outcome is unknown: FAILED, never repeated elsewhere, unless the
    owner opted in (Settings.failover_on_unknown)."""
    key = item.key
    finish_attempt(rt, item.job_id, key, n, UNKNOWN, str(exc))
    record_call(rt, lane_name, ok=False)
    tried.errors.append(f"{lane_name}: outcome unknown ({exc})")
    if rt.settings.failover_on_unknown:
        log.warning("outcome unknown; failing over as configured", extra={"key": key})
        return None
    log.error("outcome unknown; not repeated on another provider", extra={"key": key})
    return item.model_copy(
        update={
            "state": ItemState.FAILED,
            "provider_lane": lane_name,
            "reason": (
                f"outcome unknown on {lane_name}: {exc}; not sent to another provider, "
                "which could pay twice (BANANABATCH_FAILOVER_ON_UNKNOWN allows it); "
                "`bananabatch retry` if no image arrived"
            ),
            "updated_at": rt.now(),
        }
    )


def timeout_s(rt: Runtime, lane_name: str) -> float:
    """How long one call may take: a gateway's own setting, or TIMEOUT_S."""
    gateway = rt.settings.compat_lanes.get(lane_name.removeprefix(COMPAT_PREFIX))
    return gateway.timeout_s if gateway is not None else TIMEOUT_S


def definite_refusal(
    rt: Runtime,
    item: ItemRecord,
    lane_name: str,
    n: int,
    exc: BananaError,
    tried: Tried,
    paused_by: Callable[[Runtime, BananaError], bool],
) -> ItemRecord | None:
    """A definite refusal: nothing was made."""
    job_id, key = item.job_id, item.key
    if lane_name == GEMINI_STANDARD and paused_by(rt, exc):
        finish_attempt(rt, job_id, key, n, PAUSED, str(exc))
        # Nothing was generated or paid: the item waits for the pause to end.
        return item.model_copy(update={"state": ItemState.PENDING, "updated_at": rt.now()})
    if isinstance(exc, TransientError) or (
        isinstance(exc, ProviderAuthError | ModelUnavailable) and lane_name != GEMINI_STANDARD
    ):
        # A third party refusing our key, or no longer serving the model, is that provider
        # down for us, not a reason to stop the deployment or fail the line.
        finish_attempt(rt, job_id, key, n, FAILED, str(exc))
        record_call(rt, lane_name, ok=False)
        tried.errors.append(f"{lane_name}: {exc}")
        log.warning("provider failed; trying the next", extra={"lane": lane_name, "key": key})
        return None
    finish_attempt(rt, job_id, key, n, INVALID, str(exc))
    reason = f"{lane_name}: {exc}" if isinstance(exc, PermanentError) else str(exc)
    return item.model_copy(
        update={
            "state": ItemState.FAILED,
            "provider_lane": lane_name,
            "reason": reason,
            "updated_at": rt.now(),
        }
    )


def ended(
    rt: Runtime,
    item: ItemRecord,
    lane_name: str,
    state: ItemState,
    reason: str,
    usage: Usage | None,
    finish_reason: str | None,
) -> ItemRecord:
    update: dict[str, Any] = {
        "state": state,
        "reason": reason,
        "finish_reason": finish_reason,
        "provider_lane": lane_name,
        "updated_at": rt.now(),
    }
    update.update(_usage_fields(rt, item, lane_name, usage))
    return item.model_copy(update=update)


def succeeded(
    rt: Runtime, item: ItemRecord, staged: StagedSync, lane_name: str, result: ImageResult
) -> ItemRecord:
    update: dict[str, Any] = {
        "state": ItemState.SUCCEEDED,
        "reason": None,
        "provider_lane": lane_name,
        "updated_at": rt.now(),
    }
    update.update(_usage_fields(rt, item, lane_name, result.usage))
    if result.cost_usd is not None:
        update["actual_usd"] = round(result.cost_usd, 6)
    elif "actual_usd" not in update and lane_name in staged.prices:
        update["actual_usd"] = round(staged.prices[lane_name], 6)
    mime = result.mime_type or "image/png"
    name, located = image_location(rt, item, mime)
    write_image(rt, item, name, result.image, mime)
    # Inline: the sync lanes are called one by one, so the thumbnail holds nothing up.
    write_thumbnail_if_decodable(rt, item, result.image)
    update.update(located)
    return item.model_copy(update=update)


def _usage_fields(
    rt: Runtime, item: ItemRecord, lane_name: str, usage: Usage | None
) -> dict[str, Any]:
    """Token usage and its cost, for the lanes priced by token (Gemini's standard API)."""
    if usage is None:
        return {}
    fields: dict[str, Any] = {
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "image_output_tokens": usage.image_output_tokens,
            "text_output_tokens": usage.text_output_tokens,
            "thought_tokens": usage.thought_tokens,
            "total_tokens": usage.total_tokens,
        }
    }
    if lane_name == GEMINI_STANDARD:
        try:
            fields["actual_usd"] = round(
                rt.prices.cost_of_usage(item.model, Lane.STANDARD, usage), 6
            )
        except PriceUnknown as exc:
            log.error("no price for a billed result; cost left unknown", extra={"error": str(exc)})
    return fields
