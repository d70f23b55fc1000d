"""Gemini's standard (synchronous) generateContent API as a SyncImageLane: what was the
urgent lane's call, behind the lane port (ports.SyncImageLane), so the sync-lane runner
(pipeline/lanes.py) fails over between it and other providers alike.

The call itself is the batch provider's `generate` (one HTTP request, with the reference
images made readable as for batch); this adapter only reads its answer: an image is the
result, a safety block is ContentRefused (BLOCKED, never tried elsewhere), any other
answer without an image is AnsweredWithoutImage (FAILED here, and not repeated on another
provider: it was answered, and billed).
"""

from __future__ import annotations

from typing import Final

from bananabatch.core.results import Outcome, OutcomeKind, Usage, classify_row
from bananabatch.errors import ContentRefused, PermanentError
from bananabatch.ports import BatchProvider, ImageRequest, ImageResult

NAME: Final = "gemini-standard"


class AnsweredWithoutImage(PermanentError):
    """The provider answered, and billed, but gave no image (text only, an error row)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason() or f"no image ({outcome.kind.value})")
        self.outcome = outcome

    @property
    def usage(self) -> Usage | None:
        return self.outcome.usage


class GeminiStandardLane:
    """SyncImageLane over a BatchProvider's synchronous generate."""

    name = NAME

    def __init__(self, provider: BatchProvider) -> None:
        self.provider = provider

    def generate(self, request: ImageRequest, *, timeout_s: float) -> ImageResult:
        del timeout_s  # the provider's HTTP client has its own (providers/gemini.py)
        if request.gemini_request is None:
            raise PermanentError(
                f"{NAME} needs the staged Gemini request; found none", key=request.key
            )
        response = self.provider.generate(model=request.model, request=request.gemini_request)
        outcome = classify_row({"key": request.key, "response": dict(response)})
        if outcome.kind is OutcomeKind.IMAGE and outcome.image is not None:
            return ImageResult(
                image=outcome.image,
                mime_type=outcome.mime_type or "image/png",
                usage=outcome.usage,
            )
        if outcome.kind is OutcomeKind.BLOCKED:
            raise ContentRefused(
                outcome.reason() or "blocked by safety filters",
                finish_reason=outcome.finish_reason,
                usage=outcome.usage,
                key=request.key,
            )
        raise AnsweredWithoutImage(outcome)
