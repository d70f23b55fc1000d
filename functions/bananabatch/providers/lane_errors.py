"""What a failed call to a one-image lane (sync or async-callback) means, in the error family
of errors.py, read from what the client library raised. Shared by the OpenAI-compatible and
Replicate lanes, which both run over httpx.

The line that matters is whether the request left this machine:
- it did not (no connection, connect or pool timeout): TransientError, nothing was made, the
  next provider may be tried;
- it did and no answer came back (read or write timeout, the connection dropped mid-call):
  OutcomeUnknown, the provider may be making and billing it; never repeated elsewhere unless
  the owner opted in;
- an answer came back: its status says it (status_error).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, cast

import httpx

from bananabatch.errors import (
    BananaError,
    ContentRefused,
    ModelUnavailable,
    OutcomeUnknown,
    PermanentError,
    ProviderAuthError,
    ProviderQuotaExceeded,
    QuotaKind,
    TransientError,
)

if TYPE_CHECKING:
    from bananabatch.ports import ImageRequest


def _httpx_classes(*names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes of httpx and of httpx2, which the openai SDK uses when
    installed (the Replicate client uses httpx)."""
    modules: list[Any] = [httpx]
    with contextlib.suppress(ImportError):
        modules.append(importlib.import_module("httpx2"))
    return tuple(cast(type[BaseException], getattr(m, name)) for m in modules for name in names)


# Raised before a byte of the request was sent.
NOT_SENT: Final = _httpx_classes(
    "ConnectError", "ConnectTimeout", "PoolTimeout", "UnsupportedProtocol"
)
# Every transport failure; those not in NOT_SENT came after the request (or part of it)
# went out and before a whole answer came back.
TRANSPORT: Final = _httpx_classes("TransportError")


def transport_error(exc: BaseException, *, lane: str, job_id: str, key: str) -> BananaError:
    """The meaning of a call that got no answer. `exc` is httpx's exception, or a client
    library's wrapper of it (its __cause__)."""
    cause = exc if isinstance(exc, TRANSPORT) else exc.__cause__ or exc
    if isinstance(cause, NOT_SENT):
        return TransientError(
            f"{lane}: the request was not sent ({type(cause).__name__}: {cause}); nothing was made",
            job_id=job_id,
            key=key,
        )
    return OutcomeUnknown(
        f"{lane}: the request was sent and no answer came back ({type(cause).__name__}); it "
        "may have been made and billed",
        job_id=job_id,
        key=key,
    )


def status_error(
    status: int,
    message: str,
    *,
    lane: str,
    model: str,
    job_id: str,
    key: str,
    refused: bool = False,
    quota_kind: QuotaKind = QuotaKind.UNKNOWN,
    retry_after: timedelta | None = None,
) -> BananaError:
    """The meaning of an error answer. `refused`: the provider's own words say it is a
    content-policy refusal (each lane reads its provider's codes)."""
    said = f"{lane}: HTTP {status}: {message}"
    if refused:
        return ContentRefused(said, finish_reason="content_policy", job_id=job_id, key=key)
    if status in (401, 403):
        return ProviderAuthError(f"{said} (the lane's key is refused)")
    if status == 429:
        return ProviderQuotaExceeded(
            said, kind=quota_kind, retry_after=retry_after, job_id=job_id, key=key
        )
    if status == 404:
        return ModelUnavailable(said, model=model)
    if status >= 500 or status in (408, 409, 425):
        return TransientError(said, job_id=job_id, key=key)
    return PermanentError(said, job_id=job_id, key=key)


def retry_after_header(value: str | None) -> timedelta | None:
    """A `retry-after` in seconds, when it is one."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return timedelta(seconds=seconds) if seconds >= 0 else None


def lane_request_problem(
    request: ImageRequest,
    models: Mapping[str, str],
    *,
    lane: str,
    not_served: str,
    sent_to: str,
    reference_problem: Callable[[Sequence[str]], str | None],
) -> PermanentError | None:
    """Why a one-image lane, which takes a prompt rather than a native Gemini request, cannot
    make `request` (None when it can): a model it does not serve (`not_served` says how the
    lane puts it), no text prompt (`sent_to` names where it would go), or reference images
    it cannot read (`reference_problem` says why). Found before anything is sent or paid."""
    problem: str | None = None
    if request.model not in models:
        problem = (
            f"model {request.model!r} is {not_served}; expected one of {', '.join(sorted(models))}"
        )
    elif request.prompt is None or not request.prompt.strip():
        problem = (
            f"a request without a text prompt (a native Gemini line) cannot be sent to {sent_to}"
        )
    else:
        problem = reference_problem(request.reference_images)
    if problem is None:
        return None
    return PermanentError(f"{lane}: {problem}", job_id=request.job_id, key=request.key)
