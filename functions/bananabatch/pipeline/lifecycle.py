"""The one owner of job state: every move of a job (received, held, running, terminal) and
every other write to its record (a pause it waits through, a cancel asked of it, the steps
of closing it, the claims that make its completion message and its `retry` happen once)
is made here, and only here.

Each function is one conditional write (the state store's create-if-absent or its
transactional update): the machine in core/states.py decides, the store makes the
decision atomic, and the returned `Move.moved` says whether this call made it. That is how
"exactly one completion message" and "never submit twice" hold when workers race or
events are redelivered: of two callers making the same move, exactly one moves the job.

What follows a move (submitting, publishing, settling the budget) is the caller's: this
module reads and writes job records and nothing else, so every other pipeline module may
depend on it and it depends on none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from bananabatch.core.messages import PUBLISHABLE_STATES
from bananabatch.core.records import (
    CANCEL_OPTION,
    RETRY_CLAIM_OPTION,
    RETRY_JOB_OPTION,
    JobRecord,
)
from bananabatch.core.states import (
    JOB_CANCELLABLE,
    JOB_MOVE_TABLE,
    JOB_PAUSABLE,
    JOB_TERMINAL,
    JobMove,
    JobState,
)
from bananabatch.errors import InvalidTransition
from bananabatch.pipeline.repo import Move
from bananabatch.pipeline.runtime import Runtime


def receive(rt: Runtime, job: JobRecord) -> bool:
    """Record a new job, RECEIVED, unless it exists (a redelivered upload event). True if
    this call created it."""
    if job.state is not JobState.RECEIVED:
        raise InvalidTransition("job", "(none)", job.state, entity=job.job_id)
    return rt.repo.create_job(job)


def hold(rt: Runtime, job_id: str, reason: str, staged: Mapping[str, Any]) -> Move[JobRecord]:
    """RECEIVED -> HELD over a budget cap, with what intake staged and the reason; its
    completion (a "held" message) is owed from this moment."""
    fields = {**staged, "error": reason, "completion_pending": True, "updated_at": rt.now()}
    return _make(rt, job_id, JobMove.HOLD, JobState.HELD, fields)


def start(
    rt: Runtime, job_id: str, *, budget_day: str | None, staged: Mapping[str, Any]
) -> Move[JobRecord]:
    """RECEIVED -> RUNNING within the caps, holding a reservation on budget_day."""
    fields = {**staged, "budget_day": budget_day, "updated_at": rt.now()}
    return _make(rt, job_id, JobMove.START, JobState.RUNNING, fields)


def approve(rt: Runtime, job_id: str, *, budget_day: str) -> Move[JobRecord]:
    """HELD -> RUNNING by a person's decision; the hold's reason goes."""
    fields = {"budget_day": budget_day, "error": None, "updated_at": rt.now()}
    return _make(rt, job_id, JobMove.APPROVE, JobState.RUNNING, fields)


def end(rt: Runtime, job_id: str, target: JobState, final: Mapping[str, Any]) -> Move[JobRecord]:
    """To a terminal state, with the job's final counts and costs: a running (or just
    received) job that has every line's outcome, or a held one a person rejected. Of
    several finalizers racing, one moves it."""
    if target not in JOB_TERMINAL:
        raise InvalidTransition("job", "(any)", target, entity=job_id)
    # The machine picks END or REJECT by the state the transaction finds.
    return rt.repo.move_job(job_id, target, change=lambda _job: final)


def request_cancel(rt: Runtime, job_id: str) -> JobRecord:
    """Mark that the user asked to stop spending on the job (`bananabatch cancel`); the
    job ends CANCELLED once its batches are collected. Idempotent."""

    def mark(job: JobRecord) -> dict[str, Any] | None:
        if job.state not in JOB_CANCELLABLE or job.cancel_requested:
            return None
        return {"options": {**job.options, CANCEL_OPTION: "1"}, "updated_at": rt.now()}

    return rt.repo.patch_job(job_id, mark)


def show_pause(rt: Runtime, job_id: str, why: str, since: str) -> bool:
    """Say on a running job that submission is paused deployment-wide, and why (each
    pause it waits through is kept in `pauses`). True if the job shows `why` now."""

    def mark(job: JobRecord) -> dict[str, Any] | None:
        if job.state not in JOB_PAUSABLE or job.paused == why:
            return None
        history = [*job.pauses, {"reason": why, "since": since}]
        return {"paused": why, "pauses": history, "updated_at": rt.now()}

    return rt.repo.patch_job(job_id, mark).paused == why


def clear_pause(rt: Runtime, job_id: str, *, still: str | None, until: str) -> None:
    """The pause the job showed is lifted (`still`: the one that remains, if any); the
    last pause in its history ends at `until`."""

    def unmark(job: JobRecord) -> dict[str, Any] | None:
        if job.paused is None:
            return None
        history = [dict(p) for p in job.pauses]
        if history and "until" not in history[-1]:
            history[-1]["until"] = until
        return {"paused": still, "pauses": history}

    rt.repo.patch_job(job_id, unmark)


# --- closing: the steps after the terminal move (pipeline/finalize.py) ---------------------


def mark_cache_populated(rt: Runtime, job_id: str) -> JobRecord:
    return rt.repo.patch_job(job_id, lambda _j: {"cache_populated": True})


def mark_budget_settled(rt: Runtime, job_id: str) -> JobRecord:
    return rt.repo.patch_job(job_id, lambda _j: {"budget_settled": True})


def claim_completion(rt: Runtime, job_id: str) -> JobRecord | None:
    """Take the job's owed completion message (completion_pending True -> False); the job
    as it stands if this call took it, else None. Of racing publishers, one takes it."""
    won = False

    def take(job: JobRecord) -> dict[str, Any] | None:
        nonlocal won
        won = (
            job.completion_pending
            and not job.completion_published
            and job.state in PUBLISHABLE_STATES
        )
        # updated_at dates the claim, so the tick can tell a publisher that died after
        # claiming (re-armed after a few minutes) from one that is publishing right now.
        return {"completion_pending": False, "updated_at": rt.now()} if won else None

    job = rt.repo.patch_job(job_id, take)
    return job if won else None


def return_completion(rt: Runtime, job_id: str) -> None:
    """Hand a claimed completion back (its publish failed), so a retry publishes it."""
    rt.repo.patch_job(job_id, lambda _j: {"completion_pending": True})


def completion_sent(rt: Runtime, job: JobRecord) -> None:
    """The claimed completion is out. A held job's message is not its last: the one of its
    end is still owed, so only a terminal job counts as published."""
    rt.repo.patch_job(job.job_id, lambda _j: {"completion_published": job.state in JOB_TERMINAL})


def rearm_completion(rt: Runtime, job_id: str, *, claimed_before: datetime) -> bool:
    """Owe again a completion claimed before `claimed_before` and never published (its
    publisher died in between). True if the job owes it now."""

    def rearm(job: JobRecord) -> dict[str, Any] | None:
        stuck = (
            job.state in JOB_TERMINAL
            and not job.completion_pending
            and not job.completion_published
            and job.updated_at <= claimed_before
        )
        return {"completion_pending": True} if stuck else None

    return rt.repo.patch_job(job_id, rearm).completion_pending


def mark_finalized(rt: Runtime, job_id: str) -> JobRecord:
    """Every step of closing the job is done."""
    return rt.repo.patch_job(
        job_id,
        lambda j: (
            {"finalized": True}
            if j.completion_published and j.cache_populated and j.budget_settled
            else None
        ),
    )


# --- what the tick, a fallback model and `retry` note on a job ----------------------------


def mark_window(rt: Runtime, job_id: str, at: datetime) -> JobRecord:
    """The batch window the job's batches wait for (pipeline/window.py): set once, so a
    crash or a later release keeps the first answer. The job as it stands."""
    return rt.repo.patch_job(job_id, lambda job: None if job.window_at else {"window_at": at})


def record_error(rt: Runtime, job_id: str, error: str) -> None:
    """The last failure of a periodic step on this job, for `status`."""
    rt.repo.patch_job(job_id, lambda _j: {"last_error": error})


def claim_overdue_report(rt: Runtime, job_id: str) -> bool:
    """Mark a running job as reported overdue; True if this call marked it (so two ticks
    never report it twice)."""
    won = False

    def mark(job: JobRecord) -> dict[str, Any] | None:
        nonlocal won
        won = job.state is JobState.RUNNING and not job.overdue_reported
        return {"overdue_reported": True} if won else None

    rt.repo.patch_job(job_id, mark)
    return won


def add_warning(rt: Runtime, job_id: str, warning: str, *, extra_estimate_usd: float) -> None:
    """A warning for summary.json (once), with what it adds to the job's estimate."""

    def warn(job: JobRecord) -> dict[str, Any] | None:
        if warning in job.warnings:
            return None
        costs = job.costs.model_copy(
            update={"estimated_usd": round(job.costs.estimated_usd + extra_estimate_usd, 6)}
        )
        return {"warnings": [*job.warnings, warning], "costs": costs, "updated_at": rt.now()}

    rt.repo.patch_job(job_id, warn)


def claim_retry(rt: Runtime, job_id: str, token: str, *, lasting: timedelta) -> JobRecord:
    """Take the job's `retry` claim for `lasting`, unless its retry job exists or another
    live claim is held; the job as it stands (its options say who holds the claim)."""
    now = rt.now()

    def claim(job: JobRecord) -> dict[str, Any] | None:
        if job.options.get(RETRY_JOB_OPTION):
            return None
        owner, _, until = job.options.get(RETRY_CLAIM_OPTION, "").partition("@")
        if owner and owner != token and until and datetime.fromisoformat(until) > now:
            return None
        mark = f"{token}@{(now + lasting).isoformat()}"
        return {"options": {**job.options, RETRY_CLAIM_OPTION: mark}}

    return rt.repo.patch_job(job_id, claim)


def holds_retry_claim(job: JobRecord, token: str) -> bool:
    return job.options.get(RETRY_CLAIM_OPTION, "").startswith(token + "@")


def release_retry_claim(rt: Runtime, job_id: str, token: str) -> None:
    def unclaim(job: JobRecord) -> dict[str, Any] | None:
        if not holds_retry_claim(job, token):
            return None
        return {"options": {k: v for k, v in job.options.items() if k != RETRY_CLAIM_OPTION}}

    rt.repo.patch_job(job_id, unclaim)


def record_retry_job(rt: Runtime, job_id: str, retry_job_id: str) -> None:
    """The job that `retry` made of this job's failed items."""
    rt.repo.patch_job(
        job_id, lambda job: {"options": {**job.options, RETRY_JOB_OPTION: retry_job_id}}
    )


def _make(
    rt: Runtime, job_id: str, move: JobMove, target: JobState, fields: Mapping[str, Any]
) -> Move[JobRecord]:
    sources, targets = JOB_MOVE_TABLE[move]
    assert target in targets, f"{move} does not lead to {target}"
    return rt.repo.move_job(job_id, target, expect=sources, change=lambda _job: fields)


def twotier_counts(rt: Runtime, job_id: str, *, items: int, batches: int) -> JobRecord:
    """A two-tier job's counts after a round is staged (pipeline/twotier): its lines are
    its items (drafts, finals) and its rejected lines, so summary counts still add up.
    Counts only grow: a finalizer with an older view changes nothing."""

    def grow(job: JobRecord) -> dict[str, Any] | None:
        lines = job.rejected_count + items
        if lines <= job.line_count and batches <= job.batch_count:
            return None
        return {
            "line_count": max(lines, job.line_count),
            "accepted_count": max(items, job.accepted_count),
            "batch_count": max(batches, job.batch_count),
            "updated_at": rt.now(),
        }

    return rt.repo.patch_job(job_id, grow)


# JobRecord.options key: who plans a two-tier job's next round, until when.
TWOTIER_LEASE_OPTION: Final = "twotier-lease"


def claim_twotier_lease(rt: Runtime, job_id: str, token: str, *, lasting: timedelta) -> bool:
    """Take the lease on planning a two-tier job's next round (pipeline/twotier/rounds.py),
    unless another live one is held: two finalizers planning from the same items would
    stage the same requests twice. A lease left by a crash expires."""
    now = rt.now()

    def claim(job: JobRecord) -> dict[str, Any] | None:
        owner, _, until = job.options.get(TWOTIER_LEASE_OPTION, "").partition("@")
        if owner and owner != token and until and datetime.fromisoformat(until) > now:
            return None
        mark = f"{token}@{(now + lasting).isoformat()}"
        return {"options": {**job.options, TWOTIER_LEASE_OPTION: mark}}

    job = rt.repo.patch_job(job_id, claim)
    return job.options.get(TWOTIER_LEASE_OPTION, "").startswith(token + "@")


def release_twotier_lease(rt: Runtime, job_id: str, token: str) -> None:
    def unclaim(job: JobRecord) -> dict[str, Any] | None:
        if not job.options.get(TWOTIER_LEASE_OPTION, "").startswith(token + "@"):
            return None
        return {"options": {k: v for k, v in job.options.items() if k != TWOTIER_LEASE_OPTION}}

    rt.repo.patch_job(job_id, unclaim)
