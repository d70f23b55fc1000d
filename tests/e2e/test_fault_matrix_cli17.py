"""Fault-matrix scenarios for issue 17's known bugs around what a person reads after a fault:
`status` / `ls` show only the errors that still matter (not those of a batch already retried
or ended and replaced, nor a poll failure the next poll got past), and `failed.jsonl` holds
every failed line in input form, joined ones that failed unpaid included. Each runs on both
stacks and ends with the four invariants.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bananabatch.cli import job_view
from bananabatch.core.states import BatchState, ItemState, JobState
from bananabatch.pipeline import collect, control
from bananabatch.ports import ProviderBatch
from tests.e2e.test_fault_matrix_finish import _settle_all
from tests.e2e.test_fault_matrix_inflight import _upload
from tests.support.stacks import PROMPTS, Stack, StackKind, assert_invariants, held, open_stack


def _problems(stack: Stack, job_id: str) -> list[str]:
    view = job_view(stack.runtime, stack.repo.require_job(job_id))
    return [str(p["error"]) for p in view["problems"]]


def _failed_lines(stack: Stack, job_id: str) -> dict[str, dict[str, object]]:
    raw = stack.read_result(f"jobs/{job_id}/failed.jsonl").decode()
    return {doc["key"]: doc for doc in map(json.loads, raw.splitlines())}


def test_a_lost_batch_whose_items_were_retried_and_delivered_leaves_no_problem_in_status(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        job_id = _upload(stack, PROMPTS, name="prompts.jsonl")
        lost = next(b for b in stack.repo.batches(job_id=job_id) if b.index == 1)
        assert lost.provider_name
        stack.emulator.state.delete_batch(lost.provider_name)
        stack.tick()
        assert any("no longer knows" in p for p in _problems(stack, job_id))
        settled = _settle_all(stack, [job_id], between=stack.emulator.state.complete_all)
        assert_invariants(stack, job_id, settled[job_id])
        assert stack.repo.require_job(job_id).state is JobState.SUCCEEDED
        assert stack.repo.require_batch(lost.batch_id).provider_state == collect.PROVIDER_GONE
        # Every line was delivered by the retry: the lost batch is history, not a problem.
        assert _problems(stack, job_id) == []


def test_a_lost_batch_that_ended_its_items_for_good_is_still_said_after_the_job_ends(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), max_attempts=1) as stack:
        job_id = _upload(stack, PROMPTS, name="prompts.jsonl")
        lost = next(b for b in stack.repo.batches(job_id=job_id) if b.index == 1)
        assert lost.provider_name
        stack.emulator.state.delete_batch(lost.provider_name)
        settled = _settle_all(stack, [job_id], between=stack.emulator.state.complete_all)
        assert_invariants(stack, job_id, settled[job_id])
        assert stack.repo.require_job(job_id).state is JobState.PARTIAL
        # No retry was left: the lost batch is why its lines failed, so it is still said.
        assert any("no longer knows" in p for p in _problems(stack, job_id))


def test_a_poll_that_failed_once_and_then_went_through_leaves_no_problem_in_status(
    request: pytest.FixtureRequest,
    kind: StackKind,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        job_id = _upload(stack, PROMPTS, name="prompts.jsonl")
        flaky = next(b for b in stack.repo.batches(job_id=job_id) if b.index == 2)
        provider = stack.runtime.provider
        real_get = provider.get
        failures = [RuntimeError("connection reset by peer")]

        def get(name: str) -> ProviderBatch:
            if name == flaky.provider_name and failures:
                raise failures.pop()
            return real_get(name)

        monkeypatch.setattr(provider, "get", get)
        stack.tick()
        assert any("connection reset" in p for p in _problems(stack, job_id))
        stack.tick()  # the next poll of the same batch goes through
        assert stack.repo.require_batch(flaky.batch_id).state is BatchState.RUNNING
        assert _problems(stack, job_id) == []
        settled = _settle_all(stack, [job_id], between=stack.emulator.state.complete_all)
        assert_invariants(stack, job_id, settled[job_id])


def test_joined_items_of_a_cancelled_job_that_fail_unpaid_are_in_its_failed_jsonl(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        first = _upload(stack, PROMPTS, name="first.jsonl")
        second = _upload(stack, PROMPTS, name="second.jsonl")
        control.cancel_job(stack.runtime, second)
        settled = _settle_all(stack, [first, second], between=stack.emulator.state.complete_all)
        for job_id, completions in settled.items():
            assert_invariants(stack, job_id, completions)
        failed = {i.key for i in stack.repo.items(second) if i.state is ItemState.FAILED}
        assert failed == {f"k{n}" for n in range(1, 6)}
        lines = _failed_lines(stack, second)
        assert set(lines) == failed
        # In input form, the request as the line asked for it: ready to upload again.
        item = stack.repo.get_item(second, "k2")
        assert item is not None
        assert lines["k2"]["model"] == item.model
        assert "green pear" in json.dumps(lines["k2"]["request"])
