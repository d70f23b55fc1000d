"""gpt-image prices (issue 19 part 3) and batches within OpenAI's limits (part 4): per model,
quality and size, dated and sourced; half price in batch; a file mixing providers planned
into batches of one provider each, OpenAI's within 50,000 requests and 200 MB."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bananabatch.config import Settings
from bananabatch.core.catalog import openai_tier, provider_of
from bananabatch.core.planning import (
    OPENAI_MAX_INPUT_BYTES,
    OPENAI_MAX_REQUESTS,
    BatchPlanner,
    PlanLimits,
    batch_key,
    key_model,
)
from bananabatch.core.price_table import PRICE_TABLE
from bananabatch.core.pricing import Lane, PriceBook
from bananabatch.core.records import BatchRecord
from bananabatch.core.results import Usage
from bananabatch.core.states import BatchState
from bananabatch.errors import PriceUnknown

BOOK = PriceBook()


@pytest.mark.parametrize(
    ("quality", "standard", "batch"),
    [("low", 0.006, 0.003), ("medium", 0.053, 0.0265), ("high", 0.211, 0.1055)],
)
def test_gpt_image_2_square_prices_are_the_model_pages_and_batch_is_half(
    quality: str, standard: float, batch: float
) -> None:
    assert BOOK.image_price("gpt-image-2", "1024x1024", Lane.STANDARD, quality=quality) == (
        pytest.approx(standard)
    )
    assert BOOK.image_price("gpt-image-2", "1024x1024", Lane.BATCH, quality=quality) == (
        pytest.approx(batch)
    )


def test_every_gpt_image_figure_is_dated_and_sourced_and_the_inferred_ones_say_so() -> None:
    entries = [e for e in PRICE_TABLE if e.model.startswith("gpt-image")]
    assert {e.model for e in entries} == {
        "gpt-image-2",
        "gpt-image-2.5-sunburst",
        "gpt-image-2.5-flare",
    }
    for entry in entries:
        for tier, figure in entry.per_image.items():
            assert figure.as_of == "2026-12-07"
            assert "field-2026-12.md §3.2" in figure.source
            square = tier.endswith(" 1024x1024")
            assert figure.uncertain == (not square or entry.model != "gpt-image-2"), tier


def test_the_estimate_follows_quality_and_size() -> None:
    def estimate(size: str, quality: str) -> float:
        return BOOK.estimate_request("gpt-image-2", size, Lane.BATCH, quality=quality)

    assert estimate("1024x1024", "low") < estimate("1024x1024", "medium")
    assert estimate("1024x1024", "medium") < estimate("1024x1024", "high")
    assert estimate("1536x1024", "high") > estimate("1024x1024", "high")
    # No quality: the catalog's default (medium), the one intake writes.
    assert BOOK.estimate_request("gpt-image-2", None, Lane.BATCH) == estimate("1024x1024", "medium")
    # The per-image figure and the token estimate agree within a rounding of the page.
    assert estimate("1024x1024", "medium") == pytest.approx(0.0265, rel=0.01)


def test_the_actual_cost_comes_from_the_lines_usage_at_the_batch_rate() -> None:
    usage = Usage(
        prompt_tokens=20,
        image_output_tokens=1756,
        text_output_tokens=0,
        thought_tokens=0,
        total_tokens=1776,
    )
    cost = BOOK.cost_of_usage("gpt-image-2", Lane.BATCH, usage)
    assert cost == pytest.approx((1756 * 15.0 + 20 * 2.5) / 1_000_000)
    assert BOOK.cost_of_usage("gpt-image-2", Lane.STANDARD, usage) == pytest.approx(2 * cost)


def test_an_unknown_gpt_image_tier_is_a_price_unknown_never_zero() -> None:
    with pytest.raises(PriceUnknown):
        BOOK.image_price("gpt-image-2", "4096x4096", Lane.BATCH, quality="low")


def test_a_price_override_reaches_a_gpt_image_tier() -> None:
    book = PriceBook(
        overrides={"gpt-image-2": {f"batch.per_image.{openai_tier('low', '1024x1024')}": 0.001}}
    )
    assert book.image_price("gpt-image-2", "1024x1024", Lane.BATCH, quality="low") == 0.001


def limits(requests: int = 100_000, request_bytes: int = 10**9) -> PlanLimits:
    return PlanLimits(
        max_requests=requests, max_request_bytes=request_bytes, max_output_bytes=10**15
    )


def test_openai_batches_stay_within_50000_requests_whatever_the_settings_allow() -> None:
    settings = Settings(max_requests_per_batch=120_000, max_batch_bytes=10**9)
    planner = BatchPlanner(
        PlanLimits.from_settings(settings), limits_for=PlanLimits.per_provider(settings)
    )
    stretches = planner.place_run("gpt-image-2", [10] * 120_000, 0)
    planned = [*(c for _, _, closed in stretches for c in closed), *planner.finish()]
    assert [b.request_count for b in planned] == [OPENAI_MAX_REQUESTS, OPENAI_MAX_REQUESTS, 20_000]
    assert {b.model for b in planned} == {"gpt-image-2"}


def test_openai_batches_stay_within_200_mb_of_input() -> None:
    planner = BatchPlanner(limits(), limits_for=lambda model: limits().within(provider_of(model)))
    line = 1_000_000
    planned = [c for _ in range(450) for c in planner.place("gpt-image-2", line, 0).closed]
    planned += planner.finish()
    assert planned[0].request_bytes <= OPENAI_MAX_INPUT_BYTES
    assert [b.request_count for b in planned] == [200, 200, 50]


def test_gemini_batches_keep_the_deployments_limits() -> None:
    settings = Settings(max_requests_per_batch=120_000, max_batch_bytes=10**9)
    per = PlanLimits.per_provider(settings)
    assert per("gemini-3-pro-image") == PlanLimits.from_settings(settings)
    assert per("gpt-image-2").max_requests == OPENAI_MAX_REQUESTS
    assert per("gpt-image-2").max_request_bytes == OPENAI_MAX_INPUT_BYTES


def test_a_mixed_file_makes_batches_of_one_provider_each_and_edits_apart() -> None:
    planner = BatchPlanner(limits(requests=2))
    order = [
        ("gemini-3-pro-image", False),
        ("gpt-image-2", False),
        ("gpt-image-2", True),
        ("gemini-3-pro-image", True),
        ("gpt-image-2", False),
        ("gpt-image-2", True),
    ]
    placed = [
        planner.place(batch_key(model, edits=edits), 10, 0).batch_index for model, edits in order
    ]
    planned = planner.finish()
    assert placed == [1, 2, 3, 1, 2, 3]
    assert [(b.index, b.model, b.request_count) for b in planned] == [
        (1, "gemini-3-pro-image", 2),
        (2, "gpt-image-2", 2),
        (3, "gpt-image-2", 2),
    ]
    # Gemini takes references in any batch of its model; OpenAI runs one endpoint a batch.
    assert batch_key("gemini-3-pro-image", edits=True) == "gemini-3-pro-image"
    assert key_model(batch_key("gpt-image-2", edits=True)) == "gpt-image-2"


@pytest.mark.parametrize(
    ("model", "fallback"),
    [("gemini-3.1-flash-image", "gpt-image-2"), ("gpt-image-2", "gpt-image-2.5-flare")],
)
def test_a_batch_never_falls_back_across_providers_or_within_openai(
    tmp_path: Path, model: str, fallback: str
) -> None:
    # Its request file is in its provider's format, and an OpenAI line names its model in
    # its body: moving the batch's model would send what was not asked, or fail.
    from bananabatch.config import Backend
    from bananabatch.pipeline.model_gone import _servable_fallback
    from bananabatch.wiring import build_runtime

    rt = build_runtime(
        Settings(backend=Backend.LOCAL, local_root=tmp_path, fallback_model=fallback),
        with_provider=False,
    )
    batch = BatchRecord(
        batch_id="j-b0001-a1",
        job_id="j",
        index=1,
        state=BatchState.SUBMITTING,
        model=model,
        display_name="bananabatch-j-b0001-a1",
        request_object="jobs/j/requests/batch-0001.jsonl",
        request_count=1,
        created_at=datetime(2026, 12, 7, tzinfo=UTC),
        updated_at=datetime(2026, 12, 7, tzinfo=UTC),
    )
    why = _servable_fallback(rt, batch, fallback)
    assert isinstance(why, str)
    assert "its requests were staged for that model" in why
    assert isinstance(
        _servable_fallback(
            rt,
            batch.model_copy(update={"model": "gemini-3.1-flash-image"}),
            "gemini-3.1-flash-lite-image",
        ),
        tuple,
    )
