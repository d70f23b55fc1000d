"""Routing is a pure function of the line, the configured lanes and their prices (issue 20
point 2): each rule of core/routing.py, with prices handed in."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from bananabatch.config import CompatLaneConfig, Settings
from bananabatch.core.pricing import PriceBook
from bananabatch.core.routing import (
    LaneKind,
    LaneOffer,
    LineTraits,
    Route,
    offers,
    route,
    router_for,
)

PRO = "gemini-3-pro-image"
# Nano Banana Pro at 4K, per image: the published figures and the guides' gateway price.
PRICES: Mapping[str, float] = {
    "batch": 0.12,
    "gemini-standard": 0.24,
    "compat:gw1": 0.05,
    "compat:gw2": 0.05,
    "compat:dear": 0.20,
    "compat:own": 0.10,
    "replicate": 0.30,
}


def lanes(*sync: str, asynchronous: tuple[str, ...] = ()) -> tuple[LaneOffer, ...]:
    compat = {
        "gw1": (frozenset({PRO}), True),
        "gw2": (frozenset({PRO}), True),
        "dear": (frozenset({PRO}), True),
        "own": (frozenset({PRO}), False),
    }
    return offers(sync, asynchronous, compat, {"replicate": frozenset({PRO})})


def go(
    priority: str,
    configured: tuple[LaneOffer, ...],
    *,
    deployment: bool = True,
    line: bool = True,
    native: bool = False,
    references: bool = False,
    model: str = PRO,
    prices: Mapping[str, float] = PRICES,
) -> Route:
    traits = LineTraits(model, priority, line, native=native, has_references=references)
    return route(
        traits, configured, lambda lane: prices.get(lane.name), third_party_allowed=deployment
    )


def test_a_normal_line_goes_to_batch_whatever_is_cheaper() -> None:
    got = go("normal", lanes("compat:gw1", "gemini-standard"))
    assert (got.kind, got.lanes, got.usd) == (LaneKind.BATCH, ("batch",), 0.12)


def test_an_urgent_line_goes_to_the_first_sync_lane_and_fails_over_in_configured_order() -> None:
    got = go("urgent", lanes("compat:gw1", "gemini-standard", "compat:gw2"))
    assert got.kind is LaneKind.SYNC
    assert got.lanes == ("compat:gw1", "gemini-standard", "compat:gw2")
    assert got.usd == 0.05


@pytest.mark.parametrize(("deployment", "line"), [(False, True), (True, False), (False, False)])
def test_third_parties_serve_a_line_only_when_the_deployment_and_the_line_both_allow(
    deployment: bool, line: bool
) -> None:
    urgent = go("urgent", lanes("compat:gw1", "gemini-standard"), deployment=deployment, line=line)
    assert urgent.lanes == ("gemini-standard",)
    bulk = go("bulk", lanes("compat:gw1", "gemini-standard"), deployment=deployment, line=line)
    assert bulk.lanes == ("batch",)


def test_a_first_party_gateway_needs_no_permission() -> None:
    got = go("urgent", lanes("compat:own"), deployment=False, line=False)
    assert got.lanes == ("compat:own",)


def test_a_bulk_line_goes_to_the_cheapest_lane_and_fails_over_only_to_lanes_below_batch() -> None:
    got = go("bulk", lanes("gemini-standard", "compat:dear", "compat:gw2", "compat:gw1"))
    # Equal prices keep the configured order; the $0.20 gateway and the standard API cost
    # more than batch ($0.12), so a failover never goes there.
    assert got.kind is LaneKind.SYNC
    assert got.lanes == ("compat:gw2", "compat:gw1")
    assert got.usd == 0.05


def test_a_bulk_line_stays_on_batch_when_no_lane_is_cheaper() -> None:
    got = go("bulk", lanes("gemini-standard", "compat:dear", asynchronous=("replicate",)))
    assert got.lanes == ("batch",)


def test_batch_wins_a_tie() -> None:
    got = go("bulk", lanes("compat:gw1"), prices={**PRICES, "compat:gw1": 0.12})
    assert got.lanes == ("batch",)


def test_a_bulk_line_may_go_to_an_async_lane_when_it_is_the_cheapest() -> None:
    got = go(
        "bulk",
        lanes("compat:dear", asynchronous=("replicate",)),
        prices={**PRICES, "replicate": 0.04},
    )
    assert (got.kind, got.lanes, got.usd) == (LaneKind.ASYNC, ("replicate",), 0.04)


def test_a_lane_without_a_price_for_the_line_is_never_chosen() -> None:
    unpriced = {name: usd for name, usd in PRICES.items() if name != "compat:gw1"}
    assert go("bulk", lanes("compat:gw1"), prices=unpriced).lanes == ("batch",)
    got = go("urgent", lanes("compat:gw1"), prices=unpriced)
    assert got.lanes == ("batch",)
    assert got.note


def test_a_gateway_takes_neither_native_requests_nor_reference_images() -> None:
    configured = lanes("compat:gw1", "gemini-standard")
    assert go("bulk", configured, native=True).lanes == ("batch",)
    assert go("bulk", configured, references=True).lanes == ("batch",)
    assert go("urgent", configured, native=True).lanes == ("gemini-standard",)
    assert go("urgent", configured, references=True).lanes == ("gemini-standard",)


def test_an_urgent_line_no_sync_lane_serves_goes_to_batch_and_says_why() -> None:
    got = go("urgent", lanes("compat:gw1"), model="gemini-3.1-flash-image")
    assert got.lanes == ("batch",)
    assert "no synchronous lane serves gemini-3.1-flash-image" in got.note


def test_a_gateway_serves_only_its_configured_models() -> None:
    got = go("bulk", lanes("compat:gw1"), model="gemini-3.1-flash-image")
    assert got.lanes == ("batch",)


# --- the router of a deployment, with the dated price table --------------------------------


class Line:
    def __init__(self, priority: str, *, third: bool = True, size: str = "4K") -> None:
        self.model = PRO
        self.image_size = size
        self.quality = None
        self.priority = priority
        self.allow_third_party = third


def deployment(**changes: object) -> Settings:
    gateway = CompatLaneConfig(base_url="http://127.0.0.1:9/v1", models={PRO: "nb-pro"})
    values: dict[str, object] = {
        "sync_lanes": ("gemini-standard", "compat:gw1"),
        "compat_lanes": {"gw1": gateway},
        "allow_third_party": True,
    }
    values.update(changes)
    return Settings.model_validate(values)


def test_the_router_reads_the_dated_gateway_price_and_the_token_prices() -> None:
    router = router_for(deployment(), PriceBook())
    bulk = router.route(Line("bulk"))
    assert (bulk.lanes, bulk.usd) == (("compat:gw1",), 0.05)
    urgent = router.route(Line("urgent"))
    assert urgent.lanes == ("gemini-standard", "compat:gw1")
    # 2000 image tokens at $120 / 1M, and the typical text and thinking tokens.
    assert urgent.usd == pytest.approx(0.24, abs=0.02)
    assert router.route(Line("normal")).lanes == ("batch",)


def test_a_gateways_own_price_wins_over_the_table() -> None:
    gateway = CompatLaneConfig(
        base_url="http://127.0.0.1:9/v1", models={PRO: "nb-pro"}, usd_per_image=0.2
    )
    router = router_for(deployment(compat_lanes={"gw1": gateway}), PriceBook())
    assert router.route(Line("bulk")).lanes == ("batch",)


def test_the_default_deployment_routes_as_before_the_levels() -> None:
    router = router_for(Settings(), PriceBook())
    assert router.route(Line("urgent")).lanes == ("gemini-standard",)
    assert router.route(Line("normal")).lanes == ("batch",)
    assert router.route(Line("bulk")).lanes == ("batch",)


def test_a_gateway_priced_from_the_table_is_warned_about_one_with_its_own_price_is_not() -> None:
    from bananabatch.core.routing import flat_price_warnings

    warned = flat_price_warnings(["batch", "compat:gw1"], deployment())
    assert len(warned) == 1
    assert warned[0].startswith("compat:gw1: priced at the table's typical gateway figure")
    own = CompatLaneConfig(base_url="http://x/v1", models={PRO: "nb"}, usd_per_image=0.04)
    assert flat_price_warnings(["compat:gw1"], deployment(compat_lanes={"gw1": own})) == []


def test_a_deployments_async_lane_is_offered_and_routed_to_when_it_is_the_cheapest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bananabatch.core import routing

    settings = deployment(
        sync_lanes=("gemini-standard",), compat_lanes={}, async_lanes=("replicate",)
    )
    assert [o.name for o in router_for(settings, PriceBook()).lanes] == [
        "batch",
        "gemini-standard",
        "replicate",
    ]
    # At the table's dated price ($0.30 at 4K against batch's $0.12) Replicate is not.
    assert router_for(settings, PriceBook()).route(Line("bulk")).lanes == ("batch",)
    monkeypatch.setattr(routing, "flat_price", lambda *_args: 0.04)
    bulk = router_for(settings, PriceBook()).route(Line("bulk"))
    assert (bulk.kind, bulk.lanes) == (LaneKind.ASYNC, ("replicate",))
    # Never without the line's permission for a third party.
    assert router_for(settings, PriceBook()).route(Line("bulk", third=False)).lanes == ("batch",)
