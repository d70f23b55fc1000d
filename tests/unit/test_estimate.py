"""The pure estimate of a file: per model and size, standard vs batch vs after dedup, and
the expected cost per accepted image corrected by earlier jobs' outcomes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bananabatch.core.catalog import model_spec
from bananabatch.core.estimate import (
    FileEstimate,
    FileEstimator,
    ObservedRates,
    cache_enabled_for,
    expected_cost_per_accepted_image,
    observed_rates,
)
from bananabatch.core.intake import AcceptedLine, LineParser, content_hash
from bananabatch.core.pricing import Lane, PriceBook
from bananabatch.core.results import usage_from_metadata
from bananabatch.emulator.generate import parse_request, usage_for

BOOK = PriceBook()
MODEL = "gemini-3.1-flash-image"


def _lines(*docs: dict[str, Any], model: str = MODEL) -> list[AcceptedLine]:
    parser = LineParser(default_model=model)
    out = []
    for n, doc in enumerate(docs, start=1):
        parsed = parser.parse(n, json.dumps(doc).encode())
        assert isinstance(parsed, AcceptedLine), parsed
        out.append(parsed)
    return out


def _estimate(
    *docs: dict[str, Any], cached: frozenset[str] = frozenset(), on: bool = True
) -> FileEstimate:
    est = FileEstimator(BOOK, is_cached=lambda h: h in cached, cache_enabled=on)
    for line in _lines(*docs):
        est.add(line)
    return est.result()


def test_lines_are_grouped_by_model_and_effective_size_tier() -> None:
    result = _estimate(
        {"key": "a", "prompt": "one"},
        {"key": "b", "prompt": "two", "image_size": "2K"},
        {"key": "c", "prompt": "three", "model": "gemini-3-pro-image"},
    )
    assert [(g.model, g.image_size, g.lines) for g in result.groups] == [
        ("gemini-3-pro-image", "1K", 1),
        ("gemini-3.1-flash-image", "1K", 1),
        ("gemini-3.1-flash-image", "2K", 1),
    ]


def test_the_batch_figure_is_half_the_standard_one_for_batch_lines() -> None:
    result = _estimate({"prompt": "a red apple"}, {"prompt": "a green pear"})
    assert result.batch_usd == pytest.approx(result.standard_usd / 2, rel=1e-9)
    assert result.after_dedup_usd == pytest.approx(result.batch_usd)


def test_urgent_lines_are_charged_at_the_standard_price() -> None:
    result = _estimate({"prompt": "now", "priority": "urgent"})
    assert result.groups[0].urgent_lines == 1
    assert result.batch_usd == pytest.approx(result.standard_usd)


def test_a_repeat_within_the_file_costs_nothing_after_dedup() -> None:
    result = _estimate({"key": "a", "prompt": "same"}, {"key": "b", "prompt": "same"})
    group = result.groups[0]
    assert group.duplicate_lines == 1
    assert result.after_dedup_usd == pytest.approx(result.batch_usd / 2)


def test_a_request_already_in_the_cache_costs_nothing_after_dedup() -> None:
    (line,) = _lines({"prompt": "cached one"})
    result = _estimate({"prompt": "cached one"}, cached=frozenset({content_hash(line)}))
    assert result.groups[0].cached_lines == 1
    assert result.after_dedup_usd == 0.0
    assert result.to_doc()["totals"]["dedup_saved_usd"] == pytest.approx(result.batch_usd, 1e-5)


def test_a_line_or_a_job_that_opts_out_of_the_cache_is_paid_in_full() -> None:
    per_line = _estimate({"prompt": "same", "cache": False}, {"prompt": "same", "cache": False})
    assert per_line.after_dedup_usd == pytest.approx(per_line.batch_usd)
    per_job = _estimate({"prompt": "same"}, {"prompt": "same"}, on=False)
    assert per_job.after_dedup_usd == pytest.approx(per_job.batch_usd)
    assert not cache_enabled_for({"bananabatch-cache": "off"})
    assert cache_enabled_for({})


def test_rejected_lines_are_counted_but_not_priced() -> None:
    parser = LineParser(default_model=MODEL)
    est = FileEstimator(BOOK)
    for n, raw in enumerate([b'{"prompt": "ok"}', b"not json"], start=1):
        parsed = parser.parse(n, raw)
        assert parsed is not None
        est.add(parsed)
    result = est.result()
    assert (result.lines, result.accepted, result.rejected) == (2, 1, 1)


def test_observed_rates_come_from_finished_jobs_succeeded_blocked_and_failed_counts() -> None:
    rates = observed_rates(
        [
            {"SUCCEEDED": 7, "BLOCKED": 2, "FAILED": 1, "REJECTED": 5, "CACHED": 9},
            {"REJECTED": 3},
        ]
    )
    assert rates == ObservedRates(jobs=1, attempted=10, blocked=2, failed=1)
    assert rates.accept_rate == pytest.approx(0.8)
    assert rates.regeneration_rate == pytest.approx(0.1)
    assert observed_rates([{"REJECTED": 2}]) is None


def test_expected_cost_per_accepted_image_is_price_times_regeneration_over_acceptance() -> None:
    rates = ObservedRates(jobs=1, attempted=10, blocked=2, failed=1)
    assert expected_cost_per_accepted_image(0.04, rates) == pytest.approx(0.04 * 1.1 / 0.8)
    assert expected_cost_per_accepted_image(0.04, None) == pytest.approx(0.04)
    never = ObservedRates(jobs=1, attempted=3, blocked=3, failed=0)
    assert expected_cost_per_accepted_image(0.04, never) is None


def test_the_per_image_figure_of_a_group_uses_the_observed_rates() -> None:
    est = FileEstimator(BOOK)
    for line in _lines({"prompt": "x"}):
        est.add(line)
    rates = ObservedRates(jobs=2, attempted=4, blocked=1, failed=0)
    group = est.result(rates).groups[0]
    assert group.expected_per_accepted_image_usd == pytest.approx(group.batch_usd / 0.75)


@pytest.mark.parametrize("model", ["gemini-3.1-flash-image", "gemini-3-pro-image"])
@pytest.mark.parametrize("size", ["1K", "2K", "4K"])
def test_an_estimate_is_within_one_percent_of_the_emulators_billed_usage(
    model: str, size: str
) -> None:
    prompts = [f"prompt number {i}: a lighthouse at dusk, {i * 'very '}detailed" for i in range(40)]
    docs = [{"prompt": p, "image_size": size, "model": model} for p in prompts]
    lines = _lines(*docs)
    spec = model_spec(model)
    assert spec is not None
    estimated = sum(BOOK.estimate_line(line, Lane.BATCH) for line in lines)
    actual = 0.0
    for line in lines:
        usage = usage_from_metadata(
            usage_for(spec, parse_request(spec, line.request, batch_model=model))
        )
        assert usage is not None
        actual += BOOK.cost_of_usage(model, Lane.BATCH, usage)
    assert estimated == pytest.approx(actual, rel=0.01)
