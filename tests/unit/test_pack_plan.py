"""core/pack.py: which waiting batches the batch window packs together, and where each
line goes (issue 21 point 4)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from bananabatch.core import pack
from bananabatch.core.planning import PlanLimits
from bananabatch.core.records import pack_id_for

LIMITS = PlanLimits(max_requests=100, max_request_bytes=10_000, max_output_bytes=1_000_000)


def waiting(
    batch_id: str, count: int, *, model: str = "m", provider: str = "gemini"
) -> pack.Waiting:
    return pack.Waiting(
        batch_id=batch_id,
        job_id=batch_id.split("-")[0],
        provider=provider,
        model=model,
        request_count=count,
        request_bytes=count * 10,
        expected_output_bytes=count * 1_000,
    )


def test_small_files_of_one_model_are_packed_into_as_few_batches_as_their_lines_need() -> None:
    plans = pack.choose(
        [waiting("a-0", 40), waiting("b-0", 30), waiting("c-0", 50)], lambda _m: LIMITS
    )
    assert len(plans) == 1
    assert plans[0].sources == ("a-0", "b-0", "c-0")
    assert (plans[0].batches, plans[0].was) == (2, 3)


def test_batches_already_as_few_as_their_lines_need_are_left_alone() -> None:
    assert pack.choose([waiting("a-0", 100), waiting("a-1", 20)], lambda _m: LIMITS) == []
    assert pack.choose([waiting("a-0", 60), waiting("b-0", 60)], lambda _m: LIMITS) == []


def test_a_single_waiting_batch_is_never_packed() -> None:
    assert pack.choose([waiting("a-0", 3)], lambda _m: LIMITS) == []


def test_models_and_providers_are_never_mixed_in_one_pack() -> None:
    plans = pack.choose(
        [
            waiting("a-0", 10, model="lite"),
            waiting("b-0", 10, model="pro"),
            waiting("c-0", 10, model="lite"),
            waiting("d-0", 10, model="pro", provider="vertex"),
        ],
        lambda _m: LIMITS,
    )
    assert [(p.model, p.provider, p.sources) for p in plans] == [("lite", "gemini", ("a-0", "c-0"))]


def test_a_models_own_limits_decide_its_packs() -> None:
    tight = PlanLimits(max_requests=10, max_request_bytes=10_000, max_output_bytes=1_000_000)
    limits = {"small": tight, "big": LIMITS}
    plans = pack.choose(
        [waiting("a-0", 8, model="small"), waiting("b-0", 8, model="small")],
        lambda m: limits[m],
    )
    assert plans == []


def test_the_cut_starts_a_new_batch_when_the_next_line_would_pass_any_limit() -> None:
    limits = PlanLimits(max_requests=3, max_request_bytes=100, max_output_bytes=50)
    assert pack.cut([(10, 1)] * 7, limits).places == [0, 0, 0, 1, 1, 1, 2]
    assert pack.cut([(60, 1), (50, 1), (40, 1)], limits).places == [0, 1, 1]
    assert pack.cut([(1, 30), (1, 30), (1, 10)], limits).places == [0, 1, 1]


def test_a_line_larger_than_a_whole_batch_still_gets_one_of_its_own() -> None:
    limits = PlanLimits(max_requests=3, max_request_bytes=100, max_output_bytes=50)
    assert pack.cut([(10, 1), (500, 1), (10, 1)], limits).places == [0, 1, 2]


@given(st.lists(st.tuples(st.integers(1, 120), st.integers(0, 60)), min_size=0, max_size=60))
def test_the_cut_keeps_line_order_and_every_batch_within_the_limits(
    lines: list[tuple[int, int]],
) -> None:
    limits = PlanLimits(max_requests=5, max_request_bytes=100, max_output_bytes=60)
    placed = pack.cut(lines, limits)
    assert len(placed.places) == len(lines)
    assert placed.places == sorted(placed.places)
    assert set(placed.places) == set(range(placed.batches))
    for n in range(placed.batches):
        mine = [line for line, at in zip(lines, placed.places, strict=True) if at == n]
        if len(mine) == 1:
            continue  # an oversized line alone is allowed
        assert len(mine) <= limits.max_requests
        assert sum(size for size, _ in mine) <= limits.max_request_bytes
        assert sum(out for _, out in mine) <= limits.max_output_bytes


def test_a_packs_id_names_its_window_and_depends_only_on_what_it_packs() -> None:
    at = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    one = pack_id_for(at, "gemini", "m", ["b-0", "a-0"])
    assert one == pack_id_for(at, "gemini", "m", ["a-0", "b-0"])
    assert one.startswith("pack-20260101t0100-")
    assert one != pack_id_for(at, "gemini", "m", ["a-0"])
    assert "/" not in one


def test_full_batches_stay_their_jobs_own_and_only_the_partial_ones_are_packed() -> None:
    plans = pack.choose(
        [waiting("big-0", 100), waiting("big-1", 100), waiting("big-2", 4), waiting("s-0", 40)],
        lambda _m: LIMITS,
    )
    assert [p.sources for p in plans] == [("big-2", "s-0")]
    assert (plans[0].batches, plans[0].was) == (1, 2)


def test_a_batch_is_full_when_one_more_line_of_its_own_size_would_pass_a_limit() -> None:
    assert pack.is_full(waiting("a-0", 100), LIMITS)
    assert not pack.is_full(waiting("a-0", 99), LIMITS)
    by_bytes = pack.Waiting("a-0", "a", "gemini", "m", 10, 9_500, 10)
    assert pack.is_full(by_bytes, LIMITS)
    by_output = pack.Waiting("a-0", "a", "gemini", "m", 10, 10, 950_000)
    assert pack.is_full(by_output, LIMITS)
