"""The dedup cache: cache/{content_hash} maps a normalized request to an image we already
have, so an identical request is copied instead of paid for again.

Lookups happen at intake (a hit is copied into the new job and the item is CACHED), and
again when a batch is submitted (pipeline/claims.py: a hit made since intake is copied);
entries are written at each collector checkpoint for the items it stored (`remember`),
and once more when a job ends, from all its SUCCEEDED items (finalize), which repairs
anything a crash between the two left out. In-file duplicates are resolved at the same moment: they
copy their first occurrence's image, or share its failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bananabatch.core import records as rec
from bananabatch.core.records import ItemRecord, JobRecord
from bananabatch.core.states import ItemState
from bananabatch.errors import NotFound
from bananabatch.faults import crash_point
from bananabatch.log import get_logger
from bananabatch.pipeline import thumbnails
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Where
from bananabatch.report.thumbs import thumb_object_name

log = get_logger(__name__)

LANE_BATCH = "batch"
LANE_URGENT = "urgent"
# A bulk line whose cheapest lane is a synchronous one (core/routing.py).
LANE_SYNC = "sync"
LANE_CACHE = "cache"
LANE_DUPLICATE = "duplicate"
# Waits for the same request in flight in another job (pipeline/inflight.py).
LANE_JOINED = "joined"
# The batch_id of a thumbnails request for copied images (they belong to no batch of theirs).
THUMBS_FOR_COPIES = "copies"
# The collection of rec.cache_path documents.
CACHE_COLLECTION = rec.cache_path("x").rpartition("/")[0]
# Resolved duplicates written per put_items call.
RESOLVE_FLUSH = 500


@dataclass(frozen=True)
class CacheEntry:
    content_hash: str
    bucket: str
    name: str
    mime_type: str
    job_id: str
    key: str

    def to_doc(self) -> dict[str, Any]:
        return {
            "content_hash": self.content_hash,
            "bucket": self.bucket,
            "name": self.name,
            "mime_type": self.mime_type,
            "job_id": self.job_id,
            "key": self.key,
        }


def lookup(rt: Runtime, content_hash: str) -> CacheEntry | None:
    """The cached image for a request, if its entry exists and its image is still there."""
    return lookup_many(rt, [content_hash]).get(content_hash)


def lookup_many(rt: Runtime, content_hashes: Iterable[str]) -> dict[str, CacheEntry]:
    """lookup for many requests in one state-store read per page (intake asks per chunk of
    lines, not per line). Only hits whose image is still there are returned."""
    found: dict[str, CacheEntry] = {}
    for content_hash, doc in rt.state.get_many(CACHE_COLLECTION, content_hashes).items():
        entry = CacheEntry(
            content_hash=content_hash,
            bucket=str(doc["bucket"]),
            name=str(doc["name"]),
            mime_type=str(doc["mime_type"]),
            job_id=str(doc["job_id"]),
            key=str(doc["key"]),
        )
        # A deleted or expired image makes the entry useless: generate again rather than
        # fail.
        if rt.objects.stat(entry.bucket, entry.name) is not None:
            found[entry.content_hash] = entry
    return found


def copy_into(
    rt: Runtime,
    job_id: str,
    key: str,
    source: CacheEntry | ItemRecord,
    thumbs_wanted: list[tuple[str, str]] | None = None,
) -> str:
    """Copy an image (and its thumbnail, when there is one) into job_id's results as key's.
    Returns the new image's URI. A source whose thumbnail is not made yet (thumbnails come
    after the collection, off its path) puts (key, mime type) in `thumbs_wanted`, for
    ask_thumbnails: the copy would otherwise never get one."""
    results = rt.settings.results_bucket
    if isinstance(source, CacheEntry):
        bucket, name, mime = source.bucket, source.name, source.mime_type
        src_job, src_key = source.job_id, source.key
    else:
        mime = source.mime_type or "image/png"
        bucket, name = results, rec.image_object_name(source.job_id, source.key, mime)
        src_job, src_key = source.job_id, source.key
    target = rec.image_object_name(job_id, key, mime)
    rt.objects.copy(bucket, name, results, target)
    thumb = thumb_object_name(src_job, src_key)
    if rt.objects.stat(results, thumb) is not None:
        rt.objects.copy(results, thumb, results, thumb_object_name(job_id, key))
    elif thumbs_wanted is not None:
        thumbs_wanted.append((key, mime))
    return rt.objects.uri(results, target)


def ask_thumbnails(rt: Runtime, job_id: str, images: list[tuple[str, str]]) -> None:
    """Ask for the thumbnails copy_into could not copy (their images are stored), and
    forget them."""
    if images:
        thumbnails.publish_request(rt, job_id, THUMBS_FOR_COPIES, images)
        images.clear()


def populate(rt: Runtime, job: JobRecord) -> int:
    """Record every SUCCEEDED item of the job with a request hash; existing entries win.
    (Most are there already, written at the collector's checkpoints by `remember`.)"""
    added = 0
    expiry = entry_expiry(rt)
    where = [Where("state", "==", ItemState.SUCCEEDED.value)]
    for item in rt.repo.items(job.job_id, where=where):
        entry = _entry_of(rt, item)
        if entry is None:
            continue
        added += rt.state.create(rec.cache_path(entry.content_hash), entry.to_doc() | expiry)
        crash_point("cache.after_first_entry")
    return added


def remember(rt: Runtime, items: Iterable[ItemRecord]) -> int:
    """Cache entries for the items a collector checkpoint just stored as SUCCEEDED, in one
    batched write: an identical request in a job that starts while this one still runs is
    then served from the cache instead of paid again (filling the cache only when a job
    ends left that window open for as long as the job ran). An entry already there is
    replaced: both images answer the same request, and this one is kept longer."""
    expiry = entry_expiry(rt)
    docs = [
        (rec.cache_path(entry.content_hash), entry.to_doc() | expiry)
        for entry in (_entry_of(rt, item) for item in items)
        if entry is not None
    ]
    return rt.state.set_many(docs) if docs else 0


def _entry_of(rt: Runtime, item: ItemRecord) -> CacheEntry | None:
    if item.state is not ItemState.SUCCEEDED or not item.request_hash or not item.mime_type:
        return None
    return CacheEntry(
        content_hash=item.request_hash,
        bucket=rt.settings.results_bucket,
        name=rec.image_object_name(item.job_id, item.key, item.mime_type),
        mime_type=item.mime_type,
        job_id=item.job_id,
        key=item.key,
    )


def entry_expiry(rt: Runtime) -> dict[str, str]:
    """`expire_at` for a cache entry written now: the image it points at is deleted by the
    results bucket's lifecycle `result_retention_days` after it was written (a little
    before now), so the entry goes at the same age; Firestore's TTL policy deletes it.
    Without a retention setting images are kept, and so are entries."""
    days = rt.settings.result_retention_days
    if days is None:
        return {}
    return {"expire_at": (rt.now() + timedelta(days=days)).isoformat()}


def resolve_duplicates(rt: Runtime, job: JobRecord) -> int:
    """Give each in-file duplicate the outcome of its first occurrence. Returns how many.

    Intake remembers only which requests it has seen (a set of 64-bit digests: a map to
    the first key would not fit a million lines in memory), so a duplicate does not name
    its original: the original is the earliest other item with the same request hash. The
    items are streamed once in line order to find them, only when there are duplicates.
    A duplicate without an original (intake's 64-bit set matched two different requests,
    about once in 37 million million-line files) fails, naming its request hash.
    """
    where = [Where("lane", "==", LANE_DUPLICATE), Where("state", "==", ItemState.PENDING.value)]
    wanted = {item.request_hash or "" for item in rt.repo.items(job.job_id, where=where)} - {""}
    if not wanted:
        return 0
    originals: dict[str, ItemRecord] = {}
    for item in rt.repo.items(job.job_id, order_by="line_no"):
        digest = item.request_hash
        if (
            digest in wanted
            and digest not in originals
            and item.lane != LANE_DUPLICATE
            and item.state is not ItemState.REJECTED
        ):
            originals[digest] = _original_view(item)
            if len(originals) == len(wanted):
                break
    resolved: list[ItemRecord] = []
    thumbs: list[tuple[str, str]] = []
    count = 0
    for item in rt.repo.items(job.job_id, where=where):
        resolved.append(_resolve(rt, item, originals.get(item.request_hash or ""), thumbs))
        if len(resolved) >= RESOLVE_FLUSH:
            count += rt.repo.put_items(resolved)
            resolved.clear()
            ask_thumbnails(rt, job.job_id, thumbs)
    if resolved:
        count += rt.repo.put_items(resolved)
        ask_thumbnails(rt, job.job_id, thumbs)
    return count


def _original_view(item: ItemRecord) -> ItemRecord:
    # Only what _resolve reads: many originals may be held at once.
    return ItemRecord(
        job_id=item.job_id,
        key=item.key,
        line_no=item.line_no,
        state=item.state,
        model=item.model,
        mime_type=item.mime_type,
    )


def _resolve(
    rt: Runtime, item: ItemRecord, original: ItemRecord | None, thumbs: list[tuple[str, str]]
) -> ItemRecord:
    now = rt.now()
    if original is not None and original.state in (ItemState.SUCCEEDED, ItemState.CACHED):
        try:
            uri = copy_into(rt, item.job_id, item.key, original, thumbs)
        except NotFound:
            uri = None
        if uri is not None:
            return item.model_copy(
                update={
                    "state": ItemState.CACHED,
                    "duplicate_of": original.key,
                    "image_uri": uri,
                    "mime_type": original.mime_type,
                    "reason": f"same request as key {original.key}",
                    "updated_at": now,
                }
            )
    found = "missing" if original is None else original.state.value
    state = ItemState.BLOCKED if found == ItemState.BLOCKED.value else ItemState.FAILED
    what = f"key {original.key}" if original is not None else f"request {item.request_hash}"
    return item.model_copy(
        update={
            "state": state,
            "saved_usd": None,
            "duplicate_of": original.key if original is not None else None,
            "reason": f"same request as {what}, which ended {found}: expected an image to copy",
            "updated_at": now,
        }
    )


def waiting_count(rt: Runtime, job_id: str) -> int:
    """The job's items still waiting for another job's request in flight (lane "joined",
    PENDING, not yet given a batch of their own): the job may not close while any do."""
    where = [Where("lane", "==", LANE_JOINED), Where("state", "==", ItemState.PENDING.value)]
    return sum(1 for item in rt.repo.items(job_id, where=where) if item.batch_id is None)
