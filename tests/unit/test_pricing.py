from __future__ import annotations

import math
import re
from typing import Any

import pytest

from bananabatch.core.catalog import MODELS, model_spec
from bananabatch.core.intake import AcceptedLine, LineParser
from bananabatch.core.price_table import PRICE_TABLE, Figure
from bananabatch.core.pricing import Lane, PriceBook, estimate_prompt_tokens
from bananabatch.core.results import Usage
from bananabatch.errors import ConfigError, PermanentError, PriceUnknown

BOOK = PriceBook()


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


# --- the table ------------------------------------------------------------------------------


def test_every_catalog_model_is_priced_in_both_lanes() -> None:
    priced = {(e.model, e.lane) for e in PRICE_TABLE}
    for spec in MODELS:
        assert (spec.model_id, "standard") in priced
        assert (spec.model_id, "batch") in priced


def test_every_figure_is_dated_and_sourced() -> None:
    figures: list[Figure] = []
    for entry in PRICE_TABLE:
        figures += [entry.image_output_per_1m, entry.input_per_1m, entry.text_output_per_1m]
        figures += list(entry.per_image.values())
    for figure in figures:
        assert figure.usd > 0
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", figure.as_of)
        sources = ("gemini-batch-api.md §8.2", "field-2026-12.md §2", "field-2026-12.md §3.2")
        assert any(source in figure.source for source in sources), figure.source


def test_figures_the_reference_marks_uncertain_are_flagged() -> None:
    by_key = {(e.model, e.lane): e for e in PRICE_TABLE}
    flash = by_key[("gemini-3.1-flash-image", "batch")]
    assert flash.per_image["4K"].uncertain
    assert flash.per_image["512"].uncertain
    assert not flash.per_image["1K"].uncertain
    assert by_key[("gemini-2.5-flash-image", "standard")].text_output_per_1m.uncertain


def test_the_batch_lane_costs_half_of_the_standard_lane() -> None:
    for spec in MODELS:
        std = BOOK.token_rates(spec.model_id, Lane.STANDARD)
        batch = BOOK.token_rates(spec.model_id, Lane.BATCH)
        for s, b in zip(std, batch, strict=True):
            assert close(b, s / 2)


@pytest.mark.parametrize(
    ("model", "size", "lane", "published"),
    [
        ("gemini-2.5-flash-image", None, Lane.STANDARD, 0.039),
        ("gemini-2.5-flash-image", None, Lane.BATCH, 0.0195),
        ("gemini-3-pro-image", "1K", Lane.STANDARD, 0.134),
        ("gemini-3-pro-image", "2K", Lane.STANDARD, 0.134),
        ("gemini-3-pro-image", "4K", Lane.STANDARD, 0.24),
        ("gemini-3-pro-image", "1K", Lane.BATCH, 0.067),
        ("gemini-3-pro-image", "4K", Lane.BATCH, 0.12),
        ("gemini-3.1-flash-image", "512", Lane.STANDARD, 0.045),
        ("gemini-3.1-flash-image", "1K", Lane.STANDARD, 0.067),
        ("gemini-3.1-flash-image", "2K", Lane.STANDARD, 0.101),
        ("gemini-3.1-flash-image", "4K", Lane.STANDARD, 0.151),
        ("gemini-3.1-flash-image", "512", Lane.BATCH, 0.022),
        ("gemini-3.1-flash-image", "2K", Lane.BATCH, 0.050),
        ("gemini-3.1-flash-image", "4K", Lane.BATCH, 0.076),
    ],
)
def test_published_per_image_prices_match_tokens_times_the_token_rate(
    model: str, size: str | None, lane: Lane, published: float
) -> None:
    assert BOOK.image_price(model, size, lane) == published
    spec = model_spec(model)
    assert spec is not None
    tokens = spec.image_tokens[size or spec.default_size]
    image_rate = BOOK.token_rates(model, lane)[0]
    # Google rounds per-image prices to a tenth of a cent or so: 1120 × $120/1M = $0.1344.
    assert abs(tokens * image_rate / 1_000_000 - published) <= 0.0011


def test_the_worked_example_from_the_brief_holds() -> None:
    assert close(1120 * BOOK.token_rates("gemini-3-pro-image", Lane.STANDARD)[0] / 1e6, 0.1344)


def test_the_default_size_is_priced_when_none_is_given() -> None:
    assert BOOK.image_price("gemini-3.1-flash-image", None, Lane.BATCH) == 0.034


def test_an_alias_is_priced_like_its_model() -> None:
    assert BOOK.image_price("nano-banana-pro", "4K", Lane.BATCH) == 0.12
    assert BOOK.image_price("models/gemini-3-pro-image-preview", "4K", Lane.BATCH) == 0.12


# --- unknown prices raise, never zero -------------------------------------------------------


def test_an_unknown_model_has_no_price() -> None:
    with pytest.raises(PriceUnknown, match="imagen-9") as caught:
        BOOK.image_price("imagen-9", "1K", Lane.BATCH)
    assert "gemini-3-pro-image" in str(caught.value)
    assert isinstance(caught.value, PermanentError)
    with pytest.raises(PriceUnknown):
        BOOK.estimate_request("imagen-9", None, Lane.BATCH)
    with pytest.raises(PriceUnknown):
        BOOK.cost_of_usage("imagen-9", Lane.BATCH, Usage(1, 1, 1, 1, 4))
    with pytest.raises(PriceUnknown):
        BOOK.sources("imagen-9")


def test_an_unknown_size_tier_has_no_price() -> None:
    with pytest.raises(PriceUnknown, match="8K"):
        BOOK.image_price("gemini-3-pro-image", "8K", Lane.BATCH)
    with pytest.raises(PriceUnknown, match="8K"):
        BOOK.estimate_request("gemini-3-pro-image", "8K", Lane.BATCH)


def test_an_unknown_lane_has_no_price() -> None:
    with pytest.raises(PriceUnknown, match="flex"):
        BOOK.image_price("gemini-3-pro-image", "1K", "flex")  # type: ignore[arg-type]


def test_a_book_without_a_lane_refuses_rather_than_charging_nothing() -> None:
    book = PriceBook(entries=[e for e in PRICE_TABLE if e.lane == "standard"])
    assert book.image_price("gemini-3-pro-image", "1K", Lane.STANDARD) == 0.134
    with pytest.raises(PriceUnknown, match="batch"):
        book.estimate_request("gemini-3-pro-image", "1K", Lane.BATCH)


# --- estimates and actual cost --------------------------------------------------------------


def typical_extra_tokens(model: str) -> int:
    spec = model_spec(model)
    assert spec is not None
    return spec.typical_text_tokens + spec.typical_thought_tokens


def test_an_estimate_is_image_tokens_at_the_image_rate_plus_the_prompt_at_the_input_rate() -> None:
    extra = typical_extra_tokens("gemini-3-pro-image")
    got = BOOK.estimate_request("gemini-3-pro-image", "4K", Lane.BATCH, prompt_tokens=1000)
    assert close(got, (2000 * 60 + extra * 6 + 1000 * 1.00) / 1e6)
    extra = typical_extra_tokens("gemini-3.1-flash-image")
    got = BOOK.estimate_request("gemini-3.1-flash-image", "2K", Lane.STANDARD)
    assert close(got, (1680 * 60 + extra * 3) / 1e6)


def test_an_estimate_counts_the_models_typical_text_and_thinking_tokens() -> None:
    without = PriceBook(overrides={"gemini-3-pro-image": {"batch.text_output_per_1m": 0.0}})
    with_text = PriceBook(overrides={"gemini-3-pro-image": {"batch.text_output_per_1m": 1e6}})
    difference = with_text.estimate_request(
        "gemini-3-pro-image", "1K", Lane.BATCH
    ) - without.estimate_request("gemini-3-pro-image", "1K", Lane.BATCH)
    # At $1 per token, the difference is the number of typical text and thinking tokens.
    assert close(difference, typical_extra_tokens("gemini-3-pro-image"))


def test_the_cost_of_usage_bills_each_kind_of_token_at_its_rate() -> None:
    usage = Usage(
        prompt_tokens=100,
        image_output_tokens=1120,
        text_output_tokens=16,
        thought_tokens=280,
        total_tokens=1516,
    )
    got = BOOK.cost_of_usage("gemini-3.1-flash-image", Lane.BATCH, usage)
    assert close(got, (1120 * 30 + (16 + 280) * 1.50 + 100 * 0.25) / 1e6)
    assert close(BOOK.cost_of_usage("gemini-3.1-flash-image", Lane.STANDARD, usage), 2 * got)


def test_an_accepted_line_is_estimated_from_its_whole_prompt() -> None:
    line = LineParser(default_model="gemini-3-pro-image").parse(
        1, b'{"prompt": "' + b"x" * 400 + b'", "image_size": "4K"}'
    )
    assert isinstance(line, AcceptedLine)
    expected = BOOK.estimate_request("gemini-3-pro-image", "4K", Lane.BATCH, prompt_tokens=100)
    assert close(BOOK.estimate_line(line, Lane.BATCH), expected)


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2)])
def test_prompt_tokens_are_estimated_at_four_characters_each(text: str, tokens: int) -> None:
    assert estimate_prompt_tokens(text) == tokens


# --- overrides ------------------------------------------------------------------------------


def test_a_lane_multiplier_discounts_only_that_model_and_lane() -> None:
    book = PriceBook(overrides={"gemini-3-pro-image": {"batch_multiplier": 0.8}})
    assert close(book.image_price("gemini-3-pro-image", "1K", Lane.BATCH), 0.067 * 0.8)
    assert book.image_price("gemini-3-pro-image", "1K", Lane.STANDARD) == 0.134
    assert book.image_price("gemini-3.1-flash-image", "1K", Lane.BATCH) == 0.034
    assert close(book.token_rates("gemini-3-pro-image", Lane.BATCH)[0], 48.0)


def test_multipliers_for_all_models_and_one_model_combine() -> None:
    book = PriceBook(
        overrides={"*": {"multiplier": 0.5}, "nano-banana-pro": {"standard_multiplier": 0.5}}
    )
    assert close(book.image_price("gemini-3-pro-image", "4K", Lane.STANDARD), 0.24 * 0.25)
    assert close(book.image_price("gemini-3-pro-image", "4K", Lane.BATCH), 0.12 * 0.5)
    assert close(book.image_price("gemini-2.5-flash-image", None, Lane.BATCH), 0.0195 * 0.5)


def test_an_outright_value_replaces_a_figure_and_ignores_multipliers() -> None:
    book = PriceBook(
        overrides={
            "*": {"multiplier": 0.5, "batch.input_per_1m": 9.0},
            "gemini-3.1-flash-image": {
                "batch.image_output_per_1m": 25.0,
                "batch.per_image.1K": 0.03,
            },
        }
    )
    assert book.token_rates("gemini-3.1-flash-image", Lane.BATCH) == (25.0, 9.0, 0.75)
    assert book.image_price("gemini-3.1-flash-image", "1K", Lane.BATCH) == 0.03
    assert close(book.image_price("gemini-3.1-flash-image", "2K", Lane.BATCH), 0.025)


def test_a_per_model_outright_value_beats_one_for_all_models() -> None:
    book = PriceBook(
        overrides={
            "gemini-3-pro-image": {"batch.input_per_1m": 1.5},
            "*": {"batch.input_per_1m": 9.0},
        }
    )
    assert book.token_rates("gemini-3-pro-image", Lane.BATCH)[1] == 1.5
    assert book.token_rates("gemini-2.5-flash-image", Lane.BATCH)[1] == 9.0


def test_a_size_tier_override_for_all_models_applies_where_the_tier_exists() -> None:
    book = PriceBook(overrides={"*": {"batch.per_image.512": 0.01}})
    assert book.image_price("gemini-3.1-flash-image", "512", Lane.BATCH) == 0.01


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"imagen-9": {"multiplier": 0.5}}, "unknown model 'imagen-9'"),
        ({"gemini-3-pro-image": {"discount": 0.5}}, "unknown key 'discount'"),
        ({"gemini-3-pro-image": {"flex.input_per_1m": 1.0}}, "unknown key"),
        ({"gemini-3-pro-image": {"batch.per_image.512": 0.01}}, "per_image.4K"),
        ({"*": {"batch.per_image.16K": 0.01}}, "unknown key"),
        ({"gemini-3-pro-image": {"multiplier": -1}}, ">= 0"),
        ({"gemini-3-pro-image": {"multiplier": float("inf")}}, "finite"),
        ({"gemini-3-pro-image": {"multiplier": "0.8"}}, "expected a number"),
        ({"gemini-3-pro-image": {"multiplier": True}}, "expected a number"),
        ({"gemini-3-pro-image": 0.8}, "expected an object"),
    ],
)
def test_a_bad_override_is_a_configuration_error(overrides: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        PriceBook(overrides=overrides)


def test_sources_name_the_date_and_source_of_every_figure_and_show_overrides() -> None:
    plain = BOOK.sources("gemini-3-pro-image")
    figures = {(s.lane, s.figure) for s in plain}
    assert (Lane.BATCH, "image_output_per_1m") in figures
    assert (Lane.STANDARD, "per_image.4K") in figures
    assert len(plain) == 2 * (3 + 3)
    assert all(s.as_of and s.source for s in plain)

    book = PriceBook(
        overrides={"gemini-3-pro-image": {"batch_multiplier": 0.8, "standard.input_per_1m": 1.0}}
    )
    shown = {(s.lane, s.figure): s for s in book.sources("nano-banana-pro")}
    discounted = shown[(Lane.BATCH, "per_image.1K")]
    assert close(discounted.usd, 0.067 * 0.8)
    assert "0.8" in discounted.source
    outright = shown[(Lane.STANDARD, "input_per_1m")]
    assert (outright.usd, outright.as_of) == (1.0, "configured")
    assert "override" in outright.source
