"""Intake's table of seen hashes (core/intake/seen.py): a set of 64-bit ints, compactly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.core.intake.seen import MIN_SLOTS, SLOT_BYTES, ZERO_SLOT, SeenHashes, TableFull

int64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
# Values that crowd few slots (small, equal modulo small sizes) as well as any 64-bit value.
crowded = st.integers(min_value=-3, max_value=3000).map(lambda n: n * 1025)
values = st.lists(int64 | crowded | st.just(0) | st.just(ZERO_SLOT), max_size=400)


@settings(max_examples=200, deadline=None)
@given(values)
def test_add_answers_what_a_set_answers(seq: list[int]) -> None:
    table, model = SeenHashes(), set()
    for value in seq:
        # 0 is stored as ZERO_SLOT: the two are one entry, like a 64-bit collision.
        as_model = value or ZERO_SLOT
        assert table.add(value) == (as_model not in model)
        model.add(as_model)
        assert len(table) == len(model)
    assert sorted(table.values()) == sorted(model)
    assert all(value in table for value in seq)


@settings(max_examples=200, deadline=None)
@given(values, st.lists(values, max_size=6))
def test_add_all_new_adds_a_chunk_only_when_every_value_is_new(
    before: list[int], chunks: list[list[int]]
) -> None:
    table, model = SeenHashes(), set()
    for value in before:
        table.add(value)
        model.add(value or ZERO_SLOT)
    for chunk in chunks:
        as_model = [value or ZERO_SLOT for value in chunk]
        all_new = model.isdisjoint(as_model) and len(set(as_model)) == len(as_model)
        assert table.add_all_new(chunk) == all_new
        if all_new:
            model.update(as_model)
        # Refused, the table is exactly as it was: every value answers as the model does.
        assert sorted(table.values()) == sorted(model)
        assert len(table) == len(model)
        for value in chunk:
            assert (value in table) == ((value or ZERO_SLOT) in model)


def test_the_table_grows_past_its_first_size_and_keeps_every_entry() -> None:
    table = SeenHashes()
    first = table.nbytes
    assert first == (MIN_SLOTS | 1) * SLOT_BYTES
    for value in range(1, 50_001):
        assert table.add(value * 7919)
    assert table.nbytes > first
    assert len(table) == 50_000
    assert not table.add(7919 * 25_000)
    assert table.add_all_new(list(range(10**12, 10**12 + 5000)))
    assert len(table) == 55_000


def test_a_presized_table_takes_its_expected_entries_without_growing() -> None:
    table = SeenHashes(100_000)
    size = table.nbytes
    for value in range(100_000):
        table.add(hash(f"k{value}"))
    assert table.nbytes == size
    # At most ~11.4 bytes an entry at the fullest (MAX_LOAD 0.7), far under a set's ~80.
    assert size / 100_000 < 12


def test_reserve_grows_once_and_keeps_what_is_in() -> None:
    table = SeenHashes()
    for value in range(1, 1001):
        table.add(value)
    table.reserve(200_000)
    size = table.nbytes
    assert table.capacity >= 200_000
    assert all(value in table for value in range(1, 1001))
    for value in range(1001, 200_001):
        table.add(value)
    assert table.nbytes == size


def test_a_table_at_its_budget_refuses_to_grow_and_changes_nothing() -> None:
    table = SeenHashes(budget_bytes=1024 * SLOT_BYTES)
    added = 0
    while table.fits(added + 1):
        table.add(added + 1)
        added += 1
    with pytest.raises(TableFull, match="budget of 8,192 bytes"):
        table.add(added + 1)
    assert table.nbytes <= 1024 * SLOT_BYTES
    assert len(table) == added
    assert all(value in table for value in range(1, added + 1))
    assert added + 1 not in table
    with pytest.raises(TableFull):
        table.add_all_new([10**9 + n for n in range(500)])
    assert len(table) == added


def test_reserve_stops_at_the_budget() -> None:
    table = SeenHashes(budget_bytes=4096 * SLOT_BYTES)
    table.reserve(10**9)
    assert table.nbytes <= 4096 * SLOT_BYTES
