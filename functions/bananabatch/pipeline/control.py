"""User decisions about a running job: cancel (approve and reject live with budgets)."""

from __future__ import annotations

from typing import Any

from bananabatch.core.records import CANCEL_OPTION
from bananabatch.core.states import JOB_TERMINAL, BatchState, JobState
from bananabatch.errors import PermanentError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import finalize, submit
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)


def cancel_job(rt: Runtime, job_id: str) -> dict[str, Any]:
    """Stop spending on a job. Queued batches are cancelled outright, running ones at the
    provider (whatever they already produced is still collected), and the job ends
    CANCELLED once every batch is collected."""
    with labels(job_id=job_id):
        job = rt.repo.require_job(job_id)
        if job.state in JOB_TERMINAL:
            raise PermanentError(f"job {job_id} already ended {job.state.value}", job_id=job_id)
        if job.state is JobState.HELD:
            raise PermanentError(
                f"job {job_id} is HELD for approval; use `bananabatch reject {job_id}`",
                job_id=job_id,
            )
        rt.repo.patch_job(
            job_id, lambda j: {"options": {**j.options, CANCEL_OPTION: "1"}, "updated_at": rt.now()}
        )
        # A batch SUBMITTING right now is not touched here: the tick cancels it at the
        # provider if its create went through, and never queues it again if not.
        cancelled = 0
        for batch in rt.repo.batches(job_id=job_id):
            if batch.state is BatchState.QUEUED:
                cancelled += submit.cancel_unsubmitted(
                    rt, batch, submit.CANCELLED_BEFORE_SUBMISSION
                )
            elif batch.state is BatchState.RUNNING and batch.provider_name:
                rt.provider.cancel(batch.provider_name)
                cancelled += 1
        log.warning("job cancellation requested", extra={"batches": cancelled})
        finalize.finalize_job_if_done(rt, job_id)
        return {"job_id": job_id, "cancelled_batches": cancelled}
