"""Batch planning: group accepted requests into provider batches within limits. Pure.

One model per batch (the provider runs each batch on one model), so each model has its own
open batch and lines of several models may interleave. A model has one provider, so a file
mixing Gemini and gpt-image lines gets separate batches per provider, each within its
provider's limits (PlanLimits.per_provider: OpenAI takes at most 50,000 requests and
200 MB per input file). OpenAI also runs one endpoint per batch, so a gpt-image model's
edits (lines with reference images) get batches apart from its generations (batch_key).

A batch closes when the next request of its model would not fit; a request bigger than a
limit on its own still gets a batch of its own rather than being dropped. The plan depends
only on the order of the calls, so a retried intake stages exactly the same batches.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Final

from bananabatch.core.catalog import Provider, provider_of

if TYPE_CHECKING:
    from bananabatch.config import Settings

#: OpenAI Batch's limits per batch (field-2026-12.md §3.1): requests, and bytes of the
#: input file ("200 MB": counted as 10^6 bytes, the smaller reading).
OPENAI_MAX_REQUESTS: Final = 50_000
OPENAI_MAX_INPUT_BYTES: Final = 200_000_000

# What a batch key adds to the model for a gpt-image model's edits (see batch_key).
_EDITS: Final = " edits"


def batch_key(model: str, *, edits: bool = False) -> str:
    """What the planner groups requests by: the model, and for a gpt-image model whether
    the request is an edit (/v1/images/edits) or a generation, since an OpenAI batch
    runs one endpoint. Model ids have no spaces, so the key says both unambiguously."""
    if edits and provider_of(model) is Provider.OPENAI:
        return model + _EDITS
    return model


def key_model(key: str) -> str:
    """The model of a batch key."""
    return key.removesuffix(_EDITS)


@dataclass(frozen=True)
class PlanLimits:
    max_requests: int
    max_request_bytes: int
    max_output_bytes: int

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_request_bytes", "max_output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PlanLimits.{name} must be positive; found {getattr(self, name)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> PlanLimits:
        return cls(
            max_requests=settings.max_requests_per_batch,
            max_request_bytes=settings.max_batch_bytes,
            max_output_bytes=settings.max_batch_output_bytes,
        )

    def within(self, provider: Provider) -> PlanLimits:
        """These limits, cut to what the provider takes in one batch."""
        if provider is not Provider.OPENAI:
            return self
        return PlanLimits(
            max_requests=min(self.max_requests, OPENAI_MAX_REQUESTS),
            max_request_bytes=min(self.max_request_bytes, OPENAI_MAX_INPUT_BYTES),
            max_output_bytes=self.max_output_bytes,
        )

    @classmethod
    def per_provider(cls, settings: Settings) -> Callable[[str], PlanLimits]:
        """The limits of a batch of each model, for BatchPlanner(limits_for=...)."""
        limits = cls.from_settings(settings)
        return lambda model: limits.within(provider_of(model))


@dataclass(frozen=True)
class PlannedBatch:
    index: int
    model: str
    request_count: int
    # Bytes of the staged request file (the caller counts each line with its newline).
    request_bytes: int
    expected_output_bytes: int


@dataclass(frozen=True)
class Placement:
    batch_index: int
    # Batches this add closed: they are complete, so stage and record them. Never the
    # batch the request itself went into, which stays open until a later add or finish.
    closed: tuple[PlannedBatch, ...]


@dataclass
class _Open:
    index: int
    model: str
    count: int = 0
    request_bytes: int = 0
    output_bytes: int = 0
    # The answer for every add that closes nothing: immutable, so one per batch will do
    # (add runs once per input line; a new Placement each time would be most of its cost).
    placement: Placement | None = None

    def planned(self) -> PlannedBatch:
        return PlannedBatch(
            index=self.index,
            model=key_model(self.model),
            request_count=self.count,
            request_bytes=self.request_bytes,
            expected_output_bytes=self.output_bytes,
        )


class BatchPlanner:
    """Assigns each request, in order, to a batch; indexes are 1-based in opening order."""

    def __init__(
        self,
        limits: PlanLimits,
        *,
        first_index: int = 1,
        limits_for: Callable[[str], PlanLimits] | None = None,
    ) -> None:
        """`limits_for` gives a model's own limits (PlanLimits.per_provider); without it
        every batch has `limits`. Requests are placed by batch_key (the `model` argument
        of add, place and place_run); each planned batch names the key's model."""
        self._limits = limits
        self._limits_for = limits_for
        self._by_key: dict[str, PlanLimits] = {}
        self._next_index = first_index
        self._open: dict[str, _Open] = {}

    def _limits_of(self, key: str) -> PlanLimits:
        if self._limits_for is None:
            return self._limits
        limits = self._by_key.get(key)
        if limits is None:
            limits = self._by_key[key] = self._limits_for(key_model(key))
        return limits

    @property
    def open_batches(self) -> tuple[PlannedBatch, ...]:
        """The batches still filling, in index order (a snapshot)."""
        return tuple(b.planned() for b in sorted(self._open.values(), key=lambda b: b.index))

    def add(self, *, model: str, line_bytes: int, expected_output_bytes: int) -> Placement:
        return self.place(model, line_bytes, expected_output_bytes)

    def place(self, model: str, line_bytes: int, expected_output_bytes: int) -> Placement:
        """add, with positional arguments: intake calls it once per line."""
        if line_bytes < 0 or expected_output_bytes < 0:
            raise ValueError(
                f"sizes must not be negative; found line_bytes={line_bytes}, "
                f"expected_output_bytes={expected_output_bytes}"
            )
        limits = self._limits_of(model)
        closed: tuple[PlannedBatch, ...] = ()
        batch = self._open.get(model)
        if batch is not None and (
            batch.count + 1 > limits.max_requests
            or batch.request_bytes + line_bytes > limits.max_request_bytes
            or batch.output_bytes + expected_output_bytes > limits.max_output_bytes
        ):
            closed = (self._close(model),)
            batch = None
        if batch is None:
            batch = self._open_new(model)
        batch.count += 1
        batch.request_bytes += line_bytes
        batch.output_bytes += expected_output_bytes
        if closed or batch.placement is None:
            return Placement(batch_index=batch.index, closed=closed)
        return batch.placement

    def place_run(
        self, model: str, sizes: Sequence[int], expected_output_bytes: int
    ) -> list[tuple[int, int, tuple[PlannedBatch, ...]]]:
        """place for consecutive requests of one model that expect the same output: the same
        batches as calling place for each size in turn, found a stretch at a time.

        Returns (batch index, end, closed) per stretch: sizes[previous end:end] went into
        that batch, and `closed` are the batches place would have reported closed at the
        stretch's first request. Intake places a file's lines thousands at a time, and a
        stretch is a whole batch: the work is per batch, not per request.
        """
        if expected_output_bytes < 0 or (sizes and min(sizes) < 0):
            raise ValueError(
                f"sizes must not be negative; found line sizes down to {min(sizes, default=0)}"
                f", expected_output_bytes={expected_output_bytes}"
            )
        ends = list(accumulate(sizes))  # ends[i]: bytes of sizes[:i + 1]
        stretches: list[tuple[int, int, tuple[PlannedBatch, ...]]] = []
        start, count = 0, len(sizes)
        while start < count:
            before = ends[start - 1] if start else 0
            closed: tuple[PlannedBatch, ...] = ()
            batch = self._open.get(model)
            room = (
                0
                if batch is None
                else self._room(batch, ends, start, before, expected_output_bytes)
            )
            if batch is not None and room == 0:
                closed = (self._close(model),)
                batch = None
            if batch is None:
                batch = self._open_new(model)
                # An empty batch takes its first request whatever its size (see place).
                room = max(1, self._room(batch, ends, start, before, expected_output_bytes))
            end = start + room
            batch.count += room
            batch.request_bytes += ends[end - 1] - before
            batch.output_bytes += room * expected_output_bytes
            stretches.append((batch.index, end, closed))
            start = end
        return stretches

    def _room(self, batch: _Open, ends: list[int], start: int, before: int, output: int) -> int:
        """How many of the requests from `start` on fit in the batch as it is."""
        limits = self._limits_of(batch.model)
        room = min(len(ends) - start, limits.max_requests - batch.count)
        if output:
            room = min(room, (limits.max_output_bytes - batch.output_bytes) // output)
        elif batch.output_bytes > limits.max_output_bytes:
            return 0  # over already (an oversize first request): place closes it too
        if room <= 0:
            return 0
        budget = limits.max_request_bytes - batch.request_bytes + before
        return bisect_right(ends, budget, start, start + room) - start

    def _open_new(self, model: str) -> _Open:
        batch = _Open(index=self._next_index, model=model)
        batch.placement = Placement(batch_index=batch.index, closed=())
        self._next_index += 1
        self._open[model] = batch
        return batch

    def finish(self) -> tuple[PlannedBatch, ...]:
        """Close every open batch, in index order."""
        models = sorted(self._open, key=lambda m: self._open[m].index)
        return tuple(self._close(model) for model in models)

    def _close(self, model: str) -> PlannedBatch:
        return self._open.pop(model).planned()
