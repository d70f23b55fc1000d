"""Result lines to rows, without running the JSON scanner over the inline image data.

A result line is a few hundred bytes of structure around one or two base64 strings of
megabytes. `json.loads(line)` on a 2 MB line cost 2.2 ms, as much as decoding the base64
itself (profiled, see README): it decodes bytes with the `surrogatepass` error handler,
which takes CPython's slow UTF-8 path, and its scanner then copies every character of the
image string once more. Here the long strings are lifted out first: the line is parsed with
each of them replaced by a short placeholder, and the placeholders are then swapped back
for the strings, decoded straight from the line (0.16 ms for the same line).

Only the values of "data" fields (Gemini's `inlineData.data`: the image) and "b64_json"
fields (OpenAI's `data[].b64_json`) are lifted, and only long ones without a backslash,
whose JSON value is then their raw text. The fast result is used only when every placeholder
came back as a whole string value, exactly once; anything else (escapes, invalid UTF-8,
invalid JSON, a placeholder turning up elsewhere) falls back to the plain `parse_row`, so
the row, or the error, is what it would have been. The one check not repeated on a lifted
string is strict JSON's ban on raw control characters (it would cost a pass over megabytes):
such a character is not base64 either, so the strict base64 decode in `core.results` still
turns the row into MALFORMED, with that reason instead of "not JSON".

With `views=True` (the Gemini collector's `parse_image_line`) a lifted string of an
all-ASCII line is put back as a read-only memoryview of its bytes in the line instead of a
str: for ASCII text the bytes are the characters, so the row says the same, and the 2 MB
copy into a new str (with the page faults of fresh memory) is saved; `core.results` and
`core.b64` read either. That saved about 5% of the collector's CPU (paired rounds, see
README). A line with any non-ASCII byte gets str values, exactly as without views. Only
for callers that hand the row to nothing but `core.results.classify_row` (a view is not
JSON-serialisable: the Vertex adapter fingerprints echoed requests, so it keeps str).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final

from bananabatch.ports import ResultRow
from bananabatch.providers._common import parse_row

# Strings at least this long are lifted; below it the scanner is cheaper than the bookkeeping.
LIFT_MIN_CHARS: Final = 16 * 1024
_BACKSLASH: Final = ord("\\")
# What precedes a lifted string: the "data" (Gemini) or "b64_json" (OpenAI) key and its
# colon (the tail of the line before the opening quote is matched, so a few bytes at most
# are scanned).
_DATA_KEY: Final = re.compile(rb'"(?:data|b64_json)"\s*:\s*\Z')
_KEY_WINDOW: Final = 64
# Not in the base64 alphabet, so no lifted string can contain a placeholder.
_PLACEHOLDER: Final = "~bananabatch-lifted-{}~"
_PLACEHOLDER_HEAD: Final = "~bananabatch-lifted-"


def parse_line(line_no: int, line: bytes, *, views: bool = False) -> ResultRow:
    """The same ResultRow as `_common.parse_row(line_no, line)`, faster on lines that carry
    long strings; with `views`, lifted strings of an ASCII line come back as memoryviews."""
    row = _parse_lifted(line, views=views and line.isascii())
    if row is None:
        return parse_row(line_no, line)
    return ResultRow(line_no, row)


def parse_image_line(line_no: int, line: bytes) -> ResultRow:
    """`parse_line` with views: for rows that only `classify_row` reads."""
    return parse_line(line_no, line, views=True)


def _parse_lifted(line: bytes, *, views: bool = False) -> dict[str, Any] | None:
    """The line's JSON object, or None when the fast path cannot vouch for its answer."""
    spans = _data_strings(line)
    try:
        if spans:
            pieces: list[bytes] = []
            start = 0
            for index, (begin, end) in enumerate(spans):
                pieces.append(line[start:begin])
                pieces.append(_PLACEHOLDER.format(index).encode("ascii"))
                start = end
            pieces.append(line[start:])
            text = b"".join(pieces).decode("utf-8")
        else:
            text = line.decode("utf-8")
        row = json.loads(text)
        if not isinstance(row, dict):
            return None
        if not spans:
            return row
        lifted = {_PLACEHOLDER.format(i): span for i, span in enumerate(spans)}
        swapped = _restore(row, lifted, memoryview(line), views)
    except (ValueError, RecursionError):  # ValueError covers Unicode and JSON decode errors
        return None
    # Every placeholder must have come back as one whole string value, once: then each
    # lifted span was exactly the content of one string token, and nothing else moved.
    if swapped != len(spans) or lifted:
        return None
    return row


def _data_strings(line: bytes) -> list[tuple[int, int]]:
    """(start, end) of the contents of "data" strings at least LIFT_MIN_CHARS long with no
    backslash. A walk over the quotes: in valid JSON every unescaped quote opens or closes
    a string; whatever else the line holds, the check in _parse_lifted catches it."""
    spans: list[tuple[int, int]] = []
    find = line.find
    pos = 0
    while True:
        opening = find(b'"', pos)
        if opening < 0:
            return spans
        closing = opening
        while True:
            closing = find(b'"', closing + 1)
            if closing < 0:
                return spans
            # An odd run of backslashes before a quote escapes it; an even one does not.
            run = 0
            while line[closing - 1 - run] == _BACKSLASH:
                run += 1
            if run % 2 == 0:
                break
        begin = opening + 1
        if (
            closing - begin >= LIFT_MIN_CHARS
            and find(b"\\", begin, closing) < 0
            and _DATA_KEY.search(line, max(0, opening - _KEY_WINDOW), opening) is not None
        ):
            spans.append((begin, closing))
        pos = closing + 1


def _restore(
    node: Any, lifted: dict[str, tuple[int, int]], line: memoryview, views: bool = False
) -> int:
    """Swap placeholders found as string values (not keys) back for the lifted text,
    removing each from `lifted`. Returns how many values looked like a placeholder, so one
    met twice, or any other string that merely starts like one, spoils the count."""
    count = 0
    if isinstance(node, dict):
        items: Iterable[tuple[Any, Any]] = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return 0
    for slot, value in list(items):
        if isinstance(value, str):
            if value.startswith(_PLACEHOLDER_HEAD):
                count += 1
                span = lifted.pop(value, None)
                if span is not None:
                    # Decoded from a view: slicing the bytes first would copy megabytes
                    # into fresh pages only to copy them again.
                    text = line[span[0] : span[1]]
                    node[slot] = text if views else str(text, "utf-8")
        elif isinstance(value, dict | list):
            count += _restore(value, lifted, line, views)
    return count
