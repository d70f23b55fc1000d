"""Each check reports a deliberately broken copy of a real deployment.

The other infra tests assert the checks find nothing on the real program; these prove the
same checks would have found something had a role, trigger, secret or environment variable
name been wrong, so a passing suite means more than "the checks never look".
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

import bananabatch.config as cfg
from tests.infra import spec
from tests.infra.checks import (
    BUCKET,
    FUNCTION,
    SCHEDULER_JOB,
    SECRET_VERSION,
    SUBSCRIPTION,
    Deployment,
    Recorded,
    check_buckets_private,
    check_dead_letter_kept,
    check_function_env,
    check_iam_exact,
    check_no_basic_roles,
    check_public_access,
    check_push_subscription,
    check_schedule,
    check_secret_env_versions,
    check_secret_values_hidden,
    check_upload_trigger,
    plain,
)

SCENARIO = "gemini-static"
ARGS = spec.scenario(SCENARIO)


def real() -> Deployment:
    return spec.deployed(SCENARIO)


def mutate(
    dep: Deployment, target: Recorded, change: Callable[[dict[str, Any]], None]
) -> Deployment:
    inputs = copy.deepcopy(dict(target.inputs))
    change(inputs)
    return dep.with_inputs(target, inputs)


def function(dep: Deployment, entry_point: str) -> Recorded:
    fn = dep.function(entry_point)
    assert fn is not None
    return fn


def grant(dep: Deployment, typ: str, role: str, member_fragment: str) -> Recorded:
    found = [
        r
        for r in dep.resources
        if r.typ == typ
        and r.inputs.get("role") == role
        and member_fragment in r.inputs.get("member", "")
    ]
    assert found, (typ, role, member_fragment)
    return found[0]


# --- checks -----------------------------------------------------------------------------


def iam(dep: Deployment) -> list[str]:
    return check_iam_exact(dep, spec.expected_grants(ARGS))


def env(dep: Deployment) -> list[str]:
    return check_function_env(dep, spec.expected_plain_env(ARGS), spec.expected_secret_env(ARGS))


def public(dep: Deployment) -> list[str]:
    return check_public_access(dep, spec.function_name(ARGS, "on_gemini_webhook"))


def upload_trigger(dep: Deployment) -> list[str]:
    return check_upload_trigger(
        dep,
        inbox_bucket=ARGS.inbox_bucket,
        uploads_topic=ARGS.topic_name("uploads"),
        invoker_email=spec.email(ARGS, "invoker"),
        dead_letter_topic=ARGS.topic_name("dead-letter"),
    )


def tick_push(dep: Deployment) -> list[str]:
    return check_push_subscription(
        dep,
        topic_name=ARGS.topic_name("tick"),
        entry_point="on_tick",
        invoker_email=spec.email(ARGS, "invoker"),
        dead_letter_topic=ARGS.topic_name("dead-letter"),
    )


def schedule(dep: Deployment) -> list[str]:
    return check_schedule(dep, schedule=ARGS.tick_schedule, tick_topic=ARGS.topic_name("tick"))


def secrets_hidden(dep: Deployment) -> list[str]:
    return check_secret_values_hidden(dep, [spec.GEMINI_KEY, spec.SIGNING_SECRET])


def test_every_check_passes_on_the_real_deployment() -> None:
    dep = real()
    for check in (
        iam,
        env,
        public,
        upload_trigger,
        tick_push,
        schedule,
        secrets_hidden,
        check_no_basic_roles,
        check_buckets_private,
        check_secret_env_versions,
    ):
        assert check(dep) == [], check.__name__
    assert check_dead_letter_kept(dep, ARGS.topic_name("dead-letter")) == []


# --- mutations --------------------------------------------------------------------------


def _wider_results_role(dep: Deployment) -> Deployment:
    target = grant(
        dep, "gcp:storage/bucketIAMMember:BucketIAMMember", "roles/storage.objectUser", "-upload@"
    )
    return mutate(dep, target, lambda i: i.update(role="roles/storage.objectAdmin"))


def _results_role_on_the_project(dep: Deployment) -> Deployment:
    target = grant(
        dep, "gcp:storage/bucketIAMMember:BucketIAMMember", "roles/storage.objectUser", "-tick@"
    )
    moved = Recorded(
        "gcp:projects/iAMMember:IAMMember",
        "moved",
        {
            "project": ARGS.project,
            "role": target.inputs["role"],
            "member": target.inputs["member"],
        },
        "moved-id",
        {},
    )
    return dep.without(target).with_added(moved)


def _editor_added(dep: Deployment) -> Deployment:
    return dep.with_added(
        Recorded(
            "gcp:projects/iAMMember:IAMMember",
            "editor",
            {
                "project": ARGS.project,
                "role": "roles/editor",
                "member": spec.sa(ARGS, "collect"),
            },
            "editor-id",
            {},
        )
    )


def _missing_secret_accessor(dep: Deployment) -> Deployment:
    target = grant(
        dep,
        "gcp:secretmanager/secretIamMember:SecretIamMember",
        "roles/secretmanager.secretAccessor",
        "-tick@",
    )
    return dep.without(target)


def _public_results_bucket(dep: Deployment) -> Deployment:
    return dep.with_added(
        Recorded(
            "gcp:storage/bucketIAMMember:BucketIAMMember",
            "public",
            {
                "bucket": ARGS.results_bucket,
                "role": "roles/storage.objectViewer",
                "member": "allUsers",
            },
            "public-id",
            {},
        )
    )


def _binding_instead_of_member(dep: Deployment) -> Deployment:
    return dep.with_added(
        Recorded(
            "gcp:storage/bucketIAMBinding:BucketIAMBinding",
            "binding",
            {
                "bucket": ARGS.inbox_bucket,
                "role": "roles/storage.objectViewer",
                "members": [spec.sa(ARGS, "upload")],
            },
            "binding-id",
            {},
        )
    )


def _bucket_prevention_inherited(dep: Deployment) -> Deployment:
    target = dep.of_type(BUCKET)[0]
    return mutate(dep, target, lambda i: i.update(publicAccessPrevention="inherited"))


def _renamed_env_var(dep: Deployment) -> Deployment:
    def change(inputs: dict[str, Any]) -> None:
        env_vars = inputs["serviceConfig"]["environmentVariables"]
        env_vars["BANANABATCH_INBOX"] = env_vars.pop(cfg.ENV_INBOX_BUCKET)

    return mutate(dep, function(dep, "on_upload"), change)


def _dropped_env_var(dep: Deployment) -> Deployment:
    return mutate(
        dep,
        function(dep, "on_batch_done"),
        lambda i: i["serviceConfig"]["environmentVariables"].pop(cfg.ENV_TOPIC_COMPLETIONS),
    )


def _secret_as_plain_env(dep: Deployment) -> Deployment:
    def change(inputs: dict[str, Any]) -> None:
        service = inputs["serviceConfig"]
        service["secretEnvironmentVariables"] = []
        service["environmentVariables"][cfg.ENV_GEMINI_API_KEY] = spec.GEMINI_KEY

    return mutate(dep, function(dep, "on_tick"), change)


def _webhook_secret_on_the_wrong_function(dep: Deployment) -> Deployment:
    def change(inputs: dict[str, Any]) -> None:
        inputs["serviceConfig"]["secretEnvironmentVariables"].append(
            {
                "key": cfg.ENV_WEBHOOK_SECRET,
                "secret": f"{ARGS.name_prefix}-webhook-signing-secret",
                "version": "1",
                "projectId": ARGS.project,
            }
        )

    return mutate(dep, function(dep, "on_upload"), change)


def _unpinned_secret_version(dep: Deployment) -> Deployment:
    def change(inputs: dict[str, Any]) -> None:
        inputs["serviceConfig"]["secretEnvironmentVariables"][0]["version"] = "7"

    return mutate(dep, function(dep, "on_upload"), change)


def _secret_data_unwrapped(dep: Deployment) -> Deployment:
    target = dep.of_type(SECRET_VERSION)[0]
    return mutate(dep, target, lambda i: i.update(secretData=plain(i["secretData"])))


def _notification(dep: Deployment) -> Recorded:
    [n] = dep.of_type("gcp:storage/notification:Notification")
    return n


def _upload_watches_results(dep: Deployment) -> Deployment:
    return mutate(dep, _notification(dep), lambda i: i.update(bucket=ARGS.results_bucket))


def _upload_on_delete_events(dep: Deployment) -> Deployment:
    return mutate(dep, _notification(dep), lambda i: i.update(eventTypes=["OBJECT_DELETE"]))


def _upload_without_dead_letter(dep: Deployment) -> Deployment:
    topic = dep.topic(ARGS.topic_name("uploads"))
    assert topic is not None
    target = next(s for s in dep.of_type(SUBSCRIPTION) if s.inputs.get("topic") == topic.id)
    return mutate(dep, target, lambda i: i.pop("deadLetterPolicy"))


def _upload_through_eventarc(dep: Deployment) -> Deployment:
    return mutate(
        dep,
        function(dep, "on_upload"),
        lambda i: i.update(eventTrigger={"eventType": "google.cloud.storage.object.v1.finalized"}),
    )


def _tick_pushes_to_collector(dep: Deployment) -> Deployment:
    uri = function(dep, "on_batch_done").state["serviceConfig"]["uri"]
    tick_topic = dep.topic(ARGS.topic_name("tick"))
    assert tick_topic is not None
    target = next(s for s in dep.of_type(SUBSCRIPTION) if s.inputs.get("topic") == tick_topic.id)
    return mutate(
        dep,
        target,
        lambda i: i["pushConfig"].update(
            pushEndpoint=f"{uri}/x",
        ),
    )


def _tick_without_dead_letter(dep: Deployment) -> Deployment:
    tick_topic = dep.topic(ARGS.topic_name("tick"))
    assert tick_topic is not None
    target = next(s for s in dep.of_type(SUBSCRIPTION) if s.inputs.get("topic") == tick_topic.id)
    return mutate(dep, target, lambda i: i.pop("deadLetterPolicy"))


def _too_few_delivery_attempts(dep: Deployment) -> Deployment:
    tick_topic = dep.topic(ARGS.topic_name("tick"))
    assert tick_topic is not None
    target = next(s for s in dep.of_type(SUBSCRIPTION) if s.inputs.get("topic") == tick_topic.id)
    return mutate(dep, target, lambda i: i["deadLetterPolicy"].update(maxDeliveryAttempts=2))


def _scheduler_on_the_wrong_topic(dep: Deployment) -> Deployment:
    done = dep.topic(ARGS.topic_name("batch-done"))
    assert done is not None
    return mutate(
        dep, dep.of_type(SCHEDULER_JOB)[0], lambda i: i["pubsubTarget"].update(topicName=done.id)
    )


def _scheduler_every_hour(dep: Deployment) -> Deployment:
    return mutate(dep, dep.of_type(SCHEDULER_JOB)[0], lambda i: i.update(schedule="0 * * * *"))


def _webhook_function_gone(dep: Deployment) -> Deployment:
    return dep.without(function(dep, "on_gemini_webhook"))


BREAKAGES: list[
    tuple[Callable[[Deployment], Deployment], Callable[[Deployment], list[str]], str]
] = [
    (_wider_results_role, iam, "roles/storage.objectAdmin"),
    (_results_role_on_the_project, iam, "unexpected grant"),
    (_editor_added, check_no_basic_roles, "roles/editor"),
    (_editor_added, iam, "roles/editor"),
    (_missing_secret_accessor, iam, "missing grant"),
    (_public_results_bucket, public, "allUsers"),
    (_binding_instead_of_member, check_buckets_private, "BucketIAMBinding"),
    (_bucket_prevention_inherited, check_buckets_private, "public access prevention"),
    (_renamed_env_var, env, "BANANABATCH_INBOX"),
    (_dropped_env_var, env, cfg.ENV_TOPIC_COMPLETIONS),
    (_secret_as_plain_env, env, cfg.ENV_GEMINI_API_KEY),
    (_secret_as_plain_env, secrets_hidden, "plain text"),
    (_webhook_secret_on_the_wrong_function, env, cfg.ENV_WEBHOOK_SECRET),
    (_unpinned_secret_version, check_secret_env_versions, "did not write"),
    (_secret_data_unwrapped, secrets_hidden, "not a secret output"),
    (_upload_watches_results, upload_trigger, ARGS.results_bucket),
    (_upload_on_delete_events, upload_trigger, "event types"),
    (_upload_without_dead_letter, upload_trigger, "dead-letter"),
    (_upload_through_eventarc, upload_trigger, "Eventarc trigger"),
    (_tick_pushes_to_collector, tick_push, "not on_tick"),
    (_tick_without_dead_letter, tick_push, "dead-letter"),
    (_too_few_delivery_attempts, tick_push, "5..100"),
    (_scheduler_on_the_wrong_topic, schedule, "publishes to"),
    (_scheduler_every_hour, schedule, "schedule"),
    (_webhook_function_gone, env, "on_gemini_webhook: no such function"),
]


@pytest.mark.parametrize(
    ("breakage", "check", "mentions"),
    BREAKAGES,
    ids=[f"{b.__name__.strip('_')}-{c.__name__}" for b, c, _ in BREAKAGES],
)
def test_check_reports_the_breakage(
    breakage: Callable[[Deployment], Deployment],
    check: Callable[[Deployment], list[str]],
    mentions: str,
) -> None:
    problems = check(breakage(real()))
    assert problems, f"{check.__name__} did not notice {breakage.__name__}"
    assert any(mentions in p for p in problems), problems


def test_breakages_do_not_leak_into_the_shared_real_deployment() -> None:
    for breakage, _, _ in BREAKAGES:
        breakage(real())
    assert iam(real()) == []
    assert env(real()) == []
    assert upload_trigger(real()) == []
    assert [
        r
        for r in real().resources
        if r.typ == FUNCTION
        and "BANANABATCH_INBOX" in r.inputs["serviceConfig"]["environmentVariables"]
    ] == []
