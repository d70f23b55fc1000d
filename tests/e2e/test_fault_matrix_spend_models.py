"""Fault-matrix rows for a model the provider no longer serves (issue 13 part 1, "model not
found / not supported" at create; field-2026-12 §1 row 4): that model's batches stop after
one refusal, one alert goes out, and its items move to a fallback model only when the owner
configured one, never silently. Both stacks, four invariants.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bananabatch.core.states import ItemState, JobState
from bananabatch.pipeline import budget, model_gone
from tests.e2e.test_fault_matrix_spend import Messages
from tests.support.stacks import Stack, StackKind, assert_invariants, open_stack

GONE = "gemini-3.1-flash-lite-image"  # the default model
FALLBACK = "gemini-3-pro-image"

PROMPTS = [
    '{"key": "k1", "prompt": "a red apple"}',
    '{"key": "k2", "prompt": "a green pear", "aspect_ratio": "16:9"}',
    '{"key": "k3", "prompt": "a yellow banana"}',
    '{"key": "k4", "prompt": "a purple plum"}',
    '{"key": "k5", "prompt": "an orange orange"}',
]


def _models_created(stack: Stack) -> list[str]:
    state = stack.emulator.state
    return sorted(state.get_batch(name).model for name in state.batch_names())


def test_a_model_gone_without_fallback_fails_its_batches_after_one_refusal_and_alerts_once(
    stack: Stack,
) -> None:
    stack.faults.refuse_creates("model_not_found", times=None, model=GONE)
    messages = Messages(stack)
    job_id = stack.upload(stack.write(PROMPTS))
    completions = messages.settle(job_id)
    summary = assert_invariants(stack, job_id, completions)
    # One create asked; the second batch of the same model was never sent.
    assert stack.emulator.state.counters.creates_refused == 1
    assert stack.emulator.state.counters.batches_created == 0
    assert stack.repo.require_job(job_id).state is JobState.FAILED
    assert summary["counts"]["FAILED"] == 5
    for item in stack.repo.items(job_id):
        assert item.state is ItemState.FAILED
        assert GONE in (item.reason or "")
        assert "BANANABATCH_FALLBACK_MODEL" in (item.reason or "")
    (alert,) = messages.alerts()
    assert (alert["alert"], alert["severity"], alert["paused"]) == (
        "model_unavailable",
        "ERROR",
        False,
    )
    assert alert["details"] == {"model": GONE, "fallback": None}
    # A later job on that model costs no create either.
    other = stack.upload(stack.write(PROMPTS[:2], name="other.jsonl"))
    assert_invariants(stack, other, messages.settle(other))
    assert stack.emulator.state.counters.creates_refused == 1
    assert len(messages.alerts()) == 1


def test_a_model_gone_moves_its_items_to_the_configured_fallback_and_says_so(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, fallback_model=FALLBACK) as stack:
        stack.faults.refuse_creates("model_not_found", times=None, model=GONE)
        messages = Messages(stack)
        job_id = stack.upload(stack.write(PROMPTS))
        summary = assert_invariants(stack, job_id, messages.settle(job_id))
        assert summary["counts"]["SUCCEEDED"] == 5
        assert stack.emulator.state.counters.creates_refused == 1
        assert _models_created(stack) == [f"models/{FALLBACK}"] * 2
        assert {i.model for i in stack.repo.items(job_id)} == {FALLBACK}
        # Never silent: the alert names the fallback, the summary counts the items moved,
        # and the estimate follows the dearer model.
        (alert,) = messages.alerts()
        assert alert["details"] == {"model": GONE, "fallback": FALLBACK}
        moved = [w for w in summary["warnings"] if "fallback model" in w]
        assert len(moved) == 2
        assert all(GONE in w and FALLBACK in w for w in moved)
        costs = stack.repo.require_job(job_id).costs
        assert costs.estimated_usd == pytest.approx(
            sum(i.estimated_usd for i in stack.repo.items(job_id)), abs=1e-5
        )
        assert costs.estimated_usd == pytest.approx(costs.actual_usd, rel=0.01)
        # `bananabatch resume` forgets the gone model: it is asked again.
        assert model_gone.forget(stack.runtime) == [GONE]
        assert model_gone.gone_models(stack.runtime) == {}


def test_a_fallback_that_cannot_make_an_item_leaves_that_batch_failed_with_the_reason(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    lines = [
        '{"key": "big1", "prompt": "a castle", "model": "gemini-3-pro-image", "image_size": "2K"}',
        '{"key": "big2", "prompt": "a tower", "model": "gemini-3-pro-image", "image_size": "2K"}',
        '{"key": "big3", "prompt": "a bridge", "model": "gemini-3-pro-image", "image_size": "1K"}',
        '{"key": "s1", "prompt": "a cat", "model": "gemini-3-pro-image"}',
    ]
    with open_stack(request, kind, tmp_path, fallback_model=GONE) as stack:
        stack.faults.refuse_creates("model_not_found", times=None, model="gemini-3-pro-image")
        messages = Messages(stack)
        job_id = stack.upload(stack.write(lines))
        summary = assert_invariants(stack, job_id, messages.settle(job_id))
        items = {i.key: i for i in stack.repo.items(job_id)}
        for key in ("big1", "big2", "big3"):
            assert items[key].state is ItemState.FAILED
        assert "cannot make item 'big1' at size 2K" in (items["big1"].reason or "")
        assert items["s1"].state is ItemState.SUCCEEDED
        assert items["s1"].model == GONE
        assert (summary["counts"]["SUCCEEDED"], summary["counts"]["FAILED"]) == (1, 3)
        # The batch that could not move ended with the reason; the other one moved.
        errors = [b.provider_error for b in stack.repo.batches(job_id=job_id)]
        (failed,) = [e for e in errors if e is not None]
        assert "cannot make item 'big1' at size 2K" in failed
        assert len(errors) == 2


def test_a_dearer_fallback_that_would_pass_the_daily_budget_is_not_used(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(
        request, kind, tmp_path, fallback_model=FALLBACK, daily_budget_usd=0.2
    ) as stack:
        stack.faults.refuse_creates("model_not_found", times=None, model=GONE)
        messages = Messages(stack)
        job_id = stack.upload(stack.write(PROMPTS))
        assert stack.repo.require_job(job_id).state is JobState.RUNNING  # within the cap
        assert_invariants(stack, job_id, messages.settle(job_id))
        assert stack.emulator.state.counters.batches_created == 0
        reasons = {i.reason for i in stack.repo.items(job_id)}
        assert all(f"{FALLBACK} costs more" in str(r) for r in reasons), reasons
        assert all("over the daily budget $0.2000" in str(r) for r in reasons), reasons
        # Nothing stays reserved past the job's end.
        assert budget.day_totals(stack.runtime).reserved_usd == 0
