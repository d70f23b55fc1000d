"""One error family for the whole pipeline.

PermanentError: retrying cannot help (bad input, an impossible state). Record it on the
job or item and return normally, so the platform does not redeliver the event.
TransientError: the world may be different next time (a 503, a timeout, a lost race).
Raise it out of the entry point so Cloud Functions retries the event.

Messages name the job, the line or key, what was expected and what was found.
"""

from __future__ import annotations


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


class ProviderQuotaExceeded(TransientError):
    """The provider refused to create a batch for quota (HTTP 429 / RESOURCE_EXHAUSTED).

    The refusal is definite: nothing was created, so the batch may go back to QUEUED.
    """


class ProviderOutcomeUnknown(TransientError):
    """A create call failed in a way that leaves open whether the batch exists.

    Never retry the create: reconcile by display name first.
    """
