"""Pieces every batch provider needs: splitting a streamed result file into rows with bounded
memory, and reading provider timestamps and states. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Final

from bananabatch.core.states import BatchState
from bananabatch.ports import ResultRow

# Provider state suffixes (after BATCH_STATE_ / JOB_STATE_) that mean "finished".
_TERMINAL: Final = {
    "SUCCEEDED": BatchState.SUCCEEDED,
    "FAILED": BatchState.FAILED,
    "CANCELLED": BatchState.CANCELLED,
    "EXPIRED": BatchState.EXPIRED,
}


def batch_state(provider_state: str) -> BatchState:
    """BATCH_STATE_* (wire) or JOB_STATE_* (SDK) to ours. Anything not terminal, including
    states we have never seen, is RUNNING: the batch is still the provider's business."""
    suffix = provider_state.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
    return _TERMINAL.get(suffix, BatchState.RUNNING)


def parse_time(value: object) -> datetime | None:
    """RFC 3339 as the API writes it (Z suffix, up to nine fractional digits)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines from a byte stream, without their newline. A line's pieces are joined once, so
    a 50 MB line costs one copy, not a quadratic string of re-concatenations."""
    pending: list[bytes] = []
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if start < len(chunk):
                    pending.append(chunk[start:])
                break
            piece = chunk[start:end]
            if pending:
                pending.append(piece)
                piece = b"".join(pending)
                pending = []
            yield piece
            start = end + 1
    if pending:
        yield b"".join(pending)


def result_rows(
    lines: Iterable[bytes],
    *,
    start_line: int = 0,
    parse: Callable[[int, bytes], ResultRow] | None = None,
) -> Iterator[ResultRow]:
    """ResultRows from raw lines, skipping blank ones and the first start_line rows (which
    are counted but not parsed); `parse` defaults to parse_row."""
    parse_one = parse or parse_row
    line_no = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line_no >= start_line:
            yield parse_one(line_no, line)
        line_no += 1


def parse_row(line_no: int, line: bytes) -> ResultRow:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        preview = line[:80].decode("utf-8", "replace")
        return ResultRow(
            line_no, None, malformed=f"result line {line_no}: not JSON ({exc}); starts {preview!r}"
        )
    if not isinstance(row, dict):
        return ResultRow(
            line_no,
            None,
            malformed=f"result line {line_no}: expected a JSON object, found {type(row).__name__}",
        )
    return ResultRow(line_no, row)
