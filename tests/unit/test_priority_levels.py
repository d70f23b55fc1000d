"""The three priority levels and the third-party switch, as a line writes them (issue 20
point 2): both parsers take them alike, "batch" is read as "normal" so files written before
the levels still work, and both options default to the careful choice."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from bananabatch.core.intake import (
    AcceptedLine,
    FastLine,
    IntakeLimits,
    LineParser,
    ReferenceParser,
    RejectedLine,
)

MODEL = "gemini-3-pro-image"
DAY = date(2026, 12, 7)


def parsers() -> list[ReferenceParser]:
    return [
        LineParser(default_model=MODEL, limits=IntakeLimits(), today=DAY),
        ReferenceParser(default_model=MODEL, limits=IntakeLimits(), today=DAY),
    ]


def parse(
    parser: ReferenceParser, doc: dict[str, Any], line_no: int = 1
) -> AcceptedLine | RejectedLine:
    result = parser.parse(line_no, json.dumps(doc).encode())
    assert result is not None
    return result


@pytest.mark.parametrize("written", ["urgent", "normal", "bulk"])
def test_each_priority_level_is_taken_as_written(written: str) -> None:
    for parser in parsers():
        got = parse(parser, {"prompt": "a cat", "priority": written})
        assert isinstance(got, AcceptedLine), got
        assert got.priority == written


def test_batch_is_read_as_normal_so_old_files_still_work() -> None:
    for parser in parsers():
        old = parse(parser, {"prompt": "a cat", "priority": "batch"})
        new = parse(parser, {"prompt": "a cat", "priority": "normal"}, line_no=2)
        assert isinstance(old, AcceptedLine)
        assert isinstance(new, AcceptedLine)
        assert old.priority == "normal"
        assert old.options == new.options


def test_a_batch_line_and_a_normal_line_share_one_shape() -> None:
    parser = LineParser(default_model=MODEL, limits=IntakeLimits(), today=DAY)
    old = parser.parse_fast(1, b'{"prompt": "a", "priority": "batch", "metadata": {"a": 1}}')
    new = parser.parse_fast(2, b'{"prompt": "b", "priority": "normal", "metadata": {"a": 1}}')
    assert isinstance(old, FastLine)
    assert isinstance(new, FastLine)
    assert old.shape is new.shape


def test_a_line_without_options_is_normal_and_keeps_to_first_parties() -> None:
    for parser in parsers():
        got = parse(parser, {"prompt": "a cat"})
        assert isinstance(got, AcceptedLine)
        assert (got.priority, got.allow_third_party) == ("normal", False)


def test_a_line_may_allow_third_parties() -> None:
    for parser in parsers():
        got = parse(parser, {"prompt": "a cat", "priority": "bulk", "allow_third_party": True})
        assert isinstance(got, AcceptedLine)
        assert got.allow_third_party is True


def test_an_unknown_priority_is_rejected_naming_the_three_levels() -> None:
    for parser in parsers():
        got = parse(parser, {"prompt": "a cat", "priority": "asap"})
        assert isinstance(got, RejectedLine)
        assert got.field == "priority"
        assert 'expected one of urgent, normal, bulk; found "asap"' in got.reason


def test_allow_third_party_must_be_true_or_false() -> None:
    for parser in parsers():
        got = parse(parser, {"prompt": "a cat", "allow_third_party": "yes"})
        assert isinstance(got, RejectedLine)
        assert got.field == "allow_third_party"
        assert "expected true or false" in got.reason


def test_a_native_line_takes_the_options_too() -> None:
    request = {"contents": [{"parts": [{"text": "a cat"}]}]}
    for parser in parsers():
        got = parse(parser, {"request": request, "priority": "bulk", "allow_third_party": True})
        assert isinstance(got, AcceptedLine), got
        assert (got.priority, got.allow_third_party) == ("bulk", True)


def test_a_gpt_image_line_may_be_bulk_but_not_urgent() -> None:
    for parser in parsers():
        bulk = parse(parser, {"prompt": "a cat", "model": "gpt-image-2", "priority": "bulk"})
        assert isinstance(bulk, AcceptedLine), bulk
        urgent = parse(parser, {"prompt": "a cat", "model": "gpt-image-2", "priority": "urgent"})
        assert isinstance(urgent, RejectedLine)
        assert "expected normal or bulk for gpt-image-2" in urgent.reason
