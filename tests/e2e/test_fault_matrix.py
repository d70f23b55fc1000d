"""The fault matrix: each fault the emulator can inject, and a crash at every step boundary,
on the local stack. Every scenario ends with the same four checks (`assert_invariants`):

1. every input line ends in exactly one terminal state;
2. every SUCCEEDED item has its image in the results bucket;
3. nothing was paid for twice. Precisely: the emulator records every row it accepted for
   generation; for each key of the job, the accepted rows are exactly one per attempt
   1..item.attempt. A retry of a FAILED row is a new attempt (a new, deliberate request
   for a result the provider did not give), so it is not a duplicate; the same
   (key, attempt) accepted twice would be. Without retries this is simply
   `emu.state.duplicate_keys(prefix) == []`;
4. exactly one completion message was published for the job.

Time never passes by itself: the emulator runs on a ManualClock with zero delays, and the
runtime's clock is a FakeClock the scenario moves forward (grace periods, backoff, the
stuck-batch watchdog).
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bananabatch import entrypoints, events, faults
from bananabatch.config import Backend, Settings
from bananabatch.core.records import display_name_for, job_id_for
from bananabatch.core.states import ITEM_TERMINAL, JOB_TERMINAL, BatchState, ItemState
from bananabatch.emulator.faults import FaultPlan
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.local.runner import LocalPipeline
from bananabatch.wiring import build_runtime

PROMPTS = [
    '{"key": "k1", "prompt": "a red apple"}',
    '{"key": "k2", "prompt": "a green pear", "aspect_ratio": "16:9"}',
    '{"key": "k3", "prompt": "a yellow banana"}',
    '{"key": "k4", "prompt": "a purple plum"}',
    '{"key": "k5", "prompt": "an orange orange"}',
]
STEP = timedelta(minutes=15)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Stack:
    pipeline: LocalPipeline
    emulator: EmulatorServer
    clock: FakeClock
    tmp: Path

    @property
    def faults(self) -> FaultPlan:
        return self.emulator.state.faults

    def write(self, lines: list[str], name: str = "prompts.jsonl") -> Path:
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def settle(
        self, job_id: str, *, rounds: int = 12, between: Callable[[], object] | None = None
    ) -> list[dict[str, Any]]:
        """Drain, tick and move the clock until the job is terminal and announced."""
        completions: list[dict[str, Any]] = []
        repo = self.pipeline.runtime.repo
        for _ in range(rounds):
            self.pipeline.drain()
            completions += [m for m in self.pipeline.completions() if m["job_id"] == job_id]
            job = repo.get_job(job_id)
            if job is not None and job.state in JOB_TERMINAL and completions:
                break
            if between is not None:
                between()
            self.clock.advance(STEP)
            self.pipeline.tick()
        # One more full round: late signals must not produce anything new.
        self.pipeline.tick()
        self.pipeline.drain()
        completions += [m for m in self.pipeline.completions() if m["job_id"] == job_id]
        return completions


def _stack(tmp_path: Path, config: EmulatorConfig, **settings: Any) -> Iterator[Stack]:
    clock = FakeClock()
    with EmulatorServer(config) as server:
        runtime = build_runtime(
            Settings(
                backend=Backend.LOCAL,
                local_root=tmp_path / "state",
                gemini_base_url=server.base_url,
                gemini_api_key="test-key",
                max_requests_per_batch=3,
                **settings,
            )
        )
        runtime.clock = clock
        pipeline = LocalPipeline(runtime)
        try:
            yield Stack(pipeline, server, clock, tmp_path)
        finally:
            faults.reset()
            pipeline.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    yield from _stack(tmp_path, config)


@pytest.fixture
def held_stack(tmp_path: Path) -> Iterator[Stack]:
    # Batches never finish on their own: only emu.state.complete() moves them.
    config = EmulatorConfig(pending_seconds=math.inf, running_seconds=math.inf, clock=ManualClock())
    yield from _stack(tmp_path, config)


def assert_invariants(
    stack: Stack, job_id: str, completions: list[dict[str, Any]]
) -> dict[str, Any]:
    runtime = stack.pipeline.runtime
    job = runtime.repo.require_job(job_id)
    assert job.state in JOB_TERMINAL, job.state
    items = list(runtime.repo.items(job_id))
    # 1. one terminal state per input line
    assert all(item.state in ITEM_TERMINAL for item in items), [
        (i.key, i.state) for i in items if i.state not in ITEM_TERMINAL
    ]
    summary = stack.pipeline.summary(job_id)
    assert sum(summary["counts"].values()) == job.line_count == summary["line_count"]
    assert len(items) + job.rejected_count == job.line_count
    # 2. every success has its image
    results = (
        stack.pipeline.settings.local_root / "buckets" / stack.pipeline.settings.results_bucket
    )
    for item in items:
        if item.state is ItemState.SUCCEEDED:
            assert item.image_uri is not None
            assert (results / "jobs" / job_id / "images" / f"{item.key}.png").is_file(), item.key
    # 3. nothing paid twice: one accepted row per (key, attempt)
    prefix = display_name_for(f"{job_id}-")
    accepted = stack.emulator.state.submitted_keys(prefix)
    submitted = {i.key: i.attempt for i in items if i.state is not ItemState.CACHED}
    assert {k: n for k, n in accepted.items() if n} == {
        k: a for k, a in submitted.items() if k in accepted
    }
    retried = sorted(k for k, a in submitted.items() if a > 1)
    assert stack.emulator.state.duplicate_keys(prefix) == retried
    # 4. exactly one completion
    assert len(completions) == 1, completions
    assert completions[0]["state"] == job.state.value
    return summary


def _upload(stack: Stack, lines: list[str]) -> str:
    return stack.pipeline.upload(stack.write(lines))


def _items(stack: Stack, job_id: str) -> dict[str, Any]:
    return {i.key: i for i in stack.pipeline.runtime.repo.items(job_id)}


# --- the clean run ---------------------------------------------------------------------


def test_a_clean_run_satisfies_every_invariant(stack: Stack) -> None:
    job_id = _upload(stack, PROMPTS)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    assert summary["counts"]["SUCCEEDED"] == 5


# --- idempotent intake -----------------------------------------------------------------


def test_a_redelivered_and_a_concurrent_duplicate_upload_event_create_one_job(
    stack: Stack,
) -> None:
    path = stack.write(PROMPTS)
    objects = stack.pipeline.runtime.objects
    bucket = stack.pipeline.settings.inbox_bucket
    with (
        path.open("rb") as source,
        objects.open_write(bucket, "prompts.jsonl", content_type="application/jsonl") as sink,
    ):
        sink.write(source.read())
    info = objects.stat(bucket, "prompts.jsonl")
    assert info is not None
    assert info.generation is not None
    attributes, data = events.storage_finalized_event(
        bucket=bucket,
        name="prompts.jsonl",
        generation=info.generation,
        size=info.size,
        content_type="application/jsonl",
    )
    job_id = job_id_for(events.StorageObjectData.model_validate(data).source())
    threads = [
        threading.Thread(target=stack.pipeline.deliver, args=("on_upload", attributes, data))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.pipeline.deliver("on_upload", attributes, data)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert len(stack.emulator.state.batch_names()) == 2


# --- submission ledger and backpressure ------------------------------------------------


def test_quota_refusals_leave_batches_queued_and_the_tick_submits_them_later(
    stack: Stack,
) -> None:
    stack.faults.create_429 = 3
    job_id = _upload(stack, PROMPTS)
    queued = list(stack.pipeline.runtime.repo.batches(job_id=job_id, states=[BatchState.QUEUED]))
    # The first refusal backs that batch off and stops the round: the rest would be
    # refused too, so they wait, QUEUED, for the tick.
    assert len(queued) == 2
    assert any(b.next_submit_after is not None for b in queued)
    assert stack.emulator.state.counters.batches_created == 0
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert stack.emulator.state.counters.batches_created == 2


def test_a_create_whose_answer_is_lost_is_reconciled_by_display_name_not_recreated(
    stack: Stack,
) -> None:
    stack.faults.lose_create_response = 1
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert stack.emulator.state.counters.batches_created == 2


def test_a_create_that_failed_with_500_is_requeued_after_the_grace_and_created_once(
    stack: Stack,
) -> None:
    stack.faults.create_500 = 1
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert stack.emulator.state.counters.batches_created == 2


def test_the_tick_keeps_under_the_active_batch_limit(tmp_path: Path) -> None:
    config = EmulatorConfig(pending_seconds=math.inf, running_seconds=math.inf, clock=ManualClock())
    for stack in _stack(tmp_path, config, max_active_batches=1):
        job_id = _upload(stack, PROMPTS)
        assert len(stack.emulator.state.batch_names()) == 1
        stack.pipeline.tick()
        assert len(stack.emulator.state.batch_names()) == 1
        completions = stack.settle(job_id, between=stack.emulator.state.complete_all)
        assert len(stack.emulator.state.batch_names()) == 2
        assert_invariants(stack, job_id, completions)


# --- outcomes and retries --------------------------------------------------------------


def test_each_row_outcome_ends_terminal_and_only_retryable_failures_are_retried(
    stack: Stack,
) -> None:
    stack.faults.rows["k1"] = _once("error")  # INTERNAL once: retried, then succeeds
    stack.faults.row_error("k2", code=3, message="Invalid request")  # permanent
    stack.faults.row("k3", "image_safety")
    stack.faults.row("k4", "duplicate")
    stack.faults.row("k5", "missing", times=1)  # missing once: retried
    job_id = _upload(stack, PROMPTS)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = _items(stack, job_id)
    assert (items["k1"].state, items["k1"].attempt) == (ItemState.SUCCEEDED, 2)
    assert (items["k2"].state, items["k2"].attempt) == (ItemState.FAILED, 1)
    assert "Invalid request" in (items["k2"].reason or "")
    assert (items["k3"].state, items["k3"].attempt) == (ItemState.BLOCKED, 1)
    assert (items["k4"].state, items["k4"].attempt) == (ItemState.SUCCEEDED, 1)
    assert (items["k5"].state, items["k5"].attempt) == (ItemState.SUCCEEDED, 2)
    assert summary["counts"]["SUCCEEDED"] == 3


def test_a_row_that_always_fails_retryably_stops_at_max_attempts(stack: Stack) -> None:
    stack.faults.row_error("k1")
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    item = _items(stack, job_id)["k1"]
    max_attempts = stack.pipeline.settings.max_attempts
    assert (item.state, item.attempt) == (ItemState.FAILED, max_attempts)
    assert stack.emulator.state.submitted_keys()["k1"] == max_attempts


@pytest.mark.parametrize("state", ["FAILED", "EXPIRED"])
def test_a_failed_or_expired_batch_is_resubmitted_once_in_a_new_batch(
    stack: Stack, state: str
) -> None:
    stack.faults.job(state, display_name="*-b0001-a1")  # type: ignore[arg-type]
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    items = _items(stack, job_id)
    assert all(i.state is ItemState.SUCCEEDED for i in items.values())
    assert sorted(k for k, i in items.items() if i.attempt == 2) == ["k1", "k2", "k3"]


def test_a_batch_stuck_past_the_watchdog_is_cancelled_and_its_items_resubmitted_once(
    held_stack: Stack,
) -> None:
    stack = held_stack
    job_id = _upload(stack, PROMPTS[:2])
    stack.clock.advance(timedelta(hours=stack.pipeline.settings.stuck_after_hours + 1))
    stack.pipeline.tick()
    stack.pipeline.drain()
    names = stack.emulator.state.batch_names()
    assert len(names) == 2
    assert stack.emulator.state.batch_state(names[0]) == "BATCH_STATE_CANCELLED"
    completions = stack.settle(job_id, between=stack.emulator.state.complete_all)
    assert_invariants(stack, job_id, completions)
    items = _items(stack, job_id)
    assert {(i.state, i.attempt) for i in items.values()} == {(ItemState.SUCCEEDED, 2)}


# --- collection ------------------------------------------------------------------------


def test_a_truncated_download_is_not_collected_and_is_resumed_on_redelivery(
    stack: Stack,
) -> None:
    stack.faults.truncate_downloads = 1
    job_id = _upload(stack, PROMPTS)
    completions = stack.settle(job_id)
    assert stack.pipeline.failed_deliveries >= 1
    assert_invariants(stack, job_id, completions)
    assert all(i.state is ItemState.SUCCEEDED for i in _items(stack, job_id).values())


def test_a_claimed_but_unpublished_completion_is_published_by_a_later_tick(
    stack: Stack,
) -> None:
    faults.arm("finalize.after_claim")
    job_id = _upload(stack, PROMPTS[:1])
    stack.pipeline.tick()
    # The redelivered batch-done finds the claim taken and publishes nothing: the claim
    # is what makes a second message impossible, so recovery has to come from the tick.
    stack.pipeline.drain()
    assert (faults.hits("finalize.after_claim"), stack.pipeline.failed_deliveries) == (1, 1)
    job = stack.pipeline.runtime.repo.require_job(job_id)
    assert job.state in JOB_TERMINAL
    assert (job.completion_pending, job.completion_published) == (False, False)
    stack.pipeline.tick()  # too soon: a live publisher may still be at work
    assert stack.pipeline.completions() == []
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)


# --- a crash at every step boundary, then the event again --------------------------------


@pytest.mark.parametrize("point", [p for p in faults.POINTS if p != "finalize.after_claim"])
def test_a_crash_at_each_step_boundary_is_recovered_by_redelivery(stack: Stack, point: str) -> None:
    stack.faults.rows["k2"] = _once("error")  # so the retry path's boundaries are crossed
    faults.arm(point)
    job_id = _upload(stack, PROMPTS)
    completions = stack.settle(job_id)
    assert faults.hits(point) == 1
    assert stack.pipeline.failed_deliveries == 1
    assert_invariants(stack, job_id, completions)
    assert Counter(i.state for i in _items(stack, job_id).values()) == {ItemState.SUCCEEDED: 5}


def _once(kind: str) -> Any:
    from bananabatch.emulator.faults import RowFault

    return RowFault(kind, times=1)  # type: ignore[arg-type]


def test_json_lines_in_the_matrix_are_valid() -> None:
    assert all(isinstance(json.loads(line), dict) for line in PROMPTS)


# --- push completion: webhooks with poll reconciliation ---------------------------------


def _webhook_stack(tmp_path: Path) -> Iterator[Stack]:
    """Dynamic per-batch webhooks (RS256 JWT, keys from the emulator's JWKS endpoint);
    batches are held until a test completes them, so only webhooks or ticks announce them."""
    config = EmulatorConfig(pending_seconds=math.inf, running_seconds=math.inf, clock=ManualClock())
    for stack in _stack(
        tmp_path,
        config,
        webhook_mode="dynamic",
        webhook_url="http://functions.local/on_gemini_webhook",
    ):
        runtime = stack.pipeline.runtime
        # The JWKS URL is the emulator's, known only once it listens.
        jwks_url = stack.emulator.base_url + "/.well-known/jwks.json"
        runtime.settings = runtime.settings.model_copy(update={"webhook_jwks_url": jwks_url})

        def to_function(_uri: str, headers: Any, body: bytes, rt: Any = runtime) -> int:
            return entrypoints.gemini_webhook(rt, headers, body)[1]

        stack.emulator.state.webhooks.sender = to_function
        yield stack


def test_webhooks_announce_finished_batches_and_duplicates_or_late_ones_are_harmless(
    tmp_path: Path,
) -> None:
    for stack in _webhook_stack(tmp_path):
        hooks = stack.emulator.state.webhooks
        hooks.faults.duplicate, hooks.faults.delay = 1, 1
        job_id = _upload(stack, PROMPTS)
        stack.emulator.state.complete_all()
        # The duplicate carries the same webhook-id: the replay is refused with 409.
        assert sorted(stack.emulator.state.flush_webhooks()) == [200, 409]
        stack.pipeline.drain()
        assert stack.pipeline.completions() == []
        assert hooks.release() == 1
        assert stack.emulator.state.flush_webhooks() == [200]
        completions = stack.settle(job_id, rounds=1)
        assert_invariants(stack, job_id, completions)


def test_a_lost_webhook_delays_nothing_beyond_one_tick(tmp_path: Path) -> None:
    for stack in _webhook_stack(tmp_path):
        stack.emulator.state.webhooks.faults.drop = 2
        job_id = _upload(stack, PROMPTS)
        stack.emulator.state.complete_all()
        assert stack.emulator.state.flush_webhooks() == []
        assert stack.pipeline.drain() == 0
        stack.pipeline.tick()
        stack.pipeline.drain()
        job = stack.pipeline.runtime.repo.require_job(job_id)
        assert job.state in JOB_TERMINAL
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))
