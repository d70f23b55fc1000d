"""Prices: estimates before spending, actual cost from usageMetadata afterwards. Pure.

The figures live in price_table.py; this module only looks them up and does arithmetic. An
unknown model, lane or size tier raises PriceUnknown: a missing price never counts as 0.

Overrides (`BANANABATCH_PRICE_OVERRIDES`, JSON) adjust the table for negotiated prices:

    {"gemini-3-pro-image": {"batch_multiplier": 0.8},
     "*": {"multiplier": 0.95},
     "gemini-3.1-flash-image": {"batch.image_output_per_1m": 25.0, "batch.per_image.1K": 0.03}}

The outer key is a model id (or alias) or "*" for every model. Inner keys:
`multiplier` (both lanes), `standard_multiplier`, `batch_multiplier` scale every figure of
that model and lane (the "*" and per-model factors multiply together);
`<lane>.<figure>` sets one figure outright in USD, where figure is `image_output_per_1m`,
`input_per_1m`, `text_output_per_1m` or `per_image.<tier>`. An outright value is final:
multipliers do not apply to it, and a per-model one beats a "*" one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from bananabatch.core.catalog import (
    INPUT_IMAGE_TOKENS,
    canonical_model,
    model_spec,
    price_tier,
)
from bananabatch.core.price_table import PRICE_TABLE, Figure, PriceEntry
from bananabatch.core.results import Usage
from bananabatch.errors import ConfigError, PriceUnknown

if TYPE_CHECKING:
    from bananabatch.core.intake import AcceptedLine

PER_MILLION: Final = 1_000_000
ALL_MODELS: Final = "*"
_TOKEN_FIGURES: Final = ("image_output_per_1m", "input_per_1m", "text_output_per_1m")
_MULTIPLIERS: Final = ("multiplier", "standard_multiplier", "batch_multiplier")
_NO_OVERRIDES: Final[Mapping[str, Mapping[str, float]]] = MappingProxyType({})


class Lane(StrEnum):
    STANDARD = "standard"
    BATCH = "batch"


@dataclass(frozen=True)
class PriceSource:
    """One figure as the book uses it, for display next to an estimate."""

    model: str
    lane: Lane
    figure: str
    usd: float
    source: str
    as_of: str
    uncertain: bool
    note: str


def estimate_prompt_tokens(text: str) -> int:
    """About four characters per token: an approximation for estimates only (the real count
    comes back in usageMetadata)."""
    return math.ceil(len(text) / 4)


def line_prompt_tokens(line: AcceptedLine) -> int:
    """Input tokens of an accepted line, counted the way usageMetadata counts them."""
    return math.ceil(line.prompt_chars / 4) + len(line.reference_images) * INPUT_IMAGE_TOKENS


class PriceBook:
    """The price table with overrides applied, answering in USD."""

    def __init__(
        self,
        entries: Iterable[PriceEntry] = PRICE_TABLE,
        overrides: Mapping[str, Mapping[str, float]] = _NO_OVERRIDES,
    ) -> None:
        self._entries: dict[tuple[str, Lane], PriceEntry] = {}
        for entry in entries:
            self._entries[(canonical_model(entry.model), Lane(entry.lane))] = entry
        self._models = sorted({model for model, _ in self._entries})
        self._factor: dict[tuple[str, Lane], float] = {}
        self._outright: dict[tuple[str, Lane, str], float] = {}
        self._load_overrides(overrides)

    # --- lookups ---------------------------------------------------------------------------

    def image_price(
        self, model: str, image_size: str | None, lane: Lane, *, quality: str | None = None
    ) -> float:
        """The published per-image price for the model's (effective) tier: its size, and
        for a gpt-image model its quality."""
        name, entry = self._entry(model, lane)
        spec = model_spec(name)
        tier = price_tier(spec, image_size, quality) if spec else (image_size or "1K")
        figure = entry.per_image.get(tier)
        if figure is None:
            raise PriceUnknown(
                f"no per-image price for {name} at size {tier!r} in the {entry.lane} lane; "
                f"known sizes: {', '.join(entry.per_image) or 'none'}"
            )
        return self._value(name, Lane(lane), f"per_image.{tier}", figure)

    def token_rates(self, model: str, lane: Lane) -> tuple[float, float, float]:
        """(image output, input, text output) in USD per 1M tokens."""
        name, entry = self._entry(model, lane)
        lane = Lane(lane)
        return (
            self._value(name, lane, "image_output_per_1m", entry.image_output_per_1m),
            self._value(name, lane, "input_per_1m", entry.input_per_1m),
            self._value(name, lane, "text_output_per_1m", entry.text_output_per_1m),
        )

    def estimate_request(
        self,
        model: str,
        image_size: str | None,
        lane: Lane,
        *,
        prompt_tokens: int = 0,
        quality: str | None = None,
    ) -> float:
        """Expected cost of one request: the catalog's image tokens at the image rate, its
        typical text and thinking tokens at the text rate, the prompt at the input rate."""
        name, _ = self._entry(model, lane)
        spec = model_spec(name)
        if spec is None:
            raise PriceUnknown(f"no token counts for {name} in the model catalog")
        tier = price_tier(spec, image_size, quality)
        image_tokens = spec.image_tokens.get(tier)
        if image_tokens is None:
            raise PriceUnknown(
                f"no image token count for {name} at size {tier!r}; "
                f"known sizes: {', '.join(spec.image_tokens)}"
            )
        image_rate, input_rate, text_rate = self.token_rates(name, lane)
        text_tokens = spec.typical_text_tokens + spec.typical_thought_tokens
        return (
            image_tokens * image_rate + text_tokens * text_rate + prompt_tokens * input_rate
        ) / PER_MILLION

    def estimate_line(self, line: AcceptedLine, lane: Lane) -> float:
        """estimate_request for an accepted input line: prompt tokens from its whole text,
        plus the fixed input-token count of each reference image."""
        return self.estimate_request(
            line.model,
            line.image_size,
            lane,
            prompt_tokens=line_prompt_tokens(line),
            quality=line.quality,
        )

    def cost_of_usage(self, model: str, lane: Lane, usage: Usage) -> float:
        """What a finished request cost, from its usageMetadata."""
        image_rate, input_rate, text_rate = self.token_rates(model, lane)
        return (
            usage.image_output_tokens * image_rate
            + (usage.text_output_tokens + usage.thought_tokens) * text_rate
            + usage.prompt_tokens * input_rate
        ) / PER_MILLION

    def sources(self, model: str) -> tuple[PriceSource, ...]:
        """Every figure for a model in both lanes, with date and source, overrides applied."""
        name = canonical_model(model)
        out: list[PriceSource] = []
        for lane in Lane:
            entry = self._entries.get((name, lane))
            if entry is None:
                continue
            figures: list[tuple[str, Figure]] = [
                (figure, getattr(entry, figure)) for figure in _TOKEN_FIGURES
            ]
            figures += [(f"per_image.{tier}", fig) for tier, fig in entry.per_image.items()]
            for figure_name, figure in figures:
                out.append(self._source(name, lane, figure_name, figure))
        if not out:
            raise PriceUnknown(self._unknown_message(model))
        return tuple(out)

    # --- internals -------------------------------------------------------------------------

    def _entry(self, model: str, lane: Lane) -> tuple[str, PriceEntry]:
        name = canonical_model(model)
        try:
            lane = Lane(lane)
        except ValueError:
            raise PriceUnknown(
                f"unknown lane {lane!r}; expected one of {', '.join(Lane)}"
            ) from None
        entry = self._entries.get((name, lane))
        if entry is None:
            raise PriceUnknown(self._unknown_message(model, lane))
        return name, entry

    def _unknown_message(self, model: str, lane: Lane | None = None) -> str:
        where = f" in the {lane} lane" if lane else ""
        return f"no price for model {model!r}{where}; priced models: {', '.join(self._models)}"

    def _value(self, model: str, lane: Lane, figure_name: str, figure: Figure) -> float:
        outright = self._outright.get((model, lane, figure_name))
        if outright is not None:
            return outright
        return figure.usd * self._factor.get((model, lane), 1.0)

    def _source(self, model: str, lane: Lane, figure_name: str, figure: Figure) -> PriceSource:
        usd = self._value(model, lane, figure_name, figure)
        source, as_of = figure.source, figure.as_of
        if (model, lane, figure_name) in self._outright:
            source, as_of = "price override (BANANABATCH_PRICE_OVERRIDES)", "configured"
        elif self._factor.get((model, lane), 1.0) != 1.0:
            source = f"{source}; × {self._factor[(model, lane)]:g} by price override"
        return PriceSource(
            model=model,
            lane=lane,
            figure=figure_name,
            usd=usd,
            source=source,
            as_of=as_of,
            uncertain=figure.uncertain,
            note=figure.note,
        )

    def _load_overrides(self, overrides: Mapping[str, Mapping[str, float]]) -> None:
        # "*" first, so that per-model outright values replace "*" ones.
        ordered = sorted(overrides.items(), key=lambda item: item[0] != ALL_MODELS)
        for model_key, values in ordered:
            if model_key == ALL_MODELS:
                targets = list(self._models)
            else:
                name = canonical_model(model_key)
                if name not in self._models:
                    raise ConfigError(
                        f"price override for unknown model {model_key!r}; "
                        f"priced models: {', '.join(self._models)} (or '*')"
                    )
                targets = [name]
            if not isinstance(values, Mapping):
                raise ConfigError(
                    f"price override for {model_key!r}: expected an object of numbers; "
                    f"found {values!r}"
                )
            for field, value in values.items():
                number = _number(model_key, field, value)
                # A "*" figure applies wherever the model has it (not every model has every
                # size tier); it must fit at least one.
                applied = [self._apply(name, field, number) for name in targets]
                if not any(applied):
                    raise ConfigError(self._bad_key_message(model_key, targets[0], field))

    def _apply(self, model: str, field: str, value: float) -> bool:
        if field in _MULTIPLIERS:
            lanes = list(Lane) if field == "multiplier" else [Lane(field.split("_")[0])]
            for lane in lanes:
                self._factor[(model, lane)] = self._factor.get((model, lane), 1.0) * value
            return True
        lane_text, _, figure = field.partition(".")
        target = Lane(lane_text) if lane_text in tuple(Lane) else None
        entry = self._entries.get((model, target)) if target is not None else None
        valid_figure = figure in _TOKEN_FIGURES or (
            figure.startswith("per_image.")
            and entry is not None
            and figure.removeprefix("per_image.") in entry.per_image
        )
        if target is None or entry is None or not valid_figure:
            return False
        self._outright[(model, target, figure)] = value
        return True

    def _bad_key_message(self, model_key: str, model: str, field: str) -> str:
        entry = self._entries.get((model, Lane.STANDARD)) or self._entries.get((model, Lane.BATCH))
        tiers = ", ".join(f"per_image.{t}" for t in entry.per_image) if entry else ""
        return (
            f"price override for {model_key!r}: unknown key {field!r}; expected one of "
            f"{', '.join(_MULTIPLIERS)}, or <standard|batch>.<figure> with figure one of "
            f"{', '.join(_TOKEN_FIGURES)}{', ' + tiers if tiers else ''}"
        )


class LinePrices:
    """PriceBook.estimate_request remembered per (model, size, lane, prompt tokens).

    An estimate depends on nothing else, and a file's lines share a few models and sizes
    and a few thousand prompt lengths at most, so a million-line intake asks the book a few
    thousand times instead of twice per line. The answers are the book's own floats, so
    sums over them are exactly what asking per line would give.
    """

    # A bound on the remembered answers, so no input can grow this without limit.
    MAX_ENTRIES: Final = 100_000

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self._cache: dict[tuple[str, str | None, Lane, int, str | None], float] = {}

    def request(
        self,
        model: str,
        image_size: str | None,
        lane: Lane,
        prompt_tokens: int,
        quality: str | None = None,
    ) -> float:
        key = (model, image_size, lane, prompt_tokens, quality)
        price = self._cache.get(key)
        if price is None:
            price = self.book.estimate_request(
                model, image_size, lane, prompt_tokens=prompt_tokens, quality=quality
            )
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = price
        return price

    def line(self, line: AcceptedLine, lane: Lane) -> float:
        """PriceBook.estimate_line, remembered."""
        return self.request(
            line.model, line.image_size, lane, line_prompt_tokens(line), line.quality
        )


def price_warnings(
    book: PriceBook, models: Iterable[str], today: date, max_age_days: int
) -> list[str]:
    """What an estimate for these models must say about its prices: figures read longer
    than `max_age_days` before `today`, and figures that are uncertain. One line per model;
    overridden (configured) figures are the owner's and never stale."""
    out: list[str] = []
    for model in sorted({canonical_model(m) for m in models}):
        try:
            sources = book.sources(model)
        except PriceUnknown:
            continue
        dated = [s for s in sources if _ISO_DAY.fullmatch(s.as_of)]
        if dated:
            oldest = min(date.fromisoformat(s.as_of) for s in dated)
            age = (today - oldest).days
            if age > max_age_days:
                out.append(
                    f"{model}: prices read on {oldest.isoformat()}, {age} days ago (older than "
                    f"{max_age_days} days, BANANABATCH_PRICE_MAX_AGE_DAYS); check the pricing "
                    "page and update core/price_table.py or BANANABATCH_PRICE_OVERRIDES"
                )
        uncertain = sorted({f"{s.lane}.{s.figure}" for s in sources if s.uncertain})
        if uncertain:
            out.append(f"{model}: uncertain price figures: {', '.join(uncertain)}")
    return out


_ISO_DAY: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _number(model_key: str, field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"price override {model_key!r}.{field!r}: expected a number; found {value!r}"
        )
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ConfigError(
            f"price override {model_key!r}.{field!r}: expected a finite number >= 0; "
            f"found {value!r}"
        )
    return number
