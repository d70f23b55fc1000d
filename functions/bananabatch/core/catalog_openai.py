"""OpenAI's gpt-image models, as catalog entries (issue 19): dated, sourced facts, read
through catalog.py like every other model. Pure data.

Source: ../shared/reference/field-2026-12.md §3.2 (read 2026-12-07). `gpt-image-1.5` and
`gpt-image-2.6-*` are listed by OpenAI with unknown batch support and prices: not here
until either is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Final

from bananabatch.core.model_types import BatchSupport, Lifecycle, ModelSpec, Provider

_FIELD: Final = "shared/reference/field-2026-12.md"

_OPENAI_SIZES: Final = (
    "3P openai_dart ImageSize docs: GPT image models (including gpt-image-2) take auto, "
    "1024x1024, 1536x1024, 1024x1536"
)
#: Each aspect ratio a gpt-image line may ask for, and the size it is sent as. Only the
#: ratios the sizes have exactly (1536 / 1024 = 3 / 2): a 16:9 line is rejected rather
#: than silently cropped to 3:2.
OPENAI_SIZE_BY_RATIO: Final[Mapping[str, str]] = {
    "1:1": "1024x1024",
    "3:2": "1536x1024",
    "2:3": "1024x1536",
}
OPENAI_QUALITIES: Final = ("low", "medium", "high")
OPENAI_OUTPUT_FORMATS: Final = ("png", "jpeg", "webp")
# Image output tokens per quality at 1024x1024: the model page's per-image prices at
# $30 / 1M (ARITHMETIC: 0.006, 0.053, 0.211 -> 200, 1767, 7033). The 3:2 and 2:3 sizes
# have 1.5x the pixels and are assumed to take 1.5x the tokens, as gpt-image-1's
# published prices did (INFERENCE).
_GPT_IMAGE_2_SQUARE_TOKENS: Final[Mapping[str, int]] = {"low": 200, "medium": 1767, "high": 7033}


def openai_tier(quality: str, size: str) -> str:
    """The price and token tier of a gpt-image request: its quality and its size."""
    return f"{quality} {size}"


def _gpt_image_tokens(square: Mapping[str, int]) -> dict[str, int]:
    return {
        openai_tier(quality, size): tokens if size == "1024x1024" else round(tokens * 1.5)
        for quality, tokens in square.items()
        for size in OPENAI_SIZE_BY_RATIO.values()
    }


def _gpt_image(
    model_id: str,
    display_name: str,
    lifecycle: Lifecycle,
    batch_support: BatchSupport,
    batch_source: str,
    notes: tuple[str, ...] = (),
) -> ModelSpec:
    tokens = _gpt_image_tokens(_GPT_IMAGE_2_SQUARE_TOKENS)
    return ModelSpec(
        model_id=model_id,
        display_name=display_name,
        aliases=(),
        aspect_ratios=tuple(OPENAI_SIZE_BY_RATIO),
        image_sizes=tuple(OPENAI_SIZE_BY_RATIO.values()),
        default_size="1024x1024",
        image_tokens=tokens,
        # The JSON body of /v1/images/edits takes up to 16 input images.
        max_reference_images=16,
        typical_text_tokens=0,
        typical_thought_tokens=0,
        lifecycle=lifecycle,
        batch_support=batch_support,
        batch_source=batch_source,
        uncertain_tokens=tuple(t for t in tokens if not t.endswith(" 1024x1024")),
        notes=(
            f"sizes: {_OPENAI_SIZES}",
            "3:2 and 2:3 token counts: 1.5x the square's (INFERENCE)",
            "how /v1/images/edits lines carry input images inside a batch is not documented "
            f"({_FIELD} §6 item 11); sent as images[].image_url",
            *notes,
        ),
        provider=Provider.OPENAI,
        size_by_ratio=OPENAI_SIZE_BY_RATIO,
        qualities=OPENAI_QUALITIES,
        # Always sent: the service's own default ("auto") has no price to estimate.
        default_quality="medium",
        output_formats=OPENAI_OUTPUT_FORMATS,
        default_output_format="png",
    )


OPENAI_MODELS: Final[tuple[ModelSpec, ...]] = (
    _gpt_image(
        "gpt-image-1",
        "GPT Image 1",
        Lifecycle(
            source=f"{_FIELD} §1 row 15, §3.2 (OpenAI deprecations page)",
            shutdown=date(2026, 10, 23),
            replacement="gpt-image-2",
        ),
        BatchSupport.NO,
        f"{_FIELD} §3.2: shut down",
    ),
    _gpt_image(
        "gpt-image-2",
        "GPT Image 2",
        Lifecycle(source=f"{_FIELD} §3.2 (OpenAI model page)", released=date(2026, 4, 21)),
        BatchSupport.YES,
        f"{_FIELD} §3.2 (model page: Batch yes; Batch accepts /v1/images/generations and "
        "/v1/images/edits)",
    ),
    *(
        _gpt_image(
            model_id,
            display,
            Lifecycle(source=f"{_FIELD} §3.2 (OpenAI models pages)", released=date(2026, 9, 8)),
            BatchSupport.UNKNOWN,
            f"{_FIELD} §3.2, §6 item 11: batch support stated, not confirmed on a model page "
            "(UNVERIFIED)",
            notes=(
                "price not published: gpt-image-2's assumed",
                "sizes and token counts assumed equal to gpt-image-2's",
            ),
        )
        for model_id, display in (
            ("gpt-image-2.5-sunburst", "GPT Image 2.5 Sunburst"),
            ("gpt-image-2.5-flare", "GPT Image 2.5 Flare"),
        )
    ),
)
