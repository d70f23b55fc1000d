"""The one owner of job state: every move of a job (received, held, running, terminal) and
every mark on its record that says where it stands (a pause it waits through, a cancel
asked of it) is made here, and only here.

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
from typing import Any

from bananabatch.core.records import CANCEL_OPTION, JobRecord
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


def _make(
    rt: Runtime, job_id: str, move: JobMove, target: JobState, fields: Mapping[str, Any]
) -> Move[JobRecord]:
    sources, targets = JOB_MOVE_TABLE[move]
    assert target in targets, f"{move} does not lead to {target}"
    return rt.repo.move_job(job_id, target, expect=sources, change=lambda _job: fields)
