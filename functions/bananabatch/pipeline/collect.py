"""Collection: a finished batch's results become images, item states and, at the end of
the job, reports and one completion message.

Rows are streamed one at a time, so memory is bounded by the largest single line. Every
write is idempotent (an image lands at a name derived from its key; an item document is
replaced whole), and a cursor on the batch record is checkpointed every few rows, so a
crash or a timeout resumes where it stopped and a redelivered message does no harm.

Thumbnails are not made here: each checkpoint publishes one message listing the images it
stored, and pipeline/thumbnails.py makes theirs in separate invocations (see there why).

Collection takes a lease on the batch record (a conditional write with an expiry, renewed
at every checkpoint), so two deliveries of the same signal never make two collectors
download the same file: the second one finds the lease and leaves. A lease left by a
collector that died expires, and the next delivery (the tick re-announces the batch)
resumes at the cursor. The result stream is closed in the scope that opened it, whatever
happens mid-stream: left to the garbage collector, closing it could run inside a later
request on the same HTTP client and deadlock on the connection pool's lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from bananabatch.core.pricing import Lane
from bananabatch.core.records import BatchRecord, ItemRecord
from bananabatch.core.results import Outcome, OutcomeKind, classify_row
from bananabatch.core.states import BATCH_PROVIDER_TERMINAL, ITEM_TERMINAL, BatchState, ItemState
from bananabatch.errors import NotFound
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import cache, files_store, finalize, inflight, retry, submit, thumbnails
from bananabatch.pipeline.live_closing import WhenLive
from bananabatch.pipeline.outcomes import (
    image_location,
    outcome_fields,
    write_cost,
    write_image,
)
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.writes import Writes, write_workers
from bananabatch.ports import ProviderBatch, ResultRow

log = get_logger(__name__)

CHECKPOINT_ROWS = 50
# How long a collection lease lasts without a checkpoint renewing it: longer than one
# invocation may run (540 s), so a live collector never loses it, short enough that a
# crashed one delays its batch by minutes, not hours.
LEASE: Final = timedelta(minutes=10)
# provider_state of a batch the provider no longer knows (404 on get: deleted, another
# project's key, an emulator that died with its process). Such a batch ends FAILED with no
# output, so its items go to the retry path like any batch that produced nothing.
PROVIDER_GONE: Final = "NOT_FOUND_AT_PROVIDER"


@dataclass
class CollectReport:
    batch_id: str
    rows: int = 0
    images: int = 0
    duplicates: int = 0
    unknown_keys: int = 0
    missing: int = 0
    resumed_from: int = 0
    retried: int = 0
    stopped_early: bool = False
    # Another collector holds the batch's lease (or took it over): this one did nothing.
    leased_elsewhere: bool = False
    by_state: dict[str, int] = field(default_factory=dict)


def handle_batch_done(
    rt: Runtime, batch_id: str, *, should_stop: Callable[[], bool] = lambda: False
) -> CollectReport:
    """Collect one batch. should_stop lets the entry point end cleanly before its deadline;
    the batch is then announced again and the next invocation resumes at the cursor."""
    batch = rt.repo.require_batch(batch_id)
    report = CollectReport(batch_id=batch_id)
    with labels(job_id=batch.job_id, batch_id=batch_id, batch_name=batch.provider_name):
        if batch.state is BatchState.COLLECTED:
            log.info("batch already collected; checking the job is finalized")
            _finalize_jobs(rt, batch)
            return report
        token = uuid.uuid4().hex
        if not _take_lease(rt, batch_id, token):
            report.leased_elsewhere = True
            log.info("another collector holds this batch's lease; leaving it to them")
            return report
        try:
            plan = _collect_leased(rt, batch_id, token, report, should_stop)
        except _LeaseLost:
            report.leased_elsewhere = True
            log.warning("collection lease taken over by another collector; stopping")
            return report
        except Exception as exc:
            # Recorded on the batch (status shows it) and raised, so the platform
            # redelivers; the next attempt resumes at the cursor.
            _record_error(rt, batch_id, f"collection failed: {exc}")
            raise
        finally:
            _release_lease(rt, batch_id, token)
        if report.stopped_early:
            # After the release, so the continuation finds the lease free.
            submit.publish_batch_done(rt, rt.repo.require_batch(batch_id))
            return report
        if plan is not None and plan.retry_batch_id is not None:
            submit.submit_queued(rt, job_id=batch.job_id)
        # Other jobs' lines that joined this batch's requests are served (or paid) now.
        inflight.resolve(rt)
        _finalize_jobs(rt, batch)
        return report


def _finalize_jobs(rt: Runtime, batch: BatchRecord) -> None:
    """Close the batch's job, or each member job of a shared batch (pipeline/pack.py)."""
    for job_id in batch.job_ids:
        with labels(job_id=job_id):
            # After the tick, if it is closing the job in this process now (local runner).
            finalize.finalize_job_if_done(rt, job_id, when_live=WhenLive.WAIT)


class _LeaseLost(Exception):
    """Our lease expired and another collector took the batch: stop without writing."""


def _take_lease(rt: Runtime, batch_id: str, token: str) -> bool:
    now = rt.now()

    def take(b: BatchRecord) -> dict[str, Any] | None:
        if b.state is BatchState.COLLECTED:
            return None
        if b.lease_owner not in (None, token) and b.lease_until is not None and b.lease_until > now:
            return None
        return {"lease_owner": token, "lease_until": now + LEASE}

    return rt.repo.patch_batch(batch_id, take).lease_owner == token


def _release_lease(rt: Runtime, batch_id: str, token: str) -> None:
    try:
        rt.repo.patch_batch(
            batch_id,
            lambda b: (
                {"lease_owner": None, "lease_until": None} if b.lease_owner == token else None
            ),
        )
    except Exception:
        # The lease then simply expires; never hide the error that brought us here.
        log.warning("could not release the collection lease; it will expire", exc_info=True)


def _record_error(rt: Runtime, batch_id: str, error: str) -> None:
    try:
        rt.repo.patch_batch(batch_id, lambda _b: {"last_error": error[:500]})
    except Exception:
        log.warning("could not record the batch's error", exc_info=True)


def _collect_leased(
    rt: Runtime,
    batch_id: str,
    token: str,
    report: CollectReport,
    should_stop: Callable[[], bool],
) -> retry.RetryPlan | None:
    batch = rt.repo.require_batch(batch_id)
    seen = _refresh(rt, batch)
    if seen is None:
        return None
    batch = rt.repo.require_batch(batch_id)
    writes = Writes(write_workers(rt))
    try:
        _collect_rows(rt, batch, seen, report, should_stop, writes, token)
    finally:
        writes.close()
    if report.stopped_early:
        return None
    crash_point("collect.after_rows")
    # Before COLLECTED, so the job cannot finalize between the two; idempotent.
    plan = retry.stage_retries(rt, rt.repo.require_batch(batch_id))
    report.retried = len(plan.keys)
    crash_point("collect.after_retry_staged")
    rt.repo.move_batch(
        batch_id,
        BatchState.COLLECTED,
        expect=BATCH_PROVIDER_TERMINAL,
        change=lambda _b: {"updated_at": rt.now()},
    )
    log.info("batch collected", extra={k: v for k, v in vars(report).items() if k != "batch_id"})
    crash_point("collect.after_collected")
    files_store.release_request_file(rt, seen, rt.batch_provider(batch))
    return plan


def end_unknown_batch(
    rt: Runtime, batch: BatchRecord, why: str, *, announce: bool = True
) -> BatchRecord:
    """A RUNNING batch the provider no longer knows ends FAILED with no output (its items
    then follow the retry rules). Idempotent; announces the batch for collection."""
    now = rt.now()
    moved = rt.repo.move_batch(
        batch.batch_id,
        BatchState.FAILED,
        expect={BatchState.RUNNING},
        change=lambda _b: {
            "provider_state": PROVIDER_GONE,
            "provider_error": why,
            "last_error": why,
            "finished_at": now,
            "updated_at": now,
        },
    )
    if moved.moved:
        log.error("the provider no longer knows this batch; it ends FAILED", extra={"why": why})
        if announce:
            submit.publish_batch_done(rt, moved.record)
    return moved.record


def _refresh(rt: Runtime, batch: BatchRecord) -> ProviderBatch | None:
    """The provider's view of a batch we were told is done, or None if it is not done."""
    if batch.provider_name is None:
        # Failed before the provider ever accepted it: there is nothing to download.
        return None if batch.state not in BATCH_PROVIDER_TERMINAL else _no_output(batch)
    if batch.provider_state == PROVIDER_GONE and batch.state in BATCH_PROVIDER_TERMINAL:
        return _no_output(batch)
    try:
        seen = rt.batch_provider(batch).get(batch.provider_name)
    except NotFound as exc:
        why = f"the provider no longer knows batch {batch.provider_name}: {exc}"
        if batch.state is BatchState.RUNNING:
            return _no_output(end_unknown_batch(rt, batch, why, announce=False))
        if batch.state in BATCH_PROVIDER_TERMINAL:
            # Finished, then deleted before we downloaded it: its rows are lost.
            gone = rt.repo.patch_batch(
                batch.batch_id,
                lambda _b: {"provider_state": PROVIDER_GONE, "provider_error": why},
            )
            return _no_output(gone)
        raise
    if seen.state not in BATCH_PROVIDER_TERMINAL:
        log.info(
            "batch-done signal for a batch still %s; the tick will recheck", seen.provider_state
        )
        return None
    if batch.state not in BATCH_PROVIDER_TERMINAL:
        rt.repo.move_batch(
            batch.batch_id,
            seen.state,
            expect={BatchState.RUNNING, BatchState.SUBMITTING},
            change=lambda _b: {
                "provider_state": seen.provider_state,
                "provider_error": seen.error,
                "finished_at": rt.now(),
                "updated_at": rt.now(),
            },
        )
    return seen


def _no_output(batch: BatchRecord) -> ProviderBatch:
    return ProviderBatch(
        name="",
        display_name=batch.display_name,
        state=batch.state,
        provider_state=batch.provider_state or batch.state.value,
        error=batch.provider_error,
        output=None,
    )


def _collect_rows(
    rt: Runtime,
    batch: BatchRecord,
    seen: ProviderBatch,
    report: CollectReport,
    should_stop: Callable[[], bool],
    writes: Writes,
    token: str,
) -> None:
    expected = rt.repo.items_of_batch(batch)
    done = {key for key, item in expected.items() if item.state in ITEM_TERMINAL}
    pending: list[ItemRecord] = []
    # (job, key, mime type) of each image written since the last checkpoint: the next
    # thumbnails message of each job lists them.
    written: list[tuple[str, str, str]] = []
    report.resumed_from = cursor = batch.cursor
    results = rt.batch_provider(batch).iter_results
    opened = results(seen, start_line=cursor) if seen.output else iter(())
    with closed_after(opened) as rows:
        for row in rows:
            cursor = row.line_no + 1
            report.rows += 1
            applied = _apply_row(rt, row, expected, done, report, writes, written)
            if applied is not None:
                key, updated = applied
                pending.append(updated)
                expected[key] = updated
                done.add(key)
            if report.rows % CHECKPOINT_ROWS == 0:
                _checkpoint(rt, batch, pending, cursor, writes, written, token)
                pending.clear()
                written.clear()
                if should_stop():
                    report.stopped_early = True
                    log.warning(
                        "stopping before the deadline; the batch will be resumed",
                        extra={"cursor": cursor},
                    )
                    return
    # Keys the provider never answered for: a failed, expired or cancelled batch keeps
    # whatever outputs it has and the rest fail here; a SUCCEEDED batch with a missing
    # line is a provider defect we surface rather than hide.
    why = _missing_reason(seen)
    for key, item in expected.items():
        if key in done:
            continue
        report.missing += 1
        pending.append(
            item.model_copy(
                update={
                    "state": ItemState.FAILED,
                    "reason": why,
                    "updated_at": rt.now(),
                }
            )
        )
    for item in pending:
        report.by_state[item.state.value] = report.by_state.get(item.state.value, 0) + 1
    _checkpoint(rt, batch, pending, cursor, writes, written, token)


@contextmanager
def closed_after(rows: Iterator[ResultRow]) -> Iterator[Iterator[ResultRow]]:
    """The rows, with their download closed when the block ends, however it ends (a
    generator left open would be closed later by the garbage collector, at any moment)."""
    try:
        yield rows
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _missing_reason(seen: ProviderBatch) -> str:
    # The retry path recognises these reasons as "worth another attempt".
    if seen.state is BatchState.SUCCEEDED:
        return retry.MISSING_SUCCEEDED
    detail = f": {seen.error}" if seen.error else ""
    return f"{retry.NO_OUTPUT_PREFIX}{seen.state.value}{detail}"


def _apply_row(
    rt: Runtime,
    row: ResultRow,
    expected: dict[str, ItemRecord],
    done: set[str],
    report: CollectReport,
    writes: Writes,
    written: list[tuple[str, str, str]],
) -> tuple[str, ItemRecord] | None:
    """The row's item as it now stands, under the key the batch's files give it."""
    if row.row is None:
        log.error("unparseable result line", extra={"line": row.line_no, "error": row.malformed})
        return None
    outcome = classify_row(row.row)
    key = outcome.key
    if key is None or key not in expected:
        report.unknown_keys += 1
        log.error(
            "result line for a key this batch did not submit",
            extra={"line": row.line_no, "key": key},
        )
        return None
    if key in done:
        # Either the provider sent two lines for one key, or this line was applied before
        # a crash and is being replayed; in both cases the first answer stands.
        report.duplicates += 1
        log.warning("second output for a key; keeping the first", extra={"key": key})
        return None
    item = expected[key]
    return key, _item_from_outcome(rt, item, outcome, report, writes, written)


def _item_from_outcome(
    rt: Runtime,
    item: ItemRecord,
    outcome: Outcome,
    report: CollectReport,
    writes: Writes,
    written: list[tuple[str, str, str]],
) -> ItemRecord:
    update = outcome_fields(rt, item, outcome, Lane.BATCH)
    if outcome.kind is OutcomeKind.IMAGE and outcome.image is not None:
        mime = outcome.mime_type or "image/png"
        name, located = image_location(rt, item, mime)
        image = outcome.image
        writes.submit(lambda: write_image(rt, item, name, image, mime), write_cost(image))
        update.update(located)
        written.append((item.job_id, item.key, mime))
        report.images += 1
    return item.model_copy(update=update)


def _checkpoint(
    rt: Runtime,
    batch: BatchRecord,
    items: list[ItemRecord],
    cursor: int,
    writes: Writes,
    written: list[tuple[str, str, str]],
    token: str,
) -> None:
    # Images first, then the thumbnails request, items, cursor: after a crash between any
    # two, the rows are applied again (harmless), never skipped. The request goes out once
    # its images are stored (so every listed image exists) and before the items turn
    # terminal: a replay after a crash re-applies only rows whose items are not terminal,
    # so publishing after the items could lose a request; publishing before may ask twice,
    # which rewrites the same thumbnails.
    writes.drain()
    current = rt.repo.require_batch(batch.batch_id)
    if current.lease_owner != token:
        raise _LeaseLost()
    by_job: dict[str, list[tuple[str, str]]] = {}
    for job_id, key, mime in written:
        by_job.setdefault(job_id, []).append((key, mime))
    for job_id, images in by_job.items():
        thumbnails.publish_request(rt, job_id, batch.batch_id, images)
    if items:
        rt.repo.put_items(items)
        # After the images and items, so an entry never points at an image not yet there.
        cache.remember(rt, items)
    now = rt.now()

    def advance(b: BatchRecord) -> dict[str, Any] | None:
        if b.lease_owner != token:
            return None
        # Renewing the lease here keeps it while we make progress; the cursor only moves on.
        return {"cursor": max(cursor, b.cursor), "updated_at": now, "lease_until": now + LEASE}

    if rt.repo.patch_batch(batch.batch_id, advance).lease_owner != token:
        raise _LeaseLost()
