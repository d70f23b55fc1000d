"""What `status` shows about a job beyond its counts: the failures recorded on the job and
on its batches by the isolated loops (tick, cancel, collection), and batches whose create
outcome is unknown, waiting out the reconcile grace before they are queued again."""

from __future__ import annotations

from typing import Any

from bananabatch.core.records import JobRecord
from bananabatch.core.states import BatchState
from bananabatch.pipeline import inflight, pack, window
from bananabatch.pipeline.cache import LANE_JOINED
from bananabatch.pipeline.collect import PROVIDER_GONE
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.submit import RECONCILE_GRACE
from bananabatch.ports import Where


def job_notes(rt: Runtime, job: JobRecord) -> dict[str, Any]:
    problems: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    if job.last_error:
        problems.append({"batch_id": None, "state": job.state.value, "error": job.last_error})
    now = rt.now()
    grace = int(RECONCILE_GRACE.total_seconds() // 60)
    batches = list(rt.repo.batches(job_id=job.job_id))
    # A batch whose lines went out again in a later attempt: its errors are history.
    retried = {(b.index, b.attempt - 1) for b in batches if b.attempt > 1}
    for batch in batches:
        # A collected batch's old error is history, unless it is why the batch ended and
        # its lines were not sent again (then it is why they failed).
        ended_by_it = batch.provider_state == PROVIDER_GONE
        superseded = (batch.index, batch.attempt) in retried
        if (
            batch.last_error
            and not superseded
            and (batch.state is not BatchState.COLLECTED or ended_by_it)
        ):
            problems.append(
                {"batch_id": batch.batch_id, "state": batch.state.value, "error": batch.last_error}
            )
        if batch.state is BatchState.SUBMITTING:
            since = batch.submitting_since or batch.updated_at
            until = since + RECONCILE_GRACE
            left = max(0, int((until - now).total_seconds()))
            waiting.append(
                {
                    "batch_id": batch.batch_id,
                    "reconcile_until": until.isoformat(),
                    "seconds_left": left,
                    "why": (
                        "create outcome unknown (the call was cut off); looked up by display "
                        f"name every tick, queued again if still absent after the {grace}-minute "
                        f"reconcile grace ({left} s left)"
                    ),
                }
            )
    # Lines that joined an identical request in flight in another job, and how they fared.
    joined = inflight.counts(rt.repo.items(job.job_id, where=[Where("lane", "==", LANE_JOINED)]))
    return {
        "problems": problems,
        "waiting": waiting,
        "inflight": joined,
        "window": window.note(rt, job),
        # Shared batches of the batch window carrying this job's lines (pipeline/pack.py).
        "shared": pack.note(rt, job.job_id) if job.window_at is not None else [],
    }
