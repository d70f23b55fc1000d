"""Intake's staging on the local stores: request files and manifests agree line for line,
the per-shape templates write exactly what the provider's own encoding would, estimates
are the price book's, and long lines are flushed by size rather than held."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from bananabatch.config import Settings
from bananabatch.core import records as rec
from bananabatch.core.intake import AcceptedLine, LineParser, content_hash
from bananabatch.core.manifest import decode_entry
from bananabatch.core.pricing import Lane
from bananabatch.core.records import JobRecord, SourceObject
from bananabatch.core.states import JobState
from bananabatch.pipeline.intake import publish, read
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import BatchProvider
from bananabatch.wiring import build_runtime

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MODEL = "gemini-3.1-flash-image"


class KeyedProvider:
    """The Developer API's line form: {"key", "request"}."""

    kind = "keyed"

    def encode_request(self, key: str, request: Mapping[str, Any]) -> dict[str, Any]:
        return {"key": key, "request": dict(request)}

    def decode_request(self, line: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return str(line["key"]), dict(line["request"])


class LabelledProvider(KeyedProvider):
    """A provider that transforms the key (as Vertex does into labels): no template."""

    kind = "labelled"

    def encode_request(self, key: str, request: Mapping[str, Any]) -> dict[str, Any]:
        return {"request": {**request, "labels": {"k": key.encode().hex()}}}

    def decode_request(self, line: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        request = dict(line["request"])
        key = bytes.fromhex(request.pop("labels")["k"]).decode()
        return key, request


def _runtime(tmp_path: Path, provider: object) -> Runtime:
    rt = build_runtime(
        Settings(local_root=tmp_path, max_requests_per_batch=40), with_provider=False
    )
    rt.provider = cast(BatchProvider, provider)
    return rt


def _lines() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for n in range(1, 301):
        doc: dict[str, Any] = {"key": f"k{n}", "prompt": f'ünï ✓ "{n}" ' + "x" * (n * 50)}
        if n % 7 == 0:
            doc["image_size"] = "2K"
        if n % 11 == 0:
            doc["aspect_ratio"] = "16:9"
        if n % 13 == 0:
            doc["model"] = "gemini-3-pro-image"
        if n % 17 == 0:
            doc["reference_images"] = ["gs://inbox/references/ref.png"]
        docs.append(doc)
    docs.append({"key": "bad", "prompt": "x", "aspect_ratio": "7:3"})
    docs.append({"key": "again", "prompt": docs[0]["prompt"]})  # an in-file duplicate
    return docs


def _stage(rt: Runtime, docs: list[dict[str, Any]]) -> tuple[JobRecord, Any]:
    data = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()
    rt.objects.write_bytes(rt.settings.inbox_bucket, "in.jsonl", data, content_type="x")
    # The reference image some lines name: intake checks that it exists and is an image.
    png = b"\x89PNG\r\n\x1a\n" + bytes(24)
    rt.objects.write_bytes(
        rt.settings.inbox_bucket, "references/ref.png", png, content_type="image/png"
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
    return job, read.stage_file(rt, job)


@pytest.mark.parametrize("provider", [KeyedProvider(), LabelledProvider()])
def test_request_files_and_manifests_agree_and_match_the_generic_encoding(
    tmp_path: Path, provider: KeyedProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small buffers and chunks, so that flushing by size and by count both happen.
    monkeypatch.setattr(publish, "WRITE_BYTES", 64 * 1024)
    monkeypatch.setattr(read, "CHUNK_LINES", 50)
    rt = _runtime(tmp_path, provider)
    docs = _lines()
    job, tally = _stage(rt, docs)

    parser = LineParser(default_model=MODEL)
    expected = {}
    for n, doc in enumerate(docs, start=1):
        line = parser.parse(n, json.dumps(doc, ensure_ascii=False).encode())
        if isinstance(line, AcceptedLine):
            expected[line.key] = line
    assert (tally.lines, tally.accepted, tally.rejected) == (302, 301, 1)

    staged_keys: list[str] = []
    total = 0.0
    results = rt.settings.results_bucket
    batches = list(rt.repo.batches(job_id=job.job_id))
    # Records are made as the batches close (on publisher threads for a network store),
    # and ordered as they were closed.
    assert [b.index for b in batches] == [planned.index for planned in tally.batches]
    for batch in batches:
        raw_requests = rt.objects.read_bytes(results, batch.request_object).splitlines()
        assert batch.manifest_object == rec.manifest_object_name(job.job_id, batch.index)
        raw_entries = rt.objects.read_bytes(results, batch.manifest_object).splitlines()
        assert len(raw_requests) == len(raw_entries) == batch.request_count
        for raw, raw_entry in zip(raw_requests, raw_entries, strict=True):
            key, request = provider.decode_request(json.loads(raw))
            entry = decode_entry(raw_entry, where="test")
            line = expected[key]
            assert entry.key == key
            # Byte for byte what the provider's own encoding gives.
            assert raw.decode() == json.dumps(
                provider.encode_request(key, line.request),
                separators=(",", ":"),
                ensure_ascii=False,
            )
            assert request == line.request
            assert batch.model == line.model
            assert entry.line_no == line.line_no
            # The dedup cache's key: the same hash whichever path computed it.
            assert entry.request_hash == content_hash(line)
            assert entry.prompt_preview == line.prompt_preview
            assert (entry.aspect_ratio, entry.image_size) == (line.aspect_ratio, line.image_size)
            price = rt.prices.estimate_line(line, Lane.BATCH)
            assert entry.estimated_usd == round(price, 6)
            total += price
            staged_keys.append(key)
    # Every accepted line but the duplicate is staged once, in input order per model.
    assert sorted(staged_keys) == sorted(k for k in expected if k != "again")
    assert tally.estimated_batch_usd == pytest.approx(total, rel=1e-12)
    (duplicate,) = rt.repo.items(job.job_id)
    assert (duplicate.key, duplicate.lane) == ("again", "duplicate")


class _Boom(Exception):
    pass


class FailingObjects:
    """The local object store, failing the open of one object; its writes run inline or on
    threads, as write_concurrency says."""

    def __init__(self, inner: Any, fail_on: str, write_concurrency: int) -> None:
        self._inner = inner
        self._fail_on = fail_on
        self.write_concurrency = write_concurrency

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def open_write(self, bucket: str, name: str, **kw: Any) -> Any:
        if name.endswith(self._fail_on):
            raise _Boom(name)
        return self._inner.open_write(bucket, name, **kw)


@pytest.mark.parametrize("write_concurrency", [1, 4])
def test_a_failed_staged_write_stops_intake_and_publishes_no_partial_batch(
    tmp_path: Path, write_concurrency: int
) -> None:
    rt = _runtime(tmp_path, KeyedProvider())
    docs = [{"key": f"k{n}", "prompt": f"p{n}"} for n in range(1, 201)]
    rt.objects = FailingObjects(rt.objects, "manifests/batch-0003.jsonl", write_concurrency)
    with pytest.raises(_Boom):
        _stage(rt, docs)
    results = rt.settings.results_bucket
    assert rt.objects.stat(results, rec.request_object_name("job-1", 3)) is None
    indexes = {b.index for b in rt.repo.batches(job_id="job-1")}
    assert 3 not in indexes
    # Whatever was recorded before the failure is whole: a redelivery restages the rest.
    for index in indexes:
        name = rec.request_object_name("job-1", index)
        assert len(rt.objects.read_bytes(results, name).splitlines()) == 40


def _repeating_lines() -> list[dict[str, Any]]:
    """Plain lines whose prompts repeat at every distance, a few with options, one whose
    request is in the cache, and one urgent line."""
    docs: list[dict[str, Any]] = []
    for n in range(1, 121):
        doc: dict[str, Any] = {"key": f"k{n}", "prompt": f"prompt {n % 37}"}
        if n % 9 == 0:
            doc["image_size"] = "2K"
        docs.append(doc)
    docs.append({"key": "cached", "prompt": "already made"})
    docs.append({"key": "cached-again", "prompt": "already made"})
    docs.append({"key": "now", "prompt": "right now", "priority": "urgent"})
    return docs


def _staged(rt: Runtime, docs: list[dict[str, Any]]) -> tuple[Any, ...]:
    parsed = LineParser(default_model=MODEL).parse(1, b'{"prompt": "already made"}')
    assert isinstance(parsed, AcceptedLine)
    digest = content_hash(parsed)
    rt.objects.write_bytes("old", "made.png", b"\x89PNG", content_type="image/png")
    rt.state.set(
        rec.cache_path(digest),
        {"bucket": "old", "name": "made.png", "mime_type": "image/png", "job_id": "j0", "key": "x"},
    )
    job, tally = _stage(rt, docs)
    results = rt.settings.results_bucket
    files = []
    for batch in rt.repo.batches(job_id=job.job_id):
        assert batch.manifest_object is not None
        files.append(
            (
                batch.index,
                rt.objects.read_bytes(results, batch.request_object),
                rt.objects.read_bytes(results, batch.manifest_object),
            )
        )
    items = sorted(
        (i.key, i.state.value, i.lane, i.request_hash, i.reason) for i in rt.repo.items(job.job_id)
    )
    counts = (tally.lines, tally.accepted, tally.rejected, tally.urgent, len(tally.batches))
    money = (tally.estimated_batch_usd, tally.estimated_standard_usd, tally.cache_saved_usd)
    return counts, money, files, items


@pytest.mark.parametrize("chunk_lines", [1, 2, 3, 7, 50])
def test_lines_staged_a_chunk_at_a_time_give_what_one_chunk_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_lines: int
) -> None:
    # Repeats and cache hits then fall in the same chunk, the next one, or further on;
    # the chunk still waiting for its lookup (LOOKAHEAD) must not change any answer.
    docs = _repeating_lines()
    whole = _staged(_runtime(tmp_path / "whole", KeyedProvider()), docs)
    monkeypatch.setattr(read, "CHUNK_LINES", chunk_lines)
    assert _staged(_runtime(tmp_path / "chunked", KeyedProvider()), docs) == whole
    # Staged on publisher threads, as for a network store: the same files and records.
    threaded = _runtime(tmp_path / "threaded", KeyedProvider())
    threaded.objects = FailingObjects(threaded.objects, "never", write_concurrency=4)
    assert _staged(threaded, docs) == whole
    _, _, _, items = whole
    lanes = [lane for _, _, lane, _, _ in items]
    # Not vacuous: in-file repeats, a cache hit and its repeat, and the urgent line.
    assert lanes.count("duplicate") > 50
    assert [state for key, state, *_ in items if key.startswith("cached")] == ["CACHED", "CACHED"]
    assert "urgent" in lanes
