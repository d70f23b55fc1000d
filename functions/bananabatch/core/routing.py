"""Which lane serves a line: a pure function of the line, the configured lanes and their
dated prices (issue 20 point 2; DESIGN.md "Lanes and routing").

- urgent: the first configured synchronous lane that may serve the line (the owner lists
  them fastest first, BANANABATCH_SYNC_LANES); the others that may follow, in that order,
  for failover. No synchronous lane may serve it: batch, and the route says why.
- normal: batch, at half price.
- bulk: the cheapest lane the line may use. A lane is a candidate when it serves the
  line's model, can express the line (a gateway takes a prompt, not a native request, and
  no reference images), has a price for it (an unknown price never counts as zero) and,
  if it is a third party, the deployment and the line both allow third parties. Batch
  wins ties (first party, and no failover needed); the failover list is the candidates of
  the winner's kind cheaper than batch, cheapest first, configured order among equals,
  so a failover never costs more than batch would have.

Failover stays within a kind (sync or async): the runner of that kind takes the list.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Protocol

from bananabatch.config import (
    COMPAT_PREFIX,
    ENV_COMPAT_LANES,
    ENV_REPLICATE_USD_PER_IMAGE,
    GEMINI_STANDARD_LANE,
)
from bananabatch.core.catalog import (
    REPLICATE_NAMES,
    Provider,
    canonical_model,
    model_spec,
    price_tier,
    provider_of,
)
from bananabatch.core.intake.rules import BULK, URGENT
from bananabatch.core.price_table import COMPAT, FLAT_PRICE_TABLE, REPLICATE
from bananabatch.core.pricing import Lane, PriceBook
from bananabatch.errors import PriceUnknown

if TYPE_CHECKING:
    from bananabatch.config import Settings

#: The one batch lane's name (the model's batch provider: Gemini, Vertex or OpenAI).
BATCH_LANE: Final = "batch"


class LaneKind(StrEnum):
    BATCH = "batch"
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True)
class LaneOffer:
    """A configured lane as routing sees it."""

    name: str  # "batch", "gemini-standard", "compat:<label>", "replicate"
    kind: LaneKind
    third_party: bool = False
    # Catalog model ids it serves; None: every model of `provider`.
    models: frozenset[str] | None = None
    provider: Provider | None = None
    takes_native: bool = False
    takes_references: bool = False

    def serves(self, model: str) -> bool:
        model = canonical_model(model)
        if self.models is not None:
            return model in self.models
        return self.provider is None or provider_of(model) is self.provider


@dataclass(frozen=True)
class LineTraits:
    """What routing reads of a line (an AcceptedLine or a LineShape has each of these)."""

    model: str
    priority: str
    allow_third_party: bool = False
    native: bool = False
    has_references: bool = False


@dataclass(frozen=True)
class Route:
    kind: LaneKind
    # The lanes to try, in order; ("batch",) for batch.
    lanes: tuple[str, ...]
    # The first lane's price for the line (what the plan counts).
    usd: float
    # Why, in a few words, when the line did not get what its priority asks for.
    note: str = ""

    @property
    def lane(self) -> str:
        return self.lanes[0]


#: A line's price on a lane, or None when the lane has no price for it.
PriceOf = Callable[[LaneOffer], float | None]


def route(
    line: LineTraits,
    lanes: Sequence[LaneOffer],
    price_of: PriceOf,
    *,
    third_party_allowed: bool,
) -> Route:
    """The route of one line (module docstring). `lanes` in configured order; `price_of`
    the line's price on a lane; `third_party_allowed` the deployment's switch."""
    batch = next((lane for lane in lanes if lane.kind is LaneKind.BATCH), None)
    batch_usd = price_of(batch) if batch is not None else None
    may_use = [
        lane
        for lane in lanes
        if lane.kind is not LaneKind.BATCH and _may_use(line, lane, third_party_allowed)
    ]
    priced = [(lane, price) for lane in may_use if (price := price_of(lane)) is not None]
    batch_route = Route(LaneKind.BATCH, (BATCH_LANE,), batch_usd if batch_usd is not None else 0.0)
    if line.priority == URGENT:
        sync = [(lane, price) for lane, price in priced if lane.kind is LaneKind.SYNC]
        if not sync:
            return _noted(batch_route, _no_sync_note(line, lanes, third_party_allowed))
        return Route(LaneKind.SYNC, tuple(lane.name for lane, _ in sync), sync[0][1])
    if line.priority != BULK or batch_usd is None:
        return batch_route
    cheaper = [(at, lane, price) for at, (lane, price) in enumerate(priced) if price < batch_usd]
    if not cheaper:
        return batch_route
    cheaper.sort(key=lambda row: (row[2], row[0]))
    kind = cheaper[0][1].kind
    same_kind = [(lane, price) for _, lane, price in cheaper if lane.kind is kind]
    return Route(kind, tuple(lane.name for lane, _ in same_kind), same_kind[0][1])


def _may_use(line: LineTraits, lane: LaneOffer, third_party_allowed: bool) -> bool:
    if not lane.serves(line.model):
        return False
    if lane.third_party and not (third_party_allowed and line.allow_third_party):
        return False
    if line.native and not lane.takes_native:
        return False
    return not (line.has_references and not lane.takes_references)


def _noted(route_: Route, note: str) -> Route:
    return Route(route_.kind, route_.lanes, route_.usd, note)


def _no_sync_note(line: LineTraits, lanes: Sequence[LaneOffer], third_party_allowed: bool) -> str:
    sync = [lane for lane in lanes if lane.kind is LaneKind.SYNC]
    if not any(lane.serves(line.model) for lane in sync):
        return f"no synchronous lane serves {canonical_model(line.model)}: sent to batch"
    if any(lane.third_party for lane in sync if lane.serves(line.model)) and not (
        third_party_allowed and line.allow_third_party
    ):
        return "the synchronous lanes for this model are third parties, not allowed: batch"
    return "no synchronous lane can take this line (native or reference images): batch"


# --- the configured lanes ---------------------------------------------------------------------

GEMINI_STANDARD: Final = GEMINI_STANDARD_LANE


def offers(
    sync_lanes: Sequence[str],
    async_lanes: Sequence[str],
    compat: Mapping[str, tuple[frozenset[str], bool]],
    async_models: Mapping[str, frozenset[str]],
) -> tuple[LaneOffer, ...]:
    """The lanes of a deployment, batch first, then the sync lanes and the async lanes in
    configured order. `compat` gives each gateway label its models and whether it is a
    third party; `async_models` each async provider's models (hosted-model providers are
    third parties)."""
    out = [LaneOffer(BATCH_LANE, LaneKind.BATCH)]
    for name in sync_lanes:
        if name == GEMINI_STANDARD:
            out.append(
                LaneOffer(
                    name,
                    LaneKind.SYNC,
                    provider=Provider.GEMINI,
                    takes_native=True,
                    takes_references=True,
                )
            )
            continue
        models, third_party = compat[name.removeprefix(COMPAT_PREFIX)]
        out.append(LaneOffer(name, LaneKind.SYNC, third_party=third_party, models=models))
    for name in async_lanes:
        out.append(
            LaneOffer(
                name,
                LaneKind.ASYNC,
                third_party=True,
                models=async_models.get(name, frozenset()),
                # Its predictions read images by public URL, which our gs:// references
                # are not: a line with references stays on Google's lanes.
                takes_references=False,
            )
        )
    return tuple(out)


# --- prices and the router of a deployment ----------------------------------------------------


def flat_price(table_lane: str, model: str, tier: str) -> float | None:
    """A per-image-priced lane's dated price for a model at a size tier (price_table.py),
    or None when the table has none."""
    model = canonical_model(model)
    for entry in FLAT_PRICE_TABLE:
        if entry.lane == table_lane and entry.model == model:
            figure = entry.per_image.get(tier)
            return None if figure is None else figure.usd
    return None


def flat_models(table_lane: str) -> frozenset[str]:
    """The models a per-image-priced lane has prices for."""
    return frozenset(entry.model for entry in FLAT_PRICE_TABLE if entry.lane == table_lane)


#: A deployment's own price per image for a lane: one for every size, or by size tier.
OwnPrice = float | Mapping[str, float]


def own_price(own: OwnPrice | None, tier: str) -> float | None:
    """The deployment's price at a size tier, or None where it sets none (the dated
    table's figure applies there)."""
    if own is None or not isinstance(own, Mapping):
        return own
    return own.get(tier)


def _async_own_prices(settings: Settings) -> dict[str, OwnPrice]:
    """The async lanes' prices the deployment sets, by lane name."""
    own = settings.replicate_usd_per_image
    return {} if own is None else {REPLICATE: own}


def _async_models(settings: Settings, name: str) -> frozenset[str]:
    """The models an async lane is offered for: those with a dated price, and, when the
    deployment sets its own price, every model the lane knows a name for."""
    models = flat_models(name)
    if name == REPLICATE and settings.replicate_usd_per_image is not None:
        models |= frozenset(settings.replicate_models or REPLICATE_NAMES)
    return models


class Routable(Protocol):
    """An AcceptedLine or a LineShape: what the router reads."""

    @property
    def model(self) -> str: ...
    @property
    def image_size(self) -> str | None: ...
    @property
    def quality(self) -> str | None: ...
    @property
    def priority(self) -> str: ...
    @property
    def allow_third_party(self) -> bool: ...


class Router:
    """route() for one deployment: its lanes, the price book and the gateways' own prices.
    Remembers each distinct answer (a file has a handful of shapes)."""

    def __init__(
        self,
        lanes: Sequence[LaneOffer],
        book: PriceBook,
        *,
        third_party_allowed: bool,
        gateway_usd: Mapping[str, float | None] | None = None,
        async_usd: Mapping[str, OwnPrice] | None = None,
    ) -> None:
        self.lanes = tuple(lanes)
        self.book = book
        self.third_party_allowed = third_party_allowed
        self._gateway_usd = dict(gateway_usd or {})
        self._async_usd = dict(async_usd or {})
        self._memo: dict[tuple[object, ...], Route] = {}

    def price(
        self, lane: LaneOffer, model: str, size: str | None, quality: str | None
    ) -> float | None:
        """One image of this model and size on the lane (prompt tokens aside)."""
        try:
            if lane.kind is LaneKind.BATCH:
                return self.book.estimate_request(model, size, Lane.BATCH, quality=quality)
            if lane.name == GEMINI_STANDARD:
                return self.book.estimate_request(model, size, Lane.STANDARD, quality=quality)
        except PriceUnknown:
            return None
        spec = model_spec(model)
        tier = price_tier(spec, size, quality) if spec else (size or "1K")
        if lane.name.startswith(COMPAT_PREFIX):
            own = self._gateway_usd.get(lane.name.removeprefix(COMPAT_PREFIX))
            return own if own is not None else flat_price(COMPAT, model, tier)
        set_here = own_price(self._async_usd.get(lane.name), tier)
        return set_here if set_here is not None else flat_price(lane.name, model, tier)

    def route(self, line: Routable, *, native: bool = False, has_references: bool = False) -> Route:
        model, size, quality = line.model, line.image_size, line.quality
        traits = LineTraits(
            model=model,
            priority=line.priority,
            allow_third_party=line.allow_third_party,
            native=native,
            has_references=has_references,
        )
        memo_key = (traits, size, quality)
        found = self._memo.get(memo_key)
        if found is None:
            found = self._memo[memo_key] = route(
                traits,
                self.lanes,
                lambda lane: self.price(lane, model, size, quality),
                third_party_allowed=self.third_party_allowed,
            )
        return found


def router_for(settings: Settings, book: PriceBook, *, shut: Collection[str] = ()) -> Router:
    """The router of a deployment's settings. The async lanes named in `shut` (their
    breaker open) are not offered: a bulk line goes to the next cheapest lane, batch at
    worst, instead of waiting for a provider that is down."""
    compat = {
        label: (frozenset(gateway.models), gateway.third_party)
        for label, gateway in settings.compat_lanes.items()
    }
    open_async = [name for name in settings.async_lanes if name not in shut]
    lanes = offers(
        settings.sync_lanes,
        open_async,
        compat,
        {name: _async_models(settings, name) for name in open_async},
    )
    return Router(
        lanes,
        book,
        third_party_allowed=settings.allow_third_party,
        gateway_usd={label: g.usd_per_image for label, g in settings.compat_lanes.items()},
        async_usd=_async_own_prices(settings),
    )


def _usd_text(own: OwnPrice) -> str:
    if isinstance(own, Mapping):
        return ", ".join(f"{tier} ${usd:.4f}" for tier, usd in own.items())
    return f"${own:.4f}"


def _table_as_of(table_lane: str) -> str:
    entries = [e for e in FLAT_PRICE_TABLE if e.lane == table_lane]
    return min((f.as_of for e in entries for f in e.per_image.values()), default="?")


def price_source(settings: Settings, lane_name: str) -> str | None:
    """Where a per-image-priced lane's price comes from, in a few words: the deployment's
    own price (and the setting that holds it) or the price table's dated figure; None for
    the lanes priced by token (batch, Gemini's standard API)."""
    if lane_name.startswith(COMPAT_PREFIX):
        gateway = settings.compat_lanes.get(lane_name.removeprefix(COMPAT_PREFIX))
        if gateway is not None and gateway.usd_per_image is not None:
            return (
                f"deployment price ${gateway.usd_per_image:.4f} per image "
                f"(usd_per_image in {ENV_COMPAT_LANES})"
            )
        return f"dated table: a typical gateway's figure, read {_table_as_of(COMPAT)}"
    if lane_name in settings.async_lanes:
        own = _async_own_prices(settings).get(lane_name)
        table = f"dated table, read {_table_as_of(lane_name)}"
        if own is None:
            return table
        setting = f"({ENV_REPLICATE_USD_PER_IMAGE})"
        if isinstance(own, Mapping) and not {"1K", "2K", "4K"} <= set(own):
            return f"deployment price {_usd_text(own)} {setting}; other sizes: {table}"
        return f"deployment price {_usd_text(own)} per image {setting}"
    return None


def flat_price_warnings(lanes_used: Sequence[str], settings: Settings) -> list[str]:
    """What an estimate must say about the per-image prices of the lanes it used: a
    gateway without its own usd_per_image is priced from the table's third-party figure."""
    out: list[str] = []
    for name in lanes_used:
        label = name.removeprefix(COMPAT_PREFIX)
        gateway = settings.compat_lanes.get(label) if name.startswith(COMPAT_PREFIX) else None
        if gateway is not None and gateway.usd_per_image is None:
            out.append(
                f"{name}: priced at the table's typical gateway figure (third-party, uncertain, "
                f"read {_table_as_of(COMPAT)}); set usd_per_image in BANANABATCH_COMPAT_LANES "
                "to your price"
            )
        elif name == REPLICATE and settings.replicate_usd_per_image is None:
            out.append(
                f"{name}: priced at the table's dated figure (third-party, uncertain, read "
                f"{_table_as_of(REPLICATE)}); set {ENV_REPLICATE_USD_PER_IMAGE} to your price"
            )
    return out
