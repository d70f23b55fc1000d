"""Intake's dedup tables, bounded by configuration (`intake_dedup_bytes`), not by the file.

The read loop dedups twice on 64-bit hashes: keys (the parser rejects a repeated key) and
requests (a repeated request is served from its first occurrence). Both are exact on the
hashes: a line is never called a repeat of a line it does not repeat (but for a 64-bit
collision, which the callers account for), and a repeat is never staged twice.

Usually both tables are compact SeenHashes (core/intake/seen.py), sized for the file from
its size and its first lines, each within half the budget: ~11 bytes a hash at the fullest,
so 5M lines take ~115 MB, and the default 384 MiB holds ~17M lines.

A file with more distinct lines than that spills. Only hashes that come back need keeping,
so a first pass (count_repeats) parses the file and writes every hash it would add to the
object store, in partitions by value (runs, under the job's prefix, deleted after); each
partition is then read back into one table alone and its repeated values kept. The read
pass proper then keeps only those (RepeatsOnly): a hash that is not among them is new the
one time it comes. The answers are the same as the in-memory tables' (tests/unit/
test_intake_dedup.py forces a tiny budget); the cost is a second parse of the file. A file
whose repeated hashes alone pass the budget is refused, saying so (DedupOverflow).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Final

from bananabatch.config import ProviderKind
from bananabatch.core import records as rec
from bananabatch.core.estimate import cache_enabled_for
from bananabatch.core.intake import (
    AcceptedLine,
    FastLine,
    IntakeLimits,
    LineParser,
    ParsedChunk,
    RejectedLine,
    content_hash,
    iter_line_chunks,
)
from bananabatch.core.intake.seen import (
    SLOT_BYTES,
    HashTable,
    RepeatsOnly,
    SeenHashes,
    TableFull,
)
from bananabatch.core.records import JobRecord
from bananabatch.errors import PermanentError
from bananabatch.log import get_logger
from bananabatch.pipeline.references import ReferenceChecker, reference_policy
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)

# Partitions of the spilled hashes, by value: each is read back into a table alone, so at
# ~70M hashes (a 1 GiB file of the shortest lines) one holds ~2M, ~25 MB.
PARTITIONS: Final = 32
SPILL_DIR: Final = "intake-spill/"


class DedupOverflow(PermanentError):
    """The file repeats more distinct lines than the dedup budget can hold."""


@dataclass
class Tables:
    """The two tables of a read pass: keys (the parser's) and requests (the read loop's)."""

    keys: HashTable
    requests: HashTable


def in_memory(budget: int) -> Tables:
    """Tables holding every hash, half the budget each (the usual case)."""
    return Tables(SeenHashes(budget_bytes=budget // 2), SeenHashes(budget_bytes=budget // 2))


def reserve(tables: Tables, source_bytes: int | None, first: Sequence[bytes]) -> None:
    """Size both tables for the whole file, from its size and its first lines (before they
    are parsed: growing later rehashes in Python). TableFull when it cannot fit."""
    if not source_bytes or not first:
        return
    per_line = (sum(map(len, first)) + len(first)) / len(first)
    expected = int(source_bytes / per_line * 1.05) + 1
    for table in (tables.keys, tables.requests):
        if isinstance(table, SeenHashes) and not table.fits(expected):
            raise TableFull(f"about {expected:,} lines expected; the budget holds fewer")
        table.reserve(expected)


def new_parser(rt: Runtime, job: JobRecord, keys: HashTable, *, references: bool) -> LineParser:
    """The parser of a read pass over the job's file, its keys in `keys`."""
    settings = rt.settings
    return LineParser(
        default_model=job.default_model,
        limits=IntakeLimits(),
        check_references=ReferenceChecker(rt.objects).first_unusable if references else None,
        today=rt.now().date(),
        vertex=settings.provider is ProviderKind.VERTEX,
        references=reference_policy(settings),
        openai=settings.openai_enabled,
        seen=keys,
    )


def row_marks(parsed: ParsedChunk, use_cache: bool) -> list[int | None]:
    """Each row's in-file dedup mark, None for a row that opted out.

    hash(), not the digest's bits: in-file dedup only needs equality here, and str's
    hash is the cheapest 64 bits of it. Two requests sharing it (about one chance in
    37 million per million-line file) would make the later a duplicate of nothing:
    cache.resolve_duplicates then fails that one line, saying so; it is never paid for
    nor given another line's image."""
    if not use_cache:
        return [None] * len(parsed.line_nos)
    if all(shape.cache for shape in set(parsed.shapes)):
        return list(map(hash, parsed.digests))
    return [
        hash(d) if shape.cache else None
        for d, shape in zip(parsed.digests, parsed.shapes, strict=True)
    ]


def line_mark(line: FastLine | AcceptedLine, digest: str, use_cache: bool) -> int | None:
    """An accepted line's dedup mark (outside the columns), None when it opted out."""
    cacheable = line.shape.cache if isinstance(line, FastLine) else line.cache
    return hash(digest) if use_cache and cacheable else None


# --- the spill ---------------------------------------------------------------------------


def after_counting(rt: Runtime, job: JobRecord, max_line_bytes: int, chunk_lines: int) -> Tables:
    """Tables for a read pass that keep only the repeated hashes, counted in a first pass
    over the file whose hashes go to the object store (see the module's docstring)."""
    budget = rt.settings.intake_dedup_bytes
    with ExitStack() as stack:
        keys = _Runs(rt, job, "keys", budget // 4)
        requests = _Runs(rt, job, "requests", budget // 4)
        stack.callback(keys.delete)
        stack.callback(requests.delete)
        _count(rt, job, keys, requests, max_line_bytes, chunk_lines)
        try:
            repeated_keys = keys.repeats(budget // 4)
            repeated_requests = requests.repeats(budget // 4)
            tables = Tables(
                RepeatsOnly(repeated_keys, budget_bytes=budget // 4),
                RepeatsOnly(repeated_requests, budget_bytes=budget // 4),
            )
        except TableFull as full:
            raise overflow(rt, job) from full
    log.info(
        "intake dedup spilled",
        extra={"repeated_keys": len(repeated_keys), "repeated_requests": len(repeated_requests)},
    )
    return tables


def overflow(rt: Runtime, job: JobRecord) -> DedupOverflow:
    budget = rt.settings.intake_dedup_bytes
    return DedupOverflow(
        f"the file repeats more distinct keys or requests than intake's dedup budget of "
        f"{budget:,} bytes holds (about {int(budget / 4 / SLOT_BYTES * 0.7):,}); split it, or "
        "raise BANANABATCH_INTAKE_DEDUP_BYTES with the upload function's memory",
        job_id=job.job_id,
    )


def _count(
    rt: Runtime,
    job: JobRecord,
    keys: _Runs,
    requests: _Runs,
    max_line_bytes: int,
    chunk_lines: int,
) -> None:
    """Parse the file as the read pass will, adding every key and request hash it would add.

    The parser here never calls a key a repeat and checks no reference image, so it accepts
    every line the read pass accepts and maybe more: every hash the read pass adds twice is
    added twice here too, which is all the repeats need."""
    parser = new_parser(rt, job, keys, references=False)
    use_cache = cache_enabled_for(job.options)
    add = requests.add
    with rt.objects.open_read(job.source.bucket, job.source.name) as source:
        for first, lines in iter_line_chunks(source, max_line_bytes=max_line_bytes):
            for start in range(0, len(lines), chunk_lines):
                parsed = parser.parse_chunk(first + start, lines[start : start + chunk_lines])
                for mark in row_marks(parsed, use_cache):
                    if mark is not None:
                        add(mark)
                for _, line in parsed.others:
                    if isinstance(line, RejectedLine):
                        continue
                    mark = line_mark(line, content_hash(line), use_cache)
                    if mark is not None:
                        add(mark)


class _Runs:
    """Hashes added, kept in PARTITIONS buffers by value and written to the object store as
    a run per partition whenever `budget` bytes are buffered. A HashTable that calls
    nothing a repeat (for the counting parser)."""

    def __init__(self, rt: Runtime, job: JobRecord, name: str, budget: int) -> None:
        self.rt = rt
        self.prefix = f"{rec.results_prefix(job.job_id)}{SPILL_DIR}{name}-"
        self.flush_at = max(1, budget // SLOT_BYTES)
        self.buffers = [array("q") for _ in range(PARTITIONS)]
        self.buffered = 0
        self.runs: list[list[str]] = [[] for _ in range(PARTITIONS)]
        self.counts = [0] * PARTITIONS

    def add(self, value: int) -> bool:
        self.buffers[value % PARTITIONS].append(value)
        self.buffered += 1
        if self.buffered >= self.flush_at:
            self.flush()
        return True

    def add_all_new(self, values: Sequence[int]) -> bool:
        for value in values:
            self.add(value)
        return True

    def reserve(self, expected: int) -> None:
        """Runs need no room."""

    def flush(self) -> None:
        bucket = self.rt.settings.results_bucket
        for part, buffer in enumerate(self.buffers):
            if not buffer:
                continue
            name = f"{self.prefix}p{part:02d}-{len(self.runs[part]):04d}.bin"
            with self.rt.objects.open_write(
                bucket, name, content_type="application/octet-stream"
            ) as sink:
                sink.write(buffer.tobytes())
            self.runs[part].append(name)
            self.counts[part] += len(buffer)
            self.buffers[part] = array("q")
        self.buffered = 0

    def repeats(self, budget: int) -> SeenHashes:
        """Every value added more than once, a partition at a time."""
        self.flush()
        repeated = SeenHashes(budget_bytes=budget)
        bucket = self.rt.settings.results_bucket
        for part, names in enumerate(self.runs):
            seen = SeenHashes(self.counts[part], budget_bytes=budget)
            for name in names:
                values = array("q")
                values.frombytes(self.rt.objects.read_bytes(bucket, name))
                add = seen.add
                for value in values:
                    if not add(value):
                        repeated.add(value)
            del seen  # freed before the next partition's table
        return repeated

    def delete(self) -> None:
        bucket = self.rt.settings.results_bucket
        for names in self.runs:
            for name in names:
                self.rt.objects.delete(bucket, name)
