"""One error family for the whole pipeline.

PermanentError: retrying cannot help (bad input, an impossible state). Record it on the
job or item and return normally, so the platform does not redeliver the event.
TransientError: the world may be different next time (a 503, a timeout, a lost race).
Raise it out of the entry point so Cloud Functions retries the event.

Messages name the job, the line or key, what was expected and what was found.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bananabatch.core.results import Usage


class BananaError(Exception):
    """Base of every error bananabatch raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        key: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        self.message = message
        self.job_id = job_id
        self.key = key
        self.batch_id = batch_id
        where = ", ".join(
            f"{label} {value}"
            for label, value in (("job", job_id), ("batch", batch_id), ("key", key))
            if value
        )
        super().__init__(f"{where}: {message}" if where else message)


class PermanentError(BananaError):
    """Do not retry: record the failure and move on."""


class TransientError(BananaError):
    """Retry later: raise it so the platform redelivers the event."""


class ConfigError(PermanentError):
    """The settings are unusable; nothing will work until someone changes them."""


class InvalidTransition(PermanentError):
    """A state machine was asked for a move it does not allow."""

    def __init__(self, kind: str, current: str, target: str, *, entity: str) -> None:
        super().__init__(f"{kind} {entity}: cannot move from {current} to {target}")
        self.kind = kind
        self.current = current
        self.target = target


class PriceUnknown(PermanentError):
    """No price is known for a model, tier and lane; we refuse to count it as zero."""


class NotFound(PermanentError):
    """A job, batch or object that was expected to exist does not."""


class QuotaKind(StrEnum):
    """Which of the provider's 429s it was: each one calls for a different response
    (shared/reference/field-2026-12.md §1 row 6)."""

    #: "Your prepayment credits are depleted": billing, not retryable; pause every submission.
    CREDITS_DEPLETED = "credits_depleted"
    #: The spend-based limit per rolling 10-minute window: pause submission for the window.
    SPEND_WINDOW = "spend_window"
    #: Quota or rate limits (RPM, enqueued tokens, active jobs): back off, honour RetryInfo.
    RATE_LIMIT = "rate_limit"
    #: A 429 whose text we do not recognise: handled as RATE_LIMIT, alerted after N tries.
    UNKNOWN = "unknown"


class ProviderQuotaExceeded(TransientError):
    """The provider refused to create a batch for quota (HTTP 429 / RESOURCE_EXHAUSTED).

    The refusal is definite: nothing was created, so the batch may go back to QUEUED.
    `kind` says which 429 it was; `retry_after` is the provider's own RetryInfo delay when
    the error carried one.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: QuotaKind = QuotaKind.UNKNOWN,
        retry_after: timedelta | None = None,
        job_id: str | None = None,
        key: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, key=key, batch_id=batch_id)
        self.kind = kind
        self.retry_after = retry_after


class ProviderAuthError(ConfigError):
    """The provider refused our credentials (401, or 400 "API key not valid"): a fatal
    configuration error. Never retried; alerted once; nothing works until someone fixes
    the key."""


class ModelUnavailable(PermanentError):
    """The provider answered "model not found / not supported" for a model: a permanent
    error for every batch of that model, never a retry loop."""

    def __init__(self, message: str, *, model: str, batch_id: str | None = None) -> None:
        super().__init__(message, batch_id=batch_id)
        self.model = model


class OutcomeUnknown(TransientError):
    """A paid call may have reached the provider, and we cannot tell whether it did: a read
    timeout, a connection reset after the request was sent, a worker that died mid-call.

    The provider may be working on it (and billing it). Never repeat it blindly, on the same
    provider or another: reconcile where the provider can be asked, otherwise record it.
    The sync and async lanes fail such an attempt over to the next provider only where the
    owner opted in (Settings.failover_on_unknown), accepting that it may be paid twice.
    """


class ProviderOutcomeUnknown(OutcomeUnknown):
    """A create call failed in a way that leaves open whether the batch exists.

    Never retry the create: reconcile by display name first.
    """


class ContentRefused(PermanentError):
    """The provider refused the request under its content policy (a safety block, a
    moderation refusal). The item ends BLOCKED and is never tried on another provider:
    sending refused content around until someone takes it is not failover.

    `finish_reason` is the provider's own word for it; `usage` what was billed for the
    refusal, where the provider bills one and says so (Gemini counts the prompt's tokens).
    """

    def __init__(
        self,
        message: str,
        *,
        finish_reason: str | None = None,
        usage: Usage | None = None,
        job_id: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, key=key)
        self.finish_reason = finish_reason
        self.usage = usage
