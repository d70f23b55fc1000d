"""Measured accept and regeneration rates and the effective cost (core/twotier/rates.py)."""

from __future__ import annotations

import pytest

from bananabatch.core.twotier.rates import (
    RateRow,
    combine,
    decode_rows,
    effective_cost,
    encode_rows,
    rate_lines,
)

LITE = "gemini-3.1-flash-lite-image"


def test_the_effective_cost_is_price_times_one_plus_regeneration_over_accept() -> None:
    row = RateRow("draft", LITE, None, generated=100, first_attempts=80, accepted=60)
    assert row.accept_rate == pytest.approx(0.6)
    assert row.regeneration_rate == pytest.approx(0.25)
    assert effective_cost(0.0168, row) == pytest.approx(0.0168 * 1.25 / 0.6)


def test_without_measurements_the_price_stands_and_never_accepted_is_none() -> None:
    assert effective_cost(0.067, None) == 0.067
    never = RateRow("final", "gemini-3-pro-image", None, 5, 5, 0)
    assert effective_cost(0.067, never) is None


def test_rows_sum_per_model_and_per_template() -> None:
    rows = [
        RateRow("draft", LITE, "hero", 40, 40, 30),
        RateRow("draft", LITE, None, 60, 40, 30),
        RateRow("final", "gemini-3-pro-image", "hero", 12, 10, 10),
    ]
    sums = combine(decode_rows(encode_rows(rows)))
    assert sums[("draft", LITE, None)] == RateRow("draft", LITE, None, 100, 80, 60)
    assert sums[("draft", LITE, "hero")] == RateRow("draft", LITE, "hero", 40, 40, 30)
    [hero, other] = rate_lines(
        [("draft", LITE, "hero", 0.0168), ("draft", LITE, "studio", 0.0168)], sums
    )
    assert hero.row == sums[("draft", LITE, "hero")]
    assert hero.template == "hero"
    # no row for template "studio": the model's figure over every template
    assert other.row == sums[("draft", LITE, None)]
    assert other.template is None
    assert other.describe() == (
        "draft gemini-3.1-flash-lite-image: $0.0168 x (1 + 25% regenerated) / 60% accepted"
        " = $0.0350 per accepted image, measured on 100 images"
    )


def test_a_row_whose_counts_do_not_add_up_is_refused() -> None:
    with pytest.raises(ValueError, match="do not add up"):
        RateRow.from_doc(
            {"stage": "draft", "model": LITE, "generated": 3, "first_attempts": 4, "accepted": 1}
        )
    with pytest.raises(ValueError, match="expected a count"):
        RateRow.from_doc(
            {"stage": "draft", "model": LITE, "generated": -1, "first_attempts": 0, "accepted": 0}
        )
