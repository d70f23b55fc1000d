from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.config import Settings
from bananabatch.core.planning import BatchPlanner, Placement, PlanLimits, PlannedBatch

WIDE = PlanLimits(max_requests=1000, max_request_bytes=10**9, max_output_bytes=10**12)


def add(p: BatchPlanner, model: str = "m", line: int = 10, out: int = 100) -> Placement:
    return p.add(model=model, line_bytes=line, expected_output_bytes=out)


def test_requests_fill_one_batch_until_the_request_limit() -> None:
    p = BatchPlanner(PlanLimits(max_requests=3, max_request_bytes=10**6, max_output_bytes=10**9))
    placements = [add(p) for _ in range(7)]
    assert [x.batch_index for x in placements] == [1, 1, 1, 2, 2, 2, 3]
    # The fourth request closes the first batch, the seventh the second.
    assert [len(x.closed) for x in placements] == [0, 0, 0, 1, 0, 0, 1]
    assert placements[3].closed == (PlannedBatch(1, "m", 3, 30, 300),)
    assert placements[6].closed == (PlannedBatch(2, "m", 3, 30, 300),)
    assert p.finish() == (PlannedBatch(3, "m", 1, 10, 100),)


def test_a_batch_closes_when_the_next_request_would_exceed_its_bytes() -> None:
    p = BatchPlanner(PlanLimits(max_requests=100, max_request_bytes=100, max_output_bytes=10**9))
    assert add(p, line=60).batch_index == 1
    assert add(p, line=40).batch_index == 1  # exactly at the limit still fits
    third = add(p, line=1)
    assert third.batch_index == 2
    assert third.closed == (PlannedBatch(1, "m", 2, 100, 200),)


def test_a_batch_closes_when_the_next_request_would_exceed_its_expected_output() -> None:
    p = BatchPlanner(PlanLimits(max_requests=100, max_request_bytes=10**9, max_output_bytes=1000))
    assert [add(p, out=400).batch_index for _ in range(5)] == [1, 1, 2, 2, 3]
    assert [b.expected_output_bytes for b in p.finish()] == [400]


def test_a_single_request_larger_than_a_limit_gets_a_batch_of_its_own() -> None:
    p = BatchPlanner(PlanLimits(max_requests=10, max_request_bytes=100, max_output_bytes=10**9))
    assert add(p, line=10).batch_index == 1
    big = add(p, line=500)
    assert big.batch_index == 2
    assert [b.index for b in big.closed] == [1]
    after = add(p, line=10)
    assert after.batch_index == 3
    assert after.closed == (PlannedBatch(2, "m", 1, 500, 100),)
    assert p.finish() == (PlannedBatch(3, "m", 1, 10, 100),)


def test_an_oversize_first_request_is_not_dropped() -> None:
    p = BatchPlanner(PlanLimits(max_requests=1, max_request_bytes=5, max_output_bytes=5))
    placement = add(p, line=50, out=50)
    assert placement == Placement(batch_index=1, closed=())
    assert p.finish() == (PlannedBatch(1, "m", 1, 50, 50),)


def test_each_model_has_its_own_batch_and_models_may_interleave() -> None:
    p = BatchPlanner(PlanLimits(max_requests=2, max_request_bytes=10**6, max_output_bytes=10**9))
    order = ["a", "b", "a", "b", "a", "c", "b"]
    placements = [add(p, model=m) for m in order]
    assert [x.batch_index for x in placements] == [1, 2, 1, 2, 3, 4, 5]
    closed = [b for x in placements for b in x.closed]
    assert [(b.index, b.model, b.request_count) for b in closed] == [(1, "a", 2), (2, "b", 2)]
    assert [(b.index, b.model) for b in p.finish()] == [(3, "a"), (4, "c"), (5, "b")]


def test_a_closed_batch_never_includes_the_request_just_added() -> None:
    p = BatchPlanner(PlanLimits(max_requests=1, max_request_bytes=10**6, max_output_bytes=10**9))
    for _ in range(5):
        placement = add(p)
        assert placement.batch_index not in [b.index for b in placement.closed]


def test_finish_closes_open_batches_in_index_order_and_leaves_none_open() -> None:
    p = BatchPlanner(WIDE)
    for model in ["z", "y", "x"]:
        add(p, model=model)
    assert [b.index for b in p.open_batches] == [1, 2, 3]
    assert [(b.index, b.model) for b in p.finish()] == [(1, "z"), (2, "y"), (3, "x")]
    assert p.open_batches == ()
    assert p.finish() == ()


def test_indexes_start_at_first_index() -> None:
    p = BatchPlanner(WIDE, first_index=8)
    assert add(p, model="a").batch_index == 8
    assert add(p, model="b").batch_index == 9


def test_an_empty_plan_has_no_batches() -> None:
    assert BatchPlanner(WIDE).finish() == ()


def test_negative_sizes_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        add(BatchPlanner(WIDE), line=-1)


@pytest.mark.parametrize("field", ["max_requests", "max_request_bytes", "max_output_bytes"])
def test_limits_must_be_positive(field: str) -> None:
    values = {"max_requests": 1, "max_request_bytes": 1, "max_output_bytes": 1, field: 0}
    with pytest.raises(ValueError, match=field):
        PlanLimits(**values)


def test_limits_come_from_settings() -> None:
    s = Settings(max_requests_per_batch=7, max_batch_bytes=8, max_batch_output_bytes=9)
    assert PlanLimits.from_settings(s) == PlanLimits(7, 8, 9)


requests = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(min_value=0, max_value=300),
        st.integers(min_value=0, max_value=3000),
    ),
    max_size=60,
)
limits = st.builds(
    PlanLimits,
    max_requests=st.integers(min_value=1, max_value=6),
    max_request_bytes=st.integers(min_value=1, max_value=600),
    max_output_bytes=st.integers(min_value=1, max_value=6000),
)


def run(lim: PlanLimits, reqs: list[tuple[str, int, int]]) -> tuple[list[int], list[PlannedBatch]]:
    p = BatchPlanner(lim)
    indexes: list[int] = []
    batches: list[PlannedBatch] = []
    for model, line, out in reqs:
        placement = p.add(model=model, line_bytes=line, expected_output_bytes=out)
        indexes.append(placement.batch_index)
        batches.extend(placement.closed)
    batches.extend(p.finish())
    return indexes, batches


@settings(max_examples=300, deadline=None)
@given(limits, requests)
def test_every_request_lands_in_exactly_one_batch_within_limits(
    lim: PlanLimits, reqs: list[tuple[str, int, int]]
) -> None:
    indexes, batches = run(lim, reqs)
    by_index = {b.index: b for b in batches}
    assert len(by_index) == len(batches), "each batch is closed once"
    assert sorted(by_index) == list(range(1, len(batches) + 1))
    for index, batch in by_index.items():
        members = [r for r, i in zip(reqs, indexes, strict=True) if i == index]
        assert batch.request_count == len(members) >= 1
        assert {m for m, _, _ in members} == {batch.model}
        assert batch.request_bytes == sum(line for _, line, _ in members)
        assert batch.expected_output_bytes == sum(out for _, _, out in members)
        assert batch.request_count <= lim.max_requests
        if batch.request_count > 1:
            assert batch.request_bytes <= lim.max_request_bytes
            assert batch.expected_output_bytes <= lim.max_output_bytes


@settings(max_examples=100, deadline=None)
@given(limits, requests)
def test_the_same_input_order_gives_the_same_plan(
    lim: PlanLimits, reqs: list[tuple[str, int, int]]
) -> None:
    assert run(lim, reqs) == run(lim, reqs)


# Runs of one model with one expected output size, as intake places them, between single
# requests of any model.
runs = st.lists(
    st.tuples(
        st.sampled_from(["m1", "m2"]),
        st.lists(st.integers(min_value=0, max_value=400), max_size=25),
        st.integers(min_value=0, max_value=3000),
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(limits, runs)
def test_place_run_gives_the_batches_place_gives_request_by_request(
    lim: PlanLimits, stretches: list[tuple[str, list[int], int]]
) -> None:
    one_by_one = BatchPlanner(lim)
    expected: list[tuple[int, tuple[PlannedBatch, ...]]] = []
    for model, sizes, out in stretches:
        for size in sizes:
            placement = one_by_one.place(model, size, out)
            expected.append((placement.batch_index, placement.closed))

    by_run = BatchPlanner(lim)
    got: list[tuple[int, tuple[PlannedBatch, ...]]] = []
    for model, sizes, out in stretches:
        start = 0
        for index, end, closed in by_run.place_run(model, sizes, out):
            assert end > start, "every stretch holds at least one request"
            got.append((index, closed))
            got.extend((index, ()) for _ in range(start + 1, end))
            start = end
        assert start == len(sizes)
    assert got == expected
    assert by_run.finish() == one_by_one.finish()


def test_place_run_refuses_negative_sizes() -> None:
    with pytest.raises(ValueError, match="negative"):
        BatchPlanner(PlanLimits(2, 100, 100)).place_run("m", [3, -1], 5)
