"""The urgent lane: lines marked `"priority": "urgent"` go through the synchronous
generateContent API at the standard price, right after the job starts, while its batches
wait. Results land in the same layout as batch results (images/, thumbs/, item state and
actual cost, here at Lane.STANDARD).

Intake stages the urgent requests to `jobs/<id>/requests/urgent.jsonl` (so an approved
HELD job can run them later). Each item is claimed PENDING -> SUBMITTED in a transaction
before its call, so a redelivered event never pays for it twice; the price of that rule is
that a crash in the middle of a call leaves that one item SUBMITTED (outcome unknown).

Calls share a per-process token bucket (the synchronous API has per-minute quotas) and are
retried a few times, only on TransientError (429, 5xx, timeouts).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from bananabatch.core import records as rec
from bananabatch.core.pricing import Lane
from bananabatch.core.records import ItemRecord
from bananabatch.core.results import OutcomeKind, classify_row
from bananabatch.core.states import ItemState, JobState
from bananabatch.errors import (
    BananaError,
    NotFound,
    ProviderAuthError,
    ProviderQuotaExceeded,
    QuotaKind,
    TransientError,
)
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import pause
from bananabatch.pipeline.cache import LANE_URGENT
from bananabatch.pipeline.outcomes import (
    image_location,
    outcome_fields,
    write_image,
    write_thumbnail_if_decodable,
)
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Where

log = get_logger(__name__)

URGENT_NAME: Final = "urgent.jsonl"
# Requests per second through the synchronous API from one process, and the burst size.
RATE_PER_SECOND: Final = 2.0
BURST: Final = 5
ATTEMPTS: Final = 3
# A claimed urgent item untouched this long lost its process: one call with its retries
# takes seconds, and a function invocation is stopped after 9 minutes.
ORPHANED_AFTER: Final = timedelta(minutes=15)
ORPHANED_REASON: Final = (
    "urgent request outcome unknown: the worker stopped during the call, and calling again "
    "could pay twice; resubmit it with `bananabatch retry` if no image arrived"
)


def urgent_object_name(job_id: str) -> str:
    return f"jobs/{job_id}/requests/{URGENT_NAME}"


class TokenBucket:
    """A classic token bucket; `acquire` blocks until a token is free."""

    def __init__(
        self,
        rate: float,
        capacity: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = float(capacity)
        self._tokens = float(capacity)
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self.rate
            self._sleep(wait)


BUCKET: Final = TokenBucket(RATE_PER_SECOND, BURST)


@dataclass
class UrgentReport:
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0


def pending_count(rt: Runtime, job_id: str) -> int:
    """Urgent items not yet answered: the job cannot end while there are any."""
    return rt.state.count(
        rec.items_collection(job_id),
        [
            Where("lane", "==", LANE_URGENT),
            Where("state", "in", [ItemState.PENDING.value, ItemState.SUBMITTED.value]),
        ],
    )


def run_urgent(rt: Runtime, job_id: str, *, bucket: TokenBucket = BUCKET) -> UrgentReport:
    """Generate every PENDING urgent item of the job. Never raises for one item's failure."""
    report = UrgentReport()
    name = urgent_object_name(job_id)
    results = rt.settings.results_bucket
    if rt.objects.stat(results, name) is None:
        return report
    with rt.objects.open_read(results, name) as stream:
        for raw in stream:
            if not raw.strip():
                continue
            staged = json.loads(raw)
            key, model, request = str(staged["key"]), str(staged["model"]), staged["request"]
            # Urgent calls are paid at the standard price: a deployment-wide pause (kill
            # switch, depleted credits, refused key) stops them as it stops batch creates.
            # The items stay PENDING; after `resume` the tick's recover() runs them.
            blocked = pause.active_reasons(rt)
            if blocked:
                pause.mark_paused_jobs(rt, blocked[0].describe(), [job_id])
                log.warning("urgent lane paused", extra={"pause": blocked[0].kind.value})
                break
            if not claim(rt, job_id, key):
                continue
            # A crash here leaves the item SUBMITTED with no call made; nobody can tell
            # that from a call made and lost, so recover() fails it after a while.
            crash_point("urgent.after_claim")
            report.attempted += 1
            item = rt.repo.get_item(job_id, key)
            if item is None:
                continue
            done = _generate_one(rt, item, model, request, bucket)
            rt.repo.put_items([done])
            if done.state is ItemState.PENDING:
                continue  # refused in a way that paused the deployment
            if done.state is ItemState.SUCCEEDED:
                report.succeeded += 1
            else:
                report.failed += 1
    log.info("urgent lane done", extra=vars(report))
    return report


def claim(rt: Runtime, job_id: str, key: str) -> bool:
    """PENDING -> SUBMITTED for this process, stamped, so a claim whose process died can
    be told from one still at work (see recover)."""
    try:
        return rt.repo.move_item(
            job_id,
            key,
            ItemState.SUBMITTED,
            expect={ItemState.PENDING},
            change={"updated_at": rt.now()},
        ).moved
    except NotFound:
        return False


@dataclass
class Recovery:
    orphaned: int = 0
    resumed: int = 0
    # Jobs whose urgent items changed: the caller sees whether they can end now.
    jobs: list[str] = field(default_factory=list)


def recover(rt: Runtime) -> Recovery:
    """The tick's rule for urgent items of RUNNING jobs that a dead process left behind.

    A SUBMITTED item claimed longer than ORPHANED_AFTER ago lost its process in the middle
    of a call whose outcome nobody knows: calling again could pay twice, so it ends FAILED
    with a reason that says so (it is in failed.jsonl, ready for `bananabatch retry`).
    A PENDING item that old was never reached (the process died before it): the lane runs
    again for its job. A live run of the lane may be at work on the same job; claims are
    transactional, so the two only share the work, never pay twice."""
    done = Recovery()
    now = rt.now()
    for doc in rt.state.query("jobs", [Where("state", "==", JobState.RUNNING.value)]):
        job_id = str(doc["job_id"])
        # Most jobs have no urgent line: skip them without a query each, every tick.
        if not doc.get("urgent_count") or not pending_count(rt, job_id):
            continue
        stale_pending = orphaned = 0
        with labels(job_id=job_id):
            for item_doc in rt.state.query(
                rec.items_collection(job_id),
                [
                    Where("lane", "==", LANE_URGENT),
                    Where("state", "in", [ItemState.PENDING.value, ItemState.SUBMITTED.value]),
                ],
            ):
                item = ItemRecord.model_validate(item_doc)
                if item.updated_at is not None and now - item.updated_at < ORPHANED_AFTER:
                    continue
                if item.state is ItemState.PENDING:
                    stale_pending += 1
                elif _fail_orphan(rt, item):
                    orphaned += 1
                    log.error("urgent call outcome unknown; not repeated", extra={"key": item.key})
            if stale_pending:
                done.resumed += run_urgent(rt, job_id).attempted
        done.orphaned += orphaned
        if stale_pending or orphaned:
            done.jobs.append(job_id)
    return done


def _fail_orphan(rt: Runtime, item: ItemRecord) -> bool:
    return rt.repo.move_item(
        item.job_id,
        item.key,
        ItemState.FAILED,
        expect={ItemState.SUBMITTED},
        change={"reason": ORPHANED_REASON, "updated_at": rt.now()},
    ).moved


def _call(
    rt: Runtime, model: str, request: Mapping[str, Any], bucket: TokenBucket
) -> Mapping[str, Any]:
    for attempt in Retrying(
        retry=retry_if_exception(_worth_retrying),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=4.0),
        reraise=True,
    ):
        with attempt:
            bucket.acquire()
            return rt.provider.generate(model=model, request=request)
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover


def _worth_retrying(exc: BaseException) -> bool:
    """Transient errors, except the 429s that pause the deployment (retrying them at once
    cannot succeed)."""
    if isinstance(exc, ProviderQuotaExceeded):
        return exc.kind not in (QuotaKind.CREDITS_DEPLETED, QuotaKind.SPEND_WINDOW)
    return isinstance(exc, TransientError)


def _paused_by(rt: Runtime, exc: BananaError) -> bool:
    """Start the deployment-wide pause a refusal calls for; True if it was one."""
    answer = str(exc)
    if isinstance(exc, ProviderAuthError):
        pause.pause(rt, pause.PauseKind.AUTH, answer)
        return True
    if isinstance(exc, ProviderQuotaExceeded) and exc.kind is QuotaKind.CREDITS_DEPLETED:
        pause.pause(rt, pause.PauseKind.CREDITS_DEPLETED, answer)
        return True
    if isinstance(exc, ProviderQuotaExceeded) and exc.kind is QuotaKind.SPEND_WINDOW:
        wait = max(pause.SPEND_WINDOW, exc.retry_after or timedelta(0))
        pause.pause(
            rt,
            pause.PauseKind.SPEND_WINDOW,
            answer,
            until=rt.now() + wait,
            severity="WARNING",
            alert=False,
        )
        return True
    return False


def _generate_one(
    rt: Runtime,
    item: ItemRecord,
    model: str,
    request: Mapping[str, Any],
    bucket: TokenBucket,
) -> ItemRecord:
    now = rt.now()
    try:
        response = _call(rt, model, request, bucket)
    except BananaError as exc:
        if _paused_by(rt, exc):
            # Nothing was generated or paid: the item waits for the pause to end.
            return item.model_copy(update={"state": ItemState.PENDING, "updated_at": now})
        log.warning("urgent request failed", extra={"key": item.key, "error": str(exc)})
        return item.model_copy(
            update={
                "state": ItemState.FAILED,
                "reason": f"urgent request failed after up to {ATTEMPTS} attempts: {exc}",
                "updated_at": now,
            }
        )
    outcome = classify_row({"key": item.key, "response": dict(response)})
    update = outcome_fields(rt, item, outcome, Lane.STANDARD)
    update["updated_at"] = now
    if outcome.kind is OutcomeKind.IMAGE and outcome.image is not None:
        mime = outcome.mime_type or "image/png"
        name, located = image_location(rt, item, mime)
        write_image(rt, item, name, outcome.image, mime)
        # Inline, unlike the batch collector's: the lane is a few items, called one by one
        # at the synchronous API's pace, so the thumbnail never holds anything up.
        write_thumbnail_if_decodable(rt, item, outcome.image)
        update.update(located)
    return item.model_copy(update=update)
