"""Gallery thumbnails, made off the collector's path.

Decoding, shrinking and encoding a thumbnail costs 5 to 30 ms per image, while writing the
image costs next to nothing; done inline it took CPU from the one result stream a whole
batch waits on (and that must finish within the collector's deadline). So the collector
only writes images, and at each checkpoint, once that checkpoint's images are stored,
publishes one `thumbnails` message on the batch-done topic listing them. Each message is
one invocation of on_batch_done, so thumbnails are made in parallel with the collection
and with each other, by as many instances as the platform starts.

A redelivered message rewrites the same names (idempotent). A bad image is logged and
skipped, and so is an image that is not there: neither would be different on a retry, and
the gallery falls back to the full image for any thumbnail that is missing. Store errors
are raised, so the platform retries the message.

On the local stack nothing makes them during a run (config.LocalThumbnails.ON_DEMAND): the
gallery server of `bananabatch local serve` and `fetch --zip` call ensure_thumbnail for
one that is missing, which makes it exactly as handle_thumbnails would and stores it where
handle_thumbnails puts it, so later requests read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from bananabatch.core import records as rec
from bananabatch.errors import NotFound, PermanentError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline.runtime import Runtime
from bananabatch.report.thumbs import THUMB_CONTENT_TYPE, make_thumbnail, thumb_object_name

log = get_logger(__name__)

# The `kind` of a thumbnails message, in its body and in its attributes (so a subscription
# filter could route it without reading the body).
KIND: Final = "thumbnails"
SCHEMA_VERSION: Final = 1


@dataclass(frozen=True)
class ThumbnailRequest:
    job_id: str
    batch_id: str
    keys: tuple[str, ...]
    # One per key: the images' names derive from it (rec.image_object_name).
    mime_types: tuple[str, ...]


@dataclass
class ThumbnailReport:
    made: int = 0
    bad_images: list[str] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


def publish_request(
    rt: Runtime, job_id: str, batch_id: str, images: Sequence[tuple[str, str]]
) -> None:
    """Ask for the thumbnails of `images` (key, mime type), which must already be stored."""
    message = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "job_id": job_id,
        "batch_id": batch_id,
        "keys": [key for key, _mime in images],
        "mime_types": [mime for _key, mime in images],
    }
    rt.bus.publish(
        rt.settings.topic_batch_done,
        json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        {"kind": KIND, "job_id": job_id, "batch_id": batch_id},
    )


def parse_request(payload: Mapping[str, Any]) -> ThumbnailRequest:
    """The request in a thumbnails message; PermanentError when it is malformed (a retry
    would not make it any better)."""
    job_id, batch_id = payload.get("job_id"), payload.get("batch_id")
    keys, mimes = payload.get("keys"), payload.get("mime_types")
    if not isinstance(job_id, str) or not job_id:
        raise PermanentError(f"thumbnails message: expected a job_id string; found {job_id!r}")
    if not isinstance(batch_id, str) or not batch_id:
        raise PermanentError(
            f"thumbnails message: expected a batch_id string; found {batch_id!r}", job_id=job_id
        )
    if not _strings(keys) or not _strings(mimes) or len(keys) != len(mimes):
        raise PermanentError(
            "thumbnails message: expected lists of key and mime_type strings of equal length; "
            f"found keys={keys!r}, mime_types={mimes!r}",
            job_id=job_id,
            batch_id=batch_id,
        )
    return ThumbnailRequest(job_id, batch_id, tuple(keys), tuple(mimes))


def _strings(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def handle_thumbnails(rt: Runtime, request: ThumbnailRequest) -> ThumbnailReport:
    """Make and write the thumbnail of every listed image."""
    report = ThumbnailReport()
    results = rt.settings.results_bucket
    with labels(job_id=request.job_id, batch_id=request.batch_id):
        for key, mime in zip(request.keys, request.mime_types, strict=True):
            name = rec.image_object_name(request.job_id, key, mime)
            try:
                image = rt.objects.read_bytes(results, name)
            except NotFound:
                # The collector lists an image only once it is stored, so it was deleted
                # since (or a message was forged); waiting will not bring it back.
                log.error(
                    "no thumbnail: the image is not in the results bucket",
                    extra={"job_id": request.job_id, "key": key, "object": name},
                )
                report.missing_images.append(key)
                continue
            try:
                thumb = make_thumbnail(image)
            except PermanentError as exc:
                log.error(
                    "no thumbnail: the image does not decode; the gallery shows the image",
                    extra={
                        "job_id": request.job_id,
                        "key": key,
                        "object": name,
                        "error": str(exc),
                    },
                )
                report.bad_images.append(key)
                continue
            rt.objects.write_bytes(
                results,
                thumb_object_name(request.job_id, key),
                thumb,
                content_type=THUMB_CONTENT_TYPE,
            )
            report.made += 1
        log.info(
            "thumbnails written",
            extra={
                "made": report.made,
                "bad_images": len(report.bad_images),
                "missing_images": len(report.missing_images),
            },
        )
    return report


# The mime types whose names an image may have (records.extension_for), most likely first;
# the last stands for every other type (".bin").
_IMAGE_TYPES: Final = ("image/png", "image/jpeg", "image/webp", "image/gif", "")


def ensure_thumbnail(rt: Runtime, job_id: str, key: str) -> bytes | None:
    """The thumbnail of job_id's image `key`: the stored one, or else made now from the image
    and stored under the name handle_thumbnails uses (same bytes as it would write). None
    when there is no image, or it does not decode (the gallery shows the image, or its
    placeholder). Safe to call from many threads or processes at once: a store write is
    published whole by a rename, and racing writers write the same bytes."""
    results = rt.settings.results_bucket
    try:
        return rt.objects.read_bytes(results, thumb_object_name(job_id, key))
    except NotFound:
        pass
    for mime in _IMAGE_TYPES:
        try:
            image = rt.objects.read_bytes(results, rec.image_object_name(job_id, key, mime))
        except NotFound:
            continue
        return store_thumbnail(rt, job_id, key, image)
    return None


def store_thumbnail(rt: Runtime, job_id: str, key: str, image: bytes) -> bytes | None:
    """Make the image's thumbnail and store it; None (logged) when the image does not decode."""
    try:
        thumb = make_thumbnail(image)
    except PermanentError as exc:
        log.warning(
            "no thumbnail: the image does not decode; the gallery shows the image",
            extra={"job_id": job_id, "key": key, "error": str(exc)},
        )
        return None
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        thumb_object_name(job_id, key),
        thumb,
        content_type=THUMB_CONTENT_TYPE,
    )
    return thumb
