"""The OpenAI Batch emulator's state: files and batches in memory behind one lock, file
bodies on disk. A batch moves validating -> in_progress -> finalizing -> terminal by the
injected clock, evaluated whenever someone looks; tests force progress with
`advance`/`complete`, never by sleeping. Result files are written the moment a batch turns
terminal, one line at a time.

Faults are the Gemini emulator's FaultPlan (emulator/faults.py), read the OpenAI way:
- rows: "error" is a line answered with an HTTP error (its gRPC code read as the status
  OpenAI would give: 13 -> 500, 3 -> 400, 8 -> 429), "image_safety" and "prompt_blocked" a
  400 `moderation_blocked` refusal, "no_image" a 200 without an image, "duplicate" a line
  written twice, "missing" no line at all;
- jobs: FAILED is a batch that failed validation (no request runs, no files), EXPIRED one
  whose 24 h window closed after `expired_done_fraction` of its requests ran (their results
  are in the output file; the rest, with `list_unrun`, in the error file as batch_expired);
- creates: the 429 kinds (with `retry-after`), 401, a 500, a lost answer (created, answered
  500); downloads: truncated and slow, as on Gemini; `stuck` batches never finish.

Where the real service's behaviour is known only from documentation, the config chooses:
`errors_in_output` (a line answered 4xx/5xx goes to the output file instead of the error
file) and `list_unrun` (requests an expired or cancelled batch never ran are listed in the
error file, or simply absent). Tests run the provider against every combination.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from bananabatch.emulator.base.routes import HttpError
from bananabatch.emulator.base.state import (
    FINISHED,
    PENDING,
    RUNNING,
    Accepted,
    EmulatorStateBase,
)
from bananabatch.emulator.base.state import ManualClock as ManualClock  # imported from here too
from bananabatch.emulator.faults import CreateFault, FaultPlan, JobFault
from bananabatch.emulator.openai.generate import (
    EDITS,
    GENERATIONS,
    Answer,
    Json,
    Renderer,
    answer,
    error,
    invalid,
)
from bananabatch.emulator.openai.render import render
from bananabatch.emulator.openai.webhooks import OpenAIWebhooks

MAX_REQUESTS: Final = 50_000
MAX_FILE_BYTES: Final = 200 * 1024 * 1024
MAX_METADATA_PAIRS: Final = 16
PURPOSES: Final = frozenset({"batch", "assistants", "fine-tune", "vision", "user_data", "evals"})
ENDPOINTS: Final = frozenset(
    {
        GENERATIONS,
        EDITS,
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
    }
)
# Files made with purpose "batch" expire after 30 days unless told otherwise.
BATCH_FILE_TTL: Final = 30 * 24 * 3600
WINDOW_SECONDS: Final = 24 * 3600
TERMINAL: Final = frozenset({"completed", "failed", "expired", "cancelled"})
_ALPHABET: Final = string.ascii_letters + string.digits
# The shared lifecycle's stages under OpenAI's names.
VALIDATING, IN_PROGRESS, FINISHED = PENDING, RUNNING, FINISHED


class ApiError(HttpError):
    """An HTTP error answer: status, OpenAI's error object, extra headers."""

    def __init__(self, answered: Answer, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(answered.body["error"]["message"])
        self.status = answered.status
        self.body = answered.body
        self.headers = dict(headers or {})


def not_found(what: str) -> ApiError:
    return ApiError(error(404, f"No such {what}", None, "invalid_request_error"))


def _id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


@dataclass
class OpenAIEmulatorConfig:
    # Seconds a batch stays validating, then in_progress; math.inf holds it until forced.
    pending_seconds: float = 1.0
    running_seconds: float = 2.0
    # None accepts any non-empty key; a value requires exactly that key.
    api_key: str | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    clock: Callable[[], float] = time.time
    workdir: Path | None = None
    # An EXPIRED job fault: the share of requests that ran before the window closed.
    expired_done_fraction: float = 0.5
    # Unknown from documentation alone (see the module note).
    errors_in_output: bool = False
    list_unrun: bool = True


@dataclass
class FileEntry:
    file_id: str
    filename: str
    purpose: str
    size: int
    created: int
    path: Path
    expires_at: int | None

    def to_json(self) -> Json:
        return {
            "id": self.file_id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class Batch:
    batch_id: str
    seq: int
    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    created: int
    requests_path: Path
    request_count: int
    job_fault: JobFault | None
    output_expires_seconds: int | None
    # Why validation fails (a job fault, or what was wrong with the file); None: valid.
    invalid: list[Json] | None = None
    stuck: bool = False
    forced: int = VALIDATING
    status: str = "validating"
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    ended: dict[str, int] = field(default_factory=dict)
    cancel_requested: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def display_name(self) -> str:
        return self.metadata.get("bananabatch_batch", "")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class Counters:
    batches_created: int = 0
    creates_refused: int = 0
    images_rendered: int = 0
    downloads: Counter[str] = field(default_factory=Counter)
    rows_by_display_name: Counter[str] = field(default_factory=Counter)


class OpenAIEmulatorState(EmulatorStateBase[OpenAIEmulatorConfig, Batch]):
    """Everything the emulator knows, plus the control API tests and the local runner use
    (the same names as the Gemini emulator's, so tests drive either: emulator/base/state.py)."""

    def __init__(self, config: OpenAIEmulatorConfig | None = None) -> None:
        super().__init__(
            config or OpenAIEmulatorConfig(),
            prefix="bananabatch-oai-",
            subdirs=("files", "batches"),
        )
        self._files: dict[str, FileEntry] = {}
        self.counters = Counters()
        self.webhooks: OpenAIWebhooks = OpenAIWebhooks()
        self.renderer: Renderer = render

    def now(self) -> int:
        return int(self.config.clock())

    def handle(self, work: Batch) -> str:
        return work.batch_id

    def get_work(self, handle: str) -> Batch:
        return self.get_batch(handle)

    def status_of(self, work: Batch) -> str:
        return work.status

    # --- auth ------------------------------------------------------------------------------

    def check_key(self, authorization: str | None) -> None:
        key = (authorization or "").removeprefix("Bearer ").strip()
        if not key:
            raise ApiError(
                error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    None,
                    "invalid_request_error",
                )
            )
        if self.config.api_key is not None and key != self.config.api_key:
            raise ApiError(
                error(
                    401,
                    f"Incorrect API key provided: {key[:3]}***. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_api_key",
                    "invalid_request_error",
                )
            )

    # --- files -----------------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, source: IO[bytes]) -> FileEntry:
        if purpose not in PURPOSES:
            raise ApiError(invalid(f"Invalid value for 'purpose': {purpose!r}.", "purpose"))
        file_id = _id("file-")
        path = self.workdir / "files" / file_id
        with path.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1024 * 1024)
        size = path.stat().st_size
        if purpose == "batch" and size > MAX_FILE_BYTES:
            path.unlink()
            raise ApiError(invalid(f"File too large: {size} bytes; the limit is 200 MB.", "file"))
        now = self.now()
        entry = FileEntry(file_id, filename, purpose, size, now, path, now + BATCH_FILE_TTL)
        with self._lock:
            self._files[file_id] = entry
        return entry

    def _output_file(self, batch: Batch, role: str) -> tuple[FileEntry, IO[str]]:
        file_id = _id("file-")
        path = self.workdir / "files" / file_id
        created = self.now()
        expires = created + (batch.output_expires_seconds or BATCH_FILE_TTL)
        name = f"batch_{batch.batch_id}_{role}.jsonl"
        entry = FileEntry(file_id, name, "batch_output", 0, created, path, expires)
        return entry, path.open("w", encoding="utf-8")

    def get_file(self, file_id: str) -> FileEntry:
        with self._lock:
            entry = self._files.get(file_id)
        if entry is None or (entry.expires_at is not None and self.now() >= entry.expires_at):
            raise not_found(f"File: {file_id}")
        return entry

    def list_files(self) -> list[FileEntry]:
        with self._lock:
            entries = list(self._files.values())
        now = self.now()
        return [e for e in entries if e.expires_at is None or now < e.expires_at]

    def delete_file(self, file_id: str) -> None:
        entry = self.get_file(file_id)
        with self._lock:
            self._files.pop(file_id, None)
        entry.path.unlink(missing_ok=True)

    def content_path(self, file_id: str) -> Path:
        entry = self.get_file(file_id)
        with self._lock:
            self.counters.downloads[file_id] += 1
        return entry.path

    # --- batches: create -------------------------------------------------------------------

    def create_batch(self, body: Mapping[str, Any]) -> Batch:
        input_file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise ApiError(invalid("Missing required parameter: 'input_file_id'.", "input_file_id"))
        if endpoint not in ENDPOINTS:
            raise ApiError(invalid(f"Invalid value for 'endpoint': {endpoint!r}.", "endpoint"))
        if body.get("completion_window") != "24h":
            raise ApiError(
                invalid("Invalid value for 'completion_window': only '24h' is supported.")
            )
        metadata = _metadata(body.get("metadata"))
        expires = _output_expires(body.get("output_expires_after"))
        entry = self.get_file(input_file_id)
        if entry.purpose != "batch":
            raise ApiError(invalid(f"File {input_file_id} was not uploaded with purpose 'batch'."))
        batch_id = _id("batch_")
        path = self.workdir / "batches" / f"{batch_id}.jsonl"
        keys, model, problems = _stage(entry.path, str(endpoint), path)
        display_name = metadata.get("bananabatch_batch", "")
        with self._lock:
            plan = self.faults
            fault = plan.take_create_fault(model or "*")
            refused = _create_refusal(plan, fault)
            if refused is not None:
                self.counters.creates_refused += 1
                path.unlink(missing_ok=True)
                raise refused
            job_fault = plan.take_job_fault(display_name)
            if job_fault is not None and job_fault.state == "FAILED":
                problems = problems or [
                    {"code": "failed", "message": job_fault.message, "line": None}
                ]
            batch = Batch(
                batch_id=batch_id,
                seq=next(self._seq),
                input_file_id=input_file_id,
                endpoint=str(endpoint),
                metadata=metadata,
                created=self.now(),
                requests_path=path,
                request_count=len(keys),
                job_fault=job_fault,
                output_expires_seconds=expires,
                invalid=problems or None,
                stuck=plan.is_stuck(display_name),
            )
            self._works[batch_id] = batch
            self.counters.batches_created += 1
            # Counted as submitted, as on the Gemini emulator, even when validation will
            # fail it (which runs and bills nothing): the fault matrix's "nothing paid
            # twice" reads one accepted row per attempt.
            self.counters.rows_by_display_name[display_name] += len(keys)
            self.accepted.extend(Accepted(batch_id, display_name, key) for key in keys)
            if plan.lose_create_response > 0:
                plan.lose_create_response -= 1
                raise ApiError(
                    error(500, "The server had an error (emulated).", None, "server_error")
                )
        return batch

    # --- batches: progress -----------------------------------------------------------------

    def _work(self, batch_id: str) -> Batch:
        with self._lock:
            batch = self._works.get(batch_id)
        if batch is None:
            raise not_found(f"batch: {batch_id}")
        return batch

    def _stage(self, work: Batch, now: float) -> int:
        stage = super()._stage(work, now)
        # A batch that fails validation ends as soon as it would start.
        if work.invalid is not None and stage >= IN_PROGRESS:
            return FINISHED
        return stage

    def settle(self, batch: Batch) -> None:
        """Bring a batch up to date with the clock; writes its files when it ends."""
        with batch.lock:
            if batch.terminal:
                return
            now = self.now()
            if batch.cancel_requested is not None:
                self._finish(batch, "cancelled", self._cancelled_rows(batch, now), now)
                return
            stage = self._stage(batch, now)
            if batch.invalid is not None and stage >= IN_PROGRESS:
                self._finish(batch, "failed", 0, now)
                return
            if stage >= IN_PROGRESS and batch.in_progress_at is None:
                scheduled = batch.created + self.config.pending_seconds
                batch.in_progress_at = int(min(now, scheduled))
                batch.status = "in_progress"
            if stage < FINISHED:
                return
            fault = batch.job_fault
            if fault is not None and fault.state == "EXPIRED":
                done = math.floor(batch.request_count * self.config.expired_done_fraction)
                self._finish(batch, "expired", done, now)
            else:
                self._finish(batch, "completed", batch.request_count, now)

    def _cancelled_rows(self, batch: Batch, now: int) -> int:
        if batch.in_progress_at is None or batch.stuck:
            return 0
        running = self.config.running_seconds
        if not math.isfinite(running) or running <= 0:
            return 0
        fraction = (now - batch.in_progress_at) / running
        return min(batch.request_count, math.floor(batch.request_count * fraction))

    def _finish(self, batch: Batch, status: str, done: int, now: int) -> None:
        if status != "failed":
            batch.finalizing_at = now
            self._render(batch, done, unrun_code=_UNRUN.get(status))
        batch.status = status
        batch.ended[status] = now
        self.webhooks.batch_finished(batch.batch_id, status, now)

    def _render(self, batch: Batch, done: int, unrun_code: str | None) -> None:
        """Answer the first `done` requests (in input order; the service promises none),
        writing successes to the output file and failures to the error file."""
        out, out_sink = self._output_file(batch, "output")
        err, err_sink = self._output_file(batch, "error")
        written = {"out": 0, "err": 0}
        try:
            with batch.requests_path.open("r", encoding="utf-8") as source:
                for index, raw in enumerate(source):
                    line = json.loads(raw)
                    key = line["custom_id"]
                    if index >= done:
                        if unrun_code is not None and self.config.list_unrun:
                            err_sink.write(_unrun_line(batch, index, key, unrun_code) + "\n")
                            written["err"] += 1
                        continue
                    self._answer_line(batch, index, line, out_sink, err_sink, written)
        finally:
            out_sink.close()
            err_sink.close()
        with self._lock:
            for entry, role in ((out, "out"), (err, "err")):
                if written[role]:
                    entry.size = entry.path.stat().st_size
                    self._files[entry.file_id] = entry
                else:
                    entry.path.unlink(missing_ok=True)
            batch.output_file_id = out.file_id if written["out"] else None
            batch.error_file_id = err.file_id if written["err"] else None

    def _answer_line(
        self,
        batch: Batch,
        index: int,
        line: Json,
        out_sink: IO[str],
        err_sink: IO[str],
        written: dict[str, int],
    ) -> None:
        key = line["custom_id"]
        with self._lock:
            fault = self.faults.take_row_fault(key)
        if fault is not None and fault.kind == "missing":
            return
        answered = answer(
            batch.endpoint,
            line.get("body"),
            fault=fault,
            created=self.now(),
            renderer=self.renderer,
        )
        text = json.dumps(
            {
                "id": f"batch_req_{batch.batch_id[6:]}_{index}",
                "custom_id": key,
                "response": {
                    "status_code": answered.status,
                    "request_id": f"req_{batch.batch_id[6:]}{index}",
                    "body": answered.body,
                },
                "error": None,
            }
        )
        to_output = answered.ok or self.config.errors_in_output
        sink, role = (out_sink, "out") if to_output else (err_sink, "err")
        copies = 2 if fault is not None and fault.kind == "duplicate" else 1
        for _ in range(copies):
            sink.write(text + "\n")
        written[role] += copies
        with self._lock:
            if answered.ok:
                batch.completed += 1
                self.counters.images_rendered += len(answered.body.get("data") or [])
            else:
                batch.failed += 1

    # --- batches: API ----------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        batch = self._work(batch_id)
        self.settle(batch)
        return batch

    def list_batches(self, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        with self._lock:
            ordered = sorted(self._works.values(), key=lambda b: b.seq, reverse=True)
        start = 0
        if after:
            ids = [b.batch_id for b in ordered]
            start = ids.index(after) + 1 if after in ids else len(ids)
        shown = ordered[start : start + limit]
        for batch in shown:
            self.settle(batch)
        return shown, start + limit < len(ordered)

    def cancel_batch(self, batch_id: str) -> Batch:
        batch = self.get_batch(batch_id)
        with batch.lock:
            if batch.terminal:
                raise ApiError(
                    invalid(
                        f"Cannot cancel a batch with status '{batch.status}'.", code="invalid_state"
                    )
                )
            if batch.cancel_requested is None:
                batch.cancel_requested = self.now()
                batch.status = "cancelling"
        return batch

    def batch_json(self, batch: Batch) -> Json:
        with self._lock:
            out: Json = {
                "id": batch.batch_id,
                "object": "batch",
                "endpoint": batch.endpoint,
                "errors": None,
                "input_file_id": batch.input_file_id,
                "completion_window": "24h",
                "status": batch.status,
                "output_file_id": batch.output_file_id,
                "error_file_id": batch.error_file_id,
                "created_at": batch.created,
                "in_progress_at": batch.in_progress_at,
                "expires_at": batch.created + WINDOW_SECONDS,
                "finalizing_at": batch.finalizing_at,
                "completed_at": batch.ended.get("completed"),
                "failed_at": batch.ended.get("failed"),
                "expired_at": batch.ended.get("expired"),
                "cancelling_at": batch.cancel_requested,
                "cancelled_at": batch.ended.get("cancelled"),
                "request_counts": {
                    "total": batch.request_count,
                    "completed": batch.completed,
                    "failed": batch.failed,
                },
                "metadata": dict(batch.metadata),
            }
            if batch.status == "failed" and batch.invalid:
                out["errors"] = {"object": "list", "data": batch.invalid}
            return out

    # --- tests ----------------------------------------------------------------------------

    def iter_file_lines(self, file_id: str) -> Iterator[Json]:
        """A result file's lines, parsed (tests look inside them)."""
        with self.get_file(file_id).path.open("r", encoding="utf-8") as source:
            for raw in source:
                if raw.strip():
                    yield json.loads(raw)


_UNRUN: Final = {"expired": "batch_expired", "cancelled": "batch_cancelled"}
_UNRUN_TEXT: Final = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


def _unrun_line(batch: Batch, index: int, key: str, code: str) -> str:
    return json.dumps(
        {
            "id": f"batch_req_{batch.batch_id[6:]}_{index}",
            "custom_id": key,
            "response": None,
            "error": {"code": code, "message": _UNRUN_TEXT[code]},
        }
    )


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_METADATA_PAIRS:
        raise ApiError(invalid("Invalid 'metadata': at most 16 string pairs.", "metadata"))
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str) or len(str(key)) > 64 or len(item) > 512:
            raise ApiError(invalid(f"Invalid 'metadata' entry {key!r}.", "metadata"))
        out[str(key)] = item
    return out


def _output_expires(value: Any) -> int | None:
    if value is None:
        return None
    seconds = value.get("seconds") if isinstance(value, Mapping) else None
    anchor = value.get("anchor") if isinstance(value, Mapping) else None
    if anchor != "created_at" or not isinstance(seconds, int) or not 3600 <= seconds <= 2_592_000:
        raise ApiError(
            invalid(
                "Invalid 'output_expires_after': anchor 'created_at' and seconds between "
                "3600 and 2592000.",
                "output_expires_after",
            )
        )
    return seconds


def _stage(source: Path, endpoint: str, target: Path) -> tuple[list[str], str | None, list[Json]]:
    """Validate the input file line by line into the batch's request file: the custom ids,
    the model of the first line, and the validation errors (empty when valid)."""
    keys: list[str] = []
    seen: set[str] = set()
    model: str | None = None
    problems: list[Json] = []
    with source.open("rb") as lines, target.open("w", encoding="utf-8") as sink:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            problem, line = _check_line(raw, endpoint, seen)
            if problem is not None:
                problems.append({"code": problem[0], "message": problem[1], "line": number})
                continue
            assert line is not None
            seen.add(line["custom_id"])
            keys.append(line["custom_id"])
            if model is None and isinstance(line["body"].get("model"), str):
                model = line["body"]["model"]
            sink.write(json.dumps(line) + "\n")
    if not keys and not problems:
        problems.append({"code": "empty_file", "message": "The input file is empty.", "line": None})
    if len(keys) > MAX_REQUESTS:
        problems.append(
            {
                "code": "too_many_requests",
                "message": f"The batch has {len(keys)} requests; the limit is {MAX_REQUESTS}.",
                "line": None,
            }
        )
    return keys, model, problems[:1000]


def _check_line(
    raw: bytes, endpoint: str, seen: set[str]
) -> tuple[tuple[str, str] | None, Json | None]:
    try:
        line = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ("invalid_json", "This line is not parseable as valid JSON."), None
    if not isinstance(line, dict):
        return ("invalid_json", "This line is not a JSON object."), None
    key = line.get("custom_id")
    if not isinstance(key, str) or not key:
        return ("missing_custom_id", "The line has no custom_id."), None
    if key in seen:
        return ("duplicate_custom_id", f"The custom_id {key!r} is not unique in the file."), None
    if line.get("method") != "POST":
        return ("invalid_method", "The method must be POST."), None
    if line.get("url") != endpoint:
        return (
            "mismatched_endpoint",
            f"The url {line.get('url')!r} does not match the batch endpoint {endpoint!r}.",
        ), None
    if not isinstance(line.get("body"), dict):
        return ("invalid_body", "The body must be a JSON object."), None
    return None, line


def _create_refusal(plan: FaultPlan, fault: CreateFault | None) -> ApiError | None:
    """The create fault that refuses this create, as OpenAI's answer (consumes it)."""
    if fault is not None:
        return _fault_error(fault)
    if plan.create_429 > 0:
        plan.create_429 -= 1
        return _fault_error(CreateFault("rate_limit"))
    if plan.create_500 > 0:
        plan.create_500 -= 1
        return ApiError(error(500, "The server had an error (emulated).", None, "server_error"))
    return None


def _fault_error(fault: CreateFault) -> ApiError:
    kind = fault.kind
    if kind in ("unauthenticated", "invalid_key"):
        return ApiError(
            error(
                401,
                "Incorrect API key provided: sk-***.",
                "invalid_api_key",
                "invalid_request_error",
            )
        )
    if kind == "credits_depleted":
        return ApiError(
            error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            )
        )
    if kind == "model_not_found":
        return ApiError(
            error(404, "The model does not exist.", "model_not_found", "invalid_request_error")
        )
    if kind in ("unknown_429", "spend_window"):
        return ApiError(error(429, "Request was throttled.", None, "requests"))
    headers = {}
    if kind == "rate_limit":
        headers["retry-after"] = fault.retry_delay.removesuffix("s")
    return ApiError(
        error(
            429,
            "Enqueued token limit reached for gpt-image-2 in organization org-emulator. "
            "Please try again once some in_progress batches have been completed.",
            "rate_limit_exceeded",
            "requests",
        ),
        headers,
    )
