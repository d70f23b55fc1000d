"""Limits on what an input line may hold, derived from the stores and parsers behind intake.

Pure. Each limit is checked at intake, before anything is paid, so that an accepted line can
always be parsed, staged, recorded and written by every store the product runs on. Each rule
has its message written once, here; the parser adds the line number and the field.

Keys become file and object names in every store: 128 characters (the documented limit) and
core.limits.MAX_KEY_BYTES of UTF-8, what the tightest store (the folder store) can hold
with the longest suffix the product adds to a key (core/limits.py says why).

JSON. Python's json module recurses once per nesting level and raises RecursionError near
1,000 levels, which is no rejection but a crash of whatever parses the line (intake, then
`estimate`). A line is pre-scanned for its bracket depth before the standard parser sees it;
pydantic's parser has its own bound (200 levels) and a line it refuses takes the slow path,
which scans first. No line the rules accept nests more than a few levels (a native request,
6; metadata, MAX_METADATA_DEPTH inside its field), so MAX_JSON_DEPTH is far from both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from bananabatch.core.limits import MAX_KEY_BYTES, utf8_length


@dataclass(frozen=True)
class IntakeLimits:
    """The limits a parser is built with (a deployment may lower them for a test)."""

    max_line_bytes: int = 1_000_000
    max_prompt_chars: int = 20_000


DEFAULT_LIMITS: Final = IntakeLimits()

MAX_KEY_CHARS: Final = 128


def key_bytes_problem(key: str) -> str | None:
    """Why a key is too long in bytes for every store to hold it, or None."""
    if key.isascii():
        return None  # at most MAX_KEY_CHARS bytes, checked apart
    size = utf8_length(key)
    if size <= MAX_KEY_BYTES:
        return None
    return (
        f"expected at most {MAX_KEY_BYTES} bytes of UTF-8 (keys become file and object "
        f"names); found {size} bytes in key ({len(key)} characters)"
    )


# --- how deep and how big a line may be ------------------------------------------------------

MAX_JSON_DEPTH: Final = 32
MAX_METADATA_DEPTH: Final = 8
MAX_METADATA_MEMBERS: Final = 256
MAX_METADATA_BYTES: Final = 16 * 1024

_OPENERS: Final = frozenset(b"[{")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
# A JSON string: quote, then runs of plain bytes and escapes (unrolled: no backtracking).
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def json_depth_problem(raw: bytes) -> str | None:
    """Why the JSON text `raw` nests too deep to be parsed safely, or None. Brackets inside
    strings do not count; the text need not be valid JSON (the parser says why later)."""
    # A line with few brackets cannot nest deep: two C-speed counts decide nearly every line.
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return None
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return (
                    f"nested deeper than the limit of {MAX_JSON_DEPTH} levels of arrays and objects"
                )
        else:
            depth -= 1
    return None


def metadata_problem(metadata: dict[str, Any]) -> str | None:
    """Why a line's metadata cannot be kept with its item (the records of both stacks hold
    it: Firestore takes maps at most 20 deep and 1 MiB per document), or None."""
    members = 0
    # (value, depth) without recursion: the depth is what is being checked.
    pending: list[tuple[Any, int]] = [(metadata, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_METADATA_DEPTH:
            return (
                f"expected at most {MAX_METADATA_DEPTH} levels of nested objects and arrays; "
                "found more"
            )
        members += len(value)
        if members > MAX_METADATA_MEMBERS:
            return (
                f"expected at most {MAX_METADATA_MEMBERS} members (object fields and array "
                "items) in all; found more"
            )
        pending.extend((child, depth + 1) for child in children)
    try:
        size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode())
    except ValueError:
        return "NaN and Infinity are not JSON numbers"
    except UnicodeEncodeError:
        return "contains an unpaired surrogate escape (\\uD800-\\uDFFF), which is not valid Unicode"
    if size > MAX_METADATA_BYTES:
        return f"expected at most {MAX_METADATA_BYTES} bytes as JSON; found {size}"
    return None
