"""User decisions about a running job: cancel (approve and reject live with budgets)."""

from __future__ import annotations

from typing import Any

from bananabatch.core.records import CANCEL_OPTION, BatchRecord
from bananabatch.core.states import JOB_TERMINAL, BatchState, JobState
from bananabatch.errors import NotFound, PermanentError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import collect, finalize, submit
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
                cancelled += _cancel_at_provider(rt, batch)
        log.warning("job cancellation requested", extra={"batches": cancelled})
        finalize.finalize_job_if_done(rt, job_id)
        return {"job_id": job_id, "cancelled_batches": cancelled}


def _cancel_at_provider(rt: Runtime, batch: BatchRecord) -> int:
    """Cancel one running batch at the provider. Whatever the provider answers, the cancel
    of the job goes on: a batch it no longer knows ends FAILED here (nothing left to stop),
    and any other refusal is recorded on the batch; the tick cancels it later, since the
    job is marked cancelled."""
    assert batch.provider_name is not None
    with labels(batch_id=batch.batch_id, batch_name=batch.provider_name):
        try:
            rt.provider.cancel(batch.provider_name)
            return 1
        except NotFound as exc:
            collect.end_unknown_batch(
                rt, batch, f"the provider no longer knows batch {batch.provider_name}: {exc}"
            )
            return 1
        except Exception as exc:  # noqa: BLE001 - the cancel goes on; recorded on the batch
            error = f"cancel at the provider failed: {type(exc).__name__}: {exc}"[:500]
            log.warning("could not cancel the batch now; the tick will", extra={"error": error})
            rt.repo.patch_batch(batch.batch_id, lambda _b: {"last_error": error})
            return 0
