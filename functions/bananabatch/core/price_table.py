"""Published image-model prices (Gemini and OpenAI gpt-image), as data. Every figure
carries its source and date.

Transcribed from ../shared/reference/gemini-batch-api.md §8.2 (paid tier, USD; researched
2026-11-21) and, for the models added in December 2026, ../shared/reference/field-2026-12.md
§2 (read 2026-12-07). `as_of` is the day the figure was read at its source: an estimate
made with a figure older than BANANABATCH_PRICE_MAX_AGE_DAYS says so
(pricing.price_warnings). The first reference states batch = 50 % of standard; where it
publishes a batch figure it is used as published, and where it gives only the standard
figure the batch one is derived and says so. Change prices here and nowhere else;
enterprise discounts belong in the PriceBook overrides, not in this table.

gpt-image prices: ../shared/reference/field-2026-12.md §3.2 (OpenAI model page for
gpt-image-2, read 2026-12-07): image output $30 / 1M tokens, image input $8 / 1M, text input
$5 / 1M; per image at 1024x1024 $0.006 low / $0.053 medium / $0.211 high; Batch -50 %. A
gpt-image per-image tier is "<quality> <size>" (catalog.openai_tier).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

STANDARD: Final = "standard"
BATCH: Final = "batch"

_REF: Final = "shared/reference/gemini-batch-api.md §8.2"
_SRC_25: Final = (
    "pricing page as quoted in a 2025 discuss.ai.google.dev thread and in a 3P note "
    "fetched 2026-06-23; same figures in the 2026-09-05 note"
)
_SRC_3PRO: Final = "pricing page copy; transcription 2026-09-20"
_SRC_31: Final = "pricing page quoted verbatim, checked 2026-09-05"
_SRC_TEXT: Final = (
    "pricing page [DOC], as summarised in the reference: thinking/text output tokens "
    "are billed at the model's text-output rate"
)
_DERIVED: Final = "derived: batch = 50 % of standard, as the reference table states"


@dataclass(frozen=True)
class Figure:
    """One price in USD, with where and when it was read."""

    usd: float
    source: str
    as_of: str
    uncertain: bool = False
    note: str = ""


@dataclass(frozen=True)
class PriceEntry:
    """One model in one lane. Token rates are USD per 1M tokens."""

    model: str
    lane: str
    image_output_per_1m: Figure
    input_per_1m: Figure
    text_output_per_1m: Figure
    # Per-image prices by size tier, exactly as published (rounded by Google).
    per_image: Mapping[str, Figure] = field(default_factory=dict)


def _f(usd: float, source: str, as_of: str, *, uncertain: bool = False, note: str = "") -> Figure:
    return Figure(usd=usd, source=f"{_REF}: {source}", as_of=as_of, uncertain=uncertain, note=note)


_FIELD: Final = "shared/reference/field-2026-12.md §2"
_SRC_LITE: Final = "3P laozhang.ai (citing Google, July 2026) and muapi; another 3P: $0.034"
_SRC_NB21: Final = "3P BerriAI/litellm discussion #44983 (2026-10)"
_ASSUMED_31: Final = (
    "not published for this model; assumed equal to gemini-3.1-flash-image's rate until a "
    "Google pricing page lists it"
)
_FIELD_AS_OF: Final = "2026-12-07"


def _g(usd: float, source: str, *, uncertain: bool = True, note: str = "") -> Figure:
    """A figure from the December 2026 sheet; most of its figures are third-party."""
    return Figure(
        usd=usd, source=f"{_FIELD}: {source}", as_of=_FIELD_AS_OF, uncertain=uncertain, note=note
    )


_OPENAI: Final = "shared/reference/field-2026-12.md §3.2: OpenAI model page for gpt-image-2"
_OPENAI_AS_OF: Final = "2026-12-07"
# Per image at 1024x1024, standard lane, as the model page gives them.
_GPT_IMAGE_2_SQUARE_USD: Final[Mapping[str, float]] = {"low": 0.006, "medium": 0.053, "high": 0.211}
_GPT_SIZES: Final = ("1024x1024", "1536x1024", "1024x1536")


def _o(usd: float, *, uncertain: bool = False, note: str = "") -> Figure:
    return Figure(usd=usd, source=_OPENAI, as_of=_OPENAI_AS_OF, uncertain=uncertain, note=note)


def _gpt_image(model: str, lane: str) -> PriceEntry:
    """gpt-image-2's prices in a lane; the 2.5 models publish none, so gpt-image-2's are
    assumed for them and every figure says so."""
    half = lane == BATCH
    factor = 0.5 if half else 1.0
    assumed = model != "gpt-image-2"
    why = "not published for this model; gpt-image-2's assumed" if assumed else ""

    def fig(usd: float, *, uncertain: bool = False, note: str = "") -> Figure:
        notes = [n for n in (why, note, "Batch: 50 % of standard" if half else "") if n]
        return _o(usd * factor, uncertain=uncertain or assumed, note="; ".join(notes))

    per_image: dict[str, Figure] = {}
    for quality, usd in _GPT_IMAGE_2_SQUARE_USD.items():
        for size in _GPT_SIZES:
            square = size == "1024x1024"
            per_image[f"{quality} {size}"] = fig(
                usd if square else round(usd * 1.5, 6),
                uncertain=not square,
                note="" if square else "INFERENCE: 1.5x the square's, as on gpt-image-1",
            )
    return PriceEntry(
        model=model,
        lane=lane,
        image_output_per_1m=fig(30.0),
        input_per_1m=fig(5.0, note="text input; image input is $8 / 1M (edits)"),
        text_output_per_1m=fig(
            30.0, note="an image request's output tokens are all billed at the image rate"
        ),
        per_image=per_image,
    )


PRICE_TABLE: Final[tuple[PriceEntry, ...]] = (
    # --- gemini-2.5-flash-image (Nano Banana): one ~1 MP size, 1290 tokens ---------------
    PriceEntry(
        model="gemini-2.5-flash-image",
        lane=STANDARD,
        image_output_per_1m=_f(30.0, _SRC_25, "2026-09-05"),
        input_per_1m=_f(0.30, _SRC_25, "2026-09-05"),
        text_output_per_1m=_f(
            2.50,
            "not in the reference table",
            "2026-11-21",
            uncertain=True,
            note="assumed equal to Gemini 2.5 Flash's text-output rate; verify on the pricing "
            "page (with IMAGE-only output it applies to few tokens)",
        ),
        per_image={"1K": _f(0.039, _SRC_25, "2026-09-05")},
    ),
    PriceEntry(
        model="gemini-2.5-flash-image",
        lane=BATCH,
        image_output_per_1m=_f(15.0, _SRC_25, "2026-09-05", note=_DERIVED),
        input_per_1m=_f(0.15, _SRC_25, "2026-09-05"),
        text_output_per_1m=_f(
            1.25,
            "not in the reference table",
            "2026-11-21",
            uncertain=True,
            note="half of the assumed standard text-output rate",
        ),
        per_image={"1K": _f(0.0195, _SRC_25, "2026-09-05")},
    ),
    # --- gemini-3-pro-image (Nano Banana Pro): 1120 tokens at 1K/2K, 2000 at 4K -----------
    PriceEntry(
        model="gemini-3-pro-image",
        lane=STANDARD,
        image_output_per_1m=_f(120.0, _SRC_3PRO, "2026-09-20"),
        input_per_1m=_f(
            2.00, _SRC_3PRO, "2026-09-20", note="text/image input; an input image is 560 tokens"
        ),
        text_output_per_1m=_f(12.0, _SRC_TEXT, "2026-11-21"),
        per_image={
            "1K": _f(0.134, _SRC_3PRO, "2026-09-20"),
            "2K": _f(0.134, _SRC_3PRO, "2026-09-20"),
            "4K": _f(0.24, _SRC_3PRO, "2026-09-20"),
        },
    ),
    PriceEntry(
        model="gemini-3-pro-image",
        lane=BATCH,
        image_output_per_1m=_f(60.0, _SRC_3PRO, "2026-09-20", note=_DERIVED),
        input_per_1m=_f(
            1.00, _SRC_3PRO, "2026-09-20", note="text input; an input image is $0.0006 in batch"
        ),
        text_output_per_1m=_f(6.0, _SRC_TEXT, "2026-11-21"),
        per_image={
            "1K": _f(0.067, _SRC_3PRO, "2026-09-20"),
            "2K": _f(0.067, _SRC_3PRO, "2026-09-20"),
            "4K": _f(0.12, _SRC_3PRO, "2026-09-20"),
        },
    ),
    # --- gemini-3.1-flash-image (Nano Banana 2): 747 / 1120 / 1680 / 2520 tokens ----------
    PriceEntry(
        model="gemini-3.1-flash-image",
        lane=STANDARD,
        image_output_per_1m=_f(60.0, _SRC_31, "2026-09-05"),
        input_per_1m=_f(0.50, _SRC_31, "2026-09-05"),
        text_output_per_1m=_f(3.0, _SRC_TEXT, "2026-11-21"),
        per_image={
            "512": _f(
                0.045,
                _SRC_31,
                "2026-09-05",
                uncertain=True,
                note="the API spelling of the 512 tier is UNCERTAIN (512 / 512px / 0.5K)",
            ),
            "1K": _f(0.067, _SRC_31, "2026-09-05"),
            "2K": _f(
                0.101,
                _SRC_31,
                "2026-09-05",
                uncertain=True,
                note="token count UNCERTAIN: pricing page 1680, one image-doc copy 1120",
            ),
            "4K": _f(
                0.151,
                _SRC_31,
                "2026-09-05",
                uncertain=True,
                note="token count UNCERTAIN: pricing page 2520, one image-doc copy 2000",
            ),
        },
    ),
    PriceEntry(
        model="gemini-3.1-flash-image",
        lane=BATCH,
        image_output_per_1m=_f(30.0, _SRC_31, "2026-09-05", note=_DERIVED),
        input_per_1m=_f(0.25, _SRC_31, "2026-09-05"),
        text_output_per_1m=_f(1.50, _SRC_TEXT, "2026-11-21"),
        per_image={
            "512": _f(
                0.022,
                _SRC_31,
                "2026-09-05",
                uncertain=True,
                note="the API spelling of the 512 tier is UNCERTAIN (512 / 512px / 0.5K)",
            ),
            "1K": _f(0.034, _SRC_31, "2026-09-05"),
            "2K": _f(
                0.050,
                _SRC_31,
                "2026-09-05",
                uncertain=True,
                note="token count UNCERTAIN: pricing page 1680, one image-doc copy 1120",
            ),
            "4K": _f(
                0.076,
                _SRC_31,
                "2026-09-05",
                uncertain=True,
                note="token count UNCERTAIN: pricing page 2520, one image-doc copy 2000",
            ),
        },
    ),
    # --- gemini-3.1-flash-lite-image (Nano Banana 2 Lite): 1K only, 1120 tokens ----------
    PriceEntry(
        model="gemini-3.1-flash-lite-image",
        lane=STANDARD,
        image_output_per_1m=_g(30.0, _SRC_LITE, note="ARITHMETIC: $0.0336 / 1120 tokens"),
        input_per_1m=_g(0.50, "not published", note=_ASSUMED_31),
        text_output_per_1m=_g(3.0, "not published", note=_ASSUMED_31),
        per_image={"1K": _g(0.0336, _SRC_LITE)},
    ),
    PriceEntry(
        model="gemini-3.1-flash-lite-image",
        lane=BATCH,
        image_output_per_1m=_g(15.0, _SRC_LITE + " ($15 / 1M)"),
        input_per_1m=_g(0.25, "not published", note=_ASSUMED_31),
        text_output_per_1m=_g(1.50, "not published", note=_ASSUMED_31),
        per_image={"1K": _g(0.0168, _SRC_LITE)},
    ),
    # --- gemini-nano-banana-2.1 (Nano Banana 2.1): 1K/2K/4K, batch price unpublished ------
    PriceEntry(
        model="gemini-nano-banana-2.1",
        lane=STANDARD,
        image_output_per_1m=_g(30.0, _SRC_NB21),
        input_per_1m=_g(0.50, "not published", note=_ASSUMED_31),
        text_output_per_1m=_g(3.0, "not published", note=_ASSUMED_31),
        per_image={
            "1K": _g(0.0336, _SRC_NB21),
            "2K": _g(0.0504, _SRC_NB21, note="INFERENCE: 1680 tokens as on 3.1 Flash Image"),
            "4K": _g(0.0756, _SRC_NB21, note="INFERENCE: 2520 tokens as on 3.1 Flash Image"),
        },
    ),
    PriceEntry(
        model="gemini-nano-banana-2.1",
        lane=BATCH,
        image_output_per_1m=_g(15.0, "not published", note="ARITHMETIC: the usual 50 %"),
        input_per_1m=_g(0.25, "not published", note=_ASSUMED_31),
        text_output_per_1m=_g(1.50, "not published", note=_ASSUMED_31),
        per_image={
            "1K": _g(0.0168, "not published", note="ARITHMETIC: 50 % of $0.0336"),
            "2K": _g(0.0252, "not published", note="ARITHMETIC and INFERENCE (2K tokens)"),
            "4K": _g(0.0378, "not published", note="ARITHMETIC and INFERENCE (4K tokens)"),
        },
    ),
    *(
        entry
        for model in ("gpt-image-2", "gpt-image-2.5-sunburst", "gpt-image-2.5-flare")
        for entry in (_gpt_image(model, STANDARD), _gpt_image(model, BATCH))
    ),
)


# --- lanes priced per image, whatever the tokens (issue 20) --------------------------------
# Third-party lanes charge a flat price per image: an OpenAI-compatible gateway (compat:
# <label>) or a hosted-model provider's predictions API (an async-callback lane). Their
# figures are third-party by nature and dated like the others; a gateway whose price the
# owner knows better sets `usd_per_image` in its configuration (config.CompatLaneConfig),
# which wins over the default here.

#: The price-table name of every OpenAI-compatible gateway lane without its own price.
COMPAT: Final = "compat"
#: Replicate's predictions API (an async-callback lane).
REPLICATE: Final = "replicate"

_GUIDES: Final = (
    "issue 20, quoting users' routing guides (3P): a gateway at about $0.05 per Nano Banana "
    "Pro image at any resolution"
)
_REPLICATE_SRC: Final = (
    "3P eachlabs.ai reseller listing of google/nano-banana-pro (1K/2K $0.15, 4K $0.30, "
    "updated 2026-06-01), UNVERIFIED against replicate.com"
)


@dataclass(frozen=True)
class FlatPriceEntry:
    """One model on one per-image-priced lane: USD per image by size tier."""

    model: str
    lane: str
    per_image: Mapping[str, Figure]


def _p(usd: float, source: str, note: str = "") -> Figure:
    return Figure(usd=usd, source=source, as_of=_FIELD_AS_OF, uncertain=True, note=note)


FLAT_PRICE_TABLE: Final[tuple[FlatPriceEntry, ...]] = (
    FlatPriceEntry(
        model="gemini-3-pro-image",
        lane=COMPAT,
        per_image={
            tier: _p(0.05, _GUIDES, note="a typical gateway; set usd_per_image for yours")
            for tier in ("1K", "2K", "4K")
        },
    ),
    FlatPriceEntry(
        model="gemini-3-pro-image",
        lane=REPLICATE,
        per_image={
            "1K": _p(0.15, _REPLICATE_SRC),
            "2K": _p(0.15, _REPLICATE_SRC),
            "4K": _p(0.30, _REPLICATE_SRC),
        },
    ),
)
