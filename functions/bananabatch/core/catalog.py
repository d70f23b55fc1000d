"""What each image model accepts and produces, and where it stands in its life. Pure,
dated data: facts that change with the world live here and in price_table.py, nowhere else.

Sources: ../shared/reference/gemini-batch-api.md §8.1 (image-generation docs; pricing
footnotes for token counts) and ../shared/reference/field-2026-12.md §1 rows 2-5 and §2
(the December 2026 model table, which wins where the two disagree). Intake validates
against it (and rejects lines naming a shut-down model), planning sizes batches with it,
pricing and the emulator read its token counts, `bananabatch doctor` compares it with
the service's `models.list`.

When the world moves: change a ModelSpec's lifecycle or batch_support, add the source and
the date you read it, and move CATALOG_AS_OF. The default model is DEFAULT_MODEL below, and
only there (the stack config and BANANABATCH_DEFAULT_MODEL override it per deployment).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Final

from bananabatch.core.catalog_openai import (
    OPENAI_MODELS,
    OPENAI_OUTPUT_FORMATS,
    OPENAI_QUALITIES,
    OPENAI_SIZE_BY_RATIO,
    openai_tier,
)
from bananabatch.core.model_types import BatchSupport, Lifecycle, ModelSpec, Provider, Status

__all__ = [
    "OPENAI_MODELS",
    "OPENAI_OUTPUT_FORMATS",
    "OPENAI_QUALITIES",
    "OPENAI_SIZE_BY_RATIO",
    "BatchSupport",
    "Lifecycle",
    "ModelSpec",
    "Provider",
    "Status",
    "openai_tier",
]

#: The day the lifecycles and batch-support facts below were last checked.
CATALOG_AS_OF: Final = date(2026, 12, 7)

_FIELD: Final = "shared/reference/field-2026-12.md"
_REF: Final = "shared/reference/gemini-batch-api.md"

BASE_RATIOS: Final = (
    "1:1",
    "2:3",
    "3:2",
    "3:4",
    "4:3",
    "4:5",
    "5:4",
    "9:16",
    "16:9",
    "21:9",
)
EXTRA_RATIOS: Final = ("1:4", "4:1", "1:8", "8:1")

# Long edge of a square image at each size tier; other ratios keep about the same pixels.
_TIER_EDGE: Final[Mapping[str, int]] = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}

# Bytes one result line takes per output image, base64 included, as planning assumes it.
# Measured shapes: a 1K PNG is about 1.5 MB, base64 adds a third; JPEG outputs are smaller,
# so these are deliberately the PNG (upper) figures.
_TIER_RESULT_BYTES: Final[Mapping[str, int]] = {
    "512": 600_000,
    "1K": 2_200_000,
    "2K": 8_000_000,
    "4K": 30_000_000,
}

# Per reference image in a request (Gemini 3 pricing: "input image = 560 tokens").
INPUT_IMAGE_TOKENS: Final = 560
TYPICAL_THOUGHT_TOKENS: Final = 178


R14: Final = BASE_RATIOS + EXTRA_RATIOS

MODELS: Final[tuple[ModelSpec, ...]] = (
    ModelSpec(
        model_id="gemini-2.5-flash-image",
        display_name="Nano Banana",
        aliases=("gemini-2.5-flash-image-preview", "nano-banana"),
        aspect_ratios=BASE_RATIOS,
        image_sizes=(),
        default_size="1K",
        image_tokens={"1K": 1290},
        max_reference_images=3,
        typical_text_tokens=0,
        typical_thought_tokens=0,
        lifecycle=Lifecycle(
            source=f"{_FIELD} §1 row 5, §2 (changelog; deprecations page)",
            released=date(2025, 10, 2),
            restricted=date(2026, 9, 18),
            shutdown=date(2026, 10, 2),
            replacement="gemini-3.1-flash-lite-image",
            note="restricted to projects that used it before on 2026-09-18; the deprecations "
            "page listed the shutdown for 2026-10-02; 3P: Gemini 2.5 withdrawn 2026-11-12 "
            "with 503 (UNVERIFIED). Kept in the emulator's fixtures only.",
        ),
        batch_support=BatchSupport.YES,
        batch_source=f"{_REF} §8.2 (batch price published while it was served)",
    ),
    ModelSpec(
        model_id="gemini-3-pro-image",
        display_name="Nano Banana Pro",
        aliases=("gemini-3-pro-image-preview", "nano-banana-pro"),
        aspect_ratios=BASE_RATIOS,
        image_sizes=("1K", "2K", "4K"),
        default_size="1K",
        image_tokens={"1K": 1120, "2K": 1120, "4K": 2000},
        max_reference_images=14,
        typical_text_tokens=0,
        typical_thought_tokens=TYPICAL_THOUGHT_TOKENS,
        lifecycle=Lifecycle(
            source=f"{_FIELD} §2 (changelog); {_REF} §8.3",
            released=date(2026, 5, 28),
            note="GA id since 2026-05-28; the -preview id was shut down 2026-06-25.",
        ),
        batch_support=BatchSupport.YES,
        batch_source=f"{_FIELD} §2 (batch price published on the pricing page)",
    ),
    ModelSpec(
        model_id="gemini-3.1-flash-image",
        display_name="Nano Banana 2",
        aliases=("gemini-3.1-flash-image-preview", "nano-banana-2"),
        aspect_ratios=R14,
        image_sizes=("512", "1K", "2K", "4K"),
        default_size="1K",
        image_tokens={"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
        max_reference_images=14,
        typical_text_tokens=0,
        typical_thought_tokens=TYPICAL_THOUGHT_TOKENS,
        lifecycle=Lifecycle(
            source=f"{_FIELD} §1 row 4, §2 (changelog?hl=zh-cn)",
            released=date(2026, 5, 28),
            deprecated=date(2026, 10, 6),
            replacement="gemini-nano-banana-2.1",
            note="shutdown CONFLICT: the changelog says no shutdown date is announced; two "
            "third parties say it shut down on 2026-10-29; one proxy still serves it. Kept "
            "as deprecated; a 'model not found' at create is a permanent model error.",
        ),
        batch_support=BatchSupport.YES,
        batch_source=f"{_FIELD} §2 (model page: batch supported while served)",
        uncertain_tokens=("2K", "4K"),
        notes=(
            "2K/4K tokens: pricing page 1680/2520, one image-doc copy 1120/2000",
            "the 512 tier's API spelling is UNCERTAIN (512 / 512px / 0.5K)",
        ),
    ),
    ModelSpec(
        model_id="gemini-3.1-flash-lite-image",
        display_name="Nano Banana 2 Lite",
        aliases=("nano-banana-2-lite",),
        aspect_ratios=R14,
        image_sizes=("1K",),
        default_size="1K",
        # $0.0168 per image at $15 / 1M batch (ARITHMETIC: 0.0168 / 15e-6 = 1120).
        image_tokens={"1K": 1120},
        max_reference_images=14,
        typical_text_tokens=0,
        typical_thought_tokens=TYPICAL_THOUGHT_TOKENS,
        lifecycle=Lifecycle(
            source=f"{_FIELD} §1 row 3, §2 (models/gemini-3.1-flash-lite-image?hl=zh-cn)",
            released=date(2026, 6, 30),
        ),
        batch_support=BatchSupport.YES,
        batch_source=f"{_FIELD} §1 row 3 (model page: Batch yes; no Flex, Priority, caching)",
        notes=(
            "the 14 ratios are the same set as 3.1 Flash Image: UNVERIFIED",
            "reference-image limit not published; 14 assumed as on 3.1 Flash Image",
            "thinking assumed on, as on the other Gemini 3 image models (INFERENCE)",
        ),
    ),
    ModelSpec(
        model_id="gemini-nano-banana-2.1",
        display_name="Nano Banana 2.1",
        aliases=("nano-banana-2.1",),
        aspect_ratios=R14,
        image_sizes=("1K", "2K", "4K"),
        default_size="1K",
        # 1K: $0.0336 at $30 / 1M (ARITHMETIC). 2K/4K unknown: 1680/2520 as on 3.1 Flash
        # Image (INFERENCE).
        image_tokens={"1K": 1120, "2K": 1680, "4K": 2520},
        max_reference_images=14,
        typical_text_tokens=0,
        typical_thought_tokens=TYPICAL_THOUGHT_TOKENS,
        lifecycle=Lifecycle(
            source=f"{_FIELD} §1 row 2, §2 (changelog?hl=zh-cn; 3P TanStack/ai)",
            released=date(2026, 10, 6),
        ),
        batch_support=BatchSupport.UNKNOWN,
        batch_source=f"{_FIELD} §1 row 2, §6 item 1: Developer API batch support and its "
        "batch price are not confirmed by a Google model page (3P: batch works through "
        "Vertex only)",
        uncertain_tokens=("2K", "4K"),
        notes=(
            "no 512 tier",
            "2K/4K token counts unknown; 1680/2520 assumed as on 3.1 Flash Image (INFERENCE)",
            "reference-image limit not published; 14 assumed as on 3.1 Flash Image",
            "not a default until one real batch job on it has succeeded",
        ),
    ),
)

#: Every model a line may name, of every provider (catalog_openai.py: the gpt-image ones).
ALL_MODELS: Final[tuple[ModelSpec, ...]] = MODELS + OPENAI_MODELS

#: Replicate's names for the catalog's models (replicate.com/google, read 2026-12-07); a
#: deployment's BANANABATCH_REPLICATE_MODELS replaces them (providers/replicate_lane.py).
REPLICATE_NAMES: Final[Mapping[str, str]] = {
    "gemini-3-pro-image": "google/nano-banana-pro",
    "gemini-3.1-flash-image": "google/nano-banana-2",
}

#: The model for lines that name none. ONE place: config, the stack config and the
#: emulator read it from here. It must be GA with documented batch support (a test checks):
#: the cheapest such model on CATALOG_AS_OF (field-2026-12.md §1 row 3).
#: Standard API keys start with this. AI Studio issues only `AQ.` auth keys since 2026-05-28
#: and the Gemini API rejects every standard key since September 2026 (field-2026-12.md §1
#: row 1): config refuses them at load, doctor says why, the emulator refuses them as the
#: service does.
STANDARD_KEY_PREFIX: Final = "AIza"

DEFAULT_MODEL: Final = "gemini-3.1-flash-lite-image"

#: Vertex batch produces 1K images only, for every image model (field-2026-12.md §1 row 7;
#: the Vertex batch-inference page).
VERTEX_BATCH_SIZES: Final = ("1K",)

_BY_NAME: Final[Mapping[str, ModelSpec]] = {
    name: spec for spec in ALL_MODELS for name in (spec.model_id, *spec.aliases)
}


def provider_of(model: str) -> Provider:
    """The provider that serves a model; an unknown model is Gemini's (the Gemini lane
    was the only one before OpenAI's, and its service answers for unknown names)."""
    spec = model_spec(model)
    return spec.provider if spec is not None else Provider.GEMINI


def price_tier(spec: ModelSpec, image_size: str | None, quality: str | None = None) -> str:
    """The tier a request is priced at: its size tier for a Gemini model, its quality and
    size for a gpt-image model (defaults filled in)."""
    size = effective_size(spec, image_size)
    if spec.provider is Provider.OPENAI:
        return openai_tier(quality or spec.default_quality or "medium", size)
    return size


def canonical_model(model: str) -> str:
    """`models/gemini-3-pro-image-preview` -> `gemini-3-pro-image`; unknown ids pass through."""
    bare = model.removeprefix("models/").removeprefix("publishers/google/models/")
    spec = _BY_NAME.get(bare)
    return spec.model_id if spec else bare


def model_spec(model: str) -> ModelSpec | None:
    return _BY_NAME.get(canonical_model(model))


def effective_size(spec: ModelSpec, image_size: str | None) -> str:
    return image_size if image_size and spec.image_sizes else spec.default_size


def openai_size(spec: ModelSpec, aspect_ratio: str | None, image_size: str | None) -> str:
    """The pixel size a gpt-image line is sent at: its image_size, else its aspect
    ratio's size, else the model's default."""
    if image_size:
        return image_size
    if aspect_ratio:
        return spec.size_by_ratio.get(aspect_ratio, spec.default_size)
    return spec.default_size


def image_dimensions(aspect_ratio: str | None, image_size: str | None) -> tuple[int, int]:
    """Pixel size for a ratio and tier: about edge² pixels, both sides multiples of 16."""
    edge = _TIER_EDGE.get(image_size or "1K", 1024)
    w_ratio, h_ratio = (int(part) for part in (aspect_ratio or "1:1").split(":"))
    pixels = edge * edge
    width = math.sqrt(pixels * w_ratio / h_ratio)
    height = pixels / width
    return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)


def expected_result_bytes(model: str, image_size: str | None) -> int:
    spec = model_spec(model)
    size = effective_size(spec, image_size) if spec else (image_size or "1K")
    if spec is not None and spec.provider is Provider.OPENAI:
        # A base64 PNG at about a 1K tier's pixels; the 3:2 sizes have 1.5x of them.
        square = _TIER_RESULT_BYTES["1K"]
        return square if size == spec.default_size else square * 3 // 2
    return _TIER_RESULT_BYTES.get(size, _TIER_RESULT_BYTES["4K"])


def lifecycle_problem(model: str, day: date) -> str | None:
    """Why a line naming `model` must be rejected on `day` (shut down), or None."""
    spec = model_spec(model)
    if spec is None or spec.status_on(day) is not Status.SHUT_DOWN:
        return None
    life = spec.lifecycle
    use = f"; use {life.replacement} instead" if life.replacement else ""
    when = life.shutdown.isoformat() if life.shutdown else "an unknown date"
    return f"{spec.model_id} was shut down on {when} (source: {life.source}){use}"


def model_warnings(models: Iterable[str], day: date) -> list[str]:
    """What a job using these models should be told on `day`: deprecated or restricted
    models, and models whose batch support is undocumented. Sorted, one per problem."""
    out: list[str] = []
    for name in sorted({canonical_model(m) for m in models}):
        spec = model_spec(name)
        if spec is None:
            continue
        life = spec.lifecycle
        status = spec.status_on(day)
        use = f"; move to {life.replacement}" if life.replacement else ""
        if status is Status.DEPRECATED:
            assert life.deprecated is not None
            out.append(
                f"{name} is deprecated since {life.deprecated.isoformat()} and may stop being "
                f"served without notice{use} (source: {life.source})"
            )
        elif status is Status.RESTRICTED:
            assert life.restricted is not None
            out.append(
                f"{name} is restricted since {life.restricted.isoformat()} to projects that "
                f"used it before{use} (source: {life.source})"
            )
        if spec.batch_support is BatchSupport.UNKNOWN:
            out.append(
                f"{name}: Batch API support is not documented ({spec.batch_source}); a "
                "create answered 'not supported' ends these lines as a model error"
            )
        elif spec.batch_support is BatchSupport.NO:
            out.append(f"{name}: no Batch API support is documented ({spec.batch_source})")
    return out
