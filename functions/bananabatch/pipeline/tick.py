"""The scheduler's tick: the safety net under every push signal.

Each tick asks the provider about every batch that is not finished, resolves creates whose
outcome is unknown, re-announces finished batches nobody has collected (a lost message
delays nothing beyond one tick), cancels batches stuck past the watchdog limit, and
submits queued batches when capacity allows. Everything it does is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bananabatch.core.records import BatchRecord
from bananabatch.core.states import BATCH_PROVIDER_TERMINAL, BatchState
from bananabatch.errors import TransientError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import submit
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)

# A finished batch is announced again only after this long without progress, so a batch
# that a collector is working on right now (it checkpoints, which bumps updated_at) is not
# handed to a second collector.
REANNOUNCE_AFTER = timedelta(minutes=3)


@dataclass
class TickReport:
    polled: int = 0
    finished: int = 0
    reannounced: int = 0
    reconciled: int = 0
    cancelled_stuck: int = 0
    submitted: int = 0


def _fields(values: dict[str, Any]) -> Callable[[BatchRecord], dict[str, Any]]:
    return lambda _batch: values


def handle_tick(rt: Runtime) -> TickReport:
    report = TickReport()
    stuck_after = timedelta(hours=rt.settings.stuck_after_hours)
    for batch in rt.repo.batches(states=[BatchState.SUBMITTING]):
        before = batch.state
        after = submit.reconcile_submitting(rt, batch)
        report.reconciled += after.state is not before
    for batch in rt.repo.batches(states=[BatchState.RUNNING]):
        if batch.provider_name is None:
            continue
        with labels(batch_id=batch.batch_id, job_id=batch.job_id, batch_name=batch.provider_name):
            report.polled += 1
            try:
                seen = rt.provider.get(batch.provider_name)
            except TransientError as exc:
                log.warning("could not poll batch; next tick will", extra={"error": str(exc)})
                continue
            if seen.state in BATCH_PROVIDER_TERMINAL:
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
            elif submit.is_overdue(batch, rt.now(), stuck_after=stuck_after):
                log.warning("batch stuck past the watchdog limit; cancelling it")
                rt.provider.cancel(batch.provider_name)
                report.cancelled_stuck += 1
    # Finished but never collected: the batch-done message was lost or is still queued.
    # Re-announcing is harmless because collection is idempotent.
    for batch in rt.repo.batches(states=BATCH_PROVIDER_TERMINAL):
        if rt.now() - batch.updated_at < REANNOUNCE_AFTER:
            continue
        with labels(batch_id=batch.batch_id, job_id=batch.job_id):
            log.warning("finished batch not collected yet; announcing it again")
        submit.publish_batch_done(rt, batch)
        report.reannounced += 1
    report.submitted = submit.submit_queued(rt)
    log.info("tick done", extra=vars(report))
    return report
