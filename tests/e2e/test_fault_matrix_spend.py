"""Fault-matrix rows for spending (issues 13 part 3, 15 parts 1 and 2): the three kinds of
429, a refused key, the billing kill switch, budget caps that metadata can only lower, and
many concurrent jobs under one daily cap. Each runs on the local stack and on the emulated
Google Cloud stack and ends with the four invariants (tests/support/stacks.py).

The emulator answers each refusal with the service's error body, `details` included
(emulator/errors.py); the unmodified google-genai SDK carries it to the provider, which
classifies it (providers/classify.py).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.genai import errors as genai_errors

from bananabatch import events
from bananabatch.config import DEFAULT_BUDGET_MARGIN, Settings
from bananabatch.core.records import job_id_for
from bananabatch.core.states import JOB_TERMINAL, BatchState, ItemState, JobState
from bananabatch.cost_cli import estimate_file
from bananabatch.emulator import EmulatorServer
from bananabatch.pipeline import budget, pause
from bananabatch.pipeline.pause import PauseKind
from bananabatch.wiring import build_runtime
from tests.support.emulator import emulator, request_file, sdk_client
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


class Messages:
    """Everything on the completions topic, split into alerts and each job's completions
    (pulling from the topic consumes, so one reader keeps them all)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen: list[Completion] = []

    def pull(self) -> None:
        self.seen += self.stack.completions()

    def alerts(self) -> list[dict[str, Any]]:
        self.pull()
        return [m.message for m in self.seen if m.attributes.get("kind") == "alert"]

    def of(self, job_id: str) -> list[Completion]:
        return [m for m in self.seen if m.job_id == job_id]

    def settle(
        self, job_id: str, *, rounds: int = 12, between: Callable[[], object] | None = None
    ) -> list[Completion]:
        """Stack.settle, keeping every other message (it would drop them)."""
        stack = self.stack
        for _ in range(rounds):
            stack.drain()
            self.pull()
            job = stack.repo.get_job(job_id)
            if job is not None and job.state in JOB_TERMINAL and self.of(job_id):
                break
            if between is not None:
                between()
            stack.clock.advance(STEP)
            stack.tick()
        stack.tick()
        stack.drain()
        self.pull()
        return self.of(job_id)


def _queued(stack: Stack, job_id: str) -> list[Any]:
    return list(stack.repo.batches(job_id=job_id, states=[BatchState.QUEUED]))


# --- credits depleted ----------------------------------------------------------------------


def test_depleted_credits_pause_everything_alert_once_and_a_probe_resumes(stack: Stack) -> None:
    fault = stack.faults.refuse_creates("credits_depleted", times=None)
    messages = Messages(stack)
    job_id = stack.upload(stack.write(PROMPTS))
    # Nothing created, nothing lost: both batches wait, the job shows why.
    assert len(_queued(stack, job_id)) == 2
    assert stack.emulator.state.counters.batches_created == 0
    assert stack.emulator.state.counters.creates_refused == 1
    job = stack.repo.require_job(job_id)
    assert job.state is JobState.RUNNING
    assert job.paused is not None
    assert job.paused.startswith("credits_depleted: 429 RESOURCE_EXHAUSTED Your prepayment credits")
    # A second job arriving while paused waits too, without a create being tried.
    # Requests of its own: the same ones would join the first job's (pipeline/inflight.py).
    own = [line.replace('"prompt": "', '"prompt": "other ') for line in PROMPTS[:2]]
    other = stack.upload(stack.write(own, name="other.jsonl"))
    assert stack.emulator.state.counters.creates_refused == 1
    assert stack.repo.require_job(other).paused == job.paused
    # Ticks inside the probe interval try nothing; a probe after it is refused once.
    for _ in range(2):
        stack.clock.advance(timedelta(minutes=14))
        stack.tick()
    assert stack.emulator.state.counters.creates_refused == 1
    stack.clock.advance(timedelta(minutes=14))
    stack.tick()
    assert stack.emulator.state.counters.creates_refused == 2
    (alert,) = messages.alerts()
    assert alert["alert"] == "credits_depleted"
    assert alert["paused"] is True
    assert set(alert["jobs"]) >= {job_id}
    # Credits topped up: the next probe succeeds, submission resumes by itself.
    fault.times = 0
    completions = messages.settle(job_id)
    summary = assert_invariants(stack, job_id, completions)
    assert summary["counts"]["SUCCEEDED"] == 5
    (waited,) = summary["pauses"]
    assert waited["reason"].startswith("credits_depleted:")
    assert "until" in waited
    assert stack.repo.require_job(job_id).paused is None
    assert_invariants(stack, other, messages.settle(other))
    assert len(messages.alerts()) == 1
    assert stack.emulator.state.counters.batches_created == 3


def test_resume_lifts_a_credits_pause_at_once(stack: Stack) -> None:
    fault = stack.faults.refuse_creates("credits_depleted", times=None)
    job_id = stack.upload(stack.write(PROMPTS))
    fault.times = 0
    lifted = pause.lift(stack.runtime)  # what `bananabatch resume` does
    assert [r.kind for r in lifted] == [PauseKind.CREDITS_DEPLETED]
    stack.tick()  # no probe interval to wait out
    assert stack.emulator.state.counters.batches_created == 2
    assert_invariants(stack, job_id, stack.settle(job_id))


# --- the spend window ----------------------------------------------------------------------


def test_a_spend_window_429_pauses_submission_for_ten_minutes_then_resumes(stack: Stack) -> None:
    stack.faults.refuse_creates("spend_window", times=1)
    messages = Messages(stack)
    job_id = stack.upload(stack.write(PROMPTS))
    assert len(_queued(stack, job_id)) == 2
    stack.tick()
    stack.clock.advance(timedelta(minutes=9, seconds=59))
    stack.tick()
    assert stack.emulator.state.counters.batches_created == 0
    assert stack.repo.require_job(job_id).paused is not None
    stack.clock.advance(timedelta(seconds=1))
    stack.tick()
    assert stack.emulator.state.counters.batches_created == 2
    assert_invariants(stack, job_id, messages.settle(job_id))
    # A pacing event, not an emergency: logged, not alerted.
    assert messages.alerts() == []
    assert stack.emulator.state.counters.creates_refused == 1


# --- rate limits ---------------------------------------------------------------------------


def test_a_rate_limit_waits_exactly_the_retry_info_delay(stack: Stack) -> None:
    stack.faults.refuse_creates("rate_limit", times=1, retry_delay="120s")
    job_id = stack.upload(stack.write(PROMPTS))
    (waiting,) = [b for b in _queued(stack, job_id) if b.next_submit_after is not None]
    assert waiting.next_submit_after == stack.clock() + timedelta(seconds=120)
    stack.clock.advance(timedelta(seconds=119))
    stack.tick()
    assert stack.emulator.state.counters.batches_created == 0
    stack.clock.advance(timedelta(seconds=1))
    stack.tick()
    assert stack.emulator.state.counters.batches_created == 2
    assert_invariants(stack, job_id, stack.settle(job_id))


def test_a_rate_limit_without_retry_info_backs_off_with_capped_jitter(stack: Stack) -> None:
    stack.faults.refuse_creates("rate_limit_no_retry_info", times=4)
    job_id = stack.upload(stack.write(PROMPTS))
    waits = []
    for _ in range(3):
        (waiting,) = [b for b in _queued(stack, job_id) if b.next_submit_after is not None]
        waits.append(waiting.next_submit_after - stack.clock())
        stack.clock.advance(timedelta(minutes=31))
        stack.tick()
    # Full jitter under an exponential ceiling (30 s x 2^n), never past the 30-minute cap.
    assert all(timedelta(0) <= w <= timedelta(minutes=30) for w in waits)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert stack.emulator.state.counters.creates_refused == 4


def test_unknown_429s_are_rate_limits_and_alert_after_the_configured_tries(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, quota_alert_after=3) as stack:
        stack.faults.refuse_creates("unknown_429", times=4)
        messages = Messages(stack)
        job_id = stack.upload(stack.write(PROMPTS))
        assert stack.repo.require_job(job_id).paused is None  # not a pause
        completions = messages.settle(job_id, rounds=16)
        assert_invariants(stack, job_id, completions)
        assert [a["alert"] for a in messages.alerts()] == ["unknown_quota"]


# --- refused credentials -------------------------------------------------------------------


@pytest.mark.parametrize("refusal", ["unauthenticated", "invalid_key"])
def test_a_refused_key_pauses_everything_is_never_retried_and_alerts_once(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path, refusal: Any
) -> None:
    with open_stack(request, kind, tmp_path) as stack:
        fault = stack.faults.refuse_creates(refusal, times=None)
        messages = Messages(stack)
        job_id = stack.upload(stack.write(PROMPTS))
        for _ in range(4):
            stack.clock.advance(timedelta(hours=1))
            stack.tick()
        assert stack.emulator.state.counters.creates_refused == 1
        assert len(_queued(stack, job_id)) == 2
        (alert,) = messages.alerts()
        assert (alert["alert"], alert["severity"]) == ("auth", "ERROR")
        assert "bananabatch resume" in alert["action"]
        assert stack.repo.require_job(job_id).paused is not None
        # The owner fixes the key and resumes.
        fault.times = 0
        pause.lift(stack.runtime)
        assert_invariants(stack, job_id, messages.settle(job_id))
        assert len(messages.alerts()) == 1


# --- the billing kill switch ---------------------------------------------------------------


def _budget_notification(stack: Stack, cost: float, threshold: float) -> None:
    payload = {
        "budgetDisplayName": "bananabatch kill switch",
        "alertThresholdExceeded": threshold,
        "costAmount": cost,
        "costIntervalStart": "2026-12-01T08:00:00Z",
        "budgetAmount": 100.0,
        "budgetAmountType": "SPECIFIED_AMOUNT",
        "currencyCode": "USD",
    }
    attributes, data = events.pubsub_published_event(
        project=str(stack.settings.project or "local"),
        topic="bananabatch-billing-alerts",
        subscription="billing-alerts-push",
        data=json.dumps(payload).encode(),
        attributes={
            "billingAccountId": "01AB23-45CD67-89EF01",
            "budgetId": "budget-1",
            "schemaVersion": "1.0",
        },
    )
    stack.deliver("on_billing_alert", attributes, data)


def test_the_billing_kill_switch_pauses_submission_until_resume(stack: Stack) -> None:
    messages = Messages(stack)
    _budget_notification(stack, 101.0, 1.0)
    job_id = stack.upload(stack.write(PROMPTS))
    assert stack.emulator.state.counters.batches_created == 0
    assert stack.emulator.state.counters.creates_refused == 0
    assert stack.repo.require_job(job_id).paused.startswith("billing_budget:")  # type: ignore[union-attr]
    # Budget notifications repeat through the day: the same one neither pauses again nor
    # alerts again, and never undoes a resume.
    _budget_notification(stack, 101.5, 1.0)
    for _ in range(3):
        stack.clock.advance(timedelta(hours=2))
        stack.tick()
    assert stack.emulator.state.counters.batches_created == 0
    (alert,) = messages.alerts()
    assert (alert["alert"], alert["severity"], alert["paused"]) == (
        "billing_budget",
        "CRITICAL",
        True,
    )
    pause.lift(stack.runtime)
    _budget_notification(stack, 102.0, 1.0)
    assert_invariants(stack, job_id, messages.settle(job_id))
    assert stack.emulator.state.counters.batches_created == 2


def test_the_kill_switch_stops_urgent_calls_too_until_resume(stack: Stack) -> None:
    """Urgent lines are paid synchronous calls at the standard price: a pause that let them
    through would spend past the kill switch."""
    messages = Messages(stack)
    _budget_notification(stack, 101.0, 1.0)
    lines = [
        '{"key": "now", "prompt": "a hero banner", "priority": "urgent"}',
        '{"key": "later", "prompt": "a hero logo"}',
    ]
    job_id = stack.upload(stack.write(lines))
    for _ in range(3):
        stack.clock.advance(timedelta(minutes=20))
        stack.tick()
    state = stack.emulator.state
    assert (state.counters.sync_requests, state.counters.batches_created) == (0, 0)
    assert stack.repo.require_job(job_id).paused is not None
    assert stack.repo.get_item(job_id, "now").state is ItemState.PENDING  # type: ignore[union-attr]
    pause.lift(stack.runtime)
    summary = assert_invariants(stack, job_id, messages.settle(job_id))
    assert summary["counts"]["SUCCEEDED"] == 2
    assert state.counters.sync_requests == 1


def test_depleted_credits_on_an_urgent_call_pause_instead_of_failing_the_item(
    stack: Stack,
) -> None:
    fault = stack.faults.refuse_creates("credits_depleted", times=None, generate=True)
    messages = Messages(stack)
    lines = [
        '{"key": "now", "prompt": "a hero banner", "priority": "urgent"}',
        '{"key": "soon", "prompt": "a hero logo", "priority": "urgent"}',
    ]
    job_id = stack.upload(stack.write(lines))
    state = stack.emulator.state
    # One refused call, not retried, not repeated for the other item: both wait.
    assert (state.counters.sync_refused, state.counters.sync_requests) == (1, 0)
    items = {i.key: i.state for i in stack.repo.items(job_id)}
    assert items == {"now": ItemState.PENDING, "soon": ItemState.PENDING}
    assert stack.repo.require_job(job_id).paused.startswith("credits_depleted:")  # type: ignore[union-attr]
    (alert,) = messages.alerts()
    assert alert["alert"] == "credits_depleted"
    fault.times = 0
    pause.lift(stack.runtime)
    summary = assert_invariants(stack, job_id, messages.settle(job_id))
    assert summary["counts"]["SUCCEEDED"] == 2
    assert state.counters.sync_requests == 2


# --- budgets -------------------------------------------------------------------------------


def test_object_metadata_cannot_raise_the_job_budget(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, job_budget_usd=0.01) as stack:
        raised = stack.upload(
            stack.write(PROMPTS, name="raised.jsonl"),
            metadata={budget.JOB_BUDGET_KEY: "1000000"},
        )
        job = stack.repo.require_job(raised)
        assert job.state is JobState.HELD
        assert "exceeds the job budget $0.0100 (BANANABATCH_JOB_BUDGET_USD" in str(job.error)
        assert stack.emulator.state.counters.batches_created == 0
        assert budget.day_totals(stack.runtime).committed_usd == 0.0


def test_object_metadata_lower_than_the_job_budget_is_the_cap(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, job_budget_usd=100.0) as stack:
        lowered = stack.upload(
            stack.write(PROMPTS, name="lowered.jsonl"), metadata={budget.JOB_BUDGET_KEY: "0.01"}
        )
        job = stack.repo.require_job(lowered)
        assert job.state is JobState.HELD
        assert "(object metadata bananabatch-budget-usd)" in str(job.error)


def _per_job_reservation(tmp_path: Path, lines: list[str]) -> float:
    probe = build_runtime(Settings(local_root=tmp_path / "probe"), with_provider=False)
    path = tmp_path / "probe.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return budget.with_margin(estimate_file(probe, path).batch_usd, DEFAULT_BUDGET_MARGIN)


def _burst(lines: list[str], n: int) -> list[str]:
    """Job n's lines: the same shapes and lengths, prompts of its own."""
    return [line.replace('"prompt": "', f'"prompt": "burst {n:02d} ') for line in lines]


CONCURRENT_JOBS = 16
ADMITTED = 5


def test_many_concurrent_uploads_never_pass_the_daily_cap_together(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    lines = PROMPTS[:3]
    per_job = _per_job_reservation(tmp_path, _burst(lines, 0))
    cap = per_job * (ADMITTED + 0.5)
    with open_stack(request, kind, tmp_path, held(), daily_budget_usd=cap) as stack:
        events_ = []
        for n in range(CONCURRENT_JOBS):
            # Requests of its own per job: the same ones would join the first job's
            # in-flight requests (pipeline/inflight.py) and cost nothing to admit.
            name = stack.put_inbox(stack.write(_burst(lines, n), name=f"burst-{n:02d}.jsonl"))
            events_.append(stack.finalized_event(name))
        start = threading.Barrier(CONCURRENT_JOBS)
        failures: list[BaseException] = []

        def deliver(attributes: dict[str, str], data: dict[str, Any]) -> None:
            start.wait()
            try:
                stack.deliver("on_upload", attributes, data)
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=deliver, args=event) for event in events_]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        job_ids = [
            job_id_for(events.StorageObjectData.model_validate(data).source())
            for _, data in events_
        ]
        jobs = [stack.repo.require_job(j) for j in job_ids]
        states = [j.state for j in jobs]
        assert states.count(JobState.RUNNING) == ADMITTED, states
        assert states.count(JobState.HELD) == CONCURRENT_JOBS - ADMITTED
        totals = budget.day_totals(stack.runtime)
        assert totals.committed_usd <= cap + 1e-9
        assert stack.emulator.state.counters.batches_created == ADMITTED
        # The admitted jobs run to the end; what they spent stays under the cap too.
        messages = Messages(stack)
        for job in jobs:
            if job.state is JobState.RUNNING:
                done = messages.settle(job.job_id, between=stack.emulator.state.complete_all)
                assert_invariants(stack, job.job_id, done)
        settled = budget.day_totals(stack.runtime)
        assert settled.reserved_usd == pytest.approx(0.0, abs=1e-9)
        assert 0 < settled.spent_usd <= cap


# --- the SDK sees the service's error bodies -----------------------------------------------


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with emulator() as server:
        yield server


@pytest.mark.parametrize(
    ("kind", "code", "detail_type"),
    [
        ("credits_depleted", 429, "type.googleapis.com/google.rpc.Help"),
        ("spend_window", 429, "type.googleapis.com/google.rpc.QuotaFailure"),
        ("rate_limit", 429, "type.googleapis.com/google.rpc.RetryInfo"),
        ("unauthenticated", 401, "type.googleapis.com/google.rpc.ErrorInfo"),
        ("invalid_key", 400, "type.googleapis.com/google.rpc.ErrorInfo"),
    ],
)
def test_the_unmodified_sdk_hands_over_the_error_details_we_classify(
    emu: EmulatorServer, kind: Any, code: int, detail_type: str
) -> None:
    client = sdk_client(emu, "v1beta")
    uploaded = client.files.upload(
        file=io.BytesIO(request_file(["a", "b"])),
        config={"mime_type": "jsonl", "display_name": "in"},
    )
    emu.state.faults.refuse_creates(kind)
    with pytest.raises(genai_errors.APIError) as caught:
        client.batches.create(model="gemini-3-pro-image", src=str(uploaded.name))
    assert caught.value.code == code
    details = caught.value.details["error"]["details"]
    assert detail_type in {d["@type"] for d in details}
