"""The hybrid plan before spending (issue 20 point 5): lines and cost per lane next to
all-standard and all-batch, with the saving; the guides' worked example reproduced."""

from __future__ import annotations

import json
from datetime import date

import pytest

from bananabatch.config import CompatLaneConfig, Settings
from bananabatch.core.estimate import FileEstimator
from bananabatch.core.intake import IntakeLimits, LineParser
from bananabatch.core.pricing import PriceBook
from bananabatch.core.routing import router_for

PRO = "gemini-3-pro-image"


def guide_file(n: int) -> list[bytes]:
    """The guides' mix: 15% urgent, 35% normal (scheduled, quality-critical), 50% bulk
    that may go through a third party; 4K Nano Banana Pro."""
    out = []
    for i in range(n):
        share = i * 100 // n
        doc: dict[str, object] = {"key": f"k{i}", "prompt": "a sneaker", "image_size": "4K"}
        doc["priority"] = "urgent" if share < 15 else "normal" if share < 50 else "bulk"
        if doc["priority"] == "bulk":
            doc["allow_third_party"] = True
        out.append(json.dumps(doc).encode())
    return out


def estimate(settings: Settings, lines: list[bytes]) -> FileEstimator:
    book = PriceBook()
    parser = LineParser(default_model=PRO, limits=IntakeLimits(), today=date(2026, 12, 7))
    estimator = FileEstimator(book, router=router_for(settings, book))
    for at, raw in enumerate(lines, start=1):
        parsed = parser.parse(at, raw)
        assert parsed is not None
        estimator.add(parsed)
    return estimator


def gateways(allow: bool) -> Settings:
    gateway = CompatLaneConfig(base_url="http://127.0.0.1:9/v1", models={PRO: "nano-banana-pro"})
    return Settings(
        sync_lanes=("gemini-standard", "compat:gw1"),
        compat_lanes={"gw1": gateway},
        allow_third_party=allow,
    )


def test_the_guides_worked_example_splits_50_35_15_and_costs_what_they_say() -> None:
    plan = estimate(gateways(True), guide_file(1000)).result().hybrid
    assert plan is not None
    lines = {lane.lane: lane.lines for lane in plan.lanes}
    assert lines == {"batch": 350, "gemini-standard": 150, "compat:gw1": 500}
    # The guides: 10,000 4K images cost $2,400 all-standard, $1,200 all-batch and $1,030
    # split; per 1,000 lines, a tenth (our token estimate adds the typical text tokens).
    assert plan.all_standard_usd == pytest.approx(240.0, rel=0.02)
    assert plan.all_batch_usd == pytest.approx(120.0, rel=0.02)
    assert plan.hybrid_usd == pytest.approx(103.0, rel=0.02)
    doc = plan.to_doc()
    assert doc["saving_vs_standard_usd"] == pytest.approx(plan.all_standard_usd - plan.hybrid_usd)
    assert doc["saving_vs_batch_usd"] > 0


def test_without_third_parties_the_bulk_lines_go_to_batch() -> None:
    result = estimate(gateways(False), guide_file(100)).result()
    plan = result.hybrid
    assert plan is not None
    assert {lane.lane: lane.lines for lane in plan.lanes} == {"batch": 85, "gemini-standard": 15}
    # The file's own total is the plan's: what bananabatch would charge.
    assert result.batch_usd == pytest.approx(plan.hybrid_usd)


def test_an_urgent_line_sent_to_batch_is_counted_with_the_reason() -> None:
    gateway = CompatLaneConfig(base_url="http://127.0.0.1:9/v1", models={PRO: "nano-banana-pro"})
    # Only a third-party gateway is synchronous, and this deployment forbids third parties.
    settings = Settings(sync_lanes=("compat:gw1",), compat_lanes={"gw1": gateway})
    plan = estimate(settings, [b'{"prompt": "y", "priority": "urgent"}']).result().hybrid
    assert plan is not None
    assert {lane.lane: lane.lines for lane in plan.lanes} == {"batch": 1}
    assert plan.notes == {
        "the synchronous lanes for this model are third parties, not allowed: batch": 1
    }
