"""In-flight request dedup: an identical request (same content hash, cache allowed) that
another running job has already claimed is joined, not paid again.

The claims are taken when a batch is claimed for submission (pipeline/claims.py), so of
several jobs sending the same request at once exactly one owns it. A line whose request a
live job claimed (RECEIVED, HELD or RUNNING, not cancelled, claim not expired) is left out
of its batch's request file: it becomes a PENDING item in lane "joined", naming the owner
(`joined_job`), its request line kept in a small object of its own job
(`jobs/<job>/joined/<line>.json`) in case it must be paid after all. Its price stays in the
job's estimate and reservation, taken at intake, so paying it later reserves nothing more.

Resolution (`resolve`), by the collector after each batch it collects and by the tick (the
safety net, whatever a crash left), looks at every waiting item of every running job:

- the request's image is in the cache (the owner's collector stored it): copied, CACHED;
- the owner's item SUCCEEDED but its cache entry is missing: copied from it, CACHED;
- the owner's item was BLOCKED: BLOCKED here too (the same request, the same answer);
- the owner's item FAILED for good (its batch collected, no retry left), or the owner job
  ended or was cancelled, or the claim expired: the waiting job pays. It takes the claim
  over with a conditional write (of several waiting jobs, one pays; the others now wait on
  it), then points the item at a one-request batch of its own (index RELEASE_INDEX + line
  number, so a repeat after a crash names the same batch) and creates that batch's request
  file and QUEUED record, which the usual submission, collection and retry machinery take
  from there. A kill between the item's move and the batch record is repaired by the next
  pass (a released item whose batch record is missing);
- otherwise it waits. A waiting item of a cancelled job FAILS.

A job does not close while it has waiting items (finalize asks `cache.waiting_count`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from bananabatch.core import records as rec
from bananabatch.core.catalog import expected_result_bytes, provider_of
from bananabatch.core.records import BatchRecord, ItemRecord, JobRecord
from bananabatch.core.states import ITEM_TERMINAL, BatchState, ItemState, JobState
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import cache, claims, finalize, submit
from bananabatch.pipeline.cache import LANE_JOINED, CacheEntry
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Doc, Where

log = get_logger(__name__)

# A released item's batch index: past any planned batch's (intake plans far fewer).
RELEASE_INDEX: Final = 1_000_000
# Lanes whose items are served apart from any request of their own: never an owner.
_NOT_OWNERS: Final = frozenset({cache.LANE_DUPLICATE, cache.LANE_CACHE, LANE_JOINED})


@dataclass
class Resolution:
    jobs: set[str] = field(default_factory=set)
    served: int = 0
    released: int = 0
    ended: int = 0


def resolve(rt: Runtime) -> Resolution:
    """Serve, end or pay every waiting item that can be (see the module's docstring), then
    submit what became paid and close the jobs left with nothing open. One job's failure
    is logged and never stops the others."""
    done = Resolution()
    for doc in rt.state.query("jobs", [Where("state", "==", JobState.RUNNING.value)]):
        job = JobRecord.model_validate(doc)
        with labels(job_id=job.job_id):
            try:
                if _resolve_job(rt, job, done):
                    done.jobs.add(job.job_id)
            except Exception:
                log.exception("in-flight resolution failed for this job; the others go on")
    if done.released:
        submit.submit_queued(rt)
    for job_id in sorted(done.jobs):
        with labels(job_id=job_id):
            finalize.finalize_job_if_done(rt, job_id)
    if done.jobs:
        log.info("in-flight requests resolved", extra=vars(done) | {"jobs": sorted(done.jobs)})
    return done


def _resolve_job(rt: Runtime, job: JobRecord, done: Resolution) -> bool:
    where = [Where("lane", "==", LANE_JOINED), Where("state", "==", ItemState.PENDING.value)]
    joined = list(rt.repo.items(job.job_id, where=where))
    if not joined:
        return False
    changed = False
    for item in joined:
        if item.batch_id is not None and rt.repo.get_batch(item.batch_id) is None:
            # Released, then killed before its batch record was written.
            _queue(rt, job, item)
            done.released += 1
            changed = True
    waiting = sorted((i for i in joined if i.batch_id is None), key=lambda i: i.line_no)
    if not waiting:
        return changed
    if job.cancel_requested:
        reason = "cancelled by user before the request it waited for was served"
        done.ended += _end(rt, waiting, ItemState.FAILED, reason)
        return True
    by_hash: dict[str, list[ItemRecord]] = {}
    for item in waiting:
        by_hash.setdefault(item.request_hash or "", []).append(item)
    hits = cache.lookup_many(rt, [h for h in by_hash if h])
    thumbs: list[tuple[str, str]] = []
    served = [
        _copied(rt, item, entry, thumbs) for h, entry in hits.items() for item in by_hash.pop(h)
    ]
    done.served += rt.repo.put_items(served)
    cache.ask_thumbnails(rt, job.job_id, thumbs)
    held = rt.state.get_many(claims.CLAIMS, [h for h in by_hash if h])
    owners: claims.Owners = {}
    for content_hash, items in by_hash.items():
        doc = held.get(content_hash) if content_hash else None
        _decide(rt, job, content_hash, items, doc, owners, done)
    return True


def _decide(
    rt: Runtime,
    job: JobRecord,
    content_hash: str,
    items: list[ItemRecord],
    doc: Doc | None,
    owners: claims.Owners,
    done: Resolution,
) -> None:
    """What becomes of the items of one job waiting for one request."""
    owner = str(doc["job_id"]) if doc is not None else None
    if owner is not None and (
        owner == job.job_id or claims.live(rt, doc or {}, job.job_id, owners)
    ):
        found = _owner_items(rt, owner, content_hash)
        success = next((i for i in found if i.state is ItemState.SUCCEEDED), None)
        if success is not None:
            thumbs: list[tuple[str, str]] = []
            done.served += rt.repo.put_items(_copied(rt, item, success, thumbs) for item in items)
            cache.ask_thumbnails(rt, job.job_id, thumbs)
            return
        final = [i for i in found if _final(rt, i)]
        if owner != job.job_id and (not found or len(final) < len(found)):
            return  # in flight: wait
        if owner == job.job_id and not found and rt.repo.unmaterialized_count(job.job_id):
            # A redone intake may have staged the line itself after all: wait until every
            # batch of ours has its items, rather than pay for it a second time.
            return
        if owner == job.job_id and found:
            if len(final) < len(found):
                return  # our own payment of it is in flight
            ended = final[0]
            why = f"same request as key {ended.key}, which ended {ended.state.value}"
            done.ended += _end(rt, items, ended.state, why)
            return
        blocked = next((i for i in final if i.state is ItemState.BLOCKED), None)
        if blocked is not None:
            why = f"the same request was blocked in job {owner} (key {blocked.key})"
            done.ended += _end(rt, items, ItemState.BLOCKED, why)
            return
    _pay(rt, job, content_hash, items[0], doc, owner, done)


def _owner_items(rt: Runtime, job_id: str, content_hash: str) -> list[ItemRecord]:
    """The items of job_id that carry (or carried) this request to the provider."""
    where = [Where("request_hash", "==", content_hash)]
    return [
        item
        for item in rt.repo.items(job_id, where=where)
        if item.lane not in _NOT_OWNERS or (item.lane == LANE_JOINED and item.batch_id)
    ]


def _final(rt: Runtime, item: ItemRecord) -> bool:
    """Whether an item's outcome is settled: terminal, and for a FAILED one, its batch
    collected (the collector then decided whether it gets another attempt)."""
    if item.state not in ITEM_TERMINAL:
        return False
    if item.state is not ItemState.FAILED or item.batch_id is None:
        return True
    batch = rt.repo.get_batch(item.batch_id)
    return batch is None or batch.state is BatchState.COLLECTED


def _pay(
    rt: Runtime,
    job: JobRecord,
    content_hash: str,
    item: ItemRecord,
    seen: Doc | None,
    owner: str | None,
    done: Resolution,
) -> None:
    """The owner cannot serve it: this job pays for the request, once."""
    index = RELEASE_INDEX + item.line_no
    batch_id = rec.batch_id_for(job.job_id, index)
    # Within the job's reservation already: intake estimated the line before it joined.
    price = item.saved_usd or 0.0
    if not _take_over(rt, content_hash, job.job_id, seen):
        return  # another waiting job took it first: wait for that one
    crash_point("inflight.after_claim_taken")
    before = f"job {owner}" if owner and owner != job.job_id else "no other job"
    released = item.model_copy(
        update={
            "batch_id": batch_id,
            "attempt": 1,
            "estimated_usd": price,
            "saved_usd": None,
            "reason": f"the same request in {before} ended without a result: paid here",
            "updated_at": rt.now(),
        }
    )
    rt.repo.put_items([released])
    crash_point("inflight.after_item_released")
    _queue(rt, job, released)
    done.released += 1
    log.warning(
        "a joined request is paid by this job: its owner cannot serve it",
        extra={"key": item.key, "owner_job": owner, "batch_id": batch_id},
    )


def _take_over(rt: Runtime, content_hash: str, me: str, seen: Doc | None) -> bool:
    """Take the claim if it is still as we saw it (or already ours)."""

    def take(doc: Doc | None) -> Doc | None:
        if doc is not None and doc.get("job_id") == me:
            return None
        same = (doc is None and seen is None) or (
            doc is not None
            and seen is not None
            and doc.get("job_id") == seen.get("job_id")
            and doc.get("claimed_at") == seen.get("claimed_at")
        )
        return claims.claim_doc(rt, me) if same else None

    after = rt.state.update(rec.claim_path(content_hash), take)
    return (after or {}).get("job_id") == me


def _queue(rt: Runtime, job: JobRecord, item: ItemRecord) -> None:
    """The released item's one-request batch: its request file, then its QUEUED record
    (create-if-absent: a repeat after a crash does nothing more)."""
    assert item.batch_id is not None
    if rt.repo.get_batch(item.batch_id) is not None:
        return
    results = rt.settings.results_bucket
    index = RELEASE_INDEX + item.line_no
    kept = claims.read_stash(rt, job.job_id, item.line_no)
    if kept is None:
        why = "its request was not kept when the line joined another job's request"
        _end(rt, [item], ItemState.FAILED, why)
        return
    if "line" in kept:
        # The line as its batch's request file had it (pipeline/claims.py).
        data = (str(kept["line"]) + "\n").encode()
    else:
        # Kept by an intake of an earlier version: the request, to encode.
        line = rt.model_provider(item.model).encode_request(item.key, kept["request"])
        data = (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    request_object = rec.request_object_name(job.job_id, index)
    rt.objects.write_bytes(results, request_object, data, content_type="application/jsonl")
    now = rt.now()
    rt.repo.create_batch(
        BatchRecord(
            batch_id=item.batch_id,
            job_id=job.job_id,
            index=index,
            attempt=1,
            state=BatchState.QUEUED,
            model=item.model,
            provider=provider_of(item.model),
            display_name=rec.display_name_for(item.batch_id),
            request_object=request_object,
            request_count=1,
            request_bytes=len(data),
            expected_output_bytes=expected_result_bytes(item.model, item.image_size),
            created_at=now,
            updated_at=now,
        )
    )


def _copied(
    rt: Runtime, item: ItemRecord, source: CacheEntry | ItemRecord, thumbs: list[tuple[str, str]]
) -> ItemRecord:
    uri = cache.copy_into(rt, item.job_id, item.key, source, thumbs)
    return item.model_copy(
        update={
            "state": ItemState.CACHED,
            "image_uri": uri,
            "mime_type": source.mime_type,
            "reason": (
                f"served from job {source.job_id}'s request (key {source.key}), in flight when "
                "this line arrived"
            ),
            "updated_at": rt.now(),
        }
    )


def _end(rt: Runtime, items: list[ItemRecord], state: ItemState, reason: str) -> int:
    now = rt.now()
    ended = [
        item.model_copy(
            update={"state": state, "reason": reason, "saved_usd": None, "updated_at": now}
        )
        for item in items
    ]
    return rt.repo.put_items(ended)


def counts(items: Iterable[ItemRecord]) -> dict[str, int]:
    """How a job's items fared with requests of other jobs in flight: joined (all of them),
    waiting, served from the other job's result, paid here after all."""
    tally = {"joined": 0, "waiting": 0, "served": 0, "paid": 0}
    for item in items:
        if item.lane != LANE_JOINED:
            continue
        tally["joined"] += 1
        if item.state is ItemState.CACHED:
            tally["served"] += 1
        elif item.batch_id is not None:
            tally["paid"] += 1
        elif item.state is ItemState.PENDING:
            tally["waiting"] += 1
    return tally
