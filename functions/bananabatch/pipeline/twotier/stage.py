"""Staging a two-tier round's requests as new batches of the job: a request file and a
manifest per batch, then its QUEUED record (create-if-absent), exactly as intake stages
(pipeline/intake/publish.py), so submission, claims, collection and retries treat them as
any other batch. Indices follow the job's highest one, so a round never reuses a batch id;
two finalizers racing compute the same indices and the same bytes, and one record wins."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bananabatch.core import records as rec
from bananabatch.core.catalog import expected_result_bytes, provider_of
from bananabatch.core.manifest import ManifestEntry, encode_entry
from bananabatch.core.pricing import Lane
from bananabatch.core.records import BatchRecord, JobRecord
from bananabatch.core.states import BatchState
from bananabatch.pipeline import budget
from bananabatch.pipeline.runtime import Runtime

# Requests per staged round batch; a final's request carries its candidate image inline.
_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RoundRequest:
    key: str
    line_no: int
    prompt_preview: str
    aspect_ratio: str | None
    image_size: str | None
    request: dict[str, Any]


def next_index(rt: Runtime, job_id: str) -> int:
    return max((b.index for b in rt.repo.batches(job_id=job_id)), default=-1) + 1


def stage_requests(
    rt: Runtime,
    job: JobRecord,
    model: str,
    requests: Sequence[RoundRequest],
    *,
    first_index: int,
    held: bool,
    now: datetime,
) -> list[BatchRecord]:
    """Stage the requests for `model` in batches from first_index on; `held` batches wait
    for the job's admission (budget.HOLD_UNTIL), as intake's do."""
    encode = rt.model_provider(model).encode_request
    per_batch = max(1, rt.settings.max_requests_per_batch)
    price = {r.image_size: rt.prices.image_price(model, r.image_size, Lane.BATCH) for r in requests}
    made: list[BatchRecord] = []
    chunk: list[tuple[str, str]] = []
    size = 0
    index = first_index

    def close() -> None:
        nonlocal chunk, size, index
        if chunk:
            made.append(_publish(rt, job, model, index, chunk, size, held=held, now=now))
            index += 1
        chunk, size = [], 0

    for r in requests:
        line = json.dumps(encode(r.key, r.request), separators=(",", ":"), ensure_ascii=False)
        entry = ManifestEntry(
            r.key,
            r.line_no,
            None,
            r.prompt_preview,
            r.aspect_ratio,
            r.image_size,
            price[r.image_size],
        )
        if chunk and (len(chunk) >= per_batch or size + len(line) > _MAX_BYTES):
            close()
        chunk.append((line, encode_entry(entry)))
        size += len(line.encode()) + 1
    close()
    return made


def _publish(
    rt: Runtime,
    job: JobRecord,
    model: str,
    index: int,
    lines: list[tuple[str, str]],
    size: int,
    *,
    held: bool,
    now: datetime,
) -> BatchRecord:
    bucket = rt.settings.results_bucket
    request_object = rec.request_object_name(job.job_id, index)
    manifest_object = rec.manifest_object_name(job.job_id, index)
    rt.objects.write_bytes(
        bucket,
        request_object,
        "".join(line + "\n" for line, _ in lines).encode(),
        content_type="application/jsonl",
    )
    rt.objects.write_bytes(
        bucket,
        manifest_object,
        "".join(entry for _, entry in lines).encode(),
        content_type="application/jsonl",
    )
    batch_id = rec.batch_id_for(job.job_id, index)
    record = BatchRecord(
        batch_id=batch_id,
        job_id=job.job_id,
        index=index,
        attempt=1,
        state=BatchState.QUEUED,
        model=model,
        provider=provider_of(model).value,
        display_name=rec.display_name_for(batch_id),
        request_object=request_object,
        manifest_object=manifest_object,
        request_count=len(lines),
        request_bytes=size,
        expected_output_bytes=expected_result_bytes(model, None) * len(lines),
        created_at=now,
        updated_at=now,
        next_submit_after=budget.HOLD_UNTIL if held else None,
    )
    rt.repo.create_batch(record)
    return record
