"""Vertex AI batch prediction jobs (reference §10) for the emulator: the routes under
/v1beta1/projects/{p}/locations/{l}/batchPredictionJobs and the job store behind them.

Input and output live in Cloud Storage, reached through the storage emulator named by
`EmulatorConfig.storage_emulator_host` (or STORAGE_EMULATOR_HOST), with the same
google-cloud-storage client production code uses. Jobs move QUEUED/PENDING -> RUNNING ->
terminal by the emulator's clock and its pending/running delays, like Developer API batches;
tests force progress with `jobs_for(state).complete(name)`. Images are rendered by the same
`generate` as the Developer API path, and output lines are written in a scrambled order,
since the service does not keep input order.

The emulator finds a row's key (for row faults and `submitted_keys`) in the bananabatch
key labels; requests without them are served, they just cannot be targeted by a fault.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import google.cloud.storage as gcs  # type: ignore[import-untyped]  # the library ships no py.typed
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bananabatch.core.catalog import model_spec
from bananabatch.emulator.base.state import Accepted
from bananabatch.emulator.errors import ApiError, create_fault_error, invalid, not_found
from bananabatch.emulator.faults import JobFault
from bananabatch.emulator.generate import Json, generate, pick, response_id
from bananabatch.emulator.store import EmulatorState, rfc3339
from bananabatch.providers.vertex import key_from_labels

VERSIONS: Final = frozenset({"v1", "v1beta1"})
PUBLISHER_PREFIX: Final = "publishers/google/models/"
ENV_STORAGE_EMULATOR_HOST: Final = "STORAGE_EMULATOR_HOST"
_TERMINAL: Final = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)
# HTTP reason and status for the row error strings Vertex writes ("Bad Request: 400 ...").
_ROW_STATUS: Final = {
    3: (400, "Bad Request", "INVALID_ARGUMENT"),
    5: (404, "Not Found", "NOT_FOUND"),
}
_ROW_STATUS_DEFAULT: Final = (500, "Internal Server Error", "INTERNAL")
PENDING, RUNNING, FINISHED = 0, 1, 2


@dataclass
class VertexJob:
    job_id: str
    seq: int
    parent: str  # projects/<p>/locations/<l>
    model: str  # publishers/google/models/<id>
    display_name: str
    source_uri: str
    dest_prefix: str
    requests: list[Json]  # the input lines, as read at create time
    keys: list[str | None]
    created: float
    updated: float
    job_fault: JobFault | None
    forced: int = PENDING
    state: str = "JOB_STATE_PENDING"
    start_time: float | None = None
    end_time: float | None = None
    error: Json | None = None
    output_dir: str | None = None
    succeeded: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return f"{self.parent}/batchPredictionJobs/{self.job_id}"

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL


class VertexJobs:
    """Batch prediction jobs of one emulator; shares its clock, delays, faults, counters."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._lock = threading.RLock()
        self._jobs: dict[str, VertexJob] = {}
        self._seq = itertools.count(1)
        self._client: Any = None

    # --- Cloud Storage ---------------------------------------------------------------------

    def _storage(self) -> Any:
        with self._lock:
            if self._client is None:
                host = getattr(self.state.config, "storage_emulator_host", None) or os.environ.get(
                    ENV_STORAGE_EMULATOR_HOST
                )
                if not host:
                    raise ApiError(
                        400,
                        "FAILED_PRECONDITION",
                        "this emulator has no Cloud Storage: set EmulatorConfig."
                        "storage_emulator_host or STORAGE_EMULATOR_HOST",
                    )
                self._client = gcs.Client(
                    project="emulator",
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options={"api_endpoint": host},
                )
            return self._client

    def _blob(self, uri: str) -> Any:
        if not uri.startswith("gs://"):
            raise invalid(f"expected a gs:// URI, found {uri!r}")
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        if not bucket or not name:
            raise invalid(f"expected gs://bucket/object, found {uri!r}")
        return self._storage().bucket(bucket).blob(name)

    # --- create ----------------------------------------------------------------------------

    def create(self, parent: str, body: Mapping[str, Any]) -> VertexJob:
        model = str(pick(body, "model") or "")
        bare = model.removeprefix(PUBLISHER_PREFIX).removeprefix("models/")
        if model_spec(bare) is None:
            raise not_found(f"Publisher Model `{parent}/{PUBLISHER_PREFIX}{bare}` not found.")
        with self.state._lock:
            plan = self.state.faults
            fault = plan.take_create_fault(bare)
            if fault is not None:
                self.state.counters.creates_refused += 1
                raise create_fault_error(fault.kind, model, fault.retry_delay)
            if plan.create_429 > 0:
                plan.create_429 -= 1
                self.state.counters.creates_refused += 1
                raise create_fault_error("rate_limit", model)
            if plan.create_500 > 0:
                plan.create_500 -= 1
                self.state.counters.creates_refused += 1
                raise ApiError(500, "INTERNAL", "Internal error encountered. (emulated)")
        input_config = pick(body, "inputConfig") or {}
        uris = pick(pick(input_config, "gcsSource") or {}, "uris") or []
        if not isinstance(uris, list) or len(uris) != 1:
            raise invalid("inputConfig.gcsSource.uris: expected exactly one gs:// URI")
        output_config = pick(body, "outputConfig") or {}
        prefix = pick(pick(output_config, "gcsDestination") or {}, "outputUriPrefix")
        if not isinstance(prefix, str) or not prefix.startswith("gs://"):
            raise invalid("outputConfig.gcsDestination.outputUriPrefix: expected a gs:// prefix")
        requests, keys = self._read_requests(str(uris[0]))
        display_name = str(pick(body, "displayName") or "")
        now = self.state.now()
        with self._lock:
            seq = next(self._seq)
            # Numeric ids, as the service uses; the SDK accepts a bare id only if all digits.
            job = VertexJob(
                job_id=str(1_000_000_000_000 + seq),
                seq=seq,
                parent=parent,
                model=f"{PUBLISHER_PREFIX}{bare}",
                display_name=display_name,
                source_uri=str(uris[0]),
                dest_prefix=prefix.rstrip("/") + "/",
                requests=requests,
                keys=keys,
                created=now,
                updated=now,
                job_fault=self.state.faults.take_job_fault(display_name),
            )
            self._jobs[job.job_id] = job
        with self.state._lock:
            self.state.counters.batches_created += 1
            self.state.counters.rows_by_display_name[display_name] += len(keys)
            self.state.accepted.extend(Accepted(job.name, display_name, key) for key in keys)
            if self.state.faults.lose_create_response > 0:
                self.state.faults.lose_create_response -= 1
                raise ApiError(500, "INTERNAL", "Internal error encountered. (emulated)")
        return job

    def _read_requests(self, uri: str) -> tuple[list[Json], list[str | None]]:
        blob = self._blob(uri)
        try:
            data: bytes = blob.download_as_bytes()
        except gexc.NotFound as exc:
            raise invalid(f"inputConfig.gcsSource.uris: {uri} does not exist") from exc
        requests: list[Json] = []
        keys: list[str | None] = []
        for line_no, raw in enumerate(data.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise invalid(f"{uri} line {line_no}: not valid JSON ({exc.msg})") from exc
            request = pick(line, "request") if isinstance(line, Mapping) else None
            if not isinstance(request, Mapping):
                raise invalid(f"{uri} line {line_no}: expected an object with a 'request' object")
            requests.append(dict(request))
            keys.append(key_from_labels(pick(request, "labels")))
        if not requests:
            raise invalid(f"{uri} holds no requests")
        return requests, keys

    # --- progress --------------------------------------------------------------------------

    def _job(self, name: str) -> VertexJob:
        job_id = name.rsplit("/", 1)[-1]
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise not_found(f"BatchPredictionJob {job_id} does not exist.")
        return job

    def _stage(self, job: VertexJob, now: float) -> int:
        elapsed = now - job.created
        pending, running = self.state.config.pending_seconds, self.state.config.running_seconds
        by_time = (
            PENDING if elapsed < pending else RUNNING if elapsed < pending + running else FINISHED
        )
        return max(by_time, job.forced)

    def _settle(self, job: VertexJob) -> None:
        with job.lock:
            if job.terminal:
                return
            now = self.state.now()
            stage = self._stage(job, now)
            if stage >= RUNNING and job.start_time is None:
                job.start_time = now
                job.state = "JOB_STATE_RUNNING"
                job.updated = now
            if stage < FINISHED:
                return
            fault = job.job_fault
            if fault is None:
                self._render(job, limit=None)
                job.state = "JOB_STATE_SUCCEEDED"
            else:
                job.state = f"JOB_STATE_{fault.state}"
                if fault.state == "FAILED":
                    job.error = {"code": fault.code, "message": fault.message}
            job.end_time = job.updated = now

    def _render(self, job: VertexJob, limit: int | None) -> None:
        """Answer the first `limit` rows (all when None); write them in scrambled order."""
        count = len(job.requests) if limit is None else min(limit, len(job.requests))
        order = sorted(
            range(count), key=lambda i: hashlib.sha256(f"{job.job_id}:{i}".encode()).digest()
        )
        stamp = rfc3339(self.state.now()).replace("000Z", "Z")
        output_dir = f"{job.dest_prefix}prediction-model-{stamp}/"
        with tempfile.TemporaryDirectory(prefix="bananabatch-vertex-") as tmp:
            path = Path(tmp) / "predictions.jsonl"
            with path.open("wb") as sink:
                for index in order:
                    for line in self._answer(job, index):
                        sink.write((json.dumps(line) + "\n").encode())
            self._blob(f"{output_dir}predictions.jsonl").upload_from_filename(
                str(path), content_type="application/jsonl"
            )
        job.output_dir = output_dir

    def _answer(self, job: VertexJob, index: int) -> list[Json]:
        request, key = job.requests[index], job.keys[index]
        with self.state._lock:
            fault = self.state.faults.take_row_fault(key)
        outcome = generate(
            job.model.removeprefix(PUBLISHER_PREFIX),
            _without_labels(request),
            fault=fault,
            rid=response_id(job.job_id, str(index)),
        )
        with self.state._lock:
            if outcome.error is not None:
                job.failed += 1
            else:
                job.succeeded += 1
                self.state.counters.images_rendered += _has_image(outcome.response)
        if fault is not None and fault.kind == "missing":
            return []
        line: Json = {"status": "", "processed_time": rfc3339(self.state.now()), "request": request}
        if outcome.error is not None:
            code = int(outcome.error.get("code") or 13)
            http, reason, status = _ROW_STATUS.get(code, _ROW_STATUS_DEFAULT)
            line["status"] = f"{reason}: {http} {status}: {outcome.error.get('message', '')}"
            line["response"] = {}
        else:
            line["response"] = outcome.response
        copies = 2 if fault is not None and fault.kind == "duplicate" else 1
        return [line] * copies

    # --- API -------------------------------------------------------------------------------

    def get(self, name: str) -> VertexJob:
        job = self._job(name)
        self._settle(job)
        return job

    def list_jobs(
        self, parent: str, page_size: int, page_token: str | None, filter_: str | None
    ) -> tuple[list[VertexJob], str]:
        wanted = _display_name_filter(filter_)
        with self._lock:
            jobs = sorted(
                (j for j in self._jobs.values() if j.parent == parent),
                key=lambda j: j.seq,
                reverse=True,
            )
        if wanted is not None:
            jobs = [j for j in jobs if j.display_name == wanted]
        size = max(1, min(page_size or 100, 1000))
        start = int(page_token) if page_token and page_token.isdigit() else 0
        page = jobs[start : start + size]
        for job in page:
            self._settle(job)
        return page, (str(start + size) if start + size < len(jobs) else "")

    def cancel(self, name: str) -> None:
        """Cancel a live job; rows already done are exported, as the service does."""
        job = self.get(name)
        with job.lock:
            if job.terminal:
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"BatchPredictionJob {job.job_id} is in state {job.state} and cannot be "
                    "cancelled.",
                )
            now = self.state.now()
            done = 0
            running = self.state.config.running_seconds
            if job.start_time is not None and running > 0 and not math.isinf(running):
                fraction = (now - job.start_time) / running
                done = min(len(job.requests), math.floor(len(job.requests) * fraction))
            if done > 0:
                self._render(job, limit=done)
            job.state = "JOB_STATE_CANCELLED"
            job.end_time = job.updated = now

    def delete(self, name: str) -> None:
        job = self._job(name)
        with job.lock, self._lock:
            self._jobs.pop(job.job_id, None)

    def job_json(self, job: VertexJob) -> Json:
        with job.lock:
            out: Json = {
                "name": job.name,
                "displayName": job.display_name,
                "model": job.model,
                "inputConfig": {
                    "instancesFormat": "jsonl",
                    "gcsSource": {"uris": [job.source_uri]},
                },
                "outputConfig": {
                    "predictionsFormat": "jsonl",
                    "gcsDestination": {"outputUriPrefix": job.dest_prefix},
                },
                "state": job.state,
                "createTime": rfc3339(job.created),
                "updateTime": rfc3339(job.updated),
            }
            if job.start_time is not None:
                out["startTime"] = rfc3339(job.start_time)
            if job.end_time is not None:
                out["endTime"] = rfc3339(job.end_time)
            if job.error is not None:
                out["error"] = job.error
            if job.output_dir is not None:
                out["outputInfo"] = {"gcsOutputDirectory": job.output_dir.rstrip("/")}
            if job.terminal:
                out["completionStats"] = {
                    "successfulCount": str(job.succeeded),
                    "failedCount": str(job.failed),
                    "incompleteCount": str(len(job.requests) - job.succeeded - job.failed),
                }
            return out

    # --- control API (tests) ---------------------------------------------------------------

    def complete(self, name: str) -> str:
        job = self._job(name)
        with job.lock:
            job.forced = FINISHED
        return self.get(name).state

    def complete_all(self) -> list[str]:
        with self._lock:
            live = [j.name for j in self._jobs.values() if not j.terminal]
        for name in live:
            self.complete(name)
        return live

    def names(self) -> list[str]:
        with self._lock:
            return [j.name for j in sorted(self._jobs.values(), key=lambda j: j.seq)]

    def submitted_keys(self) -> Counter[str | None]:
        with self._lock:
            return Counter(key for job in self._jobs.values() for key in job.keys)


def _without_labels(request: Mapping[str, Any]) -> Json:
    return {k: v for k, v in request.items() if k != "labels"}


def _has_image(response: Json | None) -> int:
    for candidate in (response or {}).get("candidates", []):
        for part in (candidate.get("content") or {}).get("parts", []):
            if "inlineData" in part:
                return 1
    return 0


def _display_name_filter(text: str | None) -> str | None:
    """The name in a `display_name="..."` filter; other filters are not understood and
    list everything (the caller checks what it gets)."""
    if not text:
        return None
    name, sep, value = text.partition("=")
    if sep and name.strip() in {"display_name", "displayName"}:
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1]
    return None


# --- one store per emulator ------------------------------------------------------------------

_stores: weakref.WeakKeyDictionary[EmulatorState, VertexJobs] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def jobs_for(state: EmulatorState) -> VertexJobs:
    """The Vertex job store of an emulator (its control API for tests)."""
    with _stores_lock:
        jobs = _stores.get(state)
        if jobs is None:
            jobs = _stores[state] = VertexJobs(state)
        return jobs


# --- HTTP ------------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def _endpoint(fn: Callable[[VertexJobs, Request, str], Awaitable[Response]]) -> Handler:
    async def endpoint(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        params = request.path_params
        try:
            if params["version"] not in VERSIONS:
                raise not_found(f"API version {params['version']!r} is unknown")
            auth = request.headers.get("authorization", "")
            if not auth.lower().startswith("bearer ") or not auth[7:].strip():
                raise ApiError(
                    401,
                    "UNAUTHENTICATED",
                    "Request is missing required authentication credential. Expected OAuth 2 "
                    "access token.",
                )
            parent = f"projects/{params['project']}/locations/{params['location']}"
            return await fn(jobs_for(state), request, parent)
        except ApiError as error:
            return JSONResponse(error.envelope(), status_code=error.http_status)

    return endpoint


async def _body(request: Request) -> Json:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise invalid(f"Invalid JSON payload received. {exc.msg}.") from exc
    if not isinstance(parsed, dict):
        raise invalid("Invalid JSON payload received: expected an object.")
    return parsed


@_endpoint
async def _collection(jobs: VertexJobs, request: Request, parent: str) -> Response:
    if request.method == "POST":
        job = await run_in_threadpool(jobs.create, parent, await _body(request))
        return JSONResponse(jobs.job_json(job))
    query = request.query_params
    raw_size = query.get("pageSize") or "0"
    if not raw_size.isdigit():
        raise invalid(f"pageSize must be an integer, found {raw_size!r}")
    page, token = await run_in_threadpool(
        jobs.list_jobs, parent, int(raw_size), query.get("pageToken"), query.get("filter")
    )
    body: Json = {"batchPredictionJobs": [jobs.job_json(j) for j in page]}
    if token:
        body["nextPageToken"] = token
    return JSONResponse(body)


@_endpoint
async def _item(jobs: VertexJobs, request: Request, parent: str) -> Response:
    job_id, _, verb = request.path_params["rest"].partition(":")
    name = f"{parent}/batchPredictionJobs/{job_id}"
    if request.method == "POST" and verb == "cancel":
        await run_in_threadpool(jobs.cancel, name)
        return JSONResponse({})
    if request.method == "DELETE" and not verb:
        await run_in_threadpool(jobs.delete, name)
        # Deletion is a long-running operation on the service; here it is done at once.
        return JSONResponse({"name": f"{name}/operations/{job_id}", "done": True})
    if request.method == "GET" and not verb:
        job = await run_in_threadpool(jobs.get, name)
        return JSONResponse(jobs.job_json(job))
    raise not_found(f"unknown method {request.method} {name}:{verb}")


@_endpoint
async def _model(jobs: VertexJobs, request: Request, parent: str) -> Response:
    model, _, verb = request.path_params["rest"].partition(":")
    if verb != "generateContent":
        raise not_found(f"unknown method {PUBLISHER_PREFIX}{model}:{verb}")
    body = await _body(request)
    response = await run_in_threadpool(
        jobs.state.generate_now, f"models/{model}", _without_labels(body)
    )
    return JSONResponse(response)


def routes() -> list[Route]:
    """The Vertex routes, to mount beside the Developer API's."""
    base = "/{version}/projects/{project}/locations/{location}"
    return [
        Route(f"{base}/batchPredictionJobs", _collection, methods=["GET", "POST"]),
        Route(f"{base}/batchPredictionJobs/{{rest}}", _item, methods=["GET", "POST", "DELETE"]),
        Route(f"{base}/publishers/google/models/{{rest}}", _model, methods=["POST"]),
    ]


__all__ = ["VertexJob", "VertexJobs", "jobs_for", "routes"]
