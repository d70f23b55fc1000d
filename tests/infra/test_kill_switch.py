"""The billing kill switch (issue 15 part 2) and the default daily budget, as deployed: a
Cloud Billing budget on this project notifies a topic; a function on that topic, with an
identity that can only use Firestore and publish alerts, pauses submission."""

from __future__ import annotations

from functools import cache
from typing import Final

import pytest

import bananabatch.config as cfg
from bananabatch_infra.stack_config import InfraConfigError, PipelineArgs
from tests.infra import harness, spec
from tests.infra.checks import (
    FUNCTION,
    Deployment,
    Grant,
    check_iam_exact,
    check_push_subscription,
    iam_grants,
)

BUDGET: Final = "gcp:billing/budget:Budget"
BILLING_ACCOUNT: Final = "01AB23-45CD67-89EF01"
BUDGET_PUBLISHER: Final = "serviceAccount:billing-budget-alert@system.gserviceaccount.com"


def _args(**changes: object) -> PipelineArgs:
    fields: dict[str, object] = {"project": harness.PROJECT, "gemini_api_key": spec.GEMINI_KEY}
    return PipelineArgs(**(fields | changes))  # type: ignore[arg-type]


@cache
def _with_switch() -> tuple[PipelineArgs, Deployment]:
    args = _args(billing_account_id=BILLING_ACCOUNT, daily_budget_usd=20.0)
    return args, harness.deploy(args)


def test_without_a_billing_account_there_is_no_budget_and_the_outputs_say_so() -> None:
    dep = spec.deployed("gemini")
    assert dep.of_type(BUDGET) == []
    assert dep.function("on_billing_alert") is None
    assert str(dep.outputs["billingKillSwitch"]).startswith("off")


def test_a_billing_account_gets_a_monthly_budget_on_this_project_that_notifies_a_topic() -> None:
    args, dep = _with_switch()
    (budget,) = dep.of_type(BUDGET)
    assert budget.inputs["billingAccount"] == BILLING_ACCOUNT
    assert budget.inputs["budgetFilter"]["projects"] == [f"projects/{harness.PROJECT_NUMBER}"]
    assert budget.inputs["budgetFilter"]["calendarPeriod"] == "MONTH"
    # 31 days of the daily budget unless billingBudgetUsd says otherwise.
    assert budget.inputs["amount"]["specifiedAmount"] == {
        "currencyCode": "USD",
        "units": "620",
        "nanos": 0,
    }
    thresholds = [r["thresholdPercent"] for r in budget.inputs["thresholdRules"]]
    assert thresholds == [0.5, 0.9, 1.0]
    topic = dep.topic(args.topic_name("billing-alerts"))
    assert topic is not None
    assert budget.inputs["allUpdatesRule"] == {"pubsubTopic": topic.id, "schemaVersion": "1.0"}
    services = {s.inputs["service"] for s in dep.of_type("gcp:projects/service:Service")}
    assert "billingbudgets.googleapis.com" in services
    assert "$620.00 in a calendar month" in str(dep.outputs["billingKillSwitch"])


def test_the_budget_topic_is_pushed_to_the_pausing_function_with_a_dead_letter() -> None:
    args, dep = _with_switch()
    problems = check_push_subscription(
        dep,
        topic_name=args.topic_name("billing-alerts"),
        entry_point="on_billing_alert",
        invoker_email=spec.email(args, "invoker"),
        dead_letter_topic=args.topic_name("dead-letter"),
    )
    assert problems == []
    fn = dep.function("on_billing_alert")
    assert fn is not None
    config = fn.inputs["serviceConfig"]
    assert config["serviceAccountEmail"] == spec.email(args, "billing")
    assert config["environmentVariables"][cfg.ENV_TOPIC_COMPLETIONS] == args.topic_name(
        "completions"
    )
    # It never calls the provider: no API key reaches it.
    assert config.get("secretEnvironmentVariables") in (None, [])


def test_the_kill_switch_adds_only_the_grants_it_needs() -> None:
    args, dep = _with_switch()
    billing = spec.sa(args, "billing")
    extra = {
        # Cloud Billing publishes the notifications.
        Grant(
            f"topic:{args.topic_name('billing-alerts')}", "roles/pubsub.publisher", BUDGET_PUBLISHER
        ),
        # The pausing function: the pause document, and the one alert.
        Grant(f"project:{args.project}", "roles/datastore.user", billing),
        Grant(f"topic:{args.topic_name('completions')}", "roles/pubsub.publisher", billing),
        # Push delivery, as for the other pushed functions.
        Grant(
            f"run:{spec.function_name(args, 'on_billing_alert')}",
            "roles/run.invoker",
            spec.sa(args, "invoker"),
        ),
        Grant(
            f"subscription:{args.topic_name('billing-alerts-push')}",
            "roles/pubsub.subscriber",
            f"serviceAccount:{harness.PUBSUB_AGENT}",
        ),
    }
    assert check_iam_exact(dep, spec.expected_grants(args) | extra) == []
    grants, _ = iam_grants(dep)
    assert {g.scope for g in grants if g.member == billing} == {
        f"project:{args.project}",
        f"topic:{args.topic_name('completions')}",
    }


def test_every_function_gets_the_daily_budget_spelled_out() -> None:
    default = spec.deployed("gemini")
    for fn in default.of_type(FUNCTION):
        env = fn.inputs["serviceConfig"]["environmentVariables"]
        assert env[cfg.ENV_DAILY_BUDGET_USD] == str(cfg.DEFAULT_DAILY_BUDGET_USD)
    assert "the default" in str(default.outputs["dailyBudget"])
    unlimited = harness.deploy(_args(daily_budget_usd=None))
    for fn in unlimited.of_type(FUNCTION):
        assert fn.inputs["serviceConfig"]["environmentVariables"][cfg.ENV_DAILY_BUDGET_USD] == (
            "unlimited"
        )
    assert str(unlimited.outputs["dailyBudget"]).startswith("unlimited")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"billing_account_id": "not-an-id"}, "is not a billing account id"),
        (
            {"billing_account_id": BILLING_ACCOUNT, "daily_budget_usd": None},
            "needs the monthly amount",
        ),
        ({"billing_budget_usd": 0.0}, "billingBudgetUsd must be > 0"),
    ],
)
def test_unusable_kill_switch_settings_are_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InfraConfigError, match=message):
        _args(**changes)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("gemini-3-pro-imag", "fallbackModel 'gemini-3-pro-imag' is not a catalog model"),
        ("gemini-2.5-flash-image", "fallbackModel gemini-2.5-flash-image cannot be used"),
    ],
)
def test_a_fallback_model_that_could_never_serve_is_refused_before_deploying(
    model: str, message: str
) -> None:
    with pytest.raises(InfraConfigError, match=message):
        _args(fallback_model=model)
