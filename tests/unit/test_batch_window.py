"""The batch window (issue 21 point 4), the pure part: a five-field cron expression in a
time zone, read by croniter, and the setting that carries it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bananabatch import config
from bananabatch.core.window import BatchWindow, waiting_text
from bananabatch.errors import ConfigError

NIGHTLY = BatchWindow.parse("0 2 * * *", "Europe/Paris")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_next_window_is_the_cron_time_in_its_time_zone() -> None:
    # 00:00 UTC is 01:00 in Paris in winter: 02:00 Paris is 01:00 UTC the same night.
    assert NIGHTLY.next_after(utc("2026-01-01T00:00:00")) == utc("2026-01-01T01:00:00")
    # In summer Paris is UTC+2.
    assert NIGHTLY.next_after(utc("2026-07-01T12:00:00")) == utc("2026-07-02T00:00:00")


def test_a_moment_exactly_at_the_window_waits_for_the_next_one() -> None:
    assert NIGHTLY.next_after(utc("2026-01-01T01:00:00")) == utc("2026-01-02T01:00:00")


def test_a_window_that_daylight_saving_skips_goes_at_the_first_moment_after() -> None:
    # 02:30 does not exist in Paris on 2026-03-29 (02:00 -> 03:00): 03:00 CEST, 01:00 UTC.
    window = BatchWindow.parse("30 2 * * *", "Europe/Paris")
    assert window.next_after(utc("2026-03-28T03:00:00")) == utc("2026-03-29T01:00:00")


def test_weekday_and_step_expressions_are_croniters() -> None:
    weekdays = BatchWindow.parse("0 22 * * mon-fri", "UTC")
    # 2026-01-02 is a Friday: the next is Friday night, then Monday.
    assert weekdays.next_after(utc("2026-01-02T12:00:00")) == utc("2026-01-02T22:00:00")
    assert weekdays.next_after(utc("2026-01-02T22:00:00")) == utc("2026-01-05T22:00:00")
    every_six = BatchWindow.parse("0 */6 * * *")
    assert every_six.next_after(utc("2026-01-01T06:00:01")) == utc("2026-01-01T12:00:00")


@pytest.mark.parametrize(
    ("cron", "zone", "says"),
    [
        ("0 2 * *", "UTC", "five-field cron expression"),
        ("0 2 * * * *", "UTC", "five-field cron expression"),
        ("61 2 * * *", "UTC", "five-field cron expression"),
        ("at two", "UTC", "five-field cron expression"),
        ("0 2 * * *", "Mars/Olympus", "expected an IANA time zone"),
        ("0 2 * * *", "", "expected an IANA time zone"),
    ],
)
def test_a_bad_window_is_refused_saying_what_is_expected(cron: str, zone: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        BatchWindow.parse(cron, zone)


def test_the_setting_is_read_from_its_environment_variables() -> None:
    settings = config.Settings.from_env(
        {config.ENV_BATCH_WINDOW: "0 2 * * *", config.ENV_BATCH_WINDOW_TZ: "Europe/Paris"}
    )
    assert settings.window == NIGHTLY
    assert config.Settings.from_env({}).window is None
    assert config.Settings.from_env(settings.to_env()).window == NIGHTLY


def test_a_bad_setting_is_refused_at_config_load_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=config.ENV_BATCH_WINDOW):
        config.Settings.from_env({config.ENV_BATCH_WINDOW: "every night"})


def test_status_says_when_and_in_how_long() -> None:
    text = waiting_text(NIGHTLY, utc("2026-01-01T01:00:00"), utc("2026-01-01T00:15:00"))
    assert text.startswith('waiting for the batch window "0 2 * * *" (Europe/Paris)')
    assert "2026-01-01 02:00 CET" in text
    assert "in 0h45m" not in text
    assert "in 45m00s" in text
    later = waiting_text(NIGHTLY, utc("2026-01-02T01:00:00"), utc("2026-01-01T01:30:00"))
    assert "in 23h30m" in later
