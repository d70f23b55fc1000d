"""How a rejection is said: the exception that carries one, and values shown in it.

Pure. Reasons end up in UTF-8 files and in terminals, so a value is shown as JSON, cut
short, always encodable, with bidi controls escaped.
"""

from __future__ import annotations

import json
import re
from typing import Final

# Shown escaped in a reason: a raw one would reorder the text around it wherever it is read.
_SHOWN_ESCAPED: Final = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


class Reject(Exception):
    """One rejection of a line: the field it is about (None for the whole line) and why.
    The parser adds the line number."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def show(value: object) -> str:
    """A value as JSON, cut short, and always encodable (reasons end up in UTF-8 files)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if not encodable(text):
        text = json.dumps(value, default=str)
    elif not text.isascii():
        text = _SHOWN_ESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= 80 else text[:77] + "..."


def encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (it has no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_type(value: object) -> str:
    """The JSON type of a value that is not an object, with its article."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"
