"""Right-sizing (issue 21 point 3): a simple line's display_size or max_edge picks the
smallest size tier of its model that covers it (the larger where prices tie), and the
aspect ratio closest to the display's; the estimate says what that saves against the size
the line would otherwise get."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.core.catalog import MODELS, Status, image_dimensions
from bananabatch.core.intake import AcceptedLine, LineParser, ReferenceParser, RejectedLine
from bananabatch.core.intake.rightsize import closest_ratio, tier_prices
from bananabatch.core.pricing import Lane, PriceBook
from bananabatch.core.rightsize_saving import right_size_saving

DAY = date(2026, 12, 7)
PRO = "gemini-3-pro-image"
NB2 = "gemini-3.1-flash-image"
LITE = "gemini-3.1-flash-lite-image"


def parse(doc: dict[str, Any], *, vertex: bool = False) -> AcceptedLine | RejectedLine:
    """The line through both parsers, which must agree."""
    raw = json.dumps(doc).encode()
    fast = LineParser(default_model=LITE, today=DAY, vertex=vertex).parse(2, raw)
    reference = ReferenceParser(default_model=LITE, today=DAY, vertex=vertex).parse(2, raw)
    assert fast == reference
    assert fast is not None
    return fast


def accepted(doc: dict[str, Any], **kw: Any) -> AcceptedLine:
    line = parse({"prompt": "a fox", **doc}, **kw)
    assert isinstance(line, AcceptedLine), line
    return line


def rejected(doc: dict[str, Any]) -> RejectedLine:
    line = parse({"prompt": "a fox", **doc})
    assert isinstance(line, RejectedLine), line
    return line


def test_where_1k_and_2k_cost_the_same_on_pro_a_small_display_gets_2k() -> None:
    line = accepted({"model": PRO, "display_size": "600x600"})
    assert (line.aspect_ratio, line.image_size) == ("1:1", "2K")
    request: Any = line.request
    assert request["generationConfig"]["imageConfig"] == {
        "aspectRatio": "1:1",
        "imageSize": "2K",
    }


def test_a_small_display_gets_the_cheapest_tier_that_covers_it() -> None:
    assert accepted({"model": NB2, "display_size": "400x400"}).image_size == "512"
    assert accepted({"model": NB2, "display_size": "600x600"}).image_size == "1K"
    assert accepted({"model": NB2, "max_edge": 1200}).image_size == "2K"
    assert accepted({"model": PRO, "display_size": "3000x3000"}).image_size == "4K"


def test_the_ratio_is_the_models_closest_to_the_displays() -> None:
    assert accepted({"model": PRO, "display_size": "1920x1080"}).aspect_ratio == "16:9"
    assert accepted({"model": NB2, "display_size": "1080x1920"}).aspect_ratio == "9:16"
    assert accepted({"model": NB2, "display_size": "300x1200"}).aspect_ratio == "1:4"
    # Pro has no 1:4: its closest is 9:16.
    assert accepted({"model": PRO, "display_size": "300x1200"}).aspect_ratio == "9:16"
    assert accepted({"model": PRO, "display_size": "1000x800"}).aspect_ratio == "5:4"


def test_the_ratio_is_chosen_against_the_display_and_covers_it() -> None:
    # 16:9 at 1K is 1360x768: too small for 1920x1080, so 2K (and 1K ties 2K on Pro anyway).
    line = accepted({"model": NB2, "display_size": "1920x1080"})
    assert (line.aspect_ratio, line.image_size) == ("16:9", "2K")
    width, height = image_dimensions("16:9", "2K")
    assert width >= 1920
    assert height >= 1080


def test_an_aspect_ratio_the_line_writes_wins_over_the_displays() -> None:
    line = accepted({"model": PRO, "display_size": "600x600", "aspect_ratio": "16:9"})
    assert (line.aspect_ratio, line.image_size) == ("16:9", "2K")


def test_max_edge_keeps_the_lines_ratio_or_none() -> None:
    line = accepted({"model": NB2, "max_edge": 500})
    assert (line.aspect_ratio, line.image_size) == (None, "512")
    line = accepted({"model": NB2, "max_edge": 900, "aspect_ratio": "21:9"})
    # 21:9 at 512 is 784 wide; at 1K 1568.
    assert (line.aspect_ratio, line.image_size) == ("21:9", "1K")


def test_a_display_no_tier_covers_gets_the_largest_and_is_counted_short() -> None:
    parser = LineParser(default_model=LITE, today=DAY)
    line = parser.parse(2, json.dumps({"prompt": "x", "model": PRO, "max_edge": 9000}).encode())
    assert isinstance(line, AcceptedLine)
    assert line.image_size == "4K"
    (kind,) = parser.right_sizing().counts
    assert kind.covers is False


def test_a_one_size_model_is_given_only_its_ratio() -> None:
    line = accepted({"model": LITE, "display_size": "1080x1350"})
    assert (line.aspect_ratio, line.image_size) == ("4:5", "1K")


def test_on_vertex_only_1k_is_chosen() -> None:
    line = accepted({"model": PRO, "display_size": "3000x3000"}, vertex=True)
    assert line.image_size == "1K"


def test_a_gpt_image_line_gets_the_ratio_and_its_size() -> None:
    line = accepted({"model": "gpt-image-2", "display_size": "1200x800"})
    assert (line.aspect_ratio, line.image_size) == ("3:2", "1536x1024")


@pytest.mark.parametrize(
    ("doc", "field", "says"),
    [
        (
            {"display_size": "600x600", "image_size": "1K"},
            "display_size",
            "expected image_size or display_size, not both (display_size picks the size); "
            'found image_size "1K" and display_size "600x600"',
        ),
        (
            {"max_edge": 600, "image_size": "2K"},
            "max_edge",
            'found image_size "2K" and max_edge 600',
        ),
        (
            {"display_size": "600x600", "max_edge": 600},
            "max_edge",
            "expected display_size or max_edge, not both",
        ),
        ({"display_size": "600"}, "display_size", 'e.g. "600x600", each side 1 to 65536'),
        ({"display_size": "0x600"}, "display_size", 'found "0x600"'),
        ({"display_size": "99999999x1"}, "display_size", "expected WIDTHxHEIGHT"),
        ({"display_size": 600}, "display_size", "expected a string; found 600"),
        ({"max_edge": 0}, "max_edge", "expected 1 to 65536 pixels; found 0"),
        ({"max_edge": 70000}, "max_edge", "found 70000"),
        ({"max_edge": 1.5}, "max_edge", "expected an integer; found 1.5"),
        ({"max_edge": True}, "max_edge", "expected an integer; found true"),
        ({"max_edge": "600"}, "max_edge", "expected an integer"),
    ],
)
def test_contradictory_or_malformed_sizing_is_rejected_naming_the_field(
    doc: dict[str, Any], field: str, says: str
) -> None:
    line = rejected({"model": PRO, **doc})
    assert line.field == field
    assert says in line.reason, line.reason
    assert line.reason.startswith(f'line 2, field "{field}": ')


def test_a_native_line_cannot_right_size() -> None:
    line = parse({"request": {"contents": [{"parts": [{"text": "x"}]}]}, "display_size": "600x600"})
    assert isinstance(line, RejectedLine)
    assert line.field == "display_size"
    assert "not allowed in a native line" in line.reason


def test_closest_ratio_breaks_ties_by_catalog_order() -> None:
    # 1:1 is as far from 2:1 as from 1:2 by the logarithm.
    assert closest_ratio(("1:1", "2:1", "1:2"), (1000, 1000)) == "1:1"
    assert closest_ratio(("2:1", "1:2"), (1000, 1000)) == "2:1"


SERVED = [
    spec for spec in MODELS if spec.status_on(DAY) is not Status.SHUT_DOWN and spec.image_sizes
]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(SERVED),
    st.integers(min_value=1, max_value=6000),
    st.integers(min_value=1, max_value=6000),
)
def test_the_chosen_tier_is_the_cheapest_covering_one_and_the_largest_at_that_price(
    spec: Any, width: int, height: int
) -> None:
    """The rule, against the catalog's pixel sizes and the price table's figures."""
    line = accepted({"model": spec.model_id, "display_size": f"{width}x{height}"})
    prices = tier_prices(spec.model_id)
    assert prices, "every served model has per-image prices"
    assert line.aspect_ratio in spec.aspect_ratios
    assert line.aspect_ratio == closest_ratio(spec.aspect_ratios, (width, height))

    def covers(tier: str) -> bool:
        w, h = image_dimensions(line.aspect_ratio, tier)
        return w >= width and h >= height

    covering = [tier for tier in spec.image_sizes if covers(tier)]
    if not covering:
        assert line.image_size == spec.image_sizes[-1]
        return
    assert line.image_size in covering
    chosen = prices[str(line.image_size)]
    assert chosen == min(prices[tier] for tier in covering)
    larger = spec.image_sizes[spec.image_sizes.index(str(line.image_size)) + 1 :]
    assert all(prices[tier] != chosen for tier in larger)


def test_the_fast_and_the_reference_parser_tally_the_same_lines() -> None:
    raws = [
        json.dumps(doc).encode()
        for doc in (
            {"key": "a", "prompt": "x", "model": PRO, "display_size": "600x600"},
            {"key": "b", "prompt": "x", "model": PRO, "display_size": "600x600"},
            {"key": "b", "prompt": "dup key", "model": PRO, "display_size": "600x600"},
            {"key": "c", "prompt": "x", "model": NB2, "max_edge": 400, "priority": "urgent"},
            {"key": "d", "prompt": "x", "model": NB2, "max_edge": 400, "metadata": {"a": 1}},
            {"key": "e", "prompt": "x", "model": NB2, "max_edge": 400, "image_size": "1K"},
            {
                "key": "f",
                "prompt": "x",
                "model": PRO,
                "display_size": "600x600",
                "reference_images": ["gs://inbox/references/r.png"],
            },
            {"key": "g", "prompt": "plain"},
        )
    ]
    fast = LineParser(default_model=LITE, today=DAY)
    reference = ReferenceParser(default_model=LITE, today=DAY)
    for n, raw in enumerate(raws, 2):
        fast.parse_fast(n, raw)
        reference.parse(n, raw)
    chunked = LineParser(default_model=LITE, today=DAY)
    chunked.parse_chunk(2, raws)
    assert fast.right_sizing() == reference.right_sizing() == chunked.right_sizing()
    assert reference.right_sizing().lines == 5


def test_the_saving_is_priced_against_the_models_default_size() -> None:
    parser = LineParser(default_model=LITE, today=DAY)
    for n in range(10):
        doc = {"key": f"k{n}", "prompt": "a sock", "model": NB2, "display_size": "400x400"}
        parser.parse(n + 1, json.dumps(doc).encode())
    book = PriceBook()
    saving = right_size_saving(parser.right_sizing(), book)
    (group,) = saving.groups
    assert (group.model, group.image_size, group.lane, group.lines) == (NB2, "512", Lane.BATCH, 10)
    at_512 = book.estimate_request(NB2, "512", Lane.BATCH)
    at_1k = book.estimate_request(NB2, "1K", Lane.BATCH)
    at_4k = book.estimate_request(NB2, "4K", Lane.BATCH)
    assert saving.usd == pytest.approx(10 * at_512)
    assert saving.default_size_usd == pytest.approx(10 * at_1k)
    assert saving.largest_size_usd == pytest.approx(10 * at_4k)
    report: Any = saving.to_doc()
    assert report["saved_vs_default_size_usd"] == pytest.approx(10 * (at_1k - at_512), abs=1e-6)
    assert report["groups"][0]["default_size"] == "1K"
    assert report["groups"][0]["largest_size"] == "4K"
    assert saving.text()[0].startswith("Right-sizing: 10 line(s) sized from display_size")


def test_urgent_right_sized_lines_are_priced_at_the_standard_price() -> None:
    parser = LineParser(default_model=LITE, today=DAY)
    doc = {"prompt": "x", "model": PRO, "display_size": "600x600", "priority": "urgent"}
    parser.parse(1, json.dumps(doc).encode())
    (group,) = right_size_saving(parser.right_sizing(), PriceBook()).groups
    assert group.lane is Lane.STANDARD
    assert group.per_image_usd == PriceBook().estimate_request(PRO, "2K", Lane.STANDARD)


def test_no_right_sized_line_means_no_section() -> None:
    parser = LineParser(default_model=LITE, today=DAY)
    parser.parse(1, b'{"prompt": "x"}')
    saving = right_size_saving(parser.right_sizing(), PriceBook())
    assert saving.groups == []
    assert saving.text() == []
