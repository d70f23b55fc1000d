"""Monitoring as code (issue 15 part 7): log-based metrics, the alert policies a deployment
comes with, a dashboard, a notification channel from stack config, internal ingress."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Final

import pytest

from bananabatch_infra.monitoring import LOG_LITERALS
from bananabatch_infra.stack_config import InfraConfigError
from tests.infra import harness, spec
from tests.infra.checks import FUNCTION, Deployment, Recorded
from tests.infra.test_stack_config import load

ROOT = Path(__file__).resolve().parents[2]
POLICY: Final = "gcp:monitoring/alertPolicy:AlertPolicy"
METRIC: Final = "gcp:logging/metric:Metric"
CHANNEL: Final = "gcp:monitoring/notificationChannel:NotificationChannel"
DASHBOARD: Final = "gcp:monitoring/dashboard:Dashboard"
EMAIL: Final = "ops@example.com"


@cache
def _with_email() -> Deployment:
    return harness.deploy(replace(spec.scenario("gemini-static"), alert_email=EMAIL))


def _policies(dep: Deployment) -> dict[str, Recorded]:
    return {p.inputs["displayName"]: p for p in dep.of_type(POLICY)}


def _condition(policy: Recorded) -> dict[str, object]:
    [condition] = policy.inputs["conditions"]
    return dict(condition)


def test_a_deployment_comes_with_the_alerts_the_issue_names() -> None:
    names = set(_policies(_with_email()))
    assert names == {
        "bananabatch: messages in the dead-letter queue",
        "bananabatch: a delivery has waited over an hour",
        "bananabatch: functions logging errors",
        "bananabatch: webhook deliveries refused",
        "bananabatch: a batch ran past the watchdog",
        "bananabatch: a job ran past its expected completion",
        "bananabatch: Gemini Files storage past its threshold",
        "bananabatch: submission paused",
        "bananabatch: an alert from the pipeline",
    }
    # Without webhooks there is nothing to refuse.
    assert "bananabatch: webhook deliveries refused" not in _policies(spec.deployed("gemini"))


def test_every_policy_notifies_the_channel_made_from_alert_email() -> None:
    dep = _with_email()
    [channel] = dep.of_type(CHANNEL)
    assert channel.inputs["type"] == "email"
    assert channel.inputs["labels"] == {"email_address": EMAIL}
    for policy in dep.of_type(POLICY):
        assert policy.inputs["notificationChannels"] == [channel.state["name"]]
        assert policy.inputs["documentation"]["content"]
    assert dep.outputs["alerts"] == f"9 alert policies notify {EMAIL}"


def test_without_alert_email_policies_exist_and_the_output_says_where_alerts_go() -> None:
    dep = spec.deployed("gemini")
    assert dep.of_type(CHANNEL) == []
    assert len(dep.of_type(POLICY)) == 8
    for policy in dep.of_type(POLICY):
        assert not policy.inputs.get("notificationChannels")
    assert "pulumi config set bananabatch:alertEmail" in dep.outputs["alerts"]


@pytest.mark.parametrize("bad", ["ops", "ops@", "a b@example.com"])
def test_an_alert_email_that_is_not_an_address_is_refused(bad: str) -> None:
    with pytest.raises(InfraConfigError, match="alertEmail"):
        load({"alertEmail": bad}, {"geminiApiKey": "k"})
    assert load({"alertEmail": EMAIL}, {"geminiApiKey": "k"}).alert_email == EMAIL


def test_metric_policies_watch_the_dead_letter_queue_and_every_push_subscription() -> None:
    args = spec.scenario("gemini-static")
    policies = _policies(_with_email())
    dead = _condition(policies["bananabatch: messages in the dead-letter queue"])
    threshold = dead["conditionThreshold"]
    assert isinstance(threshold, dict)
    assert f'subscription_id="{args.topic_name("dead-letter-keep")}"' in threshold["filter"]
    assert "num_undelivered_messages" in threshold["filter"]
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["thresholdValue"] == 0
    oldest = _condition(policies["bananabatch: a delivery has waited over an hour"])
    flt = oldest["conditionThreshold"]["filter"]  # type: ignore[index]
    assert "oldest_unacked_message_age" in flt
    pattern = re.search(r'full_match\("([^"]+)"\)', flt)
    assert pattern is not None
    push = [
        s.inputs["name"]
        for s in _with_email().of_type("gcp:pubsub/subscription:Subscription")
        if s.inputs.get("pushConfig")
    ]
    assert push
    assert all(re.fullmatch(pattern.group(1), name) for name in push)
    assert not re.fullmatch(pattern.group(1), args.topic_name("dead-letter-keep"))


def test_error_and_refusal_policies_count_log_based_metrics_that_exist() -> None:
    dep = _with_email()
    metrics = {m.inputs["name"]: m for m in dep.of_type(METRIC)}
    for title in (
        "bananabatch: functions logging errors",
        "bananabatch: webhook deliveries refused",
    ):
        flt = _condition(_policies(dep)[title])["conditionThreshold"]["filter"]  # type: ignore[index]
        [name] = re.findall(r"logging.googleapis.com/user/([\w-]+)", flt)
        assert name in metrics, title
    errors = metrics["bananabatch-function-errors"].inputs
    assert "severity>=ERROR" in errors["filter"]
    assert 'service_name=~"^bananabatch-on-"' in errors["filter"]
    refused = metrics["bananabatch-webhook-refused"].inputs
    assert 'jsonPayload.alert="webhook_refused"' in refused["filter"]
    files = metrics["bananabatch-files-store-bytes"].inputs
    assert files["valueExtractor"] == "EXTRACT(jsonPayload.files_store_bytes)"


def test_log_match_policies_fire_on_the_records_the_functions_write() -> None:
    policies = _policies(_with_email())
    expected = {
        "bananabatch: a batch ran past the watchdog": "batch stuck past the watchdog limit",
        "bananabatch: Gemini Files storage past its threshold": 'alert="files_store_high"',
        "bananabatch: a job ran past its expected completion": 'alert="job_overdue"',
        "bananabatch: submission paused": "submission paused for the whole deployment",
        "bananabatch: an alert from the pipeline": "jsonPayload.alert:*",
    }
    for title, fragment in expected.items():
        policy = policies[title]
        matched = _condition(policy)["conditionMatchedLog"]
        assert isinstance(matched, dict)
        assert fragment in matched["filter"], title
        # Cloud Monitoring requires a notification rate limit on log-match policies.
        assert policy.inputs["alertStrategy"]["notificationRateLimit"]["period"]


@pytest.mark.parametrize(("literal", "path"), sorted(LOG_LITERALS.items()))
def test_each_log_text_an_alert_depends_on_is_still_written_by_the_code(
    literal: str, path: str
) -> None:
    assert f'"{literal}' in (ROOT / path).read_text(), (literal, path)


def test_the_dashboard_charts_every_signal_the_alerts_watch() -> None:
    dep = _with_email()
    [dashboard] = dep.of_type(DASHBOARD)
    document = json.loads(dashboard.inputs["dashboardJson"])
    titles = {t["widget"]["title"] for t in document["mosaicLayout"]["tiles"]}
    assert {
        "Function errors (log records)",
        "Dead-letter backlog",
        "Oldest unacked delivery (s)",
        "Gemini Files store (bytes)",
        "Refused webhook deliveries",
        "Function requests",
    } == titles
    filters = json.dumps(document)
    for metric in dep.of_type(METRIC):
        assert f"logging.googleapis.com/user/{metric.inputs['name']}" in filters


@pytest.mark.parametrize("name", ["gemini-static", "gemini-billing"])
def test_pushed_functions_take_internal_traffic_only_and_the_webhook_all(name: str) -> None:
    for fn in spec.deployed(name).of_type(FUNCTION):
        entry = fn.inputs["buildConfig"]["entryPoint"]
        ingress = fn.inputs["serviceConfig"]["ingressSettings"]
        expected = "ALLOW_ALL" if entry == "on_gemini_webhook" else "ALLOW_INTERNAL_ONLY"
        assert ingress == expected, entry


def test_the_readme_lists_every_alert_policy_a_deployment_comes_with() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### The alerts a deployment comes with") :]
    listed = set(re.findall(r"^\| `(bananabatch: [^`]+)` \|", section, re.MULTILINE))
    assert listed == set(_policies(_with_email()))
