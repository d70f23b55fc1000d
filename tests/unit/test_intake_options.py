"""Every option in rules.OptionFields, whatever it is, is taken the same way: by both line
forms, by the reference and the fast parser alike, carried in AcceptedLine.options and
LineShape.options, defaulted from rules.LineOptions and rejected by name when of the wrong
type. These tests read the options from rules.py, so an option added there is held to all of
this without a change here."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, Literal, get_args, get_origin

import pytest
from typing_extensions import get_type_hints

from bananabatch.core.intake import (
    AcceptedLine,
    FastLine,
    LineOptions,
    LineParser,
    ReferenceParser,
    RejectedLine,
)
from bananabatch.core.intake.rules import DEFAULT_OPTIONS, OPTION_NAMES, OptionFields

MODEL = "gemini-3-pro-image"
NATIVE_REQUEST = {"contents": [{"parts": [{"text": "a fox"}]}]}
LITERAL: object = Literal


def other_value(name: str) -> Any:
    """A value of the option's type that is not its default."""
    kind = get_type_hints(OptionFields)[name]
    default = getattr(DEFAULT_OPTIONS, name)
    if kind is bool:
        return not default
    if get_origin(kind) is LITERAL:
        return next(value for value in get_args(kind) if value != default)
    raise AssertionError(f"add a non-default value for option {name} of type {kind}")


def both(raw: bytes, line_no: int = 2) -> tuple[Any, Any]:
    fast = LineParser(default_model=MODEL).parse_fast(line_no, raw)
    reference = ReferenceParser(default_model=MODEL).parse(line_no, raw)
    return fast, reference


def test_every_option_has_a_default_and_a_field() -> None:
    assert tuple(field.name for field in fields(LineOptions)) == OPTION_NAMES
    assert LineOptions() == DEFAULT_OPTIONS


def test_a_line_without_options_gets_every_default() -> None:
    fast, reference = both(b'{"key": "a", "prompt": "x"}')
    assert isinstance(fast, FastLine)
    assert isinstance(reference, AcceptedLine)
    assert fast.shape.options == reference.options == DEFAULT_OPTIONS


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_an_option_set_on_a_simple_line_is_carried_by_both_parsers(name: str) -> None:
    value = other_value(name)
    fast, reference = both(json.dumps({"key": "a", "prompt": "x", name: value}).encode())
    assert isinstance(reference, AcceptedLine), reference
    assert getattr(reference.options, name) == value
    assert isinstance(fast, FastLine), fast
    assert getattr(fast.shape.options, name) == value
    assert fast.accepted() == reference


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_lines_that_differ_only_in_an_option_have_different_shapes(name: str) -> None:
    parser = LineParser(default_model=MODEL)
    plain = parser.parse_fast(2, b'{"prompt": "x"}')
    set_ = parser.parse_fast(3, json.dumps({"prompt": "x", name: other_value(name)}).encode())
    again = parser.parse_fast(4, json.dumps({"prompt": "y", name: other_value(name)}).encode())
    assert isinstance(plain, FastLine)
    assert isinstance(set_, FastLine)
    assert isinstance(again, FastLine)
    assert set_.shape is not plain.shape
    assert again.shape is set_.shape
    assert parser.parse_chunk(5, [b'{"prompt": "z"}']).shapes == [plain.shape]


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_a_native_line_takes_every_option_too(name: str) -> None:
    value = other_value(name)
    fast, reference = both(json.dumps({"request": NATIVE_REQUEST, name: value}).encode())
    assert isinstance(reference, AcceptedLine), reference
    assert reference.native
    assert getattr(reference.options, name) == value
    assert fast == reference


@pytest.mark.parametrize("name", OPTION_NAMES)
@pytest.mark.parametrize("form", ["simple", "native"])
def test_an_option_of_the_wrong_type_is_rejected_naming_it(name: str, form: str) -> None:
    doc: dict[str, Any] = {"prompt": "x"} if form == "simple" else {"request": NATIVE_REQUEST}
    doc[name] = [1]  # no option is a list
    fast, reference = both(json.dumps(doc).encode())
    assert isinstance(reference, RejectedLine)
    assert reference.field == name
    assert reference.reason.startswith(f'line 2, field "{name}": expected ')
    assert fast == reference
