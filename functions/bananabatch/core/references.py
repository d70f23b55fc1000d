"""Where a reference image may live: the rule every file URI of an input line is held to.

Pure. A reference image is read by the provider with the pipeline's own rights (a `gs://`
object through the project's service account or a signed URL, an `https://` URL fetched by
Google), so the input file must not be able to point those rights anywhere the owner did not
choose: not at another job's results, not at a bucket the pipeline happens to read, not at
an internal address. The rule:

- only `gs://` and `https://` URIs;
- every URI starts with one of the owner's reference locations (URI prefixes, from the
  `BANANABATCH_REFERENCE_LOCATIONS` setting); by default the inbox's `references/` folder
  and any public `https://` URL. `https://storage.googleapis.com/BUCKET/NAME` (and the
  other Cloud Storage hosts) counts as `gs://BUCKET/NAME`, so it is confined the same way;
- the pipeline's own results (`gs://RESULTS/jobs/...`) are never a reference, whatever the
  locations say;
- an `https://` URL names a public DNS host: no user name or password, no IP address (in
  any notation), no port but 443, no internal host (localhost, `*.internal`, `*.local`,
  single-label names such as `metadata`), no Google API host but Cloud Storage's and a
  Files API file (`https://generativelanguage.googleapis.com/v1beta/files/ID`, the Developer
  API's own way to pass an image): the JSON API on www.googleapis.com, Vertex and the rest
  are reached with the project's rights;
- no `.` or `..` path segment, written plainly or percent-encoded.

Whether an object inside the locations exists and is an image is for
pipeline.references to find out, and its answer never says which.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

DEFAULT_REFERENCE_PREFIX: Final = "references/"
# The one answer for a reference the store cannot serve as an image, whatever the cause
# (absent, not readable by the pipeline, empty, not an image): it tells nothing of a bucket.
UNREADABLE: Final = "unreadable or not an image of an accepted type (PNG, JPEG, WebP, HEIC/HEIF)"
# Every https URL: the default admits public URLs (signed URLs, CDNs), host rules still apply.
ANY_HTTPS: Final = "https://"
_SCHEMES: Final = ("gs://", "https://")
_RESULTS_JOBS_PREFIX: Final = "jobs/"
_BUCKET: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,221}")
_HOST: Final = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")
# Numeric last labels are IPv4 in another notation (2130706433, 0x7f.1, 127.1).
_NUMERIC_LABEL: Final = re.compile(r"[0-9]+|0x[0-9a-f]*")
_INTERNAL_NAMES: Final = frozenset({"localhost", "metadata.google.internal"})
_INTERNAL_SUFFIXES: Final = (
    ".localhost",
    ".internal",
    ".local",
    ".localdomain",
    ".home.arpa",
    ".intranet",
    ".lan",
)
# Hosts that serve Cloud Storage objects by path (`/BUCKET/NAME`) or by subdomain.
_GCS_PATH_HOSTS: Final = frozenset({"storage.googleapis.com", "storage.cloud.google.com"})
_GCS_BUCKET_HOST_SUFFIX: Final = ".storage.googleapis.com"
_GOOGLE_APIS: Final = "googleapis.com"
_FILES_API_HOST: Final = "generativelanguage.googleapis.com"
_FILES_API_PATH: Final = re.compile(r"/v1(?:alpha|beta)?/files/[a-z0-9-]{1,40}")


def location_problem(location: str) -> str | None:
    """Why `location` cannot be a reference location, or None."""
    if location == ANY_HTTPS:
        return None
    if location.startswith("gs://"):
        bucket, slash, _ = location[5:].partition("/")
        if not _BUCKET.fullmatch(bucket) or not slash:
            return f"expected gs://BUCKET/ or gs://BUCKET/PREFIX; found {location!r}"
        return None
    if location.startswith("https://"):
        host = location[8:].partition("/")[0]
        if not _HOST.fullmatch(host) or "/" not in location[8:]:
            return f"expected https://HOST/ or https://HOST/PREFIX; found {location!r}"
        return None
    return f"expected a gs:// or https:// prefix; found {location!r}"


@dataclass(frozen=True)
class ReferencePolicy:
    """The reference locations of one deployment, and the results bucket no reference may
    name. Build it with `for_buckets`."""

    locations: tuple[str, ...]
    results_bucket: str | None = None

    @classmethod
    def for_buckets(
        cls, inbox_bucket: str, results_bucket: str | None, locations: Iterable[str] = ()
    ) -> ReferencePolicy:
        """The owner's locations, or the default: the inbox's `references/` and public https."""
        chosen = tuple(locations) or (
            f"gs://{inbox_bucket}/{DEFAULT_REFERENCE_PREFIX}",
            ANY_HTTPS,
        )
        return cls(locations=chosen, results_bucket=results_bucket)

    def problem(self, uri: str) -> str | None:
        """Why `uri` may not be a reference image, or None. Looks at the text only."""
        if uri.startswith("gs://"):
            bucket, _, name = uri[5:].partition("/")
            if not bucket or not name:
                return f"expected gs://BUCKET/OBJECT; found {uri}"
            return self._object_problem(uri, bucket, name)
        if not uri.startswith("https://"):
            scheme = uri.partition(":")[0] if ":" in uri else ""
            found = f"a {scheme}: URI" if scheme else "no scheme"
            return f"expected a gs:// or https:// URI; found {found} in {uri}"
        return self._https_problem(uri)

    def _https_problem(self, uri: str) -> str | None:
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError:
            return f"expected https://HOST/PATH; found {uri}"
        host = (parts.hostname or "").rstrip(".")
        problem = _host_problem(parts.netloc, parts.username, parts.password, host, port)
        if problem is not None:
            return f"{problem}; found {uri}"
        path = unquote(parts.path)
        if _has_dot_segment(path):
            return f'must not contain a "." or ".." path segment; found {uri}'
        if host in _GCS_PATH_HOSTS:
            bucket, _, name = path.lstrip("/").partition("/")
            return self._object_problem(uri, bucket, name)
        if host.endswith(_GCS_BUCKET_HOST_SUFFIX):
            bucket = host.removesuffix(_GCS_BUCKET_HOST_SUFFIX)
            return self._object_problem(uri, bucket, path.lstrip("/"))
        if _is_google_api(host, path):
            # Cloud Storage's JSON API on www.googleapis.com names any bucket, Vertex and the
            # other APIs answer with the project's rights. Cloud Storage by object path
            # (above) is confined like gs://; a Files API file is the Developer API's own way
            # to pass an image, and the pipeline stores no image there.
            return (
                "must not name a Google API host other than Cloud Storage or a Files API file; "
                f"found {uri}"
            )
        if any(uri.startswith(loc) for loc in self.locations if loc.startswith("https://")):
            return None
        return self._outside(uri)

    def _object_problem(self, uri: str, bucket: str, name: str) -> str | None:
        if _has_dot_segment(name) or "\\" in name:
            return f'must not contain a "." or ".." path segment or a backslash; found {uri}'
        if bucket == self.results_bucket and name.startswith(_RESULTS_JOBS_PREFIX):
            return f"must not name the pipeline's own results (gs://{bucket}/jobs/); found {uri}"
        canonical = f"gs://{bucket}/{name}"
        if any(canonical.startswith(loc) for loc in self.locations if loc.startswith("gs://")):
            return None
        return self._outside(uri)

    def _outside(self, uri: str) -> str:
        return (
            f"expected a URI under {_listed(self.locations)} (the reference locations, "
            f"BANANABATCH_REFERENCE_LOCATIONS); found {uri}"
        )


def _listed(locations: Sequence[str]) -> str:
    return " or ".join("any public https:// URL" if loc == ANY_HTTPS else loc for loc in locations)


def _host_problem(
    netloc: str, username: str | None, password: str | None, host: str, port: int | None
) -> str | None:
    """Why an https URL's authority does not name a public DNS host, or None."""
    if username is not None or password is not None or "@" in netloc:
        return "must not carry a user name or password"
    if not host:
        return "expected https://HOST/PATH"
    if _is_ip_literal(host):
        return "must name a host, not an IP address"
    if port not in (None, 443):
        return "must not name a port (other than 443)"
    if _is_internal(host) or not _HOST.fullmatch(host):
        return "expected a public DNS host name"
    return None


def _is_google_api(host: str, path: str) -> bool:
    """A Google API host other than a Files API file's (Cloud Storage is told apart before)."""
    if host != _GOOGLE_APIS and not host.endswith("." + _GOOGLE_APIS):
        return False
    return not (host == _FILES_API_HOST and _FILES_API_PATH.fullmatch(path))


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _NUMERIC_LABEL.fullmatch(host.rpartition(".")[2]) is not None
    return True


def _is_internal(host: str) -> bool:
    return host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES) or "." not in host
