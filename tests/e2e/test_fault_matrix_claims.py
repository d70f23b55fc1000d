"""Fault-matrix scenarios for issue 16 part 6: in-flight claims (issue 14 part 3) are taken
where paid work is committed, when a batch is claimed for submission, bounded by the
batch's size, not at intake one conditional write per line.

Intake takes no claim at all. At submission each of the batch's cacheable requests is
claimed for its job; a line whose request another live job holds becomes a joined item
(waits for it, served from it) and the batch goes to the provider without it; a batch left
with no line of its own is not submitted and does not hold its job up. Each scenario runs
on both stacks and ends with the four invariants, plus the paid rows of all jobs together.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from bananabatch import faults
from bananabatch.core import records as rec
from bananabatch.core.states import BatchState, ItemState, JobState
from bananabatch.faults import InjectedCrash
from bananabatch.pipeline import budget, control
from bananabatch.pipeline.cache import LANE_JOINED
from tests.e2e.test_fault_matrix_finish import _settle_all, assert_closed
from tests.support.stacks import (
    PROMPTS,
    STEP,
    Stack,
    StackKind,
    assert_invariants,
    held,
    open_stack,
)

CLAIMS = rec.claim_path("x").rpartition("/")[0]
# k1..k3 repeat the first job's requests, x1 and x2 are this job's own; with three
# requests a batch, the first batch is all joined and the second mixes x1, k4 (joined)
# and x2.
SECOND = [
    *PROMPTS[:3],
    '{"key": "x1", "prompt": "a blue boat"}',
    PROMPTS[3],
    '{"key": "x2", "prompt": "a white swan"}',
]


def _upload(stack: Stack, lines: list[str], name: str, **metadata: str) -> str:
    return stack.upload(stack.write(lines, name=name), metadata=metadata or None)


def _paid_rows(stack: Stack) -> int:
    return sum(stack.emulator.state.submitted_keys("bananabatch-").values())


def _paid_by(stack: Stack, job_id: str) -> dict[str | None, int]:
    return dict(stack.emulator.state.submitted_keys(f"bananabatch-{job_id}-"))


def test_intake_takes_no_inflight_claim(stack: Stack) -> None:
    # Over its cap, the job is HELD after intake: nothing is submitted, so nothing claims.
    job_id = _upload(stack, PROMPTS, name="held.jsonl", **{budget.JOB_BUDGET_KEY: "0.001"})
    assert stack.repo.require_job(job_id).state is JobState.HELD
    assert list(stack.runtime.state.query(CLAIMS)) == []
    control.approve(stack.runtime, job_id)
    # Submission claims the requests of each batch it sends: all five, for this job.
    owners = {str(doc["job_id"]) for doc in stack.runtime.state.query(CLAIMS)}
    assert owners == {job_id}
    assert len(list(stack.runtime.state.query(CLAIMS))) == len(PROMPTS)
    completions = _settle_all(stack, [job_id])[job_id]
    assert_invariants(stack, job_id, [c for c in completions if c.state != "HELD"])


def test_a_batch_whose_lines_all_join_another_job_is_not_submitted_and_the_job_goes_on(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        first = _upload(stack, PROMPTS, name="first.jsonl")
        second = _upload(stack, SECOND, name="second.jsonl")
        batches = sorted(stack.repo.batches(job_id=second), key=lambda b: b.index)
        # The first batch (k1..k3, all the first job's) never reached the provider, nor holds a
        # place among the active batches; the second went with its own two lines only.
        assert batches[0].provider_name is None
        assert batches[0].state not in (BatchState.QUEUED, BatchState.SUBMITTING)
        assert batches[1].state is BatchState.RUNNING
        assert batches[1].request_count == 2
        assert _paid_by(stack, second) == {"x1": 1, "x2": 1}
        joined = {i.key: i for i in stack.repo.items(second) if i.lane == LANE_JOINED}
        assert set(joined) == {"k1", "k2", "k3", "k4"}
        assert {i.joined_job for i in joined.values()} == {first}
        assert {i.state for i in joined.values()} == {ItemState.PENDING}
        settled = _settle_all(stack, [first, second], between=stack.emulator.state.complete_all)
        for job_id, completions in settled.items():
            assert_invariants(stack, job_id, completions)
            assert_closed(stack, job_id)
            assert stack.repo.require_job(job_id).state is JobState.SUCCEEDED
        assert _paid_rows(stack) == len(PROMPTS) + 2
        assert _paid_by(stack, second) == {"x1": 1, "x2": 1}
        served = {i.key: i.state for i in stack.repo.items(second) if i.lane == LANE_JOINED}
        assert served == {k: ItemState.CACHED for k in ("k1", "k2", "k3", "k4")}
        summary = stack.summary(second)
        assert summary["inflight"] == {"joined": 4, "served": 4, "paid": 0}


@pytest.mark.parametrize("point", ["submit.after_requests_claimed", "submit.after_claim"])
def test_a_crash_between_the_claims_and_the_create_is_claimed_again_idempotently_and_paid_once(
    stack: Stack, point: str
) -> None:
    first = _upload(stack, PROMPTS, name="first.jsonl")
    with faults.armed(point):
        with contextlib.suppress(InjectedCrash):
            _upload(stack, SECOND, name="second.jsonl")
        assert faults.hits(point) == 1
    second = next(j.job_id for j in stack.repo.list_jobs() if j.job_id != first)
    # The batch the crash cut off is found SUBMITTING, reconciled after the grace (nothing
    # was created) and claimed again: its requests are ours or joined, as the first time.
    for _ in range(3):
        stack.clock.advance(STEP * 4)
        stack.tick()
    settled = _settle_all(stack, [first, second])
    for job_id, completions in settled.items():
        assert_invariants(stack, job_id, completions)
        assert stack.repo.require_job(job_id).state is JobState.SUCCEEDED
    assert _paid_by(stack, second) == {"x1": 1, "x2": 1}
    assert _paid_rows(stack) == len(PROMPTS) + 2
    owners = [str(doc["job_id"]) for doc in stack.runtime.state.query(CLAIMS)]
    assert sorted(owners) == sorted([first] * len(PROMPTS) + [second] * 2)


def test_a_line_that_opts_out_of_the_cache_is_paid_not_joined(stack: Stack) -> None:
    first = _upload(stack, PROMPTS, name="first.jsonl")
    fresh = ['{"key": "fresh", "prompt": "a red apple", "cache": false}']
    second = _upload(stack, fresh, name="fresh.jsonl")
    settled = _settle_all(stack, [first, second])
    for job_id, completions in settled.items():
        assert_invariants(stack, job_id, completions)
    assert _paid_by(stack, second) == {"fresh": 1}
    assert [i.lane for i in stack.repo.items(second)] == ["batch"]
