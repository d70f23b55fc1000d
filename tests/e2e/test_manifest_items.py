"""Batch-lane items are created from manifests when their batch is submitted, not at
intake. Whatever happens to batches that were never submitted (the job is cancelled, or
rejected while HELD), every input line still ends in exactly one terminal state, in the
state store and in results.jsonl and summary.json, and nothing unsubmitted is paid for."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bananabatch.config import Backend, Settings
from bananabatch.core.states import ITEM_TERMINAL, JOB_TERMINAL, BatchState, ItemState, JobState
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.local.runner import LocalPipeline
from bananabatch.pipeline import control
from bananabatch.wiring import build_runtime

GOOD = [{"key": f"k{n}", "prompt": f"a pear, study {n}"} for n in range(1, 10)]
BAD = {"key": "bad", "prompt": "x", "aspect_ratio": "7:3"}
LINES = [*GOOD[:4], BAD, *GOOD[4:]]  # 10 lines, 9 accepted: batches of 2 -> 5 batches


@pytest.fixture
def held_emulator() -> Iterator[EmulatorServer]:
    # Batches stay PENDING until cancelled, so the job has queued batches to cancel.
    config = EmulatorConfig(pending_seconds=math.inf, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def pipeline(tmp_path: Path, held_emulator: EmulatorServer) -> Iterator[LocalPipeline]:
    settings = Settings(
        backend=Backend.LOCAL,
        local_root=tmp_path / "state",
        gemini_base_url=held_emulator.base_url,
        gemini_api_key="test-key",
        max_requests_per_batch=2,
        max_active_batches=1,
    )
    local = LocalPipeline(build_runtime(settings))
    yield local
    local.close()


def _upload(pipeline: LocalPipeline, tmp_path: Path, **metadata: str) -> str:
    path = tmp_path / "pears.jsonl"
    path.write_text("".join(json.dumps(doc) + "\n" for doc in LINES))
    return pipeline.upload(path, metadata=metadata or None)


def _finish(pipeline: LocalPipeline, job_id: str) -> None:
    for _ in range(30):
        pipeline.tick()
        pipeline.drain()
        if pipeline.runtime.repo.require_job(job_id).state in JOB_TERMINAL:
            return
    raise AssertionError(f"job {job_id} did not finish")


def _results(pipeline: LocalPipeline, job_id: str, name: str) -> bytes:
    return pipeline.runtime.objects.read_bytes(
        pipeline.settings.results_bucket, f"jobs/{job_id}/{name}"
    )


def _assert_one_terminal_state_per_line(pipeline: LocalPipeline, job_id: str) -> None:
    rt = pipeline.runtime
    items = list(rt.repo.items(job_id))
    keys = [item.key for item in items]
    assert sorted(keys) == sorted(doc["key"] for doc in GOOD)  # each once
    assert all(item.state in ITEM_TERMINAL for item in items), [(i.key, i.state) for i in items]
    results = [
        json.loads(line)
        for line in _results(pipeline, job_id, "results.jsonl").split(b"\n")
        if line
    ]
    assert [r["line"] for r in results] == list(range(1, len(LINES) + 1))
    assert all(r["status"] in {s.value for s in ITEM_TERMINAL} for r in results)
    summary: dict[str, Any] = json.loads(_results(pipeline, job_id, "summary.json"))
    assert sum(summary["counts"].values()) == summary["line_count"] == len(LINES)
    assert summary["counts"][ItemState.REJECTED.value] == 1


def test_intake_writes_manifests_not_items_and_counts_their_lines_as_pending(
    pipeline: LocalPipeline, held_emulator: EmulatorServer, tmp_path: Path
) -> None:
    job_id = _upload(pipeline, tmp_path)
    rt = pipeline.runtime
    batches = list(rt.repo.batches(job_id=job_id))
    assert [b.request_count for b in batches] == [2, 2, 2, 2, 1]
    assert all(b.manifest_object for b in batches)
    submitted = [b for b in batches if b.state is not BatchState.QUEUED]
    assert len(submitted) == 1
    assert submitted[0].items_materialized
    # Item records exist for the submitted batch only; the rest are counted from manifests.
    assert sorted(i.key for i in rt.repo.items(job_id)) == ["k1", "k2"]
    assert rt.repo.count_items(job_id, ItemState.SUBMITTED) == 2
    assert rt.repo.count_items(job_id, ItemState.PENDING) == 7
    assert held_emulator.state.counters.batches_created == 1


def test_cancelling_a_job_with_never_submitted_batches_ends_every_line_once(
    pipeline: LocalPipeline, held_emulator: EmulatorServer, tmp_path: Path
) -> None:
    job_id = _upload(pipeline, tmp_path)

    outcome = control.cancel_job(pipeline.runtime, job_id)
    _finish(pipeline, job_id)

    assert outcome["cancelled_batches"] == 5
    job = pipeline.runtime.repo.require_job(job_id)
    assert job.state is JobState.CANCELLED
    _assert_one_terminal_state_per_line(pipeline, job_id)
    failed = {i.key: i.reason for i in pipeline.runtime.repo.items(job_id)}
    assert (
        failed["k9"] == "no output: the batch ended CANCELLED: cancelled by user before submission"
    )
    # Only the one batch submitted before the cancel ever reached the provider.
    pipeline.tick()
    assert held_emulator.state.counters.batches_created == 1
    assert all(
        b.state is BatchState.COLLECTED for b in pipeline.runtime.repo.batches(job_id=job_id)
    )


def test_rejecting_a_held_job_fails_the_items_of_every_batch_without_paying(
    pipeline: LocalPipeline, held_emulator: EmulatorServer, tmp_path: Path
) -> None:
    job_id = _upload(pipeline, tmp_path, **{"bananabatch-budget-usd": "0.01"})
    rt = pipeline.runtime
    assert rt.repo.require_job(job_id).state is JobState.HELD
    assert list(rt.repo.items(job_id)) == []
    assert rt.repo.count_items(job_id, ItemState.PENDING) == 9

    job = control.reject(rt, job_id)

    assert job.state is JobState.CANCELLED
    _assert_one_terminal_state_per_line(pipeline, job_id)
    assert {i.reason for i in rt.repo.items(job_id)} == {control.REJECTED_REASON}
    assert rt.repo.count_items(job_id, ItemState.PENDING) == 0
    pipeline.tick()
    assert held_emulator.state.counters.batches_created == 0
