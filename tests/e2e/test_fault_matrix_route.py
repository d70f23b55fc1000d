"""Fault-matrix rows for the routing lanes (issue 20 points 2 and 3), on the local stack and
the emulated-GCP stack, each ending with the four invariants (tests/support/stacks.py).

The file mixes urgent lines (Gemini's standard API, on the emulator), normal lines (batch,
on the emulator) and bulk lines that allow third parties, sent to two OpenAI-compatible
gateways `compat:gw1` and `compat:gw2`. The gateways here are in-test fakes of the
SyncImageLane port, set on the runtime as wiring would set their adapters: they count
every call, and each call's fate is scripted. The sync lanes' own check of "nothing paid
twice": no key has more than one call that may have been billed (an image, a refusal, or
an unknown outcome), across every provider.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bananabatch.config import CompatLaneConfig
from bananabatch.core.breaker import FIRST_OPEN, Breaker
from bananabatch.core.states import ItemState, JobState
from bananabatch.emulator.compat import CompatEmulatorConfig, CompatEmulatorServer
from bananabatch.errors import ContentRefused, OutcomeUnknown, TransientError
from bananabatch.pipeline import lanes
from bananabatch.ports import ImageRequest, ImageResult, SyncImageLane
from tests.support.stacks import Stack, StackKind, assert_invariants, open_stack

PRO = "gemini-3-pro-image"
GATEWAYS = {
    label: CompatLaneConfig(
        base_url="http://127.0.0.1:9/v1", models={PRO: "nano-banana-pro"}, usd_per_image=0.05
    )
    for label in ("gw1", "gw2")
}
ROUTED: dict[str, Any] = {
    "sync_lanes": ("gemini-standard", "compat:gw1", "compat:gw2"),
    "compat_lanes": GATEWAYS,
    "allow_third_party": True,
}


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (250, 200, 0)).save(out, format="PNG")
    return out.getvalue()


PNG = _png()
# What a scripted call does: answer an image, or raise.
Fate = Callable[[ImageRequest], None]


class FakeGateway:
    """A SyncImageLane whose every call is counted and whose fates are scripted per call
    (`fates`, in order; then `default`)."""

    def __init__(self, name: str, *fates: Fate, default: Fate | None = None) -> None:
        self.name = name
        self.fates = list(fates)
        self.default = default
        self.calls: list[str] = []
        self.billable: Counter[str] = Counter()

    def generate(self, request: ImageRequest, *, timeout_s: float) -> ImageResult:
        assert request.prompt, "a gateway is sent the line's prompt"
        self.calls.append(request.key)
        fate = self.fates.pop(0) if self.fates else self.default
        try:
            if fate is not None:
                fate(request)
        except (OutcomeUnknown, ContentRefused):
            self.billable[request.key] += 1
            raise
        self.billable[request.key] += 1
        return ImageResult(image=PNG, mime_type="image/png", cost_usd=0.05)


def down(_request: ImageRequest) -> None:
    raise TransientError("503 Service Unavailable from the gateway")


def lost(_request: ImageRequest) -> None:
    raise OutcomeUnknown("read timeout after the request was sent")


def refused(_request: ImageRequest) -> None:
    raise ContentRefused("moderation_blocked: the prompt was refused", finish_reason="SAFETY")


def file_lines(bulk: int = 6) -> list[str]:
    lines = [
        '{"key": "u1", "prompt": "a hero banner", "priority": "urgent"}',
        '{"key": "u2", "prompt": "a hero logo", "priority": "urgent"}',
        '{"key": "n1", "prompt": "a lamp"}',
        '{"key": "n2", "prompt": "a chair", "priority": "batch"}',
    ]
    lines += [
        f'{{"key": "b{i}", "prompt": "sneaker {i}", "model": "nano-banana-pro", '
        f'"priority": "bulk", "allow_third_party": true}}'
        for i in range(1, bulk + 1)
    ]
    return lines


@pytest.fixture
def routed(request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path) -> Iterator[Stack]:
    with open_stack(request, kind, tmp_path, **ROUTED) as stack:
        yield stack


def _gateways(stack: Stack, gw1: FakeGateway, gw2: FakeGateway) -> None:
    lanes_: dict[str, SyncImageLane] = {"compat:gw1": gw1, "compat:gw2": gw2}
    stack.runtime.sync_lanes.update(lanes_)


def _run(stack: Stack, lines: list[str]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    job_id = stack.upload(stack.write(lines))
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = {item.key: item for item in stack.repo.items(job_id)}
    return job_id, summary, items


def _paid_once(*gateways: FakeGateway) -> None:
    billed: Counter[str] = Counter()
    for gateway in gateways:
        billed.update(gateway.billable)
    assert [key for key, n in billed.items() if n > 1] == []


def test_each_line_goes_where_its_priority_says_and_every_image_is_made(routed: Stack) -> None:
    gw1, gw2 = FakeGateway("compat:gw1"), FakeGateway("compat:gw2")
    _gateways(routed, gw1, gw2)
    _job_id, summary, items = _run(routed, file_lines())
    assert summary["counts"]["SUCCEEDED"] == 10
    assert {k: (i.lane, i.provider_lane) for k, i in items.items()} == {
        "u1": ("urgent", "gemini-standard"),
        "u2": ("urgent", "gemini-standard"),
        "n1": ("batch", None),
        "n2": ("batch", None),
        **{f"b{i}": ("sync", "compat:gw1") for i in range(1, 7)},
    }
    assert (len(gw1.calls), gw2.calls) == (6, [])
    assert routed.emulator.state.counters.sync_requests == 2
    # The actual split, in the summary and in the completion message.
    by_lane = summary["costs"]["by_lane"]
    assert {lane: share["items"] for lane, share in by_lane.items()} == {
        "batch": 2,
        "compat:gw1": 6,
        "gemini-standard": 2,
    }
    assert by_lane["compat:gw1"]["actual_usd"] == pytest.approx(0.30)
    _paid_once(gw1, gw2)


def test_a_failing_first_gateway_hands_its_items_to_the_next_and_its_breaker_opens(
    routed: Stack,
) -> None:
    gw1 = FakeGateway("compat:gw1", default=down)
    gw2 = FakeGateway("compat:gw2")
    _gateways(routed, gw1, gw2)
    _job_id, summary, items = _run(routed, file_lines())
    assert summary["counts"]["SUCCEEDED"] == 10
    assert {items[f"b{i}"].provider_lane for i in range(1, 7)} == {"compat:gw2"}
    # Three failures in a row open gw1's breaker: the other three items never try it.
    assert len(gw1.calls) == 3
    assert sorted(gw2.calls) == [f"b{i}" for i in range(1, 7)]
    breaker = routed.runtime.state.get(lanes.breaker_path("compat:gw1"))
    assert breaker is not None
    assert breaker["open_until"] is not None
    assert routed.runtime.state.get(lanes.breaker_path("compat:gw2")) is None  # never failed
    _paid_once(gw1, gw2)


def test_an_unknown_outcome_is_not_repeated_on_another_provider(routed: Stack) -> None:
    gw1 = FakeGateway("compat:gw1", lost)
    gw2 = FakeGateway("compat:gw2")
    _gateways(routed, gw1, gw2)
    job_id, _summary, items = _run(routed, file_lines(bulk=3))
    assert items["b1"].state is ItemState.FAILED
    assert "outcome unknown on compat:gw1" in (items["b1"].reason or "")
    assert "b1" not in gw2.calls
    ledger = lanes.attempts(routed.runtime, job_id, "b1")
    assert [(a["lane"], a["outcome"]) for a in ledger] == [("compat:gw1", lanes.UNKNOWN)]
    assert {items["b2"].state, items["b3"].state} == {ItemState.SUCCEEDED}
    assert routed.repo.require_job(job_id).state is JobState.PARTIAL
    _paid_once(gw1, gw2)


def test_an_owner_may_let_an_unknown_outcome_fail_over(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, **ROUTED, failover_on_unknown=True) as stack:
        gw1 = FakeGateway("compat:gw1", lost)
        gw2 = FakeGateway("compat:gw2")
        _gateways(stack, gw1, gw2)
        job_id, _summary, items = _run(stack, file_lines(bulk=1))
        assert (items["b1"].state, items["b1"].provider_lane) == (
            ItemState.SUCCEEDED,
            "compat:gw2",
        )
        ledger = sorted(lanes.attempts(stack.runtime, job_id, "b1"), key=lambda a: a["n"])
        assert [(a["lane"], a["outcome"]) for a in ledger] == [
            ("compat:gw1", lanes.UNKNOWN),
            ("compat:gw2", lanes.SUCCEEDED),
        ]


def test_a_content_refusal_is_blocked_and_never_tried_elsewhere(routed: Stack) -> None:
    gw1 = FakeGateway("compat:gw1", refused)
    gw2 = FakeGateway("compat:gw2")
    _gateways(routed, gw1, gw2)
    _job_id, summary, items = _run(routed, file_lines(bulk=2))
    assert items["b1"].state is ItemState.BLOCKED
    assert gw2.calls == []
    assert summary["counts"]["BLOCKED"] == 1
    # A refusal is an answer: it does not count against the provider's breaker.
    assert routed.runtime.state.get(lanes.breaker_path("compat:gw1")) is None
    _paid_once(gw1, gw2)


def test_an_open_breaker_is_probed_later_and_closes_when_the_provider_is_back(
    routed: Stack,
) -> None:
    gw1 = FakeGateway("compat:gw1", down, down, down)  # then healthy
    gw2 = FakeGateway("compat:gw2")
    _gateways(routed, gw1, gw2)
    _run(routed, file_lines(bulk=4))
    assert len(gw1.calls) == 3
    routed.clock.advance(FIRST_OPEN)
    _job, _summary, items = _run(
        routed,
        [
            f'{{"key": "later{i}", "prompt": "boot {i}", "model": "nano-banana-pro", '
            f'"priority": "bulk", "allow_third_party": true}}'
            for i in range(3)
        ],
    )
    # The first item probed gw1, which answered: the breaker closed and gw1 took them all.
    assert {item.provider_lane for item in items.values()} == {"compat:gw1"}
    breaker = routed.runtime.state.get(lanes.breaker_path("compat:gw1"))
    assert breaker is not None
    assert breaker["open_until"] is None
    _paid_once(gw1, gw2)


def test_when_every_provider_is_down_the_items_fail_saying_so_and_nothing_is_paid(
    routed: Stack,
) -> None:
    gw1 = FakeGateway("compat:gw1", default=down)
    gw2 = FakeGateway("compat:gw2", default=down)
    _gateways(routed, gw1, gw2)
    _job_id, summary, items = _run(routed, file_lines(bulk=1))
    assert items["b1"].state is ItemState.FAILED
    assert "every provider failed" in (items["b1"].reason or "")
    assert summary["counts"]["SUCCEEDED"] == 4
    _paid_once(gw1, gw2)


# --- with the OpenAI-compatible images emulator behind each gateway (lanes3p's adapter) ---


@pytest.fixture
def two_gateways(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> Iterator[tuple[Stack, CompatEmulatorServer, CompatEmulatorServer]]:
    config = CompatEmulatorConfig(api_key="gw-key", models=frozenset({"nano-banana-pro"}))
    second = CompatEmulatorConfig(api_key="gw-key", models=frozenset({"nano-banana-pro"}))
    with (
        CompatEmulatorServer(config) as emu1,
        CompatEmulatorServer(second) as emu2,
    ):
        gateways = {
            label: CompatLaneConfig(
                base_url=emu.base_url,
                api_key="gw-key",
                models={PRO: "nano-banana-pro"},
                usd_per_image=0.05,
                timeout_s=2.0,
            )
            for label, emu in (("gw1", emu1), ("gw2", emu2))
        }
        settings = {**ROUTED, "compat_lanes": gateways}
        with open_stack(request, kind, tmp_path, **settings) as stack:
            yield stack, emu1, emu2


def _images_per_item(*emulators: CompatEmulatorServer) -> Counter[str]:
    """Images made per item key, across gateways (their ledgers count by attempt id)."""
    made: Counter[str] = Counter()
    for emu in emulators:
        for attempt_id, n in emu.state.submitted_keys().items():
            made[str(attempt_id).split("/", 1)[1].rsplit("@", 1)[0]] += n
    return made


def test_the_first_gateway_down_its_items_complete_on_the_next_and_its_breaker_opens(
    two_gateways: tuple[Stack, CompatEmulatorServer, CompatEmulatorServer],
) -> None:
    stack, emu1, emu2 = two_gateways
    emu1.state.faults.down = True
    _job_id, summary, items = _run(stack, file_lines())
    assert summary["counts"]["SUCCEEDED"] == 10
    assert {items[f"b{i}"].provider_lane for i in range(1, 7)} == {"compat:gw2"}
    assert emu1.state.counters.calls == 3  # then its breaker opened
    breaker = stack.runtime.state.get(lanes.breaker_path("compat:gw1"))
    assert breaker is not None
    assert breaker["open_until"] is not None
    made = _images_per_item(emu1, emu2)
    assert made == Counter({f"b{i}": 1 for i in range(1, 7)})
    assert summary["costs"]["by_lane"]["compat:gw2"]["items"] == 6


def test_a_gateway_answer_lost_after_the_request_was_sent_is_not_repeated_elsewhere(
    two_gateways: tuple[Stack, CompatEmulatorServer, CompatEmulatorServer],
) -> None:
    stack, emu1, emu2 = two_gateways
    emu1.state.faults.stall = 1  # the first call is made and its answer never comes
    try:
        _job_id, _summary, items = _run(stack, file_lines(bulk=2))
    finally:
        emu1.state.release_stalled()
    assert items["b1"].state is ItemState.FAILED
    assert "outcome unknown on compat:gw1" in (items["b1"].reason or "")
    assert items["b2"].state is ItemState.SUCCEEDED
    # gw1 made b1's image (it may bill it); gw2 was never asked for it.
    assert _images_per_item(emu2)["b1"] == 0
    assert max(_images_per_item(emu1, emu2).values()) == 1


def test_items_whose_providers_are_all_shut_wait_unpaid_and_the_tick_runs_them_later(
    routed: Stack,
) -> None:
    # Both gateways failed three calls a moment ago (an earlier job): both breakers open.
    now = routed.runtime.now()
    for lane in ("compat:gw1", "compat:gw2"):
        breaker = Breaker(lane)
        for _ in range(3):
            breaker = breaker.record(False, now)
        routed.runtime.state.set(lanes.breaker_path(lane), breaker.to_doc())
    gw1, gw2 = FakeGateway("compat:gw1"), FakeGateway("compat:gw2")
    _gateways(routed, gw1, gw2)
    job_id = routed.upload(routed.write(file_lines(bulk=2)))
    items = {item.key: item for item in routed.repo.items(job_id)}
    # Nothing was asked of either gateway: the bulk items wait, unpaid.
    assert (items["b1"].state, items["b2"].state) == (ItemState.PENDING, ItemState.PENDING)
    assert gw1.calls == gw2.calls == []
    assert lanes.attempts(routed.runtime, job_id, "b1") == []
    summary = assert_invariants(routed, job_id, routed.settle(job_id))
    assert summary["counts"]["SUCCEEDED"] == 6
    # The tick ran them once the breakers let a probe through; gw1 answered and closed.
    assert sorted(gw1.calls) == ["b1", "b2"]
    assert gw2.calls == []
    _paid_once(gw1, gw2)
