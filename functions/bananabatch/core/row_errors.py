"""A failed result row's error: its code, canonical status name and message, read from the
"error" object (Developer API) or the "status" text (Vertex), and whether a retry may
help. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

GRPC_CODE_NAMES: Final[Mapping[int, str]] = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_GRPC_BY_NAME: Final[Mapping[str, int]] = {name: code for code, name in GRPC_CODE_NAMES.items()}
RETRYABLE_GRPC_CODES: Final = frozenset({2, 4, 8, 10, 13, 14})
# The HTTP statuses google-genai itself retries (reference §1.3).
RETRYABLE_HTTP_CODES: Final = frozenset({408, 429, 500, 502, 503, 504})
_HTTP_NAMES: Final[Mapping[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_CANONICAL_NAME: Final = re.compile(r"\b(" + "|".join(_GRPC_BY_NAME) + r")\b")
_HTTP_CODE: Final = re.compile(r"\b([1-5]\d\d)\b")


def row_failure(value: Any) -> tuple[int | None, str | None, str | None] | str | None:
    """(code, status name, message) for a row's "error" or "status" value; None when the
    value means success; a string explaining why the value cannot be read."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None  # Vertex writes "" beside a successful response
        return _parse_status_text(value)
    if isinstance(value, Mapping):
        if not value:
            return None
        code = _code(value.get("code"))
        status = value.get("status")
        status = status.upper() if isinstance(status, str) and status else None
        message = value.get("message")
        message = message if isinstance(message, str) and message else None
        if code == 0 or (code is None and status in (None, "OK") and message is None):
            return None
        if status is None and code is not None:
            status = GRPC_CODE_NAMES.get(code) if code < 100 else _HTTP_NAMES.get(code)
        return code, status, message
    return f"expected an object or a string; found {json.dumps(value)[:80]}"


def _parse_status_text(text: str) -> tuple[int | None, str | None, str | None]:
    """Vertex style: "Bad Request: 400 INVALID_ARGUMENT" and similar."""
    name_match = _CANONICAL_NAME.search(text)
    code_match = _HTTP_CODE.search(text)
    name = name_match.group(1) if name_match else None
    code = int(code_match.group(1)) if code_match else None
    if code is None and name is not None:
        code = _GRPC_BY_NAME[name]
    if name is None and code is not None:
        name = _HTTP_NAMES.get(code)
    return code, name, text


def is_retryable(code: int | None, status: str | None) -> bool:
    if code is not None:
        if code >= 100:
            return code in RETRYABLE_HTTP_CODES
        return code in RETRYABLE_GRPC_CODES
    if status is not None:
        return _GRPC_BY_NAME.get(status, -1) in RETRYABLE_GRPC_CODES
    return False


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, str) and value.strip().upper() in _GRPC_BY_NAME:
        return _GRPC_BY_NAME[value.strip().upper()]
    return None
