"""Reference images must be readable before a line is paid for.

The parser checks a reference URI's form; only the store can say whether a gs:// object
exists, is readable by the service account and really is an image. The provider would
otherwise fail the row after the batch ran (a wasted slot and a day of latency) or,
worse, generate from a prompt whose reference silently went missing. https:// URIs are
fetched by the provider itself and are not checked here: functions have no general
egress, and a HEAD that succeeds here proves nothing about what the provider can reach.

Jobs reuse a handful of references across thousands of lines, so each URI is looked at
once per intake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bananabatch.errors import NotFound, PermanentError
from bananabatch.ports import ObjectStore

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


class ReferenceChecker:
    """Looks each gs:// reference up once: it must exist, be non-empty and start like an
    image the models accept."""

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects
        self._seen: dict[str, str | None] = {}

    def problem(self, uris: Sequence[str]) -> str | None:
        """Why the first unusable reference among `uris` cannot be used, or None."""
        for index, uri in enumerate(uris):
            if not uri.startswith("gs://"):
                continue
            if uri not in self._seen:
                self._seen[uri] = self._look(uri)
            found = self._seen[uri]
            if found is not None:
                return f"item {index + 1}: {found}"
        return None

    def _look(self, uri: str) -> str | None:
        bucket, _, name = uri[5:].partition("/")
        try:
            info = self._objects.stat(bucket, name)
            if info is None:
                return f"expected an existing image object; found none at {uri}"
            if info.size == 0:
                return f"expected an image; found an empty object at {uri}"
            with self._objects.open_read(bucket, name) as stream:
                head = stream.read(_HEAD_BYTES)
        except NotFound:
            return f"expected an existing image object; found none at {uri}"
        except PermanentError as exc:
            # Typically 403: the object exists but this service account may not read it,
            # and neither could the provider acting for the same project.
            return f"expected an image readable by the pipeline; {uri} is not ({exc})"
        if sniff_image_mime(head) is None:
            return (
                f"expected a PNG, JPEG, WebP or HEIC/HEIF image; {uri} starts with "
                f"{head[:8]!r}, which is none of them"
            )
        return None
