"""Error answers as the service gives them: the Google JSON error envelope with `details`
(reference §1.3, §7; field-2026-12 §1 rows 1 and 6).

Every error the emulator answers carries `details`, as the service's do: at least a
`google.rpc.ErrorInfo` (reason, domain, metadata.service); the 429s add `google.rpc.Help`,
`google.rpc.QuotaFailure` and, for rate limits, `google.rpc.RetryInfo`; the invalid-key 400
adds `google.rpc.LocalizedMessage`, as captured from the real service.

The create faults (`FaultPlan.create_faults`) produce the refusals the pipeline must tell
apart: three kinds of 429, a 401, a 400 invalid key, and "model not found".
"""

from __future__ import annotations

from typing import Any, Final, Literal

Json = dict[str, Any]

TYPE: Final = "type.googleapis.com/google.rpc."
SERVICE: Final = "generativelanguage.googleapis.com"

# The texts the pipeline classifies by. Credits and rate-limit texts are the service's
# (field-2026-12 §1 row 6; reference §7); the spend-window text is undocumented, so this
# one is our stand-in, and UNKNOWN_429 is a text no rule knows.
CREDITS_DEPLETED_TEXT: Final = (
    "Your prepayment credits are depleted. Please go to AI Studio at "
    "https://ai.studio/projects to manage your project and billing."
)
SPEND_WINDOW_TEXT: Final = (
    "You have exceeded the spend-based rate limit for your billing tier in the current "
    "10-minute window. Please retry after the window has passed."
)
RATE_LIMIT_TEXT: Final = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
UNKNOWN_429_TEXT: Final = "Resource temporarily unavailable for this project (emulated)."
INVALID_KEY_TEXT: Final = "API key not valid. Please pass a valid API key."
UNAUTHENTICATED_TEXT: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)

CreateFaultKind = Literal[
    "rate_limit",
    "rate_limit_no_retry_info",
    "credits_depleted",
    "spend_window",
    "unknown_429",
    "unauthenticated",
    "invalid_key",
    "model_not_found",
]

# The reason an ErrorInfo carries for each canonical status when nothing more specific is
# known (the service's own reasons where we know them).
_DEFAULT_REASON: Final = {
    "INVALID_ARGUMENT": "INVALID_ARGUMENT",
    "NOT_FOUND": "NOT_FOUND",
    "PERMISSION_DENIED": "PERMISSION_DENIED",
    "UNAUTHENTICATED": "CREDENTIALS_MISSING",
    "RESOURCE_EXHAUSTED": "RATE_LIMIT_EXCEEDED",
    "FAILED_PRECONDITION": "FAILED_PRECONDITION",
    "ALREADY_EXISTS": "ALREADY_EXISTS",
    "INTERNAL": "INTERNAL",
    "UNAVAILABLE": "UNAVAILABLE",
}


def error_info(reason: str, **metadata: str) -> Json:
    return {
        "@type": TYPE + "ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": SERVICE, **metadata},
    }


def default_details(status: str) -> list[Json]:
    return [error_info(_DEFAULT_REASON.get(status, status or "UNKNOWN"))]


class ApiError(Exception):
    """An error the API answers with: HTTP status, canonical status string and details."""

    def __init__(
        self,
        http_status: int,
        status: str,
        message: str,
        details: list[Json] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message
        self.details = details if details is not None else default_details(status)

    def envelope(self) -> Json:
        return {
            "error": {
                "code": self.http_status,
                "message": self.message,
                "status": self.status,
                "details": self.details,
            }
        }


def not_found(message: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def invalid_key() -> ApiError:
    """The service's answer to a key it does not know (captured shape)."""
    return ApiError(
        400,
        "INVALID_ARGUMENT",
        INVALID_KEY_TEXT,
        [
            error_info("API_KEY_INVALID"),
            {"@type": TYPE + "LocalizedMessage", "locale": "en-US", "message": INVALID_KEY_TEXT},
        ],
    )


def unauthenticated(method: str = "google.ai.generativelanguage.v1beta.BatchService") -> ApiError:
    """401 for an auth key the service will not take (field-2026-12 §1 row 1)."""
    return ApiError(
        401,
        "UNAUTHENTICATED",
        UNAUTHENTICATED_TEXT,
        [error_info("ACCESS_TOKEN_TYPE_UNSUPPORTED", method=method)],
    )


def _help(url: str, description: str) -> Json:
    return {"@type": TYPE + "Help", "links": [{"description": description, "url": url}]}


def quota_failure(metric: str, quota_id: str) -> Json:
    return {
        "@type": TYPE + "QuotaFailure",
        "violations": [{"quotaMetric": metric, "quotaId": quota_id}],
    }


def create_fault_error(kind: CreateFaultKind, model: str, retry_delay: str = "26s") -> ApiError:
    """The refusal of a batch create for a fault of `kind`, shaped as the service's."""
    rate_docs = _help(
        "https://ai.google.dev/gemini-api/docs/rate-limits", "Learn more about Gemini API quotas"
    )
    if kind in ("rate_limit", "rate_limit_no_retry_info"):
        details: list[Json] = [
            quota_failure(
                "generativelanguage.googleapis.com/batch_enqueued_tokens",
                "BatchEnqueuedTokensPerModelPerTier",
            ),
            rate_docs,
        ]
        if kind == "rate_limit":
            details.append({"@type": TYPE + "RetryInfo", "retryDelay": retry_delay})
        return ApiError(429, "RESOURCE_EXHAUSTED", RATE_LIMIT_TEXT, details)
    if kind == "credits_depleted":
        return ApiError(
            429,
            "RESOURCE_EXHAUSTED",
            CREDITS_DEPLETED_TEXT,
            [_help("https://ai.google.dev/gemini-api/docs/billing", "Gemini API billing")],
        )
    if kind == "spend_window":
        return ApiError(
            429,
            "RESOURCE_EXHAUSTED",
            SPEND_WINDOW_TEXT,
            [
                quota_failure(
                    "generativelanguage.googleapis.com/spend_per_10_minutes",
                    "SpendPer10MinutesPerBillingTier",
                ),
                rate_docs,
            ],
        )
    if kind == "unknown_429":
        return ApiError(429, "RESOURCE_EXHAUSTED", UNKNOWN_429_TEXT, [error_info("UNKNOWN")])
    if kind == "unauthenticated":
        return unauthenticated()
    if kind == "invalid_key":
        return invalid_key()
    return not_found(
        f"{model} is not found for API version v1beta, or is not supported for "
        "batchGenerateContent. Call ListModels to see the list of available models."
    )
