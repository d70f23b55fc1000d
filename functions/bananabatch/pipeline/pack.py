"""The batch window's packing (issue 21 point 4): at the window, the waiting batches of all
files are packed into shared provider batches per (provider, model), while each file keeps
its own job, items, images, summary and completion message.

What a shared batch is. A batch record whose `members` lists the jobs whose lines it
carries; its job_id is the pack's id (no job record has it), its request file keys each
line `<job_id>/<key>`, and each line's item stays in its own job, pointing at the shared
batch (item.batch_id). Everything that reads a batch's items reads them through
Repo.items_of_batch, which gathers them from the member jobs under those keys, so the
ledger (QUEUED -> SUBMITTING before create, reconcile by display name), the collector
(images under each item's own job, the cursor, the lease), the retry path (a retry of a
shared batch is a shared batch of the members with lines to retry) and the watchdog work
on a shared batch as on any other. Costs are per item, so each job pays for its own lines.

Packing, made safe against a crash at any step and against two ticks at once:
1. claim: each waiting batch is claimed for the pack with a conditional write (QUEUED, not
   claimed, never tried) that sets packed_into; from then on no submitter, cancel or other
   pack touches it (submit_queued skips it), and only this module moves it;
2. its items are made from its manifest, with the usual in-flight claims and cache
   (pipeline/claims.py: a line another job's request or the cache serves is set apart);
   skipped once the batch's items exist, so a repeat never filters its file twice;
3. the shared request files are written, one streaming pass over the sources' files in
   admission order, cut by core/pack.py within the provider's limits; a file whose batch
   record exists is final and never written again;
4. each item is pointed at its shared batch;
5. the shared batch records are created (create-if-absent), QUEUED: only now can they be
   submitted, with every line's item in place;
6. each source batch ends COLLECTED with provider_state PACKED (nothing of its own left).
A repeat after a crash finds the claimed sources (QUEUED with packed_into) and completes
the same pack: the order and the cut depend only on them.

Who may stop a shared batch. One job's cancel must not stop the others' paid work: a
member's cancel leaves the shared batch alone; its lines are dropped when the batch is
claimed for submission (filter_stopped: items FAILED, lines out of the request file), and
once the batch is at the provider they are still collected (paid results are kept) but not
retried. Only when no member may spend any more is the shared batch cancelled. A model
that the provider stops serving fails a shared batch's lines without the fallback model
(the fallback's extra cost is reserved per job).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from bananabatch.core import pack as plan
from bananabatch.core import records as rec
from bananabatch.core.catalog import Provider, expected_result_bytes
from bananabatch.core.planning import PlanLimits
from bananabatch.core.records import BatchRecord, JobRecord
from bananabatch.core.states import ITEM_TERMINAL, BatchState, ItemState
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import claims
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.twotier import store as twotier_store

log = get_logger(__name__)

# provider_state of a job's planned batch whose lines a pack took.
PACKED: Final = "PACKED"
STOPPED_REASON: Final = (
    "not submitted: its job was cancelled or ended before the shared batch was sent"
)

Jobs = dict[str, JobRecord | None]


def provider_of_batch(batch: BatchRecord) -> str:
    return batch.provider or Provider.GEMINI.value


def may_pack(batch: BatchRecord, now: datetime) -> bool:
    """Cheap test, on the batch alone, of whether packing has anything to do with it: claimed
    by a pack, or a first planned attempt whose hold has just run out (pack_due then reads
    its job to see whether that hold was the window)."""
    if batch.packed_into is not None:
        return True
    return (
        not batch.members
        and batch.attempt == 1
        and batch.submit_attempts == 0
        and batch.manifest_object is not None
        and not batch.items_materialized
        and batch.next_submit_after is not None
        and batch.next_submit_after <= now
    )


def pack_due(rt: Runtime, queued: Iterable[BatchRecord]) -> int:
    """Complete the packs a crash interrupted, then pack the batches whose window has come.
    Returns how many shared batches exist for them afterwards."""
    now = rt.now()
    claimed: dict[str, list[BatchRecord]] = {}
    fresh: list[BatchRecord] = []
    for batch in queued:
        if batch.packed_into is not None:
            claimed.setdefault(batch.packed_into, []).append(batch)
        elif may_pack(batch, now):
            fresh.append(batch)
    made = 0
    for pack_id, sources in claimed.items():
        with labels(pack_id=pack_id):
            made += complete(rt, pack_id, sources)
    jobs: Jobs = {}
    waiting = [w for batch in fresh if (w := _waiting(rt, batch, jobs)) is not None]
    waiting.sort(key=lambda w: _order(jobs, w))
    job_of = {w.batch_id: w.job_id for w in waiting}
    for choice in plan.choose(waiting, PlanLimits.per_provider(rt.settings)):
        job = jobs[job_of[choice.sources[0]]]
        assert job is not None
        assert job.window_at is not None
        pack_id = rec.pack_id_for(job.window_at, choice.provider, choice.model, choice.sources)
        with labels(pack_id=pack_id):
            sources = [b for b in (_claim(rt, s, pack_id) for s in choice.sources) if b]
            crash_point("pack.after_claim")
            log.info(
                "packing the window's batches into shared batches",
                extra={
                    "model": choice.model,
                    "batches_before": choice.was,
                    "batches_after": choice.batches,
                    "claimed": len(sources),
                },
            )
            made += complete(rt, pack_id, sources)
    return made


def _order(jobs: Jobs, waiting: plan.Waiting) -> tuple[datetime, str, str]:
    job = jobs[waiting.job_id]
    assert job is not None
    return (job.created_at, job.job_id, waiting.batch_id)


def _waiting(rt: Runtime, batch: BatchRecord, jobs: Jobs) -> plan.Waiting | None:
    """The batch as a candidate for a pack, if it waited for its job's window."""
    if batch.job_id not in jobs:
        jobs[batch.job_id] = rt.repo.get_job(batch.job_id)
    job = jobs[batch.job_id]
    if (
        job is None
        or not job.may_spend
        or job.window_at is None
        or batch.next_submit_after != job.window_at
        or twotier_store.spec_of(job) is not None
    ):
        return None
    return plan.Waiting(
        batch_id=batch.batch_id,
        job_id=batch.job_id,
        provider=provider_of_batch(batch),
        model=batch.model,
        request_count=batch.request_count,
        request_bytes=batch.request_bytes,
        expected_output_bytes=batch.expected_output_bytes,
    )


def _claim(rt: Runtime, batch_id: str, pack_id: str) -> BatchRecord | None:
    def take(b: BatchRecord) -> dict[str, str] | None:
        free = (
            b.state is BatchState.QUEUED
            and b.packed_into is None
            and b.submit_attempts == 0
            and not b.items_materialized
        )
        return {"packed_into": pack_id} if free else None

    after = rt.repo.patch_batch(batch_id, take)
    return after if after.packed_into == pack_id and after.state is BatchState.QUEUED else None


@dataclass
class _Line:
    job_id: str
    key: str
    size: int
    output_bytes: int


@dataclass
class _Lines:
    lines: list[_Line] = field(default_factory=list)


def complete(rt: Runtime, pack_id: str, sources: list[BatchRecord]) -> int:
    """Steps 2 to 6 of the module's docstring for the claimed sources; idempotent."""
    if not sources:
        return 0
    sources = sorted(sources, key=lambda b: (b.created_at, b.batch_id))
    ready: list[BatchRecord] = []
    for source in sources:
        with labels(job_id=source.job_id, batch_id=source.batch_id):
            if not source.items_materialized:
                source = claims.materialize_for_submission(rt, source, ItemState.PENDING)
                crash_point("pack.after_materialize")
            ready.append(rt.repo.require_batch(source.batch_id))
    first = ready[0]
    limits = PlanLimits.per_provider(rt.settings)(first.model)
    found = _read_lines(rt, ready)
    cut = plan.cut([(line.size, line.output_bytes) for line in found.lines], limits)
    ids = [rec.batch_id_for(pack_id, n) for n in range(cut.batches)]
    exists = {n for n, batch_id in enumerate(ids) if rt.repo.get_batch(batch_id) is not None}
    sizes = _write_files(rt, pack_id, ready, cut, exists)
    crash_point("pack.after_files")
    _point_items(rt, found.lines, cut, ids)
    crash_point("pack.after_items")
    now = rt.now()
    for n, batch_id in enumerate(ids):
        if n in exists:
            continue
        lines = [line for line, place in zip(found.lines, cut.places, strict=True) if place == n]
        rt.repo.create_batch(
            BatchRecord(
                batch_id=batch_id,
                job_id=pack_id,
                index=n,
                attempt=1,
                state=BatchState.QUEUED,
                model=first.model,
                provider=first.provider,
                display_name=rec.display_name_for(batch_id),
                request_object=rec.request_object_name(pack_id, n),
                request_count=len(lines),
                request_bytes=sizes[n],
                expected_output_bytes=sum(line.output_bytes for line in lines),
                members=list(dict.fromkeys(line.job_id for line in lines)),
                created_at=now,
                updated_at=now,
            )
        )
    crash_point("pack.after_batches")
    for source in ready:
        rt.repo.move_batch(
            source.batch_id,
            BatchState.COLLECTED,
            expect={BatchState.QUEUED},
            change=lambda _b: {
                "provider_state": PACKED,
                "finished_at": now,
                "updated_at": now,
                "next_submit_after": None,
            },
        )
    log.info(
        "window batches packed",
        extra={"sources": len(ready), "shared_batches": len(ids), "lines": len(found.lines)},
    )
    return len(ids)


def _source_lines(rt: Runtime, source: BatchRecord) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(key, request) of each line the source still sends itself."""
    decode = rt.batch_provider(source).decode_request
    with rt.objects.open_read(rt.settings.results_bucket, source.request_object) as stream:
        for raw in stream:
            if raw.strip():
                key, request = decode(json.loads(raw))
                yield key, request


def _encoded(
    rt: Runtime, source: BatchRecord, job_id: str, key: str, request: Mapping[str, Any]
) -> bytes:
    line = rt.batch_provider(source).encode_request(rec.pack_key(job_id, key), request)
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _read_lines(rt: Runtime, sources: list[BatchRecord]) -> _Lines:
    """Every line the sources send, in order, with its size in a shared file."""
    found = _Lines()
    for source in sources:
        keys: list[str] = []
        sizes: list[int] = []
        for key, request in _source_lines(rt, source):
            keys.append(key)
            sizes.append(len(_encoded(rt, source, source.job_id, key, request)))
        items = rt.repo.get_items(source.job_id, keys)
        for key, size in zip(keys, sizes, strict=True):
            item = items.get(key)
            out = expected_result_bytes(source.model, item.image_size if item else None)
            found.lines.append(_Line(source.job_id, key, size, out))
    return found


def _write_files(
    rt: Runtime, pack_id: str, sources: list[BatchRecord], cut: plan.Cut, final: set[int]
) -> dict[int, int]:
    """Write each shared batch's request file not already final; returns the sizes."""
    sizes: dict[int, int] = {}
    places = iter(cut.places)
    bucket = rt.settings.results_bucket
    writing: tuple[int, list[bytes]] | None = None

    def flush() -> None:
        if writing is None:
            return
        n, chunks = writing
        data = b"".join(chunks)
        sizes[n] = len(data)
        if n not in final:
            name = rec.request_object_name(pack_id, n)
            rt.objects.write_bytes(bucket, name, data, content_type="application/jsonl")

    for source in sources:
        for key, request in _source_lines(rt, source):
            n = next(places)
            if writing is None or writing[0] != n:
                flush()
                writing = (n, [])
            writing[1].append(_encoded(rt, source, source.job_id, key, request))
    flush()
    return sizes


def _point_items(rt: Runtime, lines: list[_Line], cut: plan.Cut, ids: list[str]) -> None:
    """Each line's item points at its shared batch."""
    by_job: dict[str, dict[str, str]] = {}
    for line, place in zip(lines, cut.places, strict=True):
        by_job.setdefault(line.job_id, {})[line.key] = ids[place]
    now = rt.now()
    for job_id, targets in by_job.items():
        items = rt.repo.get_items(job_id, list(targets))
        rt.repo.put_items(
            item.model_copy(update={"batch_id": targets[key], "updated_at": now})
            for key, item in items.items()
            if item.batch_id != targets[key] and item.state not in ITEM_TERMINAL
        )


# --- shared batches after packing ------------------------------------------------------


def stopped_members(rt: Runtime, batch: BatchRecord, jobs: Jobs) -> set[str]:
    """The members of a shared batch that may no longer spend (cancelled, ended, gone)."""
    stopped: set[str] = set()
    for job_id in batch.members:
        if job_id not in jobs:
            jobs[job_id] = rt.repo.get_job(job_id)
        job = jobs[job_id]
        if job is None or not job.may_spend:
            stopped.add(job_id)
    return stopped


def all_stopped(rt: Runtime, batch: BatchRecord, jobs: Jobs) -> bool:
    return bool(batch.members) and stopped_members(rt, batch, jobs) == set(batch.members)


def filter_stopped(rt: Runtime, batch: BatchRecord) -> BatchRecord:
    """A shared batch just claimed for submission (SUBMITTING, nothing created yet) leaves
    out the lines of members that may no longer spend: their items end FAILED, the request
    file is rewritten without them (from a kept copy, so a repeat filters the original
    again) and the members and counts follow. Idempotent; a stopped job never spends
    again, so a repeat decides the same."""
    if not batch.members:
        return batch
    stopped = stopped_members(rt, batch, {})
    if not stopped:
        return batch
    now = rt.now()
    items = rt.repo.items_of_batch(batch)
    rt.repo.put_items(
        item.model_copy(
            update={"state": ItemState.FAILED, "reason": STOPPED_REASON, "updated_at": now}
        )
        for key, item in items.items()
        if item.job_id in stopped and item.state not in ITEM_TERMINAL
    )
    bucket = rt.settings.results_bucket
    staged = claims.staged_object_name(batch)
    if rt.objects.stat(bucket, staged) is None:
        rt.objects.copy(bucket, batch.request_object, bucket, staged)
    kept: list[bytes] = []
    with rt.objects.open_read(bucket, staged) as stream:
        for raw in stream:
            if not raw.strip():
                continue
            key, _request = rt.batch_provider(batch).decode_request(json.loads(raw))
            if rec.split_pack_key(key)[0] not in stopped:
                kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
    data = b"".join(kept)
    rt.objects.write_bytes(bucket, batch.request_object, data, content_type="application/jsonl")
    members = [m for m in batch.members if m not in stopped]
    log.warning(
        "lines of stopped jobs left out of the shared batch",
        extra={"stopped": sorted(stopped), "kept": len(kept)},
    )
    return rt.repo.patch_batch(
        batch.batch_id,
        lambda _b: {
            "members": members or _b.members,
            "request_count": len(kept),
            "request_bytes": len(data),
        },
    )


def shared_batches_of(
    rt: Runtime, job_id: str, states: Iterable[BatchState] | None = None
) -> list[BatchRecord]:
    """The shared batches that carry (or carried) lines of the job, retries included."""
    packs = {b.packed_into for b in rt.repo.batches(job_id=job_id) if b.packed_into}
    wanted = list(states) if states is not None else None
    return [
        batch
        for pack_id in sorted(packs)
        for batch in rt.repo.batches(job_id=pack_id, states=wanted)
        if job_id in batch.members
    ]


OPEN_STATES: Final = frozenset(BatchState) - {BatchState.COLLECTED}


def open_shared(rt: Runtime, job_id: str) -> int:
    """How many shared batches carrying the job's lines are not collected yet."""
    return len(shared_batches_of(rt, job_id, OPEN_STATES))


def note(rt: Runtime, job_id: str) -> list[dict[str, object]]:
    """What `status` says of the shared batches carrying the job's lines."""
    shown: list[dict[str, object]] = []
    for batch in shared_batches_of(rt, job_id):
        mine = sum(1 for item in rt.repo.items_of_batch(batch).values() if item.job_id == job_id)
        shown.append(
            {
                "batch_id": batch.batch_id,
                "state": batch.state.value,
                "lines": batch.request_count,
                "lines_of_this_job": mine,
                "jobs": len(batch.members),
            }
        )
    return shown
