"""BatchProvider over OpenAI Batch (gpt-image models), with the official `openai` SDK, and
over the OpenAI Batch emulator (emulator/openai), which the same SDK reaches on loopback.

Facts: ../shared/reference/field-2026-12.md §3. The lines go through providers/openai_rows.py
(staged as `{"custom_id", "method", "url", "body"}`; results back in the Developer API's row
shape, so one set of outcome rules serves both providers).

- create uploads the staged file (`purpose="batch"`), then creates the batch with
  `completion_window="24h"`, our batch's display name in `metadata`, and
  `output_expires_after` set so its result files outlive any delay of the collector. The
  client makes one attempt per call (`max_retries=0`): the SDK would otherwise resend a
  create whose answer was lost, and a second batch is a second bill. A create whose outcome
  is unclear is ProviderOutcomeUnknown, and `find` reconciles it by listing batches and
  matching that metadata.
- Statuses: validating, in_progress, finalizing and cancelling are RUNNING (cancelling:
  the files are not final until cancelled); completed, failed, expired and cancelled map
  to ours. Expired and cancelled batches keep (and bill) the work they finished: their
  output file is collected like any other, and the requests they never ran go missing and
  are retried.
- Results: the output file, then the error file, streamed through the SDK's streaming
  response one chunk at a time, lines counted across both (the collector's cursor), never
  a whole file in memory. Lines are matched by `custom_id` downstream, never by position
  (output order is not guaranteed).
- Errors: 429 is ProviderQuotaExceeded (`insufficient_quota` is the billing kind, which no
  wait cures), 401 ProviderAuthError, 5xx / 408 / timeouts TransientError (on create:
  ProviderOutcomeUnknown), other 4xx PermanentError, 404 on a read NotFound.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final, cast

import openai
from openai.types import Batch

from bananabatch.config import ENV_OPENAI_API_KEY, ENV_OPENAI_BASE_URL, Settings
from bananabatch.core.states import BatchState
from bananabatch.errors import (
    ConfigError,
    NotFound,
    PermanentError,
    ProviderAuthError,
    ProviderOutcomeUnknown,
    ProviderQuotaExceeded,
    QuotaKind,
    TransientError,
)
from bananabatch.log import get_logger
from bananabatch.ports import ObjectStore, ProviderBatch, ResultRow
from bananabatch.providers import openai_rows
from bananabatch.providers._common import split_lines
from bananabatch.providers._lines import parse_image_line
from bananabatch.providers._references import mentions_gcs, redact_signed_urls, split_gcs_uri
from bananabatch.providers.gemini import TRANSPORT_ERRORS

log = get_logger(__name__)

KIND: Final = "openai"
# The metadata key that carries our batch's display name (its id in our records): what
# `find` matches when a create's answer was lost.
METADATA_KEY: Final = "bananabatch_batch"
COMPLETION_WINDOW: Final = "24h"
# The one window the service takes (field sheet §3.1): a batch not done by then expires.
BATCH_WINDOW: Final = timedelta(hours=24)
LIST_PAGE_SIZE: Final = 100
# Seconds; a file download or an upload of 200 MB may take minutes on a slow link.
SDK_TIMEOUT: Final = 600.0
_SPOOL_CHUNK: Final = 1024 * 1024
_DOWNLOAD_CHUNK: Final = 1024 * 1024

_STATES: Final[Mapping[str, BatchState]] = {
    "completed": BatchState.SUCCEEDED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelled": BatchState.CANCELLED,
}
# A request that never reached the service, or whose answer never arrived.
NETWORK_ERRORS: Final[tuple[type[BaseException], ...]] = (
    openai.APIConnectionError,
    *TRANSPORT_ERRORS,
)
# On create: the batch may or may not exist (an answer we could not read included).
UNCLEAR_ERRORS: Final[tuple[type[BaseException], ...]] = (
    *NETWORK_ERRORS,
    openai.APIResponseValidationError,
)
# Roles of the two result files, in the order they are read.
_OUTPUT, _ERRORS = "output", "errors"


def batch_state(status: str) -> BatchState:
    """OpenAI's status to ours: anything not terminal (validating, in_progress, finalizing,
    cancelling, or a status we have never seen) is RUNNING."""
    return _STATES.get(status, BatchState.RUNNING)


def output_ref(output_file_id: str | None, error_file_id: str | None) -> str | None:
    """ProviderBatch.output for a batch's two result files ("output:file-x errors:file-y"),
    None when it has neither."""
    parts = [
        f"{role}:{file_id}"
        for role, file_id in ((_OUTPUT, output_file_id), (_ERRORS, error_file_id))
        if file_id
    ]
    return " ".join(parts) or None


def result_files(output: str | None) -> list[str]:
    """The file ids of output_ref's string, output file first."""
    found: dict[str, str] = {}
    for part in (output or "").split():
        role, _, file_id = part.partition(":")
        if role in (_OUTPUT, _ERRORS) and file_id:
            found[role] = file_id
    return [found[r] for r in (_OUTPUT, _ERRORS) if r in found]


def provider_batch(batch: Batch, request_count: int | None = None) -> ProviderBatch:
    counts = batch.request_counts
    ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    metadata = batch.metadata or {}
    return ProviderBatch(
        name=batch.id,
        display_name=metadata.get(METADATA_KEY),
        state=batch_state(batch.status),
        provider_state=batch.status,
        error=_batch_errors(batch),
        output=output_ref(batch.output_file_id, batch.error_file_id),
        request_count=counts.total if counts is not None and counts.total else request_count,
        create_time=_time(batch.created_at),
        end_time=_time(ended),
        input_file=batch.input_file_id or None,
    )


def _batch_errors(batch: Batch) -> str | None:
    errors = batch.errors.data if batch.errors is not None else None
    if not errors:
        return None
    shown = []
    for error in errors[:5]:
        where = f" (line {error.line})" if error.line is not None else ""
        shown.append(f"{error.code or 'error'}: {error.message or ''}{where}".strip())
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    return "; ".join(shown) + more


def _time(epoch: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


class OpenAIBatchProvider:
    """OpenAI Batch for image requests. Create is never retried here: see the module note."""

    def __init__(
        self,
        client: openai.OpenAI,
        objects: ObjectStore,
        *,
        kind: str = KIND,
        output_expires_after: timedelta = timedelta(days=7),
        reference_url_ttl: timedelta = timedelta(hours=72),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kind = kind
        self.clock = clock
        # Signed URLs of gs:// input images: the batch runs within 24 h of its create.
        self.reference_url_ttl = reference_url_ttl
        self.client = client
        self.objects = objects
        self.output_expires_after = output_expires_after

    def close(self) -> None:
        self.client.close()

    # --- request lines ---------------------------------------------------------------------

    def encode_request(self, key: str, request: Mapping[str, Any]) -> dict[str, Any]:
        return openai_rows.encode(key, request)

    def decode_request(self, line: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        key, body = line.get("custom_id"), line.get("body")
        if not isinstance(key, str) or not isinstance(body, Mapping):
            raise PermanentError(
                "staged request line: expected {'custom_id': str, 'method', 'url', 'body': "
                f"object}}, found keys {sorted(line)}"
            )
        return key, dict(body)

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
        """Upload the staged file, then create the batch from it. Failures before
        batches.create is sent cannot have created a batch; after it is sent, anything but
        a definite refusal is ProviderOutcomeUnknown."""
        where = f"batch {display_name} ({request_bucket}/{request_object})"
        with ExitStack() as stack:
            source = stack.enter_context(self.objects.open_read(request_bucket, request_object))
            upload = stack.enter_context(self._readable_images(source, where))
            endpoint = _endpoint_of(upload, where)
            try:
                uploaded = self.client.files.create(
                    file=(f"{display_name}.jsonl", upload, "application/jsonl"),
                    purpose="batch",
                )
            except openai.APIStatusError as exc:
                raise refusal(exc, f"uploading the request file for {where}") from exc
            except NETWORK_ERRORS as exc:
                raise TransientError(
                    f"uploading the request file for {where} failed: {exc!r}; nothing was created"
                ) from exc
        try:
            with create_errors(f"creating {where}"):
                batch = self.client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint=cast(Any, endpoint),
                    completion_window=COMPLETION_WINDOW,
                    metadata={METADATA_KEY: display_name},
                    output_expires_after={
                        "anchor": "created_at",
                        "seconds": int(self.output_expires_after.total_seconds()),
                    },
                )
        except ProviderOutcomeUnknown:
            raise  # the batch may exist and read the file: it stays
        except (PermanentError, TransientError):
            with suppress(PermanentError, TransientError):
                self._delete_file(uploaded.id)
            raise
        log.info(
            "provider batch created",
            extra={"batch_name": batch.id, "model": model, "endpoint": endpoint},
        )
        made = provider_batch(batch, request_count)
        return made if made.display_name else replace(made, display_name=display_name)

    @contextmanager
    def _readable_images(self, source: IO[bytes], where: str) -> Iterator[IO[bytes]]:
        """The staged file as OpenAI can read it, seekable: every gs:// input image of an
        edit line replaced by a signed URL valid past the batch's 24 h window
        (providers/_references.py says why signed URLs); a file without one goes as is."""
        with _seekable(source) as seekable:
            found = mentions_gcs(seekable)
            seekable.seek(0)
            if not found:
                yield seekable
                return
            signed: dict[str, str] = {}

            def url_for(uri: str) -> str:
                if uri not in signed:
                    bucket, name = split_gcs_uri(uri)
                    signed[uri] = self.objects.signed_url(
                        bucket, name, expires_in=self.reference_url_ttl
                    )
                return signed[uri]

            with tempfile.TemporaryFile() as spool:
                count = 0
                for line in _lines_of(seekable):
                    count += openai_rows.with_signed_images(line, url_for)
                    spool.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
                spool.seek(0)
                log.info("reference images signed", extra={"references": count, "where": where})
                yield cast(IO[bytes], spool)

    # --- find, get, cancel -----------------------------------------------------------------

    def find(self, display_name: str) -> ProviderBatch | None:
        """The newest batch whose metadata names this display name (the list is newest
        first and pages on, so an older match is never preferred to a newer one)."""
        with read_errors(f"listing batches to find {display_name}"):
            for batch in self.client.batches.list(limit=LIST_PAGE_SIZE):
                if (batch.metadata or {}).get(METADATA_KEY) == display_name:
                    return provider_batch(batch)
        return None

    def get(self, name: str) -> ProviderBatch:
        with read_errors(f"getting {name}"):
            return provider_batch(self.client.batches.retrieve(name))

    def cancel(self, name: str) -> None:
        try:
            with read_errors(f"cancelling {name}"):
                self.client.batches.cancel(name)
        except PermanentError:
            # Cancelling a batch that already ended is refused (which status answers it
            # is not documented): harmless when the batch is indeed past cancelling.
            seen = self.get(name)
            if seen.state is BatchState.RUNNING and seen.provider_state != "cancelling":
                raise

    # --- results ---------------------------------------------------------------------------

    def iter_results(self, batch: ProviderBatch, *, start_line: int = 0) -> Iterator[ResultRow]:
        files = result_files(batch.output)
        if not files:
            raise PermanentError(f"batch {batch.name} ({batch.state}) has no result file")
        line_no = 0
        for file_id in files:
            where = f"downloading {file_id} of {batch.name}"
            for raw in self._lines(file_id, where, gone_ok=self._past_expiry(batch)):
                line = raw.strip()
                if not line:
                    continue
                number, line_no = line_no, line_no + 1
                if number < start_line:
                    continue
                row = parse_result_line(number, line)
                if row is not None:
                    yield row

    def _past_expiry(self, batch: ProviderBatch) -> bool:
        """Whether the batch's result files may have expired (output_expires_after runs
        from their creation, when the batch ended)."""
        ended = batch.end_time or batch.create_time
        return ended is not None and self.clock() > ended + self.output_expires_after

    def _lines(self, file_id: str, where: str, *, gone_ok: bool) -> Iterator[bytes]:
        try:
            with self.client.files.with_streaming_response.content(file_id) as response:
                yield from split_lines(response.iter_bytes(_DOWNLOAD_CHUNK))
        except openai.APIStatusError as exc:
            if exc.status_code != 404:
                raise read_error(exc, where) from exc
            if not gone_ok:
                # Within its lifetime a result file that answers 404 is not readable yet
                # (or briefly unavailable): try again, never give its rows up.
                raise TransientError(f"{where}: not found yet ({_describe(exc)})") from exc
            # Expired: its rows are lost. They go the missing-line way (retried, so paid
            # again): said loudly, as it means the collector was down past the expiry.
            log.error(
                "result file expired before it was collected; its lines count as missing",
                extra={"file_id": file_id, "error": _describe(exc)},
            )
        except NETWORK_ERRORS as exc:
            raise TransientError(f"{where}: {exc!r}") from exc

    # --- the synchronous lane and the file store ---------------------------------------------

    def generate(self, *, model: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        raise PermanentError(
            f"the urgent (synchronous) lane is not available on OpenAI for model {model!r}: "
            "send the line without priority urgent"
        )

    def release_input(self, batch: ProviderBatch) -> None:
        if batch.input_file:
            self._delete_file(batch.input_file)

    def _delete_file(self, file_id: str) -> None:
        try:
            self.client.files.delete(file_id)
        except openai.NotFoundError:
            return
        except openai.APIStatusError as exc:
            raise read_error(exc, f"deleting the request file {file_id}") from exc
        except NETWORK_ERRORS as exc:
            raise TransientError(f"deleting the request file {file_id}: {exc!r}") from exc
        log.info("request file deleted", extra={"input_file": file_id})

    def files_store_bytes(self) -> int | None:
        # OpenAI's file storage is per organisation and documented in bytes per file, not
        # as a project store the 20 GB alarm is about.
        return None


def parse_result_line(line_no: int, line: bytes) -> ResultRow | None:
    """One output or error line as a row; None for a request the batch never ran. The
    image strings are lifted out of the JSON scan (providers/_lines.py)."""
    parsed_row = parse_image_line(line_no, line)
    if parsed_row.row is None:
        return parsed_row
    parsed = parsed_row.row
    row = openai_rows.to_row(parsed)
    if row is None:
        return None
    error = row.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error["message"] = redact_signed_urls(error["message"])
    return ResultRow(line_no, row)


# --- errors --------------------------------------------------------------------------------


def _describe(exc: openai.APIStatusError) -> str:
    code = f" {exc.code}" if exc.code else ""
    return f"{exc.status_code}{code}: {redact_signed_urls(exc.message)}"


def quota_kind(exc: openai.APIStatusError) -> QuotaKind:
    """Which 429: `insufficient_quota` ("You exceeded your current quota, please check your
    plan and billing details") is billing, not cured by waiting; rate limits and the batch
    queue limit (enqueued tokens) pass with time."""
    code = (exc.code or "").lower()
    text = exc.message.lower()
    if code == "insufficient_quota" or "billing" in text:
        return QuotaKind.CREDITS_DEPLETED
    if code in ("rate_limit_exceeded", "token_limit_exceeded") or any(
        phrase in text for phrase in ("rate limit", "enqueued", "too many requests")
    ):
        return QuotaKind.RATE_LIMIT
    return QuotaKind.UNKNOWN


def retry_after(exc: openai.APIStatusError) -> timedelta | None:
    """The wait the answer asks for: `retry-after-ms`, else `retry-after` in seconds (the
    headers the SDK itself honours)."""
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw) / scale
        except ValueError:
            continue
        if seconds >= 0:
            return timedelta(seconds=seconds)
    return None


def refusal(exc: openai.APIStatusError, what: str) -> Exception:
    """A definite answer to a create (or its upload): nothing was created."""
    text = f"{what}: {_describe(exc)}"
    status = exc.status_code
    if status == 429:
        return ProviderQuotaExceeded(text, kind=quota_kind(exc), retry_after=retry_after(exc))
    if status == 401:
        return ProviderAuthError(
            f"{what}: OpenAI refused our credentials ({_describe(exc)}); this is a "
            "configuration error: fix OPENAI_API_KEY and run `bananabatch resume`"
        )
    if 400 <= status < 500 and status not in (408, 409):
        return PermanentError(text)
    return TransientError(text + "; nothing was created")


@contextmanager
def create_errors(what: str) -> Iterator[None]:
    """A definite refusal (429, 401, other 4xx) created nothing; a 5xx, 408, 409, a lost
    connection or an answer we cannot read leave the batch's existence open."""
    try:
        yield
    except openai.APIStatusError as exc:
        status = exc.status_code
        if status in (401, 429) or (400 <= status < 500 and status not in (408, 409)):
            raise refusal(exc, what) from exc
        raise ProviderOutcomeUnknown(
            f"{what}: {_describe(exc)}; the batch may exist, reconcile by its metadata"
        ) from exc
    except UNCLEAR_ERRORS as exc:
        raise ProviderOutcomeUnknown(
            f"{what}: {exc!r}; the batch may exist, reconcile by its metadata"
        ) from exc
    except ValueError as exc:
        # pydantic failing on a 200 answer: the batch exists then.
        raise ProviderOutcomeUnknown(
            f"{what}: unreadable answer ({exc}); the batch may exist, reconcile by its metadata"
        ) from exc


def read_error(exc: openai.APIStatusError, what: str) -> Exception:
    """The error a failed read (get, list, cancel, download) becomes."""
    status = exc.status_code
    if status == 429:
        return ProviderQuotaExceeded(
            f"{what}: {_describe(exc)}", kind=quota_kind(exc), retry_after=retry_after(exc)
        )
    if status == 401:
        return refusal(exc, what)
    if status == 404:
        return NotFound(f"{what}: {_describe(exc)}")
    if status in (408, 409) or status >= 500:
        return TransientError(f"{what}: {_describe(exc)}")
    return PermanentError(f"{what}: {_describe(exc)}")


@contextmanager
def read_errors(what: str) -> Iterator[None]:
    try:
        yield
    except openai.APIStatusError as exc:
        raise read_error(exc, what) from exc
    except NETWORK_ERRORS as exc:
        raise TransientError(f"{what}: {exc!r}") from exc


# --- the request file ----------------------------------------------------------------------


@contextmanager
def _seekable(stream: IO[bytes]) -> Iterator[IO[bytes]]:
    """A stream the upload can read from the start after the endpoint was peeked: seekable
    binary streams go as they are; others are spooled to a temporary file."""
    if isinstance(stream, io.IOBase) and stream.seekable():
        yield stream
        return
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, _SPOOL_CHUNK)
        spool.seek(0)
        yield cast(IO[bytes], spool)


def _endpoint_of(stream: IO[bytes], where: str) -> str:
    """The one endpoint every line of the staged file names; the stream is left at its
    start. A file mixing endpoints is refused: a batch serves one endpoint."""
    endpoints: set[str] = set()
    try:
        for line in _lines_of(stream):
            url = line.get("url")
            if url not in openai_rows.ENDPOINTS:
                raise PermanentError(f"creating {where}: a staged line names endpoint {url!r}")
            endpoints.add(str(url))
    finally:
        stream.seek(0)
    if len(endpoints) != 1:
        raise PermanentError(
            f"creating {where}: expected the lines of one endpoint, found {sorted(endpoints)}"
        )
    return endpoints.pop()


def _lines_of(stream: IO[bytes]) -> Iterable[dict[str, Any]]:
    for raw in stream:
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as exc:
            raise PermanentError(f"staged request line is not JSON: {exc}") from exc
        if not isinstance(line, dict):
            raise PermanentError("staged request line: expected a JSON object")
        yield line


# --- factory -------------------------------------------------------------------------------


def from_settings(settings: Settings, objects: ObjectStore) -> OpenAIBatchProvider:
    """The provider for OpenAI: the real API, or the emulator when OPENAI_BASE_URL names it."""
    if not settings.openai_api_key:
        raise ConfigError(
            f"the openai provider needs an API key: set {ENV_OPENAI_API_KEY} (or, for the "
            f"local emulator, any value and {ENV_OPENAI_BASE_URL} to its .../v1 address)"
        )
    client = openai.OpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url or None,
        webhook_secret=settings.openai_webhook_secret,
        # One attempt per call: see the module note. Reads are retried by the pipeline.
        max_retries=0,
        timeout=SDK_TIMEOUT,
    )
    return OpenAIBatchProvider(
        client,
        objects,
        output_expires_after=timedelta(hours=settings.openai_output_expires_hours),
        reference_url_ttl=timedelta(hours=settings.reference_url_hours),
    )


__all__ = [
    "KIND",
    "METADATA_KEY",
    "OpenAIBatchProvider",
    "batch_state",
    "from_settings",
    "output_ref",
    "provider_batch",
    "result_files",
]
