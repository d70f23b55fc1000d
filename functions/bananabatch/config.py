"""Configuration, read once at the edge into a frozen settings object.

The environment variable names below are the one place those names are spelled.
The Pulumi program imports them to set each function's environment, and a test
checks the two agree, so renaming one here renames it everywhere.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bananabatch.core import catalog
from bananabatch.core.references import location_problem
from bananabatch.core.window import BatchWindow
from bananabatch.errors import ConfigError

# --- environment variable names (shared with infra/) -------------------------------------
ENV_BACKEND: Final = "BANANABATCH_BACKEND"
ENV_PROVIDER: Final = "BANANABATCH_PROVIDER"
ENV_PROJECT: Final = "GOOGLE_CLOUD_PROJECT"
ENV_REGION: Final = "BANANABATCH_REGION"
ENV_LOCAL_ROOT: Final = "BANANABATCH_LOCAL_ROOT"
ENV_LOCAL_THUMBNAIL_WORKERS: Final = "BANANABATCH_LOCAL_THUMBNAIL_WORKERS"
ENV_LOCAL_THUMBNAILS: Final = "BANANABATCH_LOCAL_THUMBNAILS"
ENV_INBOX_BUCKET: Final = "BANANABATCH_INBOX_BUCKET"
ENV_RESULTS_BUCKET: Final = "BANANABATCH_RESULTS_BUCKET"
ENV_FIRESTORE_DATABASE: Final = "BANANABATCH_FIRESTORE_DATABASE"
ENV_TOPIC_TICK: Final = "BANANABATCH_TOPIC_TICK"
ENV_TOPIC_BATCH_DONE: Final = "BANANABATCH_TOPIC_BATCH_DONE"
ENV_TOPIC_COMPLETIONS: Final = "BANANABATCH_TOPIC_COMPLETIONS"
ENV_DEFAULT_MODEL: Final = "BANANABATCH_DEFAULT_MODEL"
ENV_GEMINI_API_KEY: Final = "GEMINI_API_KEY"
# Read by google-genai itself; we read it too so the emulator URL shows in logs and settings.
ENV_GEMINI_BASE_URL: Final = "GOOGLE_GEMINI_BASE_URL"
ENV_VERTEX_LOCATION: Final = "BANANABATCH_VERTEX_LOCATION"
ENV_VERTEX_BASE_URL: Final = "GOOGLE_VERTEX_BASE_URL"
ENV_WEBHOOK_MODE: Final = "BANANABATCH_WEBHOOK_MODE"
ENV_WEBHOOK_URL: Final = "BANANABATCH_WEBHOOK_URL"
ENV_WEBHOOK_SECRET: Final = "BANANABATCH_WEBHOOK_SECRET"
ENV_WEBHOOK_JWKS_URL: Final = "BANANABATCH_WEBHOOK_JWKS_URL"
ENV_WEBHOOK_AUDIENCE: Final = "BANANABATCH_WEBHOOK_AUDIENCE"
ENV_WEBHOOK_ISSUER: Final = "BANANABATCH_WEBHOOK_ISSUER"
ENV_WEBHOOK_API_VERSION: Final = "BANANABATCH_WEBHOOK_API_VERSION"
ENV_RESULT_RETENTION_DAYS: Final = "BANANABATCH_RESULT_RETENTION_DAYS"
ENV_MAX_REQUESTS_PER_BATCH: Final = "BANANABATCH_MAX_REQUESTS_PER_BATCH"
ENV_MAX_BATCH_BYTES: Final = "BANANABATCH_MAX_BATCH_BYTES"
ENV_MAX_BATCH_OUTPUT_BYTES: Final = "BANANABATCH_MAX_BATCH_OUTPUT_BYTES"
ENV_MAX_INPUT_BYTES: Final = "BANANABATCH_MAX_INPUT_BYTES"
ENV_INTAKE_DEDUP_BYTES: Final = "BANANABATCH_INTAKE_DEDUP_BYTES"
ENV_TWOTIER_CULL: Final = "BANANABATCH_TWOTIER_CULL"
ENV_MAX_ACTIVE_BATCHES: Final = "BANANABATCH_MAX_ACTIVE_BATCHES"
ENV_MAX_ATTEMPTS: Final = "BANANABATCH_MAX_ATTEMPTS"
ENV_STUCK_AFTER_HOURS: Final = "BANANABATCH_STUCK_AFTER_HOURS"
ENV_JOB_BUDGET_USD: Final = "BANANABATCH_JOB_BUDGET_USD"
ENV_DAILY_BUDGET_USD: Final = "BANANABATCH_DAILY_BUDGET_USD"
ENV_BUDGET_MARGIN: Final = "BANANABATCH_BUDGET_MARGIN"
ENV_QUOTA_ALERT_AFTER: Final = "BANANABATCH_QUOTA_ALERT_AFTER"
ENV_CREDITS_PROBE_MINUTES: Final = "BANANABATCH_CREDITS_PROBE_MINUTES"
ENV_FALLBACK_MODEL: Final = "BANANABATCH_FALLBACK_MODEL"
ENV_PRICE_OVERRIDES: Final = "BANANABATCH_PRICE_OVERRIDES"
ENV_LOG_LEVEL: Final = "BANANABATCH_LOG_LEVEL"
ENV_PRICE_MAX_AGE_DAYS: Final = "BANANABATCH_PRICE_MAX_AGE_DAYS"
ENV_VERTEX_STUCK_AFTER_HOURS: Final = "BANANABATCH_VERTEX_STUCK_AFTER_HOURS"
ENV_FILES_STORE_WARN_BYTES: Final = "BANANABATCH_FILES_STORE_WARN_BYTES"
ENV_JOB_OVERDUE_HOURS: Final = "BANANABATCH_JOB_OVERDUE_HOURS"
ENV_REFERENCE_LOCATIONS: Final = "BANANABATCH_REFERENCE_LOCATIONS"
ENV_REFERENCE_URL_HOURS: Final = "BANANABATCH_REFERENCE_URL_HOURS"
# Read by the openai SDK itself under these names too (OpenAI Batch, providers/openai_batch.py).
ENV_OPENAI_API_KEY: Final = "OPENAI_API_KEY"
ENV_OPENAI_BASE_URL: Final = "OPENAI_BASE_URL"
ENV_OPENAI_WEBHOOK_SECRET: Final = "OPENAI_WEBHOOK_SECRET"
ENV_OPENAI_OUTPUT_EXPIRES_HOURS: Final = "BANANABATCH_OPENAI_OUTPUT_EXPIRES_HOURS"
# Whether this deployment takes gpt-image lines (off: they are rejected at intake, saying so).
ENV_OPENAI_ENABLED: Final = "BANANABATCH_OPENAI_ENABLED"
# Lanes besides batch (issue 20; core/routing.py): the synchronous providers in failover
# order ("gemini-standard", "compat:<label>"), the async-callback ones likewise, each
# OpenAI-compatible gateway's settings (JSON, see CompatLaneConfig), whether third parties
# may be used at all, and whether an attempt of unknown outcome may go to the next provider.
ENV_SYNC_LANES: Final = "BANANABATCH_SYNC_LANES"
ENV_ASYNC_LANES: Final = "BANANABATCH_ASYNC_LANES"
ENV_COMPAT_LANES: Final = "BANANABATCH_COMPAT_LANES"
ENV_ALLOW_THIRD_PARTY: Final = "BANANABATCH_ALLOW_THIRD_PARTY"
ENV_FAILOVER_ON_UNKNOWN: Final = "BANANABATCH_FAILOVER_ON_UNKNOWN"
# The batch window (core/window.py): a five-field cron expression and its time zone; unset,
# batches are submitted at once. The stack's batchWindow / batchWindowTimeZone.
ENV_BATCH_WINDOW: Final = "BANANABATCH_BATCH_WINDOW"
ENV_BATCH_WINDOW_TZ: Final = "BANANABATCH_BATCH_WINDOW_TZ"
# The Replicate async lane (providers/replicate_lane.py): the client's own names for its
# token and base URL, the account's webhook signing secret (whsec_..., from
# `webhooks.default.secret()`), and Replicate's names for catalog models (JSON).
ENV_REPLICATE_API_TOKEN: Final = "REPLICATE_API_TOKEN"
ENV_REPLICATE_BASE_URL: Final = "REPLICATE_BASE_URL"
ENV_REPLICATE_WEBHOOK_SECRET: Final = "BANANABATCH_REPLICATE_WEBHOOK_SECRET"
ENV_REPLICATE_MODELS: Final = "BANANABATCH_REPLICATE_MODELS"
# The deployment's own Replicate price per image, where the owner knows it better than the
# price table's dated figure: one number for every size, or a JSON object by size tier.
ENV_REPLICATE_USD_PER_IMAGE: Final = "BANANABATCH_REPLICATE_USD_PER_IMAGE"

#: Every name above, for the infra test that checks Pulumi sets only names we read.
ALL_ENV_NAMES: Final[frozenset[str]] = frozenset(
    value for name, value in dict(globals()).items() if name.startswith("ENV_")
)


class Backend(StrEnum):
    LOCAL = "local"
    GCP = "gcp"


class LocalThumbnails(StrEnum):
    """When the local stack makes the gallery's thumbnails."""

    # When the gallery asks for one (`bananabatch local serve`) or a zip is made: never
    # during a run, whose wall time they once tripled (README, issue 18).
    ON_DEMAND = "on-demand"
    # While the run collects, as the cloud does (worker processes, see thumbnail_workers).
    DURING_RUN = "during-run"


class ProviderKind(StrEnum):
    EMULATOR = "emulator"
    GEMINI = "gemini"
    VERTEX = "vertex"


class WebhookMode(StrEnum):
    OFF = "off"
    STATIC = "static"
    DYNAMIC = "dynamic"


# The one default lives in the catalog, beside the facts that make it a good one.
DEFAULT_MODEL: Final = catalog.DEFAULT_MODEL

#: Why an `AIza…` key is refused (field-2026-12.md §1 row 1), shared with `bananabatch doctor`.
AUTH_KEY_SENTENCE: Final = (
    "Google AI Studio issues only auth keys (they start with 'AQ.' and are bound to a "
    "service account) since 2026-05-28, and the Gemini API rejects every standard 'AIza' "
    "key since September 2026: create an auth key in AI Studio and set "
    f"{ENV_GEMINI_API_KEY} to it."
)

# Intake's dedup tables: 8 bytes a slot, at most 70% full, two hashes a line.
DEFAULT_INTAKE_DEDUP_BYTES: Final = 384 * 1024 * 1024

# Vertex batch limits (field-2026-12.md §1 row 7): 200,000 requests and 1 GB of input per
# job; a job may queue 72 h and then runs up to about 24 h, after which the service itself
# ends it keeping completed work. The watchdog waits past both, with an hour's margin.
VERTEX_MAX_REQUESTS_PER_JOB: Final = 200_000
VERTEX_MAX_INPUT_BYTES: Final = 1_000_000_000
VERTEX_QUEUE_HOURS: Final = 72
VERTEX_RUN_HOURS: Final = 24
# Files API store per project (reference §7): warn well below it.
FILES_STORE_LIMIT_BYTES: Final = 20 * 1024**3
# The structured record each tick logs about that store (pipeline/files_store.py), and the
# field a WARNING past files_store_warn_bytes carries: the deployment's log-based metric and
# alert policy match on these, so they are named here, once, for both.
FILES_STORE_USAGE_MESSAGE: Final = "files store usage"
FILES_STORE_BYTES_FIELD: Final = "files_store_bytes"
FILES_STORE_ALERT: Final = "files_store_high"
#: The tick's one WARNING for a job still running past its expected completion, and its
#: `alert` value (the deployment's `job-overdue` policy matches it).
JOB_OVERDUE_MESSAGE: Final = "job running past its expected completion"
JOB_OVERDUE_ALERT: Final = "job_overdue"
# The issuer per-job webhook JWTs are expected to name. The documentation gives no value
# (reference gemini-webhooks.md §2); this is the service's own origin, and it is configurable.
DEFAULT_WEBHOOK_ISSUER: Final = "https://generativelanguage.googleapis.com"
# Webhooks are a Beta API served under /v1beta/ (field sheet §1 row 8), whatever the SDK's
# default version is.
DEFAULT_WEBHOOK_API_VERSION: Final = "v1beta"

#: The daily cap a deployment gets when nobody set one: spend is bounded by default, and
#: only the word below, written out, turns the cap off. $10 is the smallest prepayment
#: the Developer API takes and Tier 1's 10-minute spend window (field-2026-12 §1 row 6).
DEFAULT_DAILY_BUDGET_USD: Final = 10.0
#: What BANANABATCH_DAILY_BUDGET_USD / BANANABATCH_JOB_BUDGET_USD say to mean "no cap".
UNLIMITED: Final = "unlimited"
#: Reservations exceed the estimate by this fraction: actual cost ran $0.0008 over the
#: estimates of a run under a cap set exactly at them (text and thought tokens the
#: estimate cannot know), so a cap is checked against estimate x (1 + margin).
DEFAULT_BUDGET_MARGIN: Final = 0.10


#: The synchronous lane that is Gemini's own standard API (today's urgent lane).
GEMINI_STANDARD_LANE: Final = "gemini-standard"
#: The prefix of an OpenAI-compatible gateway's lane name: "compat:<label>".
COMPAT_PREFIX: Final = "compat:"
_LANE_LABEL: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: A gateway's key may come from its own variable instead of its entry in
#: BANANABATCH_COMPAT_LANES: a deployment injects each key from its own Secret Manager
#: secret (infra/), so the lanes' JSON stays plain configuration without keys.
COMPAT_KEY_ENV_PREFIX: Final = "BANANABATCH_COMPAT_KEY_"


def compat_key_env(label: str) -> str:
    """The variable that holds the key of the gateway `label` ("gw-1" -> ..._KEY_GW_1)."""
    return COMPAT_KEY_ENV_PREFIX + label.upper().replace("-", "_")


#: The size tiers a per-image price may be set for (core/catalog.py's image sizes).
SIZE_TIERS: Final = ("512", "1K", "2K", "4K")


def usd_per_image(value: object) -> float | dict[str, float] | None:
    """An owner's price per image: one number for every size, or an object of numbers by
    size tier ({"1K": 0.03, "4K": 0.06}), as a value or its JSON text; blank is None.
    Raises ValueError saying what was expected."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError:
            raise ValueError(
                f"expected a price in USD or a JSON object of prices by size tier; found {value!r}"
            ) from None
    if value is None:
        return None
    if isinstance(value, Mapping):
        unknown = sorted(str(tier) for tier in value if tier not in SIZE_TIERS)
        if unknown:
            raise ValueError(
                f"unknown size tier {', '.join(unknown)}: expected {', '.join(SIZE_TIERS)} "
                "(or one number for every size)"
            )
        if not value:
            raise ValueError("a price by size tier names at least one tier")
        return {str(tier): _one_usd(usd, f"at {tier}") for tier, usd in value.items()}
    return _one_usd(value, "")


def _one_usd(value: object, where: str) -> float:
    at = f" {where}" if where else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a price in USD{at}; found {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a price{at} must be a number >= 0; found {value}")
    return float(value)


class CompatLaneConfig(BaseModel):
    """One OpenAI-compatible images endpoint (`images.generate` through the openai SDK),
    under a label of the owner's choosing; its lane is "compat:<label>"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    api_key: str = Field(default="", repr=False)
    # Which catalog models it serves, and under what name it knows each one
    # ({"gemini-3-pro-image": "nano-banana-pro"}).
    models: Mapping[str, str]
    # Its flat price per image, where the owner knows it better than the price table's
    # dated default for such gateways (core/price_table.py).
    usd_per_image: float | None = Field(default=None, ge=0)
    # A gateway in front of someone else's model is a third party (the default); the
    # model maker's own OpenAI-compatible endpoint is not.
    third_party: bool = True
    timeout_s: float = Field(default=120.0, gt=0)

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        out: dict[str, str] = {}
        for model, name in value.items():
            spec = catalog.model_spec(model)
            if spec is None:
                raise ValueError(f"compat lane model: unknown model {model!r}")
            out[spec.model_id] = name
        if not out:
            raise ValueError("a compat lane serves at least one model")
        return out


class Settings(BaseModel):
    """Everything the pipeline needs to know about where it runs. Immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Backend = Backend.LOCAL
    provider: ProviderKind = ProviderKind.EMULATOR
    project: str | None = None
    region: str = "us-central1"
    local_root: Path = Path(".bananabatch")
    # `local run` makes thumbnails in this many worker processes while it collects (0: in
    # turn on its own thread, as on_batch_done invocations); None: one per core, up to 4.
    local_thumbnail_workers: int | None = Field(default=None, ge=0)
    local_thumbnails: LocalThumbnails = LocalThumbnails.ON_DEMAND
    inbox_bucket: str = "inbox"
    results_bucket: str = "results"
    firestore_database: str = "(default)"
    topic_tick: str = "bananabatch-tick"
    topic_batch_done: str = "bananabatch-batch-done"
    topic_completions: str = "bananabatch-completions"
    default_model: str = DEFAULT_MODEL
    gemini_api_key: str | None = Field(default=None, repr=False)
    gemini_base_url: str | None = None
    vertex_location: str = "global"
    vertex_base_url: str | None = None
    webhook_mode: WebhookMode = WebhookMode.OFF
    webhook_url: str | None = None
    webhook_secret: str | None = Field(default=None, repr=False)
    webhook_jwks_url: str | None = None
    # What a per-job webhook JWT must name as `aud` (default: webhook_url) and `iss`.
    webhook_audience: str | None = None
    webhook_issuer: str = DEFAULT_WEBHOOK_ISSUER
    # The API version used to register static webhooks.
    webhook_api_version: str = DEFAULT_WEBHOOK_API_VERSION
    # Days result images are kept (the bucket's lifecycle); None keeps them forever. Cache
    # entries pointing at images expire with them.
    result_retention_days: int | None = Field(default=None, gt=0)
    # Planning limits. Output bytes keep each result file comfortably collectable in one
    # function invocation (see planning); request count stays far under provider limits.
    max_requests_per_batch: int = Field(default=2_000, gt=0)
    max_batch_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_batch_output_bytes: int = Field(default=1_500 * 1024 * 1024, gt=0)
    max_input_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    # Memory intake's dedup tables (keys, requests) may take together. A file with more
    # distinct lines than fit (about 17M at the default) spills: its repeats are counted
    # first in a pass whose hashes go to the object store (pipeline/intake/spill.py). Sized
    # for the upload function's 1 GiB with margin (infra; tests/infra checks it).
    intake_dedup_bytes: int = Field(default=DEFAULT_INTAKE_DEDUP_BYTES, ge=64 * 1024)
    max_active_batches: int = Field(default=50, gt=0)
    # Two-tier jobs' cull of draft candidates: empty for the standard one
    # (core/twotier/cull.py), or `package.module:factory` called with the thresholds.
    twotier_cull: str = ""
    max_attempts: int = Field(default=3, gt=0)
    stuck_after_hours: float = Field(default=30.0, gt=0)
    job_budget_usd: float | None = Field(default=None, ge=0)
    # None only when configured as "unlimited" (see DEFAULT_DAILY_BUDGET_USD).
    daily_budget_usd: float | None = Field(default=DEFAULT_DAILY_BUDGET_USD, ge=0)
    budget_margin: float = Field(default=DEFAULT_BUDGET_MARGIN, ge=0, le=1)
    # An unrecognised 429 is handled as a rate limit; after this many in a row, an alert.
    quota_alert_after: int = Field(default=5, gt=0)
    # While prepaid credits are depleted, one create is tried this often as the probe.
    credits_probe_minutes: float = Field(default=30.0, gt=0)
    # Where a model's items go when the provider says the model is gone; None: nowhere
    # (they fail, and say why). Never used silently: price and quality change.
    fallback_model: str | None = None
    price_overrides: Mapping[str, Mapping[str, float]] = Field(default_factory=dict)
    log_level: str = "INFO"
    # An estimate made with a price read longer ago than this says so.
    price_max_age_days: int = Field(default=90, gt=0)
    # The watchdog on Vertex: its queue limit plus its run limit plus a margin.
    vertex_stuck_after_hours: float = Field(default=VERTEX_QUEUE_HOURS + VERTEX_RUN_HOURS + 1, gt=0)
    # Bytes we leave in the project's Files API store (result files cannot be deleted):
    # past this, a WARNING with "alert": "files_store_high". Half the 20 GB limit.
    files_store_warn_bytes: int = Field(default=FILES_STORE_LIMIT_BYTES // 2, gt=0)
    # Unset: twice the watchdog (time for a first batch to be cancelled by the watchdog and
    # its resubmission to run as long). A job older than this is reported once.
    job_overdue_hours: float | None = Field(default=None, gt=0)
    # Where reference images may live: gs:// and https:// URI prefixes, comma-separated in
    # the environment. Empty: the inbox's references/ folder and any public https:// URL
    # (core.references).
    reference_locations: tuple[str, ...] = ()
    # How long the signed URL of a reference image sent to the Gemini Developer API stays
    # valid: past the batch's own 48 h expiry (the service reads a row's references when
    # it runs the row), within V4's 7-day maximum. Signed when the batch is created.
    reference_url_hours: float = Field(default=72.0, gt=48, le=168)
    # OpenAI Batch (providers/openai_batch.py). The base URL is what the SDK takes
    # ("https://api.openai.com/v1" when unset; the emulator's ".../v1" locally).
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = None
    # The signing secret of the project's OpenAI webhook endpoint (whsec_...).
    openai_webhook_secret: str | None = Field(default=None, repr=False)
    # How long OpenAI keeps a batch's output and error files, counted from their creation
    # (1 h to 30 d): the collector must have read them by then. A batch runs at most 24 h,
    # then its files are made; 7 days covers a collector down over a long weekend.
    openai_output_expires_hours: float = Field(default=7 * 24.0, ge=1, le=30 * 24)
    # Lines for gpt-image models go to OpenAI Batch; off, they are rejected at intake with
    # the reason. The key and the webhook secret come from Secret Manager when deployed.
    openai_enabled: bool = False
    # Synchronous lanes in failover order: urgent lines go to the first that serves their
    # model, and to the next when it fails (pipeline/lanes.py). "gemini-standard" is
    # Gemini's own API; "compat:<label>" a gateway of compat_lanes.
    sync_lanes: tuple[str, ...] = (GEMINI_STANDARD_LANE,)
    # Async-callback lanes in failover order (by provider name, e.g. "replicate").
    async_lanes: tuple[str, ...] = ()
    compat_lanes: Mapping[str, CompatLaneConfig] = Field(default_factory=dict, repr=False)
    # May any line go through a third party at all? Off by default: some owners' compliance
    # forbids intermediaries. A line must also say allow_third_party: true.
    allow_third_party: bool = False
    # Off: an attempt whose outcome is unknown (it may have been paid) ends FAILED and is
    # never sent to the next provider. On: the owner accepts paying twice for speed.
    failover_on_unknown: bool = False
    # Uploads accumulate until the next window of this cron expression (in
    # batch_window_tz) instead of being submitted at once; urgent lines never wait.
    batch_window: str | None = None
    batch_window_tz: str = "UTC"
    # Replicate (async lane "replicate"): the token and the webhook secret come from Secret
    # Manager when deployed; the base URL only for an emulator; replicate_models maps
    # catalog models to Replicate's "owner/name" (empty: the lane's dated defaults).
    replicate_api_token: str | None = Field(default=None, repr=False)
    replicate_base_url: str | None = None
    replicate_webhook_secret: str | None = Field(default=None, repr=False)
    replicate_models: Mapping[str, str] = Field(default_factory=dict)
    # What Replicate charges this deployment per image (routing, estimates and the cost of
    # the items it serves): one price for every size, or prices by size tier; a size it
    # does not name keeps the price table's dated figure. None: the table's figure.
    replicate_usd_per_image: float | Mapping[str, float] | None = None

    @field_validator("gemini_api_key")
    @classmethod
    def _refuse_standard_keys(cls, value: str | None) -> str | None:
        if value is not None and value.strip().startswith(catalog.STANDARD_KEY_PREFIX):
            raise ValueError(f"a standard API key (AIza…) is refused. {AUTH_KEY_SENTENCE}")
        return value

    @field_validator("default_model")
    @classmethod
    def _default_model_is_served(cls, value: str) -> str:
        spec = catalog.model_spec(value)
        if spec is None:
            known = ", ".join(s.model_id for s in catalog.MODELS)
            raise ValueError(f"unknown default model {value!r}; expected one of {known}")
        problem = catalog.lifecycle_problem(value, datetime.now(UTC).date())
        if problem is not None:
            raise ValueError(f"the default model cannot be used: {problem}")
        return value

    @field_validator("fallback_model")
    @classmethod
    def _fallback_model_can_serve(cls, value: str | None) -> str | None:
        # Checked now: a typo would otherwise show only when a model is gone, the worst
        # moment to find it (pipeline/model_gone.py).
        if value is None or not value.strip():
            return None
        spec = catalog.model_spec(value.strip())
        if spec is None:
            known = ", ".join(s.model_id for s in catalog.MODELS)
            raise ValueError(f"unknown fallback model {value!r}; expected one of {known}")
        problem = catalog.lifecycle_problem(spec.model_id, datetime.now(UTC).date())
        if problem is not None:
            raise ValueError(f"the fallback model cannot be used: {problem}")
        return spec.model_id

    @field_validator("batch_window")
    @classmethod
    def _window_is_cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return BatchWindow.parse(value).cron

    @field_validator("batch_window_tz")
    @classmethod
    def _window_zone_is_known(cls, value: str) -> str:
        BatchWindow.parse("0 0 * * *", value)
        return value

    @property
    def window(self) -> BatchWindow | None:
        """The batch window, or None when batches go at once."""
        if self.batch_window is None or not self.batch_window.strip():
            return None
        return BatchWindow.parse(self.batch_window, self.batch_window_tz)

    @model_validator(mode="after")
    def _vertex_limits(self) -> Settings:
        if self.provider is ProviderKind.VERTEX:
            if self.max_requests_per_batch > VERTEX_MAX_REQUESTS_PER_JOB:
                raise ValueError(
                    f"max_requests_per_batch is {self.max_requests_per_batch}; a Vertex batch "
                    f"job takes at most {VERTEX_MAX_REQUESTS_PER_JOB} requests"
                )
            if self.max_batch_bytes > VERTEX_MAX_INPUT_BYTES:
                raise ValueError(
                    f"max_batch_bytes is {self.max_batch_bytes}; a Vertex batch job's input "
                    f"file may hold at most {VERTEX_MAX_INPUT_BYTES} bytes"
                )
        return self

    @property
    def watchdog_hours(self) -> float:
        """How long a batch may stay unfinished before the tick cancels it: the provider's
        own limits decide (Gemini expires at 48 h; Vertex queues 72 h, then runs 24 h)."""
        if self.provider is ProviderKind.VERTEX:
            return self.vertex_stuck_after_hours
        return self.stuck_after_hours

    @property
    def overdue_hours(self) -> float:
        """How old a RUNNING job may get before the tick reports it overdue (once)."""
        return self.job_overdue_hours or 2 * self.watchdog_hours

    @field_validator("job_budget_usd", "daily_budget_usd", mode="before")
    @classmethod
    def _parse_budget(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == UNLIMITED:
            return None
        return value

    @field_validator("price_overrides", mode="before")
    @classmethod
    def _parse_overrides(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("reference_locations", mode="before")
    @classmethod
    def _parse_locations(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part for part in value.replace(",", " ").split() if part)
        if isinstance(value, list | tuple):
            for location in value:
                problem = location_problem(str(location))
                if problem is not None:
                    raise ValueError(f"reference location: {problem}")
        return value

    @field_validator("sync_lanes", "async_lanes", mode="before")
    @classmethod
    def _parse_lane_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @field_validator("compat_lanes", mode="before")
    @classmethod
    def _parse_compat_lanes(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("replicate_models", mode="before")
    @classmethod
    def _parse_replicate_models(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("replicate_models")
    @classmethod
    def _replicate_models_known(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        out: dict[str, str] = {}
        for model, name in value.items():
            spec = catalog.model_spec(model)
            if spec is None:
                raise ValueError(f"replicate model: unknown catalog model {model!r}")
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*", name):
                raise ValueError(f"replicate model {model!r}: expected owner/name; found {name!r}")
            out[spec.model_id] = name
        return out

    @field_validator("replicate_usd_per_image", mode="before")
    @classmethod
    def _parse_replicate_price(cls, value: object) -> object:
        return usd_per_image(value)

    @field_validator("replicate_webhook_secret")
    @classmethod
    def _replicate_secret_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("whsec_"):
            # Named, never shown: it is a credential.
            raise ValueError("expected a whsec_... signing secret")
        return value

    @model_validator(mode="after")
    def _lanes_are_configured(self) -> Settings:
        for label in self.compat_lanes:
            if not _LANE_LABEL.fullmatch(label):
                raise ValueError(
                    f"compat lane label {label!r}: expected 1-32 of a-z, 0-9, '-', '_'"
                )
        for name in self.sync_lanes:
            if name == GEMINI_STANDARD_LANE:
                continue
            label = name.removeprefix(COMPAT_PREFIX)
            if not name.startswith(COMPAT_PREFIX) or label not in self.compat_lanes:
                known = [GEMINI_STANDARD_LANE, *(COMPAT_PREFIX + k for k in self.compat_lanes)]
                raise ValueError(
                    f"sync lane {name!r}: expected one of {', '.join(known)} (a compat lane "
                    f"needs its entry in {ENV_COMPAT_LANES})"
                )
        key_names = [compat_key_env(label) for label in self.compat_lanes]
        if len(set(key_names)) != len(key_names):
            raise ValueError(
                "compat lane labels differ only by '-' and '_', so their keys' variables "
                f"({COMPAT_KEY_ENV_PREFIX}<LABEL>) would be the same: rename one"
            )
        if len(set(self.sync_lanes)) != len(self.sync_lanes):
            raise ValueError(f"sync lanes name a lane twice: {', '.join(self.sync_lanes)}")
        for name in self.async_lanes:
            if not _LANE_LABEL.fullmatch(name):
                raise ValueError(f"async lane {name!r}: expected a provider name such as replicate")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; blank values mean "use the default"."""
        fields: dict[str, object] = {}
        for field_name, env_name in _FIELD_ENV.items():
            raw = env.get(env_name)
            if raw is not None and raw.strip() != "":
                fields[field_name] = raw.strip()
        try:
            keys = {
                name: value.strip()
                for name, value in env.items()
                if name.startswith(COMPAT_KEY_ENV_PREFIX) and value.strip()
            }
            if keys:
                fields["compat_lanes"] = _with_compat_keys(fields.get("compat_lanes"), keys)
            return cls.model_validate(fields)
        except ValidationError as exc:
            # Named by field, never by value: a refused value may be a credential.
            problems = "; ".join(
                f"{_env_named('.'.join(str(p) for p in e['loc']))}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            )
            raise ConfigError(f"invalid configuration from environment: {problems}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid configuration from environment: {exc}") from exc

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env, used to hand settings to a subprocess or a test."""
        out: dict[str, str] = {}
        for field_name, env_name in _FIELD_ENV.items():
            value = getattr(self, field_name)
            if value is None and field_name == "daily_budget_usd":
                # Absent means the default cap, so "no cap" must be written out.
                out[env_name] = UNLIMITED
                continue
            if value is None:
                continue
            if field_name in ("price_overrides", "replicate_models") or (
                field_name == "replicate_usd_per_image" and isinstance(value, Mapping)
            ):
                out[env_name] = json.dumps(dict(value))
            elif field_name == "compat_lanes":
                if value:
                    out[env_name] = json.dumps(
                        {label: lane.model_dump() for label, lane in value.items()}
                    )
            elif field_name in ("sync_lanes", "async_lanes"):
                out[env_name] = ",".join(value)
            elif field_name == "reference_locations":
                if value:
                    out[env_name] = ",".join(value)
            else:
                out[env_name] = str(value)
        return out


_FIELD_ENV: Final[dict[str, str]] = {
    "backend": ENV_BACKEND,
    "provider": ENV_PROVIDER,
    "project": ENV_PROJECT,
    "region": ENV_REGION,
    "local_root": ENV_LOCAL_ROOT,
    "local_thumbnail_workers": ENV_LOCAL_THUMBNAIL_WORKERS,
    "local_thumbnails": ENV_LOCAL_THUMBNAILS,
    "inbox_bucket": ENV_INBOX_BUCKET,
    "results_bucket": ENV_RESULTS_BUCKET,
    "firestore_database": ENV_FIRESTORE_DATABASE,
    "topic_tick": ENV_TOPIC_TICK,
    "topic_batch_done": ENV_TOPIC_BATCH_DONE,
    "topic_completions": ENV_TOPIC_COMPLETIONS,
    "default_model": ENV_DEFAULT_MODEL,
    "gemini_api_key": ENV_GEMINI_API_KEY,
    "gemini_base_url": ENV_GEMINI_BASE_URL,
    "vertex_location": ENV_VERTEX_LOCATION,
    "vertex_base_url": ENV_VERTEX_BASE_URL,
    "webhook_mode": ENV_WEBHOOK_MODE,
    "webhook_url": ENV_WEBHOOK_URL,
    "webhook_secret": ENV_WEBHOOK_SECRET,
    "webhook_jwks_url": ENV_WEBHOOK_JWKS_URL,
    "webhook_audience": ENV_WEBHOOK_AUDIENCE,
    "webhook_issuer": ENV_WEBHOOK_ISSUER,
    "webhook_api_version": ENV_WEBHOOK_API_VERSION,
    "result_retention_days": ENV_RESULT_RETENTION_DAYS,
    "max_requests_per_batch": ENV_MAX_REQUESTS_PER_BATCH,
    "max_batch_bytes": ENV_MAX_BATCH_BYTES,
    "max_batch_output_bytes": ENV_MAX_BATCH_OUTPUT_BYTES,
    "max_input_bytes": ENV_MAX_INPUT_BYTES,
    "intake_dedup_bytes": ENV_INTAKE_DEDUP_BYTES,
    "twotier_cull": ENV_TWOTIER_CULL,
    "max_active_batches": ENV_MAX_ACTIVE_BATCHES,
    "max_attempts": ENV_MAX_ATTEMPTS,
    "stuck_after_hours": ENV_STUCK_AFTER_HOURS,
    "job_budget_usd": ENV_JOB_BUDGET_USD,
    "daily_budget_usd": ENV_DAILY_BUDGET_USD,
    "budget_margin": ENV_BUDGET_MARGIN,
    "quota_alert_after": ENV_QUOTA_ALERT_AFTER,
    "credits_probe_minutes": ENV_CREDITS_PROBE_MINUTES,
    "fallback_model": ENV_FALLBACK_MODEL,
    "price_overrides": ENV_PRICE_OVERRIDES,
    "log_level": ENV_LOG_LEVEL,
    "price_max_age_days": ENV_PRICE_MAX_AGE_DAYS,
    "vertex_stuck_after_hours": ENV_VERTEX_STUCK_AFTER_HOURS,
    "files_store_warn_bytes": ENV_FILES_STORE_WARN_BYTES,
    "job_overdue_hours": ENV_JOB_OVERDUE_HOURS,
    "reference_locations": ENV_REFERENCE_LOCATIONS,
    "reference_url_hours": ENV_REFERENCE_URL_HOURS,
    "openai_api_key": ENV_OPENAI_API_KEY,
    "openai_base_url": ENV_OPENAI_BASE_URL,
    "openai_webhook_secret": ENV_OPENAI_WEBHOOK_SECRET,
    "openai_output_expires_hours": ENV_OPENAI_OUTPUT_EXPIRES_HOURS,
    "openai_enabled": ENV_OPENAI_ENABLED,
    "sync_lanes": ENV_SYNC_LANES,
    "async_lanes": ENV_ASYNC_LANES,
    "compat_lanes": ENV_COMPAT_LANES,
    "allow_third_party": ENV_ALLOW_THIRD_PARTY,
    "failover_on_unknown": ENV_FAILOVER_ON_UNKNOWN,
    "batch_window": ENV_BATCH_WINDOW,
    "batch_window_tz": ENV_BATCH_WINDOW_TZ,
    "replicate_api_token": ENV_REPLICATE_API_TOKEN,
    "replicate_base_url": ENV_REPLICATE_BASE_URL,
    "replicate_webhook_secret": ENV_REPLICATE_WEBHOOK_SECRET,
    "replicate_models": ENV_REPLICATE_MODELS,
    "replicate_usd_per_image": ENV_REPLICATE_USD_PER_IMAGE,
}


def _with_compat_keys(raw: object, keys: Mapping[str, str]) -> dict[str, object]:
    """The gateways of BANANABATCH_COMPAT_LANES with each key taken from its own variable.
    Named by variable, never by value, when a key has no gateway or a gateway two keys."""
    lanes = json.loads(raw) if isinstance(raw, str) else {}
    if not isinstance(lanes, dict):
        raise ConfigError(
            f"invalid configuration from environment: {ENV_COMPAT_LANES}: "
            "expected a JSON object of gateways by label"
        )
    by_env = {compat_key_env(str(label)): str(label) for label in lanes}
    out: dict[str, object] = dict(lanes)
    for name, key in sorted(keys.items()):
        label = by_env.get(name)
        if label is None:
            raise ConfigError(
                f"invalid configuration from environment: {name} is set but "
                f"{ENV_COMPAT_LANES} has no gateway it is the key of"
            )
        lane = out[label]
        if isinstance(lane, dict):
            if lane.get("api_key"):
                raise ConfigError(
                    f"invalid configuration from environment: the key of compat lane {label!r} "
                    f"is set twice, in {ENV_COMPAT_LANES} and in {name}: keep one"
                )
            out[label] = {**lane, "api_key": key}
    return out


def env_name_for(field_name: str) -> str:
    """The environment variable that sets a Settings field (for messages that say how)."""
    return _FIELD_ENV[field_name]


assert set(_FIELD_ENV.values()) == set(ALL_ENV_NAMES), "every ENV_ name maps to one field"


def _env_named(field: str) -> str:
    """A settings field as the user set it: its environment variable, beside the field."""
    env = _FIELD_ENV.get(field)
    return f"{env} ({field})" if env else field or "settings"
