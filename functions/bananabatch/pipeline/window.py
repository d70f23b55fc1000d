"""The batch window on a deployment (issue 21 point 4): a job admitted while one is
configured keeps its batches queued until the next window after its admission, and the tick
submits them then, with every other job's that waited for the same window.

Why each job keeps its own batches rather than having its lines packed with other jobs'
into shared provider batches: a batch belongs to one job throughout (its request file and
manifest under jobs/<job_id>/, its items created from that manifest when it is claimed,
its collection writing that job's images and counters, its cancel and watchdog acting on
that job). A provider batch shared by several jobs would need every one of those to work
per line instead: a cancel of one job would stop the others' paid work at the provider,
and one lost result file would touch several jobs. Submission, the ledger and collection
stay exactly as they are, so the money invariants (never submit twice, never lose a
result) hold with nothing new to prove; what the window changes is only *when* a queued
batch may be created. Each job's batches are already planned full within the limits
(core/planning.py), so the window gathers many files' batches into one submission round.

The time is computed once per job, when its hold is released (budget.release_hold, also
on approval and on the tick's repair of a release a crash interrupted), and written on the
job (JobRecord.window_at) for `status`; the batches carry it as next_submit_after, which
submission already honours. Urgent lines are served before any of this (control).
Batches made later for retries go at once: the job's run has begun.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bananabatch.core.records import JobRecord
from bananabatch.core.states import BatchState
from bananabatch.core.window import waiting_text
from bananabatch.log import get_logger
from bananabatch.pipeline import lifecycle
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)


def hold_until(rt: Runtime, job_id: str) -> datetime | None:
    """When the job's batches may be submitted: None (at once) without a window, else the
    next window after the first time this was asked for the job (recorded on it)."""
    window = rt.settings.window
    if window is None:
        return None
    at = window.next_after(rt.now())
    job = lifecycle.mark_window(rt, job_id, at)
    if job.window_at == at:
        log.info(
            "batches wait for the batch window",
            extra={"window": window.describe(), "window_at": at.isoformat()},
        )
    return job.window_at


def note(rt: Runtime, job: JobRecord) -> dict[str, Any] | None:
    """What `status` says of a job still waiting for its window, or None."""
    window = rt.settings.window
    at = job.window_at
    now = rt.now()
    if at is None or at <= now:
        return None
    waiting = rt.repo.count_batches(job_id=job.job_id, states=[BatchState.QUEUED])
    if waiting == 0:
        return None
    text = (
        waiting_text(window, at, now)
        if window is not None
        else f"its batches wait until {at.isoformat()}"
    )
    return {
        "at": at.isoformat(),
        "seconds_left": int((at - now).total_seconds()),
        "batches": waiting,
        "why": text,
    }
