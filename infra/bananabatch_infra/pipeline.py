"""The whole bananabatch pipeline on Google Cloud as one Pulumi ComponentResource.

Delivery design (differs from a plain "Pub/Sub trigger" on purpose): every event-driven
function is fed by a push subscription this program owns, not by an Eventarc-managed one,
because only an owned subscription can carry a dead-letter policy; Eventarc's subscription
would retry a poison message until retention drops it, silently. Uploads reach it the same
way: the inbox bucket's Pub/Sub notification publishes each finalized object on our
`uploads` topic. The push body is Pub/Sub's standard envelope, which functions-framework
turns into a `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent (the topic path in
the push URL becomes the event's source). Pushes are internal traffic, so the pushed
functions take internal ingress only.

IAM is bound on the narrowest resource GCP allows; the few project-level grants say why.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pulumi
import pulumi_gcp as gcp

import bananabatch.config as cfg
from bananabatch.core.records import cache_path, claim_path
from bananabatch.core.references import DEFAULT_REFERENCE_PREFIX
from bananabatch.core.ttl import TTL_FIELD
from bananabatch_infra import FUNCTIONS_DIR, killswitch, monitoring
from bananabatch_infra.source import SourceArchive, build_archive
from bananabatch_infra.stack_config import PipelineArgs

RUNTIME: Final = "python312"
# Event-driven functions may run at most 540 s; a push subscription waits at most 600 s.
EVENT_TIMEOUT_SECONDS: Final = 540
PUSH_ACK_DEADLINE_SECONDS: Final = 600
LABELS: Final = {"app": "bananabatch"}

REQUIRED_APIS: Final = (
    "cloudresourcemanager.googleapis.com",
    "iam.googleapis.com",
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "eventarc.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
    "firestore.googleapis.com",
    "cloudscheduler.googleapis.com",
    "secretmanager.googleapis.com",
    "logging.googleapis.com",
    "firebaserules.googleapis.com",
    "monitoring.googleapis.com",
)
VERTEX_API: Final = "aiplatform.googleapis.com"
CACHE_COLLECTION: Final = cache_path("x").rpartition("/")[0]
INFLIGHT_COLLECTION: Final = claim_path("x").rpartition("/")[0]
DENY_ALL_RULES: Final = """rules_version = '2';
service cloud.firestore {
  match /databases/{database}/documents {
    match /{document=**} {
      allow read, write: if false;
    }
  }
}
"""


@dataclass(frozen=True)
class FunctionSpec:
    key: str
    entry_point: str
    memory: str
    timeout_seconds: int
    max_instances: int
    description: str

    def function_name(self, prefix: str) -> str:
        return f"{prefix}-{self.entry_point.replace('_', '-')}"

    def account_id(self, prefix: str) -> str:
        return f"{prefix}-{self.key}"


# Memory and instance caps, deliberately:
# - upload streams an input of up to 1 GiB and stages request files; few run at once because
#   uploads are rare and each one creates many provider batches.
# - tick is a single instance so two ticks never race for the same batch capacity.
# - collect decodes one image at a time from a streamed result file (images are a few MB
#   each, base64 in JSON); parallelism across batches is where the throughput comes from.
#   The same function makes thumbnails, on `kind: thumbnails` messages of the same topic
#   (50 images each, a second or two): no new topic, subscription or filter. They share
#   its instances, so the cap is twice what collection alone needs: a throttled push is
#   retried, and every retry counts toward the dead-letter limit.
# - the webhook only verifies a signature and publishes, and must answer within seconds.
UPLOAD: Final = FunctionSpec(
    "upload",
    "on_upload",
    "1Gi",
    EVENT_TIMEOUT_SECONDS,
    5,
    "Validate an uploaded JSONL, plan and submit its batches",
)
TICK: Final = FunctionSpec(
    "tick",
    "on_tick",
    "512Mi",
    EVENT_TIMEOUT_SECONDS,
    1,
    "Poll unfinished batches, submit queued ones, signal finished ones",
)
COLLECT: Final = FunctionSpec(
    "collect",
    "on_batch_done",
    "2Gi",
    EVENT_TIMEOUT_SECONDS,
    20,
    "Collect a finished batch's images and item states; make thumbnails",
)
WEBHOOK: Final = FunctionSpec(
    "webhook",
    "on_gemini_webhook",
    "256Mi",
    30,
    10,
    "Receive Gemini batch webhooks, verify, publish batch-done",
)
PROVIDER_FUNCTIONS: Final = (UPLOAD, TICK, COLLECT)


def _openai_secret_users(env_name: str) -> tuple[FunctionSpec, ...]:
    """The functions an OpenAI secret reaches: the key those that call the provider (the
    webhook receiver only verifies signatures), the webhook secret the receiver."""
    return (WEBHOOK,) if env_name == cfg.ENV_OPENAI_WEBHOOK_SECRET else PROVIDER_FUNCTIONS


# The functions that call the sync lanes: upload serves a job's urgent lines right after it
# starts (pipeline/control.py start_running), the tick runs the ones that waited
# (pipeline/urgent.py recover). Collect and the webhook receiver never call a gateway.
SYNC_LANE_CALLERS: Final = (UPLOAD, TICK)


def _replicate_secret_users(env_name: str) -> tuple[FunctionSpec, ...]:
    """The token reaches the functions that submit (upload, tick), poll (tick) and fetch
    (collect, on a verified callback: pipeline/tasks.py); the signing secret the receiver,
    which holds no token (entrypoints.replicate_webhook)."""
    return (WEBHOOK,) if env_name == cfg.ENV_REPLICATE_WEBHOOK_SECRET else PROVIDER_FUNCTIONS


def _replicate_label(env_name: str) -> str:
    if env_name == cfg.ENV_REPLICATE_WEBHOOK_SECRET:
        return "replicate-webhook"
    return "replicate-token"


def secret_label(env_name: str) -> str:
    """A short, stable label of an OpenAI secret for resource names."""
    return "openai-webhook" if env_name == cfg.ENV_OPENAI_WEBHOOK_SECRET else "openai-key"


# Only with a billing account configured (killswitch.py): reads budget notifications, pauses.
BILLING: Final = FunctionSpec(
    "billing",
    "on_billing_alert",
    "256Mi",
    60,
    1,
    "Pause all submission when the Cloud Billing budget is reached",
)


class Pipeline(pulumi.ComponentResource):
    """Buckets, Firestore, topics, secrets, functions, scheduler and their IAM."""

    def __init__(
        self,
        name: str,
        args: PipelineArgs,
        *,
        source_root: Path = FUNCTIONS_DIR,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("bananabatch:index:Pipeline", name, None, opts)
        self._name = name
        self._args = args
        a = args

        self.apis = self._enable_apis()
        project_number = gcp.organizations.get_project_output(project_id=a.project).number
        storage_agent = gcp.storage.get_project_service_account_output(project=a.project)
        pubsub_agent = gcp.projects.ServiceIdentity(
            f"{name}-pubsub-agent",
            project=a.project,
            service="pubsub.googleapis.com",
            opts=self._opts(),
        )

        # --- storage ---------------------------------------------------------------------
        self.inbox_bucket = self._bucket("inbox", a.inbox_bucket, self._inbox_lifecycle())
        self.results_bucket = self._bucket(
            "results", a.results_bucket, self._results_lifecycle(), versioned=a.results_versioning
        )
        # Holds only content-addressed function archives; nothing public, nothing expires,
        # because a rollback redeploys an older archive by name.
        self.source_bucket = self._bucket("source", a.source_bucket, [])
        self.archive: SourceArchive = build_archive(source_root)
        self.source_object = gcp.storage.BucketObject(
            f"{name}-source-archive",
            bucket=self.source_bucket.name,
            name=self.archive.object_name,
            source=pulumi.FileAsset(str(self.archive.write())),
            content_type="application/zip",
            opts=self._opts(),
        )

        # --- Firestore -------------------------------------------------------------------
        self.database = self._firestore()

        # --- Pub/Sub topics --------------------------------------------------------------
        self.tick_topic = self._topic("tick")
        self.batch_done_topic = self._topic("batch-done")
        # Retained for a week so a subscriber created after a job finished can still seek
        # back to its completion message.
        self.completions_topic = self._topic("completions", retention="604800s")
        self.dead_letter_topic = self._topic("dead-letter")
        self.uploads_topic = self._topic("uploads")
        self.dead_letter_subscription = gcp.pubsub.Subscription(
            f"{name}-dead-letter-keep",
            name=a.topic_name("dead-letter-keep"),
            project=a.project,
            topic=self.dead_letter_topic.id,
            # The longest Pub/Sub keeps unacknowledged messages; never expires for inactivity,
            # because a quiet dead-letter queue is the normal case.
            message_retention_duration="604800s",
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
            ack_deadline_seconds=60,
            labels=LABELS,
            opts=self._opts(),
        )

        # --- secrets ---------------------------------------------------------------------
        self.gemini_secret: gcp.secretmanager.Secret | None = None
        self.gemini_secret_version: gcp.secretmanager.SecretVersion | None = None
        if a.uses_gemini and a.gemini_api_key is not None:
            self.gemini_secret, self.gemini_secret_version = self._secret(
                "gemini-api-key", a.gemini_api_key
            )
        self.webhook_secret: gcp.secretmanager.Secret | None = None
        self.webhook_secret_version: gcp.secretmanager.SecretVersion | None = None
        if a.webhook_mode is cfg.WebhookMode.STATIC and a.webhook_signing_secret is not None:
            self.webhook_secret, self.webhook_secret_version = self._secret(
                "webhook-signing-secret", a.webhook_signing_secret
            )
        # OpenAI (gpt-image lines): its key for the functions that call it, and the signing
        # secret of its project webhook endpoint for the receiver.
        self.openai_secrets: dict[
            str, tuple[gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]
        ] = {}
        if a.openai_enabled and a.openai_api_key is not None:
            self.openai_secrets[cfg.ENV_OPENAI_API_KEY] = self._secret(
                "openai-api-key", a.openai_api_key
            )
        if a.openai_webhook_on and a.openai_webhook_secret is not None:
            self.openai_secrets[cfg.ENV_OPENAI_WEBHOOK_SECRET] = self._secret(
                "openai-webhook-secret", a.openai_webhook_secret
            )

        self._lane_secrets()

        # --- identities ------------------------------------------------------------------
        specs = [*PROVIDER_FUNCTIONS, *([WEBHOOK] if a.webhook_on else [])]
        self.accounts = {
            spec.key: self._account(
                spec.account_id(a.name_prefix), f"bananabatch {spec.entry_point}"
            )
            for spec in specs
        }
        # Delivers events: the push subscriptions' OIDC identity.
        self.invoker = self._account(f"{a.name_prefix}-invoker", "bananabatch event delivery")
        # Builds function images; the default build identity of new projects lacks the rights.
        self.builder = self._account(f"{a.name_prefix}-build", "bananabatch function builds")

        storage_agent_member = storage_agent.email_address.apply(lambda e: f"serviceAccount:{e}")
        pubsub_agent_member = pubsub_agent.email.apply(lambda e: f"serviceAccount:{e}")
        self._pubsub_agent_member = pubsub_agent_member
        grants = self._runtime_grants(specs)

        # Cloud Storage announces each new inbox object on our `uploads` topic: its service
        # agent may publish there and nowhere else.
        storage_publisher = self._topic_role(
            "storage-agent-uploads",
            self.uploads_topic,
            "roles/pubsub.publisher",
            storage_agent_member,
        )
        self.upload_notification = gcp.storage.Notification(
            f"{name}-inbox-notification",
            bucket=self.inbox_bucket.name,
            topic=self.uploads_topic.id,
            payload_format="JSON_API_V1",
            event_types=["OBJECT_FINALIZE"],
            opts=self._opts(storage_publisher),
        )
        # Pub/Sub mints the OIDC tokens for push deliveries as the invoker account; projects
        # created before April 2021 need this grant explicitly, so it is given on that account.
        token_creator = gcp.serviceaccount.IAMMember(
            f"{name}-pubsub-agent-token-creator",
            service_account_id=self.invoker.name,
            role="roles/iam.serviceAccountTokenCreator",
            member=pubsub_agent_member,
            opts=self._opts(),
        )
        self._topic_role(
            "pubsub-agent-dead-letter",
            self.dead_letter_topic,
            "roles/pubsub.publisher",
            pubsub_agent_member,
        )

        build_grants = self._build_identity(project_number)

        # --- functions -------------------------------------------------------------------
        self.functions: dict[str, gcp.cloudfunctionsv2.Function] = {}
        webhook_url: pulumi.Output[str] | None = None
        if a.webhook_on:
            # Created first: the functions that create batches need its URL in dynamic mode,
            # and it needs nothing from them, so there is no cycle.
            receiver_env: dict[str, pulumi.Input[str]] = {}
            if a.webhook_mode is cfg.WebhookMode.DYNAMIC:
                # What per-job JWTs must name as `aud`: by default this receiver's URL, which
                # is known before the function exists (no cycle).
                receiver_env[cfg.ENV_WEBHOOK_AUDIENCE] = a.webhook_audience or a.webhook_url(
                    WEBHOOK.function_name(a.name_prefix)
                )
                receiver_env[cfg.ENV_WEBHOOK_ISSUER] = a.webhook_issuer
            self.functions[WEBHOOK.key] = self._function(
                WEBHOOK, grants[WEBHOOK.key] + build_grants, extra_env=receiver_env
            )
            webhook_url = self.functions[WEBHOOK.key].url
        creator_env: dict[str, pulumi.Input[str]] = {}
        # Dynamic Gemini webhooks name the receiver per batch; Replicate's predictions name
        # it (with its /replicate sub-path, pipeline/tasks.py) per task.
        wants_url = a.webhook_mode is cfg.WebhookMode.DYNAMIC or a.replicate_webhook_on
        if wants_url and webhook_url is not None:
            creator_env[cfg.ENV_WEBHOOK_URL] = webhook_url
        self.functions[UPLOAD.key] = self._function(
            UPLOAD, grants[UPLOAD.key] + build_grants, extra_env=creator_env
        )
        self.functions[TICK.key] = self._function(
            TICK, grants[TICK.key] + build_grants, extra_env=creator_env
        )
        self.functions[COLLECT.key] = self._function(
            COLLECT, grants[COLLECT.key] + build_grants, extra_env=creator_env
        )

        invokers = {
            spec.key: self._run_invoker(
                spec.key, self.functions[spec.key], self._member_of(self.invoker)
            )
            for spec in PROVIDER_FUNCTIONS
        }
        if a.webhook_on:
            # Gemini cannot present Google credentials; the function authenticates every
            # delivery by its signature instead, so this one service is open to callers.
            self._run_invoker(WEBHOOK.key, self.functions[WEBHOOK.key], "allUsers")

        # --- push subscriptions ------------------------------------------------------------
        self.tick_subscription = self._push_subscription(
            "tick",
            self.tick_topic,
            self.functions[TICK.key],
            invokers[TICK.key],
            # A missed tick is replaced by the next one a minute later: old ticks are not
            # worth keeping, and a backlog of them after an outage would only cost calls.
            retention="600s",
            min_backoff="10s",
            max_backoff="60s",
            max_attempts=5,
            extra_deps=[token_creator],
        )
        self.batch_done_subscription = self._push_subscription(
            "batch-done",
            self.batch_done_topic,
            self.functions[COLLECT.key],
            invokers[COLLECT.key],
            # Collection resumes from its cursor, so retries are cheap; throttling while at
            # max instances also counts as a failed attempt, hence the generous limit. A batch
            # that still ends in the dead-letter queue is signalled again by the next tick.
            retention="604800s",
            min_backoff="10s",
            max_backoff="600s",
            max_attempts=15,
            extra_deps=[token_creator],
        )
        self.uploads_subscription = self._push_subscription(
            "uploads",
            self.uploads_topic,
            self.functions[UPLOAD.key],
            invokers[UPLOAD.key],
            # An upload is a paid job waiting to start: kept the longest Pub/Sub allows.
            # A redelivery is harmless (the job id comes from the object's generation).
            retention="604800s",
            min_backoff="10s",
            max_backoff="600s",
            max_attempts=10,
            extra_deps=[token_creator, self.upload_notification],
        )
        for label, subscription in (
            ("tick", self.tick_subscription),
            ("batch-done", self.batch_done_subscription),
            ("uploads", self.uploads_subscription),
        ):
            # The dead-letter forwarder acknowledges the original on the source subscription.
            gcp.pubsub.SubscriptionIAMMember(
                f"{name}-pubsub-agent-{label}-subscriber",
                project=a.project,
                subscription=subscription.name,
                role="roles/pubsub.subscriber",
                member=pubsub_agent_member,
                opts=self._opts(),
            )

        self.scheduler_job = self._scheduler()
        self.kill_switch = killswitch.build(
            self,
            BILLING,
            project_number=project_number,
            token_creator=token_creator,
            build_grants=build_grants,
        )

        self.monitoring = monitoring.build(self)

        self.webhook_url = webhook_url
        self.outputs = self._stack_outputs(webhook_url)
        self.register_outputs(dict(self.outputs))

    # --- building blocks -------------------------------------------------------------------

    def _lane_secrets(self) -> None:
        """The lanes' secrets (issue 20), each in Secret Manager on its own."""
        a = self._args

        # Replicate (the async lane): its token for the functions that submit, poll and
        # fetch; its webhook signing secret for the receiver.
        self.replicate_secrets: dict[
            str, tuple[gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]
        ] = {}
        if a.replicate_enabled and a.replicate_api_token is not None:
            self.replicate_secrets[cfg.ENV_REPLICATE_API_TOKEN] = self._secret(
                "replicate-api-token", a.replicate_api_token
            )
        if a.replicate_webhook_on and a.replicate_webhook_secret is not None:
            self.replicate_secrets[cfg.ENV_REPLICATE_WEBHOOK_SECRET] = self._secret(
                "replicate-webhook-secret", a.replicate_webhook_secret
            )
        # Each OpenAI-compatible gateway's key, a secret of its own (the lanes' JSON in the
        # environment carries none), for the functions that call the sync lanes.
        self.compat_key_secrets: dict[
            str, tuple[gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]
        ] = {
            label: self._secret(f"compat-key-{label}", key)
            for label, key in sorted(a.compat_lane_keys.items())
        }

    def _runtime_grants(self, specs: list[FunctionSpec]) -> dict[str, list[pulumi.Resource]]:
        """Each function's runtime roles, keyed by function, so it can wait for them."""
        a = self._args
        grants: dict[str, list[pulumi.Resource]] = {spec.key: [] for spec in specs}

        # Firestore has no per-collection or per-database IAM: datastore.user on the project
        # is the narrowest grant that lets a function read and write documents. The webhook
        # receiver is public and reads no state (pipeline/webhook.py), so it gets none.
        for spec in specs:
            if spec is WEBHOOK:
                continue
            grants[spec.key].append(
                self._project_role(spec.key, "roles/datastore.user", self._member(spec.key))
            )
        grants[UPLOAD.key].append(
            self._bucket_role(
                "upload-inbox",
                self.inbox_bucket,
                "roles/storage.objectViewer",
                self._member(UPLOAD.key),
            )
        )
        # objectUser, not objectCreator: the pipeline overwrites its own reports and cursors,
        # and overwriting needs delete; objectAdmin would add IAM rights it never uses.
        for spec in PROVIDER_FUNCTIONS:
            grants[spec.key].append(
                self._bucket_role(
                    f"{spec.key}-results",
                    self.results_bucket,
                    "roles/storage.objectUser",
                    self._member(spec.key),
                )
            )
        for spec in specs:
            grants[spec.key].append(
                self._topic_role(
                    f"{spec.key}-batch-done",
                    self.batch_done_topic,
                    "roles/pubsub.publisher",
                    self._member(spec.key),
                )
            )
        for spec in PROVIDER_FUNCTIONS:
            grants[spec.key].append(
                self._topic_role(
                    f"{spec.key}-completions",
                    self.completions_topic,
                    "roles/pubsub.publisher",
                    self._member(spec.key),
                )
            )
        self._secret_grants(grants)
        if a.uses_gemini:
            self._gemini_grants(grants)
        if a.provider is cfg.ProviderKind.VERTEX:
            self._vertex_grants(grants)
        return grants

    def _secret_grants(self, grants: dict[str, list[pulumi.Resource]]) -> None:
        """Read access to the secrets, for the functions that use them."""
        if self.gemini_secret is not None:
            for spec in PROVIDER_FUNCTIONS:
                grants[spec.key].append(
                    self._secret_role(
                        f"{spec.key}-gemini-key", self.gemini_secret, self._member(spec.key)
                    )
                )
        if self.webhook_secret is not None:
            grants[WEBHOOK.key].append(
                self._secret_role("webhook-signing", self.webhook_secret, self._member(WEBHOOK.key))
            )
        for env_name, (secret, _version) in self.openai_secrets.items():
            for spec in _openai_secret_users(env_name):
                grants[spec.key].append(
                    self._secret_role(
                        f"{spec.key}-{secret_label(env_name)}", secret, self._member(spec.key)
                    )
                )
        for env_name, (secret, _version) in self.replicate_secrets.items():
            for spec in _replicate_secret_users(env_name):
                grants[spec.key].append(
                    self._secret_role(
                        f"{spec.key}-{_replicate_label(env_name)}", secret, self._member(spec.key)
                    )
                )
        for label, (secret, _version) in self.compat_key_secrets.items():
            for spec in SYNC_LANE_CALLERS:
                grants[spec.key].append(
                    self._secret_role(
                        f"{spec.key}-compat-key-{label}", secret, self._member(spec.key)
                    )
                )

    def _gemini_grants(self, grants: dict[str, list[pulumi.Resource]]) -> None:
        """Reading reference images and signing their URLs as itself (Gemini only)."""
        name = self._name
        # A reference image under the inbox's references/ is read by whoever the batch that
        # names it reaches it through: the function that made the batch, since a gs://
        # reference goes to Gemini as a V4 URL it signs (adapters/gcp/storage.py signed_url),
        # or Vertex's own agent. Upload, tick and collect all make batches; upload already
        # reads the whole inbox. Read is conditioned on the references/ prefix.
        reference_readers = [spec for spec in PROVIDER_FUNCTIONS if spec is not UPLOAD]
        for spec in reference_readers:
            grants[spec.key].append(self._references_reader(spec.key, self._member(spec.key)))
        for spec in PROVIDER_FUNCTIONS:
            # The signature: the IAM signBlob API, as the function's own account (its
            # metadata-server credentials hold no private key).
            grants[spec.key].append(
                gcp.serviceaccount.IAMMember(
                    f"{name}-{spec.key}-signs-as-itself",
                    service_account_id=self.accounts[spec.key].name,
                    role="roles/iam.serviceAccountTokenCreator",
                    member=self._member(spec.key),
                    opts=self._opts(),
                )
            )

    def _vertex_grants(self, grants: dict[str, list[pulumi.Resource]]) -> None:
        """Vertex AI use, and its service agent's access to requests and references."""
        a, name = self._args, self._name
        vertex_agent = gcp.projects.ServiceIdentity(
            f"{name}-vertex-agent",
            project=a.project,
            service=VERTEX_API,
            opts=self._opts(),
        )
        for spec in PROVIDER_FUNCTIONS:
            # Vertex AI offers no binding narrower than the project.
            grants[spec.key].append(
                self._project_role(
                    f"{spec.key}-vertex", "roles/aiplatform.user", self._member(spec.key)
                )
            )
        # Vertex reads each batch's request file and writes its predictions itself.
        vertex_member = vertex_agent.email.apply(lambda e: f"serviceAccount:{e}")
        self._bucket_role(
            "vertex-results", self.results_bucket, "roles/storage.objectUser", vertex_member
        )
        # ... and the gs:// reference images its rows name.
        self._references_reader("vertex", vertex_member)

    def _references_reader(self, label: str, member: pulumi.Input[str]) -> pulumi.Resource:
        a = self._args
        prefix = f"projects/_/buckets/{a.inbox_bucket}/objects/{DEFAULT_REFERENCE_PREFIX}"
        return gcp.storage.BucketIAMMember(
            f"{self._name}-bucket-{label}-inbox-references",
            bucket=self.inbox_bucket.name,
            role="roles/storage.objectViewer",
            member=member,
            condition=gcp.storage.BucketIAMMemberConditionArgs(
                title="inbox-references-only",
                description="Read reference images under the inbox's references/ prefix",
                expression=f'resource.name.startsWith("{prefix}")',
            ),
            opts=self._opts(),
        )

    def _build_identity(self, project_number: pulumi.Output[str]) -> list[pulumi.Resource]:
        """The image repository and the build account's grants; functions wait for them."""
        a, name = self._args, self._name
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-images",
            project=a.project,
            location=a.region,
            repository_id=f"{a.name_prefix}-functions",
            format="DOCKER",
            description="bananabatch function images",
            # Every deploy adds an image; keeping a few bounds the storage bill.
            cleanup_policies=[
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="keep-recent",
                    action="KEEP",
                    most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                        keep_count=5
                    ),
                ),
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="delete-old",
                    action="DELETE",
                    condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                        older_than="2592000s"
                    ),
                ),
            ],
            labels=LABELS,
            opts=self._opts(),
        )
        return [
            # Build logs can only be granted on the project.
            self._project_role(
                "build-logs", "roles/logging.logWriter", self._member_of(self.builder)
            ),
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-build-images",
                project=a.project,
                location=a.region,
                repository=self.repository.name,
                role="roles/artifactregistry.writer",
                member=self._member_of(self.builder),
                opts=self._opts(),
            ),
            # Cloud Functions copies the archive into its own staging bucket, which exists only
            # after the first deploy, so read access is conditioned on that bucket's name.
            gcp.projects.IAMMember(
                f"{name}-build-staged-source",
                project=a.project,
                role="roles/storage.objectViewer",
                member=self._member_of(self.builder),
                condition=gcp.projects.IAMMemberConditionArgs(
                    title="gcf-staged-source-only",
                    description="Read the function source Cloud Functions staged for the build",
                    expression=project_number.apply(
                        lambda n: (
                            'resource.name.startsWith("projects/_/buckets/'
                            f'gcf-v2-sources-{n}-{a.region}")'
                        )
                    ),
                ),
                opts=self._opts(),
            ),
        ]

    def _scheduler(self) -> gcp.cloudscheduler.Job:
        a = self._args
        return gcp.cloudscheduler.Job(
            f"{self._name}-tick",
            name=a.topic_name("tick"),
            project=a.project,
            region=a.region,
            description="Safety-net tick: poll unfinished batches and submit queued ones",
            schedule=a.tick_schedule,
            time_zone=a.tick_time_zone,
            pubsub_target=gcp.cloudscheduler.JobPubsubTargetArgs(
                topic_name=self.tick_topic.id,
                data=base64.b64encode(json.dumps({"kind": "tick"}).encode()).decode(),
                attributes={"source": "cloud-scheduler"},
            ),
            # The next scheduled tick is the retry.
            retry_config=gcp.cloudscheduler.JobRetryConfigArgs(retry_count=0),
            opts=self._opts(),
        )

    def _stack_outputs(
        self, webhook_url: pulumi.Output[str] | None
    ) -> dict[str, pulumi.Input[str]]:
        a = self._args
        outputs: dict[str, pulumi.Input[str]] = {
            "inboxBucket": self.inbox_bucket.name,
            "resultsBucket": self.results_bucket.name,
            "completionsTopic": self.completions_topic.id,
            "deadLetterSubscription": self.dead_letter_subscription.id,
            "uploadCommand": pulumi.Output.concat(
                "gcloud storage cp prompts.jsonl gs://", self.inbox_bucket.name, "/"
            ),
            "subscribeCommand": pulumi.Output.concat(
                "gcloud pubsub subscriptions create bananabatch-completions-mine --project=",
                a.project,
                " --topic=",
                self.completions_topic.id,
            ),
            "statusCommand": self._status_command(),
        }
        if webhook_url is not None:
            outputs["webhookUrl"] = webhook_url
        outputs["dailyBudget"] = a.daily_budget_text
        outputs["billingKillSwitch"] = a.kill_switch_text
        outputs["alerts"] = (
            f"{len(self.monitoring.policies)} alert policies notify {a.alert_email}"
            if a.alert_email
            else f"{len(self.monitoring.policies)} alert policies open incidents in the console "
            "only: pulumi config set bananabatch:alertEmail you@example.com to be e-mailed"
        )
        return outputs

    def _opts(self, *extra: pulumi.Resource) -> pulumi.ResourceOptions:
        # Every resource waits for the APIs, or the first `pulumi up` on a fresh project fails.
        apis: list[pulumi.Resource] = list(getattr(self, "apis", []))
        return pulumi.ResourceOptions(parent=self, depends_on=[*apis, *extra])

    def _enable_apis(self) -> list[pulumi.Resource]:
        services = [*REQUIRED_APIS]
        if self._args.provider is cfg.ProviderKind.VERTEX:
            services.append(VERTEX_API)
        return [
            gcp.projects.Service(
                f"{self._name}-api-{service.split('.')[0]}",
                project=self._args.project,
                service=service,
                # Other workloads in the project may rely on these APIs.
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for service in services
        ]

    def _bucket(
        self,
        label: str,
        bucket_name: str,
        lifecycle: list[gcp.storage.BucketLifecycleRuleArgs],
        *,
        versioned: bool = False,
    ) -> gcp.storage.Bucket:
        a = self._args
        return gcp.storage.Bucket(
            f"{self._name}-{label}",
            name=bucket_name,
            project=a.project,
            location=a.buckets_location,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=versioned),
            lifecycle_rules=lifecycle,
            force_destroy=a.force_destroy,
            labels=LABELS,
            opts=self._opts(),
        )

    def _inbox_lifecycle(self) -> list[gcp.storage.BucketLifecycleRuleArgs]:
        return [
            # Intake reads an upload once; later stages work from the job's request files
            # and reports, so the original is kept only for reference.
            _delete_after(self._args.inbox_retention_days),
            _abort_stale_uploads(),
        ]

    def _results_lifecycle(self) -> list[gcp.storage.BucketLifecycleRuleArgs]:
        a = self._args
        rules = [
            # Staged request files (requests/batch-NNNN.jsonl), the reports (results.jsonl,
            # rejected.jsonl, failed.jsonl, summary.json) and Vertex prediction files are all
            # JSON or JSONL; images are not, so this rule leaves them alone.
            _delete_after(a.report_retention_days, suffixes=[".jsonl", ".json"]),
            _abort_stale_uploads(),
        ]
        if a.result_retention_days is not None:
            rules.append(_delete_after(a.result_retention_days))
        if a.results_versioning:
            # Versioning is a safety net against overwrites, not an archive.
            rules.append(
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(
                        days_since_noncurrent_time=7, with_state="ARCHIVED"
                    ),
                )
            )
        return rules

    def _firestore(self) -> gcp.firestore.Database:
        a = self._args
        db = gcp.firestore.Database(
            f"{self._name}-firestore",
            name=a.firestore_database,
            project=a.project,
            location_id=a.database_location,
            type="FIRESTORE_NATIVE",
            # Destroying the stack must not destroy job history; DEPLOY.md shows how to
            # delete the database on purpose. Delete protection refuses a delete from any
            # tool (console, gcloud) until it is switched off; point-in-time recovery keeps
            # seven days of versions to read or restore from after a bad write.
            deletion_policy="ABANDON",
            delete_protection_state=(
                "DELETE_PROTECTION_ENABLED"
                if a.firestore_delete_protection
                else "DELETE_PROTECTION_DISABLED"
            ),
            point_in_time_recovery_enablement=(
                "POINT_IN_TIME_RECOVERY_ENABLED"
                if a.firestore_pitr
                else "POINT_IN_TIME_RECOVERY_DISABLED"
            ),
            opts=self._opts(),
        )
        self._deny_all_rules(db)
        composite = {
            # batches of one job, oldest first (collect and finalize walk them in order)
            "batches-job-created": ["job_id", "created_at"],
            # batches in a set of states, oldest first (tick: what to poll, what to submit)
            "batches-state-created": ["state", "created_at"],
            # batches of one job in a set of states, oldest first
            "batches-job-state-created": ["job_id", "state", "created_at"],
            # job_id == X and state == Y without ordering is served by merging the
            # single-field indexes; this one keeps it to a single index scan
            "batches-job-state": ["job_id", "state"],
        }
        for label, fields in composite.items():
            gcp.firestore.Index(
                f"{self._name}-index-{label}",
                project=a.project,
                database=db.name,
                collection="batches",
                query_scope="COLLECTION",
                fields=[
                    gcp.firestore.IndexFieldArgs(field_path=f, order="ASCENDING") for f in fields
                ],
                opts=self._opts(db),
            )
        # Items in one state across all jobs (collection group `items`). Setting the index
        # config replaces the defaults, so the per-job (collection) index is listed again.
        gcp.firestore.Field(
            f"{self._name}-field-items-state",
            project=a.project,
            database=db.name,
            collection="items",
            field="state",
            index_config=gcp.firestore.FieldIndexConfigArgs(
                indexes=[
                    gcp.firestore.FieldIndexConfigIndexArgs(
                        query_scope="COLLECTION", order="ASCENDING"
                    ),
                    gcp.firestore.FieldIndexConfigIndexArgs(
                        query_scope="COLLECTION_GROUP", order="ASCENDING"
                    ),
                ]
            ),
            opts=self._opts(db),
        )
        # In-flight claims (pipeline/inflight.py) carry their expiry: a claim past it no
        # longer stands, and the store may delete it then.
        gcp.firestore.Field(
            f"{self._name}-ttl-inflight",
            project=a.project,
            database=db.name,
            collection=INFLIGHT_COLLECTION,
            field=TTL_FIELD,
            ttl_config=gcp.firestore.FieldTtlConfigArgs(),
            index_config=gcp.firestore.FieldIndexConfigArgs(),
            opts=self._opts(db),
        )
        if a.result_retention_days is not None:
            # Cache entries point at images; once images expire the entries must go too
            # (pipeline/cache.py writes the TTL field, each store keeps it as a timestamp).
            gcp.firestore.Field(
                f"{self._name}-ttl-cache",
                project=a.project,
                database=db.name,
                collection=CACHE_COLLECTION,
                field=TTL_FIELD,
                ttl_config=gcp.firestore.FieldTtlConfigArgs(),
                # Nothing queries the expiry, and indexing a timestamp that grows with time
                # creates a write hotspot.
                index_config=gcp.firestore.FieldIndexConfigArgs(),
                opts=self._opts(db),
            )
        return db

    def _deny_all_rules(self, db: gcp.firestore.Database) -> None:
        """Security rules that refuse every client (web or mobile SDK) request. The functions'
        service accounts use the server libraries, which IAM governs and rules do not, so
        only they can use the database."""
        a = self._args
        ruleset = gcp.firebaserules.Ruleset(
            f"{self._name}-firestore-rules",
            project=a.project,
            source=gcp.firebaserules.RulesetSourceArgs(
                files=[
                    gcp.firebaserules.RulesetSourceFileArgs(
                        name="firestore.rules", content=DENY_ALL_RULES
                    )
                ]
            ),
            opts=self._opts(db),
        )
        # The (default) database's release is "cloud.firestore"; a named database's carries
        # its name.
        release = (
            "cloud.firestore"
            if a.firestore_database == "(default)"
            else f"cloud.firestore/{a.firestore_database}"
        )
        gcp.firebaserules.Release(
            f"{self._name}-firestore-rules-release",
            project=a.project,
            name=release,
            ruleset_name=ruleset.name,
            opts=self._opts(ruleset),
        )

    def _topic(self, short: str, *, retention: str | None = None) -> gcp.pubsub.Topic:
        return gcp.pubsub.Topic(
            f"{self._name}-topic-{short}",
            name=self._args.topic_name(short),
            project=self._args.project,
            message_retention_duration=retention,
            labels=LABELS,
            opts=self._opts(),
        )

    def _secret(
        self, short: str, value: pulumi.Input[str]
    ) -> tuple[gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]:
        secret = gcp.secretmanager.Secret(
            f"{self._name}-secret-{short}",
            secret_id=f"{self._args.name_prefix}-{short}",
            project=self._args.project,
            replication=gcp.secretmanager.SecretReplicationArgs(
                auto=gcp.secretmanager.SecretReplicationAutoArgs()
            ),
            labels=LABELS,
            opts=self._opts(),
        )
        version = gcp.secretmanager.SecretVersion(
            f"{self._name}-secret-{short}-version",
            secret=secret.id,
            # Marked secret here whatever the caller passed, so it is encrypted in state.
            secret_data=pulumi.Output.secret(value),
            opts=self._opts(),
        )
        return secret, version

    def _account(self, account_id: str, display_name: str) -> gcp.serviceaccount.Account:
        return gcp.serviceaccount.Account(
            f"{self._name}-sa-{account_id}",
            account_id=account_id,
            project=self._args.project,
            display_name=display_name,
            opts=self._opts(),
        )

    def _member(self, key: str) -> pulumi.Output[str]:
        return self._member_of(self.accounts[key])

    @staticmethod
    def _member_of(account: gcp.serviceaccount.Account) -> pulumi.Output[str]:
        return account.email.apply(lambda e: f"serviceAccount:{e}")

    def _project_role(self, label: str, role: str, member: pulumi.Input[str]) -> pulumi.Resource:
        return gcp.projects.IAMMember(
            f"{self._name}-project-{label}-{role.split('/')[-1]}",
            project=self._args.project,
            role=role,
            member=member,
            opts=self._opts(),
        )

    def _bucket_role(
        self, label: str, bucket: gcp.storage.Bucket, role: str, member: pulumi.Input[str]
    ) -> pulumi.Resource:
        return gcp.storage.BucketIAMMember(
            f"{self._name}-bucket-{label}",
            bucket=bucket.name,
            role=role,
            member=member,
            opts=self._opts(),
        )

    def _topic_role(
        self, label: str, topic: gcp.pubsub.Topic, role: str, member: pulumi.Input[str]
    ) -> pulumi.Resource:
        return gcp.pubsub.TopicIAMMember(
            f"{self._name}-topic-{label}",
            project=self._args.project,
            topic=topic.name,
            role=role,
            member=member,
            opts=self._opts(),
        )

    def _secret_role(
        self, label: str, secret: gcp.secretmanager.Secret, member: pulumi.Input[str]
    ) -> pulumi.Resource:
        return gcp.secretmanager.SecretIamMember(
            f"{self._name}-secret-{label}",
            project=self._args.project,
            secret_id=secret.secret_id,
            role="roles/secretmanager.secretAccessor",
            member=member,
            opts=self._opts(),
        )

    def _run_invoker(
        self, label: str, function: gcp.cloudfunctionsv2.Function, member: pulumi.Input[str]
    ) -> pulumi.Resource:
        # A 2nd gen function is served by a Cloud Run service of the same name; invoking it
        # is governed by run.invoker on that service.
        return gcp.cloudrunv2.ServiceIamMember(
            f"{self._name}-run-invoker-{label}",
            project=self._args.project,
            location=self._args.region,
            name=function.name,
            role="roles/run.invoker",
            member=member,
            opts=self._opts(),
        )

    def _environment(self) -> dict[str, pulumi.Input[str]]:
        a = self._args
        env: dict[str, pulumi.Input[str]] = {
            cfg.ENV_BACKEND: cfg.Backend.GCP.value,
            cfg.ENV_PROVIDER: a.provider.value,
            cfg.ENV_PROJECT: a.project,
            cfg.ENV_REGION: a.region,
            cfg.ENV_INBOX_BUCKET: self.inbox_bucket.name,
            cfg.ENV_RESULTS_BUCKET: self.results_bucket.name,
            cfg.ENV_FIRESTORE_DATABASE: self.database.name,
            cfg.ENV_TOPIC_TICK: self.tick_topic.name,
            cfg.ENV_TOPIC_BATCH_DONE: self.batch_done_topic.name,
            cfg.ENV_TOPIC_COMPLETIONS: self.completions_topic.name,
            cfg.ENV_DEFAULT_MODEL: a.default_model,
            cfg.ENV_VERTEX_LOCATION: a.vertex_location,
            cfg.ENV_MAX_ACTIVE_BATCHES: str(a.max_active_batches),
            cfg.ENV_MAX_ATTEMPTS: str(a.max_attempts),
            cfg.ENV_STUCK_AFTER_HOURS: str(a.stuck_after_hours),
            cfg.ENV_LOG_LEVEL: a.log_level.upper(),
            cfg.ENV_WEBHOOK_MODE: a.webhook_mode.value,
            cfg.ENV_WEBHOOK_JWKS_URL: a.webhook_jwks_url,
        }
        if a.job_budget_usd is not None:
            env[cfg.ENV_JOB_BUDGET_USD] = str(a.job_budget_usd)
        # Always set: absent would mean the default, so "no cap" is written out.
        env[cfg.ENV_DAILY_BUDGET_USD] = (
            cfg.UNLIMITED if a.daily_budget_usd is None else str(a.daily_budget_usd)
        )
        if a.fallback_model is not None:
            env[cfg.ENV_FALLBACK_MODEL] = a.fallback_model
        if a.reference_locations:
            env[cfg.ENV_REFERENCE_LOCATIONS] = a.reference_locations
        if a.result_retention_days is not None:
            env[cfg.ENV_RESULT_RETENTION_DAYS] = str(a.result_retention_days)
        if a.openai_enabled:
            # Intake takes gpt-image lines only where this says so (config.Settings).
            env[cfg.ENV_OPENAI_ENABLED] = "true"
        if a.batch_window is not None:
            # Uploads wait for the window (core/window.py); the tick submits them then.
            env[cfg.ENV_BATCH_WINDOW] = a.batch_window
            env[cfg.ENV_BATCH_WINDOW_TZ] = a.batch_window_time_zone
        env |= lane_environment(a)
        return env

    def _secret_environment(
        self, spec: FunctionSpec
    ) -> list[gcp.cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariableArgs]:
        pairs: list[tuple[str, gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]] = []
        if spec in PROVIDER_FUNCTIONS and self.gemini_secret and self.gemini_secret_version:
            pairs.append((cfg.ENV_GEMINI_API_KEY, self.gemini_secret, self.gemini_secret_version))
        if spec is WEBHOOK and self.webhook_secret and self.webhook_secret_version:
            pairs.append((cfg.ENV_WEBHOOK_SECRET, self.webhook_secret, self.webhook_secret_version))
        for env_name, (secret, version) in self.openai_secrets.items():
            if spec in _openai_secret_users(env_name):
                pairs.append((env_name, secret, version))
        for env_name, (secret, version) in self.replicate_secrets.items():
            if spec in _replicate_secret_users(env_name):
                pairs.append((env_name, secret, version))
        if spec in SYNC_LANE_CALLERS:
            for label, (secret, version) in self.compat_key_secrets.items():
                pairs.append((cfg.compat_key_env(label), secret, version))
        return [
            gcp.cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariableArgs(
                key=key,
                project_id=self._args.project,
                secret=secret.secret_id,
                # Pinned to the version this stack wrote: changing the value redeploys.
                version=version.version,
            )
            for key, secret, version in pairs
        ]

    def _function(
        self,
        spec: FunctionSpec,
        deps: list[pulumi.Resource],
        *,
        extra_env: dict[str, pulumi.Input[str]] | None = None,
        event_trigger: gcp.cloudfunctionsv2.FunctionEventTriggerArgs | None = None,
    ) -> gcp.cloudfunctionsv2.Function:
        a = self._args
        return gcp.cloudfunctionsv2.Function(
            f"{self._name}-fn-{spec.key}",
            name=spec.function_name(a.name_prefix),
            project=a.project,
            location=a.region,
            description=spec.description,
            build_config=gcp.cloudfunctionsv2.FunctionBuildConfigArgs(
                runtime=RUNTIME,
                entry_point=spec.entry_point,
                source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceArgs(
                    storage_source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceStorageSourceArgs(
                        bucket=self.source_bucket.name,
                        object=self.source_object.name,
                    )
                ),
                service_account=self.builder.id,
                docker_repository=self.repository.id,
            ),
            service_config=gcp.cloudfunctionsv2.FunctionServiceConfigArgs(
                available_memory=spec.memory,
                timeout_seconds=spec.timeout_seconds,
                # Zero when idle: nothing is billed between jobs.
                min_instance_count=0,
                max_instance_count=spec.max_instances,
                max_instance_request_concurrency=1,
                # Pushed functions take internal traffic only: Cloud Run counts Pub/Sub (and
                # Eventarc, Cloud Scheduler) deliveries in the same project as internal
                # (cloud.google.com/run/docs/securing/ingress), and IAM still checks each
                # push's token. The webhook is called by Gemini from the internet and
                # authenticates each delivery by its signature.
                ingress_settings="ALLOW_ALL" if spec is WEBHOOK else "ALLOW_INTERNAL_ONLY",
                all_traffic_on_latest_revision=True,
                service_account_email=self.accounts[spec.key].email,
                environment_variables={**self._environment(), **(extra_env or {})},
                secret_environment_variables=self._secret_environment(spec),
            ),
            event_trigger=event_trigger,
            labels=LABELS,
            opts=self._opts(*deps),
        )

    def _push_subscription(
        self,
        short: str,
        topic: gcp.pubsub.Topic,
        function: gcp.cloudfunctionsv2.Function,
        invoker_grant: pulumi.Resource,
        *,
        retention: str,
        min_backoff: str,
        max_backoff: str,
        max_attempts: int,
        extra_deps: list[pulumi.Resource],
    ) -> gcp.pubsub.Subscription:
        a = self._args
        uri = function.service_config.uri
        return gcp.pubsub.Subscription(
            f"{self._name}-push-{short}",
            name=a.topic_name(f"{short}-push"),
            project=a.project,
            topic=topic.id,
            ack_deadline_seconds=PUSH_ACK_DEADLINE_SECONDS,
            message_retention_duration=retention,
            push_config=gcp.pubsub.SubscriptionPushConfigArgs(
                # The topic path in the URL becomes the CloudEvent's source.
                push_endpoint=pulumi.Output.concat(uri, "/", topic.id),
                oidc_token=gcp.pubsub.SubscriptionPushConfigOidcTokenArgs(
                    service_account_email=self.invoker.email,
                    audience=uri,
                ),
            ),
            retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(
                minimum_backoff=min_backoff, maximum_backoff=max_backoff
            ),
            dead_letter_policy=gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
                dead_letter_topic=self.dead_letter_topic.id,
                max_delivery_attempts=max_attempts,
            ),
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
            labels=LABELS,
            opts=self._opts(invoker_grant, *extra_deps),
        )

    def _status_command(self) -> pulumi.Output[str]:
        a = self._args
        # No provider: status only reads the state store, and naming the gemini provider
        # would make the CLI demand an API key it does not use.
        pairs: list[tuple[str, pulumi.Input[str]]] = [
            (cfg.ENV_BACKEND, cfg.Backend.GCP.value),
            (cfg.ENV_PROJECT, a.project),
            (cfg.ENV_REGION, a.region),
            (cfg.ENV_INBOX_BUCKET, self.inbox_bucket.name),
            (cfg.ENV_RESULTS_BUCKET, self.results_bucket.name),
            (cfg.ENV_FIRESTORE_DATABASE, self.database.name),
            (cfg.ENV_TOPIC_TICK, self.tick_topic.name),
            (cfg.ENV_TOPIC_BATCH_DONE, self.batch_done_topic.name),
            (cfg.ENV_TOPIC_COMPLETIONS, self.completions_topic.name),
        ]
        parts: list[pulumi.Input[str]] = ["export"]
        for key, value in pairs:
            parts.extend([f" {key}='", value, "'"])
        parts.append(" && bananabatch status")
        return pulumi.Output.concat(*parts)


def lane_environment(args: PipelineArgs) -> dict[str, str]:
    """The lane settings every function reads (config.Settings checks them at load, so all
    get the same): only what differs from the application's defaults; the gateways'
    JSON without keys, which reach only their callers as secret variables."""
    env: dict[str, str] = {}
    if args.sync_lanes != (cfg.GEMINI_STANDARD_LANE,):
        env[cfg.ENV_SYNC_LANES] = ",".join(args.sync_lanes)
    if args.async_lanes:
        env[cfg.ENV_ASYNC_LANES] = ",".join(args.async_lanes)
    if args.compat_lanes:
        env[cfg.ENV_COMPAT_LANES] = json.dumps(
            {
                label: lane.model_dump(exclude={"api_key"})
                for label, lane in sorted(args.compat_lanes.items())
            },
            sort_keys=True,
        )
    if args.allow_third_party:
        env[cfg.ENV_ALLOW_THIRD_PARTY] = "true"
    if args.failover_on_unknown:
        env[cfg.ENV_FAILOVER_ON_UNKNOWN] = "true"
    if args.replicate_enabled and args.replicate_models:
        env[cfg.ENV_REPLICATE_MODELS] = args.replicate_models
    price = cfg.usd_per_image(args.replicate_usd_per_image)
    if args.replicate_enabled and price is not None:
        env[cfg.ENV_REPLICATE_USD_PER_IMAGE] = json.dumps(price, sort_keys=True)
    return env


def _delete_after(
    days: int, *, suffixes: list[str] | None = None
) -> gcp.storage.BucketLifecycleRuleArgs:
    return gcp.storage.BucketLifecycleRuleArgs(
        action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
        condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=days, matches_suffixes=suffixes),
    )


def _abort_stale_uploads() -> gcp.storage.BucketLifecycleRuleArgs:
    # Abandoned multipart (XML API) uploads keep their parts, billed as storage, until aborted.
    return gcp.storage.BucketLifecycleRuleArgs(
        action=gcp.storage.BucketLifecycleRuleActionArgs(type="AbortIncompleteMultipartUpload"),
        condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=1),
    )
