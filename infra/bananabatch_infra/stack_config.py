"""Typed, validated arguments for the pipeline, read from Pulumi stack configuration.

Everything a stack can choose is a field of `PipelineArgs`; `load_args` turns the stack's
config (or any object with the same two methods, which is how the tests feed it) into one,
and refuses an unusable combination before a single resource is registered, with the
`pulumi config set` command that fixes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pulumi
from pydantic import ValidationError

import bananabatch.config as cfg
from bananabatch.core import catalog
from bananabatch.core.references import location_problem

NAMESPACE: Final = "bananabatch"
DEFAULT_REGION: Final = "us-central1"
DEFAULT_JWKS_URL: Final = "https://generativelanguage.googleapis.com/.well-known/jwks.json"

# Defaults the application also uses; taken from its Settings so the two agree.
_SETTINGS_DEFAULTS: Final = {name: f.default for name, f in cfg.Settings.model_fields.items()}

#: Every `bananabatch:` key the program reads (Pulumi.example.yaml is checked against it).
KNOWN_KEYS: Final = frozenset(
    {
        "provider",
        "bucketLocation",
        "firestoreLocation",
        "firestoreDatabase",
        "namePrefix",
        "inboxBucket",
        "resultsBucket",
        "defaultModel",
        "vertexLocation",
        "tickSchedule",
        "tickTimeZone",
        "batchWindow",
        "batchWindowTimeZone",
        "jobBudgetUsd",
        "dailyBudgetUsd",
        "billingAccountId",
        "billingBudgetUsd",
        "fallbackModel",
        "referenceLocations",
        "maxActiveBatches",
        "maxAttempts",
        "stuckAfterHours",
        "inboxRetentionDays",
        "reportRetentionDays",
        "resultRetentionDays",
        "resultsVersioning",
        "webhookMode",
        "webhookJwksUrl",
        "webhookAudience",
        "webhookIssuer",
        "logLevel",
        "forceDestroy",
        "firestoreDeleteProtection",
        "firestorePitr",
        "alertEmail",
        "openaiEnabled",
        "syncLanes",
        "asyncLanes",
        "compatLanes",
        "allowThirdParty",
        "failoverOnUnknown",
        "replicateModels",
        "replicateUsdPerImage",
    }
)
SECRET_KEYS: Final = frozenset(
    {
        "geminiApiKey",
        "webhookSigningSecret",
        "openaiApiKey",
        "openaiWebhookSecret",
        "replicateApiToken",
        "replicateWebhookSecret",
    }
)
#: Each gateway of compatLanes has its key in the secret `compatKey-<label>`.
COMPAT_KEY_PREFIX: Final = "compatKey-"
# A gateway's stack config (camelCase, as Pulumi keys go) -> its CompatLaneConfig field.
# No key field: keys are secrets of their own, never part of plain configuration.
_COMPAT_FIELDS: Final = {
    "baseUrl": "base_url",
    "models": "models",
    "usdPerImage": "usd_per_image",
    "timeoutS": "timeout_s",
    "thirdParty": "third_party",
}

# Service account ids are at most 30 characters and the longest suffix is "-collect".
_PREFIX_RE: Final = re.compile(r"^[a-z][a-z0-9-]{1,20}[a-z0-9]$")
_CRON_FIELD_RE: Final = re.compile(r"^[\d*/,\-A-Za-z]+$")
_CAPS: Final = frozenset({"jobBudgetUsd", "dailyBudgetUsd"})
_BILLING_ID_RE: Final = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")
# Gemini batches expire after 48 h; request files must outlive their batch and its retries.
MIN_REPORT_RETENTION_DAYS: Final = 3


class InfraConfigError(ValueError):
    """The stack configuration cannot produce a working pipeline."""


class ConfigSource(Protocol):
    """The two methods of `pulumi.Config` the loader uses."""

    def get(self, key: str) -> str | None: ...

    def get_secret(self, key: str) -> pulumi.Output[Any] | None: ...


@dataclass(frozen=True)
class PipelineArgs:
    """What one deployment of the pipeline looks like. Immutable; validated on creation."""

    project: str
    region: str = DEFAULT_REGION
    provider: cfg.ProviderKind = cfg.ProviderKind.GEMINI
    # None means "the region": keeping data next to the functions avoids egress charges.
    bucket_location: str | None = None
    firestore_location: str | None = None
    firestore_database: str = str(_SETTINGS_DEFAULTS["firestore_database"])
    name_prefix: str = "bananabatch"
    inbox_bucket_name: str | None = None
    results_bucket_name: str | None = None
    default_model: str = cfg.DEFAULT_MODEL
    vertex_location: str = str(_SETTINGS_DEFAULTS["vertex_location"])
    tick_schedule: str = "* * * * *"
    tick_time_zone: str = "Etc/UTC"
    # The batch window (issue 21 point 4): uploads wait for the next time this five-field
    # cron expression names, in batchWindowTimeZone; None submits at once.
    batch_window: str | None = None
    batch_window_time_zone: str = "Etc/UTC"
    job_budget_usd: float | None = None
    # None only when configured as "unlimited": a deployment's spend is bounded by default.
    daily_budget_usd: float | None = cfg.DEFAULT_DAILY_BUDGET_USD
    # With a billing account, a Cloud Billing budget pauses submission (killswitch.py);
    # its monthly amount defaults to 31 days of the daily budget.
    billing_account_id: str | None = None
    billing_budget_usd: float | None = None
    fallback_model: str | None = None
    # Where reference images may live, as BANANABATCH_REFERENCE_LOCATIONS takes them
    # (comma-separated gs:// and https:// prefixes); None: the inbox's references/ and
    # public https URLs (core/references.py).
    reference_locations: str | None = None
    max_active_batches: int = int(_SETTINGS_DEFAULTS["max_active_batches"])
    max_attempts: int = int(_SETTINGS_DEFAULTS["max_attempts"])
    stuck_after_hours: float = float(_SETTINGS_DEFAULTS["stuck_after_hours"])
    inbox_retention_days: int = 30
    report_retention_days: int = 30
    result_retention_days: int | None = None
    results_versioning: bool = False
    webhook_mode: cfg.WebhookMode = cfg.WebhookMode.OFF
    webhook_jwks_url: str = DEFAULT_JWKS_URL
    # None: the receiver's own URL. The issuer is undocumented (reference webhooks §2).
    webhook_audience: str | None = None
    webhook_issuer: str = cfg.DEFAULT_WEBHOOK_ISSUER
    log_level: str = str(_SETTINGS_DEFAULTS["log_level"])
    force_destroy: bool = False
    firestore_delete_protection: bool = True
    firestore_pitr: bool = True
    # Where alert policies notify (an e-mail notification channel); None: console only.
    alert_email: str | None = None
    gemini_api_key: pulumi.Input[str] | None = field(default=None, repr=False)
    webhook_signing_secret: pulumi.Input[str] | None = field(default=None, repr=False)
    # OpenAI Batch for gpt-image lines (issue 19): off, intake rejects them saying so (and
    # the two secrets below are not deployed). The key reaches the functions that call the
    # provider; the webhook secret (the project webhook endpoint's whsec_..., optional: the
    # tick polls anyway) the receiver.
    openai_enabled: bool = False
    openai_api_key: pulumi.Input[str] | None = field(default=None, repr=False)
    openai_webhook_secret: pulumi.Input[str] | None = field(default=None, repr=False)
    # Lanes besides batch (issue 20; the application's settings of the same names): the
    # sync providers in failover order, the async ones, the OpenAI-compatible gateways by
    # label WITHOUT their keys, and each gateway's key, a secret of its own.
    sync_lanes: tuple[str, ...] = (cfg.GEMINI_STANDARD_LANE,)
    async_lanes: tuple[str, ...] = ()
    compat_lanes: Mapping[str, cfg.CompatLaneConfig] = field(default_factory=dict)
    compat_lane_keys: Mapping[str, pulumi.Input[str]] = field(default_factory=dict, repr=False)
    allow_third_party: bool = False
    failover_on_unknown: bool = False
    # The Replicate async lane, deployed when asyncLanes names "replicate": its API token
    # for the functions that submit, poll and fetch; its webhook signing secret (optional:
    # the tick polls anyway) for the receiver; Replicate's names for catalog models (JSON,
    # plain; empty: the lane's dated defaults).
    replicate_api_token: pulumi.Input[str] | None = field(default=None, repr=False)
    replicate_webhook_secret: pulumi.Input[str] | None = field(default=None, repr=False)
    replicate_models: str | None = None
    # What Replicate charges this deployment per image (one number, or a JSON object by
    # size tier; config.usd_per_image): routing, estimates and the cost of its items.
    replicate_usd_per_image: str | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise InfraConfigError("; ".join(problems))

    # --- derived names ------------------------------------------------------------------

    @property
    def buckets_location(self) -> str:
        return (self.bucket_location or self.region).upper()

    @property
    def trigger_region(self) -> str:
        # Eventarc listens where the bucket is: a region, or "us"/"eu"/"nam4" for multi/dual.
        return self.buckets_location.lower()

    @property
    def database_location(self) -> str:
        return self.firestore_location or self.region

    @property
    def inbox_bucket(self) -> str:
        return self.inbox_bucket_name or f"{self.project}-{self.name_prefix}-inbox"

    @property
    def results_bucket(self) -> str:
        return self.results_bucket_name or f"{self.project}-{self.name_prefix}-results"

    @property
    def source_bucket(self) -> str:
        return f"{self.project}-{self.name_prefix}-source"

    def webhook_url(self, function_name: str) -> str:
        """A 2nd gen function's URL, which Cloud Functions derives from these three names."""
        return f"https://{self.region}-{self.project}.cloudfunctions.net/{function_name}"

    def topic_name(self, short: str) -> str:
        return f"{self.name_prefix}-{short}"

    @property
    def webhook_on(self) -> bool:
        """Whether the webhook receiver is deployed: for Gemini's, OpenAI's or Replicate's."""
        return (
            self.webhook_mode is not cfg.WebhookMode.OFF
            or self.openai_webhook_on
            or self.replicate_webhook_on
        )

    @property
    def replicate_enabled(self) -> bool:
        return "replicate" in self.async_lanes

    @property
    def replicate_webhook_on(self) -> bool:
        return self.replicate_enabled and self.replicate_webhook_secret is not None

    @property
    def openai_webhook_on(self) -> bool:
        return self.openai_enabled and self.openai_webhook_secret is not None

    @property
    def uses_gemini(self) -> bool:
        return self.provider is cfg.ProviderKind.GEMINI

    @property
    def billing_budget_amount_usd(self) -> float:
        if self.billing_budget_usd is not None:
            return self.billing_budget_usd
        return round((self.daily_budget_usd or 0.0) * 31, 2)

    @property
    def daily_budget_text(self) -> str:
        """The daily cap as `pulumi up` states it."""
        if self.daily_budget_usd is None:
            return "unlimited (bananabatch:dailyBudgetUsd is 'unlimited')"
        if self.daily_budget_usd == cfg.DEFAULT_DAILY_BUDGET_USD:
            return (
                f"${self.daily_budget_usd:.2f} per UTC day (the default; set "
                "bananabatch:dailyBudgetUsd to change it, or to 'unlimited' to remove it)"
            )
        return f"${self.daily_budget_usd:.2f} per UTC day (bananabatch:dailyBudgetUsd)"

    @property
    def kill_switch_text(self) -> str:
        if self.billing_account_id is None:
            return "off (set bananabatch:billingAccountId to pause submission at a billing budget)"
        return (
            f"submission pauses when this project's spend reaches "
            f"${self.billing_budget_amount_usd:.2f} in a calendar month "
            f"(billing account {self.billing_account_id}); `bananabatch resume` lifts it"
        )


def _problems(args: PipelineArgs) -> list[str]:
    return [
        *_basic_problems(args),
        *_number_problems(args),
        *_model_problems(args),
        *_secret_problems(args),
        *_billing_problems(args),
        *_lane_problems(args),
    ]


def _basic_problems(args: PipelineArgs) -> list[str]:
    """Project, provider, naming and schedule."""
    out: list[str] = []
    if not args.project:
        out.append("gcp:project is required: pulumi config set gcp:project <project-id>")
    if args.provider not in (cfg.ProviderKind.GEMINI, cfg.ProviderKind.VERTEX):
        out.append(f"provider must be gemini or vertex, found {args.provider}")
    if not _PREFIX_RE.match(args.name_prefix):
        out.append(
            f"namePrefix {args.name_prefix!r} must be 3-22 lowercase letters, digits or '-' "
            "(it becomes part of service account ids, which are at most 30 characters)"
        )
    fields = args.tick_schedule.split()
    if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
        out.append(f"tickSchedule {args.tick_schedule!r} is not a five-field cron expression")
    if args.batch_window is not None:
        fields = args.batch_window.split()
        if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
            out.append(f"batchWindow {args.batch_window!r} is not a five-field cron expression")
        try:
            ZoneInfo(args.batch_window_time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            out.append(
                f"batchWindowTimeZone {args.batch_window_time_zone!r} is not an IANA time zone"
            )
    return out


def _number_problems(args: PipelineArgs) -> list[str]:
    """Budgets, counts and retention periods."""
    out: list[str] = []
    for name, value in (
        ("jobBudgetUsd", args.job_budget_usd),
        ("dailyBudgetUsd", args.daily_budget_usd),
        ("billingBudgetUsd", args.billing_budget_usd),
    ):
        if value is not None and value < 0:
            out.append(f"{name} must be >= 0, found {value}")
    for name, number in (
        ("maxActiveBatches", args.max_active_batches),
        ("maxAttempts", args.max_attempts),
        ("inboxRetentionDays", args.inbox_retention_days),
    ):
        if number <= 0:
            out.append(f"{name} must be > 0, found {number}")
    if args.stuck_after_hours <= 0:
        out.append(f"stuckAfterHours must be > 0, found {args.stuck_after_hours}")
    if args.report_retention_days < MIN_REPORT_RETENTION_DAYS:
        out.append(
            f"reportRetentionDays must be >= {MIN_REPORT_RETENTION_DAYS} so a batch's request "
            f"file outlives the batch, found {args.report_retention_days}"
        )
    if (
        args.result_retention_days is not None
        and args.result_retention_days < args.report_retention_days
    ):
        out.append(
            "resultRetentionDays must not be shorter than reportRetentionDays "
            f"({args.result_retention_days} < {args.report_retention_days})"
        )
    return out


def _model_problems(args: PipelineArgs) -> list[str]:
    """The fallback model and the reference locations."""
    out: list[str] = []
    if args.fallback_model is not None:
        # The functions would refuse it at config load (config.Settings): say it here.
        spec = catalog.model_spec(args.fallback_model)
        if spec is None:
            out.append(
                f"fallbackModel {args.fallback_model!r} is not a catalog model; expected one "
                f"of {', '.join(s.model_id for s in catalog.MODELS)}"
            )
        else:
            problem = catalog.lifecycle_problem(spec.model_id, datetime.now(UTC).date())
            if problem is not None:
                out.append(f"fallbackModel {spec.model_id} cannot be used: {problem}")
    for location in (args.reference_locations or "").replace(",", " ").split():
        problem = location_problem(location)
        if problem is not None:
            out.append(f"referenceLocations: {problem}")
    return out


def _secret_problems(args: PipelineArgs) -> list[str]:
    """The secrets the chosen provider and webhook mode need."""
    out: list[str] = []
    if args.provider is cfg.ProviderKind.GEMINI and args.gemini_api_key is None:
        out.append(
            "provider gemini needs an API key: pulumi config set --secret bananabatch:geminiApiKey"
        )
    if args.provider is cfg.ProviderKind.VERTEX and args.webhook_mode is not cfg.WebhookMode.OFF:
        # Vertex batch jobs cannot carry webhooks; the scheduler tick is the only signal.
        out.append("webhookMode must be off with provider vertex (Vertex has no batch webhooks)")
    if args.openai_enabled and args.openai_api_key is None:
        out.append(
            "openaiEnabled needs the OpenAI API key: pulumi config set --secret "
            "bananabatch:openaiApiKey sk-..."
        )
    if args.webhook_mode is cfg.WebhookMode.STATIC and args.webhook_signing_secret is None:
        out.append(
            "webhookMode static needs the signing secret Gemini returned when the webhook was "
            "registered: pulumi config set --secret bananabatch:webhookSigningSecret whsec_..."
        )
    return out


def _lane_problems(args: PipelineArgs) -> list[str]:
    """The lanes as the functions will read them, and a key for every gateway."""
    out: list[str] = []
    try:
        # The functions would refuse these at config load (config.Settings): say it here.
        cfg.Settings(
            sync_lanes=args.sync_lanes,
            async_lanes=args.async_lanes,
            compat_lanes=args.compat_lanes,
            replicate_models=args.replicate_models or {},
            replicate_usd_per_image=args.replicate_usd_per_image,
        )
    except ValidationError as exc:
        for e in exc.errors():
            problem = str(e["msg"]).removeprefix("Value error, ")
            key = _STACK_KEY_OF.get(str(e["loc"][0]) if e["loc"] else "")
            out.append(f"{NAMESPACE}:{key}: {problem}" if key else problem)
    for label, lane in args.compat_lanes.items():
        if lane.api_key:
            out.append(f"compatLanes.{label}: a key never goes in plain configuration")
        if label not in args.compat_lane_keys:
            out.append(
                f"compat lane {label!r} needs its key: pulumi config set --secret "
                f"{NAMESPACE}:{COMPAT_KEY_PREFIX}{label} <key>"
            )
    if args.replicate_enabled and args.replicate_api_token is None:
        out.append(
            "asyncLanes names replicate, which needs its API token: pulumi config set "
            f"--secret {NAMESPACE}:replicateApiToken r8_..."
        )
    for label in args.compat_lane_keys:
        if label not in args.compat_lanes:
            out.append(
                f"{NAMESPACE}:{COMPAT_KEY_PREFIX}{label} is set but compatLanes has no "
                f"gateway {label!r}"
            )
    return out


def _billing_problems(args: PipelineArgs) -> list[str]:
    """Alerting, the billing kill switch and logging."""
    out: list[str] = []
    if args.alert_email is not None and not re.fullmatch(
        r"[^@\s]+@[^@\s]+\.[^@\s]+", args.alert_email
    ):
        out.append(f"alertEmail {args.alert_email!r} is not an e-mail address")
    if args.billing_account_id is not None and not _BILLING_ID_RE.match(args.billing_account_id):
        out.append(
            f"billingAccountId {args.billing_account_id!r} is not a billing account id "
            "(XXXXXX-XXXXXX-XXXXXX, as `gcloud billing accounts list` shows it)"
        )
    if (
        args.billing_account_id is not None
        and args.billing_budget_usd is None
        and args.daily_budget_usd is None
    ):
        out.append(
            "billingAccountId with an unlimited daily budget needs the monthly amount: "
            "pulumi config set bananabatch:billingBudgetUsd <usd>"
        )
    if args.billing_budget_usd is not None and args.billing_budget_usd <= 0:
        out.append(f"billingBudgetUsd must be > 0, found {args.billing_budget_usd}")
    if args.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        out.append(f"logLevel {args.log_level!r} is not a logging level")
    return out


def load_args(config: ConfigSource, gcp_config: ConfigSource) -> PipelineArgs:
    """Read and validate the stack configuration. Raises InfraConfigError on bad values."""
    values: dict[str, Any] = {
        "project": gcp_config.get("project") or "",
        "region": gcp_config.get("region") or DEFAULT_REGION,
    }
    values |= _read(config, _STRINGS, lambda _key, raw: raw)
    values |= _read(config, _FLOATS, _float_or_unlimited)
    values |= _read(config, _INTS, lambda key, raw: _number(key, raw, int))
    values |= _read(config, _BOOLEANS, _boolean)
    provider = _get(config, "provider")
    if provider is not None:
        values["provider"] = _choice(
            "provider",
            provider,
            cfg.ProviderKind,
            allowed={cfg.ProviderKind.GEMINI, cfg.ProviderKind.VERTEX},
        )
    mode = _get(config, "webhookMode")
    if mode is not None:
        values["webhook_mode"] = _choice(
            "webhookMode", mode, cfg.WebhookMode, allowed=set(cfg.WebhookMode)
        )
    values["gemini_api_key"] = config.get_secret("geminiApiKey")
    values["webhook_signing_secret"] = config.get_secret("webhookSigningSecret")
    values["openai_api_key"] = config.get_secret("openaiApiKey")
    values["openai_webhook_secret"] = config.get_secret("openaiWebhookSecret")
    values |= _read_lanes(config)
    values["replicate_api_token"] = config.get_secret("replicateApiToken")
    values["replicate_webhook_secret"] = config.get_secret("replicateWebhookSecret")
    return PipelineArgs(**values)


def _read_lanes(config: ConfigSource) -> dict[str, Any]:
    """syncLanes, asyncLanes (comma-separated), compatLanes (an object of gateways by label,
    set with `pulumi config set --path`), and the secret `compatKey-<label>` of each."""
    values: dict[str, Any] = {}
    for key, attr in (("syncLanes", "sync_lanes"), ("asyncLanes", "async_lanes")):
        raw = _get(config, key)
        if raw is not None:
            values[attr] = tuple(part for part in raw.replace(",", " ").split() if part)
    raw = _get(config, "compatLanes")
    if raw is None:
        return values
    lanes = {label: _compat_lane(label, spec) for label, spec in _json_object(raw).items()}
    values["compat_lanes"] = lanes
    keys = {label: config.get_secret(COMPAT_KEY_PREFIX + label) for label in lanes}
    values["compat_lane_keys"] = {label: key for label, key in keys.items() if key is not None}
    return values


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InfraConfigError(f"{NAMESPACE}:compatLanes is not a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise InfraConfigError(f"{NAMESPACE}:compatLanes must be an object of gateways by label")
    return value


def _compat_lane(label: str, spec: Any) -> cfg.CompatLaneConfig:
    where = f"{NAMESPACE}:compatLanes.{label}"
    if not isinstance(spec, dict):
        raise InfraConfigError(f"{where} must be an object (baseUrl, models, ...)")
    unknown = sorted(set(spec) - set(_COMPAT_FIELDS))
    if any(name.lower().replace("_", "") == "apikey" for name in unknown):
        raise InfraConfigError(
            f"{where}: a key never goes in plain configuration; remove it and run "
            f"pulumi config set --secret {NAMESPACE}:{COMPAT_KEY_PREFIX}{label} <key>"
        )
    if unknown:
        raise InfraConfigError(
            f"{where}: unknown {', '.join(unknown)}; expected {', '.join(_COMPAT_FIELDS)}"
        )
    try:
        return cfg.CompatLaneConfig(**{_COMPAT_FIELDS[k]: v for k, v in spec.items()})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise InfraConfigError(f"{where}: {problems}") from None


# The settings whose refusal names the stack config key that sets them.
_STACK_KEY_OF: Final = {
    "replicate_models": "replicateModels",
    "replicate_usd_per_image": "replicateUsdPerImage",
}
# Stack config key -> PipelineArgs field, by how the value is read.
_STRINGS: Final[Mapping[str, str]] = {
    "bucketLocation": "bucket_location",
    "firestoreLocation": "firestore_location",
    "firestoreDatabase": "firestore_database",
    "namePrefix": "name_prefix",
    "inboxBucket": "inbox_bucket_name",
    "resultsBucket": "results_bucket_name",
    "defaultModel": "default_model",
    "vertexLocation": "vertex_location",
    "tickSchedule": "tick_schedule",
    "tickTimeZone": "tick_time_zone",
    "batchWindow": "batch_window",
    "batchWindowTimeZone": "batch_window_time_zone",
    "webhookJwksUrl": "webhook_jwks_url",
    "webhookAudience": "webhook_audience",
    "webhookIssuer": "webhook_issuer",
    "logLevel": "log_level",
    "billingAccountId": "billing_account_id",
    "fallbackModel": "fallback_model",
    "referenceLocations": "reference_locations",
    "alertEmail": "alert_email",
    "replicateModels": "replicate_models",
    "replicateUsdPerImage": "replicate_usd_per_image",
}
_FLOATS: Final[Mapping[str, str]] = {
    "jobBudgetUsd": "job_budget_usd",
    "dailyBudgetUsd": "daily_budget_usd",
    "billingBudgetUsd": "billing_budget_usd",
    "stuckAfterHours": "stuck_after_hours",
}
_INTS: Final[Mapping[str, str]] = {
    "maxActiveBatches": "max_active_batches",
    "maxAttempts": "max_attempts",
    "inboxRetentionDays": "inbox_retention_days",
    "reportRetentionDays": "report_retention_days",
    "resultRetentionDays": "result_retention_days",
}
_BOOLEANS: Final[Mapping[str, str]] = {
    "resultsVersioning": "results_versioning",
    "forceDestroy": "force_destroy",
    "firestoreDeleteProtection": "firestore_delete_protection",
    "firestorePitr": "firestore_pitr",
    "openaiEnabled": "openai_enabled",
    "allowThirdParty": "allow_third_party",
    "failoverOnUnknown": "failover_on_unknown",
}


def _read(
    config: ConfigSource, fields: Mapping[str, str], convert: Callable[[str, str], Any]
) -> dict[str, Any]:
    """The fields that are set (not blank), converted; unset ones keep their defaults."""
    values: dict[str, Any] = {}
    for key, attr in fields.items():
        raw = _get(config, key)
        if raw is not None:
            values[attr] = convert(key, raw)
    return values


def _float_or_unlimited(key: str, raw: str) -> Any:
    if key in _CAPS and raw.lower() == cfg.UNLIMITED:
        # Only "unlimited", written out, turns a cap off.
        return None
    return _number(key, raw, float)


def _get(config: ConfigSource, key: str) -> str | None:
    raw = config.get(key)
    if raw is None or raw.strip() == "":
        return None
    return raw.strip()


def _number(key: str, raw: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise InfraConfigError(f"{NAMESPACE}:{key} must be {expected}, found {raw!r}") from None


def _boolean(key: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"true", "yes", "1"}:
        return True
    if lowered in {"false", "no", "0"}:
        return False
    raise InfraConfigError(f"{NAMESPACE}:{key} must be true or false, found {raw!r}")


def _choice(key: str, raw: str, enum: Any, *, allowed: set[Any]) -> Any:
    try:
        value = enum(raw.lower())
    except ValueError:
        value = None
    if value not in allowed:
        names = ", ".join(sorted(str(v) for v in allowed))
        raise InfraConfigError(f"{NAMESPACE}:{key} must be one of {names}, found {raw!r}")
    return value
