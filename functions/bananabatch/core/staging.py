"""Staging: what intake writes for a batch-lane line. Pure.

A batch-lane line becomes a request line in its batch's request file and a manifest line
in the batch's manifest (core/manifest.py), and adds its prices to the job's estimates.
Lines of one LineShape (a simple line's options) share nearly all of that: the request
line is the shape's template around the key and the prompt, and the price and the end of
the manifest line depend only on the prompt's length. So a file's lines are staged a run
of simple lines at a time (stage_rows), and every other accepted line one at a time
(stage_line); both give StagedLines, which intake places in batches one way.

Everything written here is checked against its reference: a template against the
provider's own encoding of the shape's first line (ShapeStaging.check), the manifest
line against core.manifest.encode_entry (tests/unit/test_intake_fast.py).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from bananabatch.core.catalog import expected_result_bytes
from bananabatch.core.estimate import lane_of
from bananabatch.core.intake import (
    PREVIEW_CHARS,
    PROMPT_SLOT,
    AcceptedLine,
    JsonObject,
    LineShape,
    encode_json_string,
    prompt_preview,
)
from bananabatch.core.planning import PlannedBatch, batch_key
from bananabatch.core.pricing import Lane, LinePrices
from bananabatch.core.routing import LaneKind, Route

# A line's length plus its newline, as a C function for map().
_WITH_NEWLINE: Final = (1).__add__
# The key placeholder of the request templates (PROMPT_SLOT is the prompt's).
KEY_SLOT: Final = "\x00bananabatch-key\x00"

# The provider's staged line for a key and a request (BatchProvider.encode_request).
Encoder = Callable[[str, JsonObject], Mapping[str, object]]


def request_json(encoded: Mapping[str, object]) -> str:
    """A staged request line (without its newline) from the provider's encoding."""
    return json.dumps(encoded, separators=(",", ":"), ensure_ascii=False)


def simple_prompt_tokens(prompts: Iterable[str]) -> list[int]:
    """pricing.line_prompt_tokens of simple lines without reference images."""
    return [(len(p) + 3) // 4 for p in prompts]


def previews_json(prompts: Iterable[str], encoded: Iterable[str]) -> list[str]:
    """Simple lines' prompt_preview as JSON strings, given their prompts as ones.

    prompt_preview's own shortcut (a short printable prompt is its own preview) is tested
    here inline, so the JSON at hand is reused and prompt_preview called only for the
    others: a call per line costs 3% of intake (tests/unit/test_intake_fast.py binds the
    two)."""
    return [
        e if len(p) <= PREVIEW_CHARS and p.isprintable() else encode_json_string(prompt_preview(p))
        for p, e in zip(prompts, encoded, strict=True)
    ]


def manifest_tail(aspect_ratio: str | None, image_size: str | None, estimated_usd: float) -> str:
    """The end of a manifest line after the preview: the same for every line of one shape
    and prompt length, so it is made once per both (see manifest_lines)."""
    return (
        f",{json.dumps(aspect_ratio, ensure_ascii=False)},"
        f"{json.dumps(image_size, ensure_ascii=False)},{json.dumps(estimated_usd)}]\n"
    )


def manifest_lines(
    keys_json: Iterable[str],
    line_nos: Iterable[int],
    digests: Iterable[str],
    previews_json: Iterable[str],
    tails: Iterable[str],
) -> list[str]:
    """Manifest lines (newline included), each core.manifest.encode_entry's, from parts
    already JSON-encoded: the key and the preview as string literals, the tail from
    manifest_tail. A request hash is hex, which needs no escaping."""
    return [
        f'[{k},{n},"{d}",{v}{t}'
        for k, n, d, v, t in zip(keys_json, line_nos, digests, previews_json, tails, strict=True)
    ]


def request_sizes(requests: Sequence[str]) -> list[int]:
    """Bytes of each request line with its newline; str.isascii is O(1), so ASCII lines
    (nearly all) are not encoded to count them."""
    if all(map(str.isascii, requests)):
        return list(map(_WITH_NEWLINE, map(len, requests)))
    return [len(r.encode()) + 1 for r in requests]


def cut_template(text: str) -> tuple[str, str, str] | None:
    """A staged line made for KEY_SLOT and PROMPT_SLOT, cut around both: (head, middle,
    tail), or None when the provider's encoding does not carry both verbatim, key first
    (Vertex puts the key in labels)."""
    key, prompt = encode_json_string(KEY_SLOT), encode_json_string(PROMPT_SLOT)
    if text.count(key) != 1 or text.count(prompt) != 1 or text.index(key) > text.index(prompt):
        return None
    head, rest = text.split(key)
    middle, tail = rest.split(prompt)
    return head, middle, tail


class Priced(NamedTuple):
    """A batch-lane line's prices for one shape and prompt length, and its manifest tail."""

    charged: float
    standard: float
    tail: str


# Where a line is placed: its batch key (planning.batch_key: its model, one per batch) and
# its expected output bytes.
Placement = tuple[str, int]


class StagedLines(NamedTuple):
    """Request lines (no newline) and their manifest lines, in input order; where each is
    placed (one Placement for all, or one per line); and their costs as (charged,
    standard, number of lines)."""

    requests: list[str]
    manifests: list[str]
    placement: Placement | list[Placement]
    costs: list[tuple[float, float, int]]


class ShapeStaging:
    """What every batch-lane line of one LineShape shares: its lane, where it is placed,
    its request template (None: each line is encoded by the provider) and its prices."""

    __slots__ = ("_book", "encode", "lane", "placement", "prices", "route", "shape", "template")

    def __init__(
        self, shape: LineShape, encode: Encoder, prices: LinePrices, route: Route | None = None
    ) -> None:
        self.shape = shape
        # Where the shape's lines go (core/routing.py); STANDARD: served apart, on a sync
        # lane, not staged in a batch.
        self.route = route
        if route is None:
            self.lane = lane_of(shape)
        else:
            self.lane = Lane.BATCH if route.kind is LaneKind.BATCH else Lane.STANDARD
        self.placement: Placement = (
            shape.model,
            expected_result_bytes(shape.model, shape.image_size),
        )
        self.encode = encode
        self.template = cut_template(request_json(encode(KEY_SLOT, shape.request(PROMPT_SLOT))))
        self._book = prices
        self.prices: dict[int, Priced] = {}

    def check(self, key: str, prompt: str) -> bool:
        """Compare the template with the provider's own encoding of one line; a mismatch
        drops the template for good. True when it was dropped."""
        template = self.template
        if template is None:
            return False
        if self.request_line(encode_json_string(key), key, prompt, encode_json_string(prompt)) == (
            request_json(self.encode(key, self.shape.request(prompt)))
        ):
            return False
        self.template = None
        return True

    def request_line(self, key_json: str, key: str, prompt: str, encoded: str) -> str:
        """One line's staged request (encoded: the prompt as a JSON string)."""
        if self.template is None:
            return request_json(self.encode(key, self.shape.request(prompt)))
        head, middle, tail = self.template
        return f"{head}{key_json}{middle}{encoded}{tail}"

    def price(self, tokens: int) -> Priced:
        """The prices of a line of this shape with a prompt of this many tokens."""
        priced = self.prices.get(tokens)
        if priced is None:
            shape, book = self.shape, self._book
            model, size, quality = shape.model, shape.image_size, shape.quality
            charged = book.request(model, size, Lane.BATCH, tokens, quality)
            standard = book.request(model, size, Lane.STANDARD, tokens, quality)
            tail = manifest_tail(shape.aspect_ratio, shape.image_size, round(charged, 6))
            priced = self.prices[tokens] = Priced(charged, standard, tail)
        return priced

    def stage(
        self,
        keys: Sequence[str],
        line_nos: Sequence[int],
        prompts: Sequence[str],
        encoded: Sequence[str],
        digests: Sequence[str],
    ) -> StagedLines:
        """stage_rows for lines that are all of this shape: each step runs over all the
        lines at once, with the template in locals."""
        keys_json = list(map(encode_json_string, keys))
        if self.template is not None:
            head, middle, tail = self.template
            requests = [
                f"{head}{k}{middle}{e}{tail}" for k, e in zip(keys_json, encoded, strict=True)
            ]
        else:
            requests = list(map(self.request_line, keys_json, keys, prompts, encoded))
        tokens = simple_prompt_tokens(prompts)
        prices = self.prices
        for missing in set(tokens).difference(prices):
            self.price(missing)
        tails = [prices[t].tail for t in tokens]
        previews = previews_json(prompts, encoded)
        manifests = manifest_lines(keys_json, line_nos, digests, previews, tails)
        costs = [(prices[t].charged, prices[t].standard, n) for t, n in Counter(tokens).items()]
        return StagedLines(requests, manifests, self.placement, costs)


def stage_rows(
    plans: Sequence[ShapeStaging],
    keys: Sequence[str],
    line_nos: Sequence[int],
    prompts: Sequence[str],
    encoded: Sequence[str],
    digests: Sequence[str],
) -> StagedLines:
    """Stage consecutive simple batch-lane lines, plans[i] being line i's shape's, or plans
    one for all of them (columns of equal length; encoded: each prompt as a JSON string)."""
    first = plans[0]
    if plans.count(first) == len(plans):
        return first.stage(keys, line_nos, prompts, encoded, digests)
    keys_json = list(map(encode_json_string, keys))
    templates = [plan.template for plan in plans]
    if None in templates:
        requests = list(map(ShapeStaging.request_line, plans, keys_json, keys, prompts, encoded))
    else:
        requests = [
            f"{t[0]}{k}{t[1]}{e}{t[2]}"  # type: ignore[index]
            for t, k, e in zip(templates, keys_json, encoded, strict=True)
        ]
    tokens = simple_prompt_tokens(prompts)
    priced = [plan.prices.get(n) or plan.price(n) for plan, n in zip(plans, tokens, strict=True)]
    previews = previews_json(prompts, encoded)
    manifests = manifest_lines(keys_json, line_nos, digests, previews, [p.tail for p in priced])
    placement: Placement | list[Placement] = [p.placement for p in plans]
    if placement.count(first.placement) == len(plans):
        placement = first.placement
    costs = [(p.charged, p.standard, n) for p, n in Counter(priced).items()]
    return StagedLines(requests, manifests, placement, costs)


def stage_line(line: AcceptedLine, digest: str, encode: Encoder, prices: LinePrices) -> StagedLines:
    """Stage one accepted batch-lane line that has no shape (reference images, the native
    form): encoded by the provider, priced by the book."""
    charged = prices.line(line, lane_of(line))
    standard = prices.line(line, Lane.STANDARD)
    manifest = manifest_lines(
        [encode_json_string(line.key)],
        [line.line_no],
        [digest],
        [encode_json_string(line.prompt_preview)],
        [manifest_tail(line.aspect_ratio, line.image_size, round(charged, 6))],
    )
    key = batch_key(line.model, edits=bool(line.reference_images))
    placement = (key, expected_result_bytes(line.model, line.image_size))
    request = request_json(encode(line.key, line.request))
    return StagedLines([request], manifest, placement, [(charged, standard, 1)])


class Estimates:
    """The job's estimated costs, summed so that the order the lines are added in does not
    change the result: each price is counted, and the sums are exact (math.fsum) over the
    distinct prices times their counts. Lines are staged a run at a time and served one
    at a time, in an order that depends on how the file was cut in chunks; the estimate
    must not."""

    __slots__ = ("_charged", "_saved", "_standard")

    def __init__(self) -> None:
        self._charged: Counter[float] = Counter()
        self._standard: Counter[float] = Counter()
        self._saved: Counter[float] = Counter()

    def add(self, charged: float, standard: float, count: int = 1) -> None:
        """count lines that are paid: charged at their lane's price, standard at the
        standard lane's."""
        self._charged[charged] += count
        self._standard[standard] += count

    def add_saved(self, standard: float, saved: float) -> None:
        """A line not paid (served from the cache or from an earlier line of the file)."""
        self._standard[standard] += 1
        self._saved[saved] += 1

    @property
    def charged_usd(self) -> float:
        return _total(self._charged)

    @property
    def standard_usd(self) -> float:
        return _total(self._standard)

    @property
    def saved_usd(self) -> float:
        return _total(self._saved)


def _total(counts: Counter[float]) -> float:
    return math.fsum(price * count for price, count in counts.items())


@dataclass
class IntakeTally:
    """What one pass over an input found and staged."""

    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    urgent: int = 0
    # What will be paid: batch lines at the batch price, urgent lines at the standard one.
    estimates: Estimates = field(default_factory=Estimates)
    batches: list[PlannedBatch] = field(default_factory=list)
    # Deprecated or restricted models, undocumented batch support (core/catalog.py).
    warnings: list[str] = field(default_factory=list)

    @property
    def estimated_batch_usd(self) -> float:
        return self.estimates.charged_usd

    @property
    def estimated_standard_usd(self) -> float:
        return self.estimates.standard_usd

    @property
    def cache_saved_usd(self) -> float:
        return self.estimates.saved_usd


def without_request_hashes(
    staged: StagedLines, digests: Sequence[str], which: Sequence[bool] | None = None
) -> StagedLines:
    """Staged lines whose manifest entries (all, or those `which` marks) carry no request
    hash: lines that opted out of the cache, which submission must not join to another
    job's request (pipeline/claims.py). The hash is the first `,"<64 hex>",` of the entry:
    the key before it is a JSON string, where a quote is always escaped."""
    marked = which if which is not None else [True] * len(digests)
    manifests = [
        entry.replace(f',"{digest}",', ",null,", 1) if drop else entry
        for entry, digest, drop in zip(staged.manifests, digests, marked, strict=True)
    ]
    return staged._replace(manifests=manifests)
