"""The end of a job: reports, the terminal state, and exactly one completion message.

Closing a job is a sequence of idempotent steps, each marked on the job record once done:

1. reports (results, failed, summary, gallery), written from the record as it will be;
2. the terminal move (a conditional write: of several finalizers only one wins);
3. cache population (`cache_populated`): create-if-absent entries;
4. budget settlement (`budget_settled`): the day's entry for the job set to its actuals;
5. the completion claim (completion_pending True -> False) and publication
   (`completion_published`); then `finalized`.

A crash between any two leaves the job with a step undone and its mark unset: a
redelivered batch-done (finalize_job_if_done on a terminal job) or the tick (which looks
for RUNNING jobs with nothing open and terminal jobs not `finalized`) does the undone
steps again. Only the claim decides who publishes, so no redo publishes twice.

Within one process, two threads closing the same job at once (the local runner's ticker
beside its drain) meet in pipeline/live_closing.py: the tick leaves the job to a live
collector, a collector runs after a live tick.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from bananabatch.core import records as rec
from bananabatch.core.catalog import provider_of
from bananabatch.core.messages import completion_message, encode_message, message_attributes
from bananabatch.core.records import Costs, ItemRecord, JobRecord, LaneCosts, ProviderCosts
from bananabatch.core.states import (
    JOB_TERMINAL,
    BatchState,
    ItemState,
    JobState,
    job_outcome,
)
from bananabatch.errors import NotFound, PermanentError
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import budget, cache, lifecycle, live_closing, pack, task_records, urgent
from bananabatch.pipeline.live_closing import WhenLive
from bananabatch.pipeline.materialize import materialize_items
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.twotier import rounds
from bananabatch.pipeline.twotier import store as twotier_store
from bananabatch.report import joined
from bananabatch.report.gallery import GALLERY_LIMIT, GalleryBuilder, rejected_line_item

log = get_logger(__name__)

RESULTS_NAME = "results.jsonl"
FAILED_NAME = "failed.jsonl"
SUMMARY_NAME = "summary.json"
GALLERY_NAME = "index.html"
# The gallery lists the first lines up to its limit (report/gallery.py) and says so past
# it; results.jsonl always lists everything.

_OPEN_BATCH_STATES = frozenset(BatchState) - {BatchState.COLLECTED}


@dataclass
class ReportTally:
    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in ItemState})
    actual_usd: float = 0.0
    # The cost report's split: actual cost per lane, items per lane, and what cache hits
    # and in-file duplicates would have cost.
    batch_actual_usd: float = 0.0
    urgent_actual_usd: float = 0.0
    cache_saved_usd: float = 0.0
    # Batch-price estimates of every item and of the paid ones delivered: the saving is
    # claimed only for the share of the work that was done (never for a cancelled rest).
    estimated_usd: float = 0.0
    delivered_estimated_usd: float = 0.0
    lanes: dict[str, int] = field(default_factory=dict)
    # The actual split: items and actual cost by the lane that served them, a sync-lane
    # item by its provider ("gemini-standard", "compat:<label>").
    split: dict[str, list[float]] = field(default_factory=dict)
    failed_keys: set[str] = field(default_factory=set)
    # Failed in-file duplicates, by the key whose staged request they repeat: they have
    # no request file line of their own, yet belong in failed.jsonl like any failure.
    failed_copies: dict[str, list[str]] = field(default_factory=dict)
    # Failed items that joined another job's request (key -> line): one that failed unpaid
    # has no request file line either; its request is kept in the job's joined/ stash.
    failed_joined: dict[str, int] = field(default_factory=dict)
    # The gallery's data, built as the lines stream by in line order.
    gallery: GalleryBuilder = field(default_factory=GalleryBuilder)
    # Items that joined another job's request in flight: served from it, or paid here.
    inflight: dict[str, int] = field(default_factory=lambda: {"joined": 0, "served": 0, "paid": 0})
    # Per provider of the items' models: [items, estimated, actual].
    providers: dict[str, list[float]] = field(default_factory=dict)

    def by_provider(self) -> dict[str, ProviderCosts]:
        return {
            name: ProviderCosts(
                items=int(items), estimated_usd=round(estimated, 6), actual_usd=round(actual, 6)
            )
            for name, (items, estimated, actual) in sorted(self.providers.items())
        }


def finalize_job_if_done(
    rt: Runtime, job_id: str, *, when_live: WhenLive = WhenLive.RUN
) -> JobRecord:
    """Close the job when its last batch is collected; otherwise do nothing."""
    with live_closing.closing(rt.state, job_id, when_live) as mine:
        if not mine:
            log.info(
                "job being finalized by another thread of this process; leaving it there",
                extra={"job_id": job_id},
            )
            return rt.repo.require_job(job_id)
        return _finalize_job_if_done(rt, job_id)


def _finalize_job_if_done(rt: Runtime, job_id: str) -> JobRecord:
    with labels(job_id=job_id):
        job = rt.repo.require_job(job_id)
        if job.state in JOB_TERMINAL:
            return finish_closing(rt, job)
        if job.state is not JobState.RUNNING:
            return job
        open_batches = rt.repo.count_batches(job_id=job_id, states=_OPEN_BATCH_STATES)
        if open_batches or (job.urgent_count and urgent.pending_count(rt, job_id)):
            return job
        if job.window_at is not None and pack.open_shared(rt, job_id):
            return job  # its lines ride in a shared batch of the window (pipeline/pack.py)
        if cache.waiting_count(rt, job_id):
            return job  # items wait for another job's request in flight (pipeline/inflight.py)
        if task_records.open_tasks(rt, job_id):
            return job  # items wait for an async lane's task (pipeline/tasks.py)
        # A user's cancel wins over what the items say (pipeline.control.cancel_job).
        forced = JobState.CANCELLED if job.cancel_requested else None
        if forced is None and twotier_store.spec_of(job) is not None:
            # A two-tier job goes on to its next round, or ends as its lines say.
            forced = rounds.advance(rt, job, write_item_reports)
            if forced is None:
                return rt.repo.require_job(job_id)
            job = rt.repo.require_job(job_id)
        return close_job(rt, job, forced=forced)


def close_job(
    rt: Runtime, job: JobRecord, *, forced: JobState | None = None, error: str | None = None
) -> JobRecord:
    """Write the reports, move the job to its terminal state and publish its completion."""
    # Every line ends in exactly one terminal state, so a batch closed without its items
    # ever being created (none should be: submission, cancel and reject create them
    # first) gets them now, failed, rather than missing from the reports.
    for batch in list(rt.repo.unmaterialized_batches(job.job_id)):
        log.error(
            "job closing with a batch whose items were never created",
            extra={"batch_id": batch.batch_id},
        )
        materialize_items(
            rt,
            batch,
            ItemState.FAILED,
            reason=f"never submitted: job {job.job_id} closed before batch {batch.batch_id} "
            "was sent to the provider",
        )
    # In-file duplicates take their first occurrence's outcome now that it is known.
    cache.resolve_duplicates(rt, job)
    tally = write_item_reports(rt, job)
    delivered = tally.counts[ItemState.SUCCEEDED.value] + tally.counts[ItemState.CACHED.value]
    target = forced or job_outcome(
        {ItemState(k): v for k, v in tally.counts.items()}, total_lines=job.line_count
    )
    standard = job.costs.standard_equivalent_usd
    done_share = (
        min(1.0, tally.delivered_estimated_usd / tally.estimated_usd)
        if tally.estimated_usd
        else 1.0
    )
    costs = Costs(
        estimated_usd=job.costs.estimated_usd,
        standard_equivalent_usd=standard,
        actual_usd=round(tally.actual_usd, 6),
        saved_usd=round(max(0.0, standard * done_share - tally.actual_usd), 6)
        if delivered
        else 0.0,
        cost_per_accepted_image_usd=round(tally.actual_usd / delivered, 6) if delivered else None,
        cache_saved_usd=round(tally.cache_saved_usd, 6),
        batch_actual_usd=round(tally.batch_actual_usd, 6),
        urgent_actual_usd=round(tally.urgent_actual_usd, 6),
        by_provider=tally.by_provider(),
        by_lane={
            lane: LaneCosts(items=int(items), actual_usd=round(actual, 6))
            for lane, (items, actual) in sorted(tally.split.items())
        },
    )
    if twotier_store.spec_of(job) is not None:
        # A two-tier job's accepted images are its finals: both stages' cost over them.
        per = twotier_store.cost_per_final(rt, job.job_id)
        costs = costs.model_copy(update={"cost_per_accepted_image_usd": per})
    now = rt.now()
    final = {
        "counts": tally.counts,
        "costs": costs,
        "finished_at": now,
        "updated_at": now,
        "completion_pending": True,
        **({"error": error} if error else {}),
    }
    # Reports first, from the record as it will be: a concurrent finalizer writes the same
    # bytes, and a crash before the move below just means they are written again.
    write_job_reports(rt, job.model_copy(update={**final, "state": target}), tally)
    moved = lifecycle.end(rt, job.job_id, target, final)
    if moved.moved:
        log.info(
            "job finished: %s",
            target.value,
            extra={"counts": tally.counts, "actual_usd": costs.actual_usd},
        )
    crash_point("finalize.after_terminal")
    return finish_closing(rt, moved.record)


def finish_closing(rt: Runtime, job: JobRecord) -> JobRecord:
    """The steps after the terminal move, each done unless marked done (idempotent, so a
    redelivery, the tick and a live finalizer may all run it)."""
    if job.state not in JOB_TERMINAL:
        return job
    if not job.cache_populated:
        cache.populate(rt, job)
        job = lifecycle.mark_cache_populated(rt, job.job_id)
    crash_point("finalize.after_cache")
    if not job.budget_settled:
        budget.settle(rt, job, job.costs.actual_usd)
        job = lifecycle.mark_budget_settled(rt, job.job_id)
    publish_completion_if_pending(rt, job.job_id)
    job = rt.repo.require_job(job.job_id)
    if job.completion_published and not job.finalized:
        job = lifecycle.mark_finalized(rt, job.job_id)
    return job


def publish_completion_if_pending(rt: Runtime, job_id: str) -> bool:
    """Publish the job's completion message if it is owed and nobody has claimed it."""
    job = lifecycle.claim_completion(rt, job_id)
    if job is None:
        return False
    crash_point("finalize.after_claim")
    prefix = rec.results_prefix(job_id)
    message = completion_message(
        job,
        results_prefix_uri=rt.results_uri(prefix),
        summary_uri=rt.results_uri(prefix + SUMMARY_NAME),
        gallery_uri=rt.results_uri(prefix + GALLERY_NAME),
    )
    try:
        message_id = rt.bus.publish(
            rt.settings.topic_completions, encode_message(message), message_attributes(message)
        )
    except Exception:
        # Hand the claim back so the platform's retry can publish it.
        lifecycle.return_completion(rt, job_id)
        raise
    lifecycle.completion_sent(rt, job)
    log.info("completion published", extra={"state": job.state.value, "message_id": message_id})
    return True


def write_item_reports(rt: Runtime, job: JobRecord) -> ReportTally:
    """results.jsonl and failed.jsonl in one pass over the items, tallying as it goes."""
    results = rt.settings.results_bucket
    prefix = rec.results_prefix(job.job_id)
    tally = ReportTally()
    tally.counts[ItemState.REJECTED.value] = job.rejected_count
    items = rt.repo.items(job.job_id, order_by="line_no")
    # Each line's metadata joins its result (and costs.csv) back to the user's catalog.
    details = joined.line_details(rt, job, prompts_up_to=GALLERY_LIMIT)
    metadata = details.metadata
    costs = joined.CostsCsv()
    with rt.objects.open_write(
        results, prefix + RESULTS_NAME, content_type="application/jsonl"
    ) as sink:
        for line in heapq.merge(
            (_item_result(item, tally) for item in items),
            _rejected_results(rt, job, tally),
            key=lambda doc: int(doc["line"]),
        ):
            item: ItemRecord = line.pop("_item")
            line["metadata"] = metadata.get(int(line["line"]), {})
            costs.add(line, line.pop("_lane", None))
            tally.gallery.add(item, line["metadata"], details.prompts.get(item.line_no))
            sink.write((json.dumps(line, ensure_ascii=False) + "\n").encode())
    rt.objects.write_bytes(
        results, prefix + joined.COSTS_NAME, costs.to_bytes(), content_type="text/csv"
    )
    _write_failed(
        rt, job, set(tally.failed_keys), dict(tally.failed_copies), dict(tally.failed_joined)
    )
    return tally


def write_job_reports(rt: Runtime, job: JobRecord, tally: ReportTally) -> None:
    """summary.json and the gallery, from the job as it ends."""
    _write_summary(rt, job, tally)
    prefix = rec.results_prefix(job.job_id)
    # The data files first and index.html last: whoever finds the page finds its data.
    for file in tally.gallery.files(job):
        rt.objects.write_bytes(
            rt.settings.results_bucket,
            prefix + file.name,
            file.data,
            content_type=file.content_type,
        )


def _item_result(item: ItemRecord, tally: ReportTally) -> dict[str, Any]:
    tally.counts[item.state.value] += 1
    tally.actual_usd += item.actual_usd or 0.0
    tally.estimated_usd += item.estimated_usd
    share = tally.providers.setdefault(provider_of(item.model).value, [0, 0.0, 0.0])
    share[0] += 1
    share[1] += item.estimated_usd
    share[2] += item.actual_usd or 0.0
    if item.state is ItemState.SUCCEEDED:
        tally.delivered_estimated_usd += item.estimated_usd
    lane = item.lane or cache.LANE_BATCH
    tally.lanes[lane] = tally.lanes.get(lane, 0) + 1
    share = tally.split.setdefault(item.provider_lane or lane, [0, 0.0])
    share[0] += 1
    share[1] += item.actual_usd or 0.0
    if lane in (cache.LANE_URGENT, cache.LANE_SYNC):
        tally.urgent_actual_usd += item.actual_usd or 0.0
    else:
        tally.batch_actual_usd += item.actual_usd or 0.0
    if item.state is ItemState.CACHED:
        tally.cache_saved_usd += item.saved_usd or 0.0
    if lane == cache.LANE_JOINED:
        tally.inflight["joined"] += 1
        if item.state is ItemState.CACHED:
            tally.inflight["served"] += 1
        elif item.batch_id is not None:
            tally.inflight["paid"] += 1
    if item.state is ItemState.FAILED:
        _tally_failure(item, lane, tally)
    return {
        "line": item.line_no,
        "key": item.key,
        "status": item.state.value,
        "image_uri": item.image_uri,
        "mime_type": item.mime_type,
        "error": item.reason if item.state is not ItemState.SUCCEEDED else None,
        "cost_usd": item.actual_usd,
        "model": item.model,
        "_lane": lane,
        "_item": item,
    }


def _tally_failure(item: ItemRecord, lane: str, tally: ReportTally) -> None:
    if lane == cache.LANE_DUPLICATE and item.duplicate_of is not None:
        tally.failed_copies.setdefault(item.duplicate_of, []).append(item.key)
        return
    tally.failed_keys.add(item.key)
    if lane == cache.LANE_JOINED:
        tally.failed_joined[item.key] = item.line_no


def _rejected_results(rt: Runtime, job: JobRecord, tally: ReportTally) -> Iterator[dict[str, Any]]:
    name = rec.results_prefix(job.job_id) + "rejected.jsonl"
    try:
        with rt.objects.open_read(rt.settings.results_bucket, name) as stream:
            for raw in stream:
                doc = json.loads(raw)
                yield {
                    "line": doc["line"],
                    "key": doc.get("key"),
                    "status": ItemState.REJECTED.value,
                    "image_uri": None,
                    "mime_type": None,
                    "error": doc["reason"],
                    "cost_usd": None,
                    "model": None,
                    # The gallery lists it under the user's key, with its reason.
                    "_item": rejected_line_item(job, doc),
                }
    except NotFound:
        return


def _write_failed(
    rt: Runtime,
    job: JobRecord,
    failed: set[str],
    copies: dict[str, list[str]],
    joined_lines: dict[str, int] | None = None,
) -> None:
    """Failed items in input form (the native line form), ready to upload again; a failed
    in-file duplicate is written with the request of the key it repeats (`copies`), and a
    joined item that failed unpaid with the request its line kept (`joined_lines`)."""
    results = rt.settings.results_bucket
    prefix = rec.results_prefix(job.job_id)
    with rt.objects.open_write(
        results, prefix + FAILED_NAME, content_type="application/jsonl"
    ) as sink:
        if not failed and not copies:
            return
        for batch in rt.repo.batches(job_id=job.job_id):
            try:
                with rt.objects.open_read(results, batch.request_object) as stream:
                    for raw in stream:
                        key, request = rt.batch_provider(batch).decode_request(json.loads(raw))
                        keys = [key] if key in failed else []
                        keys += copies.pop(key, [])
                        failed.discard(key)
                        for out in keys:
                            line = {"key": out, "model": batch.model, "request": request}
                            sink.write((json.dumps(line, ensure_ascii=False) + "\n").encode())
            except NotFound as exc:
                raise PermanentError(
                    f"staged request file {batch.request_object} is gone; cannot list failed"
                    " items in input form",
                    job_id=job.job_id,
                ) from exc
        # Urgent requests are staged apart from the batches, already in this line form.
        urgent_name = urgent.urgent_object_name(job.job_id)
        if (failed or copies) and rt.objects.stat(results, urgent_name) is not None:
            with rt.objects.open_read(results, urgent_name) as stream:
                for raw in stream:
                    if not raw.strip():
                        continue
                    staged = json.loads(raw)
                    key = staged["key"]
                    keys = [key] if key in failed else []
                    for out in keys + copies.pop(key, []):
                        line = {**staged, "key": out}
                        sink.write((json.dumps(line, ensure_ascii=False) + "\n").encode())
        _write_failed_joined(rt, job, sink, failed, joined_lines or {})


def _write_failed_joined(
    rt: Runtime, job: JobRecord, sink: IO[bytes], failed: set[str], joined_lines: dict[str, int]
) -> None:
    """Joined lines that failed unpaid: no request file of this job holds them."""
    for key in sorted(failed & set(joined_lines), key=lambda k: joined_lines[k]):
        kept = _joined_request(rt, job, joined_lines[key])
        if kept is not None:
            sink.write((json.dumps({**kept, "key": key}, ensure_ascii=False) + "\n").encode())


def _joined_request(rt: Runtime, job: JobRecord, line_no: int) -> dict[str, Any] | None:
    """The request a joined line kept when intake stashed it ({key, model, request})."""
    name = rec.joined_request_object(job.job_id, line_no)
    try:
        doc = json.loads(rt.objects.read_bytes(rt.settings.results_bucket, name))
    except NotFound:
        log.warning("a failed joined line's request was not kept", extra={"line": line_no})
        return None
    return doc if isinstance(doc, dict) else None


def _write_summary(rt: Runtime, job: JobRecord, tally: ReportTally) -> None:
    prefix = rec.results_prefix(job.job_id)
    uri = rt.results_uri
    summary = {
        "schema_version": rec.SCHEMA_VERSION,
        "job_id": job.job_id,
        "state": job.state.value,
        "source": job.source.to_doc() | {"uri": job.source.uri},
        "line_count": job.line_count,
        "counts": tally.counts,
        "costs": job.costs.to_doc(),
        # Items per lane: batch, urgent (synchronous, standard price), cache, duplicate.
        "lanes": dict(sorted(tally.lanes.items())),
        # Lines that joined an identical request in flight in another job.
        "inflight": tally.inflight,
        "error": job.error,
        "warnings": job.warnings,
        # Deployment-wide submission pauses this job waited through (pipeline/pause.py).
        "pauses": job.pauses,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "files": {
            "images": uri(prefix + "images/"),
            "results": uri(prefix + RESULTS_NAME),
            "rejected": uri(prefix + "rejected.jsonl"),
            "failed": uri(prefix + FAILED_NAME),
            "gallery": uri(prefix + GALLERY_NAME),
        },
        "gallery_truncated": tally.gallery.truncated,
    }
    if twotier_store.spec_of(job) is not None:
        # Each line's outcome and each stage's cost per accepted image (pipeline/twotier).
        summary["two_tier"] = twotier_store.report(rt, job.job_id)
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        prefix + SUMMARY_NAME,
        (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode(),
        content_type="application/json",
    )
