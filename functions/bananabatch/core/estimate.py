"""What a file will cost, before anything is spent. Pure: the caller hands in parsed lines,
a way to ask whether a request is already in the dedup cache, and the item counts of
earlier finished jobs.

For each model and size tier the estimate gives three figures:
- standard: every accepted line at the synchronous (standard) price;
- batch: what bananabatch would charge without dedup, each line at the price of the lane
  the routing sends it to (batch lines at the batch price, urgent lines at the standard
  price of the synchronous API, bulk lines at their cheapest lane's);
- after dedup: the same, minus lines that repeat an earlier line of the file or whose
  request already has an image in the cache (those are copied, not paid).

The hybrid plan puts the same lines per lane next to all of them at the standard price
and all of them in batch, with the saving.

The expected cost per accepted image corrects the price for what earlier jobs saw:
price × (1 + regeneration rate) ÷ accept rate, where the regeneration rate is the share of
attempted items that failed (and are re-run) and the accept rate is the share that were
not blocked by safety filters (a blocked image is paid and never delivered).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bananabatch.core.catalog import model_spec, price_tier
from bananabatch.core.intake import URGENT, AcceptedLine, LineShape, RejectedLine, content_hash
from bananabatch.core.pricing import Lane, LinePrices, PriceBook
from bananabatch.core.rightsize_saving import RightSizeSaving
from bananabatch.core.routing import BATCH_LANE, GEMINI_STANDARD, LaneKind, Route, Router
from bananabatch.core.states import ItemState

CACHE_OFF_VALUES: Final = frozenset({"off", "false", "no", "0"})


def lane_of(line: AcceptedLine | LineShape) -> Lane:
    """Urgent lines go through the synchronous API at the standard price (a LineShape is
    every line of its shape)."""
    return Lane.STANDARD if line.options.priority == URGENT else Lane.BATCH


def size_tier(line: AcceptedLine) -> str:
    """The tier a line is priced at: its size (with its quality, for gpt-image models)."""
    spec = model_spec(line.model)
    return price_tier(spec, line.image_size, line.quality) if spec else (line.image_size or "1K")


@dataclass(frozen=True)
class ObservedRates:
    """Outcomes of items in earlier finished jobs (cached and rejected items excluded)."""

    jobs: int
    attempted: int
    blocked: int
    failed: int

    @property
    def block_rate(self) -> float:
        return self.blocked / self.attempted if self.attempted else 0.0

    @property
    def regeneration_rate(self) -> float:
        return self.failed / self.attempted if self.attempted else 0.0

    @property
    def accept_rate(self) -> float:
        return 1.0 - self.block_rate

    def to_doc(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "attempted_items": self.attempted,
            "block_rate": round(self.block_rate, 6),
            "regeneration_rate": round(self.regeneration_rate, 6),
            "accept_rate": round(self.accept_rate, 6),
        }


def observed_rates(job_counts: Iterable[Mapping[str, int]]) -> ObservedRates | None:
    """Rates from the per-state item counts of finished jobs; None when nothing was attempted."""
    jobs = attempted = blocked = failed = 0
    for counts in job_counts:
        ok = int(counts.get(ItemState.SUCCEEDED.value, 0))
        b = int(counts.get(ItemState.BLOCKED.value, 0))
        f = int(counts.get(ItemState.FAILED.value, 0))
        if ok + b + f == 0:
            continue
        jobs += 1
        attempted += ok + b + f
        blocked += b
        failed += f
    if attempted == 0:
        return None
    return ObservedRates(jobs=jobs, attempted=attempted, blocked=blocked, failed=failed)


def expected_cost_per_accepted_image(price: float, rates: ObservedRates | None) -> float | None:
    """price × (1 + regeneration rate) ÷ accept rate; None when nothing is ever accepted."""
    if rates is None:
        return price
    if rates.accept_rate <= 0:
        return None
    return price * (1.0 + rates.regeneration_rate) / rates.accept_rate


@dataclass
class GroupEstimate:
    model: str
    image_size: str
    lines: int = 0
    urgent_lines: int = 0
    duplicate_lines: int = 0
    cached_lines: int = 0
    standard_usd: float = 0.0
    batch_usd: float = 0.0
    after_dedup_usd: float = 0.0
    expected_per_accepted_image_usd: float | None = None

    @property
    def paid_lines(self) -> int:
        return self.lines - self.duplicate_lines - self.cached_lines

    def to_doc(self) -> dict[str, Any]:
        per = self.expected_per_accepted_image_usd
        return {
            "model": self.model,
            "image_size": self.image_size,
            "lines": self.lines,
            "urgent_lines": self.urgent_lines,
            "duplicate_lines": self.duplicate_lines,
            "cached_lines": self.cached_lines,
            "standard_usd": round(self.standard_usd, 6),
            "batch_usd": round(self.batch_usd, 6),
            "after_dedup_usd": round(self.after_dedup_usd, 6),
            "expected_per_accepted_image_usd": None if per is None else round(per, 6),
        }


@dataclass
class LaneEstimate:
    """The lines the routing sends to one lane, and what they cost there (before dedup)."""

    lane: str
    kind: LaneKind
    lines: int = 0
    usd: float = 0.0
    # Where a per-image-priced lane's price comes from (routing.price_source): the
    # deployment's own price or the dated table; None for the lanes priced by token.
    price_source: str | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "lane": self.lane,
            "kind": self.kind.value,
            "lines": self.lines,
            "usd": round(self.usd, 6),
        }
        if self.price_source is not None:
            doc["price_source"] = self.price_source
        return doc


@dataclass
class HybridPlan:
    """The file routed across the lanes, next to all of it at the standard price and all
    of it in batch, the way the routing guides' tables put it (issue 20 point 5)."""

    lanes: list[LaneEstimate]
    all_standard_usd: float
    all_batch_usd: float
    # Lines that did not get the lane their priority asks for, by the reason.
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def hybrid_usd(self) -> float:
        return sum(lane.usd for lane in self.lanes)

    def to_doc(self) -> dict[str, Any]:
        return {
            "lanes": [lane.to_doc() for lane in self.lanes],
            "hybrid_usd": round(self.hybrid_usd, 6),
            "all_standard_usd": round(self.all_standard_usd, 6),
            "all_batch_usd": round(self.all_batch_usd, 6),
            "saving_vs_standard_usd": round(self.all_standard_usd - self.hybrid_usd, 6),
            "saving_vs_batch_usd": round(self.all_batch_usd - self.hybrid_usd, 6),
            "notes": self.notes,
        }


@dataclass
class FileEstimate:
    groups: list[GroupEstimate]
    lines: int
    accepted: int
    rejected: int
    rates: ObservedRates | None
    # Stale or uncertain prices behind these figures (pricing.price_warnings).
    price_warnings: list[str] = field(default_factory=list)
    # What the lines sized from display_size / max_edge save (core/rightsize_saving.py).
    right_sizing: RightSizeSaving | None = None
    hybrid: HybridPlan | None = None

    @property
    def standard_usd(self) -> float:
        return sum(g.standard_usd for g in self.groups)

    @property
    def batch_usd(self) -> float:
        return sum(g.batch_usd for g in self.groups)

    @property
    def after_dedup_usd(self) -> float:
        return sum(g.after_dedup_usd for g in self.groups)

    def to_doc(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "groups": [g.to_doc() for g in self.groups],
            "totals": {
                "standard_usd": round(self.standard_usd, 6),
                "batch_usd": round(self.batch_usd, 6),
                "after_dedup_usd": round(self.after_dedup_usd, 6),
                "dedup_saved_usd": round(self.batch_usd - self.after_dedup_usd, 6),
            },
            "observed_rates": None if self.rates is None else self.rates.to_doc(),
            "price_warnings": self.price_warnings,
            "right_sizing": None if self.right_sizing is None else self.right_sizing.to_doc(),
            "hybrid": None if self.hybrid is None else self.hybrid.to_doc(),
        }


@dataclass
class FileEstimator:
    """Feed it every parsed line in order; `result` gives the estimate.

    is_cached answers whether a content hash already has an image (the caller's lookup);
    cache_enabled False is the per-job opt-out (object metadata `bananabatch-cache: off`).
    router routes each line across the deployment's lanes (core/routing.py); without one,
    urgent lines go to Gemini's standard API and the others to batch, as before the lanes.
    """

    prices: PriceBook
    is_cached: Callable[[str], bool] = lambda _hash: False
    cache_enabled: bool = True
    router: Router | None = None
    lines: int = 0
    rejected: int = 0
    _groups: dict[tuple[str, str], GroupEstimate] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)
    _prices: LinePrices | None = None
    _lanes: dict[str, LaneEstimate] = field(default_factory=dict)
    _all_batch_usd: float = 0.0
    _all_standard_usd: float = 0.0
    _notes: dict[str, int] = field(default_factory=dict)

    def add(self, line: AcceptedLine | RejectedLine) -> None:
        self.lines += 1
        if isinstance(line, RejectedLine):
            self.rejected += 1
            return
        tier = size_tier(line)
        group = self._groups.get((line.model, tier))
        if group is None:
            group = self._groups[(line.model, tier)] = GroupEstimate(line.model, tier)
        prices = self._prices
        if prices is None or prices.book is not self.prices:
            prices = self._prices = LinePrices(self.prices)
        route = self._route(line)
        standard = prices.line(line, Lane.STANDARD)
        charged = self._plan(line, route, prices, standard)
        group.lines += 1
        group.urgent_lines += route.kind is LaneKind.SYNC and line.priority == URGENT
        group.standard_usd += standard
        group.batch_usd += charged
        if not (self.cache_enabled and line.cache):
            group.after_dedup_usd += charged
            return
        digest = content_hash(line)
        if digest in self._seen:
            group.duplicate_lines += 1
        elif self.is_cached(digest):
            self._seen.add(digest)
            group.cached_lines += 1
        else:
            self._seen.add(digest)
            group.after_dedup_usd += charged

    def _plan(self, line: AcceptedLine, route: Route, prices: LinePrices, standard: float) -> float:
        """Count the line in the hybrid plan; returns its price on its lane."""
        batch = prices.line(line, Lane.BATCH)
        if route.lane == GEMINI_STANDARD:
            charged = standard
        elif route.kind is LaneKind.BATCH:
            charged = batch
        else:
            charged = route.usd  # a per-image price: the prompt's length does not change it
        lane = self._lanes.get(route.lane)
        if lane is None:
            lane = self._lanes[route.lane] = LaneEstimate(route.lane, route.kind)
        lane.lines += 1
        lane.usd += charged
        self._all_standard_usd += standard
        self._all_batch_usd += batch
        if route.note:
            self._notes[route.note] = self._notes.get(route.note, 0) + 1
        return charged

    def _route(self, line: AcceptedLine) -> Route:
        if self.router is not None:
            return self.router.route(
                line, native=line.native, has_references=bool(line.reference_images)
            )
        if lane_of(line) is Lane.STANDARD:
            return Route(LaneKind.SYNC, (GEMINI_STANDARD,), 0.0)
        return Route(LaneKind.BATCH, (BATCH_LANE,), 0.0)

    def result(self, rates: ObservedRates | None = None) -> FileEstimate:
        groups = sorted(self._groups.values(), key=lambda g: (g.model, g.image_size))
        for group in groups:
            price = group.batch_usd / group.lines if group.lines else 0.0
            group.expected_per_accepted_image_usd = expected_cost_per_accepted_image(price, rates)
        accepted = sum(g.lines for g in groups)
        return FileEstimate(
            groups=groups,
            lines=self.lines,
            accepted=accepted,
            rejected=self.rejected,
            rates=rates,
            hybrid=HybridPlan(
                lanes=sorted(
                    self._lanes.values(),
                    key=lambda lane: (list(LaneKind).index(lane.kind), lane.lane),
                ),
                all_standard_usd=self._all_standard_usd,
                all_batch_usd=self._all_batch_usd,
                notes=dict(self._notes),
            ),
        )


def cache_enabled_for(options: Mapping[str, str]) -> bool:
    """The per-job opt-out: object metadata `bananabatch-cache: off`."""
    return options.get("bananabatch-cache", "on").strip().lower() not in CACHE_OFF_VALUES
