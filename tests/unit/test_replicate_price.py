"""A deployment sets what Replicate charges it per image (BANANABATCH_REPLICATE_USD_PER_IMAGE,
the stack's replicateUsdPerImage), as a gateway sets its usd_per_image: validated at load,
used by routing, the estimate and the cost of the items Replicate serves, and shown with
where it comes from (the deployment's price or the price table's dated figure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bananabatch.config import ENV_REPLICATE_USD_PER_IMAGE, Backend, Settings
from bananabatch.core.pricing import PriceBook
from bananabatch.core.routing import LaneKind, flat_price_warnings, price_source, router_for
from bananabatch.cost_cli import estimate_file
from bananabatch.doctor_lanes import lane_checks
from bananabatch.errors import ConfigError
from bananabatch.wiring import build_runtime

PRO = "gemini-3-pro-image"
FLASH = "gemini-3.1-flash-image"


class Line:
    def __init__(
        self, priority: str = "bulk", *, size: str = "4K", model: str = PRO, third: bool = True
    ) -> None:
        self.model = model
        self.image_size = size
        self.quality = None
        self.priority = priority
        self.allow_third_party = third


def deployment(price: object = None, **changes: object) -> Settings:
    values: dict[str, object] = {
        "async_lanes": ("replicate",),
        "allow_third_party": True,
        "replicate_api_token": "r8_x",
        "replicate_usd_per_image": price,
    }
    values.update(changes)
    return Settings.model_validate(values)


# --- the setting ---------------------------------------------------------------------------


def test_the_price_is_read_as_one_number_or_by_size_tier_and_written_back_alike() -> None:
    one = Settings.from_env({ENV_REPLICATE_USD_PER_IMAGE: "0.04"})
    assert one.replicate_usd_per_image == 0.04
    tiers = Settings.from_env({ENV_REPLICATE_USD_PER_IMAGE: '{"1K": 0.03, "4K": 0.06}'})
    assert tiers.replicate_usd_per_image == {"1K": 0.03, "4K": 0.06}
    for settings in (one, tiers, Settings.from_env({ENV_REPLICATE_USD_PER_IMAGE: "0"})):
        assert Settings.from_env(settings.to_env()) == settings
    assert ENV_REPLICATE_USD_PER_IMAGE not in Settings().to_env()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("-0.01", "must be a number >= 0; found -0.01"),
        ('{"1K": -1}', "a price at 1K must be a number >= 0"),
        ('{"8K": 0.1}', "unknown size tier 8K: expected 512, 1K, 2K, 4K"),
        ("{}", "names at least one tier"),
        ("NaN", "must be a number >= 0"),
        ("true", "expected a price in USD; found True"),
        ("cheap", "expected a price in USD or a JSON object of prices by size tier"),
        ('{"1K": "x"}', "expected a price in USD at 1K"),
    ],
)
def test_an_unusable_price_is_refused_at_load_naming_the_variable(raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({ENV_REPLICATE_USD_PER_IMAGE: raw})
    assert ENV_REPLICATE_USD_PER_IMAGE in str(caught.value)
    assert fragment in str(caught.value)


# --- routing ---------------------------------------------------------------------------------


def test_bulk_lines_go_to_replicate_when_its_set_price_is_below_batch() -> None:
    # Batch: $0.12 a 4K Nano Banana Pro image; the table's Replicate figure is $0.30.
    assert router_for(deployment(), PriceBook()).route(Line()).lanes == ("batch",)
    bulk = router_for(deployment(0.04), PriceBook()).route(Line())
    assert (bulk.kind, bulk.lanes, bulk.usd) == (LaneKind.ASYNC, ("replicate",), 0.04)
    # Still only bulk lines, and only those that allow a third party.
    assert router_for(deployment(0.04), PriceBook()).route(Line("normal")).lanes == ("batch",)
    assert router_for(deployment(0.04), PriceBook()).route(Line(third=False)).lanes == ("batch",)
    # A set price above batch keeps the lines on batch.
    assert router_for(deployment(0.5), PriceBook()).route(Line()).lanes == ("batch",)


def test_a_price_by_size_applies_to_the_sizes_it_names_and_the_table_to_the_others() -> None:
    router = router_for(deployment({"1K": 0.02}), PriceBook())
    assert router.route(Line(size="1K")).lanes == ("replicate",)
    assert router.route(Line(size="1K")).usd == 0.02
    # 4K: the table's $0.30, above batch.
    assert router.route(Line(size="4K")).lanes == ("batch",)


def test_with_a_set_price_every_model_replicate_hosts_is_offered() -> None:
    # The table has no Replicate figure for Nano Banana 2: never routed on an unknown price.
    assert router_for(deployment(), PriceBook()).route(Line(model=FLASH)).lanes == ("batch",)
    flash = router_for(deployment(0.01), PriceBook()).route(Line(model=FLASH, size="1K"))
    assert (flash.lanes, flash.usd) == (("replicate",), 0.01)
    # A deployment's own model names say which models it hosts.
    only_pro = deployment(0.01, replicate_models={PRO: "google/nano-banana-pro"})
    assert router_for(only_pro, PriceBook()).route(Line(model=FLASH)).lanes == ("batch",)


def test_the_price_says_where_it_comes_from_and_only_the_tables_is_warned_about() -> None:
    assert price_source(deployment(), "replicate") == "dated table, read 2026-12-07"
    assert price_source(deployment(0.04), "replicate") == (
        f"deployment price $0.0400 per image ({ENV_REPLICATE_USD_PER_IMAGE})"
    )
    assert price_source(deployment({"1K": 0.03}), "replicate") == (
        f"deployment price 1K $0.0300 ({ENV_REPLICATE_USD_PER_IMAGE}); other sizes: dated "
        "table, read 2026-12-07"
    )
    assert price_source(deployment(), "batch") is None
    [warned] = flat_price_warnings(["batch", "replicate"], deployment())
    assert warned.startswith("replicate: priced at the table's dated figure")
    assert ENV_REPLICATE_USD_PER_IMAGE in warned
    assert flat_price_warnings(["batch", "replicate"], deployment(0.04)) == []


# --- the estimate and doctor -------------------------------------------------------------------


def _estimate(tmp_path: Path, settings: Settings) -> dict[str, object]:
    rt = build_runtime(
        settings.model_copy(update={"backend": Backend.LOCAL, "local_root": tmp_path / "s"}),
        with_provider=False,
    )
    path = tmp_path / "bulk.jsonl"
    lines = [
        {"key": f"k{i}", "prompt": "a sneaker", "model": PRO, "image_size": "4K"}
        | {"priority": "bulk", "allow_third_party": True}
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return estimate_file(rt, path).to_doc()


def test_the_estimate_routes_bulk_lines_to_replicate_at_the_set_price_and_says_so(
    tmp_path: Path,
) -> None:
    doc = _estimate(tmp_path, deployment(0.04))
    hybrid = doc["hybrid"]
    assert isinstance(hybrid, dict)
    assert hybrid["lanes"] == [
        {
            "lane": "replicate",
            "kind": "async",
            "lines": 4,
            "usd": 0.16,
            "price_source": f"deployment price $0.0400 per image ({ENV_REPLICATE_USD_PER_IMAGE})",
        }
    ]
    assert not any("replicate" in str(w) for w in doc["price_warnings"])  # type: ignore[attr-defined]


def test_doctor_shows_replicates_price_and_its_source(tmp_path: Path) -> None:
    [ok] = [c for c in lane_checks(deployment(0.04)) if c.name == "lane replicate"]
    assert ok.verdict == "ok"
    assert f"deployment price $0.0400 per image ({ENV_REPLICATE_USD_PER_IMAGE})" in ok.detail
    [warn] = [c for c in lane_checks(deployment()) if c.name == "lane replicate"]
    assert warn.verdict == "warn"
    assert "dated table, read 2026-12-07" in warn.detail
    assert f"set {ENV_REPLICATE_USD_PER_IMAGE} if you pay less" in warn.detail


def test_an_async_lane_whose_breaker_is_open_is_not_offered_so_bulk_lines_go_to_batch() -> None:
    router = router_for(deployment(0.04), PriceBook(), shut={"replicate"})
    assert [o.name for o in router.lanes] == ["batch", "gemini-standard"]
    assert router.route(Line()).lanes == ("batch",)
