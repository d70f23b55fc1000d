"""Fault-matrix scenarios of issue 21 point 4 (the batch window), on both stacks: uploads
accumulate while a window is configured, urgent lines are served at once, nothing is
created at the provider before the window, at the window one tick submits every waiting
file's batches, and each file still ends as its own job with its own completion (the four
invariants). Time is the stacks' FakeClock: nothing sleeps."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bananabatch import faults
from bananabatch.core.records import display_name_for
from bananabatch.core.states import BatchState, ItemState, JobState
from bananabatch.pipeline import status, tick
from tests.support.stacks import (
    STEP,
    Completion,
    Stack,
    StackKind,
    assert_invariants,
    open_stack,
    paid_keys,
)

# The stacks' clock starts at 2026-01-01 00:00 UTC, 01:00 in Paris: the nightly 02:00 Paris
# window is 01:00 UTC, an hour later.
WINDOW: dict[str, Any] = {"batch_window": "0 2 * * *", "batch_window_tz": "Europe/Paris"}
AT = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
CATALOG = [
    '{"key": "a1", "prompt": "a teapot on marble"}',
    '{"key": "a2", "prompt": "a teapot on linen"}',
    '{"key": "a3", "prompt": "a teapot on oak"}',
    '{"key": "a4", "prompt": "a teapot on sand"}',
    '{"key": "hero", "prompt": "a teapot hero banner", "priority": "urgent"}',
]
LOOKBOOK = [
    '{"key": "b1", "prompt": "a scarf on marble"}',
    '{"key": "b2", "prompt": "a scarf on linen"}',
]


def settle_all(stack: Stack, job_ids: tuple[str, ...]) -> list[Completion]:
    """Drain, tick and move the clock until every job is terminal and announced, keeping
    every job's completions (Stack.settle keeps only its own job's)."""
    completions: list[Completion] = []
    for _ in range(12):
        stack.drain()
        completions += stack.completions()
        if {c.job_id for c in completions} >= set(job_ids):
            break
        stack.clock.advance(STEP)
        stack.tick()
    stack.tick()
    stack.drain()
    return completions + stack.completions()


def created_at_provider(stack: Stack, job_id: str) -> Mapping[str | None, int]:
    return stack.emulator.state.submitted_keys(display_name_for(f"{job_id}-"))


def test_uploads_wait_for_the_window_then_go_in_one_tick_and_each_file_ends_alone(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, **WINDOW) as stack:
        first = stack.upload(stack.write(CATALOG, "catalog.jsonl"))
        stack.clock.advance(timedelta(minutes=20))
        second = stack.upload(stack.write(LOOKBOOK, "lookbook.jsonl"))
        stack.tick()
        stack.drain()

        for job_id in (first, second):
            job = stack.repo.require_job(job_id)
            assert job.state is JobState.RUNNING
            assert job.window_at == AT
            batches = list(stack.repo.batches(job_id=job_id))
            assert batches
            assert {b.state for b in batches} == {BatchState.QUEUED}
            assert {b.next_submit_after for b in batches} == {AT}
            assert created_at_provider(stack, job_id) == {}
        # The urgent line did not wait.
        hero = stack.repo.get_item(first, "hero")
        assert hero is not None
        assert hero.state is ItemState.SUCCEEDED
        # `status` says when the waiting job goes.
        note = status.job_notes(stack.runtime, stack.repo.require_job(second))["window"]
        assert note["at"] == AT.isoformat()
        assert note["seconds_left"] == 40 * 60
        assert "waiting for the batch window" in note["why"]

        # Just before the window: still nothing at the provider.
        stack.clock.now = AT - timedelta(seconds=1)
        stack.tick()
        assert created_at_provider(stack, first) == created_at_provider(stack, second) == {}

        # At the window, one tick packs the waiting files' partial batches into one shared
        # batch and submits it with the full one: of the three planned batches (a1-a3 full
        # at 3 a batch on the stacks, a4 alone, b1-b2), two go. Each file's lines are paid
        # once, under its own job.
        planned = [b for j in (first, second) for b in stack.repo.batches(job_id=j)]
        assert sorted(b.request_count for b in planned) == [1, 2, 3]
        stack.clock.now = AT
        report = tick.handle_tick(stack.runtime)
        assert report.submitted == 2
        assert set(created_at_provider(stack, first)) == {"a1", "a2", "a3"}
        assert created_at_provider(stack, second) == {}
        assert paid_keys(stack, first) == {"a1": 1, "a2": 1, "a3": 1, "a4": 1}
        assert paid_keys(stack, second) == {"b1": 1, "b2": 1}
        packed = [b for b in planned if b.request_count < 3]
        for batch in packed:
            after = stack.repo.require_batch(batch.batch_id)
            assert (after.state, after.provider_state) == (BatchState.COLLECTED, "PACKED")
        notes = status.job_notes(stack.runtime, stack.repo.require_job(first))
        assert notes["window"] is None
        assert [(n["lines_of_this_job"], n["lines"], n["jobs"]) for n in notes["shared"]] == [
            (1, 3, 2)
        ]

        completions = settle_all(stack, (first, second))
        for job_id, lines in ((first, CATALOG), (second, LOOKBOOK)):
            mine = [c for c in completions if c.job_id == job_id]
            summary = assert_invariants(stack, job_id, mine)
            assert summary["counts"]["SUCCEEDED"] == len(lines)


def test_without_a_window_nothing_waits(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path) as stack:
        job_id = stack.upload(stack.write(LOOKBOOK))
        assert stack.repo.require_job(job_id).window_at is None
        assert set(created_at_provider(stack, job_id)) == {"b1", "b2"}
        assert_invariants(stack, job_id, stack.settle(job_id))


def test_a_crash_after_the_window_is_marked_keeps_the_batches_for_that_window(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    """The process dies between recording the job's window and releasing its batches: the
    redelivered upload finds the job running and does nothing, and the tick's repair
    releases the batches to the recorded window, neither to "now" nor to a later window
    computed again (here the repair runs after the window has passed: they go at once)."""
    with open_stack(request, kind, tmp_path, **WINDOW) as stack:
        faults.arm("window.after_mark")
        job_id = stack.upload(stack.write(LOOKBOOK))
        assert faults.hits("window.after_mark") == 1
        assert stack.repo.require_job(job_id).window_at == AT
        batches = list(stack.repo.batches(job_id=job_id))
        assert batches
        assert all(b.state is BatchState.QUEUED for b in batches)
        assert created_at_provider(stack, job_id) == {}

        stack.clock.now = AT + timedelta(minutes=10)
        report = tick.handle_tick(stack.runtime)
        assert report.released >= 1
        assert report.submitted == len(batches)
        assert set(created_at_provider(stack, job_id)) == {"b1", "b2"}
        assert_invariants(stack, job_id, stack.settle(job_id))
