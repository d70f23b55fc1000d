from __future__ import annotations

import itertools

import pytest

from bananabatch.core.states import (
    BATCH_ACTIVE,
    BATCH_PROVIDER_TERMINAL,
    ITEM_TERMINAL,
    JOB_CANCELLABLE,
    JOB_PAUSABLE,
    JOB_TERMINAL,
    BatchState,
    ItemState,
    JobMove,
    JobState,
    advance_batch,
    advance_item,
    advance_job,
    can_advance_batch,
    can_advance_item,
    can_advance_job,
    job_move_for,
    job_outcome,
)
from bananabatch.errors import InvalidTransition, PermanentError

IS, BS, JS = ItemState, BatchState, JobState

# The machines as DESIGN.md draws them, written out independently of the implementation.
ITEM_ALLOWED = {
    (IS.PENDING, IS.SUBMITTED),
    (IS.PENDING, IS.CACHED),
    (IS.PENDING, IS.FAILED),
    (IS.PENDING, IS.SUCCEEDED),
    (IS.PENDING, IS.BLOCKED),
    (IS.SUBMITTED, IS.SUCCEEDED),
    (IS.SUBMITTED, IS.BLOCKED),
    (IS.SUBMITTED, IS.FAILED),
    (IS.SUBMITTED, IS.PENDING),  # retry in a new batch
    (IS.FAILED, IS.PENDING),  # a user's retry
}
BATCH_ALLOWED = {
    (BS.QUEUED, BS.SUBMITTING),
    (BS.QUEUED, BS.CANCELLED),
    # packed into shared batches at the batch window (pipeline/pack.py)
    (BS.QUEUED, BS.COLLECTED),
    (BS.SUBMITTING, BS.RUNNING),
    (BS.SUBMITTING, BS.QUEUED),
    *((BS.SUBMITTING, t) for t in (BS.SUCCEEDED, BS.FAILED, BS.CANCELLED, BS.EXPIRED)),
    *((BS.RUNNING, t) for t in (BS.SUCCEEDED, BS.FAILED, BS.CANCELLED, BS.EXPIRED)),
    *((s, BS.COLLECTED) for s in (BS.SUCCEEDED, BS.FAILED, BS.CANCELLED, BS.EXPIRED)),
}
JOB_ALLOWED = {
    *(
        (JS.RECEIVED, t)
        for t in (JS.HELD, JS.RUNNING, JS.SUCCEEDED, JS.PARTIAL, JS.FAILED, JS.CANCELLED)
    ),
    (JS.HELD, JS.RUNNING),
    (JS.HELD, JS.CANCELLED),
    *((JS.RUNNING, t) for t in (JS.SUCCEEDED, JS.PARTIAL, JS.FAILED, JS.CANCELLED)),
}
# Each named move, as (from, to) pairs.
JOB_MOVES_DRAWN = {
    JobMove.HOLD: {(JS.RECEIVED, JS.HELD)},
    JobMove.START: {(JS.RECEIVED, JS.RUNNING)},
    JobMove.APPROVE: {(JS.HELD, JS.RUNNING)},
    JobMove.REJECT: {(JS.HELD, JS.CANCELLED)},
    JobMove.END: {
        (s, t)
        for s in (JS.RECEIVED, JS.RUNNING)
        for t in (JS.SUCCEEDED, JS.PARTIAL, JS.FAILED, JS.CANCELLED)
    },
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(ItemState, ItemState)))
def test_an_item_moves_only_along_the_drawn_arrows(current: ItemState, target: ItemState) -> None:
    allowed = (current, target) in ITEM_ALLOWED
    assert can_advance_item(current, target) is allowed
    if allowed:
        assert advance_item(current, target) is target
    else:
        with pytest.raises(InvalidTransition):
            advance_item(current, target, entity="job-1/sku-1")


@pytest.mark.parametrize(("current", "target"), list(itertools.product(BatchState, BatchState)))
def test_a_batch_moves_only_along_the_drawn_arrows(current: BatchState, target: BatchState) -> None:
    allowed = (current, target) in BATCH_ALLOWED
    assert can_advance_batch(current, target) is allowed
    if allowed:
        assert advance_batch(current, target) is target
    else:
        with pytest.raises(InvalidTransition):
            advance_batch(current, target)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobState, JobState)))
def test_a_job_moves_only_along_the_drawn_arrows(current: JobState, target: JobState) -> None:
    allowed = (current, target) in JOB_ALLOWED
    assert can_advance_job(current, target) is allowed
    if allowed:
        assert advance_job(current, target) is target
    else:
        with pytest.raises(InvalidTransition):
            advance_job(current, target)


def test_every_job_arrow_is_exactly_one_named_move() -> None:
    pairs = [pair for drawn in JOB_MOVES_DRAWN.values() for pair in drawn]
    assert sorted(pairs) == sorted(JOB_ALLOWED)
    assert len(pairs) == len(set(pairs))
    for move, drawn in JOB_MOVES_DRAWN.items():
        for current, target in drawn:
            assert job_move_for(current, target) is move
            assert advance_job(current, target, move=move) is target


@pytest.mark.parametrize("move", list(JobMove))
def test_a_job_move_is_refused_under_another_name(move: JobMove) -> None:
    for current, target in JOB_ALLOWED - JOB_MOVES_DRAWN[move]:
        with pytest.raises(InvalidTransition):
            advance_job(current, target, move=move, entity="job-1")


def test_a_finished_job_is_final_and_a_retry_makes_a_new_job() -> None:
    for state in JOB_TERMINAL:
        assert not any(can_advance_job(state, t) for t in JobState)


def test_only_a_running_job_shows_a_pause_and_only_a_job_that_may_spend_is_cancelled() -> None:
    assert {JS.RUNNING} == JOB_PAUSABLE
    assert {JS.RECEIVED, JS.RUNNING} == JOB_CANCELLABLE


def test_a_refused_move_names_the_machine_the_entity_and_both_states() -> None:
    with pytest.raises(InvalidTransition) as caught:
        advance_item(ItemState.SUCCEEDED, ItemState.PENDING, entity="job-1/sku-1")
    error = caught.value
    assert isinstance(error, PermanentError)
    assert (error.kind, error.current, error.target) == ("item", "SUCCEEDED", "PENDING")
    assert str(error) == "item job-1/sku-1: cannot move from SUCCEEDED to PENDING"


def test_no_move_leads_out_of_a_final_state() -> None:
    for state in (IS.SUCCEEDED, IS.BLOCKED, IS.REJECTED, IS.CACHED):
        assert not any(can_advance_item(state, t) for t in ItemState)
    assert not any(can_advance_batch(BS.COLLECTED, t) for t in BatchState)
    for job_state in (JS.SUCCEEDED, JS.CANCELLED):
        assert not any(can_advance_job(job_state, t) for t in JobState)


def test_no_state_moves_to_itself() -> None:
    assert not any(can_advance_item(s, s) for s in ItemState)
    assert not any(can_advance_batch(s, s) for s in BatchState)
    assert not any(can_advance_job(s, s) for s in JobState)


def test_the_state_groups_are_what_the_design_names() -> None:
    assert {IS.SUCCEEDED, IS.BLOCKED, IS.FAILED, IS.REJECTED, IS.CACHED} == ITEM_TERMINAL
    assert {BS.SUCCEEDED, BS.FAILED, BS.CANCELLED, BS.EXPIRED} == BATCH_PROVIDER_TERMINAL
    assert {BS.SUBMITTING, BS.RUNNING} == BATCH_ACTIVE
    assert {JS.SUCCEEDED, JS.PARTIAL, JS.FAILED, JS.CANCELLED} == JOB_TERMINAL


def test_states_serialise_as_their_names() -> None:
    assert [s.value for s in ItemState] == [s.name for s in ItemState]
    assert [s.value for s in BatchState] == [s.name for s in BatchState]
    assert [s.value for s in JobState] == [s.name for s in JobState]


@pytest.mark.parametrize(
    ("counts", "total", "outcome"),
    [
        ({IS.SUCCEEDED: 3}, 3, JS.SUCCEEDED),
        ({IS.SUCCEEDED: 1, IS.CACHED: 2}, 3, JS.SUCCEEDED),
        ({IS.CACHED: 2}, 2, JS.SUCCEEDED),
        ({IS.SUCCEEDED: 2, IS.FAILED: 1}, 3, JS.PARTIAL),
        ({IS.SUCCEEDED: 1, IS.REJECTED: 1}, 2, JS.PARTIAL),
        ({IS.CACHED: 1, IS.BLOCKED: 4}, 5, JS.PARTIAL),
        ({IS.FAILED: 3}, 3, JS.FAILED),
        ({IS.REJECTED: 2, IS.BLOCKED: 1}, 3, JS.FAILED),
        ({}, 0, JS.FAILED),
    ],
)
def test_the_job_outcome_follows_from_how_many_lines_got_their_image(
    counts: dict[ItemState, int], total: int, outcome: JobState
) -> None:
    assert job_outcome(counts, total_lines=total) is outcome
