"""Reference images must be readable before a line is paid for.

The parser checks a reference URI's form and that it lies where the owner keeps references
(core.references); only the store can say whether a gs:// object there exists, is readable
by the service account and really is an image. The provider would otherwise fail the row
after the batch ran (a wasted slot and a day of latency) or, worse, generate from a prompt
whose reference silently went missing. https:// URIs are fetched by the provider itself and
are not checked here: functions have no general egress, and a HEAD that succeeds here proves
nothing about what the provider can reach.

The answer is only which reference is unusable, never why: the rejection is written to a
file the uploader reads, and must not tell whether an object exists or what it holds. The
cause goes to the log, for the owner.

Jobs reuse a handful of references across thousands of lines, so each URI is looked at
once per intake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bananabatch.config import Settings
from bananabatch.core.references import ReferencePolicy
from bananabatch.errors import NotFound, PermanentError
from bananabatch.log import get_logger
from bananabatch.ports import ObjectStore

log = get_logger(__name__)

# Enough bytes for every signature below (ISOBMFF brands sit at offset 8..12).
_HEAD_BYTES: Final = 16
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heif"})


def sniff_image_mime(head: bytes) -> str | None:
    """The image type the first bytes of a file announce, for the types the models take;
    None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "image/heic" if head[8:12] in (b"heic", b"heix", b"hevc", b"hevx") else "image/heif"
    return None


def reference_policy(settings: Settings) -> ReferencePolicy:
    """The deployment's reference locations (its setting, or the default), with its results
    bucket, which no reference may name."""
    return ReferencePolicy.for_buckets(
        settings.inbox_bucket, settings.results_bucket, settings.reference_locations
    )


class ReferenceChecker:
    """Looks each gs:// reference up once: it must exist, be non-empty and start like an
    image the models accept."""

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects
        self._usable: dict[str, bool] = {}

    def first_unusable(self, uris: Sequence[str]) -> int | None:
        """The index of the first reference among `uris` the store cannot serve as an
        image, or None. Transient store errors propagate (the upload is retried)."""
        for index, uri in enumerate(uris):
            if not uri.startswith("gs://"):
                continue
            usable = self._usable.get(uri)
            if usable is None:
                cause = self._look(uri)
                usable = self._usable[uri] = cause is None
                if cause is not None:
                    log.info("reference image unusable", extra={"uri": uri, "cause": cause})
            if not usable:
                return index
        return None

    def _look(self, uri: str) -> str | None:
        """Why `uri` is unusable, for the log only; None when it is an image."""
        bucket, _, name = uri[5:].partition("/")
        try:
            info = self._objects.stat(bucket, name)
            if info is None:
                return "no such object"
            if info.size == 0:
                return "empty object"
            with self._objects.open_read(bucket, name) as stream:
                head = stream.read(_HEAD_BYTES)
        except NotFound:
            return "no such object"
        except PermanentError as exc:
            # Typically 403: the object exists but this service account may not read it,
            # and neither could the provider acting for the same project.
            return f"not readable by the pipeline ({type(exc).__name__})"
        if sniff_image_mime(head) is None:
            return "not a PNG, JPEG, WebP or HEIC/HEIF image"
        return None
