"""Firestore behind the StateStore port.

Documents hold plain JSON values. `create` is a create-if-absent write (the once-only lock),
`update` a read-decide-write transaction that the library retries when Firestore aborts it
for contention, `set_many` a sequence of WriteBatch commits.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.document import DocumentReference
from google.cloud.firestore_v1.transaction import Transaction

from bananabatch.config import Settings
from bananabatch.core.ttl import TTL_FIELDS, ttl_instant
from bananabatch.errors import ConfigError, PermanentError, TransientError
from bananabatch.ports import Doc, Where

# Firestore's documented ceiling for writes in one commit.
MAX_WRITES_PER_COMMIT: Final = 500
# A commit request may not exceed 10 MiB; stay clear of it with room for protocol overhead.
MAX_BYTES_PER_COMMIT: Final = 8 * 1024 * 1024
# Firestore's limit on the values of an "in" filter.
MAX_IN_VALUES: Final = 30
# Documents asked for in one get_all call (BatchGetDocuments); a page of cache lookups.
MAX_GET_ALL: Final = 500
# The library's default is 5 attempts; a hot document (a job's counters) can see more
# contention than that when many collectors finish at once.
TRANSACTION_ATTEMPTS: Final = 20

_OPS: Final = frozenset({"==", "in", "<", "<=", ">", ">="})
_TRANSIENT: Final = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.Aborted,
    gexc.Unknown,
    gexc.RetryError,
)


class FirestoreStateStore:
    """StateStore on one Firestore database."""

    def __init__(self, client: firestore.Client) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> FirestoreStateStore:
        return cls(firestore_client(settings))

    # --- paths ---------------------------------------------------------------------------

    def _doc(self, path: str) -> DocumentReference:
        parts = _segments(path)
        if len(parts) % 2 != 0:
            raise PermanentError(
                f"state path {path!r}: expected a document path (an even number of "
                f"segments, like jobs/J), found {len(parts)} segment(s)"
            )
        return self._client.document(*parts)

    def _collection(self, path: str) -> firestore.CollectionReference:
        parts = _segments(path)
        if len(parts) % 2 != 1:
            raise PermanentError(
                f"state path {path!r}: expected a collection path (an odd number of "
                f"segments, like jobs or jobs/J/items), found {len(parts)} segment(s)"
            )
        return self._client.collection(*parts)

    # --- reads and writes ----------------------------------------------------------------

    def get(self, path: str) -> Doc | None:
        ref = self._doc(path)
        with _translated("get", path):
            snapshot = ref.get()
        return _from_firestore(snapshot.to_dict()) if snapshot.exists else None

    def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc]:
        parent = self._collection(collection)
        wanted = list(dict.fromkeys(ids))
        for doc_id in wanted:
            if not doc_id or "/" in doc_id:
                raise PermanentError(
                    f"get_many in {collection}: expected document ids without '/' and not "
                    f"empty; found {doc_id!r}"
                )
        found: dict[str, Doc] = {}
        # get_all is one BatchGetDocuments stream per call; pages keep each request small.
        for start in range(0, len(wanted), MAX_GET_ALL):
            refs = [parent.document(doc_id) for doc_id in wanted[start : start + MAX_GET_ALL]]
            with _translated("get_many", f"{collection}/{wanted[start]}"):
                for snapshot in self._client.get_all(refs):
                    if snapshot.exists:
                        found[snapshot.id] = _from_firestore(snapshot.to_dict())
        return found

    def create(self, path: str, doc: Mapping[str, Any]) -> bool:
        ref = self._doc(path)
        try:
            with _translated("create", path):
                ref.create(_encode_doc(doc, path))
        except _AlreadyExists:
            return False
        return True

    def create_many(self, collection: str, docs: Mapping[str, Mapping[str, Any]]) -> set[str]:
        parent = self._collection(collection)
        wanted = list(docs)
        for doc_id in wanted:
            if not doc_id or "/" in doc_id:
                raise PermanentError(
                    f"create_many in {collection}: expected document ids without '/' and not "
                    f"empty; found {doc_id!r}"
                )
        created: set[str] = set()
        # A transaction per page: its reads make the commit fail (and rerun) if another
        # writer created one of the documents meanwhile, so each create stays conditional,
        # in one round trip per page rather than one per document.
        for start in range(0, len(wanted), MAX_WRITES_PER_COMMIT):
            page = wanted[start : start + MAX_WRITES_PER_COMMIT]
            refs = {doc_id: parent.document(doc_id) for doc_id in page}
            encoded = {d: _encode_doc(docs[d], f"{collection}/{d}") for d in page}

            @firestore.transactional
            def create_absent(
                transaction: Transaction,
                refs: dict[str, DocumentReference] = refs,
                encoded: dict[str, Doc] = encoded,
            ) -> set[str]:
                present = {
                    snapshot.id
                    for snapshot in transaction.get_all(list(refs.values()))
                    if snapshot.exists
                }
                made = {doc_id for doc_id in refs if doc_id not in present}
                for doc_id in made:
                    transaction.create(refs[doc_id], encoded[doc_id])
                return made

            transaction = self._client.transaction(max_attempts=TRANSACTION_ATTEMPTS)
            with _translated("create_many", f"{collection}/{page[0]}"):
                try:
                    created |= create_absent(transaction)
                except ValueError as exc:
                    if isinstance(exc.__cause__, gexc.Aborted):
                        raise TransientError(
                            f"create_many in {collection}: transaction aborted "
                            f"{TRANSACTION_ATTEMPTS} times under contention"
                        ) from exc
                    raise
        return created

    def set(self, path: str, doc: Mapping[str, Any]) -> None:
        ref = self._doc(path)
        with _translated("set", path):
            ref.set(_encode_doc(doc, path))

    def update(self, path: str, fn: Callable[[Doc | None], Doc | None]) -> Doc | None:
        ref = self._doc(path)

        @firestore.transactional
        def read_decide_write(transaction: Transaction) -> Doc | None:
            # Reading through the transaction makes Firestore fail the commit (and the
            # library rerun this function) if another writer changed the document since.
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                current: Doc | None = None
                decided = fn(None)
            else:
                current = _from_firestore(snapshot.to_dict())
                # fn gets its own copy: mutating it must not change what we report back.
                decided = fn(_from_firestore(snapshot.to_dict()))
            if decided is None:
                return current
            encoded = _encode_doc(decided, path)
            transaction.set(ref, encoded)
            written: Doc = _from_firestore(encoded)
            return written

        transaction = self._client.transaction(max_attempts=TRANSACTION_ATTEMPTS)
        with _translated("update", path):
            try:
                result: Doc | None = read_decide_write(transaction)
            except ValueError as exc:
                # The library signals "aborted on every attempt" with a ValueError.
                if isinstance(exc.__cause__, gexc.Aborted):
                    raise TransientError(
                        f"update {path}: transaction aborted {TRANSACTION_ATTEMPTS} times "
                        "under contention"
                    ) from exc
                raise
        return result

    def set_many(self, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        # WriteBatch rather than BulkWriter: one synchronous commit per chunk, no background
        # threads (a Cloud Function's CPU is throttled once it returns), errors surface on
        # the call that caused them, and the emulators implement Commit but not BatchWrite.
        count = 0
        batch = self._client.batch()
        pending = 0
        pending_bytes = 0
        last_path = ""
        for path, doc in docs:
            encoded = _encode_doc(doc, path)
            size = len(path) + _approx_size(encoded)
            if pending and (
                pending >= MAX_WRITES_PER_COMMIT or pending_bytes + size > MAX_BYTES_PER_COMMIT
            ):
                with _translated("set_many", last_path):
                    batch.commit()
                count += pending
                batch, pending, pending_bytes = self._client.batch(), 0, 0
            batch.set(self._doc(path), encoded)
            pending += 1
            pending_bytes += size
            last_path = path
        if pending:
            with _translated("set_many", last_path):
                batch.commit()
            count += pending
        return count

    def query(
        self,
        collection: str,
        where: Sequence[Where] = (),
        *,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Doc]:
        # Built before the first next(), so a bad path or filter fails at the call.
        query = self._query(collection, where)
        if order_by is not None:
            query = query.order_by(order_by)
        if limit is not None:
            query = query.limit(limit)
        return _stream(query, collection)

    def count(self, collection: str, where: Sequence[Where] = ()) -> int:
        aggregation = self._query(collection, where).count(alias="n")
        with _translated("count", collection):
            results = aggregation.get()
        for group in results:
            for result in group:
                if result.alias == "n":
                    return int(result.value)
        raise PermanentError(f"count {collection}: the aggregation returned no 'n' result")

    def delete(self, path: str) -> None:
        ref = self._doc(path)
        with _translated("delete", path):
            ref.delete()

    def _query(self, collection: str, where: Sequence[Where]) -> Any:
        query: Any = self._collection(collection)
        for clause in where:
            op = clause.op
            if op not in _OPS:
                raise PermanentError(
                    f"query {collection}: unsupported operator {op!r} on "
                    f"{clause.field!r}; expected one of {sorted(_OPS)}"
                )
            value = clause.value
            if op == "in":
                value = _in_values(collection, clause)
            query = query.where(filter=FieldFilter(clause.field, op, _to_firestore(value, "")))
        return query


def _stream(query: Any, collection: str) -> Iterator[Doc]:
    with _translated("query", collection):
        for snapshot in query.stream():
            yield _from_firestore(snapshot.to_dict())


def firestore_client(settings: Settings) -> firestore.Client:
    """A client for settings.project and settings.firestore_database. With
    FIRESTORE_EMULATOR_HOST set, the library talks to the emulator unauthenticated."""
    if not settings.project:
        raise ConfigError("Firestore needs a project: set GOOGLE_CLOUD_PROJECT")
    return firestore.Client(project=settings.project, database=settings.firestore_database)


class _AlreadyExists(Exception):
    """Internal: a create() found the document already there."""


def _segments(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(part == "" for part in parts):
        raise PermanentError(f"state path {path!r}: expected non-empty segments separated by /")
    return parts


def _in_values(collection: str, clause: Where) -> list[Any]:
    if isinstance(clause.value, str | bytes) or not isinstance(clause.value, Iterable):
        raise PermanentError(
            f"query {collection}: 'in' on {clause.field!r} expects a list of values, "
            f"found {type(clause.value).__name__}"
        )
    values = list(clause.value)
    if not values or len(values) > MAX_IN_VALUES:
        raise PermanentError(
            f"query {collection}: 'in' on {clause.field!r} takes 1 to {MAX_IN_VALUES} "
            f"values, found {len(values)}"
        )
    return values


def _encode_doc(doc: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A document for Firestore: JSON values, and each TTL field as a timestamp.

    The port speaks JSON, so a TTL field arrives as an ISO 8601 string; Firestore's TTL
    policy ignores a field that is not a timestamp, so it is converted here, and a value
    that is not an aware ISO time is refused rather than stored as a TTL that never fires.
    """
    encoded: dict[str, Any] = _to_firestore(doc, path)
    for name in TTL_FIELDS & encoded.keys() if isinstance(encoded, dict) else ():
        encoded[name] = ttl_instant(encoded[name], name, path)
    return encoded


def _to_firestore(value: Any, path: str) -> Any:
    """Plain JSON types, with any Mapping turned into a dict and any sequence into a list."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PermanentError(f"document {path}: expected string field names, found {key!r}")
            out[key] = _to_firestore(item, path)
        return out
    if isinstance(value, list | tuple):
        return [_to_firestore(item, path) for item in value]
    raise PermanentError(
        f"document {path}: expected JSON values (dict, list, str, number, bool, null), "
        f"found {type(value).__name__}"
    )


def _from_firestore(value: Any) -> Any:
    """Firestore's Python types back to plain JSON-compatible values."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {key: _from_firestore(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_from_firestore(item) for item in value]
    if isinstance(value, datetime):  # DatetimeWithNanoseconds is a datetime
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, DocumentReference):
        return value.path
    if isinstance(value, firestore.GeoPoint):
        return {"latitude": value.latitude, "longitude": value.longitude}
    if hasattr(value, "to_map_value"):  # Vector
        return [float(item) for item in value]
    return str(value)


def _approx_size(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str).encode())


@contextmanager
def _translated(action: str, path: str) -> Iterator[None]:
    try:
        yield
    except gexc.AlreadyExists as exc:
        raise _AlreadyExists(path) from exc
    except _TRANSIENT as exc:
        raise TransientError(f"{action} {path}: Firestore is unavailable: {exc}") from exc
    except gexc.FailedPrecondition as exc:
        # In production this is most often a missing composite index; the message links it.
        raise PermanentError(f"{action} {path}: precondition failed: {exc}") from exc
    except gexc.GoogleAPICallError as exc:
        raise PermanentError(f"{action} {path}: Firestore refused: {exc}") from exc
