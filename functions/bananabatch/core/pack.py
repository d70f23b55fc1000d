"""Packing at the batch window (issue 21 point 4): which waiting batches share provider
batches, and where each line goes. Pure; pipeline/pack.py does the I/O.

Files admitted during the day each plan their own batches (core/planning.py), full within
the limits, but a file of 40 lines makes a batch of 40. At the window the waiting batches
of one (provider, model) that are not full are packed together when that makes fewer
batches: their lines, in admission order, are cut into shared batches as full as the limits
allow. Full batches stay their jobs' own, and a group whose batches are already as few as
its lines need is left as it is, so the window never moves lines for nothing (a large file
keeps its full batches; only its last, partial one may be packed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bananabatch.core.planning import PlanLimits


@dataclass(frozen=True)
class Waiting:
    """A job's planned batch that waited for the window, not yet claimed by anyone."""

    batch_id: str
    job_id: str
    provider: str
    model: str
    request_count: int
    request_bytes: int
    expected_output_bytes: int


@dataclass(frozen=True)
class PackPlan:
    provider: str
    model: str
    # The batches whose lines the pack takes, in the order their lines go.
    sources: tuple[str, ...]
    # How many shared batches the lines need, against how many batches they had.
    batches: int
    was: int


def batches_needed(count: int, request_bytes: int, output_bytes: int, limits: PlanLimits) -> int:
    """The fewest batches within the limits that lines of these totals can fill."""
    return max(
        1 if count else 0,
        math.ceil(count / limits.max_requests),
        math.ceil(request_bytes / limits.max_request_bytes),
        math.ceil(output_bytes / limits.max_output_bytes),
    )


def is_full(batch: Waiting, limits: PlanLimits) -> bool:
    """Whether one more line of the batch's own average size would pass a limit."""
    count = max(1, batch.request_count)
    return (
        batch.request_count + 1 > limits.max_requests
        or batch.request_bytes + batch.request_bytes / count > limits.max_request_bytes
        or batch.expected_output_bytes + batch.expected_output_bytes / count
        > limits.max_output_bytes
    )


def choose(waiting: Iterable[Waiting], limits_for: Callable[[str], PlanLimits]) -> list[PackPlan]:
    """The packs worth making among the waiting batches (kept in the given order, which
    the caller makes the jobs' admission order)."""
    groups: dict[tuple[str, str], list[Waiting]] = {}
    for batch in waiting:
        groups.setdefault((batch.provider, batch.model), []).append(batch)
    plans: list[PackPlan] = []
    for (provider, model), group in groups.items():
        limits = limits_for(model)
        # A full batch stays its job's own: moving its lines would gain nothing.
        members = [b for b in group if not is_full(b, limits)]
        if len(members) < 2:
            continue
        need = batches_needed(
            sum(b.request_count for b in members),
            sum(b.request_bytes for b in members),
            sum(b.expected_output_bytes for b in members),
            limits,
        )
        if need < len(members):
            plans.append(
                PackPlan(provider, model, tuple(b.batch_id for b in members), need, len(members))
            )
    return plans


@dataclass
class _Open:
    count: int = 0
    request_bytes: int = 0
    output_bytes: int = 0


@dataclass
class Cut:
    """Which shared batch (0, 1, ...) each line goes to, in line order."""

    places: list[int] = field(default_factory=list)

    @property
    def batches(self) -> int:
        return self.places[-1] + 1 if self.places else 0


def cut(lines: Sequence[tuple[int, int]], limits: PlanLimits) -> Cut:
    """Place lines of (request bytes, expected output bytes) in order into shared batches,
    a new one when the next line would pass a limit. A line too large for any batch on its
    own still gets one (planning let it through the same way)."""
    placed = Cut()
    current, index = _Open(), 0
    for request_bytes, output_bytes in lines:
        if current.count and (
            current.count + 1 > limits.max_requests
            or current.request_bytes + request_bytes > limits.max_request_bytes
            or current.output_bytes + output_bytes > limits.max_output_bytes
        ):
            current, index = _Open(), index + 1
        current.count += 1
        current.request_bytes += request_bytes
        current.output_bytes += output_bytes
        placed.places.append(index)
    return placed
