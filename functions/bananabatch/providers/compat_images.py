"""The sync lane for any OpenAI-compatible images endpoint (a third-party gateway serving
Nano Banana models at a flat price): one `images.generate` call through the official
`openai` SDK, at the lane's base URL, with its key, under the gateway's own name for the
model (CompatLaneConfig in config.py; the lane is "compat:<label>").

What a gateway takes beyond OpenAI's own parameters is not standard (field sheet §3.3: do not
assume OpenAI semantics from an OpenAI-shaped URL). The call sends the prompt, `n=1`,
`response_format="b64_json"` and the attempt id as `user`; Nano Banana's ratio and tier go as
the extra fields `aspect_ratio` and `image_size`, which such gateways read and others ignore.
An answer given as a URL is fetched. A request this lane cannot express (a native Gemini line
with no prompt, reference images) is refused before anything is sent.

One call per `generate`, never retried here (the SDK's retries are off): failover and retries
are the lane runner's, which claims every attempt before the call.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Final

import httpx
import openai

from bananabatch.config import COMPAT_PREFIX, CompatLaneConfig
from bananabatch.errors import OutcomeUnknown
from bananabatch.pipeline.references import sniff_image_mime
from bananabatch.ports import ImageRequest, ImageResult
from bananabatch.providers.lane_errors import (
    TRANSPORT,
    lane_request_problem,
    status_error,
    transport_error,
)
from bananabatch.providers.openai_batch import quota_kind, retry_after

# What the SDK raises when no answer came back (lane_errors.transport_error reads it).
NETWORK: Final[tuple[type[BaseException], ...]] = (openai.APIConnectionError, *TRANSPORT)
# The codes OpenAI-shaped services give a content-policy refusal.
REFUSAL_CODES: Final = frozenset({"content_policy_violation", "moderation_blocked"})
# An image answered as a URL is fetched within this long.
FETCH_TIMEOUT_S: Final = 60.0


class OpenAICompatLane:
    """A SyncImageLane (ports.py) over one OpenAI-compatible images endpoint."""

    def __init__(
        self, label: str, config: CompatLaneConfig, *, client: openai.OpenAI | None = None
    ) -> None:
        self.name = COMPAT_PREFIX + label
        self.config = config
        self._client = client or openai.OpenAI(
            # The SDK refuses to start without a key; a gateway that takes none ignores it.
            api_key=config.api_key or "none",
            base_url=config.base_url,
            max_retries=0,
            timeout=config.timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    def generate(self, request: ImageRequest, *, timeout_s: float) -> ImageResult:
        model = self._model_name(request)
        extra: dict[str, Any] = {}
        if request.aspect_ratio:
            extra["aspect_ratio"] = request.aspect_ratio
        if request.image_size:
            extra["image_size"] = request.image_size
        assert request.prompt is not None
        try:
            answer = self._client.images.generate(
                model=model,
                prompt=request.prompt,
                n=1,
                response_format="b64_json",
                user=request.attempt_id,
                extra_body=extra or None,
                timeout=timeout_s,
            )
        except openai.APIStatusError as exc:
            raise self._status_error(request, exc) from exc
        except NETWORK as exc:
            # APITimeoutError is an APIConnectionError; what it wraps says whether the
            # request left (transport_error).
            raise transport_error(
                exc, lane=self.name, job_id=request.job_id, key=request.key
            ) from exc
        except openai.APIResponseValidationError as exc:
            raise OutcomeUnknown(
                f"{self.name}: an answer we could not read ({exc}); the image may have been made",
                job_id=request.job_id,
                key=request.key,
            ) from exc
        return self._result(request, answer)

    def _model_name(self, request: ImageRequest) -> str:
        problem = lane_request_problem(
            request,
            self.config.models,
            lane=self.name,
            not_served="not served by this lane",
            sent_to="an OpenAI-compatible images endpoint",
            reference_problem=_no_references,
        )
        if problem is not None:
            raise problem
        return self.config.models[request.model]

    def _status_error(self, request: ImageRequest, exc: openai.APIStatusError) -> Exception:
        code = (exc.code or "").lower() if isinstance(exc.code, str) else ""
        return status_error(
            exc.status_code,
            exc.message,
            lane=self.name,
            model=request.model,
            job_id=request.job_id,
            key=request.key,
            refused=exc.status_code == 400 and code in REFUSAL_CODES,
            quota_kind=quota_kind(exc),
            retry_after=retry_after(exc),
        )

    def _result(self, request: ImageRequest, answer: Any) -> ImageResult:
        data = list(getattr(answer, "data", None) or [])
        if not data:
            raise OutcomeUnknown(
                f"{self.name}: the answer holds no image (data is empty); it may have been billed",
                job_id=request.job_id,
                key=request.key,
            )
        first = data[0]
        image = self._image_bytes(request, first)
        mime = sniff_image_mime(image[:16])
        if mime is None:
            raise OutcomeUnknown(
                f"{self.name}: the answer is not a PNG, JPEG or WebP image "
                f"({len(image)} bytes); it may have been billed",
                job_id=request.job_id,
                key=request.key,
            )
        return ImageResult(image=image, mime_type=mime, provider_ref=_created_ref(answer))

    def _image_bytes(self, request: ImageRequest, first: Any) -> bytes:
        encoded = getattr(first, "b64_json", None)
        if isinstance(encoded, str) and encoded:
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise OutcomeUnknown(
                    f"{self.name}: b64_json is not base64 ({exc}); the image may have been billed",
                    job_id=request.job_id,
                    key=request.key,
                ) from exc
        url = getattr(first, "url", None)
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            try:
                response = httpx.get(url, timeout=FETCH_TIMEOUT_S, follow_redirects=True)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                # Made and billed: only reading it failed.
                raise OutcomeUnknown(
                    f"{self.name}: the image was made but fetching it failed "
                    f"({type(exc).__name__})",
                    job_id=request.job_id,
                    key=request.key,
                ) from exc
            return response.content
        raise OutcomeUnknown(
            f"{self.name}: the answer's image has neither b64_json nor a URL",
            job_id=request.job_id,
            key=request.key,
        )


def _created_ref(answer: Any) -> str | None:
    created = getattr(answer, "created", None)
    return f"created:{created}" if isinstance(created, int) else None


def _no_references(references: Sequence[str]) -> str | None:
    if not references:
        return None
    return f"reference images cannot be sent through images.generate (found {len(references)})"
