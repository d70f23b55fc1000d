"""Where a two-tier job keeps its own files, beside its results: the spec (on the job
record), the lines, the cull's verdicts, the finals' sources, the selection and the report.
Every file is written whole and deterministically, so a redone step writes the same bytes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

from bananabatch.core import records as rec
from bananabatch.core.records import JobRecord
from bananabatch.core.twotier.cull import Verdict
from bananabatch.core.twotier.expand import TierLine
from bananabatch.core.twotier.spec import SPEC_OPTION, TwoTierSpec
from bananabatch.errors import NotFound
from bananabatch.pipeline.runtime import Runtime

FOLDER: Final = "twotier/"
DRAFTS_NAME: Final = "drafts.jsonl"
LINES_NAME: Final = "lines.jsonl"
REFUSED_NAME: Final = "refused.jsonl"
VERDICTS_PREFIX: Final = "verdicts-"
SOURCES_PREFIX: Final = "finals-"
SELECTION_NAME: Final = "selection.json"
REPORT_NAME: Final = "report.json"
# Measured rates, one object per finished job, read by `estimate` (core/twotier/rates.py).
RATES_PREFIX: Final = "stats/twotier-rates/"


def spec_of(job: JobRecord) -> TwoTierSpec | None:
    raw = job.options.get(SPEC_OPTION)
    return TwoTierSpec.from_json(raw) if raw else None


def name(job_id: str, leaf: str) -> str:
    return rec.results_prefix(job_id) + FOLDER + leaf


def write_lines(rt: Runtime, job_id: str, leaf: str, lines: Iterable[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    rt.objects.write_bytes(
        rt.settings.results_bucket, name(job_id, leaf), data, content_type="application/jsonl"
    )


def read_lines(rt: Runtime, job_id: str, leaf: str) -> Iterator[bytes]:
    try:
        with rt.objects.open_read(rt.settings.results_bucket, name(job_id, leaf)) as stream:
            for raw in stream:
                if raw.strip():
                    yield raw
    except NotFound:
        return


def tier_lines(rt: Runtime, job_id: str) -> list[TierLine]:
    return [TierLine.from_json(raw) for raw in read_lines(rt, job_id, LINES_NAME)]


def verdicts(rt: Runtime, job_id: str) -> tuple[dict[str, Verdict], int]:
    """Every verdict so far, and how many verdict files hold them."""
    found: dict[str, Verdict] = {}
    files = 0
    prefix = name(job_id, VERDICTS_PREFIX)
    for info in sorted(rt.objects.list(rt.settings.results_bucket, prefix), key=lambda i: i.name):
        files += 1
        for raw in read_lines(rt, job_id, info.name.removeprefix(name(job_id, ""))):
            doc = json.loads(raw)
            found[doc["key"]] = Verdict(**doc)
    return found, files


def add_verdicts(rt: Runtime, job_id: str, number: int, new: Iterable[Verdict]) -> None:
    docs = [json.dumps(v.to_doc(), sort_keys=True) for v in new]
    write_lines(rt, job_id, f"{VERDICTS_PREFIX}{number:04d}.jsonl", docs)


def final_sources(rt: Runtime, job_id: str) -> dict[str, str]:
    sources: dict[str, str] = {}
    prefix = name(job_id, SOURCES_PREFIX)
    for info in rt.objects.list(rt.settings.results_bucket, prefix):
        for raw in read_lines(rt, job_id, info.name.removeprefix(name(job_id, ""))):
            doc = json.loads(raw)
            sources[doc["key"]] = doc["candidate"]
    return sources


def add_final_sources(
    rt: Runtime, job_id: str, index: int, pairs: Iterable[tuple[str, str]]
) -> None:
    docs = [json.dumps({"key": k, "candidate": c}) for k, c in pairs]
    write_lines(rt, job_id, f"{SOURCES_PREFIX}{index:04d}.jsonl", docs)


def selection(rt: Runtime, job_id: str) -> frozenset[str] | None:
    try:
        data = rt.objects.read_bytes(rt.settings.results_bucket, name(job_id, SELECTION_NAME))
    except NotFound:
        return None
    doc = json.loads(data)
    return frozenset(doc["selected"])


def write_json(rt: Runtime, object_name: str, doc: Any) -> None:
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        object_name,
        (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(),
        content_type="application/json",
    )


def report(rt: Runtime, job_id: str) -> dict[str, Any] | None:
    try:
        data = rt.objects.read_bytes(rt.settings.results_bucket, name(job_id, REPORT_NAME))
    except NotFound:
        return None
    doc: dict[str, Any] = json.loads(data)
    return doc


def cost_per_final(rt: Runtime, job_id: str) -> float | None:
    doc = report(rt, job_id)
    value = None if doc is None else doc.get("cost_per_accepted_final_image_usd")
    return float(value) if isinstance(value, int | float) else None
