"""Fault-matrix scenarios of the batch window's packing (issue 21 point 4), on both stacks:
at the window the waiting files' batches go as fewer, fuller shared batches, while each
file keeps its own job, results, summary and completion message. A crash at any step of
packing is completed by the next tick; one job's cancel never stops the others' paid work;
a retry of a shared batch carries only the lines that need it. Every scenario ends with the
four invariants for every job (one terminal state per line, every success's image, nothing
paid twice, one completion). Time is the stacks' FakeClock: nothing sleeps."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bananabatch import faults
from bananabatch.core.records import PACK_PREFIX, display_name_for
from bananabatch.core.states import BatchState, ItemState, JobState
from bananabatch.pipeline import control, pack, tick
from tests.e2e.test_fault_matrix_workflows import AT, CATALOG, LOOKBOOK, WINDOW, settle_all
from tests.support.stacks import Stack, StackKind, assert_invariants, open_stack, paid_keys

SHARED = display_name_for(PACK_PREFIX)
PACK_STEPS = (
    "pack.after_claim",
    "pack.after_materialize",
    "pack.after_files",
    "pack.after_items",
    "pack.after_batches",
)


def two_waiting_files(stack: Stack) -> tuple[str, str]:
    first = stack.upload(stack.write(CATALOG, "catalog.jsonl"))
    stack.clock.advance(timedelta(minutes=20))
    second = stack.upload(stack.write(LOOKBOOK, "lookbook.jsonl"))
    stack.drain()
    return first, second


def sent_at_the_window_and_held(stack: Stack) -> tuple[str, str, str]:
    """Two files wait; at the window their shared batch is sent and stays RUNNING at the
    provider until the test says. Returns the two jobs and the shared batch."""
    stack.faults.stick(f"{SHARED}*")
    first, second = two_waiting_files(stack)
    stack.clock.now = AT
    assert tick.handle_tick(stack.runtime).submitted == 2
    [shared] = shared_batches(stack)
    assert stack.repo.require_batch(shared).state is BatchState.RUNNING
    return first, second, shared


def shared_batches(stack: Stack) -> list[str]:
    return sorted(b.batch_id for b in stack.repo.batches() if b.members and b.attempt == 1)


def each_ends_alone(stack: Stack, jobs: tuple[str, ...]) -> dict[str, dict[str, object]]:
    completions = settle_all(stack, jobs)
    return {
        job_id: assert_invariants(stack, job_id, [c for c in completions if c.job_id == job_id])
        for job_id in jobs
    }


@pytest.mark.parametrize("step", PACK_STEPS)
def test_a_crash_at_any_step_of_packing_is_completed_by_the_next_tick_and_paid_once(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path, step: str
) -> None:
    with open_stack(request, kind, tmp_path, **WINDOW) as stack:
        first, second = two_waiting_files(stack)
        stack.clock.now = AT
        faults.arm(step)
        crashed = tick.handle_tick(stack.runtime)
        assert faults.hits(step) == 1
        assert crashed.errors >= 1
        # Nothing of a half-made pack reached the provider, and no claimed batch went alone.
        assert stack.emulator.state.submitted_keys(SHARED) == {}
        assert paid_keys(stack, first) == paid_keys(stack, second) == {}

        stack.clock.advance(timedelta(minutes=1))
        again = tick.handle_tick(stack.runtime)
        # The catalog's full batch goes as its own; its a4 and the lookbook share one.
        assert again.submitted == 2
        assert len(shared_batches(stack)) == 1
        assert paid_keys(stack, first) == {"a1": 1, "a2": 1, "a3": 1, "a4": 1}
        assert paid_keys(stack, second) == {"b1": 1, "b2": 1}
        summaries = each_ends_alone(stack, (first, second))
        assert summaries[first]["counts"]["SUCCEEDED"] == len(CATALOG)  # type: ignore[index]
        assert summaries[second]["counts"]["SUCCEEDED"] == len(LOOKBOOK)  # type: ignore[index]


def test_one_jobs_cancel_leaves_the_shared_batch_running_for_the_others(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, **WINDOW) as stack:
        first, second, shared = sent_at_the_window_and_held(stack)
        control.cancel_job(stack.runtime, second)
        # The lookbook's two lines share a batch with the catalog's a4: nothing is cancelled.
        running = stack.repo.require_batch(shared)
        assert running.state is BatchState.RUNNING
        assert running.provider_name is not None
        stack.emulator.state.complete(running.provider_name.rsplit("/", 1)[-1])
        summaries = each_ends_alone(stack, (first, second))
        assert stack.repo.require_job(first).state is JobState.SUCCEEDED
        assert stack.repo.require_job(second).state is JobState.CANCELLED
        # The cancelled job's lines were paid with the others': their images are kept.
        assert summaries[second]["counts"]["SUCCEEDED"] == len(LOOKBOOK)  # type: ignore[index]


def test_when_every_job_of_a_shared_batch_cancels_it_is_cancelled_at_the_provider(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, **WINDOW) as stack:
        first, second, shared = sent_at_the_window_and_held(stack)
        control.cancel_job(stack.runtime, first)
        # The lookbook may still spend: the shared batch runs on.
        assert stack.repo.require_batch(shared).state is BatchState.RUNNING
        control.cancel_job(stack.runtime, second)
        stack.drain()
        stack.tick()
        stack.drain()
        batch = stack.repo.require_batch(shared)
        assert batch.state in {BatchState.CANCELLED, BatchState.COLLECTED}
        assert batch.provider_state in {"JOB_STATE_CANCELLED", "BATCH_STATE_CANCELLED"}
        each_ends_alone(stack, (first, second))
        for job_id in (first, second):
            assert stack.repo.require_job(job_id).state is JobState.CANCELLED


def test_a_job_cancelled_after_packing_but_before_sending_has_its_lines_left_out(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, **WINDOW) as stack:
        first, second = two_waiting_files(stack)
        stack.clock.now = AT
        queued = list(stack.repo.batches(states=[BatchState.QUEUED]))
        assert pack.pack_due(stack.runtime, queued) == 1
        control.cancel_job(stack.runtime, second)
        stack.tick()
        stack.drain()
        assert paid_keys(stack, second) == {}
        assert paid_keys(stack, first) == {"a1": 1, "a2": 1, "a3": 1, "a4": 1}
        each_ends_alone(stack, (first, second))
        assert stack.repo.require_job(second).state is JobState.CANCELLED
        for item in stack.repo.items(second):
            assert item.state is ItemState.FAILED
            assert item.reason == pack.STOPPED_REASON


def test_a_retried_row_of_a_shared_batch_goes_again_for_its_own_job_only(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, **WINDOW) as stack:
        first, second = two_waiting_files(stack)
        stack.faults.row(f"{second}/b2", "missing", times=1)
        stack.clock.now = AT
        assert tick.handle_tick(stack.runtime).submitted == 2
        each_ends_alone(stack, (first, second))
        assert paid_keys(stack, second) == {"b1": 1, "b2": 2}
        assert paid_keys(stack, first) == {"a1": 1, "a2": 1, "a3": 1, "a4": 1}
        retries = [b for b in stack.repo.batches() if b.members and b.attempt == 2]
        assert [b.members for b in retries] == [[second]]
        b2 = stack.repo.get_item(second, "b2")
        assert b2 is not None
        assert (b2.state, b2.attempt) == (ItemState.SUCCEEDED, 2)
