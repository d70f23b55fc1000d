"""What each image model accepts and produces. Pure data, from
../shared/reference/gemini-batch-api.md §8.1 (image-generation docs; pricing footnotes for
token counts). Intake validates against it, planning sizes batches with it, pricing and
the emulator read its token counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

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


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    aliases: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    # Empty when the model has a single size and imageSize must not be sent.
    image_sizes: tuple[str, ...]
    default_size: str
    image_tokens: Mapping[str, int]
    max_reference_images: int
    # Typical non-image output the model adds per request (text and thinking tokens), used
    # by estimates; actual cost always comes from usageMetadata. Gemini 3 image models always
    # think: 178 is the mean of the emulator's deterministic 100..256 thought tokens, so an
    # estimate lands within 1 % of an emulated job's actual cost (IMAGE-only output has no
    # text tokens). Real thought counts vary more; observed rates correct the estimate.
    typical_text_tokens: int
    typical_thought_tokens: int


MODELS: Final[tuple[ModelSpec, ...]] = (
    ModelSpec(
        model_id="gemini-2.5-flash-image",
        aliases=("gemini-2.5-flash-image-preview", "nano-banana"),
        aspect_ratios=BASE_RATIOS,
        image_sizes=(),
        default_size="1K",
        image_tokens={"1K": 1290},
        max_reference_images=3,
        typical_text_tokens=0,
        typical_thought_tokens=0,
    ),
    ModelSpec(
        model_id="gemini-3-pro-image",
        aliases=("gemini-3-pro-image-preview", "nano-banana-pro"),
        aspect_ratios=BASE_RATIOS,
        image_sizes=("1K", "2K", "4K"),
        default_size="1K",
        image_tokens={"1K": 1120, "2K": 1120, "4K": 2000},
        max_reference_images=14,
        typical_text_tokens=0,
        typical_thought_tokens=TYPICAL_THOUGHT_TOKENS,
    ),
    ModelSpec(
        model_id="gemini-3.1-flash-image",
        aliases=("gemini-3.1-flash-image-preview", "nano-banana-2"),
        aspect_ratios=BASE_RATIOS + EXTRA_RATIOS,
        image_sizes=("512", "1K", "2K", "4K"),
        default_size="1K",
        image_tokens={"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
        max_reference_images=14,
        typical_text_tokens=0,
        typical_thought_tokens=TYPICAL_THOUGHT_TOKENS,
    ),
)

_BY_NAME: Final[Mapping[str, ModelSpec]] = {
    name: spec for spec in MODELS for name in (spec.model_id, *spec.aliases)
}


def canonical_model(model: str) -> str:
    """`models/gemini-3-pro-image-preview` -> `gemini-3-pro-image`; unknown ids pass through."""
    bare = model.removeprefix("models/").removeprefix("publishers/google/models/")
    spec = _BY_NAME.get(bare)
    return spec.model_id if spec else bare


def model_spec(model: str) -> ModelSpec | None:
    return _BY_NAME.get(canonical_model(model))


def effective_size(spec: ModelSpec, image_size: str | None) -> str:
    return image_size if image_size and spec.image_sizes else spec.default_size


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
    return _TIER_RESULT_BYTES.get(size, _TIER_RESULT_BYTES["4K"])
