"""The sync lanes' job-level run: lines routed to a synchronous lane (priority urgent, and
bulk lines whose cheapest lane is a synchronous one; core/routing.py) are served right
after the job starts, while its batches wait. Results land in the same layout as batch
results (images/, thumbs/, item state and actual cost).

Intake stages these requests to `jobs/<id>/requests/urgent.jsonl` with their providers in
order (so an approved HELD job can run them later). Each item is claimed PENDING ->
SUBMITTED in a transaction before any call, so a redelivered event never pays for it
twice; the price of that rule is that a crash in the middle of a call leaves that one item
SUBMITTED (outcome unknown). Each call is then claimed in the attempt ledger, and failover
across the providers, with their breakers, is pipeline/lanes.py's.

Calls share a per-process token bucket (the synchronous API has per-minute quotas).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from bananabatch.core import records as rec
from bananabatch.core.records import ItemRecord
from bananabatch.core.states import ItemState, JobState
from bananabatch.errors import (
    BananaError,
    NotFound,
    ProviderAuthError,
    ProviderQuotaExceeded,
    QuotaKind,
)
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import lane_call, lanes, pause, task_records
from bananabatch.pipeline.cache import LANE_SYNC, LANE_URGENT
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Where

log = get_logger(__name__)

URGENT_NAME: Final = "urgent.jsonl"
# Requests per second through the synchronous API from one process, and the burst size.
RATE_PER_SECOND: Final = 2.0
BURST: Final = 5
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
    # Handed to an async-callback lane: their tasks settle them (pipeline/tasks.py).
    submitted: int = 0


# Item lanes the sync-lane run serves: urgent lines, and bulk lines routed to a sync lane.
SYNC_ITEM_LANES: Final = (LANE_URGENT, LANE_SYNC)
_OPEN: Final = [ItemState.PENDING.value, ItemState.SUBMITTED.value]


def pending_count(rt: Runtime, job_id: str) -> int:
    """Sync-lane items not yet answered: the job cannot end while there are any."""
    return sum(
        rt.state.count(
            rec.items_collection(job_id),
            [Where("lane", "==", lane), Where("state", "in", _OPEN)],
        )
        for lane in SYNC_ITEM_LANES
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
            key = str(staged["key"])
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
            sync = lanes.StagedSync.from_doc(staged)
            done = lanes.serve(
                rt,
                item,
                sync,
                before_call=bucket.acquire,
                paused_by=_paused_by,
                attempt=lane_call.attempt,
            )
            if done.state is ItemState.SUBMITTED:
                # An async lane's task: its callback or the tick's poll settles the item,
                # maybe already; writing it here could undo that.
                report.submitted += 1
                continue
            rt.repo.put_items([done])
            if done.state is ItemState.PENDING:
                continue  # a pause, or every provider shut: it waits
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


def recover(
    rt: Runtime, *, job_id: str | None = None, orphaned_after: timedelta = ORPHANED_AFTER
) -> Recovery:
    """The tick's rule for urgent items of RUNNING jobs that a dead process left behind.

    A SUBMITTED item claimed longer than ORPHANED_AFTER ago lost its process in the middle
    of a call whose outcome nobody knows: calling again could pay twice, so it ends FAILED
    with a reason that says so (it is in failed.jsonl, ready for `bananabatch retry`).
    A PENDING item that old was never reached (the process died before it): the lane runs
    again for its job. A live run of the lane may be at work on the same job; claims are
    transactional, so the two only share the work, never pay twice.

    `job_id` and `orphaned_after` 0 are for a caller that knows the process is dead (a
    local run resuming a job whose earlier run was killed): it need not wait 15 minutes."""
    done = Recovery()
    now = rt.now()
    where = [Where("state", "==", JobState.RUNNING.value)]
    if job_id is not None:
        where.append(Where("job_id", "==", job_id))
    for doc in rt.state.query("jobs", where):
        job_id = str(doc["job_id"])
        # Most jobs have no urgent line: skip them without a query each, every tick.
        if not doc.get("urgent_count") or not pending_count(rt, job_id):
            continue
        stale_pending = orphaned = 0
        with labels(job_id=job_id):
            for item in _stale_items(rt, job_id, now - orphaned_after):
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


def _stale_items(rt: Runtime, job_id: str, before: datetime) -> Iterator[ItemRecord]:
    """The job's open sync-lane items untouched since `before`, but for those an async
    lane's task serves: its callback or the tick's poll ends them."""
    tasked = {
        str(task["key"])
        for task in rt.state.query(task_records.TASKS, [Where("job_id", "==", job_id)])
    }
    for lane in SYNC_ITEM_LANES:
        for doc in rt.state.query(
            rec.items_collection(job_id),
            [Where("lane", "==", lane), Where("state", "in", _OPEN)],
        ):
            item = ItemRecord.model_validate(doc)
            if item.updated_at is not None and item.updated_at > before:
                continue
            if item.key not in tasked:
                yield item


def _fail_orphan(rt: Runtime, item: ItemRecord) -> bool:
    return rt.repo.move_item(
        item.job_id,
        item.key,
        ItemState.FAILED,
        expect={ItemState.SUBMITTED},
        change={"reason": ORPHANED_REASON, "updated_at": rt.now()},
    ).moved


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
