"""What the deployment must look like, written independently of the program that builds it.

The least-privilege table and the environment each function gets are spelled out here from
what each function does (see the module docstrings in functions/bananabatch/pipeline), so a
change to the program's IAM or environment shows up as a difference against this spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Final

import bananabatch.config as cfg
from bananabatch_infra.stack_config import PipelineArgs
from tests.infra import harness
from tests.infra.checks import Deployment, Grant

GEMINI_KEY: Final = "AIza-test-gemini-key"
SIGNING_SECRET: Final = "whsec_dGVzdC1zaWduaW5nLXNlY3JldA=="
OPENAI_KEY: Final = "sk-test-openai-key"
OPENAI_WEBHOOK_SECRET: Final = "whsec_b3BlbmFpLXRlc3Qtc2VjcmV0"
GATEWAY_KEYS: Final = {"gw-1": "sk-test-gateway-one", "gw2": "sk-test-gateway-two"}
REPLICATE_TOKEN: Final = "r8_test-replicate-token"
REPLICATE_WEBHOOK_SECRET: Final = "whsec_cmVwbGljYXRlLXRlc3Q="
REPLICATE_MODELS: Final = '{"gemini-3-pro-image": "google/nano-banana-pro"}'
REPLICATE_USD_PER_IMAGE: Final = '{"1K": 0.04, "4K": 0.08}'

ENTRY_POINTS: Final = ("on_upload", "on_tick", "on_batch_done", "on_gemini_webhook")
PROVIDER_CALLERS: Final = ("on_upload", "on_tick", "on_batch_done")
# Who calls the sync lanes (gateways): pipeline/control.py start_running, pipeline/urgent.py.
SYNC_LANE_CALLERS: Final = ("on_upload", "on_tick")
ACCOUNT_KEYS: Final = {
    "on_upload": "upload",
    "on_tick": "tick",
    "on_batch_done": "collect",
    "on_gemini_webhook": "webhook",
}

# Names every function reads, whatever the configuration.
COMMON_ENV: Final = frozenset(
    {
        cfg.ENV_BACKEND,
        cfg.ENV_PROVIDER,
        cfg.ENV_PROJECT,
        cfg.ENV_REGION,
        cfg.ENV_INBOX_BUCKET,
        cfg.ENV_RESULTS_BUCKET,
        cfg.ENV_FIRESTORE_DATABASE,
        cfg.ENV_TOPIC_TICK,
        cfg.ENV_TOPIC_BATCH_DONE,
        cfg.ENV_TOPIC_COMPLETIONS,
        cfg.ENV_DEFAULT_MODEL,
        cfg.ENV_VERTEX_LOCATION,
        cfg.ENV_MAX_ACTIVE_BATCHES,
        cfg.ENV_MAX_ATTEMPTS,
        cfg.ENV_STUCK_AFTER_HOURS,
        cfg.ENV_LOG_LEVEL,
        cfg.ENV_WEBHOOK_MODE,
        cfg.ENV_WEBHOOK_JWKS_URL,
    }
)


def scenario(name: str) -> PipelineArgs:
    p = harness.PROJECT
    if name == "gemini":
        return PipelineArgs(project=p, gemini_api_key=GEMINI_KEY)
    if name == "gemini-budgets":
        return PipelineArgs(
            project=p,
            gemini_api_key=GEMINI_KEY,
            job_budget_usd=20.0,
            daily_budget_usd=100.0,
            result_retention_days=180,
            results_versioning=True,
            reference_locations="gs://brand-assets/refs/,https://",
        )
    if name == "gemini-static":
        return PipelineArgs(
            project=p,
            gemini_api_key=GEMINI_KEY,
            webhook_mode=cfg.WebhookMode.STATIC,
            webhook_signing_secret=SIGNING_SECRET,
        )
    if name == "gemini-dynamic":
        return PipelineArgs(
            project=p, gemini_api_key=GEMINI_KEY, webhook_mode=cfg.WebhookMode.DYNAMIC
        )
    if name == "gemini-openai":
        # gpt-image lines through OpenAI, with its webhook (and no Gemini webhook).
        return PipelineArgs(
            project=p,
            gemini_api_key=GEMINI_KEY,
            openai_enabled=True,
            openai_api_key=OPENAI_KEY,
            openai_webhook_secret=OPENAI_WEBHOOK_SECRET,
        )
    if name == "gemini-lanes":
        # Two OpenAI-compatible gateways after Gemini's own sync API, third parties allowed.
        return PipelineArgs(
            project=p,
            gemini_api_key=GEMINI_KEY,
            sync_lanes=("gemini-standard", "compat:gw-1", "compat:gw2"),
            async_lanes=("replicate",),
            compat_lanes={
                label: cfg.CompatLaneConfig(
                    base_url=f"https://{label}.example/v1",
                    models={"gemini-3-pro-image": "nano-banana-pro"},
                    usd_per_image=0.05,
                )
                for label in GATEWAY_KEYS
            },
            compat_lane_keys=dict(GATEWAY_KEYS),
            allow_third_party=True,
            failover_on_unknown=True,
            replicate_api_token=REPLICATE_TOKEN,
            replicate_webhook_secret=REPLICATE_WEBHOOK_SECRET,
            replicate_models=REPLICATE_MODELS,
            replicate_usd_per_image=REPLICATE_USD_PER_IMAGE,
        )
    if name == "vertex":
        return PipelineArgs(project=p, provider=cfg.ProviderKind.VERTEX, bucket_location="US")
    if name == "gemini-billing":
        return PipelineArgs(
            project=p, gemini_api_key=GEMINI_KEY, billing_account_id="01AB23-45CD67-89EF01"
        )
    raise KeyError(name)


SCENARIOS: Final = (
    "gemini",
    "gemini-budgets",
    "gemini-static",
    "gemini-dynamic",
    "gemini-openai",
    "gemini-lanes",
    "vertex",
)
# Every configuration whose IAM differs: the scenarios above and the billing kill switch.
IAM_SCENARIOS: Final = (*SCENARIOS, "gemini-billing")


@cache
def deployed(name: str) -> Deployment:
    """One mocked run per scenario, shared by the tests that only read it."""
    return harness.deploy(scenario(name))


def email(args: PipelineArgs, key: str) -> str:
    return f"{args.name_prefix}-{key}@{args.project}.iam.gserviceaccount.com"


def sa(args: PipelineArgs, key: str) -> str:
    return f"serviceAccount:{email(args, key)}"


def function_name(args: PipelineArgs, entry_point: str) -> str:
    return f"{args.name_prefix}-{entry_point.replace('_', '-')}"


def entry_points(args: PipelineArgs) -> tuple[str, ...]:
    return ENTRY_POINTS if args.webhook_on else PROVIDER_CALLERS


@dataclass(frozen=True)
class Need:
    """Why a grant exists: the code that would fail without it, as `path::symbol`, and how."""

    code: str
    why: str


# The code each function runs (entry point -> pipeline), for the table's `needed by` column.
UPLOAD_CODE: Final = "functions/bananabatch/pipeline/intake/job.py::handle_upload"
TICK_CODE: Final = "functions/bananabatch/pipeline/tick.py::handle_tick"
COLLECT_CODE: Final = "functions/bananabatch/pipeline/collect.py::handle_batch_done"
WEBHOOK_CODE: Final = "functions/bananabatch/pipeline/webhook.py::handle_delivery"
PIPELINE: Final = "infra/bananabatch_infra/pipeline.py"
RUNS: Final = {"on_upload": UPLOAD_CODE, "on_tick": TICK_CODE, "on_batch_done": COLLECT_CODE}


def explained_grants(args: PipelineArgs) -> dict[Grant, Need]:
    """The minimum IAM, each grant with the code path that needs it."""
    project = f"project:{args.project}"
    invoker = sa(args, "invoker")
    builder = sa(args, "build")
    pubsub_agent = f"serviceAccount:{harness.PUBSUB_AGENT}"
    dead_letter = Need(
        f"{PIPELINE}::Pipeline._push_subscription",
        "Pub/Sub forwards a message that failed max_delivery_attempts to the dead-letter topic",
    )
    build = f"{PIPELINE}::Pipeline._build_identity"
    grants = {
        Grant(
            f"topic:{args.topic_name('uploads')}",
            "roles/pubsub.publisher",
            f"serviceAccount:{harness.STORAGE_AGENT}",
        ): Need(
            "functions/main.py::on_upload",
            "Cloud Storage announces each finalized inbox object on the uploads topic",
        ),
        Grant(
            f"subscription:{args.topic_name('uploads-push')}",
            "roles/pubsub.subscriber",
            pubsub_agent,
        ): Need(dead_letter.code, "the forwarder acknowledges a dead-lettered upload"),
        Grant(f"topic:{args.topic_name('dead-letter')}", "roles/pubsub.publisher", pubsub_agent): (
            dead_letter
        ),
        Grant(
            f"subscription:{args.topic_name('tick-push')}", "roles/pubsub.subscriber", pubsub_agent
        ): Need(dead_letter.code, "the forwarder acknowledges the dead-lettered tick"),
        Grant(
            f"subscription:{args.topic_name('batch-done-push')}",
            "roles/pubsub.subscriber",
            pubsub_agent,
        ): Need(dead_letter.code, "the forwarder acknowledges the dead-lettered batch-done"),
        Grant(
            f"service-account:{email(args, 'invoker')}",
            "roles/iam.serviceAccountTokenCreator",
            pubsub_agent,
        ): Need(
            f"{PIPELINE}::Pipeline._push_subscription",
            "Pub/Sub mints each push delivery's OIDC token as the invoker",
        ),
        Grant(project, "roles/logging.logWriter", builder): Need(
            build, "function builds write their logs (grantable on projects only)"
        ),
        Grant(
            f"repository:{args.name_prefix}-functions", "roles/artifactregistry.writer", builder
        ): (Need(build, "function builds push their images to our repository")),
        Grant(
            project,
            "roles/storage.objectViewer",
            builder,
            condition='resource.name.startsWith("projects/_/buckets/'
            f'gcf-v2-sources-{harness.PROJECT_NUMBER}-{args.region}")',
        ): Need(build, "function builds read the source Cloud Functions staged in its bucket"),
    }
    for entry_point in PROVIDER_CALLERS:
        grants[Grant(f"run:{function_name(args, entry_point)}", "roles/run.invoker", invoker)] = (
            Need(f"functions/main.py::{entry_point}", "event deliveries invoke the function")
        )
    _function_grants(args, grants)
    _reference_grants(args, grants)
    _webhook_and_billing_grants(args, grants)
    _lane_grants(args, grants)
    return grants


def _lane_grants(args: PipelineArgs, grants: dict[Grant, Need]) -> None:
    """The lanes' secrets (issue 20): Replicate's token and webhook secret, gateway keys."""
    if getattr(args, "replicate_enabled", False):
        for entry_point in PROVIDER_CALLERS:
            grants[
                Grant(
                    f"secret:{args.name_prefix}-replicate-api-token",
                    "roles/secretmanager.secretAccessor",
                    sa(args, ACCOUNT_KEYS[entry_point]),
                )
            ] = Need(
                "functions/bananabatch/providers/replicate_lane.py::from_settings",
                "the Replicate token reaches the functions that submit, poll and fetch tasks",
            )
    if getattr(args, "replicate_webhook_on", False):
        grants[
            Grant(
                f"secret:{args.name_prefix}-replicate-webhook-secret",
                "roles/secretmanager.secretAccessor",
                sa(args, "webhook"),
            )
        ] = Need(
            "functions/bananabatch/entrypoints.py::replicate_webhook",
            "Replicate's callbacks are verified with the account's signing secret",
        )
    for label in getattr(args, "compat_lane_keys", {}):
        for entry_point in SYNC_LANE_CALLERS:
            grants[
                Grant(
                    f"secret:{args.name_prefix}-compat-key-{label}",
                    "roles/secretmanager.secretAccessor",
                    sa(args, ACCOUNT_KEYS[entry_point]),
                )
            ] = Need(
                "functions/bananabatch/wiring.py::sync_lane_factory",
                "a gateway's key reaches the functions that call the sync lanes (urgent "
                "lines at job start, and those the tick runs later) as a secret variable",
            )


def _function_grants(args: PipelineArgs, grants: dict[Grant, Need]) -> None:
    """State, batch-done and completions, results, and the provider, per function."""
    project = f"project:{args.project}"
    results = f"bucket:{args.results_bucket}"
    batch_done = f"topic:{args.topic_name('batch-done')}"
    completions = f"topic:{args.topic_name('completions')}"
    state_use = {
        "on_upload": "creates the job, its items and batches (create-once locks)",
        "on_tick": "polls batches, claims submissions, finalizes jobs",
        "on_batch_done": "records item outcomes, the collection cursor, job counters",
    }
    publishes_batch_done = {
        "on_upload": (
            "functions/bananabatch/pipeline/submit.py::publish_batch_done",
            "a batch that ends at create is announced for collection",
        ),
        "on_tick": (
            "functions/bananabatch/pipeline/submit.py::publish_batch_done",
            "a batch seen finished by polling is announced for collection",
        ),
        "on_batch_done": (
            "functions/bananabatch/pipeline/thumbnails.py::publish_request",
            "thumbnail requests ride the batch-done topic",
        ),
        "on_gemini_webhook": (WEBHOOK_CODE, "a verified delivery is announced for collection"),
    }
    for entry_point in entry_points(args):
        member = sa(args, ACCOUNT_KEYS[entry_point])
        if entry_point != "on_gemini_webhook":
            grants[Grant(project, "roles/datastore.user", member)] = Need(
                RUNS[entry_point],
                f"{state_use[entry_point]} (Firestore has no per-collection IAM)",
            )
        code, why = publishes_batch_done[entry_point]
        grants[Grant(batch_done, "roles/pubsub.publisher", member)] = Need(code, why)
    results_use = {
        "on_upload": "writes the request files and, for rejected-only jobs, the reports",
        "on_tick": "finalizes jobs: reports, summary.json (overwrites need delete)",
        "on_batch_done": "writes images, thumbnails and the cursor (overwrites need delete)",
    }
    for entry_point in PROVIDER_CALLERS:
        member = sa(args, ACCOUNT_KEYS[entry_point])
        grants[Grant(results, "roles/storage.objectUser", member)] = Need(
            RUNS[entry_point], results_use[entry_point]
        )
        grants[Grant(completions, "roles/pubsub.publisher", member)] = Need(
            "functions/bananabatch/pipeline/finalize.py::publish_completion_if_pending",
            "whichever function finishes a job publishes its one completion message",
        )
        if args.uses_gemini:
            grants[
                Grant(
                    f"secret:{args.name_prefix}-gemini-api-key",
                    "roles/secretmanager.secretAccessor",
                    member,
                )
            ] = Need(
                "functions/bananabatch/wiring.py::build_provider",
                "the Gemini key reaches the function as a secret environment variable",
            )
        else:
            grants[Grant(project, "roles/aiplatform.user", member)] = Need(
                "functions/bananabatch/providers/vertex.py::VertexProvider",
                "creates, polls and cancels Vertex batch jobs (no per-job IAM exists)",
            )


def _reference_grants(args: PipelineArgs, grants: dict[Grant, Need]) -> None:
    """Reading the inbox and the reference images under it, and signing their URLs."""
    inbox, results = f"bucket:{args.inbox_bucket}", f"bucket:{args.results_bucket}"
    grants[Grant(inbox, "roles/storage.objectViewer", sa(args, "upload"))] = Need(
        UPLOAD_CODE, "reads the uploaded JSONL and reference images under the inbox"
    )
    references = (
        f'resource.name.startsWith("projects/_/buckets/{args.inbox_bucket}/objects/references/")'
    )
    signs = "functions/bananabatch/adapters/gcp/storage.py::GcsObjectStore.signed_url"
    if args.uses_gemini:
        for entry_point in ("on_tick", "on_batch_done"):
            member = sa(args, ACCOUNT_KEYS[entry_point])
            grants[Grant(inbox, "roles/storage.objectViewer", member, condition=references)] = Need(
                signs,
                "a batch it submits sends each gs:// reference as a URL it signs, which "
                "reads as the signer",
            )
        for entry_point in PROVIDER_CALLERS:
            key = ACCOUNT_KEYS[entry_point]
            grants[
                Grant(
                    f"service-account:{email(args, key)}",
                    "roles/iam.serviceAccountTokenCreator",
                    sa(args, key),
                )
            ] = Need(signs, "signs reference URLs with the IAM signBlob API as itself")
    else:
        grants[
            Grant(
                inbox,
                "roles/storage.objectViewer",
                f"serviceAccount:{harness.VERTEX_AGENT}",
                condition=references,
            )
        ] = Need(
            "functions/bananabatch/providers/vertex.py::VertexProvider",
            "Vertex reads the gs:// reference images its rows name",
        )
    if not args.uses_gemini:
        grants[
            Grant(results, "roles/storage.objectUser", f"serviceAccount:{harness.VERTEX_AGENT}")
        ] = Need(
            "functions/bananabatch/providers/vertex.py::VertexProvider",
            "Vertex reads each batch's request file and writes its predictions",
        )


def _webhook_and_billing_grants(args: PipelineArgs, grants: dict[Grant, Need]) -> None:
    """The public webhook receiver and the billing kill switch, when on."""
    project = f"project:{args.project}"
    completions = f"topic:{args.topic_name('completions')}"
    invoker = sa(args, "invoker")
    pubsub_agent = f"serviceAccount:{harness.PUBSUB_AGENT}"
    dead_letter_code = f"{PIPELINE}::Pipeline._push_subscription"
    if args.webhook_on:
        grants[
            Grant(
                f"run:{function_name(args, 'on_gemini_webhook')}", "roles/run.invoker", "allUsers"
            )
        ] = Need(
            "functions/main.py::on_gemini_webhook",
            "Gemini cannot present Google credentials; every delivery is verified by signature",
        )
    # getattr: the table printer also runs this against checkouts from before the switch.
    if getattr(args, "billing_account_id", None) is not None:
        billing = sa(args, "billing")
        pause = "functions/bananabatch/pipeline/pause.py"
        grants[
            Grant(
                f"topic:{args.topic_name('billing-alerts')}",
                "roles/pubsub.publisher",
                "serviceAccount:billing-budget-alert@system.gserviceaccount.com",
            )
        ] = Need(
            "infra/bananabatch_infra/killswitch.py::build",
            "Cloud Billing publishes the budget's threshold notifications as its own identity",
        )
        grants[Grant(project, "roles/datastore.user", billing)] = Need(
            f"{pause}::handle_budget_notification",
            "the deployment-wide pause is a state document (no per-collection IAM)",
        )
        grants[Grant(completions, "roles/pubsub.publisher", billing)] = Need(
            f"{pause}::publish_alert", "one alert message per pause on the completions topic"
        )
        grants[
            Grant(f"run:{function_name(args, 'on_billing_alert')}", "roles/run.invoker", invoker)
        ] = Need("functions/main.py::on_billing_alert", "budget notifications are pushed to it")
        grants[
            Grant(
                f"subscription:{args.topic_name('billing-alerts-push')}",
                "roles/pubsub.subscriber",
                pubsub_agent,
            )
        ] = Need(dead_letter_code, "the forwarder acknowledges a dead-lettered notification")
    if getattr(args, "openai_enabled", False):
        for entry_point in PROVIDER_CALLERS:
            grants[
                Grant(
                    f"secret:{args.name_prefix}-openai-api-key",
                    "roles/secretmanager.secretAccessor",
                    sa(args, ACCOUNT_KEYS[entry_point]),
                )
            ] = Need(
                "functions/bananabatch/wiring.py::build_openai_provider",
                "the OpenAI key reaches the functions that call OpenAI as a secret variable",
            )
    if getattr(args, "openai_webhook_on", False):
        grants[
            Grant(
                f"secret:{args.name_prefix}-openai-webhook-secret",
                "roles/secretmanager.secretAccessor",
                sa(args, "webhook"),
            )
        ] = Need(
            "functions/bananabatch/openai_webhooks.py::verify",
            "OpenAI's webhook deliveries are verified with the endpoint's signing secret",
        )
    if args.webhook_mode is cfg.WebhookMode.STATIC:
        grants[
            Grant(
                f"secret:{args.name_prefix}-webhook-signing-secret",
                "roles/secretmanager.secretAccessor",
                sa(args, "webhook"),
            )
        ] = Need(
            "functions/bananabatch/webhooks.py::WebhookVerifier",
            "static mode verifies HMAC v1 signatures with the signing secret",
        )


def expected_grants(args: PipelineArgs) -> set[Grant]:
    """The minimum IAM, by what each identity must do."""
    return set(explained_grants(args))


def expected_plain_env(args: PipelineArgs) -> dict[str, set[str]]:
    env = set(COMMON_ENV)
    if args.job_budget_usd is not None:
        env.add(cfg.ENV_JOB_BUDGET_USD)
    if args.daily_budget_usd is not None:
        env.add(cfg.ENV_DAILY_BUDGET_USD)
    if args.result_retention_days is not None:
        # cache entries expire with the images they point at (pipeline/cache.py)
        env.add(cfg.ENV_RESULT_RETENTION_DAYS)
    if args.reference_locations:
        # intake holds reference images to them (core/references.py)
        env.add(cfg.ENV_REFERENCE_LOCATIONS)
    out = {ep: set(env) for ep in entry_points(args)}
    if args.openai_enabled:
        for ep in out:
            out[ep].add(cfg.ENV_OPENAI_ENABLED)
    _lane_plain_env(args, out)
    if args.webhook_mode is cfg.WebhookMode.DYNAMIC:
        for ep in PROVIDER_CALLERS:
            out[ep].add(cfg.ENV_WEBHOOK_URL)
        out["on_gemini_webhook"] |= {cfg.ENV_WEBHOOK_AUDIENCE, cfg.ENV_WEBHOOK_ISSUER}
    return out


def expected_secret_env(args: PipelineArgs) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {ep: {} for ep in entry_points(args)}
    if args.uses_gemini:
        for ep in PROVIDER_CALLERS:
            out[ep][cfg.ENV_GEMINI_API_KEY] = f"{args.name_prefix}-gemini-api-key"
    if args.webhook_mode is cfg.WebhookMode.STATIC:
        out["on_gemini_webhook"][cfg.ENV_WEBHOOK_SECRET] = (
            f"{args.name_prefix}-webhook-signing-secret"
        )
    if args.openai_enabled:
        for ep in PROVIDER_CALLERS:
            out[ep][cfg.ENV_OPENAI_API_KEY] = f"{args.name_prefix}-openai-api-key"
    if args.openai_webhook_on:
        out["on_gemini_webhook"][cfg.ENV_OPENAI_WEBHOOK_SECRET] = (
            f"{args.name_prefix}-openai-webhook-secret"
        )
    _lane_secret_env(args, out)
    return out


def _lane_plain_env(args: PipelineArgs, out: dict[str, set[str]]) -> None:
    """The lanes' plain settings (issue 20), read by every function alike."""
    lanes = {
        cfg.ENV_SYNC_LANES: args.sync_lanes != (cfg.GEMINI_STANDARD_LANE,),
        cfg.ENV_ASYNC_LANES: bool(args.async_lanes),
        cfg.ENV_COMPAT_LANES: bool(args.compat_lanes),
        cfg.ENV_ALLOW_THIRD_PARTY: args.allow_third_party,
        cfg.ENV_FAILOVER_ON_UNKNOWN: args.failover_on_unknown,
    }
    for ep in out:
        # config.Settings checks the lanes at load, in every function alike.
        out[ep] |= {name for name, wanted in lanes.items() if wanted}
    if args.replicate_enabled and args.replicate_models:
        for ep in out:
            out[ep].add(cfg.ENV_REPLICATE_MODELS)
    if args.replicate_enabled and args.replicate_usd_per_image:
        for ep in out:
            out[ep].add(cfg.ENV_REPLICATE_USD_PER_IMAGE)
    if args.replicate_webhook_on:
        # Each prediction names the receiver's /replicate sub-path (pipeline/tasks.py).
        for ep in PROVIDER_CALLERS:
            out[ep].add(cfg.ENV_WEBHOOK_URL)


def _lane_secret_env(args: PipelineArgs, out: dict[str, dict[str, str]]) -> None:
    """Replicate's token and webhook secret, and each gateway's key."""
    if args.replicate_enabled:
        for ep in PROVIDER_CALLERS:
            out[ep][cfg.ENV_REPLICATE_API_TOKEN] = f"{args.name_prefix}-replicate-api-token"
    if args.replicate_webhook_on:
        out["on_gemini_webhook"][cfg.ENV_REPLICATE_WEBHOOK_SECRET] = (
            f"{args.name_prefix}-replicate-webhook-secret"
        )
    for label in args.compat_lane_keys:
        for ep in SYNC_LANE_CALLERS:
            out[ep][cfg.compat_key_env(label)] = f"{args.name_prefix}-compat-key-{label}"
