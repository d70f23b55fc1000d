"""What a provider's error answer means for us, read from the Google error body. Pure.

The body is the Google JSON error envelope (reference §1.3): `{"error": {"code", "message",
"status", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason", ...},
{"@type": ".../google.rpc.RetryInfo", "retryDelay": "26s"}, {"@type":
".../google.rpc.QuotaFailure", "violations": [...]}, ...]}}`. google-genai's `APIError`
keeps the whole body as `.details`; our raw HTTP calls parse the same body.

Three kinds of 429 need three responses (field-2026-12 §1 row 6), and only the message text
tells them apart: "Your prepayment credits are depleted" (billing: stop), the spend-based
limit per 10-minute window (its text is not documented: we match what we can and the rest
is UNKNOWN), and quota / rate limits. 401, and the 400 / 403 answers that name the key, are
fatal configuration errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from bananabatch.errors import (
    ModelUnavailable,
    ProviderAuthError,
    ProviderQuotaExceeded,
    QuotaKind,
)

TYPE_PREFIX: Final = "type.googleapis.com/"
ERROR_INFO: Final = TYPE_PREFIX + "google.rpc.ErrorInfo"
RETRY_INFO: Final = TYPE_PREFIX + "google.rpc.RetryInfo"
QUOTA_FAILURE: Final = TYPE_PREFIX + "google.rpc.QuotaFailure"

_CREDITS: Final = re.compile(
    r"prepayment credits? (are|is|have been) depleted|credits are depleted", re.I
)
# Undocumented text: the phrasings seen in reports and the emulator's; a QuotaFailure on a
# spend metric says the same.
_SPEND: Final = re.compile(
    r"spend(ing)?[- ]?(based )?(rate )?(limit|cap)|spend(ing)? (window|limit)|per 10[- ]minute",
    re.I,
)
_RATE: Final = re.compile(
    r"exceeded your current quota|quota exceeded|rate limit|too many requests|"
    r"resource has been exhausted|requests per minute|enqueued tokens|active (batch )?jobs",
    re.I,
)
_KEY_TEXT: Final = re.compile(r"api key not valid|api key expired|invalid api key", re.I)
# ErrorInfo reasons that mean "these credentials will not work".
AUTH_REASONS: Final = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        "CREDENTIALS_MISSING",
        "ACCESS_TOKEN_EXPIRED",
    }
)
# What the service says about a model it does not serve (for batches): specific phrasings
# only, since a 400 that merely names a model ("... is not supported for image size 2K") is
# about one request, and marking a model gone stops it for the whole deployment.
_MODEL_GONE: Final = re.compile(
    r"models/\S+ is not found for API version|"
    r"is not supported for batchGenerateContent|"
    r"publisher model \S+ not found|"
    r"model \S+ has been (shut down|discontinued|deprecated and removed)",
    re.I,
)


@dataclass(frozen=True)
class ErrorBody:
    code: int
    status: str
    message: str
    details: Sequence[Mapping[str, Any]]

    def of_type(self, type_url: str) -> list[Mapping[str, Any]]:
        return [d for d in self.details if d.get("@type") == type_url]

    @property
    def reasons(self) -> set[str]:
        return {str(d.get("reason")) for d in self.of_type(ERROR_INFO) if d.get("reason")}


def error_body(code: int | None, body: object) -> ErrorBody:
    """The envelope's parts from a parsed body (SDK `APIError.details`, or our own
    `response.json()`); tolerant of a bare `{"code", "message"}` or no body at all."""
    envelope: Mapping[str, Any] = {}
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        envelope = inner if isinstance(inner, Mapping) else {}
    raw_details = envelope.get("details")
    details = (
        [d for d in raw_details if isinstance(d, Mapping)] if isinstance(raw_details, list) else []
    )
    raw_code = envelope.get("code", code)
    try:
        number = int(code if code else raw_code or 0)
    except (TypeError, ValueError):
        number = 0
    return ErrorBody(
        code=number,
        status=str(envelope.get("status") or ""),
        message=str(envelope.get("message") or ""),
        details=details,
    )


def is_quota(err: ErrorBody) -> bool:
    return err.code == 429 or err.status == "RESOURCE_EXHAUSTED"


def is_auth(err: ErrorBody) -> bool:
    if err.code == 401 or err.status == "UNAUTHENTICATED":
        return True
    if err.reasons & AUTH_REASONS:
        return True
    return err.code in (400, 403) and bool(_KEY_TEXT.search(err.message))


def quota_kind(err: ErrorBody) -> QuotaKind:
    text = err.message
    if _CREDITS.search(text):
        return QuotaKind.CREDITS_DEPLETED
    metrics = " ".join(
        str(v.get(field, ""))
        for failure in err.of_type(QUOTA_FAILURE)
        for v in (failure.get("violations") or [])
        if isinstance(v, Mapping)
        for field in ("quotaMetric", "quotaId", "subject", "description")
    )
    if _SPEND.search(text) or "spend" in metrics.lower():
        return QuotaKind.SPEND_WINDOW
    if _RATE.search(text) or err.of_type(QUOTA_FAILURE) or err.of_type(RETRY_INFO):
        return QuotaKind.RATE_LIMIT
    return QuotaKind.UNKNOWN


def retry_delay(err: ErrorBody) -> timedelta | None:
    """google.rpc.RetryInfo.retryDelay, a proto Duration in JSON ("26s", "1.5s"), or the
    object form {"seconds", "nanos"} some encoders emit."""
    for info in err.of_type(RETRY_INFO):
        value = info.get("retryDelay")
        seconds: float | None = None
        if isinstance(value, str) and value.endswith("s"):
            try:
                seconds = float(value[:-1])
            except ValueError:
                seconds = None
        elif isinstance(value, Mapping):
            try:
                seconds = float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None and seconds >= 0:
            return timedelta(seconds=seconds)
    return None


def is_model_gone(err: ErrorBody) -> bool:
    """A create answered "model not found / not supported for batches" (404, or a 400 in
    the service's own words for it)."""
    return err.code in (400, 404) and bool(_MODEL_GONE.search(err.message))


def describe(err: ErrorBody) -> str:
    reasons = sorted(err.reasons)
    tail = f" [{', '.join(reasons)}]" if reasons else ""
    return f"{err.code} {err.status} {err.message}{tail}".strip()


def quota_error(err: ErrorBody, what: str) -> ProviderQuotaExceeded:
    return ProviderQuotaExceeded(
        f"{what}: {describe(err)}", kind=quota_kind(err), retry_after=retry_delay(err)
    )


def auth_error(err: ErrorBody, what: str) -> ProviderAuthError:
    return ProviderAuthError(
        f"{what}: the provider refused our credentials ({describe(err)}); this is a "
        "configuration error: fix the API key (an AI Studio auth key, AQ.…) and run "
        "`bananabatch resume`"
    )


def model_error(err: ErrorBody, what: str, model: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"{what}: the provider does not serve model {model!r} for batches ({describe(err)})",
        model=model,
    )
