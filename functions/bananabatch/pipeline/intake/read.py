"""The read loop: one pass over the input validates, dedups and places every line.

Per batch-lane line this writes one request line and one manifest line, no state store
document (see core/manifest.py), and takes no in-flight claim: requests are claimed when
their batch is submitted (pipeline/claims.py). Lines are parsed a chunk at a time and
looked up in the dedup cache a chunk at a time; to keep the staged order equal to the
input order, every accepted line waits in its chunk, and the chunk is placed in order once
its lookup is answered. Per line the work is kept to what depends on the line: a simple
line without reference images (nearly all lines) comes as a row of the parser's columns,
and runs of rows of one shape are staged together (core/staging.py). A line that opts out
of the cache (`cache: false`) is staged with no request hash in its manifest entry, so its
batch's submission neither joins it to another job's request nor claims it.
"""

from __future__ import annotations

import gc
import json
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from itertools import groupby
from typing import IO, cast

from bananabatch.core import records as rec
from bananabatch.core.catalog import model_warnings
from bananabatch.core.estimate import cache_enabled_for
from bananabatch.core.intake import (
    AcceptedLine,
    FastLine,
    IntakeLimits,
    LineShape,
    ParsedChunk,
    RejectedLine,
    content_hash,
    encode_json_string,
    iter_line_chunks,
)
from bananabatch.core.intake.seen import TableFull
from bananabatch.core.planning import BatchPlanner, PlanLimits, PlannedBatch
from bananabatch.core.pricing import Lane, LinePrices, price_warnings
from bananabatch.core.records import JobRecord
from bananabatch.core.routing import LaneKind, router_for
from bananabatch.core.staging import (
    IntakeTally,
    Placement,
    ShapeStaging,
    StagedLines,
    request_sizes,
    stage_line,
    stage_rows,
    without_request_hashes,
)
from bananabatch.log import get_logger
from bananabatch.pipeline import cache, lanes
from bananabatch.pipeline.intake import dedup, publish
from bananabatch.pipeline.intake.publish import OpenBatch, Publisher
from bananabatch.pipeline.intake.served import ServedLines
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)

# Lines parsed together, looked up in the dedup cache with one state-store read, and
# waiting for it. Also bounded in input bytes by the read chunk (a line may be up to a
# megabyte), so with LOOKAHEAD a few MB wait at most.
CHUNK_LINES = 4096
# Chunks read ahead of the one being placed, so that a chunk's lookup runs on its own
# thread while the next chunk is parsed: a Firestore read waits on the network, SQLite's
# releases the GIL, and either way the read loop need not wait for it.
LOOKAHEAD = 1
REJECTED_NAME = "rejected.jsonl"

Hits = dict[str, cache.CacheEntry]
# A line outside the columns of a chunk, accepted: the line, its prompt as a JSON string
# (FastLine only), its content hash, and the hash's in-file dedup value (None: the line
# opted out of dedup).
_Waiting = tuple[FastLine | AcceptedLine, str | None, str, int | None]


class _Chunk:
    """Lines read and waiting for their cache lookup: the parser's columns (ParsedChunk),
    each row's in-file dedup mark (None: opted out), and the accepted lines outside the
    columns, each with the number of rows before it. `wanted` and `dedup_marks` are the
    content hashes and marks of every line that takes part in dedup (rows, then others)."""

    __slots__ = ("dedup_marks", "lines", "marks", "others", "wanted")

    def __init__(
        self, lines: ParsedChunk, marks: list[int | None], others: list[tuple[int, _Waiting]]
    ) -> None:
        self.lines = lines
        self.marks = marks
        self.others = others
        wanted, kept = lines.digests, marks
        if None in marks:
            pairs = [(d, m) for d, m in zip(wanted, marks, strict=True) if m is not None]
            wanted, kept = [d for d, _ in pairs], [m for _, m in pairs]
        extra = [(w[2], w[3]) for _, w in others if w[3] is not None]
        if extra:
            wanted = wanted + [d for d, _ in extra]
            kept = kept + [m for _, m in extra]
        self.wanted: list[str] = wanted
        self.dedup_marks: list[int] = cast(list[int], kept)  # no None left


def stage_file(rt: Runtime, job: JobRecord) -> IntakeTally:
    """Read the job's input once and stage it: batch files and records, served lines'
    items, rejected lines. Deterministic, so a redelivered intake stages the same.

    A file with more distinct lines than the dedup budget holds is read again after its
    repeats are counted (pipeline/intake/dedup.py); what it stages is the same."""
    try:
        return _stage_once(rt, job, None)
    except TableFull as full:
        # Outside this block the first pass's tables are garbage (the traceback held them).
        log.warning("intake dedup tables full; counting repeats first", extra={"why": str(full)})
    tables = dedup.after_counting(rt, job, IntakeLimits().max_line_bytes, CHUNK_LINES)
    try:
        return _stage_once(rt, job, tables)
    except TableFull as again:
        raise dedup.overflow(rt, job) from again


def _stage_once(rt: Runtime, job: JobRecord, tables: dedup.Tables | None) -> IntakeTally:
    reader = Reader(rt, job, tables)
    reader.run()
    return reader.tally


class Reader:
    """One pass over the input: validate, dedup, plan, and write the staged files."""

    def __init__(self, rt: Runtime, job: JobRecord, tables: dedup.Tables | None = None) -> None:
        settings = rt.settings
        self.rt = rt
        self.job = job
        self.limits = IntakeLimits()
        # The hashes of the keys (the parser's) and of the requests this file generates, for
        # in-file dedup, in tables bounded by the budget (dedup.py). A duplicate finds its
        # original by request hash when the job ends (cache.resolve_duplicates): a map from
        # hash to first key would take several times the memory.
        self.tables = tables or dedup.in_memory(settings.intake_dedup_bytes)
        self.presized = tables is not None
        self.parser = dedup.new_parser(rt, job, self.tables.keys, references=True)
        self.planner = BatchPlanner(
            PlanLimits.from_settings(settings), limits_for=PlanLimits.per_provider(settings)
        )
        self.prices = LinePrices(rt.prices)
        self.tally = IntakeTally()
        self.use_cache = cache_enabled_for(job.options)
        self.seen = self.tables.requests
        self.open_batches: dict[int, OpenBatch] = {}
        self.plans: dict[LineShape, ShapeStaging] = {}
        self.stack = ExitStack()
        # Async lanes whose breaker is open take no new line (batch at worst takes them).
        shut = lanes.shut_lanes(rt, settings.async_lanes)
        self.router = router_for(settings, rt.prices, shut=shut)
        self.served = ServedLines(rt, job, self.stack, self.prices, self.tally, self.router)
        self.publisher = Publisher(rt, job)
        self.lookups = ThreadPoolExecutor(1, thread_name_prefix="intake-cache-lookup")

    # --- the pass ----------------------------------------------------------------------

    def run(self) -> None:
        rt, job = self.rt, self.job
        with self.stack as stack:
            source = stack.enter_context(rt.objects.open_read(job.source.bucket, job.source.name))
            rejected_sink = stack.enter_context(
                rt.objects.open_write(
                    rt.settings.results_bucket,
                    rec.results_prefix(job.job_id) + REJECTED_NAME,
                    content_type="application/jsonl",
                )
            )
            # On failure, lookups not yet started are dropped and a running one is waited
            # for, so no thread outlives the intake.
            stack.callback(self.lookups.shutdown, wait=True, cancel_futures=True)
            # The loop allocates millions of short-lived tuples and dicts and creates no
            # reference cycles: with the cyclic collector on (when the dedup tables were
            # sets of millions of ints, walked by every full collection) it took a tenth of
            # the loop's time. Reference counting still frees everything as it goes.
            collecting = gc.isenabled()
            gc.disable()
            try:
                self._read(source, rejected_sink)
                for planned in self.planner.finish():
                    self._close_batch(planned)
                self.publisher.finish()
            except BaseException:
                self.publisher.abandon()
                raise
            finally:
                if collecting:
                    gc.enable()
        self.served.finish()
        used, today = self.parser.models_used(), rt.now().date()
        self.tally.warnings = model_warnings(used, today) + price_warnings(
            rt.prices, used, today, rt.settings.price_max_age_days
        )
        log.info(
            "intake read", extra={"lines": self.tally.lines, "batches": len(self.tally.batches)}
        )

    def _read(self, source: IO[bytes], rejected_sink: IO[bytes]) -> None:
        tally = self.tally
        parse_chunk = self.parser.parse_chunk
        # Chunks read whose lookup is still running; see LOOKAHEAD.
        behind: deque[tuple[_Chunk, Future[Hits] | None]] = deque()
        for first, raws in _bounded(
            iter_line_chunks(source, max_line_bytes=self.limits.max_line_bytes), CHUNK_LINES
        ):
            if not self.presized:
                self.presized = True
                dedup.reserve(self.tables, self._source_bytes(), raws)
            parsed = parse_chunk(first, raws)
            others = self._others(parsed, rejected_sink)
            rows = len(parsed.line_nos)
            tally.lines += rows + len(parsed.others)
            tally.accepted += rows + len(others)
            chunk = _Chunk(parsed, self._marks(parsed), others)
            lookup = (
                self.lookups.submit(cache.lookup_many, self.rt, chunk.wanted)
                if chunk.wanted
                else None
            )
            behind.append((chunk, lookup))
            if len(behind) > LOOKAHEAD:
                self._place_chunk(*behind.popleft())
        while behind:
            self._place_chunk(*behind.popleft())

    def _marks(self, parsed: ParsedChunk) -> list[int | None]:
        return dedup.row_marks(parsed, self.use_cache)

    def _source_bytes(self) -> int | None:
        info = self.rt.objects.stat(self.job.source.bucket, self.job.source.name)
        return None if info is None else info.size

    def _others(self, parsed: ParsedChunk, rejected_sink: IO[bytes]) -> list[tuple[int, _Waiting]]:
        """The chunk's lines outside its columns: rejected ones written out, accepted ones
        waiting with their content hash and dedup mark."""
        others: list[tuple[int, _Waiting]] = []
        for row, line in parsed.others:
            if isinstance(line, RejectedLine):
                self.tally.rejected += 1
                rejected_sink.write(_rejected_json(line))
                continue
            encoded = encode_json_string(line.prompt) if isinstance(line, FastLine) else None
            digest = content_hash(line)
            mark = dedup.line_mark(line, digest, self.use_cache)
            others.append((row, (line, encoded, digest, mark)))
        return others

    # --- placing a chunk, in input order -------------------------------------------------

    def _place_chunk(self, chunk: _Chunk, lookup: Future[Hits] | None) -> None:
        """Dedup a chunk's accepted lines against the file so far and the cache (the answer
        of its lookup, one state-store read), then stage each, in input order."""
        hits = lookup.result() if lookup is not None else {}
        seen = self.seen
        # The usual chunk: no cache hit, and no line repeating an earlier one of the file
        # or of the chunk. Then its marks join `seen` in one call, and no line needs a
        # probe of its own.
        clean = not hits and seen.add_all_new(chunk.dedup_marks)
        row = 0
        for at, waiting in chunk.others:
            self._place_rows(chunk, row, at, hits, clean)
            row = at
            self._place_other(waiting, hits, clean)
        self._place_rows(chunk, row, len(chunk.lines.line_nos), hits, clean)

    def _place_other(self, waiting: _Waiting, hits: Hits, clean: bool) -> None:
        line, encoded, digest, mark = waiting
        if mark is not None and not clean and self._served_instead(line, digest, mark, hits):
            return
        if isinstance(line, FastLine):  # one with metadata
            assert encoded is not None
            plan = self._plan(line)
            if plan.lane is Lane.STANDARD and plan.route is not None:
                self.served.urgent(line.accepted(), digest, plan.route)
                return
            staged = plan.stage([line.key], [line.line_no], [line.prompt], [encoded], [digest])
            self._stage(staged if plan.shape.cache else without_request_hashes(staged, [digest]))
        elif (
            route := self.router.route(
                line, native=line.native, has_references=bool(line.reference_images)
            )
        ).kind is not LaneKind.BATCH:
            self.served.urgent(line, digest, route)
        else:
            encode = self.rt.model_provider(line.model).encode_request
            staged = stage_line(line, digest, encode, self.prices)
            self._stage(staged if line.cache else without_request_hashes(staged, [digest]))

    def _served_instead(
        self, line: FastLine | AcceptedLine, digest: str, mark: int, hits: Hits
    ) -> bool:
        """Serve a line from the cache or as a repeat of an earlier line of the file, if it
        is one; otherwise mark it seen. True when served."""
        if hits:
            entry = hits.get(digest)
            if entry is not None:
                # Cache hits stay out of `seen`: a later repeat is a hit too.
                self.served.served(line, digest, entry)
                return True
        if self.seen.add(mark):
            return False
        self.served.served(line, digest, None)
        return True

    def _place_rows(self, chunk: _Chunk, start: int, end: int, hits: Hits, clean: bool) -> None:
        """Stage rows start..end of a chunk's columns, in input order, all at once but for
        the rows that repeat a line or hit the cache, which are served instead."""
        if start >= end:
            return
        lines = chunk.lines
        if not clean:
            self._place_mixed(lines, self._kept(chunk, start, end, hits))
            return
        shapes = lines.shapes
        if shapes[start:end].count(shapes[start]) == end - start:
            # The usual rows: one shape, nothing to serve.
            plan = self._plan(lines.fast_line(start))
            if plan.lane is Lane.BATCH:
                self._stage_rows(lines, range(start, end), [plan])
                return
        self._place_mixed(lines, range(start, end))

    def _place_mixed(self, lines: ParsedChunk, rows: Sequence[int]) -> None:
        """Stage rows of any shapes: the batch-lane ones a run at a time, the urgent ones
        served."""
        plans = list(map(self.plans.get, [lines.shapes[row] for row in rows]))
        if None in plans:
            for at, plan in enumerate(plans):
                if plan is None:
                    plans[at] = self._plan(lines.fast_line(rows[at]))
        staging = cast(list[ShapeStaging], plans)
        if all(plan.lane is Lane.BATCH for plan in set(staging)):
            self._stage_rows(lines, rows, staging)
            return
        for urgent, run in groupby(range(len(rows)), lambda at: staging[at].lane is Lane.STANDARD):
            ats = list(run)
            if urgent:
                for at in ats:
                    row, route = rows[at], staging[at].route
                    assert route is not None
                    self.served.urgent(lines.fast_line(row).accepted(), lines.digests[row], route)
            else:
                self._stage_rows(lines, [rows[at] for at in ats], [staging[at] for at in ats])

    def _kept(self, chunk: _Chunk, start: int, end: int, hits: Hits) -> list[int]:
        """The rows start..end that are not served instead of staged (_served_instead)."""
        lines, marks = chunk.lines, chunk.marks
        digests, served_instead = lines.digests, self._served_instead
        kept: list[int] = []
        for row in range(start, end):
            mark = marks[row]
            if mark is None or not served_instead(lines.fast_line(row), digests[row], mark, hits):
                kept.append(row)
        return kept

    def _stage_rows(
        self, lines: ParsedChunk, rows: Sequence[int], plans: list[ShapeStaging]
    ) -> None:
        """Stage batch-lane rows, consecutive in input order but for served rows; plans
        has each row's shape's staging, or one for all."""
        if not rows:
            return
        if isinstance(rows, range):
            cut = slice(rows.start, rows.stop)
            columns = (
                lines.keys[cut],
                lines.line_nos[cut],
                lines.prompts[cut],
                lines.encoded[cut],
                lines.digests[cut],
            )
        else:
            columns = (
                [lines.keys[r] for r in rows],
                [lines.line_nos[r] for r in rows],
                [lines.prompts[r] for r in rows],
                [lines.encoded[r] for r in rows],
                [lines.digests[r] for r in rows],
            )
        staged = stage_rows(plans, *columns)
        if len(plans) == 1 and not plans[0].shape.cache:
            staged = without_request_hashes(staged, columns[4])
        elif len(plans) > 1 and not all(plan.shape.cache for plan in set(plans)):
            which = [not plan.shape.cache for plan in plans]
            staged = without_request_hashes(staged, columns[4], which)
        self._stage(staged)

    def _plan(self, first: FastLine) -> ShapeStaging:
        """The staging of a line's shape; a new one is checked with this line."""
        plan = self.plans.get(first.shape)
        if plan is not None:
            return plan
        encode = self.rt.model_provider(first.shape.model).encode_request
        plan = ShapeStaging(first.shape, encode, self.prices, self.router.route(first.shape))
        self.plans[first.shape] = plan
        # The first line of a shape checks its template against the provider's own
        # encoding; a mismatch drops the template for good.
        if plan.lane is Lane.BATCH and plan.check(first.key, first.prompt):
            log.warning("staging template disagrees with the provider; not used")
        return plan

    # --- the one way lines reach a batch -------------------------------------------------

    def _stage(self, staged: StagedLines) -> None:
        """Place staged lines in batches, in order, and add their costs."""
        requests, manifests, placement, costs = staged
        sizes = request_sizes(requests)
        if isinstance(placement, list):
            self._place_each(requests, manifests, sizes, placement)
        else:
            model, output = placement
            row = 0
            for index, stop, closed in self.planner.place_run(model, sizes, output):
                for planned in closed:
                    self._close_batch(planned)
                self._batch(index).extend(
                    requests[row:stop], manifests[row:stop], sum(sizes[row:stop]), self.publisher
                )
                row = stop
        estimates = self.tally.estimates
        for charged, standard, count in costs:
            estimates.add(charged, standard, count)

    def _place_each(
        self,
        requests: list[str],
        manifests: list[str],
        sizes: list[int],
        placements: list[Placement],
    ) -> None:
        """Place lines one at a time: they go to batches of several models or outputs."""
        place, publisher = self.planner.place, self.publisher
        most_lines, most_bytes = publish.WRITE_LINES, publish.WRITE_BYTES
        # The batch the previous line went to (a closed batch never comes back, so its
        # index is never reused), and its buffers, in locals: this runs once per line.
        index, batch = -1, OpenBatch(-1)
        buffered, manifests_of = batch.request_lines, batch.manifest_lines
        for request, manifest, size, (model, output) in zip(
            requests, manifests, sizes, placements, strict=True
        ):
            placed = place(model, size, output)
            for planned in placed.closed:
                self._close_batch(planned)
            if placed.batch_index != index:
                index = placed.batch_index
                batch = self._batch(index)
                buffered, manifests_of = batch.request_lines, batch.manifest_lines
            buffered.append(request)
            manifests_of.append(manifest)
            batch.buffered += size
            if len(buffered) >= most_lines or batch.buffered >= most_bytes:
                batch.flush(publisher)

    def _batch(self, index: int) -> OpenBatch:
        batch = self.open_batches.get(index)
        if batch is None:
            batch = self.open_batches[index] = OpenBatch(index)
        return batch

    def _close_batch(self, planned: PlannedBatch) -> None:
        batch = self.open_batches.pop(planned.index)
        batch.flush(self.publisher)
        self.publisher.close_batch(planned, self.rt.now())
        self.tally.batches.append(planned)


def _bounded(
    chunks: Iterator[tuple[int, list[bytes]]], most: int
) -> Iterator[tuple[int, list[bytes]]]:
    """iter_line_chunks' chunks cut to at most `most` lines each."""
    for first, lines in chunks:
        if len(lines) <= most:
            yield first, lines
            continue
        for start in range(0, len(lines), most):
            yield first + start, lines[start : start + most]


def _rejected_json(line: RejectedLine) -> bytes:
    doc = {
        "line": line.line_no,
        "key": line.key,
        "field": line.field,
        "reason": line.reason,
        "input": line.raw,
    }
    return (json.dumps(doc, ensure_ascii=False) + "\n").encode()
