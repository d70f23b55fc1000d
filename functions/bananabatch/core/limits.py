"""What the stores accept as names and metadata, and the key length that follows from it.

Pure. The stores' bounds (object names, metadata values) are checked where the stores write;
the limits on an input line that follow from them are checked at intake, before anything is
paid, by core/intake/limits.py.

Keys. A key becomes a file or object name in every store the product writes to:
`jobs/<job>/images/<key>.<ext>` and `jobs/<job>/thumbs/<key>.jpg` in the results bucket,
`jobs/<job>/items/<key>` in the state store. The tightest of those stores is the local
folder store: one path component is at most 255 bytes on the common file systems (ext4, XFS,
btrfs, APFS; 255 UTF-16 units on NTFS, which a 255-byte UTF-8 name never exceeds), and it
writes a sidecar next to an object named `<leaf>@<generation>.json`. Cloud Storage allows
1,024 bytes of UTF-8 for the whole name; Firestore 1,500 bytes for a document id. So a key
is limited in bytes as well as in characters: 128 characters (the documented limit) and
MAX_KEY_BYTES of UTF-8, which is what the folder store can hold with the longest suffix the
product adds to a key.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

# --- what the stores accept ----------------------------------------------------------------

# One path component on the file systems the folder store runs on.
NAME_COMPONENT_BYTES: Final = 255
# Cloud Storage: 1-1,024 bytes of UTF-8, no CR or LF.
GCS_OBJECT_NAME_BYTES: Final = 1024
# What the folder store appends to an object's last component for its sidecar:
# "@" + the generation (nanoseconds since 1970: 19 digits until 2286, one more allowed) + ".json".
SIDECAR_SUFFIX_BYTES: Final = len("@") + 20 + len(".json")
# The extensions an image or thumbnail name adds to a key (core.records.extension_for,
# report.thumbs.THUMB_EXTENSION); a test holds every name the product builds to this bound.
LONGEST_KEY_EXTENSION: Final = ".webp"
# Room left for the key in one component of the folder store.
MAX_KEY_BYTES: Final = NAME_COMPONENT_BYTES - len(LONGEST_KEY_EXTENSION) - SIDECAR_SUFFIX_BYTES
# The longest job id (core.records.job_id_for: a 40-character slug, "-", 12 hex digits) and
# the longest folder between it and a key, for the Cloud Storage bound below.
MAX_JOB_ID_CHARS: Final = 40 + 1 + 12
_LONGEST_KEY_PREFIX: Final = len("jobs/") + MAX_JOB_ID_CHARS + len("/images/")
# Cloud Storage's bound, far looser: the folder store's MAX_KEY_BYTES is the one that binds.
assert MAX_KEY_BYTES + _LONGEST_KEY_PREFIX + len(LONGEST_KEY_EXTENSION) <= GCS_OBJECT_NAME_BYTES


def utf8_length(text: str) -> int:
    """Bytes of `text` in UTF-8 (a lone surrogate counted as three, as it would be written)."""
    return len(text.encode("utf-8", "surrogatepass"))


def gcs_object_name_problem(name: str) -> str | None:
    """Why Cloud Storage would refuse `name` as an object name, or None."""
    size = utf8_length(name)
    if not 0 < size <= GCS_OBJECT_NAME_BYTES:
        return f"expected 1 to {GCS_OBJECT_NAME_BYTES} bytes of UTF-8; found {size}"
    if "\r" in name or "\n" in name:
        return "must not contain a carriage return or line feed"
    if name in (".", ".."):
        return 'must not be "." or ".."'
    if name.startswith(".well-known/acme-challenge/"):
        return 'must not start with ".well-known/acme-challenge/"'
    return None


def folder_name_problem(name: str) -> str | None:
    """Why the folder store could not hold `name` (and its sidecar), or None: each
    '/'-separated component, with the sidecar's suffix on the last, must fit one file name."""
    segments = name.split("/")
    for index, segment in enumerate(segments):
        size = utf8_length(segment)
        extra = SIDECAR_SUFFIX_BYTES if index == len(segments) - 1 else 0
        if size + extra > NAME_COMPONENT_BYTES:
            return (
                f"expected each '/'-separated part to be at most "
                f"{NAME_COMPONENT_BYTES - extra} bytes of UTF-8; found {size} in part "
                f"{index + 1}"
            )
    return None


def object_name_problem(name: str) -> str | None:
    """Why one of the stores the product writes to (Cloud Storage, the folder store) could
    not hold an object named `name`, or None. Both stores refuse what either refuses, so a
    name that works locally works deployed."""
    return gcs_object_name_problem(name) or folder_name_problem(name)


def unwritable_name(bucket: str, name: str, problem: str) -> str:
    """The message of a store refusing to write `name` (PermanentError: retrying cannot help)."""
    return f"object name {name!r} in bucket {bucket}: {problem}, so not every store can hold it"


# Printable ASCII but "%": what a metadata value keeps as it is.
_HEADER_SAFE: Final = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_safe(text: str) -> str:
    """`text` as an object metadata value every store can send back: Cloud Storage returns
    custom metadata as x-goog-meta-* HTTP headers, which carry ASCII only. Everything but
    printable ASCII (and "%") is percent-encoded UTF-8, so urllib.parse.unquote gives the
    text back and a plain key is written as it is."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return quote(text, safe=_HEADER_SAFE, errors="surrogatepass")
