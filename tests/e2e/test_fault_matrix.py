"""The fault matrix: each fault the emulator can inject, and a crash at every step boundary,
on the local stack and on the emulated Google Cloud stack (tests/support/stacks.py; ids read
test_x[local] and test_x[gcp]). Every scenario ends with the same four checks
(`assert_invariants`, in tests/support/stacks.py):

1. every input line ends in exactly one terminal state;
2. every SUCCEEDED item has its image in the results bucket (read through the ObjectStore);
3. nothing was paid for twice. Precisely: the emulator records every row it accepted for
   generation; for each key of the job, the accepted rows are exactly one per attempt
   1..item.attempt. A retry of a FAILED row is a new attempt (a new, deliberate request
   for a result the provider did not give), so it is not a duplicate; the same
   (key, attempt) accepted twice would be. Without retries this is simply
   `emu.state.duplicate_keys(prefix) == []`;
4. exactly one completion message was published for the job.

Time never passes by itself: the emulator runs on a ManualClock with zero delays, and the
runtime's clock (on which the collector also measures its deadline) is a FakeClock the
scenario moves forward (grace periods, backoff, the stuck-batch watchdog, a slow download).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks import Webhook

from bananabatch import entrypoints, events, faults
from bananabatch.core.records import CANCEL_OPTION, job_id_for
from bananabatch.core.states import JOB_TERMINAL, BatchState, ItemState, JobState
from bananabatch.emulator.faults import RowFault
from bananabatch.emulator.webhooks import KID_RSA
from bananabatch.pipeline import collect, control, urgent
from tests.support.stacks import (
    PROMPTS,
    Stack,
    StackKind,
    WebhookScheme,
    assert_invariants,
    held,
    open_stack,
)


def _upload(stack: Stack, lines: list[str]) -> str:
    return stack.upload(stack.write(lines))


def _items(stack: Stack, job_id: str) -> dict[str, Any]:
    return {i.key: i for i in stack.repo.items(job_id)}


# --- the clean run ---------------------------------------------------------------------


def test_a_clean_run_satisfies_every_invariant(stack: Stack) -> None:
    job_id = _upload(stack, PROMPTS)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    assert summary["counts"]["SUCCEEDED"] == 5


# --- idempotent intake -----------------------------------------------------------------


def test_a_redelivered_and_a_concurrent_duplicate_upload_event_create_one_job(
    stack: Stack,
) -> None:
    name = stack.put_inbox(stack.write(PROMPTS))
    attributes, data = stack.finalized_event(name)
    job_id = job_id_for(events.StorageObjectData.model_validate(data).source())
    threads = [
        threading.Thread(target=stack.deliver, args=("on_upload", attributes, data))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.deliver("on_upload", attributes, data)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert len(stack.emulator.state.batch_names()) == 2


# --- submission ledger and backpressure ------------------------------------------------


def test_quota_refusals_leave_batches_queued_and_the_tick_submits_them_later(
    stack: Stack,
) -> None:
    stack.faults.create_429 = 3
    job_id = _upload(stack, PROMPTS)
    queued = list(stack.repo.batches(job_id=job_id, states=[BatchState.QUEUED]))
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


def test_the_tick_keeps_under_the_active_batch_limit(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), max_active_batches=1) as stack:
        job_id = _upload(stack, PROMPTS)
        assert len(stack.emulator.state.batch_names()) == 1
        stack.tick()
        assert len(stack.emulator.state.batch_names()) == 1
        completions = stack.settle(job_id, between=stack.emulator.state.complete_all)
        assert len(stack.emulator.state.batch_names()) == 2
        assert_invariants(stack, job_id, completions)


# --- cancellation racing a create whose outcome is unknown ------------------------------


def _cancelled_everywhere(stack: Stack, job_id: str) -> None:
    """The job ended CANCELLED, every line FAILED or CANCELLED-by-batch, nothing running."""
    job = stack.repo.require_job(job_id)
    assert job.state is JobState.CANCELLED, job.state
    state = stack.emulator.state
    assert {state.batch_state(n) for n in state.batch_names()} <= {"BATCH_STATE_CANCELLED"}


def test_a_cancel_while_a_create_answer_is_lost_cancels_that_batch_once_it_is_found(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        stack.faults.lose_create_response = 1
        job_id = _upload(stack, PROMPTS)
        control.cancel_job(stack.runtime, job_id)
        # The batch whose answer was lost was SUBMITTING during the cancel, so the cancel
        # could not reach it; the tick finds it by display name and cancels it there.
        completions = stack.settle(job_id)
        assert_invariants(stack, job_id, completions)
        _cancelled_everywhere(stack, job_id)
        assert stack.emulator.state.counters.batches_created == 2


def test_a_cancel_while_a_create_failed_never_lets_that_batch_be_created(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        stack.faults.create_500 = 1
        job_id = _upload(stack, PROMPTS)
        control.cancel_job(stack.runtime, job_id)
        completions = stack.settle(job_id)  # runs past the reconcile grace
        assert_invariants(stack, job_id, completions)
        _cancelled_everywhere(stack, job_id)
        assert stack.emulator.state.counters.batches_created == 1
        (unsent,) = [b.batch_id for b in stack.repo.batches(job_id=job_id) if not b.provider_name]
        never_sent = [i for i in stack.repo.items(job_id) if i.batch_id == unsent]
        assert {i.reason for i in never_sent} == {
            "no output: the batch ended CANCELLED: cancelled by user before submission"
        }


def test_a_queued_batch_of_a_job_cancelled_behind_its_back_is_cancelled_not_submitted(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        stack.faults.create_429 = 1
        job_id = _upload(stack, PROMPTS)
        assert len(list(stack.repo.batches(job_id=job_id, states=[BatchState.QUEUED]))) == 2
        # As if a cancel's pass over the batches ran while they were SUBMITTING and they
        # went back to QUEUED afterwards: only the job's flag says to stop.
        stack.repo.patch_job(job_id, lambda j: {"options": {**j.options, CANCEL_OPTION: "1"}})
        completions = stack.settle(job_id)
        assert_invariants(stack, job_id, completions)
        assert stack.repo.require_job(job_id).state is JobState.CANCELLED
        assert stack.emulator.state.counters.batches_created == 0


# --- outcomes and retries --------------------------------------------------------------


def test_each_row_outcome_ends_terminal_and_only_retryable_failures_are_retried(
    stack: Stack,
) -> None:
    stack.faults.rows["k1"] = RowFault("error", times=1)  # INTERNAL once: retried, then succeeds
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


def test_blocked_prompts_and_no_image_answers_end_blocked_and_are_never_retried(
    stack: Stack,
) -> None:
    stack.faults.row("k1", "prompt_blocked")  # promptFeedback.blockReason, no candidates
    stack.faults.row("k2", "no_image")  # a text-only answer, finishReason NO_IMAGE
    stack.faults.row("k3", "image_safety")
    job_id = _upload(stack, PROMPTS)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = _items(stack, job_id)
    for key in ("k1", "k2", "k3"):
        assert (items[key].state, items[key].attempt) == (ItemState.BLOCKED, 1), key
        assert items[key].image_uri is None
    assert "PROHIBITED_CONTENT" in (items["k1"].reason or "")
    assert "NO_IMAGE" in (items["k2"].finish_reason or items["k2"].reason or "")
    assert summary["counts"]["BLOCKED"] == 3
    assert summary["counts"]["SUCCEEDED"] == 2
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL


def test_a_row_that_always_fails_retryably_stops_at_max_attempts(stack: Stack) -> None:
    stack.faults.row_error("k1")
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    item = _items(stack, job_id)["k1"]
    max_attempts = stack.settings.max_attempts
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
    stack: Stack,
) -> None:
    # First attempts never finish, whatever the emulator's timing; their resubmissions do.
    stack.faults.stick("*-a1")
    job_id = _upload(stack, PROMPTS[:2])
    stack.tick()
    assert stack.drain() == 0
    (first,) = stack.emulator.state.batch_names()
    assert stack.emulator.state.batch_state(first) == "BATCH_STATE_RUNNING"
    stack.clock.advance(timedelta(hours=stack.settings.stuck_after_hours - 1))
    stack.tick()
    assert stack.emulator.state.batch_names() == [first]  # not yet past the watchdog
    stack.clock.advance(timedelta(hours=2))
    stack.tick()
    stack.drain()
    names = stack.emulator.state.batch_names()
    assert len(names) == 2
    assert stack.emulator.state.batch_state(first) == "BATCH_STATE_CANCELLED"
    assert_invariants(stack, job_id, stack.settle(job_id))
    items = _items(stack, job_id)
    assert {(i.state, i.attempt) for i in items.values()} == {(ItemState.SUCCEEDED, 2)}


# --- collection ------------------------------------------------------------------------


def test_a_truncated_download_is_not_collected_and_is_resumed_on_redelivery(
    stack: Stack,
) -> None:
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
    with open_stack(request, kind, tmp_path, max_requests_per_batch=rows) as stack:
        lines = [json.dumps({"key": f"s{n:03d}", "prompt": f"picture {n}"}) for n in range(rows)]
        # Each 64 KiB served takes a quarter of the collector's budget on the stack's clock,
        # so the budget is gone after five chunks; the first checkpoint's rows (tens of KiB
        # each) are many more chunks than that, however far the server runs ahead.
        stack.faults.slow_download(
            stack.clock.advance_seconds,
            chunk_bytes=64 * 1024,
            seconds_per_chunk=entrypoints.COLLECT_BUDGET_SECONDS / 4,
        )
        job_id = _upload(stack, lines)
        stack.tick()  # the batch finished at once: the tick announces it
        assert stack.drain(limit=1) == 1
        (batch,) = stack.repo.batches(job_id=job_id)
        assert batch.state is BatchState.SUCCEEDED  # stopped early, not collected
        assert batch.cursor == collect.CHECKPOINT_ROWS
        done = Counter(i.state for i in stack.repo.items(job_id))
        assert done[ItemState.SUCCEEDED] == collect.CHECKPOINT_ROWS
        # The collector announced the batch again before it stopped: the continuation.
        assert stack.drain() == 1
        assert stack.repo.require_batch(batch.batch_id).state is BatchState.COLLECTED
        assert sum(stack.emulator.state.counters.downloads.values()) == 2
        assert stack.failed_deliveries == 0
        assert_invariants(stack, job_id, stack.settle(job_id))
        assert Counter(i.state for i in stack.repo.items(job_id)) == {ItemState.SUCCEEDED: rows}


def test_a_claimed_but_unpublished_completion_is_published_by_a_later_tick(
    stack: Stack,
) -> None:
    faults.arm("finalize.after_claim")
    job_id = _upload(stack, PROMPTS[:1])
    stack.tick()
    # The redelivered batch-done finds the claim taken and publishes nothing: the claim
    # is what makes a second message impossible, so recovery has to come from the tick.
    stack.drain()
    assert (faults.hits("finalize.after_claim"), stack.failed_deliveries) == (1, 1)
    job = stack.repo.require_job(job_id)
    assert job.state in JOB_TERMINAL
    assert (job.completion_pending, job.completion_published) == (False, False)
    stack.tick()  # too soon: a live publisher may still be at work
    assert stack.completions() == []
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)


def test_an_urgent_call_cut_off_by_a_crash_is_failed_not_repeated_and_the_rest_run(
    stack: Stack,
) -> None:
    faults.arm("urgent.after_claim")
    lines = [
        *PROMPTS[:2],
        '{"key": "now", "prompt": "a hero banner", "priority": "urgent"}',
        '{"key": "soon", "prompt": "a hero logo", "priority": "urgent"}',
    ]
    job_id = _upload(stack, lines)
    assert faults.hits("urgent.after_claim") == 1
    # The lane died with "now" claimed and "soon" not reached; the batch part went on.
    items = _items(stack, job_id)
    assert (items["now"].state, items["soon"].state) == (ItemState.SUBMITTED, ItemState.PENDING)
    calls_before = stack.emulator.state.counters.sync_requests
    completions = stack.settle(job_id)  # moves the clock past urgent.ORPHANED_AFTER
    assert_invariants(stack, job_id, completions)
    items = _items(stack, job_id)
    assert (items["now"].state, items["now"].reason) == (ItemState.FAILED, urgent.ORPHANED_REASON)
    assert items["soon"].state is ItemState.SUCCEEDED
    # Only "soon" was called: "now" (whose call may or may not have happened) never again.
    assert stack.emulator.state.counters.sync_requests == calls_before + 1
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL


# --- a crash at every step boundary, then the event again --------------------------------


# These have scenarios of their own: finalize.after_claim is recovered by a tick, not by
# redelivery, urgent.after_claim needs urgent lines, the inflight points need a line
# that joined another job's request (tests/e2e/test_fault_matrix_inflight.py), and the pack
# points need files waiting for the batch window (tests/e2e/test_fault_matrix_window_pack.py).
_OWN_SCENARIOS = ("finalize.after_claim", "urgent.after_claim")
REDELIVERED_POINTS = [
    p for p in faults.POINTS if p not in _OWN_SCENARIOS and not p.startswith(("inflight.", "pack."))
]


@pytest.mark.parametrize("point", REDELIVERED_POINTS)
def test_a_crash_at_each_step_boundary_is_recovered_by_redelivery(stack: Stack, point: str) -> None:
    stack.faults.rows["k2"] = RowFault(
        "error", times=1
    )  # so the retry path's boundaries are crossed
    faults.arm(point)
    job_id = _upload(stack, PROMPTS)
    completions = stack.settle(job_id)
    assert faults.hits(point) == 1
    assert stack.failed_deliveries == 1
    assert_invariants(stack, job_id, completions)
    assert Counter(i.state for i in _items(stack, job_id).values()) == {ItemState.SUCCEEDED: 5}


def test_json_lines_in_the_matrix_are_valid() -> None:
    assert all(isinstance(json.loads(line), dict) for line in PROMPTS)


# --- push completion: webhooks with poll reconciliation ---------------------------------
#
# Batches are held until a test completes them, so only webhooks or ticks announce them.
# static: a project webhook, Standard Webhooks HMAC with the secret the emulator handed out;
# dynamic: per-batch URIs, signed "v1a" (Ed25519) as live deliveries are, checked against the
# emulator's JWKS (the documented JWT form runs in test_fault_matrix_deploy.py).


@pytest.fixture(params=["static", "dynamic"])
def scheme(request: pytest.FixtureRequest) -> WebhookScheme:
    scheme: WebhookScheme = request.param
    return scheme


def test_webhooks_announce_finished_batches_and_duplicates_or_late_ones_are_harmless(
    request: pytest.FixtureRequest, kind: StackKind, scheme: WebhookScheme, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), webhooks=scheme) as stack:
        hooks = stack.emulator.state.webhooks
        hooks.faults.duplicate, hooks.faults.delay = 1, 1
        job_id = _upload(stack, PROMPTS)
        stack.emulator.state.complete_all()
        # The duplicate carries the same webhook-id. The receiver keeps no record (it has no
        # database rights), so both are accepted and announced; the collector absorbs the
        # second announcement.
        assert stack.emulator.state.flush_webhooks() == [200, 200]
        assert stack.drain() == 2
        assert stack.completions() == []
        assert hooks.release() == 1
        assert stack.emulator.state.flush_webhooks() == [200]
        completions = stack.settle(job_id, rounds=1)
        assert_invariants(stack, job_id, completions)


def test_a_lost_webhook_delays_nothing_beyond_one_tick(
    request: pytest.FixtureRequest, kind: StackKind, scheme: WebhookScheme, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), webhooks=scheme) as stack:
        stack.emulator.state.webhooks.faults.drop = 2
        job_id = _upload(stack, PROMPTS)
        stack.emulator.state.complete_all()
        assert stack.emulator.state.flush_webhooks() == []
        assert stack.drain() == 0
        stack.tick()
        stack.drain()
        assert stack.repo.require_job(job_id).state in JOB_TERMINAL
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))


def _event_body(batch_name: str, stamp: int) -> bytes:
    event = {"type": "batch.succeeded", "version": "v1", "timestamp": stamp}
    return json.dumps(event | {"data": {"id": batch_name}}).encode()


Forgery = tuple[dict[str, str], bytes]


def _forgeries(stack: Stack, scheme: WebhookScheme, batch_name: str) -> dict[str, Forgery]:
    """Deliveries about a real batch that must be refused, by what is wrong with them."""
    now = int(time.time())  # the receiver checks the timestamp against the wall clock
    stale = now - 10 * 60
    body = _event_body(batch_name, now)

    def dated(stamp: int = now) -> dict[str, str]:
        return {
            "webhook-id": f"msg_{uuid.uuid4()}",
            "webhook-timestamp": str(stamp),
            "content-type": "application/json",
        }

    if scheme == "static":
        secret = stack.settings.webhook_secret
        assert secret is not None
        impostor = "whsec_" + base64.b64encode(b"a secret nobody handed out").decode()

        def signed(key: str, stamp: int = now) -> dict[str, str]:
            headers = dated(stamp)
            when = datetime.fromtimestamp(stamp, UTC)
            signature = Webhook(key).sign(headers["webhook-id"], when, body.decode())
            return headers | {"webhook-signature": signature}

        return {
            "unsigned": (dated(), body),
            "forged": (signed(impostor), body),
            "stale": (signed(secret, stale), body),
            "tampered": (signed(secret), _event_body("batches/another", now)),
            "undated": (signed(secret) | {"webhook-timestamp": "soon"}, body),
        }
    # dynamic: an RS256 JWT under the emulator's key id, signed by a key it never published
    impostor_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(stamp: int = now) -> str:
        claims = {"iat": stamp, "exp": stamp + 300, "iss": "emulator"}
        return jwt.encode(claims, impostor_key, algorithm="RS256", headers={"kid": KID_RSA})

    return {
        "unsigned": (dated(), body),
        "forged": (dated() | {"webhook-signature": token()}, body),
        "stale": (dated(stale) | {"webhook-signature": token(stale)}, body),
        "undated": (dated() | {"webhook-timestamp": "soon", "webhook-signature": token()}, body),
    }


def test_a_forged_stale_or_unsigned_webhook_is_refused_with_a_4xx_and_changes_nothing(
    request: pytest.FixtureRequest, kind: StackKind, scheme: WebhookScheme, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), webhooks=scheme) as stack:
        job_id = _upload(stack, PROMPTS)
        names = stack.emulator.state.complete_all()  # genuine deliveries queue up, unsent
        forgeries = _forgeries(stack, scheme, names[0])
        statuses = {why: stack.webhook(*forgery) for why, forgery in forgeries.items()}
        assert statuses == {why: 400 if why == "undated" else 401 for why in forgeries}
        # Nothing was announced or collected.
        assert stack.drain() == 0
        assert {b.state for b in stack.repo.batches(job_id=job_id)} == {BatchState.RUNNING}
        assert stack.repo.require_job(job_id).state not in JOB_TERMINAL
        # The genuine deliveries still go through, and the job completes.
        assert stack.emulator.state.flush_webhooks() == [200, 200]
        assert stack.drain() == 2
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))
