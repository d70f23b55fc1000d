"""Result lines parsed with the image data lifted out (providers/_lines.py): whatever the
line, the row or the error is exactly what `_common.parse_row` gives."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.providers import _lines
from bananabatch.providers._common import parse_row, result_rows
from bananabatch.providers._lines import LIFT_MIN_CHARS, parse_line

DATA = base64.b64encode(random.Random(7).randbytes(3 * LIFT_MIN_CHARS)).decode()


def _image_row(data: str = DATA, **extra: Any) -> dict[str, Any]:
    return {
        "key": "k1",
        "response": {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "here it is"},
                            {"inlineData": {"mimeType": "image/png", "data": data}},
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1120},
        },
        **extra,
    }


def _as_text(node: Any) -> Any:
    """A copy of the row with every memoryview read as the ASCII text it holds (without
    recursion: rows may nest deeper than the recursion limit allows)."""
    root = [node]
    todo: list[tuple[Any, Any]] = [(root, 0)]
    while todo:
        container, slot = todo.pop()
        value = container[slot]
        if isinstance(value, memoryview):
            container[slot] = str(value, "ascii")
        elif isinstance(value, dict):
            container[slot] = mapping = dict(value)
            todo.extend((mapping, key) for key in mapping)
        elif isinstance(value, list):
            container[slot] = items = list(value)
            todo.extend((items, index) for index in range(len(items)))
    return root[0]


def _same_as_parse_row(line: bytes) -> None:
    expected = parse_row(3, line)
    assert parse_line(3, line) == expected
    # With views, the same row once each view is read as its text; and only an ASCII
    # line's lifted strings are views.
    viewed = _lines.parse_image_line(3, line)
    assert viewed.malformed == expected.malformed
    assert _as_text(viewed.row) == expected.row
    if not line.isascii():
        assert viewed == expected


def _views_in(node: Any) -> list[memoryview]:
    views, todo = [], [node]
    while todo:
        value = todo.pop()
        if isinstance(value, memoryview):
            views.append(value)
        elif isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return views


def test_an_image_line_is_parsed_on_the_fast_path_to_the_same_row() -> None:
    line = json.dumps(_image_row()).encode()

    assert _lines._parse_lifted(line) is not None  # the fast path vouched for it
    _same_as_parse_row(line)


@pytest.mark.parametrize(
    "separators", [(", ", ": "), (",", ":"), (" , ", " :  "), (",\t", ":\t")], ids=repr
)
def test_any_whitespace_around_the_data_key(separators: tuple[str, str]) -> None:
    line = json.dumps(_image_row(), separators=separators).encode()

    assert _lines._parse_lifted(line) is not None
    _same_as_parse_row(line)


def test_several_images_and_a_thought_image_are_all_restored() -> None:
    row = _image_row()
    parts = row["response"]["candidates"][0]["content"]["parts"]
    other = base64.b64encode(random.Random(8).randbytes(2 * LIFT_MIN_CHARS)).decode()
    parts.insert(0, {"thought": True, "inlineData": {"mimeType": "image/png", "data": other}})
    parts.append({"inlineData": {"mimeType": "image/jpeg", "data": other[::-1]}})
    line = json.dumps(row).encode()

    assert _lines._parse_lifted(line) is not None
    _same_as_parse_row(line)


@pytest.mark.parametrize(
    "line",
    [
        # JSON may escape "/" as "\/": the string must go through the real scanner.
        json.dumps(_image_row()).replace("/", "\\/").encode(),
        # The placeholder text itself appears elsewhere in the line.
        json.dumps(_image_row(note="~bananabatch-lifted-0~")).encode(),
        json.dumps(_image_row(note="\\u007ebananabatch-lifted-0~")).encode(),
        # A key that merely ends in data", with the quote escaped.
        json.dumps({"key": "k", 'x"data': DATA}).encode(),
        # The data string as a key, not a value.
        ('{"key": "k", "data": "' + DATA + '", "' + DATA + '": 1}').encode(),
        # Truncated inside the data, and after it.
        json.dumps(_image_row()).encode()[: LIFT_MIN_CHARS + 200],
        json.dumps(_image_row()).encode()[:-3],
        # Not an object; two objects; trailing garbage.
        json.dumps([_image_row()]).encode(),
        json.dumps(_image_row()).encode() + b" " + json.dumps(_image_row()).encode(),
        json.dumps(_image_row()).encode() + b"x",
        # Encodings json.loads(bytes) accepts and a strict UTF-8 decode does not.
        b"\xef\xbb\xbf" + json.dumps(_image_row()).encode(),
        json.dumps(_image_row()).encode("utf-16"),
        json.dumps(_image_row(note="\ud800"), ensure_ascii=False).encode("utf-8", "surrogatepass"),
        # Invalid UTF-8 inside and outside the data.
        json.dumps(_image_row(data=DATA[:100] + "\udcff" + DATA[100:]), ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        ),
        json.dumps(_image_row(note="\udcff"), ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        ),
        # Non-ASCII text in the data, and a short data string (not lifted).
        json.dumps(_image_row(data=DATA + "é"), ensure_ascii=False).encode(),
        json.dumps(_image_row(data="aGVsbG8=")).encode(),
        # Backslash runs right before the closing quote of other strings.
        json.dumps(_image_row(note="ends in a backslash \\", other='quote \\" inside')).encode(),
        b"",
        b"{}",
        b"null",
    ],
    ids=lambda line: repr(line[:12]) + f"...{len(line)}",
)
def test_odd_lines_give_exactly_what_parse_row_gives(line: bytes) -> None:
    _same_as_parse_row(line)


def test_deep_nesting_beside_lifted_data_gives_what_parse_row_gives() -> None:
    nested: Any = {"data": DATA}
    for _ in range(900):
        nested = [nested]
    line = json.dumps({"key": "k", "deep": nested, "data": DATA}).encode()

    _same_as_parse_row(line)


def test_with_views_the_image_data_is_a_view_of_the_line_not_a_copy() -> None:
    line = json.dumps(_image_row()).encode()

    row = _lines.parse_image_line(0, line).row
    assert row is not None
    (view,) = _views_in(row)
    assert view.readonly
    assert view.obj is line  # no copy of the megabytes
    assert view == DATA.encode()
    # Without views (the default, and the Vertex adapter's), a str as parse_row gives.
    assert _views_in(parse_line(0, line).row) == []


def test_with_views_a_line_with_any_non_ascii_byte_keeps_str_values() -> None:
    line = json.dumps(_image_row(note="café"), ensure_ascii=False).encode()

    viewed = _lines.parse_image_line(0, line)
    assert _views_in(viewed.row) == []
    assert viewed == parse_row(0, line)


def test_an_escaped_data_string_is_not_lifted() -> None:
    line = json.dumps(_image_row()).replace("/", "\\/").encode()

    assert _lines._data_strings(line) == []


def test_a_raw_control_character_in_lifted_data_still_ends_malformed() -> None:
    # The one check the fast path does not repeat: strict JSON forbids raw control
    # characters in strings; the strict base64 decode downstream rejects them too.
    from bananabatch.core.results import OutcomeKind, classify_row

    line = json.dumps(_image_row()).encode().replace(DATA[:8].encode(), DATA[:4].encode() + b"\t")
    fast = parse_line(0, line)

    assert parse_row(0, line).row is None
    assert fast.row is not None
    assert classify_row(fast.row).kind is OutcomeKind.MALFORMED
    viewed = _lines.parse_image_line(0, line).row
    assert viewed is not None
    assert classify_row(viewed).kind is OutcomeKind.MALFORMED


def test_result_rows_skips_blank_lines_and_counts_skipped_rows_like_common() -> None:
    lines = [json.dumps(_image_row()).encode(), b"", b"  ", b"{oops", b"[1]", b'{"key": "d"}']

    for start in range(5):
        assert list(result_rows(lines, start_line=start, parse=_lines.parse_line)) == list(
            result_rows(lines, start_line=start)
        )
        viewed = list(result_rows(lines, start_line=start, parse=_lines.parse_image_line))
        assert [(r.line_no, _as_text(r.row), r.malformed) for r in viewed] == [
            (r.line_no, r.row, r.malformed) for r in result_rows(lines, start_line=start)
        ]


_TEXT = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
    | st.sampled_from(['"', "\\", "/", "~bananabatch-lifted-0~", "data", '"data": "'])
    | st.builds(lambda: DATA),
    max_size=5,
).map("".join)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    extra=st.dictionaries(_TEXT, _JSON, max_size=4),
    ensure_ascii=st.booleans(),
    compact=st.booleans(),
    escape_slash=st.booleans(),
)
def test_random_rows_round_trip_exactly(
    extra: dict[str, Any], ensure_ascii: bool, compact: bool, escape_slash: bool
) -> None:
    row = _image_row(**{k: v for k, v in extra.items() if k not in ("key", "response")})
    text = json.dumps(
        row, ensure_ascii=ensure_ascii, separators=(",", ":") if compact else (", ", ": ")
    )
    if escape_slash:
        text = text.replace("/", "\\/")
    line = text.encode("utf-8", "surrogatepass")

    _same_as_parse_row(line)
