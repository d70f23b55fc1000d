"""pipeline/lifecycle.py, the one writer of job records, on the local state store: each
named move happens once, only from the states core/states.py allows, and each claim is
won by exactly one caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bananabatch.config import Settings
from bananabatch.core.records import JobRecord, SourceObject
from bananabatch.core.states import JobState
from bananabatch.errors import InvalidTransition
from bananabatch.pipeline import lifecycle
from bananabatch.pipeline.runtime import Runtime
from bananabatch.wiring import build_runtime

JOB = "job-1"
STAGED = {"line_count": 3, "accepted_count": 3}


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return build_runtime(Settings(local_root=tmp_path), with_provider=False)


def _received(state: JobState = JobState.RECEIVED) -> JobRecord:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    return JobRecord(
        job_id=JOB,
        state=state,
        source=SourceObject(bucket="inbox", name="a.jsonl", generation="1"),
        created_at=now,
        updated_at=now,
        default_model="gemini-3-pro-image",
        results_prefix="file:///results/jobs/job-1/",
    )


def test_a_job_is_received_once_and_only_as_received(rt: Runtime) -> None:
    assert lifecycle.receive(rt, _received()) is True
    assert lifecycle.receive(rt, _received()) is False
    with pytest.raises(InvalidTransition):
        lifecycle.receive(rt, _received(JobState.RUNNING))


def test_a_received_job_starts_once_with_what_intake_staged(rt: Runtime) -> None:
    lifecycle.receive(rt, _received())
    first = lifecycle.start(rt, JOB, budget_day="2026-12-07", staged=STAGED)
    again = lifecycle.start(rt, JOB, budget_day="2026-12-08", staged=STAGED)
    assert (first.moved, again.moved) == (True, False)
    assert again.record.state is JobState.RUNNING
    assert (again.record.budget_day, again.record.line_count) == ("2026-12-07", 3)


def test_a_held_job_owes_its_message_and_is_approved_or_rejected_not_started(
    rt: Runtime,
) -> None:
    lifecycle.receive(rt, _received())
    held = lifecycle.hold(rt, JOB, "over the job budget", STAGED)
    assert held.moved
    assert held.record.completion_pending
    assert held.record.error == "over the job budget"
    assert not lifecycle.start(rt, JOB, budget_day=None, staged=STAGED).moved
    approved = lifecycle.approve(rt, JOB, budget_day="2026-12-07")
    assert approved.moved
    assert approved.record.state is JobState.RUNNING
    assert approved.record.error is None
    assert not lifecycle.approve(rt, JOB, budget_day="2026-12-07").moved


def test_a_held_job_may_only_end_cancelled(rt: Runtime) -> None:
    lifecycle.receive(rt, _received())
    lifecycle.hold(rt, JOB, "over", STAGED)
    assert not lifecycle.end(rt, JOB, JobState.SUCCEEDED, {}).moved
    ended = lifecycle.end(rt, JOB, JobState.CANCELLED, {"error": "rejected by user"})
    assert ended.moved
    assert ended.record.state is JobState.CANCELLED


def test_a_job_ends_once_and_never_at_a_state_that_is_not_an_end(rt: Runtime) -> None:
    lifecycle.receive(rt, _received())
    lifecycle.start(rt, JOB, budget_day=None, staged=STAGED)
    with pytest.raises(InvalidTransition):
        lifecycle.end(rt, JOB, JobState.RUNNING, {})
    first = lifecycle.end(rt, JOB, JobState.PARTIAL, {"completion_pending": True})
    second = lifecycle.end(rt, JOB, JobState.FAILED, {"completion_pending": True})
    assert (first.moved, second.moved) == (True, False)
    assert second.record.state is JobState.PARTIAL


def test_only_a_running_job_shows_a_pause_and_its_history_closes(rt: Runtime) -> None:
    lifecycle.receive(rt, _received())
    assert not lifecycle.show_pause(rt, JOB, "credits depleted", "t0")
    lifecycle.start(rt, JOB, budget_day=None, staged=STAGED)
    assert lifecycle.show_pause(rt, JOB, "credits depleted", "t0")
    assert lifecycle.show_pause(rt, JOB, "credits depleted", "t1")  # already shows it
    lifecycle.clear_pause(rt, JOB, still=None, until="t2")
    job = rt.repo.require_job(JOB)
    assert job.paused is None
    assert job.pauses == [{"reason": "credits depleted", "since": "t0", "until": "t2"}]


def test_a_cancel_is_asked_only_of_a_job_that_may_still_spend(rt: Runtime) -> None:
    lifecycle.receive(rt, _received())
    lifecycle.hold(rt, JOB, "over", STAGED)
    assert not lifecycle.request_cancel(rt, JOB).cancel_requested
    lifecycle.approve(rt, JOB, budget_day="2026-12-07")
    assert lifecycle.request_cancel(rt, JOB).cancel_requested


def test_a_completion_is_claimed_once_and_handed_back_when_its_publish_fails(
    rt: Runtime,
) -> None:
    lifecycle.receive(rt, _received())
    assert lifecycle.claim_completion(rt, JOB) is None  # nothing owed yet
    lifecycle.hold(rt, JOB, "over", STAGED)
    claimed = lifecycle.claim_completion(rt, JOB)
    assert claimed is not None
    assert claimed.state is JobState.HELD
    assert lifecycle.claim_completion(rt, JOB) is None
    lifecycle.return_completion(rt, JOB)
    claimed = lifecycle.claim_completion(rt, JOB)
    assert claimed is not None
    lifecycle.completion_sent(rt, claimed)
    # A held job's message is not its last one.
    assert rt.repo.require_job(JOB).completion_published is False


def test_a_terminal_completion_lost_by_its_publisher_is_owed_again_after_the_cutoff(
    rt: Runtime,
) -> None:
    lifecycle.receive(rt, _received())
    lifecycle.start(rt, JOB, budget_day=None, staged=STAGED)
    lifecycle.end(rt, JOB, JobState.SUCCEEDED, {"completion_pending": True})
    claimed = lifecycle.claim_completion(rt, JOB)
    assert claimed is not None
    before_claim = claimed.updated_at - timedelta(seconds=1)
    assert not lifecycle.rearm_completion(rt, JOB, claimed_before=before_claim)
    assert lifecycle.rearm_completion(rt, JOB, claimed_before=claimed.updated_at)
    claimed = lifecycle.claim_completion(rt, JOB)
    assert claimed is not None
    lifecycle.completion_sent(rt, claimed)
    assert not lifecycle.mark_finalized(rt, JOB).finalized
    lifecycle.mark_cache_populated(rt, JOB)
    lifecycle.mark_budget_settled(rt, JOB)
    assert lifecycle.mark_finalized(rt, JOB).finalized


def test_a_retry_claim_is_held_by_one_caller_until_released_or_the_retry_job_is_named(
    rt: Runtime,
) -> None:
    lifecycle.receive(rt, _received())
    lasting = timedelta(minutes=10)
    mine = lifecycle.claim_retry(rt, JOB, "a", lasting=lasting)
    assert lifecycle.holds_retry_claim(mine, "a")
    theirs = lifecycle.claim_retry(rt, JOB, "b", lasting=lasting)
    assert not lifecycle.holds_retry_claim(theirs, "b")
    lifecycle.release_retry_claim(rt, JOB, "b")  # not b's to release
    lifecycle.release_retry_claim(rt, JOB, "a")
    assert lifecycle.holds_retry_claim(lifecycle.claim_retry(rt, JOB, "b", lasting=lasting), "b")
    lifecycle.record_retry_job(rt, JOB, "job-2")
    after = lifecycle.claim_retry(rt, JOB, "c", lasting=lasting)
    assert not lifecycle.holds_retry_claim(after, "c")
    assert after.options["retry_job_id"] == "job-2"


def test_the_overdue_report_is_claimed_once_and_only_for_a_running_job(rt: Runtime) -> None:
    lifecycle.receive(rt, _received())
    assert not lifecycle.claim_overdue_report(rt, JOB)
    lifecycle.start(rt, JOB, budget_day=None, staged=STAGED)
    assert lifecycle.claim_overdue_report(rt, JOB)
    assert not lifecycle.claim_overdue_report(rt, JOB)


def test_a_warning_is_added_once_with_what_it_adds_to_the_estimate(rt: Runtime) -> None:
    lifecycle.receive(rt, _received())
    lifecycle.add_warning(rt, JOB, "moved to the fallback", extra_estimate_usd=0.25)
    lifecycle.add_warning(rt, JOB, "moved to the fallback", extra_estimate_usd=0.25)
    job = rt.repo.require_job(JOB)
    assert job.warnings == ["moved to the fallback"]
    assert job.costs.estimated_usd == 0.25
