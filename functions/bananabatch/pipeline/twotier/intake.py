"""Intake of a two-tier file: the header read, the file turned into a draft file that intake
reads in its place, the lines kept for stage two, and what only a two-tier file refuses
added to rejected.jsonl.

The draft file has a line for each line of the file, at the same line number (the header
and refused lines become blank lines, which intake skips), holding the line's first
candidate: so every item keeps its line's number, and results, costs.csv and the gallery
join each candidate to the line's metadata. The other candidates of each accepted line
are staged right after, as batches of their own, held until the job is admitted like
intake's. Deterministic, so a redone intake writes and stages the same."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bananabatch.core import records as rec
from bananabatch.core.intake import IntakeLimits, iter_raw_lines
from bananabatch.core.pricing import Lane
from bananabatch.core.records import JobRecord, SourceObject
from bananabatch.core.staging import IntakeTally
from bananabatch.core.twotier.expand import Expanded, Refused, TierLine, expand_line, more_drafts
from bananabatch.core.twotier.spec import (
    MAX_LINES,
    SPEC_OPTION,
    SpecError,
    TwoTierSpec,
    header_of,
    line_key_of,
    resolve_spec,
)
from bananabatch.errors import NotFound
from bananabatch.log import get_logger
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.twotier import store
from bananabatch.pipeline.twotier.stage import RoundRequest, next_index, stage_requests

log = get_logger(__name__)
_HEAD_BYTES = 64 * 1024
REJECTED_NAME = "rejected.jsonl"


@dataclass
class Prepared:
    spec: TwoTierSpec
    # The job as intake reads it: its source is the draft file.
    job: JobRecord
    lines: list[TierLine] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def prepare(rt: Runtime, job: JobRecord) -> Prepared | None:
    """The two-tier reading of the job's file, its draft file written; None when the job is
    not two-tier. Raises core.twotier.spec.SpecError for a header that cannot be used."""
    with rt.objects.open_read(job.source.bucket, job.source.name) as stream:
        first = stream.readline(_HEAD_BYTES).lstrip(b"\xef\xbb\xbf")
    header = header_of(first)
    spec = resolve_spec(header, job.options)
    if spec is None:
        return None
    derived = SourceObject(
        bucket=rt.settings.results_bucket,
        name=store.name(job.job_id, store.DRAFTS_NAME),
        generation=job.source.generation,
    )
    prepared = Prepared(spec, job.model_copy(update={"source": derived}))
    limits = IntakeLimits()
    with (
        rt.objects.open_read(job.source.bucket, job.source.name) as source,
        rt.objects.open_write(
            derived.bucket, derived.name, content_type="application/jsonl"
        ) as sink,
    ):
        for line_no, raw in iter_raw_lines(source, max_line_bytes=limits.max_line_bytes):
            out = (
                None
                if (line_no == 1 and header is not None) or not raw.strip()
                else (expand_line(raw.decode("utf-8", "replace"), line_no, spec))
            )
            if isinstance(out, Expanded):
                if len(prepared.lines) >= MAX_LINES:
                    raise SpecError(
                        f"a two-tier file takes at most {MAX_LINES:,} lines; line {line_no} is "
                        "past it: split the file"
                    )
                prepared.lines.append(out.line)
                sink.write(out.drafts[0].encode() + b"\n")
            elif isinstance(out, Refused):
                prepared.refused.append(out)
                sink.write(b"\n")
            elif out is None:
                sink.write(b"\n")
            else:
                sink.write(raw + b"\n")
    store.write_lines(rt, job.job_id, store.LINES_NAME, (ln.to_json() for ln in prepared.lines))
    return prepared


def finish(rt: Runtime, prepared: Prepared, tally: IntakeTally) -> Mapping[str, Any]:
    """After intake read the draft file: the other candidates of its accepted lines staged
    (held until admission), the refusals joined to rejected.jsonl, both stages' expected
    cost in the estimate (so the reservation covers the finals), and the spec kept on the
    job. Returns the job fields to stage with what intake counted."""
    job, spec = prepared.job, prepared.spec
    bucket = rt.settings.results_bucket
    rejected_name = rec.results_prefix(job.job_id) + REJECTED_NAME
    try:
        rejected = rt.objects.read_bytes(bucket, rejected_name)
    except NotFound:
        rejected = b""
    docs = [json.loads(raw) for raw in rejected.splitlines() if raw.strip()]
    refused_keys = {line_key_of(doc["key"]) for doc in docs if isinstance(doc.get("key"), str)}
    accepted = [line for line in prepared.lines if line.key not in refused_keys]
    requests = [
        RoundRequest(key, line.line_no, line.prompt_preview, line.aspect_ratio, None, request)
        for line in accepted
        for key, request in more_drafts(line, range(2, line.candidates + 1), spec)
    ]
    first = next_index(rt, job.job_id)
    made = stage_requests(
        rt, job, spec.draft_model, requests, first_index=first, held=True, now=rt.now()
    )
    draft_batch = rt.prices.image_price(spec.draft_model, None, Lane.BATCH)
    draft_standard = rt.prices.image_price(spec.draft_model, None, Lane.STANDARD)
    tally.estimates.add(draft_batch, draft_standard, count=len(requests))
    tally.lines += len(requests)
    tally.accepted += len(requests)
    for line in accepted:
        charged = rt.prices.image_price(spec.final_model, line.image_size, Lane.BATCH)
        standard = rt.prices.image_price(spec.final_model, line.image_size, Lane.STANDARD)
        tally.estimates.add(charged, standard, count=line.keep)
    if prepared.refused:
        # In line order, as intake writes it: the reports merge it with the items by line.
        docs += [json.loads(r.to_json()) for r in prepared.refused]
        docs.sort(key=lambda doc: int(doc["line"]))
        data = "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs).encode()
        rt.objects.write_bytes(bucket, rejected_name, data, content_type="application/jsonl")
        tally.lines += len(prepared.refused)
        tally.rejected += len(prepared.refused)
    log.info(
        "two-tier job staged",
        extra={"lines": len(accepted), "candidates": len(requests) + len(accepted)},
    )
    return {
        "options": {**job.options, SPEC_OPTION: spec.to_json()},
        "batch_count": first + len(made),
    }
