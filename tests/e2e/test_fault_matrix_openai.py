"""The fault matrix's provider rows on OpenAI Batch (issue 19): gpt-image lines go to the
OpenAI Batch emulator through the unmodified `openai` SDK, on the local stack and on the
emulated Google Cloud stack (ids read test_x[local] and test_x[gcp]). Every scenario ends
with the four invariants of tests/e2e/test_fault_matrix.py (`assert_invariants`): one
terminal state per line, every SUCCEEDED image present, nothing paid for twice (one row
accepted by the emulator per attempt), exactly one completion message.

Time never passes by itself: both emulators run on ManualClocks with zero delays unless a
scenario holds its batches, and the runtime's clock is the stack's FakeClock.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bananabatch import entrypoints
from bananabatch.core.states import JOB_TERMINAL, BatchState, ItemState, JobState
from bananabatch.emulator.faults import RowFault
from bananabatch.emulator.openai.webhooks import headers_for
from bananabatch.pipeline import collect, control, pause
from tests.e2e.test_fault_matrix_spend import Messages
from tests.support.openai_stack import (
    gemini_of,
    open_openai_stack,
    openai_emulator,
    openai_held,
    openai_zero_delays,
    post_openai_webhook,
    webhook_client,
)
from tests.support.stacks import Stack, StackKind, assert_invariants

MODEL = "gpt-image-2"


def line(key: str, prompt: str, **fields: Any) -> str:
    return json.dumps({"key": key, "prompt": prompt, "model": MODEL, "quality": "low"} | fields)


PROMPTS = [
    line("k1", "a red apple"),
    line("k2", "a green pear", aspect_ratio="3:2"),
    line("k3", "a yellow banana"),
    line("k4", "a purple plum", aspect_ratio="2:3"),
    line("k5", "an orange orange"),
]


@pytest.fixture
def stack(request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path) -> Iterator[Stack]:
    with open_openai_stack(request, kind, tmp_path) as opened:
        yield opened


def _upload(stack: Stack, lines: list[str]) -> str:
    return stack.upload(stack.write(lines))


def _items(stack: Stack, job_id: str) -> dict[str, Any]:
    return {i.key: i for i in stack.repo.items(job_id)}


# --- the clean run -------------------------------------------------------------------------


def test_a_clean_run_on_openai_satisfies_every_invariant(stack: Stack) -> None:
    job_id = _upload(stack, PROMPTS)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    assert summary["counts"]["SUCCEEDED"] == 5
    oai = openai_emulator(stack).state
    assert oai.counters.batches_created == 2
    assert gemini_of(stack).state.counters.batches_created == 0
    batches = list(stack.repo.batches(job_id=job_id))
    assert {b.provider for b in batches} == {"openai"}
    assert {b.state for b in batches} == {BatchState.COLLECTED}
    # Every request file went out as OpenAI lines, to the generations endpoint.
    assert {oai.get_batch(n).endpoint for n in oai.batch_names()} == {"/v1/images/generations"}
    # The uploaded request files were released once collected; only results remain.
    assert {f.purpose for f in oai.list_files()} == {"batch_output"}


# --- submission ledger and backpressure ------------------------------------------------------


def test_quota_refusals_leave_batches_queued_and_the_tick_submits_them_later(stack: Stack) -> None:
    stack.faults.create_429 = 3
    job_id = _upload(stack, PROMPTS)
    assert len(list(stack.repo.batches(job_id=job_id, states=[BatchState.QUEUED]))) == 2
    assert openai_emulator(stack).state.counters.batches_created == 0
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert openai_emulator(stack).state.counters.batches_created == 2


def test_a_create_whose_answer_is_lost_is_reconciled_by_metadata_not_recreated(
    stack: Stack,
) -> None:
    stack.faults.lose_create_response = 1
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert openai_emulator(stack).state.counters.batches_created == 2


def test_a_create_that_failed_with_500_is_requeued_after_the_grace_and_created_once(
    stack: Stack,
) -> None:
    stack.faults.create_500 = 1
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert openai_emulator(stack).state.counters.batches_created == 2


# --- line outcomes and retries ---------------------------------------------------------------


def test_each_line_outcome_ends_terminal_and_only_retryable_failures_are_retried(
    stack: Stack,
) -> None:
    stack.faults.rows["k1"] = RowFault("error", times=1)  # a 500 once: retried, then succeeds
    stack.faults.row_error("k2", code=3, message="Invalid prompt")  # a 400: permanent
    stack.faults.row("k3", "image_safety")  # moderation_blocked: BLOCKED, never retried
    stack.faults.row("k4", "duplicate")
    stack.faults.row("k5", "missing", times=1)  # missing once: retried
    job_id = _upload(stack, PROMPTS)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = _items(stack, job_id)
    assert (items["k1"].state, items["k1"].attempt) == (ItemState.SUCCEEDED, 2)
    assert (items["k2"].state, items["k2"].attempt) == (ItemState.FAILED, 1)
    assert "Invalid prompt" in (items["k2"].reason or "")
    assert (items["k3"].state, items["k3"].attempt) == (ItemState.BLOCKED, 1)
    assert "safety system" in (items["k3"].reason or "")
    assert (items["k4"].state, items["k4"].attempt) == (ItemState.SUCCEEDED, 1)
    assert (items["k5"].state, items["k5"].attempt) == (ItemState.SUCCEEDED, 2)
    assert summary["counts"]["SUCCEEDED"] == 3


def test_policy_refusals_end_blocked_and_are_never_retried(stack: Stack) -> None:
    stack.faults.row("k1", "prompt_blocked")
    stack.faults.row("k2", "image_safety")
    job_id = _upload(stack, PROMPTS)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = _items(stack, job_id)
    for key in ("k1", "k2"):
        assert (items[key].state, items[key].attempt) == (ItemState.BLOCKED, 1), key
        assert items[key].image_uri is None
    assert openai_emulator(stack).state.submitted_keys()["k1"] == 1
    assert summary["counts"]["BLOCKED"] == 2
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL


def test_an_answer_without_an_image_fails_its_line_as_on_gemini(stack: Stack) -> None:
    # A 200 whose data holds no image: NO_IMAGE, FAILED with the reason, and (as for a
    # Gemini row that finished without an image) not sent again by the retry path.
    stack.faults.row("k1", "no_image")
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    item = _items(stack, job_id)["k1"]
    assert (item.state, item.attempt) == (ItemState.FAILED, 1)
    assert (item.reason or "").startswith("no image")


# --- batches that end badly ------------------------------------------------------------------


def test_a_batch_failing_validation_is_resubmitted_once_in_a_new_batch(stack: Stack) -> None:
    stack.faults.job("FAILED", display_name="*-b0001-a1")
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    items = _items(stack, job_id)
    assert all(i.state is ItemState.SUCCEEDED for i in items.values())
    assert sorted(k for k, i in items.items() if i.attempt == 2) == ["k1", "k2", "k3"]


@pytest.mark.parametrize("list_unrun", [True, False])
def test_an_expired_batch_keeps_its_finished_work_and_resubmits_only_the_rest(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path, list_unrun: bool
) -> None:
    config = openai_zero_delays(list_unrun=list_unrun, expired_done_fraction=0.5)
    with open_openai_stack(request, kind, tmp_path, config) as stack:
        stack.faults.job("EXPIRED", display_name="*-b0001-a1")
        job_id = _upload(stack, PROMPTS)
        assert_invariants(stack, job_id, stack.settle(job_id))
        items = _items(stack, job_id)
        assert all(i.state is ItemState.SUCCEEDED for i in items.values())
        # The first batch (k1..k3) ran one request of three before its window closed: that
        # one is kept and billed once; the two it never ran went into a new batch.
        attempts = {k: i.attempt for k, i in items.items()}
        assert attempts == {"k1": 1, "k2": 2, "k3": 2, "k4": 1, "k5": 1}


def test_a_batch_stuck_past_the_watchdog_is_cancelled_and_its_items_resubmitted_once(
    stack: Stack,
) -> None:
    stack.faults.stick("*-a1")
    job_id = _upload(stack, PROMPTS[:2])
    stack.tick()
    (first,) = openai_emulator(stack).state.batch_names()
    stack.clock.advance(timedelta(hours=stack.settings.stuck_after_hours + 1))
    stack.tick()
    stack.drain()
    assert openai_emulator(stack).state.batch_state(first) == "cancelled"
    assert_invariants(stack, job_id, stack.settle(job_id))
    items = _items(stack, job_id)
    assert {(i.state, i.attempt) for i in items.values()} == {(ItemState.SUCCEEDED, 2)}


def test_a_job_cancelled_while_its_batches_run_ends_cancelled_and_pays_nothing_twice(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_openai_stack(request, kind, tmp_path, openai_held()) as stack:
        job_id = _upload(stack, PROMPTS)
        control.cancel_job(stack.runtime, job_id)
        completions = stack.settle(job_id)
        assert_invariants(stack, job_id, completions)
        assert stack.repo.require_job(job_id).state is JobState.CANCELLED
        oai = openai_emulator(stack).state
        assert {oai.batch_state(n) for n in oai.batch_names()} == {"cancelled"}


# --- collection ------------------------------------------------------------------------------


def test_a_truncated_download_is_not_collected_and_is_resumed_on_redelivery(stack: Stack) -> None:
    stack.faults.truncate_downloads = 1
    job_id = _upload(stack, PROMPTS)
    completions = stack.settle(job_id)
    assert stack.failed_deliveries >= 1
    assert_invariants(stack, job_id, completions)
    assert all(i.state is ItemState.SUCCEEDED for i in _items(stack, job_id).values())


def test_a_slow_download_stops_at_the_deadline_and_a_continuation_resumes_at_the_cursor(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    rows = collect.CHECKPOINT_ROWS + 10
    with open_openai_stack(
        request, kind, tmp_path, max_requests_per_batch=rows, daily_budget_usd=100.0
    ) as stack:
        lines = [line(f"s{n:03d}", f"picture {n}") for n in range(rows)]
        stack.faults.row_error("s001", code=3, message="Invalid prompt")  # in the error file
        stack.faults.slow_download(
            stack.clock.advance_seconds,
            chunk_bytes=64 * 1024,
            seconds_per_chunk=entrypoints.COLLECT_BUDGET_SECONDS / 4,
        )
        job_id = _upload(stack, lines)
        stack.tick()
        assert stack.drain(limit=1) == 1
        (batch,) = stack.repo.batches(job_id=job_id)
        assert batch.state is BatchState.SUCCEEDED  # stopped early, not collected
        assert batch.cursor == collect.CHECKPOINT_ROWS
        assert stack.drain() == 1
        assert stack.repo.require_batch(batch.batch_id).state is BatchState.COLLECTED
        assert_invariants(stack, job_id, stack.settle(job_id))
        counts = Counter(i.state for i in stack.repo.items(job_id))
        assert counts == {ItemState.SUCCEEDED: rows - 1, ItemState.FAILED: 1}


# --- webhooks ----------------------------------------------------------------------------------


def test_openai_webhooks_announce_finished_batches_and_duplicates_or_late_ones_are_harmless(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_openai_stack(request, kind, tmp_path, openai_held(), webhooks=True) as stack:
        oai = openai_emulator(stack).state
        oai.webhooks.faults.duplicate, oai.webhooks.faults.delay = 1, 1
        job_id = _upload(stack, PROMPTS)
        oai.complete_all()
        assert oai.flush_webhooks() == [200, 200]
        assert stack.drain() == 2
        assert stack.completions() == []
        assert oai.webhooks.release() == 1
        assert oai.flush_webhooks() == [200]
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))


def test_a_lost_openai_webhook_delays_nothing_beyond_one_tick(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_openai_stack(request, kind, tmp_path, openai_held(), webhooks=True) as stack:
        oai = openai_emulator(stack).state
        oai.webhooks.faults.drop = 2
        job_id = _upload(stack, PROMPTS)
        oai.complete_all()
        assert oai.flush_webhooks() == []
        assert stack.drain() == 0
        stack.tick()
        stack.drain()
        assert stack.repo.require_job(job_id).state in JOB_TERMINAL
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))


def test_a_forged_or_stale_openai_webhook_is_refused_and_changes_nothing(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_openai_stack(request, kind, tmp_path, openai_held(), webhooks=True) as stack:
        oai = openai_emulator(stack).state
        job_id = _upload(stack, PROMPTS)
        names = oai.complete_all()  # genuine deliveries queue up, unsent
        secret = stack.settings.openai_webhook_secret
        assert secret is not None
        body = json.dumps(
            {
                "id": f"evt_{uuid.uuid4().hex}",
                "object": "event",
                "created_at": int(time.time()),
                "type": "batch.completed",
                "data": {"id": names[0]},
            }
        ).encode()
        impostor = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
        client = webhook_client()
        forged = post_openai_webhook(client, headers_for(impostor, body), body)
        stale = headers_for(secret, body, stamp=int(time.time()) - 600)
        assert (forged, post_openai_webhook(client, stale, body)) == (401, 401)
        # A Gemini-signed path does not open the OpenAI one, nor the other way round.
        assert stack.webhook(dict(headers_for(secret, body)), body) in (401, 404)
        assert stack.drain() == 0
        assert stack.repo.require_job(job_id).state not in JOB_TERMINAL
        assert oai.flush_webhooks() == [200, 200]
        assert stack.drain() == 2
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))


# --- refusals that pause submission ----------------------------------------------------------


def _queued(stack: Stack, job_id: str) -> list[Any]:
    return list(stack.repo.batches(job_id=job_id, states=[BatchState.QUEUED]))


def test_insufficient_quota_pauses_submission_alerts_once_and_a_probe_resumes(
    stack: Stack,
) -> None:
    fault = stack.faults.refuse_creates("credits_depleted", times=None)
    messages = Messages(stack)
    job_id = _upload(stack, PROMPTS)
    oai = openai_emulator(stack).state
    assert len(_queued(stack, job_id)) == 2
    assert (oai.counters.batches_created, oai.counters.creates_refused) == (0, 1)
    job = stack.repo.require_job(job_id)
    assert job.paused is not None
    assert job.paused.startswith("credits_depleted: 429 insufficient_quota")
    (alert,) = messages.alerts()
    assert alert["alert"] == "credits_depleted"
    fault.times = 0
    summary = assert_invariants(stack, job_id, messages.settle(job_id))
    assert summary["counts"]["SUCCEEDED"] == 5
    assert stack.repo.require_job(job_id).paused is None
    assert len(messages.alerts()) == 1


def test_a_refused_openai_key_pauses_is_never_retried_and_alerts_once(stack: Stack) -> None:
    fault = stack.faults.refuse_creates("unauthenticated", times=None)
    messages = Messages(stack)
    job_id = _upload(stack, PROMPTS)
    for _ in range(4):
        stack.clock.advance(timedelta(hours=1))
        stack.tick()
    assert openai_emulator(stack).state.counters.creates_refused == 1
    assert len(_queued(stack, job_id)) == 2
    (alert,) = messages.alerts()
    assert (alert["alert"], alert["severity"]) == ("auth", "ERROR")
    assert "OPENAI_API_KEY" in json.dumps(alert)
    fault.times = 0
    pause.lift(stack.runtime)
    assert_invariants(stack, job_id, messages.settle(job_id))
    assert len(messages.alerts()) == 1
