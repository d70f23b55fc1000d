"""What right-sizing saves, for the estimate (issue 21 point 3). Pure: the parser's tally
of right-sized lines (core/intake/rightsize.py) and the price book in, figures out.

A right-sized line is priced at the size intake chose for it and at the size it would
otherwise get: the model's default size, what a line without image_size is generated
at. The saving is the difference. The estimate also shows the cost at the model's most
expensive size, the habit right-sizing replaces ("4K to be safe"). The prompt costs the
same at every size, so these are the image (and thinking) tokens only; the estimate's
table above holds the whole cost of every line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bananabatch.core.catalog import model_spec
from bananabatch.core.intake import URGENT
from bananabatch.core.intake.rightsize import RightSizeTally
from bananabatch.core.pricing import Lane, PriceBook


@dataclass(frozen=True)
class SizedGroup:
    """Right-sized lines of one model, size and lane, with their per-image prices."""

    model: str
    image_size: str
    lane: Lane
    lines: int
    not_covered: int
    per_image_usd: float
    default_size: str
    default_per_image_usd: float
    largest_size: str
    largest_per_image_usd: float

    def to_doc(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "image_size": self.image_size,
            "lane": self.lane.value,
            "lines": self.lines,
            "not_covered": self.not_covered,
            "per_image_usd": round(self.per_image_usd, 6),
            "default_size": self.default_size,
            "default_per_image_usd": round(self.default_per_image_usd, 6),
            "largest_size": self.largest_size,
            "largest_per_image_usd": round(self.largest_per_image_usd, 6),
        }


@dataclass
class RightSizeSaving:
    groups: list[SizedGroup] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return sum(g.lines for g in self.groups)

    @property
    def not_covered(self) -> int:
        return sum(g.not_covered for g in self.groups)

    @property
    def usd(self) -> float:
        return sum(g.lines * g.per_image_usd for g in self.groups)

    @property
    def default_size_usd(self) -> float:
        return sum(g.lines * g.default_per_image_usd for g in self.groups)

    @property
    def largest_size_usd(self) -> float:
        return sum(g.lines * g.largest_per_image_usd for g in self.groups)

    def to_doc(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "not_covered": self.not_covered,
            "usd": round(self.usd, 6),
            "default_size_usd": round(self.default_size_usd, 6),
            "saved_vs_default_size_usd": round(self.default_size_usd - self.usd, 6),
            "largest_size_usd": round(self.largest_size_usd, 6),
            "saved_vs_largest_size_usd": round(self.largest_size_usd - self.usd, 6),
            "groups": [g.to_doc() for g in self.groups],
        }

    def text(self) -> list[str]:
        """The estimate's right-sizing section, a line each (none when no line was
        right-sized)."""
        if not self.groups:
            return []
        saved = self.default_size_usd - self.usd
        verb = "saves" if saved >= 0 else "costs"
        out = [
            f"Right-sizing: {self.lines:,} line(s) sized from display_size/max_edge: "
            f"${self.usd:,.4f} at the sizes chosen, ${self.default_size_usd:,.4f} at the "
            f"size they would otherwise get (the model's default): it {verb} "
            f"${abs(saved):,.4f}; at the largest size ${self.largest_size_usd:,.4f} "
            f"(${self.largest_size_usd - self.usd:,.4f} more). Image and thinking tokens "
            "only: the prompt costs the same at every size."
        ]
        for g in self.groups:
            out.append(
                f"  {g.model} {g.image_size} ({g.lane.value}): {g.lines:,} line(s) at "
                f"${g.per_image_usd:.4f} an image; default {g.default_size} "
                f"${g.default_per_image_usd:.4f}; largest {g.largest_size} "
                f"${g.largest_per_image_usd:.4f}"
            )
        if self.not_covered:
            out.append(
                f"  {self.not_covered:,} line(s) ask for more than their model's largest "
                "size: they get the largest"
            )
        return out


def right_size_saving(tally: RightSizeTally, prices: PriceBook) -> RightSizeSaving:
    """The saving of the tallied lines, one group per model, size and lane."""
    merged: dict[tuple[str, str, str | None, Lane], list[int]] = {}
    for kind, count in tally.counts.items():
        lane = Lane.STANDARD if kind.priority == URGENT else Lane.BATCH
        spec = model_spec(kind.model)
        size = kind.image_size or (spec.default_size if spec else "1K")
        slot = merged.setdefault((kind.model, size, kind.quality, lane), [0, 0])
        slot[0] += count
        slot[1] += 0 if kind.covers else count
    groups: list[SizedGroup] = []
    for (model, size, quality, lane), (lines, short) in sorted(merged.items()):
        spec = model_spec(model)
        sizes = (spec.image_sizes or (spec.default_size,)) if spec else (size,)

        def price(
            tier: str | None, model: str = model, lane: Lane = lane, quality: str | None = quality
        ) -> float:
            return prices.estimate_request(model, tier, lane, quality=quality)

        largest = max(sizes, key=price)
        groups.append(
            SizedGroup(
                model=model,
                image_size=size,
                lane=lane,
                lines=lines,
                not_covered=short,
                per_image_usd=price(size),
                default_size=spec.default_size if spec else size,
                default_per_image_usd=price(None),
                largest_size=largest,
                largest_per_image_usd=price(largest),
            )
        )
    return RightSizeSaving(groups)
