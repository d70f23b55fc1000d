"""Intake, config and estimates read the dated catalog: shut-down models are rejected with
their replacement named, Vertex lines are held to 1K, standard keys are refused, and stale
prices are said to be stale."""

from __future__ import annotations

from datetime import date

import pytest

from bananabatch import config
from bananabatch.config import ProviderKind, Settings
from bananabatch.core.catalog import CATALOG_AS_OF, DEFAULT_MODEL
from bananabatch.core.intake import AcceptedLine, LineParser, RejectedLine
from bananabatch.core.pricing import PriceBook, price_warnings
from bananabatch.errors import ConfigError

DAY = CATALOG_AS_OF


def _parse(line: bytes, *, day: date = DAY, vertex: bool = False, fast: bool = False) -> object:
    parser = LineParser(default_model=DEFAULT_MODEL, today=day, vertex=vertex)
    return parser.parse_fast(2, line) if fast else parser.parse(2, line)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(
    "model", ["gemini-2.5-flash-image", "nano-banana", "models/gemini-2.5-flash-image"]
)
def test_a_line_naming_a_shut_down_model_is_rejected_naming_the_replacement(
    model: str, fast: bool
) -> None:
    got = _parse(b'{"key": "k", "prompt": "x", "model": "%s"}' % model.encode(), fast=fast)
    assert isinstance(got, RejectedLine)
    assert got.field == "model"
    assert "gemini-2.5-flash-image was shut down on 2026-10-02" in got.reason
    assert "use gemini-3.1-flash-lite-image instead" in got.reason


def test_a_native_line_naming_a_shut_down_model_is_rejected_too() -> None:
    line = (
        b'{"key": "n", "model": "gemini-2.5-flash-image", "request": {"contents": '
        b'[{"parts": [{"text": "x"}]}]}}'
    )
    got = _parse(line)
    assert isinstance(got, RejectedLine)
    assert "shut down" in got.reason


def test_the_same_line_was_accepted_before_the_shutdown() -> None:
    got = _parse(b'{"prompt": "x", "model": "gemini-2.5-flash-image"}', day=date(2026, 9, 1))
    assert isinstance(got, AcceptedLine)


def test_a_shut_down_default_model_rejects_lines_relying_on_it_and_says_so() -> None:
    parser = LineParser(default_model="gemini-2.5-flash-image", today=DAY)
    got = parser.parse(3, b'{"prompt": "x"}')
    assert isinstance(got, RejectedLine)
    assert "(the job's default model)" in got.reason
    assert "gemini-3.1-flash-lite-image" in got.reason


def test_a_deprecated_model_is_accepted_and_listed_among_the_models_used() -> None:
    parser = LineParser(default_model=DEFAULT_MODEL, today=DAY)
    assert isinstance(parser.parse_fast(2, b'{"prompt": "a", "model": "nano-banana-2"}'), tuple)
    assert isinstance(parser.parse(3, b'{"prompt": "b", "image_size": "1K"}'), AcceptedLine)
    assert parser.models_used() == {"gemini-3.1-flash-image", DEFAULT_MODEL}


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("size", ["2K", "4K"])
def test_on_vertex_a_2k_or_4k_line_is_rejected_with_the_reason(size: str, fast: bool) -> None:
    line = b'{"prompt": "x", "model": "gemini-3-pro-image", "image_size": "%s"}' % size.encode()
    got = _parse(line, vertex=True, fast=fast)
    assert isinstance(got, RejectedLine)
    assert got.field == "image_size"
    assert "Vertex batch produces 1K images only" in got.reason
    # The same line is fine on the Gemini provider.
    assert not isinstance(_parse(line, fast=fast), RejectedLine)


def test_on_vertex_a_native_2k_line_is_rejected_and_1k_accepted() -> None:
    native = (
        b'{"model": "gemini-3-pro-image", "request": {"contents": [{"parts": [{"text": "x"}]}],'
        b' "generationConfig": {"imageConfig": {"imageSize": "%s"}}}}'
    )
    rejected = _parse(native % b"2K", vertex=True)
    assert isinstance(rejected, RejectedLine)
    assert "Vertex" in rejected.reason
    assert isinstance(_parse(native % b"1K", vertex=True), AcceptedLine)


def test_the_lite_model_refuses_every_size_but_1k() -> None:
    for size in (b"512", b"2K", b"4K"):
        got = _parse(b'{"prompt": "x", "image_size": "%s"}' % size)
        assert isinstance(got, RejectedLine), size
        assert "expected one of 1K for gemini-3.1-flash-lite-image" in got.reason


def test_nano_banana_2_1_has_no_512_tier() -> None:
    got = _parse(b'{"prompt": "x", "model": "gemini-nano-banana-2.1", "image_size": "512"}')
    assert isinstance(got, RejectedLine)
    ok = _parse(b'{"prompt": "x", "model": "gemini-nano-banana-2.1", "image_size": "4K"}')
    assert isinstance(ok, AcceptedLine)


# --- config ------------------------------------------------------------------------------


def test_a_standard_aiza_key_is_refused_at_config_load_with_the_auth_key_sentence() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({config.ENV_GEMINI_API_KEY: "AIzaSyD-0123456789abcdefghijklmnopqrstu"})
    assert "AQ." in str(caught.value)
    assert "auth key" in str(caught.value)
    assert Settings.from_env({config.ENV_GEMINI_API_KEY: "AQ.Ab8RN6Lexample"}).gemini_api_key


def test_the_default_model_is_overridable_but_never_to_a_shut_down_or_unknown_model() -> None:
    chosen = Settings.from_env({config.ENV_DEFAULT_MODEL: "gemini-3-pro-image"})
    assert chosen.default_model == "gemini-3-pro-image"
    with pytest.raises(ConfigError, match=r"use gemini-3\.1-flash-lite-image"):
        Settings.from_env({config.ENV_DEFAULT_MODEL: "gemini-2.5-flash-image"})
    with pytest.raises(ConfigError, match="unknown default model"):
        Settings.from_env({config.ENV_DEFAULT_MODEL: "imagen-9"})


def test_vertex_settings_cannot_plan_jobs_past_vertex_limits() -> None:
    env = {config.ENV_PROVIDER: "vertex", config.ENV_MAX_REQUESTS_PER_BATCH: "200001"}
    with pytest.raises(ConfigError, match="200000 requests"):
        Settings.from_env(env)
    env = {config.ENV_PROVIDER: "vertex", config.ENV_MAX_BATCH_BYTES: str(2 * 10**9)}
    with pytest.raises(ConfigError, match="1000000000 bytes"):
        Settings.from_env(env)
    # The Gemini provider takes larger files (2 GB).
    assert Settings.from_env({config.ENV_MAX_BATCH_BYTES: str(2 * 10**9)})


def test_the_watchdog_waits_past_vertex_queue_and_run_limits_and_is_configurable() -> None:
    assert Settings().watchdog_hours == Settings().stuck_after_hours == 30
    vertex = Settings(provider=ProviderKind.VERTEX)
    assert vertex.watchdog_hours > 72 + 24
    tuned = Settings.from_env(
        {config.ENV_PROVIDER: "vertex", config.ENV_VERTEX_STUCK_AFTER_HOURS: "100"}
    )
    assert tuned.watchdog_hours == 100


# --- price age ---------------------------------------------------------------------------


def test_an_estimate_with_prices_older_than_the_configured_age_says_so() -> None:
    book = PriceBook()
    warnings = price_warnings(book, ["gemini-3-pro-image"], date(2026, 12, 7), 60)
    assert any("prices read on 2026-09-20" in w and "older than 60 days" in w for w in warnings)
    assert not any(
        "older than" in w
        for w in price_warnings(book, ["gemini-3-pro-image"], date(2026, 12, 7), 120)
    )


def test_uncertain_figures_are_named_and_overridden_figures_are_never_stale() -> None:
    book = PriceBook()
    warnings = price_warnings(book, [DEFAULT_MODEL], DAY, 90)
    assert warnings == [
        f"{DEFAULT_MODEL}: uncertain price figures: batch.image_output_per_1m, "
        "batch.input_per_1m, batch.per_image.1K, batch.text_output_per_1m, "
        "standard.image_output_per_1m, standard.input_per_1m, standard.per_image.1K, "
        "standard.text_output_per_1m"
    ]
    overridden = PriceBook(
        overrides={
            "gemini-3-pro-image": {
                f"{lane}.{figure}": 1.0
                for lane in ("standard", "batch")
                for figure in (
                    "image_output_per_1m",
                    "input_per_1m",
                    "text_output_per_1m",
                    "per_image.1K",
                    "per_image.2K",
                    "per_image.4K",
                )
            }
        }
    )
    assert price_warnings(overridden, ["gemini-3-pro-image"], date(2027, 6, 1), 30) == []
