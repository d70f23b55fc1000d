"""Batch manifests: a batch's items before they are item records. Pure.

Intake does not write one item document per batch-lane line: a million writes do not fit
in one function invocation (Firestore's 500/50/5 ramp-up rule alone forbids it), and most
of those documents would only be rewritten at submission. Instead, next to each staged
request file, it writes the batch's manifest: one compact JSON array per request, in the
order of the request file, holding what an item record needs beyond what its batch record
already says (job, batch id, model, attempt, lane). The records are created from the
manifest when the batch is claimed for submission, or when it is cancelled or rejected
before that (pipeline.materialize.materialize_items).

A line is `[key, line_no, request_hash, prompt_preview, aspect_ratio, image_size,
estimated_usd]`, e.g. `["sku-1",3,"9f2c…","a red bicycle","16:9","2K",0.0672]`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Final, NamedTuple

from bananabatch.core.records import BatchRecord, ItemRecord
from bananabatch.core.states import ItemState
from bananabatch.errors import PermanentError

FIELDS: Final = (
    "key",
    "line_no",
    "request_hash",
    "prompt_preview",
    "aspect_ratio",
    "image_size",
    "estimated_usd",
)
LANE_BATCH: Final = "batch"


class ManifestEntry(NamedTuple):
    key: str
    line_no: int
    request_hash: str | None
    prompt_preview: str
    aspect_ratio: str | None
    image_size: str | None
    estimated_usd: float


def encode_entry(entry: ManifestEntry) -> str:
    """One manifest line, newline included. The reference: intake writes the same bytes
    from parts (core.staging.manifest_lines)."""
    return json.dumps(list(entry), ensure_ascii=False, separators=(",", ":")) + "\n"


def decode_entry(raw: bytes | str, *, where: str) -> ManifestEntry:
    """One manifest line back; where names the object and line for the error."""
    try:
        values: Any = json.loads(raw)
    except ValueError as exc:
        raise PermanentError(f"manifest {where}: not valid JSON: {exc}") from None
    if not isinstance(values, list) or len(values) != len(FIELDS):
        raise PermanentError(
            f"manifest {where}: expected a JSON array of {len(FIELDS)} values "
            f"({', '.join(FIELDS)}); found {str(values)[:120]}"
        )
    key, line_no, request_hash, preview, aspect, size, usd = values
    checks = (
        (key, str, False),
        (line_no, int, False),
        (request_hash, str, True),
        (preview, str, False),
        (aspect, str, True),
        (size, str, True),
    )
    for (value, kind, nullable), name in zip(checks, FIELDS, strict=False):
        if (value is None and not nullable) or (
            value is not None and (not isinstance(value, kind) or isinstance(value, bool))
        ):
            raise PermanentError(
                f"manifest {where}: field {name}: expected {kind.__name__}"
                f"{' or null' if nullable else ''}; found {value!r}"
            )
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd):
        raise PermanentError(
            f"manifest {where}: field estimated_usd: expected a number; found {usd!r}"
        )
    return ManifestEntry(key, line_no, request_hash, preview, aspect, size, float(usd))


def item_from_entry(
    entry: ManifestEntry,
    batch: BatchRecord,
    state: ItemState,
    now: datetime,
    *,
    reason: str | None = None,
) -> ItemRecord:
    """The item record intake used to write for this line, in the given state."""
    return ItemRecord(
        job_id=batch.job_id,
        key=entry.key,
        line_no=entry.line_no,
        state=state,
        model=batch.model,
        aspect_ratio=entry.aspect_ratio,
        image_size=entry.image_size,
        prompt_preview=entry.prompt_preview,
        request_hash=entry.request_hash,
        batch_id=batch.batch_id,
        attempt=batch.attempt,
        estimated_usd=entry.estimated_usd,
        lane=LANE_BATCH,
        reason=reason,
        updated_at=now,
    )
