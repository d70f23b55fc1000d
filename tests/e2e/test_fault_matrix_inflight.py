"""Fault-matrix scenarios for issue 14 part 3, in-flight request dedup: a request (same
content hash, cache allowed) already claimed by a running job is joined, not paid again.
The later item waits for the earlier one's result and is served from it; it is paid only
when that one fails, or its job is cancelled or ends without it. Each scenario runs on both
stacks and ends with the four invariants, plus the count this part is about: the paid rows
of all jobs together, one per distinct request.

Also the one row issue 14's finding 7 left without a scenario of its own: a cap set exactly
at the estimate (the actual cost ran $0.0008 over it) now holds the job, because the
reservation carries the safety margin.

A `kill -9` is modelled as in test_fault_matrix_finish.py: an `InjectedCrash` at a step
boundary, nobody redelivering what the process was doing; the tick repairs.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from bananabatch import faults
from bananabatch.cli import job_view
from bananabatch.config import Settings
from bananabatch.core import records as rec
from bananabatch.core.states import JOB_TERMINAL, ItemState, JobState
from bananabatch.cost_cli import estimate_file
from bananabatch.emulator.faults import RowFault
from bananabatch.faults import InjectedCrash
from bananabatch.pipeline import budget, control
from bananabatch.pipeline.cache import LANE_JOINED
from bananabatch.wiring import build_runtime
from tests.e2e.test_fault_matrix_finish import _settle_all, assert_closed
from tests.support.stacks import (
    PROMPTS,
    STEP,
    Completion,
    Stack,
    StackKind,
    assert_invariants,
    held,
    open_stack,
)


def _upload(stack: Stack, lines: list[str], name: str, **metadata: str) -> str:
    return stack.upload(stack.write(lines, name=name), metadata=metadata or None)


def _paid_rows(stack: Stack) -> int:
    """Rows accepted for generation over every job: what the owner pays for."""
    return sum(stack.emulator.state.submitted_keys("bananabatch-").values())


def _joined(stack: Stack, job_id: str) -> dict[str, ItemState]:
    return {i.key: i.state for i in stack.repo.items(job_id) if i.lane == LANE_JOINED}


def test_the_same_file_submitted_three_times_at_once_pays_each_line_once(stack: Stack) -> None:
    jobs = [_upload(stack, PROMPTS, name=f"same-{n}.jsonl") for n in range(3)]
    settled = _settle_all(stack, jobs)
    for job_id, completions in settled.items():
        assert_invariants(stack, job_id, completions)
        assert_closed(stack, job_id)
        assert stack.repo.require_job(job_id).state is JobState.SUCCEEDED
    assert _paid_rows(stack) == len(PROMPTS)
    first, *later = jobs
    assert _joined(stack, first) == {}
    for job_id in later:
        assert _joined(stack, job_id) == {f"k{n}": ItemState.CACHED for n in range(1, 6)}
        summary = stack.summary(job_id)
        assert summary["inflight"] == {"joined": 5, "served": 5, "paid": 0}
        assert summary["costs"]["actual_usd"] == 0.0
        item = stack.repo.get_item(job_id, "k1")
        assert item is not None
        assert item.joined_job == first
        assert f"job {first}" in (item.reason or "")


def test_three_intakes_of_one_file_running_concurrently_pay_each_line_once(
    stack: Stack,
) -> None:
    paths = [stack.write(PROMPTS, name=f"race-{n}.jsonl") for n in range(3)]
    names = [stack.put_inbox(path) for path in paths]
    start = threading.Barrier(3)
    jobs: list[str] = []
    errors: list[BaseException] = []

    def deliver(name: str) -> None:
        try:
            start.wait(timeout=30)
            jobs.append(stack.finalized(name))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    settled = _settle_all(stack, jobs)
    for job_id, completions in settled.items():
        assert_invariants(stack, job_id, completions)
        assert stack.repo.require_job(job_id).state is JobState.SUCCEEDED
    assert _paid_rows(stack) == len(PROMPTS)
    joined = sum(len(_joined(stack, job_id)) for job_id in jobs)
    assert joined == 2 * len(PROMPTS)


def test_a_joined_request_whose_owner_fails_for_good_is_paid_once_by_the_waiting_job(
    stack: Stack,
) -> None:
    # k2 fails at every attempt of the first job (max_attempts of them), then succeeds.
    stack.faults.rows["k2"] = RowFault("error", times=stack.settings.max_attempts)
    first = _upload(stack, PROMPTS, name="first.jsonl")
    second = _upload(stack, PROMPTS, name="second.jsonl")
    settled = _settle_all(stack, [first, second])
    for job_id, completions in settled.items():
        assert_invariants(stack, job_id, completions)
        assert_closed(stack, job_id)
    assert stack.repo.require_job(first).state is JobState.PARTIAL
    assert stack.repo.require_job(second).state is JobState.SUCCEEDED
    joined = _joined(stack, second)
    assert joined == {
        "k1": ItemState.CACHED,
        "k2": ItemState.SUCCEEDED,
        "k3": ItemState.CACHED,
        "k4": ItemState.CACHED,
        "k5": ItemState.CACHED,
    }
    # Paid by the second job exactly once, after the first gave up on it.
    assert stack.emulator.state.submitted_keys(f"bananabatch-{second}-") == {"k2": 1}
    assert stack.summary(second)["inflight"] == {"joined": 5, "served": 4, "paid": 1}
    assert stack.repo.require_job(second).costs.actual_usd > 0


def test_a_joined_request_whose_owner_job_is_cancelled_is_paid_once_by_the_waiting_job(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        first = _upload(stack, PROMPTS, name="first.jsonl")
        second = _upload(stack, PROMPTS, name="second.jsonl")
        assert set(_joined(stack, second)) == {f"k{n}" for n in range(1, 6)}
        control.cancel_job(stack.runtime, first)
        settled = _settle_all(stack, [first, second], between=stack.emulator.state.complete_all)
        for job_id, completions in settled.items():
            assert_invariants(stack, job_id, completions)
        assert stack.repo.require_job(first).state is JobState.CANCELLED
        assert stack.repo.require_job(second).state is JobState.SUCCEEDED
        paid_second = stack.emulator.state.submitted_keys(f"bananabatch-{second}-")
        assert set(paid_second) == {f"k{n}" for n in range(1, 6)}
        assert set(paid_second.values()) == {1}


def test_a_waiting_item_of_a_cancelled_job_fails_and_the_job_ends(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        first = _upload(stack, PROMPTS, name="first.jsonl")
        second = _upload(stack, PROMPTS, name="second.jsonl")
        control.cancel_job(stack.runtime, second)
        settled = _settle_all(stack, [first, second], between=stack.emulator.state.complete_all)
        for job_id, completions in settled.items():
            assert_invariants(stack, job_id, completions)
        assert stack.repo.require_job(second).state is JobState.CANCELLED
        assert set(_joined(stack, second).values()) == {ItemState.FAILED}
        assert stack.emulator.state.submitted_keys(f"bananabatch-{second}-") == {}
        assert _paid_rows(stack) == len(PROMPTS)


@pytest.mark.parametrize("point", ["inflight.after_claim_taken", "inflight.after_item_released"])
def test_a_kill_while_a_joined_item_becomes_paid_is_repaired_by_the_tick_and_paid_once(
    stack: Stack, point: str
) -> None:
    stack.faults.rows["k2"] = RowFault("error", times=stack.settings.max_attempts)
    first = _upload(stack, PROMPTS, name="first.jsonl")
    second = _upload(stack, PROMPTS, name="second.jsonl")
    before: dict[str, list[Completion]] = {first: [], second: []}
    with faults.armed(point):
        with contextlib.suppress(InjectedCrash):
            before = _settle_all(stack, [first, second])
        assert faults.hits(point) == 1
    settled = _settle_all(stack, [first, second])
    for job_id, completions in settled.items():
        assert_invariants(stack, job_id, before.get(job_id, []) + completions)
        assert stack.repo.require_job(job_id).state in JOB_TERMINAL
    assert stack.repo.require_job(second).state is JobState.SUCCEEDED
    assert stack.emulator.state.submitted_keys(f"bananabatch-{second}-") == {"k2": 1}


def test_a_joined_line_paid_after_all_is_not_reserved_again_so_the_job_stays_within_its_cap(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        first = _upload(stack, PROMPTS, name="first.jsonl")
        path = stack.write(PROMPTS, name="second.jsonl")
        probe = build_runtime(Settings(local_root=tmp_path / "probe"), with_provider=False)
        # A cap that admits the job's estimate with its margin and not a cent more: intake
        # reserved every line before they joined, so paying them after all (the owner is
        # cancelled) must not reserve them a second time, nor be refused for it.
        cap = budget.with_margin(estimate_file(probe, path).batch_usd, stack.settings.budget_margin)
        second = stack.upload(path, metadata={budget.JOB_BUDGET_KEY: f"{cap}"})
        job = stack.repo.require_job(second)
        assert job.state is JobState.RUNNING
        assert set(_joined(stack, second)) == {f"k{n}" for n in range(1, 6)}
        assert job.budget_day is not None
        entry = (stack.runtime.state.get(rec.budget_path(job.budget_day)) or {})["jobs"][second]
        assert entry["reserved"] == pytest.approx(cap)
        control.cancel_job(stack.runtime, first)
        settled = _settle_all(stack, [first, second], between=stack.emulator.state.complete_all)
        for job_id, completions in settled.items():
            assert_invariants(stack, job_id, completions)
        job = stack.repo.require_job(second)
        assert job.state is JobState.SUCCEEDED
        assert set(_joined(stack, second).values()) == {ItemState.SUCCEEDED}
        paid = stack.emulator.state.submitted_keys(f"bananabatch-{second}-")
        assert paid == {f"k{n}": 1 for n in range(1, 6)}
        assert 0 < job.costs.actual_usd <= cap
        assert_closed(stack, second)


def test_status_says_how_many_items_wait_on_another_jobs_request(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        first = _upload(stack, PROMPTS, name="first.jsonl")
        second = _upload(stack, PROMPTS, name="second.jsonl")
        view = job_view(stack.runtime, stack.repo.require_job(second))
        assert view["inflight"] == {"joined": 5, "waiting": 5, "served": 0, "paid": 0}
        assert stack.repo.require_job(second).state is JobState.RUNNING
        settled = _settle_all(stack, [first, second], between=stack.emulator.state.complete_all)
        for job_id, completions in settled.items():
            assert_invariants(stack, job_id, completions)
        view = job_view(stack.runtime, stack.repo.require_job(second))
        assert view["inflight"] == {"joined": 5, "waiting": 0, "served": 5, "paid": 0}


def test_a_claim_whose_owner_job_ended_without_the_request_is_taken_over_not_joined(
    stack: Stack,
) -> None:
    first = _upload(stack, PROMPTS, name="first.jsonl")
    _settle_all(stack, [first])
    # The cache entry's image is gone (retention), the claim of the ended job is still there.
    for item in stack.repo.items(first):
        stack.runtime.state.delete(rec.cache_path(item.request_hash or ""))
    again = _upload(stack, PROMPTS, name="again.jsonl")
    assert _joined(stack, again) == {}
    completions = stack.settle(again)
    assert_invariants(stack, again, completions)
    assert _paid_rows(stack) == 2 * len(PROMPTS)


def test_a_joined_request_that_the_owner_saw_blocked_is_blocked_here_and_never_paid(
    stack: Stack,
) -> None:
    stack.faults.rows["k2"] = RowFault("prompt_blocked")
    first = _upload(stack, PROMPTS, name="first.jsonl")
    second = _upload(stack, PROMPTS, name="second.jsonl")
    settled = _settle_all(stack, [first, second])
    for job_id, completions in settled.items():
        assert_invariants(stack, job_id, completions)
    assert _joined(stack, second)["k2"] is ItemState.BLOCKED
    assert stack.emulator.state.submitted_keys(f"bananabatch-{second}-") == {}
    assert _paid_rows(stack) == len(PROMPTS)


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_held_job_claims_nothing_and_once_approved_joins_the_request_another_job_paid(
    stack: Stack, decision: str
) -> None:
    # Claims are taken at submission (pipeline/claims.py): a HELD job has sent nothing and
    # holds nothing, so a later job with the same requests pays them, and the held one,
    # approved, joins them; whatever is decided, each request is paid once.
    first = _upload(stack, PROMPTS, name="first.jsonl", **{budget.JOB_BUDGET_KEY: "0.001"})
    assert stack.repo.require_job(first).state is JobState.HELD
    second = _upload(stack, PROMPTS, name="second.jsonl")
    assert _joined(stack, second) == {}
    stack.clock.advance(STEP)
    stack.tick()
    assert stack.repo.require_job(second).state is JobState.RUNNING
    if decision == "approve":
        control.approve(stack.runtime, first)
        assert set(_joined(stack, first)) == {f"k{n}" for n in range(1, 6)}
    else:
        control.reject(stack.runtime, first)
    settled = _settle_all(stack, [first, second])
    for job_id, completions in settled.items():
        assert_invariants(stack, job_id, [c for c in completions if c.state != "HELD"])
    assert stack.repo.require_job(second).state is JobState.SUCCEEDED
    assert _paid_rows(stack) == len(PROMPTS)
    assert stack.emulator.state.submitted_keys(f"bananabatch-{first}-") == {}
    if decision == "approve":
        assert stack.repo.require_job(first).state is JobState.SUCCEEDED
        assert set(_joined(stack, first).values()) == {ItemState.CACHED}


# --- issue 14 finding 7: actual cost over the estimate under a cap set at the estimate ----


def test_a_cap_set_exactly_at_the_estimate_holds_the_job_and_a_cap_with_the_margin_holds_the_cost(
    stack: Stack, tmp_path: Path
) -> None:
    path = stack.write(PROMPTS, name="capped.jsonl")
    probe = build_runtime(Settings(local_root=tmp_path / "probe"), with_provider=False)
    estimate = estimate_file(probe, path).batch_usd
    at_estimate = _upload(stack, PROMPTS, name="at.jsonl", **{budget.JOB_BUDGET_KEY: f"{estimate}"})
    held_job = stack.repo.require_job(at_estimate)
    assert held_job.state is JobState.HELD
    assert "margin" in str(held_job.error)
    control.reject(stack.runtime, at_estimate)
    cap = budget.with_margin(estimate, stack.settings.budget_margin)
    capped = stack.upload(path, metadata={budget.JOB_BUDGET_KEY: f"{cap}"})
    completions = stack.settle(capped)
    assert_invariants(stack, capped, completions)
    job = stack.repo.require_job(capped)
    assert job.state is JobState.SUCCEEDED
    assert 0 < job.costs.actual_usd <= cap
