"""Upload handling: one JSONL object in the inbox becomes one job.

The whole input is streamed once: each line is validated, placed in a batch by the
planner and written straight into that batch's staged request file, so memory does not
grow with the file. Nothing here spends money; submission starts only after the job has
moved to RUNNING, which is why a crash anywhere in intake can simply be redone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import IO, Any

from bananabatch.config import env_name_for
from bananabatch.core import records as rec
from bananabatch.core.catalog import expected_result_bytes
from bananabatch.core.estimate import cache_enabled_for, lane_of
from bananabatch.core.intake import (
    AcceptedLine,
    IntakeLimits,
    LineParser,
    RejectedLine,
    content_hash,
    iter_raw_lines,
)
from bananabatch.core.planning import BatchPlanner, PlanLimits, PlannedBatch
from bananabatch.core.pricing import Lane
from bananabatch.core.records import (
    BatchRecord,
    Costs,
    ItemRecord,
    JobRecord,
    SourceObject,
)
from bananabatch.core.states import BatchState, ItemState, JobState
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import budget, cache, finalize
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.urgent import urgent_object_name

log = get_logger(__name__)

ITEM_FLUSH = 500
REJECTED_NAME = "rejected.jsonl"


@dataclass
class _OpenBatch:
    index: int
    model: str
    sink: IO[bytes]
    count: int = 0
    bytes: int = 0


@dataclass
class _IntakeTally:
    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    # What will be paid: batch lines at the batch price, urgent lines at the standard one.
    estimated_batch_usd: float = 0.0
    estimated_standard_usd: float = 0.0
    cache_saved_usd: float = 0.0
    urgent: int = 0
    batches: list[PlannedBatch] = field(default_factory=list)


def handle_upload(rt: Runtime, source: SourceObject, metadata: Mapping[str, str]) -> str | None:
    """Create and stage the job for an uploaded object. Returns the job id, or None when
    the object is not a JSONL file. A redelivered event does nothing."""
    if not source.name.endswith(".jsonl"):
        log.info("ignoring non-JSONL upload", extra={"object": source.uri})
        return None
    job_id = rec.job_id_for(source)
    with labels(job_id=job_id):
        now = rt.now()
        created = rt.repo.create_job(
            JobRecord(
                job_id=job_id,
                state=JobState.RECEIVED,
                source=source,
                created_at=now,
                updated_at=now,
                default_model=metadata.get("model") or rt.settings.default_model,
                results_prefix=rt.results_uri(rec.results_prefix(job_id)),
                options={k: v for k, v in metadata.items() if k.startswith("bananabatch-")},
            )
        )
        crash_point("intake.after_job_created")
        job = rt.repo.require_job(job_id)
        if not created and job.state is not JobState.RECEIVED:
            log.info("duplicate upload event: job already %s", job.state.value)
            return job_id
        if not created:
            # A previous delivery died before the job left RECEIVED, so nothing was
            # submitted yet: staging again is safe because it is deterministic.
            log.warning("resuming an intake that did not finish")
        log.info("intake started", extra={"object": source.uri})
        _stage(rt, job)
        return job_id


def _stage(rt: Runtime, job: JobRecord) -> None:
    settings = rt.settings
    info = rt.objects.stat(source_bucket(job), job.source.name)
    if info is None:
        # The object was deleted after the event fired: nothing to do, and retrying cannot help.
        _fail_job(rt, job, f"input object {job.source.uri} no longer exists")
        return
    if info.size > settings.max_input_bytes:
        _fail_job(
            rt,
            job,
            f"input is {info.size} bytes; the configured limit is {settings.max_input_bytes}"
            f" bytes ({_env_hint('max_input_bytes')})",
        )
        return

    tally = _read_and_stage(rt, job)
    if tally.lines == 0:
        _fail_job(rt, job, "the file is empty: expected one JSON object per line")
        return

    costs = Costs(
        estimated_usd=round(tally.estimated_batch_usd, 6),
        standard_equivalent_usd=round(tally.estimated_standard_usd, 6),
        cache_saved_usd=round(tally.cache_saved_usd, 6),
    )
    counts = {ItemState.REJECTED.value: tally.rejected, ItemState.PENDING.value: tally.accepted}
    staged = {
        "line_count": tally.lines,
        "accepted_count": tally.accepted,
        "rejected_count": tally.rejected,
        "batch_count": len(tally.batches),
        "counts": counts,
        "costs": costs,
    }
    hold, day = budget.admit(rt, job, costs.estimated_usd) if tally.accepted else (None, None)
    if hold is not None:
        # Over a cap: nothing is reserved or submitted until a person approves or rejects.
        held = rt.repo.move_job(
            job.job_id,
            JobState.HELD,
            expect={JobState.RECEIVED},
            change=lambda _j: {
                **staged,
                "error": hold,
                "completion_pending": True,
                "updated_at": rt.now(),
            },
        )
        log.warning("job held over budget: %s", hold)
        if held.moved:
            finalize.publish_completion_if_pending(rt, job.job_id)
        return
    moved = rt.repo.move_job(
        job.job_id,
        JobState.RUNNING,
        expect={JobState.RECEIVED},
        change=lambda _j: {**staged, "budget_day": day, "updated_at": rt.now()},
    )
    log.info(
        "intake finished",
        extra={
            "lines": tally.lines,
            "accepted": tally.accepted,
            "rejected": tally.rejected,
            "batches": len(tally.batches),
            "estimated_usd": costs.estimated_usd,
        },
    )
    if not moved.moved:
        return
    # A crash here leaves queued batches and a RUNNING job; the tick submits them.
    crash_point("intake.after_stage")
    if tally.accepted == 0:
        finalize.finalize_job_if_done(rt, job.job_id)
        return
    budget.start_running(rt, job.job_id)


def source_bucket(job: JobRecord) -> str:
    return job.source.bucket


def _read_and_stage(rt: Runtime, job: JobRecord) -> _IntakeTally:
    settings = rt.settings
    limits = IntakeLimits()
    parser = LineParser(default_model=job.default_model, limits=limits)
    planner = BatchPlanner(
        PlanLimits(
            max_requests=settings.max_requests_per_batch,
            max_request_bytes=settings.max_batch_bytes,
            max_output_bytes=settings.max_batch_output_bytes,
        )
    )
    tally = _IntakeTally()
    items: list[ItemRecord] = []
    use_cache = cache_enabled_for(job.options)
    # First key of each request seen in this file, for in-file dedup. It grows with the
    # number of distinct cacheable requests (about 100 bytes each).
    first_key: dict[str, str] = {}
    urgent_sink: IO[bytes] | None = None
    open_batches: dict[int, _OpenBatch] = {}
    results = settings.results_bucket

    with ExitStack() as stack:
        source = stack.enter_context(rt.objects.open_read(source_bucket(job), job.source.name))
        rejected_sink = stack.enter_context(
            rt.objects.open_write(
                results,
                rec.results_prefix(job.job_id) + REJECTED_NAME,
                content_type="application/jsonl",
            )
        )
        # Staged request files stay open while their batch fills; each is closed (and so
        # published) as soon as the planner closes its batch.
        batch_stack = stack.enter_context(ExitStack())
        sinks: dict[int, ExitStack] = {}

        def close_batch(planned: PlannedBatch) -> None:
            sinks.pop(planned.index).close()
            open_batches.pop(planned.index, None)
            _record_batch(rt, job, planned)
            tally.batches.append(planned)

        for line_no, raw in iter_raw_lines(source, max_line_bytes=limits.max_line_bytes):
            parsed = parser.parse(line_no, raw)
            if parsed is None:
                # Blank lines are layout, not input: they get no item and no count.
                continue
            tally.lines += 1
            if isinstance(parsed, RejectedLine):
                tally.rejected += 1
                rejected_sink.write(_rejected_json(parsed))
                continue
            tally.accepted += 1
            digest = content_hash(parsed)
            if use_cache and parsed.cache:
                served = _served_without_generating(rt, job, parsed, digest, first_key, tally)
                if served is not None:
                    items.append(served)
                    continue
                first_key[digest] = parsed.key
            if lane_of(parsed) is Lane.STANDARD:
                if urgent_sink is None:
                    urgent_sink = stack.enter_context(
                        rt.objects.open_write(
                            results,
                            urgent_object_name(job.job_id),
                            content_type="application/jsonl",
                        )
                    )
                urgent_sink.write(_urgent_json(parsed))
                items.append(_item_for(rt, job, parsed, None, tally, digest))
                continue
            line = (
                json.dumps(
                    rt.provider.encode_request(parsed.key, parsed.request),
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
                + "\n"
            ).encode()
            placement = planner.add(
                model=parsed.model,
                line_bytes=len(line),
                expected_output_bytes=expected_result_bytes(parsed.model, parsed.image_size),
            )
            for planned in placement.closed:
                close_batch(planned)
            batch = open_batches.get(placement.batch_index)
            if batch is None:
                sink_stack = ExitStack()
                sink = sink_stack.enter_context(
                    rt.objects.open_write(
                        results,
                        rec.request_object_name(job.job_id, placement.batch_index),
                        content_type="application/jsonl",
                    )
                )
                sinks[placement.batch_index] = sink_stack
                batch_stack.callback(sink_stack.close)
                batch = _OpenBatch(placement.batch_index, parsed.model, sink)
                open_batches[placement.batch_index] = batch
            batch.sink.write(line)
            batch.count += 1
            batch.bytes += len(line)
            items.append(_item_for(rt, job, parsed, placement.batch_index, tally, digest))
            if len(items) >= ITEM_FLUSH:
                rt.repo.put_items(items)
                items.clear()
        for planned in planner.finish():
            close_batch(planned)
    if items:
        rt.repo.put_items(items)
    return tally


def _served_without_generating(
    rt: Runtime,
    job: JobRecord,
    line: AcceptedLine,
    digest: str,
    first_key: dict[str, str],
    tally: _IntakeTally,
) -> ItemRecord | None:
    """A CACHED item for a cache hit, a pending duplicate for a repeat within the file
    (it copies the first occurrence's outcome when the job ends), else None."""
    original = first_key.get(digest)
    entry = None if original is not None else cache.lookup(rt, digest)
    if original is None and entry is None:
        return None
    price = rt.prices.estimate_line(line, lane_of(line))
    tally.estimated_standard_usd += rt.prices.estimate_line(line, Lane.STANDARD)
    tally.cache_saved_usd += price
    item = ItemRecord(
        job_id=job.job_id,
        key=line.key,
        line_no=line.line_no,
        state=ItemState.PENDING,
        model=line.model,
        aspect_ratio=line.aspect_ratio,
        image_size=line.image_size,
        prompt_preview=line.prompt_preview,
        request_hash=digest,
        estimated_usd=0.0,
        saved_usd=round(price, 6),
        lane=cache.LANE_DUPLICATE,
        duplicate_of=original,
        updated_at=rt.now(),
    )
    if entry is None:
        return item
    # Copying costs nothing, so it may happen before the budget decision.
    uri = cache.copy_into(rt, job.job_id, line.key, entry)
    return item.model_copy(
        update={
            "state": ItemState.CACHED,
            "lane": cache.LANE_CACHE,
            "image_uri": uri,
            "mime_type": entry.mime_type,
            "reason": f"cached: same request as job {entry.job_id} key {entry.key}",
        }
    )


def _urgent_json(line: AcceptedLine) -> bytes:
    doc = {"key": line.key, "model": line.model, "request": line.request}
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _item_for(
    rt: Runtime,
    job: JobRecord,
    line: AcceptedLine,
    batch_index: int | None,
    tally: _IntakeTally,
    digest: str,
) -> ItemRecord:
    lane = lane_of(line)
    standard_price = rt.prices.estimate_line(line, Lane.STANDARD)
    price = standard_price if lane is Lane.STANDARD else rt.prices.estimate_line(line, lane)
    tally.estimated_batch_usd += price
    tally.estimated_standard_usd += standard_price
    tally.urgent += lane is Lane.STANDARD
    return ItemRecord(
        job_id=job.job_id,
        key=line.key,
        line_no=line.line_no,
        state=ItemState.PENDING,
        model=line.model,
        aspect_ratio=line.aspect_ratio,
        image_size=line.image_size,
        prompt_preview=line.prompt_preview,
        request_hash=digest,
        batch_id=None if batch_index is None else rec.batch_id_for(job.job_id, batch_index),
        attempt=1,
        estimated_usd=round(price, 6),
        lane=cache.LANE_BATCH if batch_index is not None else cache.LANE_URGENT,
        updated_at=rt.now(),
    )


def _record_batch(rt: Runtime, job: JobRecord, planned: PlannedBatch) -> None:
    batch_id = rec.batch_id_for(job.job_id, planned.index)
    now = rt.now()
    rt.repo.create_batch(
        BatchRecord(
            batch_id=batch_id,
            job_id=job.job_id,
            index=planned.index,
            attempt=1,
            state=BatchState.QUEUED,
            model=planned.model,
            display_name=rec.display_name_for(batch_id),
            request_object=rec.request_object_name(job.job_id, planned.index),
            request_count=planned.request_count,
            request_bytes=planned.request_bytes,
            expected_output_bytes=planned.expected_output_bytes,
            created_at=now,
            updated_at=now,
            # Not submittable until the job passes the budget check and runs.
            next_submit_after=budget.HOLD_UNTIL,
        )
    )


def _rejected_json(line: RejectedLine) -> bytes:
    doc: dict[str, Any] = {
        "line": line.line_no,
        "key": line.key,
        "field": line.field,
        "reason": line.reason,
        "input": line.raw,
    }
    return (json.dumps(doc, ensure_ascii=False) + "\n").encode()


def _fail_job(rt: Runtime, job: JobRecord, reason: str) -> None:
    log.error("job refused at intake: %s", reason)
    finalize.close_job(rt, job, forced=JobState.FAILED, error=reason)


def _env_hint(field_name: str) -> str:
    return f"set {env_name_for(field_name)} to change it"
