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
from dataclasses import dataclass, field
from typing import Any, Final

from bananabatch.core.intake import PREVIEW_CHARS, IntakeLimits, iter_raw_lines
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


# The gallery searches prompts up to this long (its cards show three lines of them).
GALLERY_PROMPT_CHARS: Final = 1_000


@dataclass
class LineDetails:
    """What the reports take from the input lines again (none of it is in the records)."""

    # {line number: the line's metadata}, for the lines that have one.
    metadata: dict[int, Any] = field(default_factory=dict)
    # {line number: the prompt, up to GALLERY_PROMPT_CHARS}, for the simple lines among the
    # first `prompts_up_to` whose prompt is longer than the records' preview.
    prompts: dict[int, str] = field(default_factory=dict)


def metadata_by_line(rt: Runtime, job: JobRecord) -> dict[int, Any]:
    """{line number: the line's metadata} for the lines of the input that have one."""
    return line_details(rt, job).metadata


def line_details(rt: Runtime, job: JobRecord, *, prompts_up_to: int = 0) -> LineDetails:
    """Each line's metadata, and the longer prompts of the first `prompts_up_to` lines."""
    found = LineDetails()
    try:
        with rt.objects.open_read(job.source.bucket, job.source.name) as stream:
            for line_no, raw in iter_raw_lines(
                stream, max_line_bytes=IntakeLimits().max_line_bytes
            ):
                # Most lines: no parse. A prompt longer than its preview makes a long line.
                wants_prompt = line_no <= prompts_up_to and len(raw) > PREVIEW_CHARS
                if b'"metadata"' not in raw and not wants_prompt:
                    continue
                try:
                    doc = json.loads(raw)
                except (ValueError, RecursionError):
                    continue  # intake rejected it already, with the reason
                if not isinstance(doc, dict):
                    continue
                if doc.get("metadata"):
                    found.metadata[line_no] = doc["metadata"]
                prompt = doc.get("prompt")
                if wants_prompt and isinstance(prompt, str) and len(prompt) > PREVIEW_CHARS:
                    found.prompts[line_no] = prompt[:GALLERY_PROMPT_CHARS]
    except BananaError:
        return LineDetails()
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
