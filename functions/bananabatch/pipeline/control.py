"""User decisions about a running job: cancel (approve and reject live with budgets)."""

from __future__ import annotations

from typing import Any

from bananabatch.core.states import JOB_TERMINAL, BatchState, ItemState, JobState
from bananabatch.errors import PermanentError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import finalize, submit
from bananabatch.pipeline.repo import materialize_items
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)

CANCEL_OPTION = "cancel_requested"


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
        cancelled = 0
        for batch in rt.repo.batches(job_id=job_id):
            if batch.state is BatchState.QUEUED:
                # Its items must exist before it turns terminal: the collector then fails
                # them ("no output: the batch ended CANCELLED"), as for any cancelled batch.
                # PENDING and only where absent, so a submitter that claimed the batch
                # meanwhile (and so wins the move below) keeps its SUBMITTED items.
                materialize_items(rt, batch, ItemState.PENDING, only_absent=True)
                moved = rt.repo.move_batch(
                    batch.batch_id,
                    BatchState.CANCELLED,
                    expect={BatchState.QUEUED},
                    change=lambda _b: {
                        "finished_at": rt.now(),
                        "updated_at": rt.now(),
                        "provider_error": "cancelled by user before submission",
                    },
                )
                if moved.moved:
                    cancelled += 1
                    submit.publish_batch_done(rt, moved.record)
            elif batch.state is BatchState.RUNNING and batch.provider_name:
                rt.provider.cancel(batch.provider_name)
                cancelled += 1
        log.warning("job cancellation requested", extra={"batches": cancelled})
        finalize.finalize_job_if_done(rt, job_id)
        return {"job_id": job_id, "cancelled_batches": cancelled}


def cancel_requested(options: dict[str, str]) -> bool:
    return options.get(CANCEL_OPTION) == "1"
