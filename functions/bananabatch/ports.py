"""One small Protocol per external system. The pipeline talks only to these.

Adapters: `adapters/local` (folder, SQLite, in-process bus), `adapters/gcp` (Cloud Storage,
Firestore, Pub/Sub), `providers/` (Gemini Developer API, Vertex AI; the emulator is the
Gemini adapter pointed at a loopback URL). One contract suite per port, in
tests/contract, runs against every adapter.

Image lanes (DESIGN.md "Lanes and routing"): besides the batch providers, a SyncImageLane
answers one request with one image now (Gemini's standard API, any OpenAI-compatible
images endpoint) and an AsyncImageLane takes a request, answers a task id at once and
delivers the image later by a signed webhook or a poll (hosted-model providers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any, Literal, Protocol, runtime_checkable

from bananabatch.core.results import Usage
from bananabatch.core.states import BatchState

# --- object store -----------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    name: str
    size: int
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    generation: str | None = None
    updated: datetime | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """Buckets of objects. Reads and writes stream: an image or a 1 GB result file is never
    held whole in memory by the store."""

    # How many writes pay off running at once: a network store hides its latency behind
    # concurrent requests; a local folder's writes are system calls, which on threads
    # would only contend for the GIL (1: write inline).
    write_concurrency: int

    def uri(self, bucket: str, name: str) -> str:
        """A URI a user can paste (gs://bucket/name, or file:///... locally)."""
        ...

    def stat(self, bucket: str, name: str) -> ObjectInfo | None: ...

    def open_read(self, bucket: str, name: str) -> AbstractContextManager[IO[bytes]]:
        """A binary stream over the object. Raises NotFound when absent."""
        ...

    def open_write(
        self,
        bucket: str,
        name: str,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> AbstractContextManager[IO[bytes]]:
        """A binary sink; the object appears, whole, only when the block exits cleanly."""
        ...

    def write_bytes(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> bool:
        """Write a small object. With if_absent, an existing object is left alone and the
        call returns False (a generation-0 precondition on Cloud Storage)."""
        ...

    def read_bytes(self, bucket: str, name: str) -> bytes:
        """Read a small object whole. Raises NotFound when absent."""
        ...

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose name starts with prefix, in name order."""
        ...

    def copy(self, src_bucket: str, src_name: str, dst_bucket: str, dst_name: str) -> None: ...

    def delete(self, bucket: str, name: str) -> None:
        """Remove an object; absent objects are not an error."""
        ...

    def signed_url(self, bucket: str, name: str, *, expires_in: timedelta) -> str:
        """A URL that reads the object for `expires_in` without other credentials: a V4
        signed URL on Cloud Storage (how the Gemini Developer API reads a reference image);
        on the local folder, its stand-in, a file:// URL carrying the same lifetime, which
        only a reader on this machine (the emulator) can follow."""
        ...


# --- state store ------------------------------------------------------------------------

Doc = dict[str, Any]
FilterOp = Literal["==", "in", "<", "<=", ">", ">="]


@dataclass(frozen=True)
class Where:
    field: str
    op: FilterOp
    value: Any


@runtime_checkable
class StateStore(Protocol):
    """Documents addressed by slash paths, Firestore style: "jobs/J" is a document,
    "jobs/J/items" a collection, "jobs/J/items/K" a document in it.

    Conditional writes are the lock for anything that must happen once: `create` fails
    softly when the document exists; `update` runs a read-decide-write in a transaction.
    """

    def get(self, path: str) -> Doc | None: ...

    def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc]:
        """The documents of one collection with these ids that exist, keyed by id (absent
        ones are left out), read in as few round trips as the backend allows (Firestore's
        get_all). For lookups of many keys at once, such as a chunk of input lines in the
        dedup cache. Not a snapshot as a whole."""
        ...

    def create(self, path: str, doc: Mapping[str, Any]) -> bool:
        """Create the document if absent. True if this call created it."""
        ...

    def create_many(self, collection: str, docs: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """`create` for many documents of one collection (keyed by id): each one is created
        only if absent, as a conditional write of its own (of two callers racing for an id,
        exactly one creates it). Returns the ids this call created. For the in-flight
        claims of a batch's requests, taken at its submission (pipeline/claims.py)."""
        ...

    def set(self, path: str, doc: Mapping[str, Any]) -> None:
        """Create or replace the document."""
        ...

    def update(self, path: str, fn: Callable[[Doc | None], Doc | None]) -> Doc | None:
        """Transactionally read the document, call fn with it (None when absent) and write
        what fn returns; None from fn means "write nothing". Returns the document as it
        stands afterwards. fn may run more than once under contention: keep it pure.
        Exceptions from fn propagate and nothing is written."""
        ...

    def set_many(self, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Create or replace many documents in as few commits as the backend allows (at
        most 500 per commit on Firestore). Not atomic as a whole. Returns the count."""
        ...

    def query(
        self,
        collection: str,
        where: Sequence[Where] = (),
        *,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Doc]:
        """Documents of one collection matching every filter, streamed."""
        ...

    def count(self, collection: str, where: Sequence[Where] = ()) -> int: ...

    def delete(self, path: str) -> None: ...


# --- event bus --------------------------------------------------------------------------


@runtime_checkable
class EventBus(Protocol):
    """Fire-and-forget messages with string attributes. Delivery is at least once and in
    no particular order; subscribers must be idempotent."""

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish and wait for the broker's acknowledgement. Returns the message id."""
        ...


# --- batch provider ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderBatch:
    """A provider's batch as we understand it, whatever its wire format."""

    name: str
    display_name: str | None
    state: BatchState  # RUNNING for pending/running; SUCCEEDED/FAILED/CANCELLED/EXPIRED
    provider_state: str  # the raw state string, for logs and status
    error: str | None = None
    # Where results are: "files/batch-..." (Developer API), a gs:// directory (Vertex),
    # or "inline" when the responses came back inside the batch itself.
    output: str | None = None
    request_count: int | None = None
    create_time: datetime | None = None
    end_time: datetime | None = None
    # The uploaded request file the batch was made from ("files/..." on the Developer
    # API), which the provider keeps in its store until released; None when it is ours.
    input_file: str | None = None


@dataclass(frozen=True)
class ResultRow:
    """One line of a result file, normalised to the Developer API's shape.

    row is the parsed JSON ({"key": ..., "response": {...}} or {"key": ..., "error": {...}}
    or {"key": ..., "status": ...}); malformed is set instead when the line could not be
    parsed at all. line_no counts from 0 in the result stream. A long image data string may
    come as a read-only memoryview of its ASCII text in the line instead of a str (the
    Gemini adapter's rows, providers/_lines.py: saves a copy of megabytes); core.results
    reads either, and nothing else needs the data.
    """

    line_no: int
    row: Mapping[str, Any] | None
    malformed: str | None = None


@runtime_checkable
class BatchProvider(Protocol):
    """A batch image-generation service: Gemini Developer API, Vertex AI, or the emulator."""

    kind: str

    def encode_request(self, key: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """The line to stage for one request (the Developer API's {"key", "request"}, or
        Vertex's {"request"} with the key carried in labels)."""
        ...

    def decode_request(self, line: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The inverse of encode_request: (key, request) from one staged line."""
        ...

    def create(
        self,
        *,
        model: str,
        display_name: str,
        request_bucket: str,
        request_object: str,
        request_count: int,
    ) -> ProviderBatch:
        """Create one batch from a staged request file. Never retried inside: raises
        ProviderQuotaExceeded when refused for quota (nothing was created),
        ProviderOutcomeUnknown when the batch may or may not exist, PermanentError when
        the request is invalid."""
        ...

    def find(self, display_name: str) -> ProviderBatch | None:
        """The batch with this display name, if the provider has one."""
        ...

    def get(self, name: str) -> ProviderBatch: ...

    def cancel(self, name: str) -> None: ...

    def iter_results(self, batch: ProviderBatch, *, start_line: int = 0) -> Iterator[ResultRow]:
        """Stream the result rows of a finished batch, skipping the first start_line rows.
        Memory is bounded by the largest single line."""
        ...

    def generate(self, *, model: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """One synchronous generateContent call (the urgent lane); returns the response."""
        ...

    def release_input(self, batch: ProviderBatch) -> None:
        """Free what the provider still holds of a finished batch's input: the Developer
        API's uploaded request file is deleted (an absent one is not an error); Vertex
        reads our own Cloud Storage object and holds nothing."""
        ...

    def files_store_bytes(self) -> int | None:
        """Bytes in the provider's per-project file store (the Developer API's 20 GB Files
        store, result files included); None for a provider without one (Vertex)."""
        ...


# --- image lanes (sync and async-callback) -----------------------------------------------


@dataclass(frozen=True)
class ImageRequest:
    """One image to make, in every lane's terms: a lane sends what it can express.

    The Gemini standard lane sends `gemini_request` (the GenerateContentRequest intake
    staged, native lines included); a lane that speaks another protocol builds its call
    from `prompt`, `aspect_ratio`, `image_size` and `reference_images`, and refuses (a
    PermanentError, before any call) a request it cannot express, such as a native line
    with no prompt.
    """

    job_id: str
    key: str
    # The claimed attempt (pipeline/lanes.py): unique per job, key and attempt, so it can
    # be sent as an idempotency key or a task label where the provider takes one.
    attempt_id: str
    # The catalog's model id ("gemini-3-pro-image"); a lane maps it to its own model name.
    model: str
    prompt: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    reference_images: tuple[str, ...] = ()
    gemini_request: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ImageResult:
    """The image a lane made, with what it was billed where the provider says so."""

    image: bytes
    mime_type: str
    # Tokens billed, for lanes priced by token (Gemini's usageMetadata).
    usage: Usage | None = None
    # What the provider says it charged, for lanes that report it; otherwise the lane's
    # dated per-image price applies (core/price_table.py).
    cost_usd: float | None = None
    # The provider's own id of this generation, for logs and support.
    provider_ref: str | None = None


TaskState = Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True)
class TaskStatus:
    """Where an async lane's task stands."""

    task_id: str
    state: TaskState
    result: ImageResult | None = None  # set when succeeded
    error: str | None = None  # set when failed
    # The failure was a content-policy refusal: the item ends BLOCKED, and is never tried
    # on another provider (errors.ContentRefused).
    refused: bool = False
    # False when the provider says the failure happened before any work was billed and the
    # request may go to the next provider; True (the default) when it may have been paid.
    maybe_billed: bool = True


@runtime_checkable
class SyncImageLane(Protocol):
    """One request, one image, now: Gemini's standard API, an OpenAI-compatible images
    endpoint. Exactly one call per `generate`, never retried inside: retries and failover
    are the runner's (pipeline/lanes.py), which claims every attempt before the call.

    Raises:
    - ProviderQuotaExceeded (429) or TransientError (5xx, provider down, connect error,
      timeout before the request was sent): nothing was made or billed; the next provider
      may be tried;
    - OutcomeUnknown: the request may have reached the provider (read timeout, reset after
      send); never repeated elsewhere unless the owner opted in;
    - ContentRefused: a content-policy refusal; BLOCKED, never tried elsewhere;
    - ProviderAuthError: the lane's credentials are refused; PermanentError: the request
      cannot be made on this lane (nothing sent).
    """

    # "gemini-standard", "compat:<label>" (the label from the configuration).
    name: str

    def generate(self, request: ImageRequest, *, timeout_s: float) -> ImageResult: ...


@runtime_checkable
class AsyncImageLane(Protocol):
    """Submit, get a task id at once, then a signed webhook or a poll: hosted-model
    providers (Replicate's predictions API). `submit` raises as SyncImageLane.generate
    does; once it returned a task id, the task is the provider's and only its status
    decides the item."""

    name: str

    def submit(self, request: ImageRequest, *, webhook_url: str | None) -> str:
        """Create the task; returns its id."""
        ...

    def poll(self, task_id: str) -> TaskStatus: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> TaskStatus:
        """Verify a delivery with the provider's documented scheme and read it; raises
        webhooks.WebhookRejected (a PermanentError) when it does not verify."""
        ...
