"""The rounds of a two-tier job: whenever it has no batch open, cull what came back, plan
(core/twotier/plan.py) and stage the next round, or say how the job ends.

Called by finalize_job_if_done before it closes a two-tier job. Each step is a function of
the items and of files written whole, so a crash or a second finalizer redoes the same:
verdicts are recomputed per line from the images; new batches take the indices after the
job's highest and are created create-if-absent; the finals' sources are written before
their batch record exists."""

from __future__ import annotations

import base64
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from bananabatch.core import records as rec
from bananabatch.core.records import ItemRecord, JobRecord
from bananabatch.core.states import BatchState, ItemState, JobState
from bananabatch.core.twotier.cull import Cull, Verdict, load_cull
from bananabatch.core.twotier.expand import TierLine, final_request, more_drafts
from bananabatch.core.twotier.plan import DELIVERED, ItemView, RoundPlan, plan_round
from bananabatch.core.twotier.spec import TwoTierSpec, candidate_number, line_key_of
from bananabatch.errors import NotFound
from bananabatch.log import get_logger
from bananabatch.pipeline import lifecycle
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.twotier import report, store
from bananabatch.pipeline.twotier.stage import RoundRequest, next_index, stage_requests

log = get_logger(__name__)


# Longer than planning and staging a round takes (reading back every image of a round).
LEASE = timedelta(minutes=10)
_OPEN = frozenset(BatchState) - {BatchState.COLLECTED}


# Writes results.jsonl and the gallery of a job as its items stand (finalize's, passed in:
# finalize calls this module).
ItemReports = Callable[[Runtime, JobRecord], Any]


def advance(rt: Runtime, job: JobRecord, item_reports: ItemReports) -> JobState | None:
    """None while the job goes on (a round was staged, or it waits for a selection, or
    another finalizer is planning it); else the state it ends in.

    Planning holds the job's lease: a finalizer that read the items before another staged
    a round would plan the same requests again. Under the lease, no batch open means every
    item of every staged round exists and has ended."""
    token = uuid.uuid4().hex
    if not lifecycle.claim_twotier_lease(rt, job.job_id, token, lasting=LEASE):
        return None
    try:
        if rt.repo.count_batches(job_id=job.job_id, states=_OPEN):
            return None
        return _advance(rt, rt.repo.require_job(job.job_id), item_reports)
    finally:
        lifecycle.release_twotier_lease(rt, job.job_id, token)


def _advance(rt: Runtime, job: JobRecord, item_reports: ItemReports) -> JobState | None:
    spec = store.spec_of(job)
    assert spec is not None, "advance is for two-tier jobs"
    lines = store.tier_lines(rt, job.job_id)
    items = list(rt.repo.items(job.job_id))
    verdicts, files = store.verdicts(rt, job.job_id)
    new = _cull(rt, job, spec, lines, items, verdicts)
    if new:
        store.add_verdicts(rt, job.job_id, files, new)
        verdicts.update({v.key: v for v in new})
    selection = store.selection(rt, job.job_id)
    sources = store.final_sources(rt, job.job_id)
    plan = plan_round(spec, lines, _views(lines, items, verdicts), sources, selection)
    if plan.failed_items:
        _fail_lines(rt, job, spec, plan)
        _record_counts(rt, job.job_id)
    if plan.has_work:
        staged = _stage_round(rt, job, spec, plan, items)
        log.info("two-tier round staged", extra={"requests": staged})
        return None
    if plan.awaiting_selection:
        if new:
            # The candidates are all back: the gallery shows them to be ticked.
            report.write_selection_gallery(rt, job, item_reports)
            log.info("two-tier job waits for a selection (bananabatch select)")
        return None
    items = list(rt.repo.items(job.job_id)) if plan.failed_items else items
    doc = report.build(rt, job, spec, lines, items, verdicts, sources, selection, plan)
    report.write(rt, job, spec, doc)
    return report.outcome(plan, job.rejected_count)


def _views(
    lines: Sequence[TierLine], items: Iterable[ItemRecord], verdicts: Mapping[str, Verdict]
) -> dict[str, list[ItemView]]:
    keys = {line.key for line in lines}
    by_line: dict[str, list[ItemView]] = defaultdict(list)
    for item in items:
        owner = line_key_of(item.key)
        if owner not in keys:
            continue
        verdict = verdicts.get(item.key)
        by_line[owner].append(
            ItemView(
                item.key,
                item.state.value,
                kept=None if verdict is None else verdict.kept,
                score=0.0 if verdict is None else verdict.score,
                reason=item.reason if verdict is None else verdict.reason,
            )
        )
    return by_line


def image_of(rt: Runtime, item: ItemRecord) -> bytes | None:
    if item.mime_type is None or item.state.value not in DELIVERED:
        return None
    try:
        return rt.objects.read_bytes(
            rt.settings.results_bucket, rec.image_object_name(item.job_id, item.key, item.mime_type)
        )
    except NotFound:
        return None


def _cull(
    rt: Runtime,
    job: JobRecord,
    spec: TwoTierSpec,
    lines: Sequence[TierLine],
    items: Sequence[ItemRecord],
    verdicts: Mapping[str, Verdict],
) -> list[Verdict]:
    """Verdicts on every delivered image that has none yet. A line's candidates are judged
    together, in candidate order (a near-duplicate is one of an earlier sibling), so a line
    with a new candidate is judged again whole; earlier verdicts come out the same."""
    cull: Cull = load_cull(rt.settings.twotier_cull or None, spec.cull)
    keys = {line.key: line for line in lines}
    delivered = [i for i in items if i.state.value in DELIVERED and line_key_of(i.key) in keys]
    pending = {i.key for i in delivered if i.key not in verdicts}
    if not pending:
        return []
    by_line: dict[str, list[ItemRecord]] = defaultdict(list)
    for item in delivered:
        by_line[line_key_of(item.key)].append(item)
    new: list[Verdict] = []
    for owner, group in by_line.items():
        if not pending.intersection(i.key for i in group):
            continue
        candidates = sorted(
            (i for i in group if candidate_number(i.key, owner) is not None),
            key=lambda i: candidate_number(i.key, owner) or 0,
        )
        finals = [i for i in group if candidate_number(i.key, owner) is None]
        judged = cull([(i.key, image_of(rt, i) or b"") for i in candidates])
        for final in finals:
            if final.key in pending:
                judged += cull([(final.key, image_of(rt, final) or b"")])
        new += [v for v in judged if v.key in pending]
    return new


def _fail_lines(rt: Runtime, job: JobRecord, spec: TwoTierSpec, plan: RoundPlan) -> None:
    now = rt.now()
    rt.repo.put_items(
        ItemRecord(
            job_id=job.job_id,
            key=key,
            line_no=line.line_no,
            state=ItemState.FAILED,
            model=spec.final_model,
            aspect_ratio=line.aspect_ratio,
            image_size=line.image_size,
            prompt_preview=line.prompt_preview,
            reason=reason,
            lane="batch",
            updated_at=now,
        )
        for line, key, reason in plan.failed_items
        if rt.repo.get_item(job.job_id, key) is None
    )


def _stage_round(
    rt: Runtime, job: JobRecord, spec: TwoTierSpec, plan: RoundPlan, items: Sequence[ItemRecord]
) -> int:
    now = rt.now()
    by_key = {i.key: i for i in items}
    drafts = [
        RoundRequest(key, line.line_no, line.prompt_preview, line.aspect_ratio, None, request)
        for line, numbers in plan.drafts
        for key, request in more_drafts(line, numbers, spec)
    ]
    finals: list[RoundRequest] = []
    pairs: list[tuple[str, str]] = []
    for line, key, source in plan.finals:
        candidate = by_key[source]
        image = image_of(rt, candidate)
        if image is None or candidate.mime_type is None:
            continue  # gone since its verdict: the next round plans without it
        encoded = base64.b64encode(image).decode("ascii")
        request = final_request(line, encoded, candidate.mime_type)
        finals.append(
            RoundRequest(
                key, line.line_no, line.prompt_preview, line.aspect_ratio, line.image_size, request
            )
        )
        pairs.append((key, source))
    first = next_index(rt, job.job_id)
    # Before any record: once a final's batch exists, its source must be known.
    store.add_final_sources(rt, job.job_id, first, pairs)
    made = stage_requests(rt, job, spec.draft_model, drafts, first_index=first, held=False, now=now)
    made += stage_requests(
        rt, job, spec.final_model, finals, first_index=first + len(made), held=False, now=now
    )
    # QUEUED and submittable: the next tick sends them (or the caller, right away).
    _record_counts(rt, job.job_id)
    return len(drafts) + len(finals)


def _record_counts(rt: Runtime, job_id: str) -> None:
    """The job's line and batch counts, absolute: every item it has or will have (staged
    batches not yet materialized count their requests), and every rejected line."""
    items = sum(1 for _ in rt.repo.items(job_id))
    waiting = sum(b.request_count for b in rt.repo.unmaterialized_batches(job_id))
    batches = next_index(rt, job_id)
    lifecycle.twotier_counts(rt, job_id, items=items + waiting, batches=batches)
