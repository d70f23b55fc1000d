from __future__ import annotations

from datetime import date

import pytest

from bananabatch.core.catalog import (
    BASE_RATIOS,
    CATALOG_AS_OF,
    DEFAULT_MODEL,
    MODELS,
    BatchSupport,
    Status,
    canonical_model,
    effective_size,
    expected_result_bytes,
    image_dimensions,
    lifecycle_problem,
    model_spec,
    model_warnings,
)

ALL_RATIOS = [r for spec in MODELS for r in spec.aspect_ratios]
ALL_SIZES = ["512", "1K", "2K", "4K"]


def test_the_catalog_holds_the_five_image_models_of_the_december_sheet() -> None:
    assert [spec.model_id for spec in MODELS] == [
        "gemini-2.5-flash-image",
        "gemini-3-pro-image",
        "gemini-3.1-flash-image",
        "gemini-3.1-flash-lite-image",
        "gemini-nano-banana-2.1",
    ]


def test_every_model_carries_a_sourced_lifecycle_and_batch_support() -> None:
    for spec in MODELS:
        assert spec.lifecycle.source, spec.model_id
        assert spec.batch_source, spec.model_id
        assert spec.lifecycle.released is not None, spec.model_id
        life = spec.lifecycle
        if spec.status_on(CATALOG_AS_OF) in (Status.DEPRECATED, Status.SHUT_DOWN):
            assert life.replacement is not None, spec.model_id
            assert model_spec(life.replacement) is not None, spec.model_id


def test_lifecycles_on_the_day_the_catalog_was_checked() -> None:
    status = {spec.model_id: spec.status_on(CATALOG_AS_OF) for spec in MODELS}
    assert status == {
        "gemini-2.5-flash-image": Status.SHUT_DOWN,
        "gemini-3-pro-image": Status.GA,
        "gemini-3.1-flash-image": Status.DEPRECATED,
        "gemini-3.1-flash-lite-image": Status.GA,
        "gemini-nano-banana-2.1": Status.GA,
    }
    support = {spec.model_id: spec.batch_support for spec in MODELS}
    assert support["gemini-nano-banana-2.1"] is BatchSupport.UNKNOWN
    assert support["gemini-3.1-flash-lite-image"] is BatchSupport.YES


def test_a_lifecycle_is_dated_so_the_same_model_was_fine_before_its_shutdown() -> None:
    spec = model_spec("gemini-2.5-flash-image")
    assert spec is not None
    assert spec.status_on(date(2026, 9, 1)) is Status.GA
    assert spec.status_on(date(2026, 9, 18)) is Status.RESTRICTED
    assert lifecycle_problem("gemini-2.5-flash-image", date(2026, 10, 1)) is None
    problem = lifecycle_problem("nano-banana", date(2026, 10, 2))
    assert problem is not None
    assert "shut down on 2026-10-02" in problem
    assert "use gemini-3.1-flash-lite-image instead" in problem


def test_the_default_model_is_ga_with_documented_batch_support_and_the_cheapest_such() -> None:
    spec = model_spec(DEFAULT_MODEL)
    assert spec is not None
    assert spec.status_on(CATALOG_AS_OF) is Status.GA
    assert spec.batch_support is BatchSupport.YES
    from bananabatch.core.pricing import Lane, PriceBook

    book = PriceBook()
    documented = [
        s
        for s in MODELS
        if s.batch_support is BatchSupport.YES and s.status_on(CATALOG_AS_OF) is Status.GA
    ]
    cheapest = min(documented, key=lambda s: book.image_price(s.model_id, None, Lane.BATCH))
    assert cheapest.model_id == DEFAULT_MODEL


def test_the_default_model_is_set_in_one_place() -> None:
    from bananabatch import config

    assert config.DEFAULT_MODEL is DEFAULT_MODEL
    assert config.Settings().default_model == DEFAULT_MODEL


def test_warnings_name_deprecated_models_and_undocumented_batch_support() -> None:
    warnings = model_warnings(
        ["models/gemini-3.1-flash-image", "gemini-nano-banana-2.1", DEFAULT_MODEL],
        CATALOG_AS_OF,
    )
    assert len(warnings) == 2
    assert warnings[0].startswith("gemini-3.1-flash-image is deprecated since 2026-10-06")
    assert "move to gemini-nano-banana-2.1" in warnings[0]
    assert warnings[1].startswith("gemini-nano-banana-2.1: Batch API support is not documented")
    assert model_warnings([DEFAULT_MODEL, "gemini-3-pro-image"], CATALOG_AS_OF) == []
    assert model_warnings(["gemini-3.1-flash-image"], date(2026, 6, 1)) == []


def test_the_new_models_sizes_ratios_and_uncertain_token_counts() -> None:
    lite = model_spec("gemini-3.1-flash-lite-image")
    nb21 = model_spec("gemini-nano-banana-2.1")
    assert lite is not None
    assert nb21 is not None
    assert lite.image_sizes == ("1K",)
    assert nb21.image_sizes == ("1K", "2K", "4K")  # no 512
    assert len(lite.aspect_ratios) == len(nb21.aspect_ratios) == 14
    assert nb21.uncertain_tokens == ("2K", "4K")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("gemini-3-pro-image", "gemini-3-pro-image"),
        ("gemini-3-pro-image-preview", "gemini-3-pro-image"),
        ("models/gemini-3-pro-image-preview", "gemini-3-pro-image"),
        ("publishers/google/models/gemini-3.1-flash-image", "gemini-3.1-flash-image"),
        ("nano-banana", "gemini-2.5-flash-image"),
        ("nano-banana-2", "gemini-3.1-flash-image"),
        ("models/unknown-model", "unknown-model"),
    ],
)
def test_model_names_are_canonicalised(name: str, canonical: str) -> None:
    assert canonical_model(name) == canonical


def test_an_unknown_model_has_no_spec() -> None:
    assert model_spec("imagen-9") is None


def test_image_tokens_match_the_reference_table() -> None:
    tokens = {spec.model_id: dict(spec.image_tokens) for spec in MODELS}
    assert tokens == {
        "gemini-2.5-flash-image": {"1K": 1290},
        "gemini-3-pro-image": {"1K": 1120, "2K": 1120, "4K": 2000},
        "gemini-3.1-flash-image": {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
        "gemini-3.1-flash-lite-image": {"1K": 1120},
        "gemini-nano-banana-2.1": {"1K": 1120, "2K": 1680, "4K": 2520},
    }


def test_every_offered_size_has_a_token_count_and_the_default_is_offered() -> None:
    for spec in MODELS:
        for size in spec.image_sizes:
            assert size in spec.image_tokens
        assert spec.default_size in spec.image_tokens
        assert spec.image_sizes == () or spec.default_size in spec.image_sizes


def test_only_the_newest_model_offers_the_extreme_ratios() -> None:
    flash = model_spec("gemini-3.1-flash-image")
    pro = model_spec("gemini-3-pro-image")
    assert flash is not None
    assert pro is not None
    assert set(flash.aspect_ratios) - set(pro.aspect_ratios) == {"1:4", "4:1", "1:8", "8:1"}
    assert pro.aspect_ratios == BASE_RATIOS


def test_a_single_size_model_always_uses_its_default_size() -> None:
    spec = model_spec("gemini-2.5-flash-image")
    assert spec is not None
    assert effective_size(spec, "4K") == "1K"
    assert effective_size(spec, None) == "1K"
    multi = model_spec("gemini-3-pro-image")
    assert multi is not None
    assert effective_size(multi, "4K") == "4K"
    assert effective_size(multi, None) == "1K"


@pytest.mark.parametrize("ratio", sorted(set(ALL_RATIOS)))
@pytest.mark.parametrize("size", ALL_SIZES)
def test_image_dimensions_keep_the_ratio_and_about_the_tier_pixel_count(
    ratio: str, size: str
) -> None:
    width, height = image_dimensions(ratio, size)
    assert width % 16 == 0
    assert height % 16 == 0
    w, h = (int(x) for x in ratio.split(":"))
    assert abs(width / height - w / h) / (w / h) < 0.12
    edge = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}[size]
    assert abs(width * height - edge * edge) / (edge * edge) < 0.1


def test_default_dimensions_are_a_1k_square() -> None:
    assert image_dimensions(None, None) == (1024, 1024)
    assert image_dimensions("16:9", "2K") == (2736, 1536)


def test_expected_result_bytes_grow_with_the_size_tier() -> None:
    sizes = [expected_result_bytes("gemini-3.1-flash-image", s) for s in ALL_SIZES]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == 4
    # A single-size model is planned at its one size, whatever was asked.
    assert expected_result_bytes("gemini-2.5-flash-image", "4K") == expected_result_bytes(
        "gemini-2.5-flash-image", "1K"
    )
    # Unknown sizes are planned at the largest, never the smallest.
    assert expected_result_bytes("gemini-3-pro-image", "16K") == expected_result_bytes(
        "gemini-3-pro-image", "4K"
    )
