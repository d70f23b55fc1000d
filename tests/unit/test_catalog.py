from __future__ import annotations

import pytest

from bananabatch.core.catalog import (
    BASE_RATIOS,
    MODELS,
    canonical_model,
    effective_size,
    expected_result_bytes,
    image_dimensions,
    model_spec,
)

ALL_RATIOS = [r for spec in MODELS for r in spec.aspect_ratios]
ALL_SIZES = ["512", "1K", "2K", "4K"]


def test_the_catalog_holds_the_three_image_models_of_the_reference() -> None:
    assert [spec.model_id for spec in MODELS] == [
        "gemini-2.5-flash-image",
        "gemini-3-pro-image",
        "gemini-3.1-flash-image",
    ]


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
