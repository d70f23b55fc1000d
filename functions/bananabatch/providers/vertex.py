"""BatchProvider over Vertex AI batch prediction (reference §10): the request file stays in
Cloud Storage, results come back as `predictions.jsonl` under a `gs://` prefix.

Vertex request lines have no key field, and output lines come back in no particular order,
so the key travels in the request's labels, which the service echoes with each output
line. Label values allow only 63 characters of [a-z0-9_-], so the key is written as
lowercase base32 split over `bb_key_0..n`, with a checksum label `bb_key_sum` that catches
a truncated or altered echo. When the echo carries no usable labels, the key is recovered
from the echoed request itself, matched against the staged request file.

Create, get, list and cancel go through the SDK (it keeps `error`, `completionStats` and
`outputInfo` for Vertex, unlike the Developer API); results are streamed from Cloud Storage
through the ObjectStore; the synchronous lane posts the REST request as is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import google.auth
import google.auth.transport.requests
import httpx
from google import genai
from google.auth.credentials import Credentials
from google.genai import types as genai_types
from google.oauth2.credentials import Credentials as TokenCredentials

from bananabatch.config import ENV_PROJECT, ProviderKind, Settings
from bananabatch.core.states import BatchState
from bananabatch.errors import (
    ConfigError,
    NotFound,
    PermanentError,
    ProviderOutcomeUnknown,
    TransientError,
)
from bananabatch.log import get_logger
from bananabatch.ports import ObjectStore, ProviderBatch, ResultRow
from bananabatch.providers._common import batch_state, split_lines
from bananabatch.providers._lines import parse_line
from bananabatch.providers.gemini import (
    HTTP_TIMEOUT,
    LIST_PAGE_SIZE,
    SDK_TIMEOUT_MS,
    TRANSPORT_ERRORS,
    _http_error,
    _state_text,
    create_errors,
    sdk_errors,
)

log = get_logger(__name__)

KEY_LABEL_PREFIX: Final = "bb_key_"
KEY_SUM_LABEL: Final = "bb_key_sum"
# Vertex label values: at most 63 characters of lowercase letters, digits, _ and -.
LABEL_VALUE_MAX: Final = 63
_KEY_PART: Final = re.compile(r"^bb_key_(\d+)$")
_STREAM_CHUNK: Final = 1024 * 1024
# The token the emulator accepts; it checks only that a Bearer token is present.
EMULATOR_TOKEN: Final = "emulator"  # noqa: S105  # not a secret: any token passes
OUTPUT_DIR: Final = "output/"
PREDICTIONS_PREFIX: Final = "predictions"


# --- the key in labels ---------------------------------------------------------------------


def key_labels(key: str) -> dict[str, str]:
    """Labels that carry `key` losslessly within Vertex's label value rules."""
    encoded = base64.b32encode(key.encode("utf-8")).decode("ascii").rstrip("=").lower()
    chunks = [encoded[i : i + LABEL_VALUE_MAX] for i in range(0, len(encoded), LABEL_VALUE_MAX)]
    labels = {f"{KEY_LABEL_PREFIX}{index}": chunk for index, chunk in enumerate(chunks or [""])}
    labels[KEY_SUM_LABEL] = _key_sum(key)
    return labels


def key_from_labels(labels: object) -> str | None:
    """The key `key_labels` wrote, or None when the labels do not carry one intact."""
    if not isinstance(labels, Mapping):
        return None
    parts: dict[int, str] = {}
    for name, value in labels.items():
        match = _KEY_PART.match(str(name))
        if match and isinstance(value, str):
            parts[int(match.group(1))] = value
    if not parts or sorted(parts) != list(range(len(parts))):
        return None
    encoded = "".join(parts[index] for index in range(len(parts))).upper()
    try:
        key = base64.b32decode(encoded + "=" * (-len(encoded) % 8)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return key if labels.get(KEY_SUM_LABEL) == _key_sum(key) else None


def _key_sum(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _without_key_labels(request: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(request)
    labels = out.get("labels")
    if isinstance(labels, Mapping):
        kept = {k: v for k, v in labels.items() if not str(k).startswith(KEY_LABEL_PREFIX)}
        if kept:
            out["labels"] = kept
        else:
            out.pop("labels")
    return out


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """Identifies a request whatever its labels and key order, for matching an echo."""
    canonical = json.dumps(_without_key_labels(request), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- gs:// names ---------------------------------------------------------------------------


def split_gs_uri(uri: str) -> tuple[str, str]:
    """(bucket, name) of a gs:// URI."""
    if not uri.startswith("gs://"):
        raise PermanentError(f"expected a gs://bucket/name URI, found {uri!r}")
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise PermanentError(f"expected a gs://bucket/name URI, found {uri!r}")
    return bucket, name


def destination_for(bucket: str, request_object: str) -> str:
    """Where a batch's output goes: beside its request file, one prefix per batch."""
    return f"gs://{bucket}/{request_object.removesuffix('.jsonl')}/{OUTPUT_DIR}"


def request_object_for(output_dir: str) -> tuple[str, str] | None:
    """The staged request file of a batch, from its output directory (see destination_for)."""
    bucket, name = split_gs_uri(output_dir)
    stem, found, _ = name.rpartition(f"/{OUTPUT_DIR}")
    return (bucket, f"{stem}.jsonl") if found and stem else None


# --- the provider --------------------------------------------------------------------------


class VertexProvider:
    """Vertex AI batch prediction jobs. Create is never retried here (see gemini.create)."""

    def __init__(
        self,
        client: genai.Client,
        objects: ObjectStore,
        *,
        credentials: Credentials,
        base_url: str,
        project: str,
        location: str,
        http: httpx.Client | None = None,
    ) -> None:
        self.kind = ProviderKind.VERTEX.value
        self.client = client
        self.objects = objects
        self.credentials = credentials
        self.base_url = base_url.rstrip("/")
        self.project = project
        self.location = location
        self._http = http or httpx.Client(timeout=HTTP_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    # --- request lines ---------------------------------------------------------------------

    def encode_request(self, key: str, request: Mapping[str, Any]) -> dict[str, Any]:
        labels = request.get("labels")
        merged = {
            str(k): str(v)
            for k, v in (labels.items() if isinstance(labels, Mapping) else ())
            if not str(k).startswith(KEY_LABEL_PREFIX)
        }
        merged.update(key_labels(key))
        return {"request": {**request, "labels": merged}}

    def decode_request(self, line: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        request = line.get("request")
        if not isinstance(request, Mapping):
            raise PermanentError(
                f"staged Vertex request line: expected {{'request': object}}, found keys "
                f"{sorted(line)}"
            )
        key = key_from_labels(request.get("labels"))
        if key is None:
            raise PermanentError(
                "staged Vertex request line: its labels do not carry an intact key "
                f"({KEY_LABEL_PREFIX}0.. with a matching {KEY_SUM_LABEL})"
            )
        return key, _without_key_labels(request)

    # --- create ----------------------------------------------------------------------------

    def create(
        self,
        *,
        model: str,
        display_name: str,
        request_bucket: str,
        request_object: str,
        request_count: int,
    ) -> ProviderBatch:
        """Create a batch prediction job reading the staged file where it lies.

        Nothing is uploaded first, so every failure is either a definite refusal (quota:
        ProviderQuotaExceeded; other 4xx: PermanentError) or leaves the job's existence
        open (ProviderOutcomeUnknown).
        """
        source = f"gs://{request_bucket}/{request_object}"
        where = f"batch {display_name} ({source})"
        if any(bad in model for bad in ("..", "?", "&")):
            raise PermanentError(f"creating {where}: model {model!r} is not a valid model name")
        config = genai_types.CreateBatchJobConfig(
            display_name=display_name, dest=destination_for(request_bucket, request_object)
        )
        with create_errors(f"creating {where}", "job", model=model):
            job = self.client.batches.create(model=model, src=source, config=config)
            if not job.name:
                raise ProviderOutcomeUnknown(f"creating {where}: the answer named no job")
        log.info("vertex batch job created", extra={"batch_name": job.name, "model": model})
        made = batch_from_job(job)
        return ProviderBatch(
            name=made.name,
            display_name=made.display_name or display_name,
            state=made.state,
            provider_state=made.provider_state,
            error=made.error,
            output=made.output,
            request_count=request_count,
            create_time=made.create_time,
            end_time=made.end_time,
        )

    # --- find, get, cancel -----------------------------------------------------------------

    def find(self, display_name: str) -> ProviderBatch | None:
        """The newest job with this display name. The filter narrows the listing on the
        service; the comparison here is what decides."""
        config = genai_types.ListBatchJobsConfig(
            page_size=LIST_PAGE_SIZE, filter=f'display_name="{display_name}"'
        )
        with sdk_errors(f"listing batch jobs to find {display_name}"):
            for job in self.client.batches.list(config=config):
                if job.display_name == display_name and job.name:
                    return batch_from_job(job)
        return None

    def get(self, name: str) -> ProviderBatch:
        with sdk_errors(f"getting {name}"):
            job = self.client.batches.get(name=name)
        return batch_from_job(job)

    def cancel(self, name: str) -> None:
        # A finished job cannot be cancelled; either way it is past cancelling.
        with sdk_errors(f"cancelling {name}", finished_ok=True):
            self.client.batches.cancel(name=name)

    # --- results ---------------------------------------------------------------------------

    def iter_results(self, batch: ProviderBatch, *, start_line: int = 0) -> Iterator[ResultRow]:
        """Rows of every `predictions*.jsonl` in the output directory, in name order, each
        normalised to the Developer API shape ({"key", "response"} or {"key", "status"})."""
        if not batch.output:
            raise PermanentError(f"batch {batch.name} ({batch.state}) has no output directory")
        bucket, prefix = split_gs_uri(batch.output.rstrip("/") + "/")
        files = [
            info.name
            for info in self.objects.list(bucket, prefix + PREDICTIONS_PREFIX)
            if info.name.endswith(".jsonl") and "/" not in info.name[len(prefix) :]
        ]
        if not files:
            if batch.state is BatchState.SUCCEEDED:
                # Completed rows are exported as the job ends; a listing can lag behind.
                raise TransientError(
                    f"batch {batch.name} succeeded but {batch.output} holds no predictions yet"
                )
            return
        keys = _EchoIndex(self, batch.output)
        line_no = 0
        for name in sorted(files):
            with self.objects.open_read(bucket, name) as stream:
                for raw in split_lines(iter(lambda: stream.read(_STREAM_CHUNK), b"")):
                    line = raw.strip()
                    if not line:
                        continue
                    if line_no >= start_line:
                        yield normalise_row(parse_line(line_no, line), keys)
                    line_no += 1

    # --- stores ----------------------------------------------------------------------------

    def release_input(self, batch: ProviderBatch) -> None:
        """Vertex reads the request file from our own bucket: nothing to free there."""

    def files_store_bytes(self) -> int | None:
        return None

    # --- synchronous lane ------------------------------------------------------------------

    def generate(self, *, model: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        bare = model.removeprefix("models/").removeprefix("publishers/google/models/")
        path = (
            f"projects/{self.project}/locations/{self.location}/publishers/google/models/"
            f"{bare}:generateContent"
        )
        where = f"generateContent on {bare}"
        try:
            response = self._http.post(
                f"{self.base_url}/v1beta1/{path}",
                json=dict(request),
                headers={"Authorization": f"Bearer {self._token()}"},
            )
        except TRANSPORT_ERRORS as exc:
            raise TransientError(f"{where}: {exc!r}") from exc
        if response.status_code != 200:
            raise _http_error(response, where)
        body = response.json()
        if not isinstance(body, dict):
            raise TransientError(f"{where}: expected a JSON object")
        return body

    def _token(self) -> str:
        if not self.credentials.valid:
            try:
                self.credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
            except google.auth.exceptions.RefreshError as exc:
                raise PermanentError(f"Vertex credentials cannot be refreshed: {exc}") from exc
            except google.auth.exceptions.TransportError as exc:
                raise TransientError(f"refreshing Vertex credentials: {exc}") from exc
        return str(self.credentials.token)


class _EchoIndex:
    """Keys by request fingerprint from the staged request file, read only when an output
    line's labels do not carry its key (so the usual path never reads the file)."""

    def __init__(self, provider: VertexProvider, output_dir: str) -> None:
        self._provider = provider
        self._output_dir = output_dir
        self._index: dict[str, list[str]] | None = None

    def key_for(self, request: object) -> str | None:
        if not isinstance(request, Mapping):
            return None
        if self._index is None:
            self._index = self._load()
        keys = self._index.get(request_fingerprint(request))
        # Two identical requests under different keys cannot be told apart by content:
        # hand them out in file order, so each key is answered once.
        return keys.pop(0) if keys else None

    def _load(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        source = request_object_for(self._output_dir)
        if source is None:
            return index
        try:
            with self._provider.objects.open_read(*source) as stream:
                for raw in stream:
                    if not raw.strip():
                        continue
                    key, request = self._provider.decode_request(json.loads(raw))
                    index.setdefault(request_fingerprint(request), []).append(key)
        except NotFound:
            log.warning("staged request file is gone; echoed requests cannot be matched")
        return index


def normalise_row(row: ResultRow, keys: _EchoIndex) -> ResultRow:
    """One Vertex output line as {"key", "response"} or {"key", "status"}."""
    if row.row is None:
        return row
    line = row.row
    request = line.get("request")
    labels = request.get("labels") if isinstance(request, Mapping) else None
    key = key_from_labels(labels)
    if key is None:
        key = keys.key_for(request)
    out: dict[str, Any] = {"key": key}
    status = line.get("status")
    response = line.get("response")
    if isinstance(status, str) and status:
        out["status"] = status
    elif isinstance(status, Mapping) and status:
        out["error"] = dict(status)
    elif isinstance(response, Mapping) and response:
        out["response"] = dict(response)
    return ResultRow(row.line_no, out)


# --- mapping -------------------------------------------------------------------------------


def batch_from_job(job: genai_types.BatchJob) -> ProviderBatch:
    provider_state = _state_text(job.state)
    output: str | None = None
    if job.output_info is not None and job.output_info.gcs_output_directory:
        output = job.output_info.gcs_output_directory.rstrip("/") + "/"
    error: str | None = None
    if job.error is not None and (job.error.code or job.error.message):
        error = f"{job.error.code or ''}: {job.error.message or ''}".strip(": ")
    stats = job.completion_stats
    count: int | None = None
    if stats is not None:
        parts = (stats.successful_count, stats.failed_count, stats.incomplete_count)
        if any(part is not None for part in parts):
            count = sum(int(part or 0) for part in parts)
    return ProviderBatch(
        name=job.name or "",
        display_name=job.display_name,
        state=batch_state(provider_state),
        provider_state=provider_state,
        error=error,
        output=output,
        request_count=count,
        create_time=job.create_time,
        end_time=job.end_time,
    )


# --- factory -------------------------------------------------------------------------------


def from_settings(settings: Settings, objects: ObjectStore) -> VertexProvider:
    """Vertex on settings.project and settings.vertex_location. With vertex_base_url set
    (the emulator), a fixed dummy token; otherwise Application Default Credentials."""
    if not settings.project:
        raise ConfigError(f"the vertex provider needs a project: set {ENV_PROJECT}")
    location = settings.vertex_location
    credentials: Credentials
    if settings.vertex_base_url:
        credentials = TokenCredentials(token=EMULATOR_TOKEN)  # type: ignore[no-untyped-call]
        base_url = settings.vertex_base_url
    else:
        try:
            credentials, _ = google.auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-platform"]
            )
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ConfigError(f"the vertex provider needs Google credentials: {exc}") from exc
        host = "aiplatform" if location == "global" else f"{location}-aiplatform"
        base_url = f"https://{host}.googleapis.com"
    # No retry_options: one attempt, so a create is never resent blindly.
    options = genai_types.HttpOptions(base_url=settings.vertex_base_url, timeout=SDK_TIMEOUT_MS)
    client = genai.Client(
        vertexai=True,
        project=settings.project,
        location=location,
        credentials=credentials,
        http_options=options,
    )
    return VertexProvider(
        client,
        objects,
        credentials=credentials,
        base_url=base_url,
        project=settings.project,
        location=location,
    )


__all__ = [
    "KEY_LABEL_PREFIX",
    "KEY_SUM_LABEL",
    "VertexProvider",
    "batch_from_job",
    "destination_for",
    "from_settings",
    "key_from_labels",
    "key_labels",
    "request_fingerprint",
    "split_gs_uri",
]
