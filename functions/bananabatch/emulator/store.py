"""The emulator's state: files, uploads and batches in memory behind one lock, file bodies on
disk. Batches progress PENDING -> RUNNING -> terminal by the injected clock, evaluated
whenever someone looks; tests force progress with `advance`/`complete` instead of sleeping.
A batch matching FaultPlan.stuck never finishes by the clock at all.

Result files are rendered the moment a batch turns SUCCEEDED (so SUCCEEDED always means
"downloadable"), streamed to disk one line at a time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit
from urllib.request import url2pathname

import httpx

from bananabatch.core.catalog import STANDARD_KEY_PREFIX
from bananabatch.emulator.base.state import (
    FINISHED,
    PENDING,
    RUNNING,
    Accepted,
    EmulatorStateBase,
)
from bananabatch.emulator.base.state import ManualClock as ManualClock  # imported from here too
from bananabatch.emulator.errors import (
    ApiError,
    create_fault_error,
    invalid,
    invalid_key,
    not_found,
)
from bananabatch.emulator.faults import FaultPlan, JobFault
from bananabatch.emulator.generate import (
    Json,
    Renderer,
    RowOutcome,
    generate,
    pick,
    response_id,
)
from bananabatch.emulator.models import (
    BATCH as BATCH_METHOD,
)
from bananabatch.emulator.models import (
    DEFAULT_SERVED_MODELS,
    GENERATE,
    ModelDirectory,
    ServedModel,
)
from bananabatch.emulator.render import padded_renderer, render_png
from bananabatch.emulator.webhooks import WebhookDispatcher

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
MAX_INLINE_BYTES = 20 * 1024 * 1024
PERMISSION_DENIED = 7
INVALID_ARGUMENT_CODE = 3
SERVICE_URL = "https://generativelanguage.googleapis.com"
# What the Files API takes (ai.google.dev/gemini-api/docs/files; document, image, audio and
# video types): anything else is refused at upload start, as the service does. `jsonl` is
# what the SDK sends for a .jsonl batch input (reference §3).
SUPPORTED_MIME_PREFIXES = ("image/", "audio/", "video/", "text/")
SUPPORTED_MIME_TYPES = frozenset(
    {
        "application/pdf",
        "application/json",
        "application/jsonl",
        "application/x-ndjson",
        "jsonl",
        "application/x-javascript",
        "application/x-python",
        "application/x-typescript",
        "application/rtf",
        "application/xml",
    }
)


def mime_supported(mime: str) -> bool:
    base = mime.split(";", 1)[0].strip().lower()
    return base in SUPPORTED_MIME_TYPES or base.startswith(SUPPORTED_MIME_PREFIXES)


FILE_TTL = timedelta(hours=48)
_FILE_ID = re.compile(r"^[a-z0-9-]{1,40}$")
_ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass
class EmulatorConfig:
    # Seconds a new batch stays PENDING, then RUNNING; math.inf holds it until forced.
    pending_seconds: float = 1.0
    running_seconds: float = 2.0
    # None accepts any non-empty key; a value requires exactly that key.
    api_key: str | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    clock: Callable[[], float] = time.time
    # Where file bodies live; a fresh temporary directory (removed on close) when None.
    workdir: Path | None = None
    max_inline_bytes: int = MAX_INLINE_BYTES
    # Cloud Storage for Vertex batch jobs (emulator/vertex.py): a storage emulator URL;
    # None falls back to STORAGE_EMULATOR_HOST.
    storage_emulator_host: str | None = None
    # Pad every image to about this many bytes (benchmarks: realistic result-file sizes
    # without rendering large images); None leaves images as rendered.
    result_image_bytes: int | None = None
    # What models.list answers, and which models take which methods (emulator/models.py).
    served_models: tuple[ServedModel, ...] = DEFAULT_SERVED_MODELS
    # gs:// references: "registered" plays a project whose buckets are registered through
    # files:register (the service reads them); "refused" plays the bare Developer API,
    # which cannot read gs:// (every such row fails).
    gcs_references: Literal["registered", "refused"] = "refused"
    # The local stack's folder object store: its file:// stand-ins for signed URLs are read
    # only under this folder. None refuses every file:// URI, as the service does.
    local_files_root: Path | None = None


@dataclass
class FileEntry:
    file_id: str
    display_name: str | None
    mime_type: str
    size: int
    sha256: str
    created: float
    path: Path
    source: Literal["UPLOADED", "GENERATED"]


@dataclass
class UploadSession:
    upload_id: str
    file_id: str
    display_name: str | None
    mime_type: str
    declared_size: int | None
    path: Path
    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)


@dataclass
class Batch:
    batch_id: str
    seq: int
    model: str  # models/<id>, as requested
    display_name: str
    # Only file jobs echo an inputConfig (the service shows none for inline jobs).
    input_config: Json | None
    inline: bool
    requests_path: Path  # normalised {"key", "metadata", "request"} lines
    request_count: int
    created: float
    job_fault: JobFault | None
    updated: float
    forced: int = PENDING
    running_since: float | None = None
    state: str = "BATCH_STATE_PENDING"
    end_time: float | None = None
    error: Json | None = None
    output_file: str | None = None
    inlined: list[Json] | None = None
    succeeded: int = 0
    failed: int = 0
    # Held while a batch is being finalised, so a render runs once and a cancel waits for it.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # webhookConfig from the create call: per-job URIs and user_metadata (dynamic webhooks).
    webhook_config: Json | None = None
    # FaultPlan.stuck matched its display name: time never finishes it and it does no work.
    stuck: bool = False

    @property
    def name(self) -> str:
        return f"batches/{self.batch_id}"

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL


_TERMINAL = frozenset(
    {
        "BATCH_STATE_SUCCEEDED",
        "BATCH_STATE_FAILED",
        "BATCH_STATE_CANCELLED",
        "BATCH_STATE_EXPIRED",
    }
)


@dataclass
class Counters:
    batches_created: int = 0
    creates_refused: int = 0
    rows_by_display_name: Counter[str] = field(default_factory=Counter)
    sync_requests: int = 0
    # Synchronous generateContent calls refused by a create fault with `generate`.
    sync_refused: int = 0
    images_rendered: int = 0
    # Result-file download requests, per file id.
    downloads: Counter[str] = field(default_factory=Counter)


def rfc3339(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _bare(name: str, collection: str) -> str:
    return name.removeprefix(f"{collection}/")


class EmulatorState(EmulatorStateBase[EmulatorConfig, Batch]):
    """Everything the emulator knows, plus the control API tests and the local runner use
    (emulator/base/state.py: advance, complete, complete_all, submitted_keys, ...)."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        super().__init__(
            config or EmulatorConfig(),
            prefix="bananabatch-emu-",
            subdirs=("files", "uploads", "batches"),
        )
        self._files: dict[str, FileEntry] = {}
        self._uploads: dict[str, UploadSession] = {}
        self.counters = Counters()
        # Every fileData URI the service was asked to read, in order (tests look at them).
        self.references_read: list[str] = []
        self.webhooks: WebhookDispatcher = WebhookDispatcher()
        self.models = ModelDirectory(self.config.served_models)
        target = self.config.result_image_bytes
        self._renderer: Renderer = padded_renderer(target) if target else render_png

    def handle(self, work: Batch) -> str:
        return work.name

    def get_work(self, handle: str) -> Batch:
        return self.get_batch(handle)

    def status_of(self, work: Batch) -> str:
        return work.state

    # --- auth ------------------------------------------------------------------------------

    def check_key(self, key: str | None) -> None:
        if not key:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity.",
            )
        if key.startswith(STANDARD_KEY_PREFIX):
            # The service refuses every standard key since September 2026, whatever key
            # the emulator was configured with.
            raise invalid_key()
        if self.config.api_key is not None and key != self.config.api_key:
            raise invalid_key()

    # --- files -----------------------------------------------------------------------------

    def start_upload(
        self, metadata: Mapping[str, Any], header_mime: str | None, declared_size: int | None
    ) -> UploadSession:
        meta = pick(metadata, "file") or {}
        wanted = pick(meta, "name")
        if wanted:
            file_id = _bare(str(wanted), "files")
            if not _FILE_ID.match(file_id):
                raise invalid(
                    f"file name {wanted!r} is invalid: expected files/ and up to 40 lowercase "
                    "letters, digits or dashes"
                )
        else:
            file_id = _random_id(12)
        size = pick(meta, "sizeBytes")
        declared = declared_size if declared_size is not None else (int(size) if size else None)
        upload_id = secrets.token_urlsafe(24)
        mime = header_mime or pick(meta, "mimeType")
        if not mime:
            raise invalid("Missing MIME type: set X-Goog-Upload-Header-Content-Type.")
        if not mime_supported(str(mime)):
            raise invalid(f"Unsupported MIME type: {mime}")
        session = UploadSession(
            upload_id=upload_id,
            file_id=file_id,
            display_name=pick(meta, "displayName"),
            mime_type=str(mime),
            declared_size=declared,
            path=self.workdir / "uploads" / upload_id,
        )
        with self._lock:
            if file_id in self._files:
                raise ApiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
            session.path.touch()
            self._uploads[upload_id] = session
        return session

    def upload_chunk(
        self, upload_id: str, offset: int | None, data: bytes, finalize: bool
    ) -> tuple[UploadSession, FileEntry | None]:
        with self._lock:
            session = self._uploads.get(upload_id)
            if session is None:
                raise not_found(f"upload {upload_id!r} is unknown or already finalized")
            if offset is not None and offset != session.received:
                raise invalid(
                    f"upload offset mismatch: expected {session.received}, found {offset}"
                )
            with session.path.open("ab") as sink:
                sink.write(data)
            session.hasher.update(data)
            session.received += len(data)
            if not finalize:
                return session, None
            if session.declared_size is not None and session.received != session.declared_size:
                raise invalid(
                    f"upload size mismatch: declared {session.declared_size} bytes, "
                    f"received {session.received}"
                )
            if session.file_id in self._files:
                raise ApiError(409, "ALREADY_EXISTS", f"File files/{session.file_id} exists.")
            path = self.workdir / "files" / session.file_id
            session.path.replace(path)
            del self._uploads[upload_id]
            entry = FileEntry(
                file_id=session.file_id,
                display_name=session.display_name,
                mime_type=session.mime_type,
                size=session.received,
                sha256=base64.b64encode(session.hasher.digest()).decode("ascii"),
                created=self.now(),
                path=path,
                source="UPLOADED",
            )
            self._files[entry.file_id] = entry
            return session, entry

    def get_file(self, name: str) -> FileEntry:
        with self._lock:
            entry = self._files.get(_bare(name, "files"))
        if entry is None:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {_bare(name, 'files')} "
                "or it may not exist.",
            )
        return entry

    def _live_files(self) -> list[FileEntry]:
        """Files the store still holds: uploads leave 48 h after they were made; result
        files stay (no retention is documented, and they cannot be deleted)."""
        now = self.now()
        with self._lock:
            return [
                e
                for e in self._files.values()
                if e.source == "GENERATED" or now < e.created + FILE_TTL.total_seconds()
            ]

    def list_files(self, page_size: int, page_token: str | None) -> tuple[list[FileEntry], str]:
        entries = sorted(reversed(self._live_files()), key=lambda e: e.created, reverse=True)
        return page(entries, page_size, page_token)

    def files_store_bytes(self) -> int:
        """What the project's Files store holds, as the 20 GB limit counts it."""
        return sum(e.size for e in self._live_files())

    def delete_file(self, name: str) -> None:
        file_id = _bare(name, "files")
        if len(file_id) > 40:
            # The service's own defect for batch output ids (reference §7): mirrored so
            # clients learn to live with it.
            raise invalid(
                "Invalid file name: File ID (name excluding 'files/') cannot be more than "
                "40 characters."
            )
        with self._lock:
            entry = self.get_file(file_id)
            del self._files[file_id]
        entry.path.unlink(missing_ok=True)

    def download_path(self, name: str) -> FileEntry:
        entry = self.get_file(name)
        if entry.source != "GENERATED":
            raise invalid(f"Only generated files can be downloaded; files/{entry.file_id} is not.")
        with self._lock:
            self.counters.downloads[entry.file_id] += 1
        return entry

    def file_json(self, entry: FileEntry, base_url: str) -> Json:
        out: Json = {
            "name": f"files/{entry.file_id}",
            "mimeType": entry.mime_type,
            "sizeBytes": str(entry.size),
            "createTime": rfc3339(entry.created),
            "updateTime": rfc3339(entry.created),
            "expirationTime": rfc3339(entry.created + FILE_TTL.total_seconds()),
            "sha256Hash": entry.sha256,
            # The service's own form, whatever host answered: the SDK turns only an
            # https://…/files/<id> URI back into a name (t_file_name), and rows refer to
            # uploaded files by it.
            "uri": f"{SERVICE_URL}/v1beta/files/{entry.file_id}",
            "state": "ACTIVE",
            "source": entry.source,
        }
        if entry.display_name:
            out["displayName"] = entry.display_name
        if entry.source == "GENERATED":
            out["downloadUri"] = (
                f"{base_url}/download/v1beta/files/{entry.file_id}:download?alt=media"
            )
        return out

    # --- batches: create -------------------------------------------------------------------

    def create_batch(self, model: str, body: Mapping[str, Any]) -> Batch:
        """Create a batch, or raise ApiError. Applies create faults first."""
        model = model if model.startswith("models/") else f"models/{model}"
        self.served(model, BATCH_METHOD)
        with self._lock:
            plan = self.faults
            fault = plan.take_create_fault(model.removeprefix("models/"))
            if fault is not None:
                self.counters.creates_refused += 1
                raise create_fault_error(fault.kind, model, fault.retry_delay)
            if plan.create_429 > 0:
                plan.create_429 -= 1
                self.counters.creates_refused += 1
                raise create_fault_error("rate_limit", model)
            if plan.create_500 > 0:
                plan.create_500 -= 1
                self.counters.creates_refused += 1
                raise ApiError(500, "INTERNAL", "An internal error has occurred. (emulated)")
        spec = pick(body, "batch")
        spec = spec if isinstance(spec, Mapping) else body
        display_name = str(pick(spec, "displayName") or "")
        input_config = pick(spec, "inputConfig")
        if not isinstance(input_config, Mapping):
            raise invalid("batch.input_config is required")
        batch_id = _random_id(36)
        path = self.workdir / "batches" / f"{batch_id}.requests.jsonl"
        file_name = pick(input_config, "fileName")
        requests = pick(input_config, "requests")
        try:
            if file_name:
                keys = self._stage_file_requests(str(file_name), path)
                emitted: Json | None = {"fileName": f"files/{_bare(str(file_name), 'files')}"}
                inline = False
            elif isinstance(requests, Mapping):
                keys = self._stage_inline_requests(pick(requests, "requests"), path)
                emitted = None
                inline = True
            else:
                raise invalid("batch.input_config needs file_name or requests")
        except ApiError:
            path.unlink(missing_ok=True)
            raise
        now = self.now()
        with self._lock:
            batch = Batch(
                batch_id=batch_id,
                seq=next(self._seq),
                model=model,
                display_name=display_name,
                input_config=emitted,
                inline=inline,
                requests_path=path,
                request_count=len(keys),
                created=now,
                updated=now,
                job_fault=self.faults.take_job_fault(display_name),
                webhook_config=_webhook_config(spec),
                stuck=self.faults.is_stuck(display_name),
            )
            self._works[batch_id] = batch
            self.counters.batches_created += 1
            self.counters.rows_by_display_name[display_name] += len(keys)
            self.accepted.extend(Accepted(batch.name, display_name, key) for key in keys)
            if self.faults.lose_create_response > 0:
                self.faults.lose_create_response -= 1
                raise ApiError(500, "INTERNAL", "An internal error has occurred. (emulated)")
        return batch

    def _stage_file_requests(self, file_name: str, path: Path) -> list[str | None]:
        entry = self.get_file(file_name)
        keys: list[str | None] = []
        with entry.path.open("rb") as source, path.open("w", encoding="utf-8") as sink:
            for line_no, raw in enumerate(source, start=1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise invalid(
                        f"files/{entry.file_id} line {line_no}: not valid JSON ({exc.msg})"
                    ) from exc
                if not isinstance(line, Mapping) or not isinstance(pick(line, "request"), Mapping):
                    raise invalid(
                        f"files/{entry.file_id} line {line_no}: expected an object with a "
                        "'request' object"
                    )
                key = line.get("key")
                key = None if key is None else str(key)
                keys.append(key)
                sink.write(json.dumps({"key": key, "request": line["request"]}) + "\n")
        if not keys:
            raise invalid(f"files/{entry.file_id} holds no requests")
        return keys

    def _stage_inline_requests(self, requests: Any, path: Path) -> list[str | None]:
        if not isinstance(requests, list) or not requests:
            raise invalid("batch.input_config.requests.requests must be a non-empty list")
        keys: list[str | None] = []
        with path.open("w", encoding="utf-8") as sink:
            for index, item in enumerate(requests):
                request = pick(item, "request")
                if not isinstance(request, Mapping):
                    raise invalid(f"requests[{index}].request must be an object")
                metadata = pick(item, "metadata") or {}
                if not isinstance(metadata, Mapping):
                    raise invalid(f"requests[{index}].metadata must be an object")
                key = metadata.get("key")
                keys.append(None if key is None else str(key))
                line = {"key": keys[-1], "metadata": dict(metadata), "request": request}
                sink.write(json.dumps(line) + "\n")
        return keys

    # --- batches: progress -----------------------------------------------------------------

    def _work(self, name: str) -> Batch:
        batch_id = _bare(name, "batches")
        with self._lock:
            batch = self._works.get(batch_id)
        if batch is None:
            raise not_found(f"Batch batches/{batch_id} not found.")
        return batch

    def _settle(self, batch: Batch) -> None:
        """Bring a batch up to date with the clock; renders results when it finishes."""
        with batch.lock:
            if batch.terminal:
                return
            now = self.now()
            stage = self._stage(batch, now)
            if stage >= RUNNING and batch.running_since is None:
                scheduled = batch.created + self.config.pending_seconds
                batch.running_since = scheduled if batch.forced < RUNNING else now
                with self._lock:
                    batch.state = "BATCH_STATE_RUNNING"
                    batch.updated = min(now, scheduled) if batch.forced < RUNNING else now
            if stage < FINISHED:
                return
            fault = batch.job_fault
            error: Json | None = None
            if fault is None:
                self._render(batch, limit=None)
                state = "BATCH_STATE_SUCCEEDED"
            else:
                state = f"BATCH_STATE_{fault.state}"
                # An expired batch simply ran out of time: no results and no error object.
                if fault.state == "FAILED":
                    error = {"code": fault.code, "message": fault.message}
            with self._lock:
                batch.state, batch.error = state, error
                batch.end_time = batch.updated = now
            self.webhooks.batch_finished(batch.name, state, batch.webhook_config)

    def _render(self, batch: Batch, limit: int | None) -> None:
        """Write the results of the first `limit` rows (all when None), in input order."""
        spec_model = batch.model
        inlined: list[Json] = []
        out_id = f"batch-{batch.batch_id}"
        out_path = self.workdir / "files" / out_id
        hasher = hashlib.sha256()
        size = 0
        with ExitStack() as stack:
            source = stack.enter_context(batch.requests_path.open("r", encoding="utf-8"))
            sink = None if batch.inline else stack.enter_context(out_path.open("wb"))
            for index, raw in enumerate(source):
                if limit is not None and index >= limit:
                    break
                line = json.loads(raw)
                key: str | None = line.get("key")
                with self._lock:
                    fault = self.faults.take_row_fault(key)
                outcome = generate(
                    spec_model,
                    line["request"],
                    fault=fault,
                    rid=response_id(batch.batch_id, str(index)),
                    render=self._renderer,
                    check_uri=lambda uri: self.reference_problem(uri, self.now() - batch.created),
                )
                self._count(batch, outcome)
                if fault is not None and fault.kind == "missing":
                    continue
                copies = 2 if fault is not None and fault.kind == "duplicate" else 1
                if batch.inline:
                    metadata = {k: str(v) for k, v in (line.get("metadata") or {}).items()}
                    item = _outcome_json(outcome) | {"metadata": metadata}
                    inlined.extend([item] * copies)
                    continue
                encoded = (json.dumps({"key": key} | _outcome_json(outcome)) + "\n").encode()
                for _ in range(copies):
                    assert sink is not None
                    sink.write(encoded)
                    hasher.update(encoded)
                    size += len(encoded)
        if batch.inline:
            batch.inlined = inlined
            return
        entry = FileEntry(
            file_id=out_id,
            display_name=None,
            mime_type="application/jsonl",
            size=size,
            sha256=base64.b64encode(hasher.digest()).decode("ascii"),
            created=self.now(),
            path=out_path,
            source="GENERATED",
        )
        with self._lock:
            self._files[out_id] = entry
            batch.output_file = f"files/{out_id}"

    def _count(self, batch: Batch, outcome: RowOutcome) -> None:
        with self._lock:
            if outcome.error is not None:
                batch.failed += 1
            else:
                batch.succeeded += 1
                self.counters.images_rendered += _has_image(outcome.response)

    # --- batches: API ----------------------------------------------------------------------

    def get_batch(self, name: str) -> Batch:
        batch = self._work(name)
        self._settle(batch)
        return batch

    def list_batches(self, page_size: int, page_token: str | None) -> tuple[list[Batch], str]:
        with self._lock:
            batches = sorted(self._works.values(), key=lambda b: b.seq, reverse=True)
        shown, token = page(batches, page_size, page_token)
        for batch in shown:
            self._settle(batch)
        return shown, token

    def cancel_batch(self, name: str) -> None:
        """Cancel a live batch, keeping the rows already done; a finished batch stays as is."""
        batch = self._work(name)
        self._settle(batch)
        with batch.lock:
            if batch.terminal:
                return
            now = self.now()
            done = 0
            # A stuck batch made no progress, so it has no rows to keep.
            if (
                batch.running_since is not None
                and self.config.running_seconds > 0
                and not batch.stuck
            ):
                fraction = (now - batch.running_since) / self.config.running_seconds
                done = min(batch.request_count, math.floor(batch.request_count * fraction))
            if done > 0:
                self._render(batch, limit=done)
            with self._lock:
                batch.state = "BATCH_STATE_CANCELLED"
                batch.end_time = batch.updated = now
            self.webhooks.batch_finished(batch.name, batch.state, batch.webhook_config)

    def delete_batch(self, name: str) -> None:
        batch = self._work(name)
        with batch.lock, self._lock:
            self._works.pop(batch.batch_id, None)

    def operation_json(self, batch: Batch, *, for_list: bool = False) -> Json:
        with self._lock:
            metadata: Json = {
                "@type": BATCH_TYPE,
                "name": batch.name,
                "model": batch.model,
                "displayName": batch.display_name,
                "createTime": rfc3339(batch.created),
                "updateTime": rfc3339(batch.updated),
                "batchStats": _batch_stats(batch),
                "state": batch.state,
            }
            if batch.input_config is not None:
                metadata["inputConfig"] = batch.input_config
            if batch.end_time is not None:
                metadata["endTime"] = rfc3339(batch.end_time)
            output = _batch_output(batch, for_list=for_list)
            if output is not None:
                metadata["output"] = output
            op: Json = {"name": batch.name, "metadata": metadata}
            if batch.terminal:
                op["done"] = True
                if output is not None and batch.state == "BATCH_STATE_SUCCEEDED":
                    op["response"] = {"@type": OUTPUT_TYPE, **output}
                if batch.error is not None:
                    op["error"] = batch.error
            return op

    # --- references --------------------------------------------------------------------

    def reference_problem(self, uri: str, age_seconds: float = 0.0) -> tuple[int, str] | None:
        """Why the service could not read a fileData URI, as (gRPC code, message), or None.
        `age_seconds` is how long the row's batch has existed when the row is run.

        - a Files API name or URI (`files/x`, `https://generativelanguage.googleapis.com/
          v1beta/files/x`) must be a live uploaded file of this project: otherwise 403
          PERMISSION_DENIED, the service's answer for a missing file (field sheet §1 row 11);
        - `gs://` is read only when registered (files:register): EmulatorConfig.gcs_references
          says whether this emulator plays a project whose buckets are registered (by
          default it does not, as bananabatch registers nothing and sends signed URLs);
        - a signed URL (`X-Goog-Expires`) must still be valid when the row runs. The
          signer's clock is not the emulator's, so its lifetime is measured against the
          batch's age: a URL signed at create that expires before the row runs fails it;
        - an http(s) URL on a loopback host is fetched: anything but a 200 with an image body
          fails the row. Other hosts cannot be reached from here and are taken as readable;
        - `file://` is the local stack's stand-in for a signed URL (FolderObjectStore): it
          must name an image file under EmulatorConfig.local_files_root; without one it is
          refused, as the service takes no file:// URI.
        """
        with self._lock:
            self.references_read.append(uri)
        file_id = _files_api_id(uri)
        if file_id is not None:
            return self._files_api_problem(file_id)
        if uri.startswith("gs://"):
            if self.config.gcs_references == "registered":
                return None
            return (
                INVALID_ARGUMENT_CODE,
                f"Cannot fetch content from the provided URL {uri}: a gs:// object is read "
                "only once registered with files:register.",
            )
        parts = urlsplit(uri)
        # Shown without the query: a signed URL's query is its credential.
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if _signed_url_expired(parts.query, age_seconds):
            return (
                INVALID_ARGUMENT_CODE,
                f"Cannot fetch content from the provided URL {shown}: ExpiredToken, the "
                "signed URL expired before the request ran.",
            )
        if parts.scheme == "file":
            return _local_file_problem(self.config.local_files_root, parts.path, shown)
        if parts.scheme not in ("http", "https"):
            return (INVALID_ARGUMENT_CODE, f"Unsupported file uri: {shown}")
        if parts.hostname not in _LOOPBACK:
            return None
        return _fetch_problem(uri, shown)

    def _files_api_problem(self, file_id: str) -> tuple[int, str] | None:
        with self._lock:
            entry = self._files.get(file_id)
        live = (
            entry is not None
            and entry.source == "UPLOADED"
            and self.now() < entry.created + FILE_TTL.total_seconds()
        )
        if live:
            return None
        return (
            PERMISSION_DENIED,
            f"You do not have permission to access the File {file_id} or it may not exist.",
        )

    # --- synchronous generateContent -------------------------------------------------------

    def served(self, model: str, method: str) -> ServedModel:
        """The served model, or the service's 404 for a model it does not serve with
        `method` (the same answer whether the model is unknown or lacks the method)."""
        served = self.models.get(model)
        if served is None or not served.supports(method):
            raise not_found(
                f"models/{_bare(model, 'models')} is not found for API version v1beta, or is "
                f"not supported for {method}. Call ListModels to see the list of available "
                "models and their supported methods."
            )
        return served

    def generate_now(self, model: str, request: Mapping[str, Any]) -> Json:
        self.served(model, GENERATE)
        with self._lock:
            fault = self.faults.take_create_fault(_bare(model, "models"), generate=True)
            if fault is not None:
                self.counters.sync_refused += 1
                raise create_fault_error(fault.kind, model, fault.retry_delay)
            self.counters.sync_requests += 1
        outcome = generate(model, request, check_uri=self.reference_problem)
        if outcome.error is not None:
            if outcome.error["code"] == PERMISSION_DENIED:
                raise ApiError(403, "PERMISSION_DENIED", str(outcome.error["message"]))
            raise invalid(str(outcome.error["message"]))
        assert outcome.response is not None
        with self._lock:
            self.counters.images_rendered += _has_image(outcome.response)
        return outcome.response


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_FILES_URI = re.compile(
    r"^(?:https://generativelanguage\.googleapis\.com/v1(?:beta)?/)?files/([a-z0-9-]{1,64})$"
)


def _batch_stats(batch: Batch) -> Json:
    stats: Json = {"requestCount": str(batch.request_count)}
    if not batch.terminal:
        stats["pendingRequestCount"] = str(batch.request_count)
    if batch.succeeded:
        stats["successfulRequestCount"] = str(batch.succeeded)
    if batch.failed:
        stats["failedRequestCount"] = str(batch.failed)
    return stats


def _batch_output(batch: Batch, *, for_list: bool) -> Json | None:
    """Where a batch's results are: a responses file, or inline (left out of list pages)."""
    if batch.output_file is not None:
        return {"responsesFile": batch.output_file}
    if batch.inlined is not None and not for_list:
        return {"inlinedResponses": {"inlinedResponses": batch.inlined}}
    return None


def _signed_url_expired(query: str, age_seconds: float) -> bool:
    """Whether a signed URL's lifetime (X-Goog-Expires) ran out before its row ran; a
    lifetime that is not a number counts as expired."""
    lifetime = parse_qs(query).get("X-Goog-Expires")
    if not lifetime:
        return False
    try:
        return age_seconds > float(lifetime[0])
    except ValueError:
        return True


def _fetch_problem(uri: str, shown: str) -> tuple[int, str] | None:
    """Fetch a loopback http(s) reference: anything but a 200 with an image body fails."""
    try:
        response = httpx.get(uri, timeout=5.0, follow_redirects=False)
    except httpx.HTTPError as exc:
        return (
            INVALID_ARGUMENT_CODE,
            f"Cannot fetch content from the provided URL {shown}: {type(exc).__name__}",
        )
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200 or not content_type.startswith("image/"):
        return (
            INVALID_ARGUMENT_CODE,
            f"Cannot fetch content from the provided URL {shown}: HTTP "
            f"{response.status_code} {content_type or 'no content type'}",
        )
    return None


def _local_file_problem(root: Path | None, path: str, shown: str) -> tuple[int, str] | None:
    """A file:// stand-in is read only inside the local stack's folder; anything else is an
    unsupported URI, with the same answer whether or not the file exists."""
    from bananabatch.pipeline.references import sniff_image_mime

    refused = (INVALID_ARGUMENT_CODE, f"Unsupported file uri: {shown}")
    if root is None:
        return refused
    try:
        target = Path(url2pathname(unquote(path))).resolve()
        if not target.is_relative_to(root.resolve()):
            return refused
        with target.open("rb") as handle:
            head = handle.read(16)
    except (OSError, ValueError):
        return (INVALID_ARGUMENT_CODE, f"Cannot fetch content from the provided URL {shown}")
    if sniff_image_mime(head) is None:
        return (
            INVALID_ARGUMENT_CODE,
            f"Cannot fetch content from the provided URL {shown}: not an image",
        )
    return None


def _files_api_id(uri: str) -> str | None:
    match = _FILES_URI.match(uri)
    return match.group(1) if match else None


def _webhook_config(spec: Mapping[str, Any]) -> Json | None:
    config = pick(spec, "webhookConfig")
    return dict(config) if isinstance(config, Mapping) else None


def page(items: list[Any], page_size: int, page_token: str | None) -> tuple[list[Any], str]:
    size = max(1, min(page_size or 50, 1000))
    start = int(page_token) if page_token and page_token.isdigit() else 0
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


def _outcome_json(outcome: RowOutcome) -> Json:
    if outcome.error is not None:
        return {"error": outcome.error}
    return {"response": outcome.response}


def _has_image(response: Json | None) -> int:
    for candidate in (response or {}).get("candidates", []):
        for part in (candidate.get("content") or {}).get("parts", []):
            if "inlineData" in part:
                return 1
    return 0
