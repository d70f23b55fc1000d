"""The deployment-wide submission pause (pipeline/pause.py): reasons that do not overwrite
each other, a spend window that lapses by itself, one credits probe at a time, one alert
per pause, and the billing kill switch acting once per threshold and period."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from bananabatch.adapters.local.bus import InProcessBus
from bananabatch.config import Settings
from bananabatch.core.alerts import load_alert_schema
from bananabatch.pipeline import pause
from bananabatch.pipeline.pause import PauseKind
from bananabatch.pipeline.runtime import Runtime
from bananabatch.wiring import build_runtime

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rt(tmp_path: Path, clock: Clock) -> Runtime:
    runtime = build_runtime(
        Settings(local_root=tmp_path, credits_probe_minutes=30, quota_alert_after=3),
        with_provider=False,
    )
    runtime.clock = clock
    bus = runtime.bus
    assert isinstance(bus, InProcessBus)
    bus.create_subscription("alerts", runtime.settings.topic_completions)
    return runtime


def _alerts(rt: Runtime) -> list[tuple[dict[str, object], dict[str, str]]]:
    bus = rt.bus
    assert isinstance(bus, InProcessBus)
    return [(json.loads(m.data), dict(m.attributes)) for m in bus.pull("alerts", max_messages=100)]


def test_a_pause_is_announced_once_with_an_alert_that_matches_its_schema(rt: Runtime) -> None:
    assert pause.pause(rt, PauseKind.CREDITS_DEPLETED, "Your prepayment credits are depleted.")
    assert not pause.pause(rt, PauseKind.CREDITS_DEPLETED, "Your prepayment credits are depleted.")
    (alert, attributes), *more = _alerts(rt)
    assert more == []
    jsonschema.validate(alert, load_alert_schema())
    assert alert["alert"] == "credits_depleted"
    assert alert["paused"] is True
    assert attributes == {
        "kind": "alert",
        "alert": "credits_depleted",
        "severity": "ERROR",
        "schema_version": "1",
    }
    assert not pause.gate(rt).open


def test_two_reasons_stay_apart_and_lifting_one_leaves_the_other(rt: Runtime) -> None:
    pause.pause(rt, PauseKind.BILLING_BUDGET, "budget reached")
    pause.pause(rt, PauseKind.AUTH, "401")
    lifted = pause.lift(rt, [PauseKind.AUTH])
    assert [r.kind for r in lifted] == [PauseKind.AUTH]
    assert [r.kind for r in pause.active_reasons(rt)] == [PauseKind.BILLING_BUDGET]
    assert [r.kind for r in pause.lift(rt)] == [PauseKind.BILLING_BUDGET]
    assert pause.gate(rt).open


def test_a_spend_window_pause_lapses_by_itself_after_its_time(rt: Runtime, clock: Clock) -> None:
    until = NOW + pause.SPEND_WINDOW
    pause.pause(rt, PauseKind.SPEND_WINDOW, "spend", until=until, alert=False)
    assert not pause.gate(rt).open
    # A later refusal may lengthen the window, never shorten it.
    pause.pause(rt, PauseKind.SPEND_WINDOW, "spend", until=NOW + timedelta(minutes=2))
    clock.now = NOW + timedelta(minutes=9, seconds=59)
    assert not pause.gate(rt).open
    clock.now = until
    assert pause.gate(rt).open
    assert [r.kind for r in pause.lapse_expired(rt)] == [PauseKind.SPEND_WINDOW]
    assert _alerts(rt) == []


def test_credits_allow_one_probe_per_interval_and_a_successful_one_lifts_the_pause(
    rt: Runtime, clock: Clock
) -> None:
    pause.pause(rt, PauseKind.CREDITS_DEPLETED, "depleted")
    assert not pause.gate(rt).open  # the first probe waits one interval
    clock.now = NOW + timedelta(minutes=30)
    probe = pause.gate(rt)
    assert probe.open
    assert probe.probe
    assert not pause.gate(rt).open  # a second worker does not probe at the same time
    # The probe was refused again: the next one a full interval later.
    pause.pause(rt, PauseKind.CREDITS_DEPLETED, "depleted")
    clock.now = NOW + timedelta(minutes=59)
    assert not pause.gate(rt).open
    clock.now = NOW + timedelta(minutes=60)
    probe = pause.gate(rt)
    assert probe.probe
    pause.created_ok(rt, probe)
    assert pause.active_reasons(rt) == []
    assert len(_alerts(rt)) == 1


def test_a_lost_probe_is_retried_after_its_lease(rt: Runtime, clock: Clock) -> None:
    pause.pause(rt, PauseKind.CREDITS_DEPLETED, "depleted")
    clock.now = NOW + timedelta(minutes=30)
    assert pause.gate(rt).probe
    clock.now += pause.PROBE_LEASE
    assert pause.gate(rt).probe


def test_unknown_429s_alert_once_after_the_configured_number_in_a_row(rt: Runtime) -> None:
    for _ in range(5):
        pause.count_unknown_quota(rt, "something new")
    alerts = _alerts(rt)
    assert [a["alert"] for a, _ in alerts] == ["unknown_quota"]
    assert "3 batch creates in a row" in str(alerts[0][0]["reason"])
    pause.created_ok(rt, pause.Gate(open=True))
    for _ in range(3):
        pause.count_unknown_quota(rt, "again")
    assert len(_alerts(rt)) == 1


def _notification(
    cost: float, threshold: float | None, period: str = "2026-12-01T08:00:00Z"
) -> tuple[dict[str, str], dict[str, object]]:
    payload: dict[str, object] = {
        "budgetDisplayName": "bananabatch kill switch",
        "costAmount": cost,
        "costIntervalStart": period,
        "budgetAmount": 100.0,
        "budgetAmountType": "SPECIFIED_AMOUNT",
        "currencyCode": "USD",
    }
    if threshold is not None:
        payload["alertThresholdExceeded"] = threshold
    return {"billingAccountId": "01AB23-45CD67-89EF01", "budgetId": "b-1"}, payload


def test_the_billing_budget_pauses_at_its_threshold_once_per_period(rt: Runtime) -> None:
    assert pause.handle_budget_notification(rt, *_notification(20.0, None)) == (
        "below every threshold"
    )
    assert pause.handle_budget_notification(rt, *_notification(55.0, 0.5)) == "alerted"
    assert pause.handle_budget_notification(rt, *_notification(56.0, 0.5)) == "already handled"
    assert pause.gate(rt).open
    assert pause.handle_budget_notification(rt, *_notification(101.0, 1.0)) == "paused"
    assert not pause.gate(rt).open
    alerts = _alerts(rt)
    assert [(a["alert"], a["paused"]) for a, _ in alerts] == [
        ("billing_budget", False),
        ("billing_budget", True),
    ]
    for alert, _ in alerts:
        jsonschema.validate(alert, load_alert_schema())
    # The owner resumes; the same notification repeated later the same period does not
    # undo that, but the next period's does pause again.
    pause.lift(rt)
    assert pause.handle_budget_notification(rt, *_notification(102.0, 1.0)) == "already handled"
    assert pause.gate(rt).open
    again = _notification(100.0, 1.0, period="2027-01-01T08:00:00Z")
    assert pause.handle_budget_notification(rt, *again) == "paused"
