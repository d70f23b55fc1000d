"""Intake's dedup within a memory budget (pipeline/intake/dedup.py): a file past the budget
spills its hashes to the object store and stages exactly what the in-memory tables stage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.config import Settings
from bananabatch.core import records as rec
from bananabatch.core.intake import AcceptedLine, LineParser, content_hash
from bananabatch.core.intake.seen import RepeatsOnly, SeenHashes, TableFull
from bananabatch.core.records import JobRecord, SourceObject
from bananabatch.core.states import JobState
from bananabatch.pipeline.intake import dedup, read
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import BatchProvider
from bananabatch.wiring import build_runtime
from tests.unit.test_intake_staging import KeyedProvider

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MODEL = "gemini-3.1-flash-image"
# The smallest budget Settings takes: each in-memory table holds ~2,900 hashes, and each
# spilled partition or table of repeats ~1,400.
TINY = 64 * 1024


def _runtime(root: Path, budget: int) -> Runtime:
    rt = build_runtime(
        Settings(local_root=root, max_requests_per_batch=500, intake_dedup_bytes=budget),
        with_provider=False,
    )
    rt.provider = cast(BatchProvider, KeyedProvider())
    return rt


def _docs(lines: int = 6000) -> list[dict[str, Any]]:
    """More distinct keys and requests than a tiny budget's tables hold, with repeats of
    both at every distance (the same chunk, the next, across the whole file), a cached
    request and its repeat, urgent lines, lines with metadata and without a key."""
    docs: list[dict[str, Any]] = []
    for n in range(1, lines + 1):
        doc: dict[str, Any] = {"key": f"k{n}", "prompt": f"unique {n}"}
        if n % 12 == 0:
            doc["prompt"] = f"shared {n % 500}"  # 500 requests, each ~once a 1,000 lines
        if n % 97 == 0:
            doc["key"] = f"k{n // 2}"  # a repeated key: rejected
        if n % 89 == 0:
            doc["metadata"] = {"n": n}
        if n % 101 == 0:
            del doc["key"]
        if n % 503 == 0:
            doc["priority"] = "urgent"
        docs.append(doc)
    docs.insert(10, {"key": "cached", "prompt": "already made"})
    docs.append({"key": "cached-again", "prompt": "already made"})
    docs.append({"key": "last", "prompt": "shared 7"})
    return docs


def _stage(rt: Runtime, docs: list[dict[str, Any]]) -> tuple[Any, ...]:
    data = "".join(json.dumps(d) + "\n" for d in docs).encode()
    rt.objects.write_bytes(rt.settings.inbox_bucket, "in.jsonl", data, content_type="x")
    parsed = LineParser(default_model=MODEL).parse(1, b'{"prompt": "already made"}')
    assert isinstance(parsed, AcceptedLine)
    rt.objects.write_bytes("old", "made.png", b"\x89PNG", content_type="image/png")
    rt.state.set(
        rec.cache_path(content_hash(parsed)),
        {"bucket": "old", "name": "made.png", "mime_type": "image/png", "job_id": "j0", "key": "x"},
    )
    job = JobRecord(
        job_id="job-1",
        state=JobState.RECEIVED,
        source=SourceObject(bucket=rt.settings.inbox_bucket, name="in.jsonl", generation="1"),
        created_at=NOW,
        updated_at=NOW,
        default_model=MODEL,
        results_prefix="x/",
    )
    rt.repo.create_job(job)
    tally = read.stage_file(rt, job)
    results = rt.settings.results_bucket
    files = [
        (
            b.index,
            rt.objects.read_bytes(results, b.request_object),
            rt.objects.read_bytes(results, b.manifest_object or ""),
        )
        for b in rt.repo.batches(job_id=job.job_id)
    ]
    items = sorted(
        (i.key, i.state.value, i.lane, i.request_hash, i.reason) for i in rt.repo.items(job.job_id)
    )
    rejected = rt.objects.read_bytes(results, rec.results_prefix("job-1") + read.REJECTED_NAME)
    counts = (tally.lines, tally.accepted, tally.rejected, tally.urgent, len(tally.batches))
    money = (tally.estimated_batch_usd, tally.estimated_standard_usd, tally.cache_saved_usd)
    return counts, money, files, items, rejected


@pytest.mark.parametrize("chunk_lines", [4096, 700])
def test_a_file_past_the_budget_spills_and_stages_exactly_what_memory_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_lines: int
) -> None:
    monkeypatch.setattr(read, "CHUNK_LINES", chunk_lines)
    docs = _docs()
    whole = _stage(_runtime(tmp_path / "memory", 256 * 1024 * 1024), docs)
    spills: list[int] = []
    counting = dedup.after_counting

    def spy(*args: Any) -> dedup.Tables:
        tables = counting(*args)
        spills.append(1)
        return tables

    monkeypatch.setattr(dedup, "after_counting", spy)
    tiny = _runtime(tmp_path / "tiny", TINY)
    assert _stage(tiny, docs) == whole
    assert spills == [1]
    # Not vacuous: repeated keys rejected, repeated requests served, a cache hit and its
    # repeat, urgent lines.
    _, _, _, items, rejected = whole
    lanes = [lane for _, _, lane, _, _ in items]
    assert lanes.count("duplicate") > 300
    assert "urgent" in lanes
    assert [s for key, s, *_ in items if key.startswith("cached")] == ["CACHED", "CACHED"]
    assert rejected.count(b"duplicate key") >= 25
    # The spilled runs are gone.
    listed = tiny.objects.list(tiny.settings.results_bucket, "jobs/job-1/" + dedup.SPILL_DIR)
    assert list(listed) == []


def test_a_file_within_the_budget_does_not_spill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any) -> dedup.Tables:
        raise AssertionError("spilled")

    monkeypatch.setattr(dedup, "after_counting", never)
    _stage(_runtime(tmp_path, TINY), _docs(1500))


def test_a_file_whose_repeats_alone_pass_the_budget_is_refused_saying_so(tmp_path: Path) -> None:
    # 3,000 requests each twice: the repeats alone take more than a quarter of 64 KiB.
    docs = [{"prompt": f"twice {n % 3000}"} for n in range(6000)]
    rt = _runtime(tmp_path, TINY)
    with pytest.raises(dedup.DedupOverflow, match="BANANABATCH_INTAKE_DEDUP_BYTES"):
        _stage(rt, docs)
    assert list(rt.objects.list(rt.settings.results_bucket, "jobs/job-1/" + dedup.SPILL_DIR)) == []


def _fill(table: SeenHashes) -> int:
    """Add distinct values until the table is full; how many went in."""
    for n in range(10**6):
        try:
            table.add(hash(f"x{n}"))
        except TableFull:
            return n
    raise AssertionError("never full")


def test_the_in_memory_tables_stay_within_the_budget() -> None:
    tables = dedup.in_memory(TINY)
    for table in (tables.keys, tables.requests):
        assert isinstance(table, SeenHashes)
        assert _fill(table) > 2800
        assert table.nbytes <= TINY // 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=-50, max_value=50), max_size=300), st.data())
def test_a_table_of_repeats_answers_what_a_table_of_everything_answers(
    values: list[int], data: st.DataObject
) -> None:
    repeated = {v for v in values if values.count(v) > 1}
    # Any superset of the true repeats will do (the counting pass may find more).
    extra = data.draw(st.sets(st.integers(min_value=-60, max_value=60), max_size=10))
    repeats = SeenHashes()
    for value in repeated | extra:
        repeats.add(value)
    every, only = SeenHashes(), RepeatsOnly(repeats)
    chunks = data.draw(st.lists(st.integers(min_value=1, max_value=20), max_size=5))
    at = 0
    for size in chunks:
        chunk = values[at : at + size]
        at += size
        assert only.add_all_new(chunk) == every.add_all_new(chunk)
    for value in values[at:]:
        assert only.add(value) == every.add(value)
