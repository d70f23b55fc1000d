"""The item, batch and job state machines. Pure: no I/O.

Every persisted state change goes through `advance_*`, which refuses a move the machine
does not allow. Adapters apply the result with a conditional write, so two workers racing
on the same record cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from bananabatch.errors import InvalidTransition


class ItemState(StrEnum):
    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    SUCCEEDED = "SUCCEEDED"
    BLOCKED = "BLOCKED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CACHED = "CACHED"


class BatchState(StrEnum):
    QUEUED = "QUEUED"
    # Written before the provider's create call; a record found in this state means the
    # outcome of that call is unknown and must be reconciled by display name.
    SUBMITTING = "SUBMITTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    COLLECTED = "COLLECTED"


class JobState(StrEnum):
    RECEIVED = "RECEIVED"
    HELD = "HELD"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ITEM_TERMINAL: Final = frozenset(
    {ItemState.SUCCEEDED, ItemState.BLOCKED, ItemState.FAILED, ItemState.REJECTED, ItemState.CACHED}
)
# States in which the provider holds (or may hold) a live batch of ours.
BATCH_ACTIVE: Final = frozenset({BatchState.SUBMITTING, BatchState.RUNNING})
BATCH_PROVIDER_TERMINAL: Final = frozenset(
    {BatchState.SUCCEEDED, BatchState.FAILED, BatchState.CANCELLED, BatchState.EXPIRED}
)
JOB_TERMINAL: Final = frozenset(
    {JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED, JobState.CANCELLED}
)

_ITEM_MOVES: Final[Mapping[ItemState, frozenset[ItemState]]] = {
    ItemState.PENDING: frozenset(
        {
            ItemState.SUBMITTED,
            ItemState.CACHED,
            ItemState.FAILED,
            ItemState.SUCCEEDED,
            ItemState.BLOCKED,
        }
    ),
    # SUBMITTED -> PENDING is a retry: the item goes into a new batch with attempt + 1.
    ItemState.SUBMITTED: frozenset(
        {ItemState.SUCCEEDED, ItemState.BLOCKED, ItemState.FAILED, ItemState.PENDING}
    ),
    # A user's `retry` gives a terminally FAILED item one more round.
    ItemState.FAILED: frozenset({ItemState.PENDING}),
    ItemState.SUCCEEDED: frozenset(),
    ItemState.BLOCKED: frozenset(),
    ItemState.REJECTED: frozenset(),
    ItemState.CACHED: frozenset(),
}

_BATCH_MOVES: Final[Mapping[BatchState, frozenset[BatchState]]] = {
    # QUEUED -> COLLECTED only for a batch whose lines the batch window packed into shared
    # batches (pipeline/pack.py): it never reaches the provider and has nothing to collect.
    BatchState.QUEUED: frozenset(
        {BatchState.SUBMITTING, BatchState.CANCELLED, BatchState.COLLECTED}
    ),
    # SUBMITTING -> QUEUED only when the provider definitely created nothing (429, or the
    # display name is absent after reconciliation).
    BatchState.SUBMITTING: frozenset(
        {
            BatchState.RUNNING,
            BatchState.QUEUED,
            BatchState.SUCCEEDED,
            BatchState.FAILED,
            BatchState.CANCELLED,
            BatchState.EXPIRED,
        }
    ),
    BatchState.RUNNING: frozenset(
        {BatchState.SUCCEEDED, BatchState.FAILED, BatchState.CANCELLED, BatchState.EXPIRED}
    ),
    BatchState.SUCCEEDED: frozenset({BatchState.COLLECTED}),
    BatchState.FAILED: frozenset({BatchState.COLLECTED}),
    BatchState.CANCELLED: frozenset({BatchState.COLLECTED}),
    BatchState.EXPIRED: frozenset({BatchState.COLLECTED}),
    BatchState.COLLECTED: frozenset(),
}


class JobMove(StrEnum):
    """The named moves of a job. pipeline/lifecycle.py makes each one, and nothing else
    writes a job's state."""

    # Staged over a budget cap: nothing is reserved or submitted until a person decides.
    HOLD = "HOLD"
    # Staged within the caps: the job's batches may be submitted.
    START = "START"
    # A person approved a held job (`bananabatch approve`).
    APPROVE = "APPROVE"
    # A person rejected a held job (`bananabatch reject`).
    REJECT = "REJECT"
    # Every line has its terminal state, or intake refused the file. RECEIVED may end at
    # once: every line rejected, or every image already cached.
    END = "END"


# Each named move: the states it starts from, and the states it may lead to.
JOB_MOVE_TABLE: Final[Mapping[JobMove, tuple[frozenset[JobState], frozenset[JobState]]]] = {
    JobMove.HOLD: (frozenset({JobState.RECEIVED}), frozenset({JobState.HELD})),
    JobMove.START: (frozenset({JobState.RECEIVED}), frozenset({JobState.RUNNING})),
    JobMove.APPROVE: (frozenset({JobState.HELD}), frozenset({JobState.RUNNING})),
    JobMove.REJECT: (frozenset({JobState.HELD}), frozenset({JobState.CANCELLED})),
    JobMove.END: (frozenset({JobState.RECEIVED, JobState.RUNNING}), JOB_TERMINAL),
}

# Where a job may go from each state: the union of the named moves (a terminal job is
# final; `bananabatch retry` makes a new job of the failed lines instead).
_JOB_MOVES: Final[Mapping[JobState, frozenset[JobState]]] = {
    state: frozenset().union(
        *(targets for sources, targets in JOB_MOVE_TABLE.values() if state in sources)
    )
    for state in JobState
}
# A job shows a deployment-wide pause only while it runs: a held job waits for a person
# anyway, and a finished one has nothing left to pause.
JOB_PAUSABLE: Final = frozenset({JobState.RUNNING})
# A cancel may be requested of a job that may still spend. A held job is rejected
# instead (it never reserved anything), and a finished one has nothing left to stop.
JOB_CANCELLABLE: Final = frozenset({JobState.RECEIVED, JobState.RUNNING})


def job_move_for(current: JobState, target: JobState) -> JobMove | None:
    """The named move that takes a job from current to target, if any."""
    for move, (sources, targets) in JOB_MOVE_TABLE.items():
        if current in sources and target in targets:
            return move
    return None


def can_advance_item(current: ItemState, target: ItemState) -> bool:
    return target in _ITEM_MOVES[current]


def can_advance_batch(current: BatchState, target: BatchState) -> bool:
    return target in _BATCH_MOVES[current]


def can_advance_job(current: JobState, target: JobState) -> bool:
    return target in _JOB_MOVES[current]


def advance_item(current: ItemState, target: ItemState, *, entity: str = "") -> ItemState:
    if not can_advance_item(current, target):
        raise InvalidTransition("item", current, target, entity=entity)
    return target


def advance_batch(current: BatchState, target: BatchState, *, entity: str = "") -> BatchState:
    if not can_advance_batch(current, target):
        raise InvalidTransition("batch", current, target, entity=entity)
    return target


def advance_job(
    current: JobState, target: JobState, *, move: JobMove | None = None, entity: str = ""
) -> JobState:
    """target, if the machine allows the move (and it is the named move, if one is given)."""
    made = job_move_for(current, target)
    if made is None or (move is not None and made is not move):
        raise InvalidTransition("job", current, target, entity=entity)
    return target


def job_outcome(counts: Mapping[ItemState, int], *, total_lines: int) -> JobState:
    """The terminal job state implied by its items' terminal states.

    SUCCEEDED only when every input line has its image; FAILED when none has (a provider
    batch that "succeeded" with every row failed is still a failed job); PARTIAL between.
    """
    delivered = counts.get(ItemState.SUCCEEDED, 0) + counts.get(ItemState.CACHED, 0)
    if total_lines > 0 and delivered == total_lines:
        return JobState.SUCCEEDED
    if delivered == 0:
        return JobState.FAILED
    return JobState.PARTIAL
