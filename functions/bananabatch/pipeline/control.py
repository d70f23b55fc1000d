"""What follows a job's move to RUNNING, and a person's decisions about a job: approve or
reject it when a budget cap held it, cancel it while it runs. The moves themselves are
pipeline/lifecycle.py's; the money is pipeline/budget.py's.
"""

from __future__ import annotations

from typing import Any, Final

from bananabatch.core.records import BatchRecord, JobRecord
from bananabatch.core.states import ITEM_TERMINAL, JOB_TERMINAL, BatchState, ItemState, JobState
from bananabatch.errors import NotFound, PermanentError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import budget, collect, finalize, lifecycle, pack, submit, urgent
from bananabatch.pipeline.materialize import materialize_items
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)

REJECTED_REASON: Final = "rejected by user"


def start_running(rt: Runtime, job_id: str) -> None:
    """What follows a job's move to RUNNING: urgent lines first (they must not wait for the
    batch), then the batches. An urgent failure is recorded on its item and never stops
    the batch part."""
    budget.release_hold(rt, job_id)
    try:
        urgent.run_urgent(rt, job_id)
    except Exception:
        log.exception("urgent lane stopped; the batch part goes on")
    if rt.repo.count_batches(job_id=job_id, states=list(BatchState)) == 0:
        finalize.finalize_job_if_done(rt, job_id)
        return
    submit.submit_queued(rt, job_id=job_id)


def _held_job(rt: Runtime, job_id: str, verb: str) -> JobRecord:
    job = rt.repo.require_job(job_id)
    if job.state is not JobState.HELD:
        raise PermanentError(
            f"only a HELD job can be {verb}; expected HELD, found {job.state.value}",
            job_id=job_id,
        )
    return job


def approve(rt: Runtime, job_id: str) -> JobRecord:
    """HELD -> RUNNING: reserve the estimate regardless of the caps and start the job."""
    with labels(job_id=job_id):
        job = _held_job(rt, job_id, "approved")
        day = budget.budget_day(rt.now())
        amount = budget.with_margin(job.costs.estimated_usd, rt.settings.budget_margin)
        budget.reserve(rt, job_id, amount, day=day, cap=None)
        moved = lifecycle.approve(rt, job_id, budget_day=day)
        if not moved.moved:
            raise PermanentError(
                f"approve lost a race: expected HELD, found {moved.record.state.value}",
                job_id=job_id,
            )
        log.info("held job approved")
        start_running(rt, job_id)
        return rt.repo.require_job(job_id)


def reject(rt: Runtime, job_id: str) -> JobRecord:
    """HELD -> CANCELLED: every open item FAILED "rejected by user", one final message."""
    with labels(job_id=job_id):
        job = _held_job(rt, job_id, "rejected")
        now = rt.now()
        # Items written at intake (urgent lines, in-file duplicates) first, then each
        # batch's items from its manifest: a held job's batches were never submitted.
        failed = [
            item.model_copy(
                update={"state": ItemState.FAILED, "reason": REJECTED_REASON, "updated_at": now}
            )
            for item in rt.repo.items(job_id)
            if item.state not in ITEM_TERMINAL
        ]
        count = rt.repo.put_items(failed)
        for batch in rt.repo.batches(job_id=job_id, states=[BatchState.QUEUED]):
            # Before the batch turns terminal, so a crash in between leaves it QUEUED and
            # a second reject does it again.
            count += materialize_items(rt, batch, ItemState.FAILED, reason=REJECTED_REASON)
            rt.repo.move_batch(
                batch.batch_id, BatchState.CANCELLED, change=lambda _b: {"updated_at": now}
            )
            rt.repo.move_batch(
                batch.batch_id, BatchState.COLLECTED, change=lambda _b: {"updated_at": now}
            )
        log.info("held job rejected", extra={"items": count})
        return finalize.close_job(rt, job, forced=JobState.CANCELLED, error=REJECTED_REASON)


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
        lifecycle.request_cancel(rt, job_id)
        # A batch SUBMITTING right now is not touched here: the tick cancels it at the
        # provider if its create went through, and never queues it again if not.
        cancelled = 0
        for batch in rt.repo.batches(job_id=job_id):
            if batch.state is BatchState.QUEUED and batch.packed_into is None:
                cancelled += submit.cancel_unsubmitted(
                    rt, batch, submit.CANCELLED_BEFORE_SUBMISSION
                )
            elif batch.state is BatchState.RUNNING and batch.provider_name:
                cancelled += _cancel_at_provider(rt, batch)
        # Lines packed with other jobs' at the batch window (pipeline/pack.py): their shared
        # batch stops only when none of its jobs may spend; until then this job's lines are
        # left out at submission, or collected (paid) and not retried.
        if job.window_at is not None:
            for batch in pack.shared_batches_of(rt, job_id, [BatchState.RUNNING]):
                if batch.provider_name and pack.all_stopped(rt, batch, {}):
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
            rt.batch_provider(batch).cancel(batch.provider_name)
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
