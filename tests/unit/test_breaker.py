"""The per-provider circuit breaker's transitions (core/breaker.py), on a hand-moved clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bananabatch.core.breaker import FIRST_OPEN, MAX_OPEN, RECENT, Breaker, Gate

T0 = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)


def after(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_provider_failing_most_recent_calls_is_shut_out() -> None:
    breaker = Breaker("compat:gw1")
    breaker = breaker.record(False, after(0)).record(False, after(1))
    assert breaker.gate(after(2)) is Gate.GO  # two calls are too few to judge
    breaker = breaker.record(False, after(2))
    assert breaker.is_open
    assert breaker.opened == 1
    assert breaker.gate(after(3)) is Gate.SHUT


def test_occasional_failures_leave_it_closed() -> None:
    breaker = Breaker("gemini-standard")
    for at, ok in enumerate([True, False, True, True, False, True, True]):
        breaker = breaker.record(ok, after(at))
    assert breaker.gate(after(10)) is Gate.GO


def test_old_failures_are_forgotten() -> None:
    breaker = Breaker("x").record(False, after(0)).record(False, after(1))
    later = RECENT.total_seconds() + 10
    breaker = breaker.record(False, after(later))
    assert not breaker.is_open


def test_once_open_it_lets_one_probe_through_after_the_wait() -> None:
    breaker = Breaker("x")
    for at in range(3):
        breaker = breaker.record(False, after(at))
    due = 2 + FIRST_OPEN.total_seconds()
    assert breaker.gate(after(due - 1)) is Gate.SHUT
    assert breaker.gate(after(due)) is Gate.PROBE
    probing = breaker.take_probe(after(due))
    assert probing.gate(after(due + 1)) is Gate.SHUT  # one probe at a time


def test_a_successful_probe_closes_it_with_a_clean_record() -> None:
    breaker = Breaker("x")
    for at in range(3):
        breaker = breaker.record(False, after(at))
    closed = breaker.take_probe(after(100)).record(True, after(101))
    assert not closed.is_open
    assert closed.gate(after(102)) is Gate.GO
    assert not closed.worth_writing(True)


def test_a_failed_probe_opens_it_for_twice_as_long_up_to_a_cap() -> None:
    breaker = Breaker("x")
    for at in range(3):
        breaker = breaker.record(False, after(at))
    again = breaker.take_probe(after(100)).record(False, after(100))
    assert again.open_until == after(100) + 2 * FIRST_OPEN
    for _ in range(10):
        assert again.open_until is not None
        again = again.take_probe(again.open_until).record(False, again.open_until)
    assert again.open_for == MAX_OPEN


def test_a_probe_whose_caller_died_is_taken_again_after_its_lease() -> None:
    breaker = Breaker("x")
    for at in range(3):
        breaker = breaker.record(False, after(at))
    probing = breaker.take_probe(after(100))
    assert probing.gate(after(100 + 60)) is Gate.SHUT
    assert probing.gate(after(100 + 600)) is Gate.PROBE


def test_it_round_trips_through_its_document() -> None:
    breaker = Breaker("compat:gw1")
    for at in range(3):
        breaker = breaker.record(False, after(at))
    breaker = breaker.take_probe(after(70))
    assert Breaker.from_doc("compat:gw1", breaker.to_doc()) == breaker
    assert Breaker.from_doc("compat:gw1", None) == Breaker("compat:gw1")
