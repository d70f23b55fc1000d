"""Fault-matrix rows for the third-party lane emulators (issue 20 point 6), on the local and
the emulated-GCP stacks, through the real adapters and SDKs: the file of
test_fault_matrix_route.py (urgent, normal and bulk lines; bulk ones allow third parties)
with two OpenAI-compatible gateways served by the compat emulator, each fault set on the
first one. Every row ends with the four invariants (tests/support/stacks.py) and the
lanes' own check: no line got an image from more than one gateway.

The async lane (Replicate) rows are in test_async_callbacks_replicate.py: no runner routes
lines to async lanes yet, so those drive the adapter directly."""

from __future__ import annotations

from bananabatch.core.states import ItemState
from bananabatch.emulator.base.lane_faults import LaneFaults
from bananabatch.emulator.compat import CompatEmulatorServer
from tests.e2e.test_fault_matrix_route import (
    _images_per_item,
    _run,
    file_lines,
    two_gateways,
)
from tests.support.stacks import Stack

__all__ = ["two_gateways"]  # the fixture, shared with the route rows

Gateways = tuple[Stack, CompatEmulatorServer, CompatEmulatorServer]
BULK = [f"b{i}" for i in range(1, 7)]


def _each_made_once(emu1: CompatEmulatorServer, emu2: CompatEmulatorServer) -> dict[str, int]:
    made = _images_per_item(emu1, emu2)
    assert all(n == 1 for n in made.values()), made
    return dict(made)


def test_server_errors_on_the_first_gateway_move_those_items_to_the_next(
    two_gateways: Gateways,
) -> None:
    stack, emu1, emu2 = two_gateways
    emu1.state.faults = LaneFaults(server_errors=2)
    _job, summary, items = _run(stack, file_lines())
    assert summary["counts"]["SUCCEEDED"] == 10
    # The two refused calls moved b1 and b2 on; what follows is the breaker's to decide.
    assert [items[k].provider_lane for k in ("b1", "b2")] == ["compat:gw2", "compat:gw2"]
    assert emu1.state.counters.calls >= 2
    assert sorted(_each_made_once(emu1, emu2)) == BULK


def test_a_rate_limited_gateway_hands_the_item_to_the_next_and_nothing_is_paid_twice(
    two_gateways: Gateways,
) -> None:
    stack, emu1, emu2 = two_gateways
    emu1.state.faults = LaneFaults(rate_limited=1, retry_after_seconds=30)
    _job, summary, items = _run(stack, file_lines())
    assert summary["counts"]["SUCCEEDED"] == 10
    assert items["b1"].provider_lane == "compat:gw2"
    assert sorted(_each_made_once(emu1, emu2)) == BULK


def test_a_gateways_content_refusal_is_blocked_and_not_sent_to_the_next(
    two_gateways: Gateways,
) -> None:
    stack, emu1, emu2 = two_gateways
    emu1.state.faults = LaneFaults(refuse=["sneaker 3"])
    _job, summary, items = _run(stack, file_lines())
    assert items["b3"].state is ItemState.BLOCKED
    assert summary["counts"]["BLOCKED"] == 1
    assert summary["counts"]["SUCCEEDED"] == 9
    assert emu1.state.counters.refused == 1
    made = _each_made_once(emu1, emu2)
    assert "b3" not in made  # refused, so never made anywhere
    assert emu2.state.counters.calls == 0


def test_a_slow_gateway_answer_is_slow_on_the_tests_clock_and_still_served_there(
    two_gateways: Gateways,
) -> None:
    stack, emu1, emu2 = two_gateways
    waited: list[float] = []
    emu1.state.faults = LaneFaults(slow=2, slow_seconds=40.0, on_slow=waited.append)
    _job, summary, items = _run(stack, file_lines())
    assert summary["counts"]["SUCCEEDED"] == 10
    assert waited == [40.0, 40.0]
    assert {items[k].provider_lane for k in BULK} == {"compat:gw1"}
    assert sorted(_each_made_once(emu1, emu2)) == BULK
