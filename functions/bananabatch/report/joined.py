"""What joins a job's outputs back to the user's catalog: each line's `metadata` (SKU,
campaign, ...) beside its result, and a costs CSV a spreadsheet opens.

The metadata is not carried through the pipeline's records (a million-line file would
carry it through every write); it is read again from the input object, by line number,
when the reports are written. An input object deleted meanwhile leaves it empty.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Final

from bananabatch.core.intake import IntakeLimits, iter_raw_lines
from bananabatch.core.records import JobRecord
from bananabatch.errors import BananaError
from bananabatch.pipeline.runtime import Runtime

COSTS_NAME: Final = "costs.csv"
COSTS_COLUMNS: Final = (
    "line",
    "key",
    "status",
    "model",
    "lane",
    "cost_usd",
    "image_uri",
    "metadata",
)


def metadata_by_line(rt: Runtime, job: JobRecord) -> dict[int, Any]:
    """{line number: the line's metadata} for the lines of the input that have one."""
    found: dict[int, Any] = {}
    try:
        with rt.objects.open_read(job.source.bucket, job.source.name) as stream:
            for line_no, raw in iter_raw_lines(
                stream, max_line_bytes=IntakeLimits().max_line_bytes
            ):
                if b'"metadata"' not in raw:
                    continue  # most lines: no parse
                try:
                    doc = json.loads(raw)
                except (ValueError, RecursionError):
                    continue  # intake rejected it already, with the reason
                if isinstance(doc, dict) and doc.get("metadata"):
                    found[line_no] = doc["metadata"]
    except BananaError:
        return {}
    return found


class CostsCsv:
    """costs.csv rows, one per input line, in line order."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)
        self._writer.writerow(COSTS_COLUMNS)

    def add(self, result: dict[str, Any], lane: str | None) -> None:
        metadata = result.get("metadata")
        self._writer.writerow(
            [
                result["line"],
                result.get("key") or "",
                result["status"],
                result.get("model") or "",
                lane or "",
                "" if result.get("cost_usd") is None else f"{result['cost_usd']:.6f}",
                result.get("image_uri") or "",
                json.dumps(metadata, ensure_ascii=False, sort_keys=True) if metadata else "",
            ]
        )

    def to_bytes(self) -> bytes:
        return self._buffer.getvalue().encode()
