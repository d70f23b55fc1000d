"""BatchProvider over the Gemini Developer API (and the emulator, which speaks the same
protocol), with file-based batches.

The SDK does the parts it does well: the resumable upload, batch create, list and cancel.
Three things go around it over plain HTTP on the SDK's own base URL, version and key:
- `get` reads the raw Operation, because the SDK drops the job-level `error` and
  `batchStats` (reference §2.3);
- `iter_results` streams the result file, because `files.download` buffers it whole;
- `generate` posts the REST request as is, because the staged requests are REST JSON and
  a round trip through the SDK's types would rename or drop fields.
"""

from __future__ import annotations

import importlib
import io
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any, Final, cast

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from bananabatch.config import (
    ENV_GEMINI_API_KEY,
    ENV_GEMINI_BASE_URL,
    ProviderKind,
    Settings,
    WebhookMode,
)
from bananabatch.errors import (
    ConfigError,
    NotFound,
    OutcomeUnknown,
    PermanentError,
    ProviderOutcomeUnknown,
    TransientError,
)
from bananabatch.log import get_logger
from bananabatch.ports import ObjectStore, ProviderBatch, ResultRow
from bananabatch.providers import classify
from bananabatch.providers._common import batch_state, parse_time, result_rows, split_lines
from bananabatch.providers._lines import parse_image_line
from bananabatch.providers._references import (
    mentions_gcs,
    redact_signed_urls,
    rewrite_request_lines,
    split_gcs_uri,
    with_readable_references,
    without_signed_urls,
)

log = get_logger(__name__)

INLINE_OUTPUT: Final = "inline"
# The SDK timeout, in milliseconds; it also bounds each 8 MiB upload chunk.
SDK_TIMEOUT_MS: Final = 120_000
# Reads stall at most this long before we call the connection dead; an image generation
# call can legitimately take a minute or two.
HTTP_TIMEOUT: Final = httpx.Timeout(60.0, read=300.0)
LIST_PAGE_SIZE: Final = 100
_SPOOL_CHUNK: Final = 1024 * 1024


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures from httpx and from httpx2, which the SDK prefers when installed."""
    found: list[type[BaseException]] = [httpx.TransportError]
    try:
        httpx2 = importlib.import_module("httpx2")
    except ImportError:
        return tuple(found)
    found.append(cast(type[BaseException], httpx2.TransportError))
    return tuple(found)


TRANSPORT_ERRORS: Final = _transport_errors()
# Failures before a request left this machine (no connection, no pool slot): nothing was
# asked of the service, so another provider may be asked instead.
NOT_SENT_ERRORS: Final[tuple[type[BaseException], ...]] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# The SDK raises ValueError/KeyError when the upload handshake goes wrong.
UPLOAD_ERRORS: Final[tuple[type[BaseException], ...]] = (*TRANSPORT_ERRORS, ValueError, KeyError)
CREATE_ERRORS: Final[tuple[type[BaseException], ...]] = (*TRANSPORT_ERRORS, ValueError)


@dataclass(frozen=True)
class Endpoint:
    """Where the SDK sends requests: base URL, API version and key."""

    base_url: str
    api_version: str
    api_key: str

    @classmethod
    def of(cls, client: genai.Client) -> Endpoint:
        # The SDK has no public accessor for these. Reading its resolved options (rather
        # than re-deriving them) keeps our raw calls on exactly the URL, version and key the
        # SDK uses, whichever of http_options, GOOGLE_GEMINI_BASE_URL or
        # GOOGLE_GENAI_API_VERSION decided them.
        api = client._api_client
        options = api._http_options
        return cls(
            base_url=(options.base_url or "https://generativelanguage.googleapis.com/").rstrip("/"),
            api_version=options.api_version or "v1",
            api_key=api.api_key or "",
        )

    def url(self, path: str) -> str:
        return f"{self.base_url}/{self.api_version}/{path.lstrip('/')}"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key}


class GeminiProvider:
    """Gemini Developer API batches. Create is never retried here: see `create`."""

    def __init__(
        self,
        client: genai.Client,
        objects: ObjectStore,
        *,
        kind: str = ProviderKind.GEMINI.value,
        http: httpx.Client | None = None,
        webhook_url: str | None = None,
        reference_url_ttl: timedelta = timedelta(hours=72),
    ) -> None:
        self.kind = kind
        # gs:// reference images go to the service as signed URLs this long-lived
        # (providers/_references.py says why).
        self.reference_url_ttl = reference_url_ttl
        # Set in dynamic webhook mode: every batch names this URI and its own id.
        self.webhook_url = webhook_url
        self.client = client
        self.objects = objects
        self.endpoint = Endpoint.of(client)
        self._http = http or httpx.Client(timeout=HTTP_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    # --- request lines ---------------------------------------------------------------------

    def encode_request(self, key: str, request: Mapping[str, Any]) -> dict[str, Any]:
        return {"key": key, "request": dict(request)}

    def decode_request(self, line: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        key, request = line.get("key"), line.get("request")
        if not isinstance(key, str) or not isinstance(request, Mapping):
            raise PermanentError(
                "staged request line: expected {'key': str, 'request': object}, found keys "
                f"{sorted(line)}"
            )
        return key, dict(request)

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
        """Upload the staged file, then create the batch from it.

        Failures before batches.create is sent cannot have created a batch (plain
        TransientError, or ProviderQuotaExceeded); after it is sent, anything but a definite
        refusal is ProviderOutcomeUnknown, because the batch may exist.
        """
        where = f"batch {display_name} ({request_bucket}/{request_object})"
        if any(bad in model for bad in ("..", "?", "&")):
            # The SDK refuses these client-side; refuse them before uploading anything.
            raise PermanentError(f"creating {where}: model {model!r} is not a valid model name")
        with ExitStack() as stack:
            source = stack.enter_context(self.objects.open_read(request_bucket, request_object))
            source = stack.enter_context(self._readable_references(source, where))
            upload = stack.enter_context(_uploadable(source))
            try:
                uploaded = self.client.files.upload(
                    file=upload, config={"mime_type": "jsonl", "display_name": display_name}
                )
            except genai_errors.APIError as exc:
                raise _refusal(exc, f"uploading the request file for {where}") from exc
            except UPLOAD_ERRORS as exc:
                raise TransientError(
                    f"uploading the request file for {where} failed: {exc!r}; nothing was created"
                ) from exc
        if not uploaded.name:
            raise TransientError(f"uploading the request file for {where}: no file name returned")
        config: dict[str, Any] = {"display_name": display_name}
        if self.webhook_url:
            # user_metadata stays snake_case on the wire (reference: webhooks §2).
            config["webhook_config"] = {
                "uris": [self.webhook_url],
                "user_metadata": {"display_name": display_name},
            }
        try:
            with create_errors(f"creating {where}", "batch", model=model):
                job = self.client.batches.create(model=model, src=uploaded.name, config=config)  # type: ignore[arg-type]
                if not job.name:
                    raise ProviderOutcomeUnknown(f"creating {where}: the answer named no batch")
        except ProviderOutcomeUnknown:
            raise  # the batch may exist and read the file: it stays
        except (PermanentError, TransientError):
            # A definite refusal: no batch reads the file, so it leaves the Files store now
            # (or expires there in 48 h if even that fails).
            with suppress(PermanentError, TransientError):
                self._delete_file(uploaded.name)
            raise
        provider_state = _state_text(job.state)
        log.info("provider batch created", extra={"batch_name": job.name, "model": model})
        return ProviderBatch(
            name=job.name,
            display_name=job.display_name or display_name,
            state=batch_state(provider_state),
            provider_state=provider_state,
            request_count=request_count,
            create_time=job.create_time,
            input_file=uploaded.name,
        )

    @contextmanager
    def _readable_references(self, source: IO[bytes], where: str) -> Iterator[IO[bytes]]:
        """The staged request file as the Developer API can read it: every gs:// reference
        image replaced by a signed URL. A file without one (most) goes as it is; one with
        them is rewritten into a temporary file (on Cloud Functions, memory: request lines
        with references hold URIs, not image bytes, so it stays small)."""
        seekable = isinstance(source, io.IOBase) and source.seekable()
        if seekable:
            found = mentions_gcs(source)
            source.seek(0)
            if not found:
                yield source
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
            try:
                count = rewrite_request_lines(source, spool, url_for)
            except ValueError as exc:
                raise PermanentError(
                    f"signing the reference images of {where}: a staged line is not JSON ({exc})"
                ) from exc
            spool.seek(0)
            if count:
                log.info("reference images signed", extra={"references": count})
            yield spool

    # --- find, get, cancel -----------------------------------------------------------------

    def find(self, display_name: str) -> ProviderBatch | None:
        """The newest batch with this display name (list is newest first)."""
        with sdk_errors(f"listing batches to find {display_name}"):
            for job in self.client.batches.list(config={"page_size": LIST_PAGE_SIZE}):
                if job.display_name == display_name and job.name:
                    return self.get(job.name)
        return None

    def get(self, name: str) -> ProviderBatch:
        return batch_from_operation(self._get_operation(name))

    def _get_operation(self, name: str) -> dict[str, Any]:
        try:
            response = self._http.get(self.endpoint.url(name), headers=self.endpoint.headers)
        except TRANSPORT_ERRORS as exc:
            raise TransientError(f"getting {name}: {exc!r}") from exc
        if response.status_code != 200:
            raise _http_error(response, f"getting {name}")
        body = response.json()
        if not isinstance(body, dict):
            raise TransientError(f"getting {name}: expected a JSON object")
        return body

    def cancel(self, name: str) -> None:
        # Cancelling a finished batch may be refused rather than ignored (reference §6.2
        # leaves it open); either way the batch is past cancelling.
        with sdk_errors(f"cancelling {name}", finished_ok=True):
            self.client.batches.cancel(name=name)

    # --- the Files store --------------------------------------------------------------------

    def release_input(self, batch: ProviderBatch) -> None:
        if batch.input_file:
            self._delete_file(batch.input_file)

    def _delete_file(self, name: str) -> None:
        try:
            self.client.files.delete(name=name)
        except genai_errors.APIError as exc:
            # Already gone: a missing file answers 403, not 404 (field sheet §1 row 11).
            if exc.code in (403, 404):
                return
            raise read_error(_body(exc), f"deleting the request file {name}") from exc
        except TRANSPORT_ERRORS as exc:
            raise TransientError(f"deleting the request file {name}: {exc!r}") from exc
        log.info("request file deleted", extra={"input_file": name})

    def files_store_bytes(self) -> int:
        total = 0
        with sdk_errors("listing the Files store"):
            for entry in self.client.files.list(config={"page_size": LIST_PAGE_SIZE}):
                total += int(entry.size_bytes or 0)
        return total

    # --- results ---------------------------------------------------------------------------

    def iter_results(self, batch: ProviderBatch, *, start_line: int = 0) -> Iterator[ResultRow]:
        if batch.output == INLINE_OUTPUT:
            yield from self._inline_rows(batch, start_line)
            return
        if not batch.output:
            raise PermanentError(f"batch {batch.name} ({batch.state}) has no result file")
        file_id = batch.output.removeprefix("files/")
        url = self.endpoint.url(f"files/{file_id}:download")
        where = f"downloading {batch.output} of {batch.name}"
        try:
            with self._http.stream(
                "GET", url, params={"alt": "media"}, headers=self.endpoint.headers
            ) as response:
                if response.status_code != 200:
                    response.read()
                    if response.status_code == 404:
                        # A batch can report SUCCEEDED before its file is readable (§6.1).
                        raise TransientError(f"{where}: not found yet")
                    raise _http_error(response, where)
                # Chunks as they come off the socket: re-chunking to a fixed size would
                # copy every byte twice more before split_lines joins a line's pieces once.
                lines = split_lines(response.iter_bytes())
                rows = result_rows(lines, start_line=start_line, parse=parse_image_line)
                yield from without_signed_urls(rows)
        except TRANSPORT_ERRORS as exc:
            raise TransientError(f"{where}: {exc!r}") from exc

    def _inline_rows(self, batch: ProviderBatch, start_line: int) -> Iterator[ResultRow]:
        metadata = self._get_operation(batch.name).get("metadata") or {}
        holder = (metadata.get("output") or {}).get("inlinedResponses") or {}
        items = holder.get("inlinedResponses") or []
        for line_no, item in enumerate(items):
            if line_no < start_line:
                continue
            if not isinstance(item, dict):
                yield ResultRow(
                    line_no, None, malformed=f"inline response {line_no}: not an object"
                )
                continue
            row: dict[str, Any] = {"key": (item.get("metadata") or {}).get("key")}
            for field in ("response", "error"):
                if field in item:
                    row[field] = item[field]
            yield from without_signed_urls(iter([ResultRow(line_no, row)]))

    # --- synchronous lane ------------------------------------------------------------------

    def generate(self, *, model: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        bare = model.removeprefix("models/")
        where = f"generateContent on {bare}"

        def url_for(uri: str) -> str:
            bucket, name = split_gcs_uri(uri)
            return self.objects.signed_url(bucket, name, expires_in=self.reference_url_ttl)

        body, _ = with_readable_references(dict(request), url_for)
        try:
            response = self._http.post(
                self.endpoint.url(f"models/{bare}:generateContent"),
                json=body,
                headers=self.endpoint.headers,
            )
        except NOT_SENT_ERRORS as exc:
            raise TransientError(f"{where}: {exc!r}") from exc
        except TRANSPORT_ERRORS as exc:
            # The request went out: the service may be generating (and billing) the image.
            raise OutcomeUnknown(
                f"{where}: the request was sent and its answer lost ({exc!r}); "
                "calling again could pay twice"
            ) from exc
        if response.status_code != 200:
            refused = _http_error(response, where)
            refused.args = tuple(
                redact_signed_urls(a) if isinstance(a, str) else a for a in refused.args
            )
            raise refused
        body = response.json()
        if not isinstance(body, dict):
            raise TransientError(f"{where}: expected a JSON object")
        return body


# --- mapping -------------------------------------------------------------------------------


def batch_from_operation(op: Mapping[str, Any]) -> ProviderBatch:
    """A ProviderBatch from the raw Operation JSON of batches.get."""
    metadata: Mapping[str, Any] = op.get("metadata") or {}
    provider_state = str(metadata.get("state") or "BATCH_STATE_UNSPECIFIED")
    output_json: Mapping[str, Any] = metadata.get("output") or op.get("response") or {}
    output: str | None = None
    if output_json.get("responsesFile"):
        output = str(output_json["responsesFile"])
    elif "inlinedResponses" in output_json:
        output = INLINE_OUTPUT
    error = op.get("error") or metadata.get("error")
    stats: Mapping[str, Any] = metadata.get("batchStats") or {}
    count = stats.get("requestCount")
    input_file = (metadata.get("inputConfig") or {}).get("fileName")
    return ProviderBatch(
        name=str(op.get("name") or metadata.get("name") or ""),
        display_name=metadata.get("displayName"),
        state=batch_state(provider_state),
        provider_state=provider_state,
        error=_error_text(error) if error else None,
        output=output,
        request_count=int(count) if count is not None else None,
        create_time=parse_time(metadata.get("createTime")),
        end_time=parse_time(metadata.get("endTime")),
        input_file=str(input_file) if input_file else None,
    )


def _error_text(error: object) -> str:
    if isinstance(error, Mapping):
        code, status, message = error.get("code"), error.get("status"), error.get("message")
        head = " ".join(str(part) for part in (code, status) if part)
        return f"{head}: {message}" if head else str(message)
    return str(error)


def _state_text(state: object) -> str:
    value = getattr(state, "value", state)
    return str(value) if value else "JOB_STATE_UNSPECIFIED"


def _body(exc: genai_errors.APIError) -> classify.ErrorBody:
    # The SDK keeps the whole error body in `details`; the classification reads it there.
    return classify.error_body(exc.code, exc.details)


def _is_quota(exc: genai_errors.APIError) -> bool:
    return classify.is_quota(_body(exc))


def _refusal(exc: genai_errors.APIError, what: str, *, model: str | None = None) -> Exception:
    """A definite answer from the service: nothing was created."""
    return refusal(_body(exc), what, model=model)


def refusal(err: classify.ErrorBody, what: str, *, model: str | None = None) -> Exception:
    """The error a definite refusal of a create (or its upload) becomes."""
    if classify.is_quota(err):
        return classify.quota_error(err, what)
    if classify.is_auth(err):
        return classify.auth_error(err, what)
    if model is not None and classify.is_model_gone(err):
        return classify.model_error(err, what, model)
    text = f"{what}: {classify.describe(err)}"
    if 400 <= err.code < 500 and err.code != 408:
        return PermanentError(text)
    return TransientError(text + "; nothing was created")


@contextmanager
def create_errors(what: str, noun: str, *, model: str | None = None) -> Iterator[None]:
    """Translate the errors of a create call for the ledger: a definite refusal (quota,
    credentials, a model gone, other 4xx) means nothing was created; anything else leaves
    the `noun`'s existence open, to be reconciled by display name, never by creating again."""
    try:
        yield
    except genai_errors.APIError as exc:
        err = _body(exc)
        if classify.is_quota(err) or (400 <= err.code < 500 and err.code != 408):
            raise refusal(err, what, model=model) from exc
        raise ProviderOutcomeUnknown(
            f"{what}: {classify.describe(err)}; the {noun} may exist, reconcile by display name"
        ) from exc
    except CREATE_ERRORS as exc:
        # ValueError includes pydantic failing on a 200 answer: the batch exists then.
        raise ProviderOutcomeUnknown(
            f"{what}: {exc!r}; the {noun} may exist, reconcile by display name"
        ) from exc


@contextmanager
def sdk_errors(what: str, *, finished_ok: bool = False) -> Iterator[None]:
    """Translate the errors of an SDK call that reads or cancels into the error family.
    Never used around create: its failures need the ledger's finer mapping."""
    try:
        yield
    except genai_errors.APIError as exc:
        if finished_ok and exc.code == 400 and exc.status == "FAILED_PRECONDITION":
            return
        raise read_error(_body(exc), what) from exc
    except TRANSPORT_ERRORS as exc:
        raise TransientError(f"{what}: {exc!r}") from exc
    except ValueError as exc:
        raise PermanentError(f"{what}: {exc}") from exc


def read_error(err: classify.ErrorBody, what: str) -> Exception:
    """The error a failed read (get, list, download, a synchronous generate) becomes."""
    text = f"{what}: {classify.describe(err)}"
    if classify.is_quota(err):
        return classify.quota_error(err, what)
    if classify.is_auth(err):
        return classify.auth_error(err, what)
    if err.code == 404:
        return NotFound(text)
    if err.code == 408 or err.code >= 500:
        return TransientError(text)
    return PermanentError(text)


def _http_error(response: httpx.Response, what: str) -> Exception:
    try:
        body: object = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:200]}}
    return read_error(classify.error_body(response.status_code, body), what)


@contextmanager
def _uploadable(stream: IO[bytes]) -> Iterator[io.IOBase]:
    """A stream the SDK can upload from: it seeks to measure the size first. Seekable binary
    streams (a local file, a Cloud Storage reader) go as they are; on Cloud Functions /tmp
    is memory, so only streams that cannot seek are spooled there."""
    if isinstance(stream, io.IOBase) and stream.seekable() and "b" in getattr(stream, "mode", "b"):
        yield stream
        return
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, _SPOOL_CHUNK)
        spool.seek(0)
        yield cast(io.IOBase, spool)


# --- factory -------------------------------------------------------------------------------


def from_settings(settings: Settings, objects: ObjectStore) -> GeminiProvider:
    """The provider for settings.provider `gemini` (real API) or `emulator` (loopback)."""
    emulated = settings.provider is ProviderKind.EMULATOR
    if emulated and not settings.gemini_base_url:
        raise ConfigError(
            f"the emulator provider needs the emulator's URL: set {ENV_GEMINI_BASE_URL}"
        )
    # The emulator accepts any non-empty key unless told otherwise.
    api_key = settings.gemini_api_key or ("emulator" if emulated else None)
    if not api_key:
        raise ConfigError(f"the gemini provider needs an API key: set {ENV_GEMINI_API_KEY}")
    # No retry_options: the SDK then makes one attempt, and a create must never be resent
    # blindly (a lost answer would become a second paid batch).
    options = genai_types.HttpOptions(base_url=settings.gemini_base_url, timeout=SDK_TIMEOUT_MS)
    client = genai.Client(api_key=api_key, http_options=options)
    dynamic = settings.webhook_mode is WebhookMode.DYNAMIC and settings.webhook_url
    return GeminiProvider(
        client,
        objects,
        kind=settings.provider.value,
        webhook_url=settings.webhook_url if dynamic else None,
        reference_url_ttl=timedelta(hours=settings.reference_url_hours),
    )


__all__ = [
    "INLINE_OUTPUT",
    "Endpoint",
    "GeminiProvider",
    "batch_from_operation",
    "from_settings",
]
