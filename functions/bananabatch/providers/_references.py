"""Reference images in a form the Gemini Developer API reads (issue 13 part 4).

Intake keeps a reference image as the `gs://` URI the user wrote (Vertex reads those). The
Developer API does not: it reads a `gs://` object only once the project has registered it
through `files:register`, and otherwise fetches public or signed `https://` URLs (field
sheet §1 row 10). The choice here is a V4 signed URL, made when the batch is created and
valid past the batch's own expiry:

- it works with what the pipeline already holds, an auth key for Gemini and a service
  account for the bucket; `files:register` needs OAuth credentials of the key's project
  and an IAM grant on our bucket to Google's Gemini service agent, and what a registered
  file costs in the project's 20 GB Files store, and how long it lives, is not documented;
- it costs no API call per reference and no state to clean up afterwards;
- it is made at create, not at intake, so a line that waited in the queue (a budget pause,
  a retry a day later) still gets a fresh URL whose lifetime covers its batch.

A signed URL is a bearer capability for one object, for its lifetime. It is written only
into the request file uploaded to the Files API (deleted once the batch is terminal) and
never into our own records, logs or status.

Pure: the signing itself is a callable the provider passes in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import IO, Any, Final

from bananabatch.errors import PermanentError
from bananabatch.ports import ResultRow

GCS_SCHEME: Final = "gs://"
_GCS_BYTES: Final = b"gs://"
# The batch itself expires 48 h after it is created (reference §6.1): a reference must stay
# readable until then. A V4 signed URL lives at most 7 days.
BATCH_EXPIRY: Final = timedelta(hours=48)
MAX_SIGNED_URL_LIFETIME: Final = timedelta(days=7)
_SCAN_CHUNK: Final = 1024 * 1024

UrlFor = Callable[[str], str]
# The parts of a V4 signed URL that make it a credential.
_SIGNED_PARAMS: Final = re.compile(r"(X-Goog-(?:Signature|Credential)=)[^&\s\"']+")


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """(bucket, object name) of gs://bucket/name."""
    bucket, _, name = uri.removeprefix(GCS_SCHEME).partition("/")
    if not uri.startswith(GCS_SCHEME) or not bucket or not name:
        raise PermanentError(f"expected a gs://BUCKET/OBJECT reference, found {uri!r}")
    return bucket, name


def with_readable_references(node: Any, url_for: UrlFor) -> tuple[Any, int]:
    """A copy of a REST request in which every `fileData.fileUri` (either case, in any
    part of the request) that is a gs:// URI is replaced by `url_for(uri)`, and how many
    were replaced. Everything else is kept as it is, text included."""
    if isinstance(node, list):
        replaced = 0
        items: list[Any] = []
        for item in node:
            new, count = with_readable_references(item, url_for)
            items.append(new)
            replaced += count
        return items, replaced
    if not isinstance(node, Mapping):
        return node, 0
    out: dict[str, Any] = {}
    replaced = 0
    for key, value in node.items():
        if key in ("fileData", "file_data") and isinstance(value, Mapping):
            data = dict(value)
            for uri_key in ("fileUri", "file_uri"):
                uri = data.get(uri_key)
                if isinstance(uri, str) and uri.startswith(GCS_SCHEME):
                    data[uri_key] = url_for(uri)
                    replaced += 1
            out[key] = data
        else:
            out[key], count = with_readable_references(value, url_for)
            replaced += count
    return out, replaced


def mentions_gcs(stream: IO[bytes]) -> bool:
    """Whether the bytes hold `gs://` anywhere; reads the stream to its end. A file
    without it is uploaded as it is, without a rewritten copy."""
    tail = b""
    while chunk := stream.read(_SCAN_CHUNK):
        if _GCS_BYTES in tail + chunk[: len(_GCS_BYTES)] or _GCS_BYTES in chunk:
            return True
        tail = chunk[-(len(_GCS_BYTES) - 1) :]
    return False


def rewrite_request_lines(source: IO[bytes], sink: IO[bytes], url_for: UrlFor) -> int:
    """Copy staged request lines ({"key", "request"}) from source to sink with their gs://
    references made readable; lines that mention no gs:// are copied byte for byte.
    Returns how many references were replaced."""
    replaced = 0
    for raw in source:
        if _GCS_BYTES not in raw:
            sink.write(raw)
            continue
        line = json.loads(raw)
        new, count = with_readable_references(line, url_for)
        if count == 0:
            sink.write(raw)
            continue
        replaced += count
        sink.write(json.dumps(new, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        sink.write(b"\n")
    return replaced


def redact_signed_urls(text: str) -> str:
    """The text with the signature and credential of any V4 signed URL blanked out: the
    service may echo a reference's URL in a row's error, which becomes our record."""
    if "X-Goog-" not in text:
        return text
    return _SIGNED_PARAMS.sub(r"\1REDACTED", text)


def without_signed_urls(rows: Iterator[ResultRow]) -> Iterator[ResultRow]:
    """Result rows whose error messages carry no signed-URL credential."""
    for row in rows:
        error = row.row.get("error") if row.row is not None else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            error["message"] = redact_signed_urls(error["message"])
        yield row
