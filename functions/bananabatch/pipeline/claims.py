"""In-flight claims, taken where paid work is committed: when a batch is claimed for
submission (issue 14 part 3's dedup of requests in flight; issue 16 part 6 moved the claims
here from intake, which took one conditional write per line).

A claim is a document per content hash, `inflight/{hash}` = {job_id, batch_id, claimed_at,
expire_at}. A batch record moves QUEUED -> SUBMITTING (pipeline/submit.py) before its
create call; right then, and only then, its cacheable requests are claimed for its job
with `create_many` (a conditional create each: of several jobs claiming the same request,
exactly one owns it). The cost is bounded by the batch's size, spread over the job's life
at the pace of max_active_batches, and paid only for what is about to be bought. Intake
reads the cache but takes no claim.

Each line of the batch's manifest without an item yet is decided once:
- it opted out of dedup (the job's cache is off, or the line says `cache: false`, so its
  manifest entry has no request hash): submitted;
- its image is in the cache: CACHED now (copied), not submitted;
- its claim is created for this job, or is already this job's (an earlier attempt of this
  step, cut off by a crash or refused for quota): submitted;
- another live job holds its claim (RECEIVED, HELD or RUNNING, not cancelled, claim not
  expired): a joined item, PENDING in lane "joined" naming that job, its request line kept
  in `jobs/<job>/joined/<line>.json`; pipeline/inflight.py serves it from that job's result
  or, if that job cannot, pays for it once;
- the job holding its claim can no longer serve it: the claim is taken over with a
  conditional write, and the line submitted (or joined, if another job took it first).
A line that already has an item keeps it: one of this batch's from an earlier attempt is
submitted again, a joined or cached one stays apart. So a crash anywhere in this step and a
rerun decide the same, and a line set apart is never also submitted.

The batch then goes to the provider without the lines set apart: the request file is
rewritten without them (intake's file is kept under `staged/`, so a rerun filters the
original again) and its request count lowered. A batch left with no line of its own is not
submitted: it ends SUCCEEDED with nothing created (provider_state NOT_SUBMITTED) and is
collected like any finished batch, so it neither waits for the provider nor holds a place
among the active batches. Its job's reservation already covers every line of it (intake
estimated them all), so a joined line paid after all is not reserved again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from bananabatch.core import records as rec
from bananabatch.core.estimate import cache_enabled_for
from bananabatch.core.manifest import ManifestEntry, item_from_entry
from bananabatch.core.records import BatchRecord, ItemRecord, JobRecord
from bananabatch.core.states import ItemState, JobState
from bananabatch.errors import NotFound
from bananabatch.faults import crash_point
from bananabatch.log import get_logger
from bananabatch.pipeline import cache
from bananabatch.pipeline.cache import LANE_JOINED
from bananabatch.pipeline.materialize import manifest_entries, materialize_items, set_apart
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Doc

log = get_logger(__name__)

CLAIMS: Final = rec.claim_path("x").rpartition("/")[0]
# The provider state of a batch whose every line was set apart: nothing was created.
NOT_SUBMITTED: Final = "NOT_SUBMITTED"
# A HELD owner counts: once approved it pays for its line, so a waiting job that paid too
# would pay the same request twice; a rejection (CANCELLED) releases the waiters.
LIVE_OWNER: Final = frozenset({JobState.RECEIVED, JobState.HELD, JobState.RUNNING})

Owners = dict[str, JobRecord | None]


def claim_ttl(rt: Runtime) -> timedelta:
    """How long a claim stands without its owner finishing: every attempt of the owner's
    batch may run until the watchdog ends it, then one more hour."""
    hours = rt.settings.watchdog_hours * rt.settings.max_attempts + 1
    return timedelta(hours=hours)


def stash_object_name(job_id: str, line_no: int) -> str:
    return rec.joined_request_object(job_id, line_no)


def staged_object_name(batch: BatchRecord) -> str:
    """Where intake's request file of a batch is kept once lines are set apart from it."""
    return f"{rec.results_prefix(batch.job_id)}staged/batch-{batch.index:04d}.jsonl"


def claim_doc(rt: Runtime, job_id: str, batch_id: str | None = None) -> dict[str, Any]:
    now = rt.now()
    doc: dict[str, Any] = {
        "job_id": job_id,
        "claimed_at": now.isoformat(),
        "expire_at": (now + claim_ttl(rt)).isoformat(),
    }
    if batch_id is not None:
        doc["batch_id"] = batch_id
    return doc


def live(rt: Runtime, doc: Mapping[str, Any], me: str, owners: Owners) -> bool:
    """Whether a claim still stands: ours, or a job's that may yet produce the result."""
    owner = str(doc.get("job_id", ""))
    if owner == me:
        return True
    if datetime.fromisoformat(str(doc["expire_at"])) <= rt.now():
        return False
    if owner not in owners:
        owners[owner] = rt.repo.get_job(owner)
    job = owners[owner]
    return job is not None and job.state in LIVE_OWNER and not job.cancel_requested


def take(rt: Runtime, content_hash: str, me: str, batch_id: str, owners: Owners) -> str:
    """Take the claim unless a live job holds it; returns who holds it afterwards."""

    def fn(doc: Doc | None) -> Doc | None:
        if doc is not None and live(rt, doc, me, owners):
            return None
        return claim_doc(rt, me, batch_id)

    after = rt.state.update(rec.claim_path(content_hash), fn)
    return str((after or {}).get("job_id", me))


@dataclass
class _Apart:
    """The lines of one batch that do not go to the provider with it."""

    keys: set[str] = field(default_factory=set)
    # New items set apart by this pass, with the line they came from.
    items: list[tuple[ManifestEntry, ItemRecord]] = field(default_factory=list)
    # Copied images whose thumbnails are still to be made (cache.copy_into).
    thumbs: list[tuple[str, str]] = field(default_factory=list)


def materialize_for_submission(
    rt: Runtime, batch: BatchRecord, state: ItemState = ItemState.SUBMITTED
) -> BatchRecord:
    """Claim a batch's requests and make its items (in `state`), just claimed for
    submission or for a pack of the batch window (the module's docstring). Returns the
    batch as it must go to the provider: request_count 0 means no line of its own is
    left. Idempotent."""
    if batch.manifest_object is None:
        # A retry or released batch: its items, and their claims, exist already.
        materialize_items(rt, batch, state)
        return batch
    entries = list(manifest_entries(rt, batch, batch.manifest_object))
    existing = rt.repo.get_items(batch.job_id, [e.key for e in entries])
    apart = _Apart(keys=set_apart(batch, existing))
    job = rt.repo.get_job(batch.job_id)
    if job is not None and cache_enabled_for(job.options):
        fresh = [e for e in entries if e.key not in existing and e.request_hash]
        _decide(rt, batch, fresh, apart)
    if apart.keys:
        batch = _filter_requests(rt, batch, entries, apart)
    rt.repo.put_items(item for _, item in apart.items)
    cache.ask_thumbnails(rt, batch.job_id, apart.thumbs)
    materialize_items(rt, batch, state, skip=apart.keys)
    return batch


def _decide(rt: Runtime, batch: BatchRecord, fresh: list[ManifestEntry], apart: _Apart) -> None:
    """Serve from the cache, claim, or join each fresh cacheable line (in memory: the items
    are written by the caller, after the kept requests)."""
    if not fresh:
        return
    now, me = rt.now(), batch.job_id
    hits = cache.lookup_many(rt, {e.request_hash or "" for e in fresh})
    rest: list[ManifestEntry] = []
    for entry in fresh:
        hit = hits.get(entry.request_hash or "")
        if hit is None:
            rest.append(entry)
            continue
        uri = cache.copy_into(rt, me, entry.key, hit, apart.thumbs)
        apart.items.append(
            (
                entry,
                _apart_item(entry, batch, now).model_copy(
                    update={
                        "state": ItemState.CACHED,
                        "lane": cache.LANE_CACHE,
                        "image_uri": uri,
                        "mime_type": hit.mime_type,
                        "reason": f"cached: same request as job {hit.job_id} key {hit.key}",
                    }
                ),
            )
        )
    if rest:
        mine = claim_doc(rt, me, batch.batch_id)
        wanted = {e.request_hash or "": mine for e in rest}
        created = rt.state.create_many(CLAIMS, wanted)
        crash_point("submit.after_requests_claimed")
        taken = [h for h in wanted if h not in created]
        held = rt.state.get_many(CLAIMS, taken) if taken else {}
        owners: Owners = {}
        holder: dict[str, str] = {}
        for content_hash in taken:
            doc = held.get(content_hash)
            if doc is not None and live(rt, doc, me, owners):
                holder[content_hash] = str(doc["job_id"])
            else:
                holder[content_hash] = take(rt, content_hash, me, batch.batch_id, owners)
        for entry in rest:
            owner = holder.get(entry.request_hash or "", me)
            if owner == me:
                continue
            apart.items.append(
                (
                    entry,
                    _apart_item(entry, batch, now).model_copy(
                        update={
                            "lane": LANE_JOINED,
                            "joined_job": owner,
                            "reason": f"waits for the same request in flight in job {owner}",
                        }
                    ),
                )
            )
    apart.keys.update(item.key for _, item in apart.items)


def _apart_item(entry: ManifestEntry, batch: BatchRecord, now: datetime) -> ItemRecord:
    """A line set apart from its batch: no batch of its own, nothing of it estimated (it
    is served, or paid later under the job's reservation, pipeline/inflight.py)."""
    return item_from_entry(entry, batch, ItemState.PENDING, now).model_copy(
        update={
            "batch_id": None,
            "attempt": 0,
            "estimated_usd": 0.0,
            "saved_usd": entry.estimated_usd,
        }
    )


def _filter_requests(
    rt: Runtime, batch: BatchRecord, entries: list[ManifestEntry], apart: _Apart
) -> BatchRecord:
    """Rewrite the batch's request file without the lines set apart (from intake's file,
    kept aside first), keep each newly joined line's request for a later payment, and
    lower the batch's request count to what is left."""
    bucket = rt.settings.results_bucket
    staged = staged_object_name(batch)
    if rt.objects.stat(bucket, staged) is None:
        rt.objects.copy(bucket, batch.request_object, bucket, staged)
    joined = {item.key: item for _, item in apart.items if item.lane == LANE_JOINED}
    kept: list[bytes] = []
    with rt.objects.open_read(bucket, staged) as stream:
        lines = (raw for raw in stream if raw.strip())
        for entry, raw in zip(entries, lines, strict=True):
            if entry.key not in apart.keys:
                kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
                continue
            item = joined.get(entry.key)
            if item is not None:
                _stash(rt, batch, item, raw.decode().rstrip("\n"))
    data = b"".join(kept)
    rt.objects.write_bytes(bucket, batch.request_object, data, content_type="application/jsonl")
    log.info(
        "lines set apart from the batch: served by the cache or by another job's request",
        extra={"batch_id": batch.batch_id, "apart": len(apart.keys), "kept": len(kept)},
    )
    return rt.repo.patch_batch(
        batch.batch_id,
        lambda b: (
            None
            if (b.request_count, b.request_bytes) == (len(kept), len(data))
            else {"request_count": len(kept), "request_bytes": len(data)}
        ),
    )


def _stash(rt: Runtime, batch: BatchRecord, item: ItemRecord, line: str) -> None:
    """Keep a joined line's request: as its request file had it (`line`, what a payment
    after all sends) and decoded (`request`, what failed.jsonl shows)."""
    _, request = rt.batch_provider(batch).decode_request(json.loads(line))
    doc = {"key": item.key, "model": item.model, "request": request, "line": line}
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        stash_object_name(item.job_id, item.line_no),
        json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(),
        content_type="application/json",
    )


def read_stash(rt: Runtime, job_id: str, line_no: int) -> dict[str, Any] | None:
    """The kept request of a joined line, or None when it was not kept."""
    try:
        raw = rt.objects.read_bytes(rt.settings.results_bucket, stash_object_name(job_id, line_no))
    except NotFound:
        return None
    doc: dict[str, Any] = json.loads(raw)
    return doc
