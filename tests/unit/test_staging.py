"""core/staging.py: a shape's staged lines are what the provider's own encoding and the
price book give line by line, whichever way a run of lines is cut; a template that
disagrees with the provider is dropped; the job's estimates do not depend on the order
lines are added in."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.core.intake import (
    AcceptedLine,
    FastLine,
    LineParser,
    content_hash,
    encode_json_string,
)
from bananabatch.core.manifest import ManifestEntry, encode_entry
from bananabatch.core.pricing import Lane, LinePrices, PriceBook
from bananabatch.core.staging import (
    Estimates,
    ShapeStaging,
    StagedLines,
    stage_line,
    stage_rows,
    without_request_hashes,
)

MODEL = "gemini-3.1-flash-image"


def keyed(key: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"key": key, "request": dict(request)}


def labelled(key: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"request": {**request, "labels": {"k": key}}}


def _fast_lines(docs: list[dict[str, Any]]) -> list[FastLine]:
    parser = LineParser(default_model=MODEL)
    lines = [parser.parse_fast(n, json.dumps(d).encode()) for n, d in enumerate(docs, 1)]
    assert all(isinstance(line, FastLine) for line in lines)
    return lines  # type: ignore[return-value]


def _one_by_one(lines: list[FastLine], encode: Any, prices: LinePrices) -> list[StagedLines]:
    """The reference: each line on its own, as an AcceptedLine, by the generic path."""
    return [stage_line(line.accepted(), content_hash(line), encode, prices) for line in lines]


def _run(
    lines: list[FastLine], plans: dict[Any, ShapeStaging], encode: Any, prices: LinePrices
) -> StagedLines:
    for line in lines:
        if line.shape not in plans:
            plans[line.shape] = ShapeStaging(line.shape, encode, prices)
    return stage_rows(
        [plans[line.shape] for line in lines],
        [line.key for line in lines],
        [line.line_no for line in lines],
        [line.prompt for line in lines],
        [encode_json_string(line.prompt) for line in lines],
        [content_hash(line) for line in lines],
    )


prompts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)
docs = st.lists(
    st.fixed_dictionaries(
        {"prompt": prompts.filter(lambda p: p.strip() != "")},
        optional={
            "aspect_ratio": st.sampled_from(["1:1", "16:9"]),
            "image_size": st.sampled_from(["1K", "2K"]),
            "model": st.sampled_from([MODEL, "gemini-3-pro-image"]),
        },
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(docs, st.sampled_from([keyed, labelled]), st.integers(min_value=0, max_value=12))
def test_a_run_stages_what_each_line_staged_alone_would(
    written: list[dict[str, Any]], encode: Any, cut: int
) -> None:
    lines = [line for line in _fast_lines([{**d, "key": f"k{n}"} for n, d in enumerate(written)])]
    prices = LinePrices(PriceBook())
    plans: dict[Any, ShapeStaging] = {}
    alone = _one_by_one(lines, encode, prices)
    # Cut in two runs anywhere: the same lines, placements and costs.
    runs = [part for part in (lines[:cut], lines[cut:]) if part]
    staged = [_run(part, plans, encode, prices) for part in runs]
    assert [r for s in staged for r in s.requests] == [r for s in alone for r in s.requests]
    assert [m for s in staged for m in s.manifests] == [m for s in alone for m in s.manifests]
    placements: list[tuple[str, int]] = []
    for s, part in zip(staged, runs, strict=True):
        placements += s.placement if isinstance(s.placement, list) else [s.placement] * len(part)
    assert placements == [s.placement for s in alone]
    totals, expected = Estimates(), Estimates()
    for s in staged:
        for cost in s.costs:
            totals.add(*cost)
    for s in alone:
        for cost in s.costs:
            expected.add(*cost)
    assert (totals.charged_usd, totals.standard_usd) == (
        expected.charged_usd,
        expected.standard_usd,
    )


def test_the_manifest_line_of_a_line_is_its_encoded_entry() -> None:
    (line,) = _fast_lines([{"key": "k", "prompt": "ünï\n" + "x" * 300, "image_size": "2K"}])
    prices = LinePrices(PriceBook())
    staged = _run([line], {}, keyed, prices)
    accepted = line.accepted()
    charged = prices.line(accepted, Lane.BATCH)
    entry = ManifestEntry(
        "k", 1, content_hash(line), accepted.prompt_preview, None, "2K", round(charged, 6)
    )
    assert staged.manifests == [encode_entry(entry)]
    assert staged.requests == [
        json.dumps(keyed("k", accepted.request), separators=(",", ":"), ensure_ascii=False)
    ]


def test_a_template_the_provider_disagrees_with_is_dropped_for_good() -> None:
    calls = []

    def odd(key: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        # Carries the key and prompt verbatim for the placeholders, but not for a real key.
        calls.append(key)
        return {"key": key if "\x00" in key else key.upper(), "request": dict(request)}

    (line,) = _fast_lines([{"key": "k", "prompt": "a cat"}])
    plan = ShapeStaging(line.shape, odd, LinePrices(PriceBook()))
    assert plan.template is not None
    assert plan.check("k", "a cat") is True
    assert plan.template is None
    staged = plan.stage(["k"], [1], ["a cat"], [encode_json_string("a cat")], ["ab"])
    assert json.loads(staged.requests[0])["key"] == "K"
    # A template the provider agrees with is kept.
    keep = ShapeStaging(line.shape, keyed, LinePrices(PriceBook()))
    assert keep.check("k", "a cat") is False
    assert keep.template is not None


def test_an_accepted_line_without_a_shape_is_staged_by_the_provider_and_the_book() -> None:
    parsed = LineParser(default_model=MODEL).parse(
        1, b'{"key": "r", "prompt": "p", "metadata": {"a": 1}, "aspect_ratio": "16:9"}'
    )
    assert isinstance(parsed, AcceptedLine)
    prices = LinePrices(PriceBook())
    staged = stage_line(parsed, "ff", keyed, prices)
    assert staged.placement[0] == MODEL
    charged = prices.line(parsed, Lane.BATCH)
    assert staged.costs == [(charged, prices.line(parsed, Lane.STANDARD), 1)]
    assert json.loads(staged.manifests[0])[4:] == ["16:9", None, round(charged, 6)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=60))
def test_estimates_do_not_depend_on_the_order_lines_are_added_in(prices: list[float]) -> None:
    forward, shuffled, grouped = Estimates(), Estimates(), Estimates()
    for price in prices:
        forward.add(price, price * 2)
        forward.add_saved(price * 2, price)
    mixed = prices[:]
    random.Random(len(prices)).shuffle(mixed)
    for price in mixed:
        shuffled.add_saved(price * 2, price)
        shuffled.add(price, price * 2)
    for price in set(prices):
        grouped.add(price, price * 2, prices.count(price))
        for _ in range(prices.count(price)):
            grouped.add_saved(price * 2, price)
    answers = {(e.charged_usd, e.standard_usd, e.saved_usd) for e in (forward, shuffled, grouped)}
    assert len(answers) == 1


@given(
    keys=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=6, unique=True),
    data=st.data(),
)
def test_a_line_that_opts_out_of_the_cache_has_no_request_hash_in_its_manifest_entry(
    keys: list[str], data: st.DataObject
) -> None:
    # Keys may hold quotes, commas and hex: the hash is still the only field dropped.
    digests = [f"{n:064x}" for n in range(len(keys))]
    entries = [
        ManifestEntry(key, n, digest, f"prompt {key}", "1:1", "1K", 0.0391)
        for n, (key, digest) in enumerate(zip(keys, digests, strict=True))
    ]
    staged = StagedLines(["{}"] * len(keys), list(map(encode_entry, entries)), ("m", 1), [])
    which = data.draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    after = without_request_hashes(staged, digests, which)
    for entry, line, dropped in zip(entries, after.manifests, which, strict=True):
        expected = entry._replace(request_hash=None) if dropped else entry
        assert line == encode_entry(expected)
    assert without_request_hashes(staged, digests).manifests == [
        encode_entry(e._replace(request_hash=None)) for e in entries
    ]
