"""Plain checks over the resources a Pulumi run registered.

Each check takes a `Deployment` (what the mocks recorded, inputs in Pulumi's camelCase wire
names) and returns a list of problems, empty when the property holds. Tests assert the list
is empty for the real program, and non-empty for deliberately broken copies, which is how
they prove a check can fail.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import bananabatch.config as cfg

# How the Pulumi runtime marks a secret value when it serialises it.
SECRET_SIG_KEY: Final = "4dabf18193072939515e22adb298388d"
SECRET_SIG_VALUE: Final = "1b47061264138c4ac30d75fd1eb44270"

PUBLIC_MEMBERS: Final = frozenset({"allUsers", "allAuthenticatedUsers"})
BASIC_ROLES: Final = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
STORAGE_FINALIZED: Final = "google.cloud.storage.object.v1.finalized"

FUNCTION: Final = "gcp:cloudfunctionsv2/function:Function"
BUCKET: Final = "gcp:storage/bucket:Bucket"
TOPIC: Final = "gcp:pubsub/topic:Topic"
SUBSCRIPTION: Final = "gcp:pubsub/subscription:Subscription"
SECRET: Final = "gcp:secretmanager/secret:Secret"
SECRET_VERSION: Final = "gcp:secretmanager/secretVersion:SecretVersion"
SCHEDULER_JOB: Final = "gcp:cloudscheduler/job:Job"
ACCOUNT: Final = "gcp:serviceaccount/account:Account"
NOTIFICATION: Final = "gcp:storage/notification:Notification"

# Every IAM resource type the program may use, and the input naming the resource it binds on.
IAM_TYPES: Final = {
    "gcp:projects/iAMMember:IAMMember": ("project", "project"),
    "gcp:storage/bucketIAMMember:BucketIAMMember": ("bucket", "bucket"),
    "gcp:pubsub/topicIAMMember:TopicIAMMember": ("topic", "topic"),
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": ("subscription", "subscription"),
    "gcp:secretmanager/secretIamMember:SecretIamMember": ("secret", "secretId"),
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": ("run", "name"),
    "gcp:serviceaccount/iAMMember:IAMMember": ("service-account", "serviceAccountId"),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": ("repository", "repository"),
}


@dataclass(frozen=True)
class Recorded:
    typ: str
    name: str
    inputs: Mapping[str, Any]
    id: str
    state: Mapping[str, Any]


@dataclass(frozen=True)
class Deployment:
    resources: tuple[Recorded, ...]
    outputs: Mapping[str, Any] = field(default_factory=dict)
    archive_files: tuple[str, ...] = ()
    archive_object: str = ""

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def function(self, entry_point: str) -> Recorded | None:
        for fn in self.of_type(FUNCTION):
            if fn.inputs.get("buildConfig", {}).get("entryPoint") == entry_point:
                return fn
        return None

    def topic(self, topic_name: str) -> Recorded | None:
        return next((t for t in self.of_type(TOPIC) if t.inputs.get("name") == topic_name), None)

    def with_inputs(self, target: Recorded, inputs: Mapping[str, Any]) -> Deployment:
        """A copy in which `target` has exactly these inputs (for mutation tests)."""
        changed = replace(target, inputs=dict(inputs))
        return replace(self, resources=tuple(changed if r is target else r for r in self.resources))

    def with_added(self, extra: Recorded) -> Deployment:
        return replace(self, resources=(*self.resources, extra))

    def without(self, target: Recorded) -> Deployment:
        return replace(self, resources=tuple(r for r in self.resources if r is not target))


# --- values ------------------------------------------------------------------------------


def is_secret(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE


def plain(value: Any) -> Any:
    """The value with secret wrappers removed, recursively."""
    if is_secret(value):
        return plain(value.get("value"))
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def strings_in(value: Any) -> Iterator[str]:
    value = plain(value)
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def _last(path: str) -> str:
    return str(path).rstrip("/").split("/")[-1]


# --- IAM ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Grant:
    scope: str  # "<kind>:<short name>", e.g. "bucket:my-inbox", "project:my-project"
    role: str
    member: str
    condition: str | None = None

    def __str__(self) -> str:
        cond = f" if {self.condition}" if self.condition else ""
        return f"{self.member} has {self.role} on {self.scope}{cond}"


def iam_grants(dep: Deployment) -> tuple[set[Grant], list[str]]:
    """Every IAM grant in the deployment, plus problems for IAM resources of unknown kinds."""
    grants: set[Grant] = set()
    problems: list[str] = []
    for r in dep.resources:
        if r.typ in IAM_TYPES:
            kind, key = IAM_TYPES[r.typ]
            condition = r.inputs.get("condition")
            grants.add(
                Grant(
                    scope=f"{kind}:{_last(r.inputs[key])}",
                    role=str(r.inputs["role"]),
                    member=str(r.inputs["member"]),
                    condition=condition.get("expression") if condition else None,
                )
            )
        elif "iam" in r.typ.lower() or "acl" in r.typ.lower() or "accesscontrol" in r.typ.lower():
            # Bindings and policies replace what others granted; ACLs bypass uniform access.
            problems.append(f"{r.name}: access is granted through {r.typ}, which is not allowed")
    return grants, problems


def check_iam_exact(dep: Deployment, expected: Iterable[Grant]) -> list[str]:
    grants, problems = iam_grants(dep)
    wanted = set(expected)
    problems += [f"missing grant: {g}" for g in sorted(wanted - grants)]
    problems += [f"unexpected grant: {g}" for g in sorted(grants - wanted)]
    return problems


def check_no_basic_roles(dep: Deployment) -> list[str]:
    grants, problems = iam_grants(dep)
    return problems + [f"basic role granted: {g}" for g in sorted(grants) if g.role in BASIC_ROLES]


def check_public_access(dep: Deployment, webhook_service: str | None) -> list[str]:
    """allUsers/allAuthenticatedUsers nowhere, except run.invoker on the webhook service."""
    allowed = (
        {Grant(f"run:{webhook_service}", "roles/run.invoker", "allUsers")}
        if webhook_service
        else set()
    )
    grants, problems = iam_grants(dep)
    allowed_present = allowed & grants
    for g in sorted(grants - allowed):
        if g.member in PUBLIC_MEMBERS:
            problems.append(f"public grant: {g}")
    for r in dep.resources:
        if r.typ in IAM_TYPES:
            continue
        for s in strings_in(r.inputs):
            if s in PUBLIC_MEMBERS:
                problems.append(f"{r.name}: mentions {s}")
    if webhook_service and not allowed_present:
        problems.append(f"the webhook service {webhook_service} is not invokable by allUsers")
    return problems


def check_buckets_private(dep: Deployment) -> list[str]:
    problems = []
    buckets = dep.of_type(BUCKET)
    if not buckets:
        problems.append("no buckets recorded")
    for b in buckets:
        if b.inputs.get("uniformBucketLevelAccess") is not True:
            problems.append(f"bucket {b.inputs.get('name')}: uniform bucket-level access is off")
        if b.inputs.get("publicAccessPrevention") != "enforced":
            problems.append(f"bucket {b.inputs.get('name')}: public access prevention not enforced")
    _, iam_problems = iam_grants(dep)
    return problems + iam_problems


# --- functions and their environment -----------------------------------------------------


def check_function_env(
    dep: Deployment,
    plain_env: Mapping[str, set[str]],
    secret_env: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """Each function sets exactly these plain names and these secret names (name → secret id)."""
    problems: list[str] = []
    for entry_point in sorted(set(plain_env) | set(secret_env)):
        fn = dep.function(entry_point)
        if fn is None:
            problems.append(f"{entry_point}: no such function")
            continue
        service = fn.inputs.get("serviceConfig", {})
        names = set(service.get("environmentVariables", {}))
        secrets = {
            s.get("key"): s.get("secret")
            for s in service.get("secretEnvironmentVariables", []) or []
        }
        # Besides the constants, config.py reads one key variable per configured gateway.
        gateways = json.loads(
            service.get("environmentVariables", {}).get(cfg.ENV_COMPAT_LANES, "{}")
        )
        known = cfg.ALL_ENV_NAMES | {cfg.compat_key_env(label) for label in gateways}
        for unknown in sorted((names | set(secrets)) - known):
            problems.append(
                f"{entry_point}: sets {unknown}, which bananabatch.config does not read"
            )
        for missing in sorted(plain_env.get(entry_point, set()) - names):
            problems.append(f"{entry_point}: does not set {missing}")
        for extra in sorted(names - plain_env.get(entry_point, set())):
            problems.append(f"{entry_point}: sets {extra}, which it should not")
        want = dict(secret_env.get(entry_point, {}))
        if secrets != want:
            problems.append(f"{entry_point}: secret environment is {secrets}, expected {want}")
        for name in (cfg.ENV_GEMINI_API_KEY, cfg.ENV_WEBHOOK_SECRET):
            if name in names:
                problems.append(f"{entry_point}: {name} is a plain environment variable")
        problems += [f"{entry_point}: {p}" for p in _gateway_keys_in_plain(names, gateways)]
    return problems


def _gateway_keys_in_plain(names: set[str], gateways: Mapping[str, Any]) -> list[str]:
    """Gateway keys belong in secret variables only: neither as plain variables nor in the
    gateways' JSON."""
    problems = [
        f"{name} (a gateway key) is a plain variable"
        for name in sorted(names)
        if name.startswith(cfg.COMPAT_KEY_ENV_PREFIX)
    ]
    for label, lane in gateways.items():
        if isinstance(lane, Mapping) and lane.get("api_key"):
            problems.append(f"gateway {label}'s key is in the plain {cfg.ENV_COMPAT_LANES}")
    return problems


def check_secret_env_versions(dep: Deployment) -> list[str]:
    """Each secret env var names a secret and a version this deployment created."""
    problems: list[str] = []
    secret_ids = {s.inputs.get("secretId"): s for s in dep.of_type(SECRET)}
    versions = {
        (_last(v.inputs.get("secret", "")), v.state.get("version"))
        for v in dep.of_type(SECRET_VERSION)
    }
    for fn in dep.of_type(FUNCTION):
        for s in fn.inputs.get("serviceConfig", {}).get("secretEnvironmentVariables", []) or []:
            if s.get("secret") not in secret_ids:
                problems.append(
                    f"{fn.inputs.get('name')}: {s.get('key')} uses unknown secret {s.get('secret')}"
                )
            elif (s.get("secret"), s.get("version")) not in versions:
                problems.append(
                    f"{fn.inputs.get('name')}: {s.get('key')} uses version {s.get('version')} "
                    f"of {s.get('secret')}, which this stack did not write"
                )
    return problems


def check_secret_values_hidden(dep: Deployment, values: Iterable[str]) -> list[str]:
    """Secret versions hold their data as secrets, and no value appears anywhere unwrapped."""
    problems: list[str] = []
    secret_values = set(values)
    for v in dep.of_type(SECRET_VERSION):
        if not is_secret(v.inputs.get("secretData")):
            problems.append(f"{v.name}: secretData is not a secret output")
    for r in dep.resources:
        for key, value in r.inputs.items():
            wrapped = is_secret(value) or (r.typ == SECRET_VERSION and key == "secretData")
            if not wrapped and _holds(strings_in(value), secret_values):
                problems.append(f"{r.name}.{key}: holds a secret value in plain text")
    for key, value in dep.outputs.items():
        if _holds(strings_in(value), secret_values):
            problems.append(f"stack output {key} exposes a secret value")
    return problems


def _holds(texts: Iterable[str], secret_values: set[str]) -> bool:
    """Whether any text contains a secret value, whole or inside it (a JSON document)."""
    return any(secret in text for text in texts for secret in secret_values)


# --- triggers, subscriptions, schedule ----------------------------------------------------


def check_upload_trigger(
    dep: Deployment,
    *,
    inbox_bucket: str,
    uploads_topic: str,
    invoker_email: str,
    dead_letter_topic: str,
) -> list[str]:
    """Finalized inbox objects are announced on the uploads topic, which a push subscription
    with a dead-letter policy feeds to on_upload; no function has an Eventarc trigger."""
    problems = []
    topic = dep.topic(uploads_topic)
    notifications = dep.of_type(NOTIFICATION)
    on_inbox = [n for n in notifications if n.inputs.get("bucket") == inbox_bucket]
    if len(on_inbox) != 1:
        problems.append(f"{inbox_bucket}: {len(on_inbox)} notifications, expected 1")
    for n in on_inbox:
        if topic is None or n.inputs.get("topic") != topic.id:
            problems.append(
                f"{inbox_bucket}: notifies {n.inputs.get('topic')}, not {uploads_topic}"
            )
        if n.inputs.get("eventTypes") != ["OBJECT_FINALIZE"]:
            problems.append(f"{inbox_bucket}: event types {n.inputs.get('eventTypes')}")
        if n.inputs.get("payloadFormat") != "JSON_API_V1":
            problems.append(f"{inbox_bucket}: payload format {n.inputs.get('payloadFormat')}")
    for n in notifications:
        if n not in on_inbox:
            problems.append(f"{n.inputs.get('bucket')}: notifies too; only the inbox may")
    problems += check_push_subscription(
        dep,
        topic_name=uploads_topic,
        entry_point="on_upload",
        invoker_email=invoker_email,
        dead_letter_topic=dead_letter_topic,
    )
    for fn in dep.of_type(FUNCTION):
        if fn.inputs.get("eventTrigger"):
            problems.append(
                f"{fn.inputs.get('name')}: has an Eventarc trigger; functions are fed by push"
            )
    return problems


def _push_target_problems(
    topic_name: str, entry_point: str, push: dict[str, Any], uri: str | None, invoker_email: str
) -> list[str]:
    """The push endpoint is the function's URL, called with the invoker's OIDC token."""
    problems = []
    if not uri or not str(push.get("pushEndpoint", "")).startswith(uri + "/"):
        problems.append(
            f"{topic_name}: pushes to {push.get('pushEndpoint')}, not {entry_point} ({uri})"
        )
    oidc = push.get("oidcToken") or {}
    if oidc.get("serviceAccountEmail") != invoker_email:
        problems.append(f"{topic_name}: push identity {oidc.get('serviceAccountEmail')}")
    if oidc.get("audience") != uri:
        problems.append(f"{topic_name}: OIDC audience {oidc.get('audience')}, expected {uri}")
    return problems


def check_push_subscription(
    dep: Deployment,
    *,
    topic_name: str,
    entry_point: str,
    invoker_email: str,
    dead_letter_topic: str,
) -> list[str]:
    topic = dep.topic(topic_name)
    fn = dep.function(entry_point)
    if topic is None or fn is None:
        return [f"{topic_name} → {entry_point}: topic or function missing"]
    subs = [s for s in dep.of_type(SUBSCRIPTION) if s.inputs.get("topic") == topic.id]
    pushing = [s for s in subs if s.inputs.get("pushConfig")]
    if len(pushing) != 1:
        return [f"{topic_name}: {len(pushing)} push subscriptions, expected 1"]
    sub = pushing[0]
    push = sub.inputs["pushConfig"]
    uri = fn.state.get("serviceConfig", {}).get("uri")
    problems = _push_target_problems(topic_name, entry_point, push, uri, invoker_email)
    dead = sub.inputs.get("deadLetterPolicy") or {}
    dlq = dep.topic(dead_letter_topic)
    if dlq is None or dead.get("deadLetterTopic") != dlq.id:
        problems.append(f"{topic_name}: dead-letter topic {dead.get('deadLetterTopic')}")
    attempts = dead.get("maxDeliveryAttempts")
    if attempts is None or not 5 <= attempts <= 100:
        problems.append(f"{topic_name}: max delivery attempts {attempts}, Pub/Sub allows 5..100")
    retry = sub.inputs.get("retryPolicy") or {}
    if not retry.get("minimumBackoff") or not retry.get("maximumBackoff"):
        problems.append(f"{topic_name}: no exponential retry policy")
    timeout = fn.inputs.get("serviceConfig", {}).get("timeoutSeconds") or 0
    if (sub.inputs.get("ackDeadlineSeconds") or 0) < timeout:
        problems.append(f"{topic_name}: ack deadline shorter than {entry_point}'s timeout")
    if (sub.inputs.get("expirationPolicy") or {}).get("ttl") != "":
        problems.append(f"{topic_name}: subscription may expire when idle")
    return problems


def check_dead_letter_kept(dep: Deployment, dead_letter_topic: str) -> list[str]:
    topic = dep.topic(dead_letter_topic)
    if topic is None:
        return [f"no dead-letter topic {dead_letter_topic}"]
    keepers = [
        s
        for s in dep.of_type(SUBSCRIPTION)
        if s.inputs.get("topic") == topic.id and not s.inputs.get("pushConfig")
    ]
    if len(keepers) != 1:
        return [
            f"{dead_letter_topic}: {len(keepers)} subscriptions keep failed messages, expected 1"
        ]
    sub = keepers[0]
    problems = []
    if sub.inputs.get("messageRetentionDuration") != "604800s":
        problems.append(
            f"{dead_letter_topic}: keeps messages {sub.inputs.get('messageRetentionDuration')}"
        )
    if (sub.inputs.get("expirationPolicy") or {}).get("ttl") != "":
        problems.append(f"{dead_letter_topic}: the keeping subscription may expire when idle")
    return problems


def check_schedule(dep: Deployment, *, schedule: str, tick_topic: str) -> list[str]:
    jobs = dep.of_type(SCHEDULER_JOB)
    topic = dep.topic(tick_topic)
    if len(jobs) != 1 or topic is None:
        return [
            f"{len(jobs)} scheduler jobs and tick topic {topic and topic.id}; expected one of each"
        ]
    job = jobs[0]
    problems = []
    if job.inputs.get("schedule") != schedule:
        problems.append(
            f"scheduler: schedule {job.inputs.get('schedule')!r}, expected {schedule!r}"
        )
    target = job.inputs.get("pubsubTarget") or {}
    if target.get("topicName") != topic.id:
        problems.append(f"scheduler: publishes to {target.get('topicName')}, expected {topic.id}")
    try:
        json.loads(base64.b64decode(target.get("data", ""), validate=True))
    except (binascii.Error, ValueError):
        problems.append("scheduler: data is not base64-encoded JSON")
    return problems
