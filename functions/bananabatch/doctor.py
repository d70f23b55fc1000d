"""`bananabatch doctor`: the preflight to run before the first real job.

Each check says ok, warn, fail or skip, with a sentence a user can act on. The judging is
pure (key_form, judge_models, judge_webhooks take what was seen and answer); `run_doctor`
does the looking: one authenticated `models.list` (all pages), the static webhook
registrations, and on the gcp backend one read of each bucket, Firestore and each topic.

Exit code (doctor_cli): 0 when nothing failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Final, Literal

from bananabatch.config import (
    AUTH_KEY_SENTENCE,
    ENV_GEMINI_API_KEY,
    ENV_GEMINI_BASE_URL,
    Backend,
    CompatLaneConfig,
    ProviderKind,
    Settings,
    WebhookMode,
)
from bananabatch.core.catalog import (
    MODELS,
    STANDARD_KEY_PREFIX,
    BatchSupport,
    Status,
    canonical_model,
    model_spec,
)

Verdict = Literal["ok", "warn", "fail", "skip"]

BATCH_METHOD: Final = "batchGenerateContent"
DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com"
# Words that mark a listed model as an image model the catalog should know about.
_IMAGE_HINTS: Final = ("image", "banana")

#: The 401 explained (field-2026-12.md §1 row 1; user reports, UNVERIFIED).
UNAUTHENTICATED_SENTENCE: Final = (
    "401 UNAUTHENTICATED (ACCESS_TOKEN_TYPE_UNSUPPORTED): the service did not accept this "
    "key as a credential. Users report it for some AQ. auth keys: check that the key is an "
    "auth key created in AI Studio for the project that pays for the batches (it is bound "
    "to that project's service account), and create a new one if it persists. An AQ. key "
    "never works on Gemini's OpenAI-compatible endpoint."
)
INVALID_KEY_SENTENCE: Final = (
    "400 INVALID_ARGUMENT (API key not valid): the service does not know this key. Copy it "
    f"again from AI Studio into {ENV_GEMINI_API_KEY}; a deleted or mistyped key answers this."
)


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str

    def to_doc(self) -> dict[str, str]:
        return asdict(self)


def passed(checks: Sequence[Check]) -> bool:
    return all(c.verdict != "fail" for c in checks)


# --- pure judging ------------------------------------------------------------------------


def key_form(settings: Settings) -> Check:
    """The key's form, before any call: only AQ. auth keys work on the real service."""
    if settings.provider is ProviderKind.VERTEX:
        return Check("key", "skip", "Vertex uses Application Default Credentials, no API key")
    key = (settings.gemini_api_key or "").strip()
    if settings.provider is ProviderKind.EMULATOR:
        return Check("key", "ok", "the emulator accepts any non-empty key but a standard one")
    if not key:
        return Check("key", "fail", f"no API key: set {ENV_GEMINI_API_KEY}. {AUTH_KEY_SENTENCE}")
    if key.startswith(STANDARD_KEY_PREFIX):  # config refuses these already; said again for clarity
        return Check("key", "fail", f"a standard AIza key. {AUTH_KEY_SENTENCE}")
    if not key.startswith("AQ."):
        return Check(
            "key",
            "warn",
            f"the key does not start with 'AQ.' (an AI Studio auth key); {AUTH_KEY_SENTENCE}",
        )
    return Check("key", "ok", "an AQ. auth key")


def judge_models(
    listed: Mapping[str, Sequence[str]], default_model: str, today: date
) -> list[Check]:
    """Compare models.list (model id -> supportedGenerationMethods) with the catalog.

    Fails only when the default model cannot be batched; every other difference is a
    warning, because lines naming another model are the user's choice.
    """
    listed = {m.removeprefix("models/"): tuple(methods) for m, methods in listed.items()}
    checks: list[Check] = []
    default = canonical_model(default_model)
    methods = listed.get(default)
    if methods is None:
        checks.append(
            Check("default model", "fail", f"{default} is not listed by the service's models.list")
        )
    elif BATCH_METHOD not in methods:
        checks.append(
            Check(
                "default model",
                "fail",
                f"{default} is listed without {BATCH_METHOD}: batches on it would be refused",
            )
        )
    else:
        checks.append(Check("default model", "ok", f"{default} is listed with {BATCH_METHOD}"))

    batchable, missing, without_batch = [], [], []
    for spec in MODELS:
        if spec.status_on(today) is Status.SHUT_DOWN:
            continue
        methods = listed.get(spec.model_id)
        if methods is None:
            missing.append(spec.model_id)
        elif BATCH_METHOD in methods:
            batchable.append(spec.model_id)
        else:
            note = (
                "as the catalog expects (batch support undocumented)"
                if spec.batch_support is not BatchSupport.YES
                else "although its model page documents batch support"
            )
            without_batch.append(f"{spec.model_id} ({note})")
    checks.append(
        Check(
            "catalog models with batch",
            "ok" if batchable else "fail",
            ", ".join(batchable) or "no catalog model is listed with batchGenerateContent",
        )
    )
    if missing:
        checks.append(
            Check(
                "catalog models not listed",
                "warn",
                f"{', '.join(missing)}: not served to this project; lines naming them will "
                "fail at create",
            )
        )
    if without_batch:
        checks.append(Check("catalog models without batch", "warn", "; ".join(without_batch)))
    unknown = sorted(
        model
        for model in listed
        if model_spec(model) is None and any(hint in model for hint in _IMAGE_HINTS)
    )
    if unknown:
        checks.append(
            Check(
                "image models not in the catalog",
                "warn",
                f"{', '.join(unknown)}: listed by the service, unknown to core/catalog.py "
                "(add them with their sizes, prices and lifecycle to use them)",
            )
        )
    return checks


def judge_webhooks(settings: Settings, registered: Iterable[Mapping[str, Any]] | None) -> Check:
    """Static mode needs a signing secret and a project-level registration of our URL."""
    if settings.webhook_mode is not WebhookMode.STATIC:
        return Check("webhook", "skip", f"webhook mode is {settings.webhook_mode.value}")
    if not settings.webhook_secret:
        return Check("webhook", "fail", "static mode without a signing secret (whsec_...)")
    if not settings.webhook_url:
        return Check("webhook", "fail", "static mode without the receiver's URL")
    if registered is None:
        return Check("webhook", "warn", "the service's webhook list could not be read")
    for hook in registered:
        if hook.get("uri") == settings.webhook_url:
            events = hook.get("subscribed_events") or hook.get("subscribedEvents") or []
            if "batch.succeeded" not in events:
                return Check(
                    "webhook",
                    "warn",
                    f"{settings.webhook_url} is registered without batch.succeeded",
                )
            return Check("webhook", "ok", f"{settings.webhook_url} is registered")
    return Check(
        "webhook",
        "fail",
        f"no webhook registered for {settings.webhook_url}: register it (README, Webhooks)",
    )


# --- looking -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Probes:
    """How doctor looks at the world; tests replace any of them."""

    list_models: Callable[[Settings], Mapping[str, Sequence[str]]]
    list_webhooks: Callable[[Settings], list[Mapping[str, Any]]]
    gcp: Callable[[Settings], list[Check]]
    # Bytes in the project's Files store; None skips the check.
    files_store: Callable[[Settings], int] | None = None
    # The OpenAI provider's batches.list (doctor_openai.count_batches); None: the default.
    openai: Callable[[Settings], int] | None = None
    # One image on a gateway (doctor_lanes.make_image), made only with probe_lanes.
    gateway: Callable[[str, CompatLaneConfig], str] | None = None


def run_doctor(
    settings: Settings, today: date, probes: Probes | None = None, *, probe_lanes: bool = False
) -> list[Check]:
    probes = probes or default_probes()
    checks = [key_form(settings)]
    if checks[0].verdict == "fail":
        return checks
    if settings.provider is ProviderKind.VERTEX:
        checks.append(Check("auth", "skip", "Vertex: models are checked at create"))
    else:
        try:
            listed = probes.list_models(settings)
        except Exception as exc:  # noqa: BLE001  # every failure is reported, none raised
            checks.append(Check("auth", "fail", auth_failure(exc)))
        else:
            checks.append(Check("auth", "ok", f"models.list answered ({len(listed)} models)"))
            checks += judge_models(listed, settings.default_model, today)
            if probes.files_store is not None:
                checks.append(judge_files_store(settings, probes.files_store))
    if settings.webhook_mode is WebhookMode.STATIC:
        try:
            hooks: list[Mapping[str, Any]] | None = probes.list_webhooks(settings)
        except Exception:  # noqa: BLE001
            hooks = None
        checks.append(judge_webhooks(settings, hooks))
    else:
        checks.append(judge_webhooks(settings, None))
    from bananabatch.doctor_openai import count_batches, openai_checks

    checks += openai_checks(settings, probes.openai or count_batches)
    from bananabatch.doctor_lanes import lane_checks

    checks += lane_checks(settings, probe=probes.gateway, probe_lanes=probe_lanes)
    if settings.backend is Backend.GCP:
        checks += probes.gcp(settings)
    else:
        checks.append(Check("gcp", "skip", "local backend"))
    return checks


def judge_files_store(settings: Settings, measure: Callable[[Settings], int]) -> Check:
    """How full the project's 20 GB Files store is (result files cannot be deleted)."""
    from bananabatch.config import FILES_STORE_LIMIT_BYTES

    try:
        used = measure(settings)
    except Exception as exc:  # noqa: BLE001
        return Check("files store", "warn", f"files.list failed: {exc}")
    gib = 1024**3
    text = (
        f"{used / gib:.2f} GiB of {FILES_STORE_LIMIT_BYTES / gib:.0f} GiB used "
        f"(warning past {settings.files_store_warn_bytes / gib:.2f} GiB)"
    )
    if used > settings.files_store_warn_bytes:
        return Check(
            "files store",
            "warn",
            text + ": collect and stop new jobs before the store fills; result files cannot "
            "be deleted and creates fail once it is full",
        )
    return Check("files store", "ok", text)


def files_store_bytes(settings: Settings) -> int:
    """The bytes the project's Files store holds, summed over files.list."""
    from google import genai
    from google.genai import types as genai_types

    from bananabatch.providers.gemini import LIST_PAGE_SIZE, SDK_TIMEOUT_MS, sdk_errors

    key = settings.gemini_api_key or "emulator"
    options = genai_types.HttpOptions(base_url=settings.gemini_base_url, timeout=SDK_TIMEOUT_MS)
    client = genai.Client(api_key=key, http_options=options)
    try:
        with sdk_errors("list files"):
            return sum(
                int(f.size_bytes or 0)
                for f in client.files.list(config={"page_size": LIST_PAGE_SIZE})
            )
    finally:
        client.close()


def auth_failure(exc: BaseException) -> str:
    """A failed authenticated call, explained: 401s and invalid keys in full sentences."""
    from google.genai import errors as genai_errors

    from bananabatch.errors import ProviderAuthError

    cause: BaseException | None = exc
    api: genai_errors.APIError | None = None
    while cause is not None:
        if isinstance(cause, genai_errors.APIError):
            api = cause
            break
        cause = cause.__cause__
    text = str(exc)
    if (api is not None and api.code == 401) or "ACCESS_TOKEN_TYPE_UNSUPPORTED" in text:
        return f"{UNAUTHENTICATED_SENTENCE} ({text})"
    if (api is not None and "API key not valid" in (api.message or "")) or (
        "API key not valid" in text
    ):
        return f"{INVALID_KEY_SENTENCE} ({text})"
    if isinstance(exc, ProviderAuthError):
        return f"the service refused the key: {text}. {AUTH_KEY_SENTENCE}"
    return f"models.list failed: {text}"


def default_probes() -> Probes:
    return Probes(
        list_models=list_models,
        list_webhooks=list_webhooks,
        gcp=gcp_checks,
        files_store=files_store_bytes,
    )


def _base_url(settings: Settings) -> str:
    return (settings.gemini_base_url or DEFAULT_BASE_URL).rstrip("/")


def list_models(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Every model the service lists to this key, with its methods (all pages)."""
    from google import genai
    from google.genai import types as genai_types

    from bananabatch.providers.gemini import SDK_TIMEOUT_MS, sdk_errors

    if settings.provider is ProviderKind.EMULATOR and not settings.gemini_base_url:
        raise RuntimeError(
            f"the emulator provider needs the emulator's URL: set {ENV_GEMINI_BASE_URL}"
        )
    key = settings.gemini_api_key or "emulator"
    options = genai_types.HttpOptions(base_url=settings.gemini_base_url, timeout=SDK_TIMEOUT_MS)
    client = genai.Client(api_key=key, http_options=options)
    try:
        with sdk_errors("list models"):
            return {
                (model.name or "").removeprefix("models/"): tuple(model.supported_actions or ())
                for model in client.models.list(config={"page_size": 1000})
            }
    finally:
        client.close()


def list_webhooks(settings: Settings) -> list[Mapping[str, Any]]:
    """The project's registered webhooks (static mode), read over REST."""
    import httpx

    version = str(getattr(settings, "webhook_api_version", None) or "v1beta")
    response = httpx.get(
        f"{_base_url(settings)}/{version}/webhooks",
        headers={"x-goog-api-key": settings.gemini_api_key or "emulator"},
        params={"pageSize": 100},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    hooks = body.get("webhooks") if isinstance(body, dict) else None
    return [h for h in hooks or [] if isinstance(h, dict)]


def gcp_checks(settings: Settings) -> list[Check]:
    """One read of each bucket, of Firestore and of each topic, with the caller's
    credentials: what the CLI and the functions need to reach."""
    from bananabatch.wiring import build_runtime

    try:
        rt = build_runtime(settings, with_provider=False)
    except Exception as exc:  # noqa: BLE001
        return [Check("gcp", "fail", f"could not connect: {exc}")]
    checks: list[Check] = []
    for bucket in (settings.inbox_bucket, settings.results_bucket):
        try:
            next(iter(rt.objects.list(bucket, prefix="jobs/")), None)
            checks.append(Check(f"bucket {bucket}", "ok", "listed"))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check(f"bucket {bucket}", "fail", f"cannot list: {exc}"))
    try:
        rt.state.get("jobs/__doctor__")
        checks.append(Check("firestore", "ok", f"database {settings.firestore_database} read"))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("firestore", "fail", f"cannot read: {exc}"))
    check_topic = getattr(rt.bus, "check_topic", None)
    for topic in (settings.topic_tick, settings.topic_batch_done, settings.topic_completions):
        if check_topic is None:
            checks.append(Check(f"topic {topic}", "skip", "not a Pub/Sub bus"))
            continue
        try:
            check_topic(topic)
            checks.append(Check(f"topic {topic}", "ok", "exists"))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check(f"topic {topic}", "fail", f"cannot read: {exc}"))
    return checks
