"""The scheduler's tick: the safety net under every push signal.

Each tick asks the provider about every batch that is not finished, resolves creates whose
outcome is unknown, re-announces finished batches nobody has collected (a lost message
delays nothing beyond one tick), cancels batches stuck past the watchdog limit, and
submits queued batches when capacity allows, and finishes jobs whose closing a crash
interrupted at any step. Everything it does is idempotent.

Every batch and every job is handled in its own isolation: whatever one of them raises is
logged and recorded on its record (`last_error`, shown by `status`), and the tick goes on
with the others. A batch the provider no longer knows (404, or refused for good several
polls in a row) ends FAILED with no output, so its items are retried by the usual rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from bananabatch import config as cfg
from bananabatch.core.records import BatchRecord, JobRecord
from bananabatch.core.states import BATCH_PROVIDER_TERMINAL, JOB_TERMINAL, BatchState, JobState
from bananabatch.errors import ConfigError, NotFound, PermanentError, TransientError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import (
    budget,
    collect,
    files_store,
    finalize,
    inflight,
    lifecycle,
    pack,
    submit,
    tasks,
    urgent,
)
from bananabatch.pipeline.live_closing import WhenLive
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import ProviderBatch, Where

log = get_logger(__name__)

# A finished batch is announced again only after this long without progress, so a batch
# that a collector is working on right now (it checkpoints, which bumps updated_at) is not
# handed to a second collector.
REANNOUNCE_AFTER = timedelta(minutes=3)
# A completion claimed this long ago and still not published lost its publisher (a crash
# between the claim and the publish). Far longer than one publish takes, so a live
# publisher is never doubled; the window is the only way two messages could go out.
REARM_COMPLETION_AFTER = timedelta(minutes=5)
# Why the tick cancels a running batch at the provider (also the log message).
_STUCK = "batch stuck past the watchdog limit"
_OF_CANCELLED_JOB = "batch of a cancelled job still running"
# Polls in a row the provider may refuse for good (403: a key switched to another
# project) before the batch is given up as unknown to it. A 401 / invalid key is the
# deployment's problem, not the batch's, and never counts.
MAX_POLL_REFUSALS: Final = 3


@dataclass
class TickReport:
    polled: int = 0
    finished: int = 0
    reannounced: int = 0
    reconciled: int = 0
    cancelled_stuck: int = 0
    submitted: int = 0
    rearmed: int = 0
    released: int = 0
    urgent_orphaned: int = 0
    urgent_resumed: int = 0
    gone: int = 0
    repaired: int = 0
    tasks_settled: int = 0
    errors: int = 0


def _fields(values: dict[str, Any]) -> Callable[[BatchRecord], dict[str, Any]]:
    return lambda _batch: values


@contextmanager
def _isolated(
    rt: Runtime,
    report: TickReport,
    what: str,
    *,
    batch_id: str | None = None,
    job_id: str | None = None,
) -> Iterator[None]:
    """Run one batch's or one job's step; a failure is logged, recorded on that record and
    counted, never raised, so no single record can stop the tick for everyone."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - isolation is the point: recorded, logged
        report.errors += 1
        error = f"{what}: {type(exc).__name__}: {exc}"[:500]
        log.error(
            "tick step failed; the tick goes on with the others",
            extra={"step": what, "error": error, "job_id": job_id, "batch_id": batch_id},
        )
        _record(rt, error, batch_id=batch_id, job_id=job_id)


def _record(rt: Runtime, error: str, *, batch_id: str | None, job_id: str | None) -> None:
    try:
        if batch_id is not None:
            rt.repo.patch_batch(batch_id, lambda _b: {"last_error": error})
        elif job_id is not None:
            lifecycle.record_error(rt, job_id, error)
    except Exception:
        log.warning("could not record the error on its record", exc_info=True)


def handle_tick(rt: Runtime) -> TickReport:
    report = TickReport()
    stuck_after = timedelta(hours=rt.settings.watchdog_hours)
    for batch in rt.repo.batches(states=[BatchState.SUBMITTING]):
        with _isolated(rt, report, "reconcile", batch_id=batch.batch_id):
            before = batch.state
            after = submit.reconcile_submitting(rt, batch)
            report.reconciled += after.state is not before
    jobs: dict[str, JobRecord | None] = {}
    for batch in rt.repo.batches(states=[BatchState.RUNNING]):
        if batch.provider_name is None:
            continue
        with (
            labels(batch_id=batch.batch_id, job_id=batch.job_id, batch_name=batch.provider_name),
            _isolated(rt, report, "poll", batch_id=batch.batch_id),
        ):
            report.polled += 1
            _poll(rt, batch, jobs, report, stuck_after)
    # Finished but never collected: the batch-done message was lost or is still queued.
    # Re-announcing is harmless because collection is idempotent and leased.
    for batch in rt.repo.batches(states=BATCH_PROVIDER_TERMINAL):
        if rt.now() - batch.updated_at < REANNOUNCE_AFTER:
            continue
        if batch.lease_until is not None and batch.lease_until > rt.now():
            continue  # a collector is at work on it (or died and its lease runs out)
        with (
            labels(batch_id=batch.batch_id, job_id=batch.job_id),
            _isolated(rt, report, "reannounce", batch_id=batch.batch_id),
        ):
            log.warning("finished batch not collected yet; announcing it again")
            submit.publish_batch_done(rt, batch)
            report.reannounced += 1
    with _isolated(rt, report, "release holds"):
        report.released = release_orphaned_holds(rt, report)
    recovered = urgent.Recovery()
    with _isolated(rt, report, "urgent recovery"):
        recovered = urgent.recover(rt)
    report.urgent_orphaned, report.urgent_resumed = recovered.orphaned, recovered.resumed
    for job_id in recovered.jobs:
        with _isolated(rt, report, "finalize", job_id=job_id):
            finalize.finalize_job_if_done(rt, job_id)
    with _isolated(rt, report, "async tasks"):
        # Async-lane tasks whose callback did not come (pipeline/tasks.py).
        report.tasks_settled = tasks.poll_overdue(rt)
    # Waiting items whose owner's request ended (or whose owner died): served or paid.
    with _isolated(rt, report, "in-flight requests"):
        inflight.resolve(rt)
    with _isolated(rt, report, "submit queued"):
        report.submitted = submit.submit_queued(rt)
    report.repaired = repair_unfinished_jobs(rt, report)
    with _isolated(rt, report, "rearm completions"):
        report.rearmed = rearm_completions(rt, report)
    # Its own record ("files store usage"), which the deployment's alert matches.
    with _isolated(rt, report, "files store usage"):
        files_store.report_usage(rt)
    log.info("tick done", extra=vars(report))
    return report


def _poll(
    rt: Runtime,
    batch: BatchRecord,
    jobs: dict[str, JobRecord | None],
    report: TickReport,
    stuck_after: timedelta,
) -> None:
    assert batch.provider_name is not None
    seen = _look_up(rt, batch, report)
    if seen is None:
        return
    if batch.poll_failures or batch.last_error:
        # The provider answered: an earlier poll's failure is history, not a problem now.
        rt.repo.patch_batch(batch.batch_id, lambda _b: {"poll_failures": 0, "last_error": None})
    why = _why_cancel(rt, batch, seen, jobs, stuck_after)
    if why is not None:
        log.warning("%s; cancelling it", why)
        seen = _cancel(rt, batch, report)
        if seen is None:
            return
        report.cancelled_stuck += why is _STUCK
    if seen.state in BATCH_PROVIDER_TERMINAL:
        _record_finished(rt, batch, seen, report)


def _look_up(rt: Runtime, batch: BatchRecord, report: TickReport) -> ProviderBatch | None:
    """The provider's view of the batch; None when there is none to act on this tick (it
    could not be asked, or it does not know the batch, which then ends here)."""
    assert batch.provider_name is not None
    try:
        return rt.batch_provider(batch).get(batch.provider_name)
    except TransientError as exc:
        log.warning("could not poll batch; next tick will", extra={"error": str(exc)})
    except NotFound as exc:
        _end_gone(rt, batch, report, exc)
    except ConfigError:
        raise  # the deployment's key or settings, not this batch: recorded, never counted
    except PermanentError as exc:
        _count_refusal(rt, batch, report, exc)
    return None


def _count_refusal(
    rt: Runtime, batch: BatchRecord, report: TickReport, exc: PermanentError
) -> None:
    error = str(exc)[:500]
    refused = rt.repo.patch_batch(
        batch.batch_id,
        lambda b: {"poll_failures": b.poll_failures + 1, "last_error": error},
    )
    if refused.poll_failures >= MAX_POLL_REFUSALS:
        collect.end_unknown_batch(
            rt,
            batch,
            f"the provider refused batch {batch.provider_name} "
            f"{refused.poll_failures} polls in a row: {exc}",
        )
        report.gone += 1


def _why_cancel(
    rt: Runtime,
    batch: BatchRecord,
    seen: ProviderBatch,
    jobs: dict[str, JobRecord | None],
    stuck_after: timedelta,
) -> str | None:
    """Why the tick cancels a batch still running at the provider, if it does."""
    if seen.state in BATCH_PROVIDER_TERMINAL:
        return None
    if _cancel_requested(rt, batch, jobs):
        # The create was still in flight when the user cancelled (cancel_job only
        # reaches batches that are RUNNING at that moment): stop it now.
        return _OF_CANCELLED_JOB
    if submit.is_overdue(batch, rt.now(), stuck_after=stuck_after):
        # Cancelling keeps whatever rows are done; collection then hands the rest
        # to the retry path, so they are resubmitted within the attempt budget.
        return _STUCK
    return None


def _cancel(rt: Runtime, batch: BatchRecord, report: TickReport) -> ProviderBatch | None:
    """Cancel the batch at the provider; its state afterwards, or None when that is not
    known this tick."""
    assert batch.provider_name is not None
    try:
        rt.batch_provider(batch).cancel(batch.provider_name)
        return rt.batch_provider(batch).get(batch.provider_name)
    except TransientError as exc:
        log.warning("could not cancel the batch", extra={"error": str(exc)})
    except NotFound as exc:
        _end_gone(rt, batch, report, exc)
    return None


def _record_finished(
    rt: Runtime, batch: BatchRecord, seen: ProviderBatch, report: TickReport
) -> None:
    finished = {
        "provider_state": seen.provider_state,
        "provider_error": seen.error,
        "finished_at": rt.now(),
        "updated_at": rt.now(),
    }
    moved = rt.repo.move_batch(
        batch.batch_id,
        seen.state,
        expect={BatchState.RUNNING},
        change=_fields(finished),
    )
    if moved.moved:
        report.finished += 1
        log.info("batch finished: %s", seen.state.value)
        submit.publish_batch_done(rt, moved.record)


def _end_gone(rt: Runtime, batch: BatchRecord, report: TickReport, exc: NotFound) -> None:
    collect.end_unknown_batch(
        rt, batch, f"the provider no longer knows batch {batch.provider_name}: {exc}"
    )
    report.gone += 1


def repair_unfinished_jobs(rt: Runtime, report: TickReport) -> int:
    """Finish what a crash left undone in closing a job: a RUNNING job whose batches are
    all collected (killed just after the last one), and a terminal job with a step of its
    closing not done (cache, budget, completion). Every step is idempotent, so doing one
    again next to a live finalizer costs some work and never a second message."""
    repaired = 0
    for doc in rt.state.query("jobs", [Where("state", "==", JobState.RUNNING.value)]):
        job_id = str(doc["job_id"])
        with labels(job_id=job_id), _isolated(rt, report, "finalize", job_id=job_id):
            # A finalizer live in this process (the local runner's drain) is no crash.
            after = finalize.finalize_job_if_done(rt, job_id, when_live=WhenLive.SKIP)
            repaired += after.state in JOB_TERMINAL
            if after.state is JobState.RUNNING:
                report_overdue(rt, after)
    for doc in rt.state.query(
        "jobs",
        [
            Where("state", "in", [s.value for s in JOB_TERMINAL]),
            Where("finalized", "==", False),
        ],
    ):
        job_id = str(doc["job_id"])
        with labels(job_id=job_id), _isolated(rt, report, "finish closing", job_id=job_id):
            log.warning("job ended but its closing is unfinished; finishing it")
            after = finalize.finalize_job_if_done(rt, job_id, when_live=WhenLive.SKIP)
            repaired += after.finalized
    return repaired


def report_overdue(rt: Runtime, job: JobRecord) -> bool:
    """One WARNING for a job still RUNNING past its expected completion. The watchdog
    guards each batch against a stalling provider; this guards the job against whatever
    nothing else foresaw (a pause never lifted, a batch never announced, a bug). Marked on
    the job first, so two ticks never report it twice."""
    # A job that waited for its batch window is late only from the window on.
    age = rt.now() - max(job.created_at, job.window_at or job.created_at)
    expected = timedelta(hours=rt.settings.overdue_hours)
    if job.overdue_reported or age <= expected:
        return False
    won = lifecycle.claim_overdue_report(rt, job.job_id)
    if won:
        log.warning(
            cfg.JOB_OVERDUE_MESSAGE,
            extra={
                "alert": cfg.JOB_OVERDUE_ALERT,
                "age_hours": round(age.total_seconds() / 3600, 1),
                "expected_hours": rt.settings.overdue_hours,
                "paused": job.paused,
                "counts": job.counts,
            },
        )
    return won


def _cancel_requested(rt: Runtime, batch: BatchRecord, jobs: dict[str, JobRecord | None]) -> bool:
    if batch.members:
        # A shared batch of the window stops only when none of its jobs may spend.
        return pack.all_stopped(rt, batch, jobs)
    if batch.job_id not in jobs:
        jobs[batch.job_id] = rt.repo.get_job(batch.job_id)
    job = jobs[batch.job_id]
    return job is not None and job.cancel_requested


def rearm_completions(rt: Runtime, report: TickReport) -> int:
    """Give an owed completion whose publisher died after claiming it a new chance."""
    owed = rt.state.query(
        "jobs",
        [
            Where("state", "in", [s.value for s in JOB_TERMINAL]),
            Where("completion_pending", "==", False),
            Where("completion_published", "==", False),
        ],
    )
    rearmed = 0
    cutoff = rt.now() - REARM_COMPLETION_AFTER
    for doc in owed:
        job = JobRecord.model_validate(doc)
        if job.updated_at > cutoff:
            continue
        with labels(job_id=job.job_id), _isolated(rt, report, "rearm", job_id=job.job_id):
            if lifecycle.rearm_completion(rt, job.job_id, claimed_before=cutoff):
                log.warning("completion claimed but never published; publishing it now")
                rearmed += finalize.publish_completion_if_pending(rt, job.job_id)
    return rearmed


def release_orphaned_holds(rt: Runtime, report: TickReport) -> int:
    """Batches still held for budget although their job already runs: the intake that
    moved the job to RUNNING died before releasing them, and the redelivered upload event
    finds the job RUNNING and (rightly) does nothing, so only the tick can let them go."""
    released = 0
    jobs: dict[str, bool] = {}
    for batch in rt.repo.batches(states=[BatchState.QUEUED]):
        if batch.next_submit_after != budget.HOLD_UNTIL:
            continue
        if batch.job_id not in jobs:
            job = rt.repo.get_job(batch.job_id)
            jobs[batch.job_id] = job is not None and job.state is JobState.RUNNING
        if jobs[batch.job_id]:
            with (
                labels(job_id=batch.job_id, batch_id=batch.batch_id),
                _isolated(rt, report, "release hold", job_id=batch.job_id),
            ):
                log.warning("job runs but its batch was never released; releasing it")
                budget.release_hold(rt, batch.job_id)
                released += 1
    return released
