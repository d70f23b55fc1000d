"""Fault-matrix rows for files that mix Gemini and gpt-image lines (issue 19 parts 3 and 4), on
the local stack and the emulated Google Cloud stack: one job, batches of one provider each,
each provider's adapter driving its own batches, one completion message whose money is
split by provider, and one provider's trouble never holding the other's batches. Every
scenario ends with the four invariants (`assert_invariants`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]  # no stubs installed
import pytest

from bananabatch.core.messages import load_completion_schema
from bananabatch.core.states import BatchState, ItemState
from tests.support.openai_stack import gemini_of, open_openai_stack, openai_emulator
from tests.support.stacks import Stack, StackKind, assert_invariants

GEMINI = [
    json.dumps({"key": "g1", "prompt": "a red apple"}),
    json.dumps({"key": "g2", "prompt": "a green pear", "aspect_ratio": "16:9"}),
    json.dumps({"key": "g3", "prompt": "a plum", "model": "gemini-3-pro-image"}),
]
OPENAI = [
    json.dumps({"key": "o1", "prompt": "a fox", "model": "gpt-image-2", "quality": "low"}),
    json.dumps({"key": "o2", "prompt": "an owl", "model": "gpt-image-2", "aspect_ratio": "3:2"}),
    json.dumps({"key": "o3", "prompt": "a cat", "model": "gpt-image-2", "quality": "high"}),
]
MIXED = [line for pair in zip(GEMINI, OPENAI, strict=True) for line in pair]


@pytest.fixture
def stack(request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path) -> Iterator[Stack]:
    with open_openai_stack(request, kind, tmp_path) as opened:
        yield opened


def _by_provider(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    shares: dict[str, dict[str, Any]] = summary["costs"]["by_provider"]
    return shares


def test_a_mixed_file_is_one_job_with_batches_per_provider_and_one_completion(
    stack: Stack,
) -> None:
    job_id = stack.upload(stack.write(MIXED))
    completions = stack.settle(job_id)
    summary = assert_invariants(stack, job_id, completions)
    assert summary["counts"][ItemState.SUCCEEDED.value] == 6
    batches = list(stack.repo.batches(job_id=job_id))
    assert {(b.provider, b.model) for b in batches} == {
        ("gemini", "gemini-3.1-flash-lite-image"),
        ("gemini", "gemini-3-pro-image"),
        ("openai", "gpt-image-2"),
    }
    assert {b.state for b in batches} == {BatchState.COLLECTED}
    assert gemini_of(stack).state.counters.batches_created == 2
    assert openai_emulator(stack).state.counters.batches_created == 1

    shares = _by_provider(summary)
    assert {name: share["items"] for name, share in shares.items()} == {"gemini": 3, "openai": 3}
    assert all(share["actual_usd"] > 0 for share in shares.values())
    assert sum(s["actual_usd"] for s in shares.values()) == pytest.approx(
        summary["costs"]["actual_usd"], abs=1e-5
    )
    (completion,) = completions
    assert completion.message["costs"]["by_provider"] == shares
    jsonschema.Draft202012Validator(load_completion_schema()).validate(completion.message)


def test_openai_refusing_creates_for_quota_does_not_hold_back_gemini_batches(
    stack: Stack,
) -> None:
    # OpenAI answers 429 to every create for a while: its rate limit is its own, and the
    # Gemini batches of the same job (and of the same submission round) still go.
    stack.faults.create_429 = 4
    job_id = stack.upload(stack.write(MIXED))
    stack.drain()
    assert gemini_of(stack).state.counters.batches_created == 2
    assert openai_emulator(stack).state.counters.batches_created == 0
    queued = list(stack.repo.batches(job_id=job_id, states=[BatchState.QUEUED]))
    assert [b.provider for b in queued] == ["openai"]
    summary = assert_invariants(stack, job_id, stack.settle(job_id, rounds=20))
    assert summary["counts"][ItemState.SUCCEEDED.value] == 6
    assert openai_emulator(stack).state.counters.batches_created == 1


def test_a_failing_openai_line_and_a_blocked_gemini_line_end_apart_and_are_costed_apart(
    stack: Stack,
) -> None:
    stack.faults.row_error("o2", code=3, message="Invalid prompt")  # a 400: permanent
    gemini_of(stack).state.faults.row("g1", "image_safety")
    job_id = stack.upload(stack.write(MIXED))
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = {i.key: i for i in stack.repo.items(job_id)}
    assert items["o2"].state is ItemState.FAILED
    assert items["g1"].state is ItemState.BLOCKED
    assert {k for k, i in items.items() if i.state is ItemState.SUCCEEDED} == {
        "g2",
        "g3",
        "o1",
        "o3",
    }
    shares = _by_provider(summary)
    assert shares["openai"]["items"] == shares["gemini"]["items"] == 3
    # The failed request was not billed: only o1 and o3 cost money on OpenAI.
    paid = sum(items[k].actual_usd or 0.0 for k in ("o1", "o3"))
    assert shares["openai"]["actual_usd"] == pytest.approx(paid, abs=1e-6)
