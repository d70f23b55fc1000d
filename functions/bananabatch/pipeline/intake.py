"""Upload handling: one JSONL object in the inbox becomes one job.

The whole input is streamed once: each line is validated, placed in a batch by the
planner and written straight into that batch's staged request file, so memory does not
grow with the file. Nothing here spends money; submission starts only after the job has
moved to RUNNING, which is why a crash anywhere in intake can simply be redone.

A batch-lane line gets no item record here: a million document writes do not fit in one
invocation (nor under Firestore's 500/50/5 ramp-up rule). Its batch's manifest
(core/manifest.py), written next to the request file, holds what the record needs; the
records are created per batch when it is submitted (pipeline/materialize.py), so
the writes spread over the job's life at the pace of max_active_batches. Urgent lines,
cache hits and in-file duplicates, which are served apart from batches, still get their
records here, in batches of writes.

Per line the work is kept to what depends on the line: a simple line without reference
images (nearly all lines) is validated into a FastLine, and its staged request line,
content hash, price and manifest line come from per-shape templates and caches.
"""

from __future__ import annotations

import gc
import json
import queue
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from bananabatch.config import ProviderKind, env_name_for
from bananabatch.core import records as rec
from bananabatch.core.catalog import expected_result_bytes, model_warnings
from bananabatch.core.estimate import URGENT, cache_enabled_for, lane_of
from bananabatch.core.intake import (
    PREVIEW_CHARS,
    PROMPT_SLOT,
    AcceptedLine,
    FastLine,
    IntakeLimits,
    LineParser,
    LineShape,
    ParsedChunk,
    RejectedLine,
    content_hash,
    encode_json_string,
    iter_line_chunks,
    prompt_preview,
)
from bananabatch.core.manifest import ManifestEntry, encode_entry, entry_tail, fast_entry_line
from bananabatch.core.planning import BatchPlanner, PlanLimits, PlannedBatch
from bananabatch.core.pricing import Lane, LinePrices, price_warnings
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
from bananabatch.pipeline import budget, cache, control, finalize, lifecycle
from bananabatch.pipeline.references import ReferenceChecker, reference_policy
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.urgent import urgent_object_name

log = get_logger(__name__)

# Item records written per put_items call (urgent lines, cache hits, in-file duplicates).
ITEM_FLUSH = 500
# Lines parsed together, looked up in the dedup cache with one state-store read, and
# waiting for it. Also bounded in input bytes by the read chunk (a line may be up to a
# megabyte), so with LOOKAHEAD a few MB wait at most.
CHUNK_LINES = 4096
# Chunks read ahead of the one being placed, so that a chunk's lookup runs on its own
# thread while the next chunk is parsed: a Firestore read waits on the network, SQLite's
# releases the GIL, and either way the read loop need not wait for it.
LOOKAHEAD = 1
# Lines (and bytes) buffered per open batch before one write to its request file and
# manifest.
WRITE_LINES = 1024
WRITE_BYTES = 1024 * 1024
# Writes each publisher thread may be behind the read loop: with the bounds above, a few MB.
PUBLISH_QUEUE = 4
REJECTED_NAME = "rejected.jsonl"
# A line's bytes plus its newline, as a C function for map().
_WITH_NEWLINE = (1).__add__
# The key placeholder of the request line templates (see _request_template).
KEY_SLOT = "\x00bananabatch-key\x00"


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
    # Deprecated or restricted models, undocumented batch support (core/catalog.py).
    warnings: list[str] = field(default_factory=list)


def handle_upload(rt: Runtime, source: SourceObject, metadata: Mapping[str, str]) -> str | None:
    """Create and stage the job for an uploaded object. Returns the job id, or None when
    the object is not a JSONL file. A redelivered event does nothing."""
    if not rec.is_jsonl_name(source.name):
        log.info("ignoring non-JSONL upload", extra={"object": source.uri})
        return None
    job_id = rec.job_id_for(source)
    with labels(job_id=job_id):
        now = rt.now()
        created = lifecycle.receive(
            rt,
            JobRecord(
                job_id=job_id,
                state=JobState.RECEIVED,
                source=source,
                created_at=now,
                updated_at=now,
                default_model=metadata.get("model") or rt.settings.default_model,
                results_prefix=rt.results_uri(rec.results_prefix(job_id)),
                options={k: v for k, v in metadata.items() if k.startswith("bananabatch-")},
            ),
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
        "urgent_count": tally.urgent,
        "counts": counts,
        "costs": costs,
        "warnings": tally.warnings,
    }
    for warning in tally.warnings:
        log.warning("model warning: %s", warning)
    hold, day = budget.admit(rt, job, costs.estimated_usd) if tally.accepted else (None, None)
    if hold is not None:
        # Over a cap: nothing is reserved or submitted until a person approves or rejects.
        held = lifecycle.hold(rt, job.job_id, hold, staged)
        log.warning("job held over budget: %s", hold)
        if held.moved:
            finalize.publish_completion_if_pending(rt, job.job_id)
        return
    moved = lifecycle.start(rt, job.job_id, budget_day=day, staged=staged)
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
    control.start_running(rt, job.job_id)


def source_bucket(job: JobRecord) -> str:
    return job.source.bucket


def _read_and_stage(rt: Runtime, job: JobRecord) -> _IntakeTally:
    stager = _Stager(rt, job)
    stager.run()
    return stager.tally


class _Publisher:
    """Writes the staged batch files and the batch records, on background threads when the
    object store says its writes wait on the network (ObjectStore.write_concurrency > 1),
    inline otherwise.

    Creating and publishing objects on Cloud Storage costs tens of milliseconds of latency
    each, two per batch: on threads of their own they overlap the read loop, which is CPU.
    A local folder's writes are system calls that take the GIL back after each one, so on
    threads they would only queue behind the read loop for the GIL (measured: the read
    loop then spent a quarter of its time blocked on a full queue); inline they cost their
    system calls and nothing else.

    All messages of one batch go to the same thread, in order, so a batch's files are whole
    and published before its record is created, exactly as when done inline. The first
    failure is kept and raised to the read loop at its next message (and by finish); the
    files of batches not yet closed are then discarded, never published partly.
    """

    _STOP = object()

    def __init__(self, rt: Runtime, job: JobRecord, threads: int | None = None) -> None:
        if threads is None:
            threads = rt.objects.write_concurrency
        self.rt = rt
        self.job = job
        self.error: BaseException | None = None
        # Bounded, so the loop cannot run ahead of the store by more than a few MB.
        self._queues: list[queue.Queue[Any]] = (
            [queue.Queue(maxsize=PUBLISH_QUEUE) for _ in range(threads)] if threads > 1 else []
        )
        # Batch index -> its open files; each index is only ever touched by one thread.
        self._open: dict[int, ExitStack] = {}
        self._sinks: dict[int, tuple[IO[bytes], IO[bytes]]] = {}
        self._threads = [
            threading.Thread(
                target=self._work, args=(n, q), name=f"intake-publisher-{n}", daemon=True
            )
            for n, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    # --- the read loop's side ------------------------------------------------------------

    def write(self, index: int, requests: bytes, manifest: bytes) -> None:
        self._put(index, ("write", index, requests, manifest))

    def close_batch(self, planned: PlannedBatch, closed_at: datetime) -> None:
        self._put(planned.index, ("close", planned, closed_at))

    def finish(self) -> None:
        """Wait for every message; raise the first failure."""
        self._stop()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Stop after a failure in the read loop: open files are discarded."""
        if self.error is None:
            self.error = RuntimeError("intake stopped")
        self._stop()
        if not self._threads:
            self._discard(None)

    def _put(self, index: int, message: Any) -> None:
        if self.error is not None:
            raise self.error
        if self._queues:
            self._queues[index % len(self._queues)].put(message)
            return
        try:
            self._handle(message)
        except BaseException as exc:
            self.error = exc
            raise

    def _stop(self) -> None:
        for q in self._queues:
            q.put(self._STOP)
        for thread in self._threads:
            thread.join()

    # --- the threads ---------------------------------------------------------------------

    def _work(self, owner: int, messages: queue.Queue[Any]) -> None:
        while True:
            message = messages.get()
            if message is self._STOP:
                if self.error is not None:
                    self._discard(owner)
                return
            if self.error is not None:
                continue  # drain, so the loop never blocks on a full queue
            try:
                self._handle(message)
            # Whatever it is, the read loop re-raises it (finish, or its next message).
            except BaseException as exc:  # noqa: BLE001
                if self.error is None:
                    self.error = exc
                self._discard(owner)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "write":
            _, index, requests, manifest = message
            sinks = self._sinks.get(index)
            if sinks is None:
                sinks = self._open_batch(index)
            sinks[0].write(requests)
            sinks[1].write(manifest)
        elif kind == "close":
            planned: PlannedBatch = message[1]
            closed_at: datetime = message[2]
            self._sinks.pop(planned.index, None)
            stack = self._open.pop(planned.index, None)
            if stack is not None:
                # Published here, whole: a batch record never points at a partial file.
                stack.close()
            _record_batch(self.rt, self.job, planned, closed_at)

    def _open_batch(self, index: int) -> tuple[IO[bytes], IO[bytes]]:
        rt, job_id = self.rt, self.job.job_id
        results = rt.settings.results_bucket
        stack = ExitStack()
        self._open[index] = stack
        requests = stack.enter_context(
            rt.objects.open_write(
                results, rec.request_object_name(job_id, index), content_type="application/jsonl"
            )
        )
        manifest = stack.enter_context(
            rt.objects.open_write(
                results, rec.manifest_object_name(job_id, index), content_type="application/jsonl"
            )
        )
        self._sinks[index] = (requests, manifest)
        return requests, manifest

    def _discard(self, owner: int | None) -> None:
        """Discard the open files of the batches this thread owns (index % threads), or
        all of them (owner None: no threads)."""
        threads = len(self._queues)
        for index in [i for i in list(self._open) if owner is None or i % threads == owner]:
            self._sinks.pop(index, None)
            stack = self._open.pop(index)
            # Raising into the sinks' context managers discards the partial objects.
            try:
                stack.__exit__(RuntimeError, RuntimeError("intake stopped"), None)
            except Exception:
                log.exception("could not discard a partial staged file")


class _OpenBatch:
    """A batch still filling: its lines wait here as text, so that each encode and each
    write covers up to WRITE_LINES lines or WRITE_BYTES bytes."""

    __slots__ = ("buffered", "index", "manifest_lines", "request_lines")

    def __init__(self, index: int) -> None:
        self.index = index
        self.request_lines: list[str] = []
        self.manifest_lines: list[str] = []
        self.buffered = 0  # request bytes in request_lines

    def add(self, request: str, size: int, manifest: str, publisher: _Publisher) -> None:
        self.request_lines.append(request)
        self.manifest_lines.append(manifest)
        self.buffered += size
        self.flush_if_full(publisher)

    def extend(
        self, requests: list[str], manifests: list[str], size: int, publisher: _Publisher
    ) -> None:
        """add for many lines at once (size: their request bytes in all)."""
        self.request_lines += requests
        self.manifest_lines += manifests
        self.buffered += size
        self.flush_if_full(publisher)

    def flush_if_full(self, publisher: _Publisher) -> None:
        if len(self.request_lines) >= WRITE_LINES or self.buffered >= WRITE_BYTES:
            self.flush(publisher)

    def flush(self, publisher: _Publisher) -> None:
        if self.request_lines:
            publisher.write(
                self.index,
                ("\n".join(self.request_lines) + "\n").encode(),
                "".join(self.manifest_lines).encode(),
            )
            self.request_lines.clear()
            self.manifest_lines.clear()
            self.buffered = 0


class _ShapePlan:
    """What every batch-lane line of one LineShape shares: the lane, the expected output
    size, the staged request line as a template around the key and the prompt, and the
    prices and manifest tail per prompt length."""

    __slots__ = (
        "expected_output",
        "head",
        "lane",
        "middle",
        "model",
        "prices",
        "tail",
        "template",
        "verified",
    )

    def __init__(self, rt: Runtime, shape: LineShape) -> None:
        self.model = shape.model
        self.lane = Lane.STANDARD if shape.priority == URGENT else Lane.BATCH
        self.expected_output = expected_result_bytes(shape.model, shape.image_size)
        self.template = _request_template(rt, shape)
        # The first line of the shape is also encoded the generic way and compared.
        self.verified = False
        self.prices: dict[int, tuple[float, float, str]] = {}
        # The template's parts once it is checked, for a batch-lane shape; head None means
        # "take the general path" (_Stager._place).
        self.head: str | None = None
        self.middle = self.tail = ""

    def checked(self, ok: bool) -> None:
        self.verified = True
        if not ok:
            self.template = None
        if self.template is not None and self.lane is Lane.BATCH:
            self.head, self.middle, self.tail = self.template


def _request_template(rt: Runtime, shape: LineShape) -> tuple[str, str, str] | None:
    """The staged line of a shape cut around the key and the prompt, or None when the
    provider's encoding does not carry both verbatim (Vertex puts the key in labels)."""
    text = json.dumps(
        rt.provider.encode_request(KEY_SLOT, shape.request(PROMPT_SLOT)),
        separators=(",", ":"),
        ensure_ascii=False,
    )
    key, prompt = encode_json_string(KEY_SLOT), encode_json_string(PROMPT_SLOT)
    if text.count(key) != 1 or text.count(prompt) != 1 or text.index(key) > text.index(prompt):
        return None
    head, rest = text.split(key)
    middle, tail = rest.split(prompt)
    return head, middle, tail


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
        self.dedup_marks: list[int] = kept  # type: ignore[assignment]


class _Stager:
    """One pass over the input: validate, dedup, plan, and write the staged files.

    Per batch-lane line this writes one request line and one manifest line, no state
    store document (see core/manifest.py). Lines are looked up in the dedup cache a chunk
    at a time; to keep the staged order equal to the input order, every accepted line
    waits in the chunk, and the chunk is placed in order once its lookup is answered.
    """

    def __init__(self, rt: Runtime, job: JobRecord) -> None:
        settings = rt.settings
        self.rt = rt
        self.job = job
        self.limits = IntakeLimits()
        self.parser = LineParser(
            default_model=job.default_model,
            limits=self.limits,
            check_references=ReferenceChecker(rt.objects).first_unusable,
            today=rt.now().date(),
            vertex=settings.provider is ProviderKind.VERTEX,
            references=reference_policy(rt.settings),
        )
        self.planner = BatchPlanner(
            PlanLimits(
                max_requests=settings.max_requests_per_batch,
                max_request_bytes=settings.max_batch_bytes,
                max_output_bytes=settings.max_batch_output_bytes,
            )
        )
        self.prices = LinePrices(rt.prices)
        self.tally = _IntakeTally()
        self.use_cache = cache_enabled_for(job.options)
        # Hashes of the content hashes of the requests this file generates, for in-file
        # dedup: an int set takes about 80 MB per million lines, where a map from content
        # hash to first key would take three times that and break the 256 MB budget. A
        # duplicate finds its original by request hash when the job ends
        # (cache.resolve_duplicates).
        self.seen: set[int] = set()
        self.items: list[ItemRecord] = []
        self.open_batches: dict[int, _OpenBatch] = {}
        self.shape_plans: dict[LineShape, _ShapePlan] = {}
        self.urgent_sink: IO[bytes] | None = None
        self.stack = ExitStack()
        self.publisher: _Publisher | None = None
        self.lookups = ThreadPoolExecutor(1, thread_name_prefix="intake-cache-lookup")

    # --- the pass ----------------------------------------------------------------------

    def run(self) -> None:
        rt, job = self.rt, self.job
        results = rt.settings.results_bucket
        tally = self.tally
        with self.stack as stack:
            source = stack.enter_context(rt.objects.open_read(source_bucket(job), job.source.name))
            rejected_sink = stack.enter_context(
                rt.objects.open_write(
                    results,
                    rec.results_prefix(job.job_id) + REJECTED_NAME,
                    content_type="application/jsonl",
                )
            )
            publisher = self.publisher = _Publisher(rt, job)
            # On failure, lookups not yet started are dropped and a running one is waited
            # for, so no thread outlives the intake.
            stack.callback(self.lookups.shutdown, wait=True, cancel_futures=True)
            # The loop allocates millions of short-lived tuples and dicts and creates no
            # reference cycles, while the dedup sets hold millions of entries that every
            # full collection would walk: with the cyclic collector on, it took a tenth of
            # the loop's time. Reference counting still frees everything as it goes.
            collecting = gc.isenabled()
            gc.disable()
            try:
                self._read(source, rejected_sink)
                for planned in self.planner.finish():
                    self._close_batch(planned)
                publisher.finish()
            except BaseException:
                publisher.abandon()
                raise
            finally:
                if collecting:
                    gc.enable()
        self._flush_items(force=True)
        used, today = self.parser.models_used(), rt.now().date()
        tally.warnings = model_warnings(used, today) + price_warnings(
            rt.prices, used, today, rt.settings.price_max_age_days
        )
        log.info("intake read", extra={"lines": tally.lines, "batches": len(tally.batches)})

    def _read(self, source: IO[bytes], rejected_sink: IO[bytes]) -> None:
        rt, tally = self.rt, self.tally
        parse_chunk = self.parser.parse_chunk
        use_cache = self.use_cache
        lookups = self.lookups
        # Chunks read whose lookup is still running; see LOOKAHEAD.
        behind: deque[tuple[_Chunk, Future[dict[str, cache.CacheEntry]] | None]] = deque()
        lines = accepted = rejected = 0
        for first, raws in _bounded(
            iter_line_chunks(source, max_line_bytes=self.limits.max_line_bytes), CHUNK_LINES
        ):
            parsed = parse_chunk(first, raws)
            rows = len(parsed.line_nos)
            # hash(), not the digest's bits: in-file dedup only needs equality here, and
            # str's hash is the cheapest 64 bits of it. Two requests sharing it (about one
            # chance in 37 million per million-line file) would make the later a duplicate
            # of nothing: cache.resolve_duplicates then fails that one line, saying so; it
            # is never paid for nor given another line's image.
            marks: list[int | None]
            if not use_cache:
                marks = [None] * rows
            elif all(shape.cache for shape in set(parsed.shapes)):
                marks = list(map(hash, parsed.digests))
            else:
                marks = [
                    hash(d) if shape.cache else None
                    for d, shape in zip(parsed.digests, parsed.shapes, strict=True)
                ]
            others: list[tuple[int, _Waiting]] = []
            for row, line in parsed.others:
                if isinstance(line, RejectedLine):
                    rejected += 1
                    rejected_sink.write(_rejected_json(line))
                    continue
                encoded: str | None = None
                if isinstance(line, FastLine):  # one with metadata
                    encoded, cacheable = encode_json_string(line.prompt), line.shape.cache
                else:
                    cacheable = line.cache
                digest = content_hash(line)
                accepted += 1
                others.append(
                    (
                        row,
                        (line, encoded, digest, hash(digest) if use_cache and cacheable else None),
                    )
                )
            lines += rows + len(parsed.others)
            accepted += rows
            chunk = _Chunk(parsed, marks, others)
            lookup = lookups.submit(cache.lookup_many, rt, chunk.wanted) if chunk.wanted else None
            behind.append((chunk, lookup))
            if len(behind) > LOOKAHEAD:
                self._place_chunk(*behind.popleft())
        while behind:
            self._place_chunk(*behind.popleft())
        tally.lines, tally.accepted, tally.rejected = lines, accepted, rejected

    def _place_chunk(
        self, chunk: _Chunk, lookup: Future[dict[str, cache.CacheEntry]] | None
    ) -> None:
        """Dedup a chunk's accepted lines against the file so far and the cache (the answer
        of its lookup, one state-store read), then stage each, in input order."""
        hits = lookup.result() if lookup is not None else {}
        seen = self.seen
        # The usual chunk: no cache hit, and no line repeating an earlier one of the file
        # or of the chunk. Then its marks join `seen` in one call, and no line needs a
        # probe of that million-entry set of its own.
        marks = chunk.dedup_marks
        clean = not hits and seen.isdisjoint(marks) and len(set(marks)) == len(marks)
        if clean:
            seen.update(marks)
        row = 0
        for at, waiting in chunk.others:
            self._place_rows(chunk, row, at, hits, clean)
            row = at
            self._place_other(waiting, hits, clean)
        self._place_rows(chunk, row, len(chunk.lines.line_nos), hits, clean)

    def _place_other(
        self, waiting: _Waiting, hits: dict[str, cache.CacheEntry], clean: bool
    ) -> None:
        parsed, encoded, digest, mark = waiting
        if mark is not None and not clean and self._served_instead(parsed, digest, mark, hits):
            return
        self._place(parsed, encoded, digest)

    def _served_instead(
        self,
        line: FastLine | AcceptedLine,
        digest: str,
        mark: int,
        hits: dict[str, cache.CacheEntry],
    ) -> bool:
        """Serve a line from the cache or as a repeat of an earlier line of the file, if it
        is one; otherwise mark it seen. True when served."""
        if hits:
            entry = hits.get(digest)
            if entry is not None:
                # Cache hits stay out of `seen`: a later repeat is a hit too.
                self._served(line, digest, entry)
                return True
        seen = self.seen
        # One probe of the set (add, then compare sizes), not two.
        known = len(seen)
        seen.add(mark)
        if len(seen) == known:
            self._served(line, digest, None)
            return True
        return False

    def _place_rows(
        self, chunk: _Chunk, start: int, end: int, hits: dict[str, cache.CacheEntry], clean: bool
    ) -> None:
        """Stage rows start..end of a chunk's columns, in order.

        The batch-lane case is written out here rather than in _place: it runs once per
        line of nearly every file, and a call per step would double its cost."""
        if start >= end or (clean and self._place_run(chunk, start, end)):
            return
        lines = chunk.lines
        plans = self.shape_plans
        place = self.planner.place
        open_batches = self.open_batches
        tally = self.tally
        publisher = self.publisher
        assert publisher is not None
        served_instead = self._served_instead
        preview_chars, write_lines, write_bytes = PREVIEW_CHARS, WRITE_LINES, WRITE_BYTES
        # The batch the previous line went to; a closed batch never comes back, so its
        # index is never reused.
        index = -1
        batch: _OpenBatch | None = None
        # The previous line's shape and what its plan says, in locals.
        last_shape: LineShape | None = None
        head = middle = tail = model = ""
        expected_output = 0
        prices: dict[int, tuple[float, float, str]] = {}
        # The job's estimates, added to per line in input order exactly as every other
        # path adds to them (so the float sums are the same as line by line); in locals
        # here, and handed back around each call that adds to them itself.
        charged, standard = tally.estimated_batch_usd, tally.estimated_standard_usd
        for row, line_no, key, prompt, encoded, shape, digest, mark in zip(
            range(start, end),
            lines.line_nos[start:end],
            lines.keys[start:end],
            lines.prompts[start:end],
            lines.encoded[start:end],
            lines.shapes[start:end],
            lines.digests[start:end],
            chunk.marks[start:end],
            strict=True,
        ):
            if shape is not last_shape:
                plan = plans.get(shape)
                if plan is None or plan.head is None:
                    # The general path: the shape's first line (which checks its
                    # template), or a shape that is not staged from a template.
                    tally.estimated_batch_usd, tally.estimated_standard_usd = charged, standard
                    line = lines.fast_line(row)
                    if clean or mark is None or not served_instead(line, digest, mark, hits):
                        self._place(line, encoded, digest)
                    charged, standard = tally.estimated_batch_usd, tally.estimated_standard_usd
                    index = -1  # _place may have closed the batch
                    continue
                # A plan's template never changes once checked (head is set then).
                last_shape = shape
                head, middle, tail = plan.head, plan.middle, plan.tail
                model, expected_output, prices = plan.model, plan.expected_output, plan.prices
            if not clean and mark is not None:
                tally.estimated_batch_usd, tally.estimated_standard_usd = charged, standard
                served = served_instead(lines.fast_line(row), digest, mark, hits)
                charged, standard = tally.estimated_batch_usd, tally.estimated_standard_usd
                if served:
                    continue
            tokens = (len(prompt) + 3) // 4  # line_prompt_tokens without reference images
            priced = prices.get(tokens)
            if priced is None:
                priced = prices[tokens] = self._priced(shape, tokens)
            key_json = encode_json_string(key)
            request = f"{head}{key_json}{middle}{encoded}{tail}"
            preview = (
                encoded
                if len(prompt) <= preview_chars and prompt.isprintable()
                else encode_json_string(lines.fast_line(row).prompt_preview)
            )
            # Bytes with the newline; str.isascii is O(1), so ASCII lines are not encoded.
            size = (len(request) if request.isascii() else len(request.encode())) + 1
            placement = place(model, size, expected_output)
            if placement.closed:
                for planned in placement.closed:
                    self._close_batch(planned)
            if placement.batch_index != index:
                index = placement.batch_index
                batch = open_batches.get(index)
                if batch is None:
                    batch = open_batches[index] = _OpenBatch(index)
            assert batch is not None
            requests = batch.request_lines
            requests.append(request)
            batch.manifest_lines.append(f'[{key_json},{line_no},"{digest}",{preview}{priced[2]}')
            buffered = batch.buffered = batch.buffered + size
            if len(requests) >= write_lines or buffered >= write_bytes:
                batch.flush(publisher)
            charged += priced[0]
            standard += priced[1]
        tally.estimated_batch_usd, tally.estimated_standard_usd = charged, standard

    def _place_run(self, chunk: _Chunk, start: int, end: int) -> bool:
        """_place_rows for rows of a clean chunk (no dedup to do) that share one shape whose
        plan is a checked batch-lane template, or False when they do not.

        Each step runs over all the rows at once (comprehensions and maps), and the planner
        once per batch rather than per line (BatchPlanner.place_run): the same files, the
        same estimates, at a fraction of the per-line cost."""
        lines = chunk.lines
        shapes = lines.shapes[start:end]
        shape = shapes[0]
        plan = self.shape_plans.get(shape)
        if plan is None or plan.head is None or shapes.count(shape) != len(shapes):
            return False
        publisher = self.publisher
        assert publisher is not None
        head, middle, tail = plan.head, plan.middle, plan.tail
        keys = list(map(encode_json_string, lines.keys[start:end]))
        prompts = lines.prompts[start:end]
        encoded = lines.encoded[start:end]
        requests = [f"{head}{k}{middle}{e}{tail}" for k, e in zip(keys, encoded, strict=True)]
        # Bytes with the newline; str.isascii is O(1), so ASCII lines are not encoded.
        if all(map(str.isascii, requests)):
            sizes = list(map(_WITH_NEWLINE, map(len, requests)))
        else:
            sizes = [len(r.encode()) + 1 for r in requests]
        tokens = [(len(p) + 3) // 4 for p in prompts]  # line_prompt_tokens, no references
        prices = plan.prices
        for missing in set(tokens).difference(prices):
            prices[missing] = self._priced(shape, missing)
        priced = list(map(prices.__getitem__, tokens))
        previews = [
            e
            if len(p) <= PREVIEW_CHARS and p.isprintable()
            else encode_json_string(prompt_preview(p))
            for p, e in zip(prompts, encoded, strict=True)
        ]
        manifests = [
            f'[{k},{n},"{d}",{v}{c[2]}'
            for k, n, d, v, c in zip(
                keys,
                lines.line_nos[start:end],
                lines.digests[start:end],
                previews,
                priced,
                strict=True,
            )
        ]
        row = 0
        for index, stop, closed in self.planner.place_run(plan.model, sizes, plan.expected_output):
            for planned in closed:
                self._close_batch(planned)
            batch = self.open_batches.get(index)
            if batch is None:
                batch = self.open_batches[index] = _OpenBatch(index)
            batch.extend(requests[row:stop], manifests[row:stop], sum(sizes[row:stop]), publisher)
            row = stop
        # Added line by line, in input order, as every other path adds (same float sums).
        tally = self.tally
        charged, standard = tally.estimated_batch_usd, tally.estimated_standard_usd
        for line_charged, line_standard, _ in priced:
            charged += line_charged
            standard += line_standard
        tally.estimated_batch_usd, tally.estimated_standard_usd = charged, standard
        return True

    def _place(self, parsed: FastLine | AcceptedLine, encoded: str | None, digest: str) -> None:
        """Stage one line that is to be generated (the general case of _place_chunk)."""
        tally = self.tally
        if type(parsed) is FastLine:
            shape = parsed.shape
            plan = self.shape_plans.get(shape)
            if plan is None:
                plan = self.shape_plans[shape] = _ShapePlan(self.rt, shape)
            if plan.lane is Lane.STANDARD:
                self._urgent(parsed.accepted(), digest)
                return
            prompt = parsed.prompt
            tokens = (len(prompt) + 3) // 4  # line_prompt_tokens without reference images
            priced = plan.prices.get(tokens)
            if priced is None:
                priced = plan.prices[tokens] = self._priced(shape, tokens)
            key_json = encode_json_string(parsed.key)
            prompt_json = encoded if encoded is not None else encode_json_string(prompt)
            generic = self._request_json(parsed.key, shape.request(prompt))
            template = plan.template
            if not plan.verified:
                # The first line of a shape checks its template against the provider's
                # own encoding; a mismatch drops the template for good.
                ok = template is not None and generic == (
                    f"{template[0]}{key_json}{template[1]}{prompt_json}{template[2]}"
                )
                if template is not None and not ok:
                    log.warning("staging template disagrees with the provider; not used")
                plan.checked(ok)
            preview_json = (
                prompt_json
                if len(prompt) <= PREVIEW_CHARS and prompt.isprintable()
                else encode_json_string(parsed.prompt_preview)
            )
            manifest = fast_entry_line(key_json, parsed.line_no, digest, preview_json, priced[2])
            self._stage(shape.model, generic, manifest, plan.expected_output)
            tally.estimated_batch_usd += priced[0]
            tally.estimated_standard_usd += priced[1]
            return
        assert isinstance(parsed, AcceptedLine)
        lane = lane_of(parsed)
        if lane is Lane.STANDARD:
            self._urgent(parsed, digest)
            return
        standard = self.prices.line(parsed, Lane.STANDARD)
        charged = self.prices.line(parsed, lane)
        manifest = encode_entry(
            ManifestEntry(
                key=parsed.key,
                line_no=parsed.line_no,
                request_hash=digest,
                prompt_preview=parsed.prompt_preview,
                aspect_ratio=parsed.aspect_ratio,
                image_size=parsed.image_size,
                estimated_usd=round(charged, 6),
            )
        )
        self._stage(
            parsed.model,
            self._request_json(parsed.key, parsed.request),
            manifest,
            expected_result_bytes(parsed.model, parsed.image_size),
        )
        tally.estimated_batch_usd += charged
        tally.estimated_standard_usd += standard

    def _stage(self, model: str, request: str, manifest: str, expected_output: int) -> None:
        """Put a request line (text, no newline) and its manifest line into a batch."""
        size = (len(request) if request.isascii() else len(request.encode())) + 1
        placement = self.planner.add(
            model=model, line_bytes=size, expected_output_bytes=expected_output
        )
        for planned in placement.closed:
            self._close_batch(planned)
        batch = self.open_batches.get(placement.batch_index)
        if batch is None:
            batch = self.open_batches[placement.batch_index] = _OpenBatch(placement.batch_index)
        assert self.publisher is not None
        batch.add(request, size, manifest, self.publisher)

    def _close_batch(self, planned: PlannedBatch) -> None:
        batch = self.open_batches.pop(planned.index)
        assert self.publisher is not None
        batch.flush(self.publisher)
        self.publisher.close_batch(planned, self.rt.now())
        self.tally.batches.append(planned)

    def _priced(self, shape: LineShape, tokens: int) -> tuple[float, float, str]:
        charged = self.prices.request(shape.model, shape.image_size, Lane.BATCH, tokens)
        standard = self.prices.request(shape.model, shape.image_size, Lane.STANDARD, tokens)
        tail = entry_tail(shape.aspect_ratio, shape.image_size, round(charged, 6))
        return charged, standard, tail

    def _request_json(self, key: str, request: dict[str, Any]) -> str:
        return json.dumps(
            self.rt.provider.encode_request(key, request),
            separators=(",", ":"),
            ensure_ascii=False,
        )

    # --- lines that get item records at intake -----------------------------------------

    def _urgent(self, line: AcceptedLine, digest: str) -> None:
        """An urgent line: staged for the synchronous lane, with its item written now (the
        lane reads items; there are few such lines)."""
        rt, job = self.rt, self.job
        if self.urgent_sink is None:
            self.urgent_sink = self.stack.enter_context(
                rt.objects.open_write(
                    rt.settings.results_bucket,
                    urgent_object_name(job.job_id),
                    content_type="application/jsonl",
                )
            )
        self.urgent_sink.write(_urgent_json(line))
        price = self.prices.line(line, Lane.STANDARD)
        tally = self.tally
        tally.estimated_batch_usd += price
        tally.estimated_standard_usd += price
        tally.urgent += 1
        self._add_item(
            self._pending_item(
                line, digest, cache.LANE_URGENT, attempt=1, estimated_usd=round(price, 6)
            )
        )

    def _served(
        self, parsed: FastLine | AcceptedLine, digest: str, entry: cache.CacheEntry | None
    ) -> None:
        """A repeat of an earlier line of the file (a pending duplicate that copies the
        first occurrence's outcome when the job ends), or a cache hit (CACHED now)."""
        rt, job = self.rt, self.job
        line = parsed.accepted() if isinstance(parsed, FastLine) else parsed
        price = self.prices.line(line, lane_of(line))
        tally = self.tally
        tally.estimated_standard_usd += self.prices.line(line, Lane.STANDARD)
        tally.cache_saved_usd += price
        item = self._pending_item(
            line, digest, cache.LANE_DUPLICATE, estimated_usd=0.0, saved_usd=round(price, 6)
        )
        if entry is not None:
            # Copying costs nothing, so it may happen before the budget decision.
            uri = cache.copy_into(rt, job.job_id, line.key, entry)
            item = item.model_copy(
                update={
                    "state": ItemState.CACHED,
                    "lane": cache.LANE_CACHE,
                    "image_uri": uri,
                    "mime_type": entry.mime_type,
                    "reason": f"cached: same request as job {entry.job_id} key {entry.key}",
                }
            )
        self._add_item(item)

    def _pending_item(
        self, line: AcceptedLine, digest: str, lane: str, **fields: Any
    ) -> ItemRecord:
        """The item record of a line served outside the batch lane, written at intake."""
        return ItemRecord(
            job_id=self.job.job_id,
            key=line.key,
            line_no=line.line_no,
            state=ItemState.PENDING,
            model=line.model,
            aspect_ratio=line.aspect_ratio,
            image_size=line.image_size,
            prompt_preview=line.prompt_preview,
            request_hash=digest,
            lane=lane,
            updated_at=self.rt.now(),
            **fields,
        )

    def _add_item(self, item: ItemRecord) -> None:
        self.items.append(item)
        self._flush_items()

    def _flush_items(self, *, force: bool = False) -> None:
        if self.items and (force or len(self.items) >= ITEM_FLUSH):
            self.rt.repo.put_items(self.items)
            self.items.clear()


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


def _urgent_json(line: AcceptedLine) -> bytes:
    doc = {"key": line.key, "model": line.model, "request": line.request}
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _record_batch(rt: Runtime, job: JobRecord, planned: PlannedBatch, now: datetime) -> None:
    """The QUEUED record of a staged batch. `now` is when the read loop closed it: records
    are created on several threads, and created_at must still follow the batches' order
    (submission takes queued batches oldest first)."""
    batch_id = rec.batch_id_for(job.job_id, planned.index)
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
            manifest_object=rec.manifest_object_name(job.job_id, planned.index),
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
