"""Right-sizing: a simple line may say how large the image will be shown (`display_size`,
e.g. "600x600", or `max_edge`, its longest side in pixels) instead of naming a size tier,
and intake picks the tier and aspect ratio for it (issue 21 point 3).

Pure. The choice, for the line's model on its deployment (rules.ModelRules: the Vertex
lane narrows the sizes):

- aspect ratio: the line's own `aspect_ratio` if it wrote one, else (display_size) the
  model's ratio closest to the display's, by the distance of the logarithms of the ratios
  (so 2:1 is as far from 1:1 as 1:2 is); ties go to the ratio listed first in the catalog;
- size: the cheapest tier whose image covers the display (both sides, or the longest side
  for max_edge) at that ratio; where a larger tier costs the same (1K and 2K on Pro), the
  larger one. A display no tier covers gets the largest tier (the line is accepted: it is
  the best the model makes, and the tally counts it as not covered).

Pixel sizes come from catalog.image_dimensions, prices from price_table's published batch
figures (not the deployment's overrides, so a line means the same on every deployment),
tiers from the catalog: nothing about a model is written here.

A line with both `image_size` and one of these, or with both of these, is rejected: two
answers to one question. A gpt-image model has one size per ratio, so only the ratio is
chosen (its size follows from it, as for any gpt-image line).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Final, NamedTuple

from bananabatch.core.catalog import Provider, image_dimensions, model_spec
from bananabatch.core.intake.rules import ModelRules
from bananabatch.core.intake.text import Reject, show
from bananabatch.core.price_table import BATCH, PRICE_TABLE

DISPLAY_SIZE: Final = "display_size"
MAX_EDGE: Final = "max_edge"
#: Beyond any display, and small enough that the arithmetic stays exact.
MAX_DISPLAY_PIXELS: Final = 65_536
_DISPLAY: Final = re.compile(r"\s*([0-9]{1,6})\s*[xX×]\s*([0-9]{1,6})\s*")
_DISPLAY_FORM: Final = (
    f'expected WIDTHxHEIGHT in pixels, e.g. "600x600", each side 1 to {MAX_DISPLAY_PIXELS}'
)


class Choice(NamedTuple):
    """What a right-sized line is generated at: its aspect ratio, its size tier (None for a
    gpt-image model, whose size follows from the ratio) and whether that image covers the
    display."""

    aspect_ratio: str | None
    image_size: str | None
    covers: bool


def parse_display_size(text: str) -> tuple[int, int]:
    """(width, height) of a display size as written, or Reject naming display_size."""
    m = _DISPLAY.fullmatch(text)
    if m is not None:
        width, height = int(m.group(1)), int(m.group(2))
        if 0 < width <= MAX_DISPLAY_PIXELS and 0 < height <= MAX_DISPLAY_PIXELS:
            return width, height
    raise Reject(DISPLAY_SIZE, f"{_DISPLAY_FORM}; found {show(text)}")


def check_max_edge(edge: int) -> int:
    if not 0 < edge <= MAX_DISPLAY_PIXELS:
        raise Reject(MAX_EDGE, f"expected 1 to {MAX_DISPLAY_PIXELS} pixels; found {edge}")
    return edge


def right_size(
    rules: ModelRules,
    aspect: str | None,
    image_size: str | None,
    display_size: str | None,
    max_edge: int | None,
) -> Choice:
    """The rule: the choice for a line that wrote display_size or max_edge (at least one),
    after its aspect ratio and size passed their own checks."""
    if display_size is not None and max_edge is not None:
        raise Reject(
            MAX_EDGE,
            f"expected display_size or max_edge, not both; found display_size "
            f"{show(display_size)} and max_edge {max_edge}",
        )
    given = DISPLAY_SIZE if display_size is not None else MAX_EDGE
    if image_size is not None:
        shown = show(display_size) if display_size is not None else str(max_edge)
        raise Reject(
            given,
            f"expected image_size or {given}, not both ({given} picks the size); found "
            f"image_size {show(image_size)} and {given} {shown}",
        )
    display = parse_display_size(display_size) if display_size is not None else None
    edge = check_max_edge(max_edge) if max_edge is not None else None
    return choose(rules.spec.model_id, _ordered(rules), aspect, display, edge)


def _ordered(rules: ModelRules) -> tuple[str, ...]:
    """The line's sizes in the catalog's order (small to large)."""
    return tuple(size for size in rules.spec.image_sizes if size in rules.sizes)


# Bounded: a hostile file may write a different display size on every line.
@lru_cache(maxsize=4096)
def choose(
    model: str,
    sizes: tuple[str, ...],
    aspect: str | None,
    display: tuple[int, int] | None,
    max_edge: int | None,
) -> Choice:
    """The aspect ratio and size tier for a display (or a longest side) on `model`, among
    `sizes` (the tiers this line may use, small to large)."""
    spec = model_spec(model)
    if spec is None:
        raise AssertionError(f"{model} is not in the catalog; intake checked it")
    if aspect is None and display is not None:
        aspect = closest_ratio(spec.aspect_ratios, display)
    if spec.provider is Provider.OPENAI:
        pixel_size = spec.size_by_ratio.get(aspect or "", spec.default_size)
        width, height = (int(side) for side in pixel_size.split("x"))
        return Choice(aspect, None, _covers((width, height), display, max_edge))
    if not sizes:
        # A single-size model: nothing to choose but the ratio.
        dims = image_dimensions(aspect, spec.default_size)
        return Choice(aspect, None, _covers(dims, display, max_edge))
    prices = tier_prices(spec.model_id)
    covering = [s for s in sizes if _covers(image_dimensions(aspect, s), display, max_edge)]
    if not covering:
        return Choice(aspect, sizes[-1], False)
    # The cheapest covering tier; of the covering tiers that cost that much, the largest
    # (a larger tier covers whatever a smaller one does). An unpriced tier is never cheaper.
    cheapest = min(prices.get(s, math.inf) for s in covering)
    if math.isinf(cheapest):
        return Choice(aspect, covering[0], True)
    best = [s for s in covering if prices.get(s, math.inf) == cheapest][-1]
    return Choice(aspect, best, True)


def _covers(dims: tuple[int, int], display: tuple[int, int] | None, max_edge: int | None) -> bool:
    width, height = dims
    if display is not None:
        return width >= display[0] and height >= display[1]
    return max(width, height) >= (max_edge or 0)


def closest_ratio(ratios: tuple[str, ...], display: tuple[int, int]) -> str:
    """The ratio of `ratios` closest to the display's; the first listed on a tie."""
    target = math.log(display[0] / display[1])
    return min(ratios, key=lambda ratio: abs(_log_ratio(ratio) - target))


def _log_ratio(ratio: str) -> float:
    width, _, height = ratio.partition(":")
    return math.log(int(width) / int(height))


@cache
def tier_prices(model: str) -> Mapping[str, float]:
    """The model's published batch price per image, by size tier."""
    for entry in PRICE_TABLE:
        if entry.model == model and entry.lane == BATCH:
            return {tier: figure.usd for tier, figure in entry.per_image.items()}
    return {}


# --- the tally ------------------------------------------------------------------------------


class Sized(NamedTuple):
    """Right-sized lines of one kind, as the tally counts them: the model, the size they
    are generated at (gpt-image: the pixel size and the quality), their priority and
    whether that size covers the display."""

    model: str
    image_size: str | None
    quality: str | None
    priority: str
    covers: bool


@dataclass
class RightSizeTally:
    """How many accepted lines were right-sized, of each kind: what the estimate's
    right-sizing section is made of. Bounded whatever the file: one count per kind."""

    counts: dict[Sized, int] = field(default_factory=dict)

    def add(
        self, model: str, image_size: str | None, quality: str | None, priority: str, covers: bool
    ) -> None:
        kind = Sized(model, image_size, quality, priority, covers)
        self.counts[kind] = self.counts.get(kind, 0) + 1

    @property
    def lines(self) -> int:
        return sum(self.counts.values())
