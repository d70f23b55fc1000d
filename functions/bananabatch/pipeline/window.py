"""The batch window on a deployment (issue 21 point 4): a job admitted while one is
configured keeps its batches queued until the next window after its admission; at the
window, submission first packs the queued lines of every file that waited into shared
batches per model (pipeline/pack.py), then submits them.

The time is computed once per job, when its hold is released (budget.release_hold, also
on approval and on the tick's repair of a release a crash interrupted), and written on the
job (JobRecord.window_at) for `status`; the batches carry it as next_submit_after, which
submission honours and by which packing recognises the batches that waited for it. Urgent
lines are served before any of this (control). Batches made later for retries go at once:
the job's run has begun.
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
