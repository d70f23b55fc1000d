"""Triggers, subscriptions, the schedule and each function's environment are wired right."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bananabatch.config as cfg
from tests.infra import spec
from tests.infra.checks import (
    FUNCTION,
    check_dead_letter_kept,
    check_function_env,
    check_push_subscription,
    check_schedule,
    check_secret_env_versions,
    check_upload_trigger,
)

MAIN_PY = Path(__file__).resolve().parents[2] / "functions" / "main.py"


@pytest.mark.parametrize("name", spec.SCENARIOS)
def test_uploads_reach_on_upload_through_the_inbox_notification_and_a_dead_lettered_push(
    name: str,
) -> None:
    args = spec.scenario(name)
    problems = check_upload_trigger(
        spec.deployed(name),
        inbox_bucket=args.inbox_bucket,
        uploads_topic=args.topic_name("uploads"),
        invoker_email=spec.email(args, "invoker"),
        dead_letter_topic=args.topic_name("dead-letter"),
    )
    assert problems == []


def test_an_upload_waiting_to_be_taken_in_is_kept_a_week_and_retried_with_backoff() -> None:
    args = spec.scenario("vertex")
    dep = spec.deployed("vertex")
    topic = dep.topic(args.topic_name("uploads"))
    assert topic is not None
    [sub] = [
        s
        for s in dep.of_type("gcp:pubsub/subscription:Subscription")
        if s.inputs.get("topic") == topic.id
    ]
    assert sub.inputs["messageRetentionDuration"] == "604800s"
    assert sub.inputs["deadLetterPolicy"]["maxDeliveryAttempts"] == 10


@pytest.mark.parametrize(
    ("topic", "entry_point"), [("tick", "on_tick"), ("batch-done", "on_batch_done")]
)
@pytest.mark.parametrize("name", ["gemini", "vertex"])
def test_tick_and_batch_done_push_to_their_functions_with_retry_and_dead_letter(
    name: str, topic: str, entry_point: str
) -> None:
    args = spec.scenario(name)
    problems = check_push_subscription(
        spec.deployed(name),
        topic_name=args.topic_name(topic),
        entry_point=entry_point,
        invoker_email=spec.email(args, "invoker"),
        dead_letter_topic=args.topic_name("dead-letter"),
    )
    assert problems == []


def test_push_endpoint_carries_the_topic_path_that_becomes_the_event_source() -> None:
    dep = spec.deployed("gemini")
    args = spec.scenario("gemini")
    topic = dep.topic(args.topic_name("batch-done"))
    assert topic is not None
    subs = [
        s
        for s in dep.of_type("gcp:pubsub/subscription:Subscription")
        if s.inputs.get("topic") == topic.id
    ]
    assert [s.inputs["pushConfig"]["pushEndpoint"].split(".run.app/", 1)[1] for s in subs] == [
        topic.id
    ]


def test_failed_messages_are_kept_on_a_dead_letter_subscription() -> None:
    args = spec.scenario("gemini")
    assert check_dead_letter_kept(spec.deployed("gemini"), args.topic_name("dead-letter")) == []


@pytest.mark.parametrize("name", ["gemini", "vertex"])
def test_scheduler_publishes_ticks_on_the_configured_schedule(name: str) -> None:
    args = spec.scenario(name)
    problems = check_schedule(
        spec.deployed(name), schedule=args.tick_schedule, tick_topic=args.topic_name("tick")
    )
    assert problems == []


@pytest.mark.parametrize("name", spec.SCENARIOS)
def test_each_function_sets_exactly_the_environment_names_bananabatch_config_reads(
    name: str,
) -> None:
    args = spec.scenario(name)
    problems = check_function_env(
        spec.deployed(name), spec.expected_plain_env(args), spec.expected_secret_env(args)
    )
    assert problems == []


@pytest.mark.parametrize("name", spec.SCENARIOS)
def test_secret_environment_points_at_versions_this_stack_wrote(name: str) -> None:
    assert check_secret_env_versions(spec.deployed(name)) == []


def test_environment_values_describe_this_deployment() -> None:
    args = spec.scenario("gemini-budgets")
    fn = spec.deployed("gemini-budgets").function("on_tick")
    assert fn is not None
    env = fn.inputs["serviceConfig"]["environmentVariables"]
    parsed = cfg.Settings.from_env(env)
    assert parsed.backend is cfg.Backend.GCP
    assert parsed.provider is cfg.ProviderKind.GEMINI
    assert parsed.project == args.project
    assert parsed.inbox_bucket == args.inbox_bucket
    assert parsed.results_bucket == args.results_bucket
    assert parsed.topic_completions == args.topic_name("completions")
    assert parsed.job_budget_usd == 20.0
    assert parsed.daily_budget_usd == 100.0
    assert parsed.default_model == cfg.DEFAULT_MODEL
    assert parsed.reference_locations == ("gs://brand-assets/refs/", "https://")


def test_dynamic_webhooks_give_batch_creators_the_receiver_url() -> None:
    dep = spec.deployed("gemini-dynamic")
    receiver = dep.function("on_gemini_webhook")
    assert receiver is not None
    for entry_point in spec.PROVIDER_CALLERS:
        fn = dep.function(entry_point)
        assert fn is not None
        env = fn.inputs["serviceConfig"]["environmentVariables"]
        assert env[cfg.ENV_WEBHOOK_URL] == receiver.state["url"]
        assert env[cfg.ENV_WEBHOOK_MODE] == "dynamic"
    assert dep.outputs["webhookUrl"] == receiver.state["url"]
    # The receiver requires tokens naming its own URL as audience, and the issuer.
    receiver_env = receiver.inputs["serviceConfig"]["environmentVariables"]
    assert receiver_env[cfg.ENV_WEBHOOK_AUDIENCE] == receiver.state["url"]
    assert receiver_env[cfg.ENV_WEBHOOK_ISSUER] == cfg.DEFAULT_WEBHOOK_ISSUER
    settings = cfg.Settings.from_env(receiver_env)
    assert settings.webhook_audience == receiver.state["url"]


def test_webhook_receiver_exists_only_when_webhooks_are_on() -> None:
    assert spec.deployed("gemini").function("on_gemini_webhook") is None
    fn = spec.deployed("gemini-static").function("on_gemini_webhook")
    assert fn is not None
    assert fn.inputs.get("eventTrigger") is None


@pytest.mark.parametrize("name", spec.SCENARIOS)
def test_every_function_builds_from_the_hashed_archive_on_python_312(name: str) -> None:
    dep = spec.deployed(name)
    source_bucket = spec.scenario(name).source_bucket
    functions = dep.of_type(FUNCTION)
    assert {f.inputs["buildConfig"]["entryPoint"] for f in functions} == set(
        spec.entry_points(spec.scenario(name))
    )
    for fn in functions:
        build = fn.inputs["buildConfig"]
        assert build["runtime"] == "python312"
        assert build["source"]["storageSource"] == {
            "bucket": source_bucket,
            "object": dep.archive_object,
        }
        assert build["serviceAccount"].endswith(spec.email(spec.scenario(name), "build"))
    objects = dep.of_type("gcp:storage/bucketObject:BucketObject")
    assert [(o.inputs["bucket"], o.inputs["name"]) for o in objects] == [
        (source_bucket, dep.archive_object)
    ]


def test_memory_timeout_and_instances_are_set_explicitly_and_scale_to_zero() -> None:
    for fn in spec.deployed("gemini-static").of_type(FUNCTION):
        service = fn.inputs["serviceConfig"]
        assert service["availableMemory"].endswith(("Mi", "Gi"))
        assert 0 < service["timeoutSeconds"] <= 540
        assert service["maxInstanceCount"] >= 1
        assert service["minInstanceCount"] == 0
    tick = spec.deployed("gemini").function("on_tick")
    assert tick is not None
    assert tick.inputs["serviceConfig"]["maxInstanceCount"] == 1


def test_each_function_runs_as_its_own_service_account() -> None:
    args = spec.scenario("gemini-static")
    dep = spec.deployed("gemini-static")
    for entry_point, key in spec.ACCOUNT_KEYS.items():
        fn = dep.function(entry_point)
        assert fn is not None
        assert fn.inputs["serviceConfig"]["serviceAccountEmail"] == spec.email(args, key)


def test_deployed_entry_points_are_defined_in_functions_main() -> None:
    tree = ast.parse(MAIN_PY.read_text())
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    dep = spec.deployed("gemini-static")
    deployed = {f.inputs["buildConfig"]["entryPoint"] for f in dep.of_type(FUNCTION)}
    assert deployed <= defined, deployed - defined
