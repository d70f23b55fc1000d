"""The emulator's batch-level and download faults, on its state and its HTTP app: stuck
batches never finish on their own, and a slow download hands each chunk to a hook (where a
test moves its clock) instead of taking wall-clock time."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from bananabatch.emulator.app import create_app
from bananabatch.emulator.faults import FaultPlan
from bananabatch.emulator.store import Batch, EmulatorConfig, EmulatorState, ManualClock

REQUEST = {"contents": [{"parts": [{"text": "a lighthouse"}]}]}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def state(clock: ManualClock) -> Iterator[EmulatorState]:
    emulator = EmulatorState(EmulatorConfig(pending_seconds=1.0, running_seconds=2.0, clock=clock))
    yield emulator
    emulator.close()


def _inline_batch(state: EmulatorState, display_name: str, rows: int = 2) -> Batch:
    requests = [{"request": REQUEST, "metadata": {"key": f"k{n}"}} for n in range(rows)]
    body = {
        "batch": {"displayName": display_name, "inputConfig": {"requests": {"requests": requests}}}
    }
    return state.create_batch("gemini-3.1-flash-image", body)


def _file_batch(state: EmulatorState, rows: int) -> Batch:
    lines = [json.dumps({"key": f"k{n}", "request": REQUEST}) for n in range(rows)]
    data = ("\n".join(lines) + "\n").encode()
    session = state.start_upload({"file": {"displayName": "in"}}, "application/jsonl", len(data))
    _, entry = state.upload_chunk(session.upload_id, 0, data, finalize=True)
    assert entry is not None
    body = {"batch": {"displayName": "file", "inputConfig": {"fileName": f"files/{entry.file_id}"}}}
    return state.create_batch("gemini-3.1-flash-image", body)


def test_a_stuck_batch_runs_forever_whatever_the_timing_and_a_cancel_ends_it_with_no_rows(
    state: EmulatorState, clock: ManualClock
) -> None:
    state.faults.stick("job-*-a1")
    stuck = _inline_batch(state, "job-b0001-a1")
    healthy = _inline_batch(state, "job-b0001-a2")
    assert state.batch_state(stuck.name) == "BATCH_STATE_PENDING"
    clock.advance(10 * 365 * 24 * 3600)
    assert state.batch_state(stuck.name) == "BATCH_STATE_RUNNING"
    assert state.batch_state(healthy.name) == "BATCH_STATE_SUCCEEDED"
    state.cancel_batch(stuck.name)
    assert state.batch_state(stuck.name) == "BATCH_STATE_CANCELLED"
    operation = state.operation_json(state.get_batch(stuck.name))
    assert "output" not in operation["metadata"]
    assert "successfulRequestCount" not in operation["metadata"]["batchStats"]


def test_a_stuck_batch_stays_stuck_even_with_zero_delays_until_the_control_api_completes_it(
    clock: ManualClock,
) -> None:
    config = EmulatorConfig(
        pending_seconds=0.0, running_seconds=0.0, clock=clock, faults=FaultPlan().stick()
    )
    state = EmulatorState(config)
    try:
        batch = _inline_batch(state, "anything")
        assert state.batch_state(batch.name) == "BATCH_STATE_RUNNING"
        assert state.complete(batch.name) == "BATCH_STATE_SUCCEEDED"
    finally:
        state.close()


def test_the_stuck_pattern_is_matched_when_the_batch_is_created(state: EmulatorState) -> None:
    early = _inline_batch(state, "early")
    state.faults.stick("*")
    late = _inline_batch(state, "late")
    state.faults.stuck.clear()
    state.config.pending_seconds = state.config.running_seconds = 0.0
    assert state.batch_state(early.name) == "BATCH_STATE_SUCCEEDED"
    assert state.batch_state(late.name) == "BATCH_STATE_RUNNING"


def test_a_slow_download_serves_the_whole_file_calling_the_hook_once_per_chunk(
    state: EmulatorState,
) -> None:
    state.config.pending_seconds = state.config.running_seconds = 0.0
    batch = _file_batch(state, rows=3)
    assert state.batch_state(batch.name) == "BATCH_STATE_SUCCEEDED"
    assert batch.output_file is not None
    file_id = batch.output_file.removeprefix("files/")
    expected = state.download_path(batch.output_file).path.read_bytes()
    waited: list[float] = []
    state.faults.slow_download(waited.append, chunk_bytes=1000, seconds_per_chunk=7.5)
    url = f"/download/v1beta/files/{file_id}:download?alt=media"
    with TestClient(create_app(state)) as client:
        slow = client.get(url, headers={"x-goog-api-key": "k"})
        fast = client.get(url, headers={"x-goog-api-key": "k"})
    assert slow.status_code == fast.status_code == 200
    assert slow.content == fast.content == expected
    assert slow.headers["content-length"] == str(len(expected))
    # One call per chunk served, and only for the one slow download.
    assert waited == [7.5] * math.ceil(len(expected) / 1000)
    assert state.counters.downloads[file_id] == 3  # the download_path above counts too


def test_a_slow_download_needs_a_positive_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        FaultPlan().slow_download(lambda _s: None, chunk_bytes=0)
