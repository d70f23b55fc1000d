"""Cloud Storage behind the ObjectStore port.

Reads and writes stream through the library's BlobReader/BlobWriter (ranged downloads and
resumable uploads), so memory is bounded by one chunk whatever the object's size.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import datetime, timedelta
from typing import IO, Any, Final

import google.auth.credentials
import google.auth.transport.requests
import google.cloud.storage as storage  # type: ignore[import-untyped]  # the library ships no py.typed
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import GoogleAuthError, TransportError
from google.cloud.storage.exceptions import (  # type: ignore[import-untyped]  # no py.typed
    DataCorruption,
    InvalidResponse,
)
from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]  # no py.typed
from google.oauth2 import service_account

from bananabatch.config import Settings
from bananabatch.core.limits import object_name_problem, unwritable_name
from bananabatch.errors import NotFound, PermanentError, TransientError
from bananabatch.ports import ObjectInfo

ENV_STORAGE_EMULATOR_HOST: Final = "STORAGE_EMULATOR_HOST"
# Resumable uploads need a multiple of 256 KiB; 8 MiB keeps memory small and round trips few.
DEFAULT_CHUNK_SIZE: Final = 8 * 1024 * 1024
_TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRORS: Final = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
)


class GcsObjectStore:
    """ObjectStore on Cloud Storage. `retry` is the library's retry policy for every call
    (tests pass a short one so an injected 503 surfaces quickly)."""

    # Each write waits tens of milliseconds on the network: intake stages two objects per
    # batch, which one thread would make the bottleneck of a million-line file.
    write_concurrency = 4

    def __init__(
        self,
        client: storage.Client,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        retry: Retry | None = DEFAULT_RETRY,
    ) -> None:
        self._client = client
        self._chunk_size = chunk_size
        self._retry = retry

    @classmethod
    def from_settings(cls, settings: Settings) -> GcsObjectStore:
        return cls(storage_client(settings))

    def uri(self, bucket: str, name: str) -> str:
        return f"gs://{bucket}/{name}"

    def stat(self, bucket: str, name: str) -> ObjectInfo | None:
        with _translated("stat", bucket, name):
            blob = self._client.bucket(bucket).get_blob(name, retry=self._retry)
        return None if blob is None else _info(blob)

    @contextmanager
    def _reader(self, bucket: str, name: str) -> Iterator[IO[bytes]]:
        blob = self._client.bucket(bucket).blob(name)
        with _translated("open_read", bucket, name):
            # Reloading pins the generation, so a concurrent overwrite cannot splice two
            # versions into one read, and an absent object fails here rather than mid-read.
            blob.reload(retry=self._retry)
            reader = blob.open("rb", chunk_size=self._chunk_size, retry=self._retry)
        # BlobReader has no peek(), so readline() would fetch byte by byte from its buffer;
        # a BufferedReader in front makes line iteration over a large result file cheap.
        stream = io.BufferedReader(reader, buffer_size=1024 * 1024)
        try:
            with _translated("read", bucket, name):
                yield stream
        finally:
            stream.close()

    def open_read(self, bucket: str, name: str) -> AbstractContextManager[IO[bytes]]:
        return self._reader(bucket, name)

    @contextmanager
    def _writer(
        self,
        bucket: str,
        name: str,
        content_type: str,
        metadata: Mapping[str, str] | None,
    ) -> Iterator[IO[bytes]]:
        _check_name(bucket, name)
        blob = self._client.bucket(bucket).blob(name)
        blob.metadata = dict(metadata) if metadata else None
        # A resumable upload only creates the object when its final chunk lands, which is
        # what close() sends; terminate() cancels the session so nothing appears.
        writer = blob.open(
            "wb",
            chunk_size=self._chunk_size,
            content_type=content_type,
            ignore_flush=True,
            retry=self._retry,
        )
        try:
            with _translated("write", bucket, name):
                yield writer
        except BaseException:
            _terminate_quietly(writer)
            raise
        with _translated("write", bucket, name):
            writer.close()

    def open_write(
        self,
        bucket: str,
        name: str,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> AbstractContextManager[IO[bytes]]:
        return self._writer(bucket, name, content_type, metadata)

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
        _check_name(bucket, name)
        blob = self._client.bucket(bucket).blob(name)
        blob.metadata = dict(metadata) if metadata else None
        try:
            with _translated("write", bucket, name):
                blob.upload_from_string(
                    data,
                    content_type=content_type,
                    if_generation_match=0 if if_absent else None,
                    retry=self._retry,
                )
        except _PreconditionFailed:
            return False
        return True

    def read_bytes(self, bucket: str, name: str) -> bytes:
        blob = self._client.bucket(bucket).blob(name)
        with _translated("read", bucket, name):
            data: bytes = blob.download_as_bytes(retry=self._retry)
        return data

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        # Pages are fetched lazily as the caller iterates; Cloud Storage returns names in
        # lexicographic (byte) order, which is the order the port promises.
        with _translated("list", bucket, prefix + "*"):
            pages = self._client.list_blobs(bucket, prefix=prefix or None, retry=self._retry)
            for blob in pages:
                yield _info(blob)

    def copy(self, src_bucket: str, src_name: str, dst_bucket: str, dst_name: str) -> None:
        _check_name(dst_bucket, dst_name)
        source = self._client.bucket(src_bucket).blob(src_name)
        target = self._client.bucket(dst_bucket).blob(dst_name)
        with _translated("copy", src_bucket, src_name):
            # rewrite, unlike copyTo, works for any size and across locations and storage
            # classes; large objects take several calls, each returning a resume token.
            token, _, _ = target.rewrite(source, retry=self._retry)
            while token is not None:
                token, _, _ = target.rewrite(source, token=token, retry=self._retry)

    def delete(self, bucket: str, name: str) -> None:
        blob = self._client.bucket(bucket).blob(name)
        try:
            with _translated("delete", bucket, name):
                blob.delete(retry=self._retry)
        except NotFound:
            return

    def signed_url(self, bucket: str, name: str, *, expires_in: timedelta) -> str:
        blob = self._client.bucket(bucket).blob(name)
        options: dict[str, Any] = {"version": "v4", "method": "GET", "expiration": expires_in}
        emulator = os.environ.get(ENV_STORAGE_EMULATOR_HOST)
        where = f"signing a URL for gs://{bucket}/{name}"
        try:
            if emulator:
                # The emulator checks no signature; a throwaway key still runs the library's
                # own V4 signing, and the URL points at the emulator so it can be read.
                options.update(credentials=_throwaway_signer(), api_access_endpoint=emulator)
            else:
                credentials = self._client._credentials
                if not isinstance(credentials, google.auth.credentials.Signing):
                    # Cloud Functions' metadata-server credentials hold no private key: the
                    # IAM signBlob API signs as the runtime service account, which needs
                    # roles/iam.serviceAccountTokenCreator on itself.
                    if not credentials.valid:
                        credentials.refresh(google.auth.transport.requests.Request())
                    options.update(
                        service_account_email=credentials.service_account_email,
                        access_token=credentials.token,
                    )
            url: str = blob.generate_signed_url(**options)
        except (GoogleAuthError, AttributeError, requests.RequestException) as exc:
            raise TransientError(
                f"{where}: {exc!r}; the runtime service account must be able to sign "
                "(roles/iam.serviceAccountTokenCreator on itself)"
            ) from exc
        return url


def _check_name(bucket: str, name: str) -> None:
    problem = object_name_problem(name)
    if problem is not None:
        raise PermanentError(unwritable_name(bucket, name, problem))


def storage_client(settings: Settings) -> storage.Client:
    """A client for settings.project; anonymous when STORAGE_EMULATOR_HOST points at an
    emulator (the library reads that variable itself)."""
    if os.environ.get(ENV_STORAGE_EMULATOR_HOST):
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]  # untyped __init__
        return storage.Client(project=settings.project, credentials=anonymous)
    return storage.Client(project=settings.project)


@functools.cache
def _throwaway_signer() -> service_account.Credentials:
    """Credentials with a fresh private key, for signing URLs the storage emulator serves."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "client_email": "storage-emulator@bananabatch.iam.gserviceaccount.com",
        "private_key": pem,
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    signer: service_account.Credentials = (
        service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    )
    return signer


class _PreconditionFailed(Exception):
    """Internal: an if_generation_match precondition did not hold (HTTP 412)."""


def _info(blob: Any) -> ObjectInfo:
    updated: datetime | None = blob.updated
    return ObjectInfo(
        bucket=blob.bucket.name,
        name=blob.name,
        size=int(blob.size or 0),
        content_type=blob.content_type,
        metadata=dict(blob.metadata or {}),
        generation=None if blob.generation is None else str(blob.generation),
        updated=updated,
    )


def _terminate_quietly(writer: Any) -> None:
    # The caller's exception is the one worth seeing; a failed cancel only leaves an
    # unfinished upload session, which Cloud Storage discards after a week.
    with suppress(gexc.GoogleAPIError, requests.RequestException, TransportError, InvalidResponse):
        writer.terminate()


def _from_status(action: str, where: str, exc: InvalidResponse) -> Exception:
    """The error family's member for a raw HTTP status the resumable-media layer raised."""
    status = getattr(exc.response, "status_code", None)
    if status == 412:
        return _PreconditionFailed(where)
    if status == 404:
        return NotFound(f"{action} {where}: expected an existing object, found none")
    if status in _TRANSIENT_STATUS:
        return TransientError(f"{action} {where}: Cloud Storage answered {status}")
    return PermanentError(f"{action} {where}: unexpected response {status}: {exc}")


@contextmanager
def _translated(action: str, bucket: str, name: str) -> Iterator[None]:
    """Turn library and transport errors into the pipeline's error family."""
    where = f"gs://{bucket}/{name}"
    try:
        yield
    except gexc.NotFound as exc:
        raise NotFound(f"{action} {where}: expected an existing object, found none") from exc
    except gexc.PreconditionFailed as exc:
        raise _PreconditionFailed(where) from exc
    except _TRANSIENT_ERRORS as exc:
        raise TransientError(f"{action} {where}: Cloud Storage answered {exc.code}") from exc
    except gexc.RetryError as exc:
        raise TransientError(f"{action} {where}: retries exhausted: {exc.cause}") from exc
    except InvalidResponse as exc:
        raise _from_status(action, where, exc) from exc
    except DataCorruption as exc:
        raise TransientError(f"{action} {where}: checksum mismatch in transfer") from exc
    except (requests.ConnectionError, requests.Timeout, TransportError) as exc:
        raise TransientError(f"{action} {where}: connection failed: {exc}") from exc
    except gexc.GoogleAPICallError as exc:
        raise PermanentError(f"{action} {where}: Cloud Storage refused: {exc}") from exc
