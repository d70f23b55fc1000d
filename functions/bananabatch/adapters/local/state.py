"""StateStore on SQLite: one table of JSON documents keyed by (collection path, id).

One connection per store, shared by all threads behind a lock. SQLite admits one writer at
a time anyway, so per-thread connections would only add lock waits inside SQLite; a single
connection also makes ":memory:" behave exactly like a file (per-thread connections would
each see their own empty in-memory database). WAL mode lets another process (the CLI's
`status`) read while this one writes; busy_timeout makes writers from other processes wait
for each other instead of failing at once.

Filters follow Firestore's semantics: a filter only matches values of its own type (a string
range never matches numbers, `True` never equals `1`), and documents lacking the field never
match a filter or an order_by.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Final

from bananabatch.core.ttl import TTL_FIELDS, ttl_instant
from bananabatch.errors import PermanentError, TransientError
from bananabatch.ports import Doc, Where

#: Rows fetched per round trip while streaming a query; the lock is free between pages.
PAGE_SIZE: Final = 500
#: Documents written per transaction by set_many (Firestore's batch limit).
MAX_BATCH: Final = 500
#: Firestore allows at most 30 values in an `in` filter; refusing more here catches it early.
MAX_IN_VALUES: Final = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
-- Item and batch lookups filter on state within one collection ("jobs/J/items").
CREATE INDEX IF NOT EXISTS docs_by_state ON docs (collection, json_extract(data, '$.state'));
-- The items of one batch (every collection, materialization, retry): without it each
-- collected batch scanned its whole job, 68-113 ms per batch at 50k items, quadratic in
-- the job's size; with it 2.6 ms. Its entries end with the primary key, so the rows come
-- in id order, as the keyset paging asks.
CREATE INDEX IF NOT EXISTS docs_by_batch ON docs (collection, json_extract(data, '$.batch_id'));
-- A job's items in line order (its reports, in-file duplicates): each keyset page starts
-- where the last ended instead of sorting the whole job again, 10.1 s of a 50k-item
-- job's closing without it (quadratic in the job's size), 0.12 s with it.
CREATE INDEX IF NOT EXISTS docs_by_line ON docs (collection, json_extract(data, '$.line_no'));
"""
# Rows; rows per collection; rows per (collection, id), (collection, state) or
# (collection, batch).
_SEED_STATS = [
    ("docs", "docs", "1000000 1000 1"),
    ("docs", "docs_by_state", "1000000 1000 200"),
    ("docs", "docs_by_batch", "1000000 1000 50"),
    ("docs", "docs_by_line", "1000000 1000 1"),
]
_UPSERT = (
    "INSERT INTO docs (collection, id, data) VALUES (?, ?, ?) "
    "ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data"
)
_SIMPLE_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_ID = re.compile(r"__.*__")
_NUMBER_TYPES = "('integer', 'real')"


class SqliteStateStore:
    """StateStore on a SQLite file (or ":memory:")."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        target = str(path)
        if target != ":memory:" and not target.startswith("file:"):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self._lock = threading.RLock()
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        self._conn = sqlite3.connect(
            target, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        with self._errors(target):
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.executescript(_SCHEMA)
        self._seed_planner_statistics()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- StateStore ----------------------------------------------------------------------

    def get(self, path: str) -> Doc | None:
        collection, doc_id = _doc_path(path)
        with self._lock, self._errors(path):
            row = self._conn.execute(
                "SELECT data FROM docs WHERE collection = ? AND id = ?", (collection, doc_id)
            ).fetchone()
        return None if row is None else _decode(row[0])

    def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc]:
        _collection_path(collection)
        wanted = _checked_ids(collection, ids)
        found: dict[str, Doc] = {}
        for start in range(0, len(wanted), MAX_BATCH):
            page = wanted[start : start + MAX_BATCH]
            marks = ",".join("?" * len(page))
            with self._lock, self._errors(collection):
                rows = self._conn.execute(
                    f"SELECT id, data FROM docs WHERE collection = ? AND id IN ({marks})",  # noqa: S608
                    (collection, *page),
                ).fetchall()
            for doc_id, data in rows:
                found[doc_id] = _decode(data)
        return found

    def create(self, path: str, doc: Mapping[str, Any]) -> bool:
        collection, doc_id = _doc_path(path)
        raw = _encode(path, doc)
        with self._lock, self._errors(path):
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO docs (collection, id, data) VALUES (?, ?, ?)",
                (collection, doc_id, raw),
            )
            return cursor.rowcount == 1

    def create_many(self, collection: str, docs: Mapping[str, Mapping[str, Any]]) -> set[str]:
        _collection_path(collection)
        created: set[str] = set()
        # A batch's submission claims all its cacheable requests with one shared document, so a
        # mapping is encoded once per call, not once per id.
        encoded: dict[int, str] = {}
        # Sorted ids insert into neighbouring B-tree pages (content hashes arrive at random).
        pending = iter(sorted(_checked_ids(collection, docs)))
        while chunk := list(islice(pending, MAX_BATCH)):
            # One transaction per chunk: BEGIN IMMEDIATE holds the write lock, so the ids
            # found absent here are still absent when the rows are inserted.
            with self._transaction(collection) as conn:
                marks = ",".join("?" * len(chunk))
                present = {
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM docs WHERE collection = ? AND id IN ({marks})",  # noqa: S608
                        (collection, *chunk),
                    )
                }
                rows = []
                for doc_id in chunk:
                    if doc_id in present:
                        continue
                    doc = docs[doc_id]
                    raw = encoded.get(id(doc))
                    if raw is None:
                        raw = encoded[id(doc)] = _encode(f"{collection}/{doc_id}", doc)
                    rows.append((collection, doc_id, raw))
                conn.executemany("INSERT INTO docs (collection, id, data) VALUES (?, ?, ?)", rows)
                created.update(row[1] for row in rows)
        return created

    def set(self, path: str, doc: Mapping[str, Any]) -> None:
        collection, doc_id = _doc_path(path)
        raw = _encode(path, doc)
        with self._lock, self._errors(path):
            self._conn.execute(_UPSERT, (collection, doc_id, raw))

    def update(self, path: str, fn: Callable[[Doc | None], Doc | None]) -> Doc | None:
        collection, doc_id = _doc_path(path)
        with self._transaction(path) as conn:
            row = conn.execute(
                "SELECT data FROM docs WHERE collection = ? AND id = ?", (collection, doc_id)
            ).fetchone()
            new = fn(None if row is None else _decode(row[0]))
            if new is None:
                # A fresh copy: fn may have mutated the one it was given.
                return None if row is None else _decode(row[0])
            raw = _encode(path, new)
            conn.execute(_UPSERT, (collection, doc_id, raw))
            return _decode(raw)

    def set_many(self, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        written = 0
        pending = iter(docs)
        while chunk := list(islice(pending, MAX_BATCH)):
            rows = [(*_doc_path(path), _encode(path, doc)) for path, doc in chunk]
            with self._transaction(chunk[0][0]) as conn:
                conn.executemany(_UPSERT, rows)
            written += len(rows)
        return written

    def query(
        self,
        collection: str,
        where: Sequence[Where] = (),
        *,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Doc]:
        _collection_path(collection)
        if limit is not None and limit < 0:
            raise PermanentError(f"query of {collection}: limit must be >= 0, found {limit}")
        clauses, params = _compile(collection, where)
        sort_expr = None
        if order_by is not None:
            path = _json_path(collection, order_by)
            sort_expr = f"json_extract(data, {path})"
            clauses.append(f"json_type(data, {path}) IS NOT NULL")
        # Validation happens above, eagerly; only the paging is lazy.
        return self._stream(collection, clauses, params, sort_expr, limit)

    def count(self, collection: str, where: Sequence[Where] = ()) -> int:
        _collection_path(collection)
        clauses, params = _compile(collection, where)
        with self._lock, self._errors(collection):
            row = self._conn.execute(
                f"SELECT COUNT(*) FROM docs WHERE {' AND '.join(clauses)}",  # noqa: S608
                params,
            ).fetchone()
        return int(row[0])

    def delete(self, path: str) -> None:
        collection, doc_id = _doc_path(path)
        with self._lock, self._errors(path):
            self._conn.execute(
                "DELETE FROM docs WHERE collection = ? AND id = ?", (collection, doc_id)
            )

    # --- internals -----------------------------------------------------------------------

    def _seed_planner_statistics(self) -> None:
        """Without statistics SQLite prefers scanning a whole collection by primary key to
        an index; plausible numbers fix that until a real ANALYZE replaces them. A store
        made before an index existed gets that index's numbers on opening."""

        def unseeded() -> list[tuple[str, str, str]]:
            if not self._conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'"
            ).fetchone():
                return list(_SEED_STATS)
            have = {row[0] for row in self._conn.execute("SELECT idx FROM sqlite_stat1")}
            return [row for row in _SEED_STATS if row[1] not in have]

        # Checked before taking the write lock: a second process (the CLI's `status`) must
        # be able to open the store while the first holds a write transaction.
        with self._lock, self._errors("planner statistics"):
            if not unseeded():
                return
        with self._transaction("planner statistics") as conn:
            missing = unseeded()
            if len(missing) == len(_SEED_STATS):
                conn.execute("ANALYZE docs")  # creates sqlite_stat1; real numbers if any rows
                missing = unseeded()
            if not missing:
                return
            conn.executemany("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", missing)
            conn.execute("ANALYZE sqlite_schema")  # reload what the planner uses

    def _stream(
        self,
        collection: str,
        clauses: list[str],
        params: list[Any],
        sort_expr: str | None,
        limit: int | None,
    ) -> Iterator[Doc]:
        remaining = limit
        # Keyset paging: each page is its own statement, so no cursor stays open (and no
        # lock is held) while the caller works on the rows we yield.
        last: tuple[Any, str] | None = None
        while remaining is None or remaining > 0:
            page = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            page_clauses, page_params = list(clauses), list(params)
            if last is not None and sort_expr is None:
                page_clauses.append("id > ?")
                page_params.append(last[1])
            elif last is not None and last[0] is None:
                # NULLs sort first: the rest of the NULLs by id, then every non-NULL.
                e = sort_expr
                page_clauses.append(f"(({e} IS NULL AND id > ?) OR {e} IS NOT NULL)")
                page_params.append(last[1])
            elif last is not None:
                # `e >= ?` on its own is what lets an index on the expression start the page
                # at the last key; (e, id) > (?, ?) as one condition scans from the start.
                e = sort_expr
                page_clauses.append(f"{e} >= ? AND ({e} > ? OR id > ?)")
                page_params.extend([last[0], last[0], last[1]])
            order = "id" if sort_expr is None else f"{sort_expr}, id"
            select_key = "NULL" if sort_expr is None else sort_expr
            sql = (
                f"SELECT {select_key}, id, data FROM docs "  # noqa: S608
                f"WHERE {' AND '.join(page_clauses)} ORDER BY {order} LIMIT {page}"
            )
            with self._lock, self._errors(collection):
                rows = self._conn.execute(sql, page_params).fetchall()
            for _key, _id, data in rows:
                yield _decode(data)
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < page:
                return
            last = (rows[-1][0], rows[-1][1])

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors(what):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if "locked" in message or "busy" in message:
                raise TransientError(
                    f"state store {self.path}, {what}: database stayed locked: {message}"
                ) from exc
            raise PermanentError(f"state store {self.path}, {what}: {message}") from exc


# --- paths, encoding, filters ------------------------------------------------------------


def _segments(path: str) -> list[str]:
    segments = path.split("/")
    bad = [s for s in segments if s in ("", ".", "..") or _RESERVED_ID.fullmatch(s)]
    if bad:
        raise PermanentError(
            f"path {path!r}: expected '/'-separated non-empty ids, none '.', '..' or "
            f"'__x__'; found {bad[0]!r}"
        )
    return segments


def _doc_path(path: str) -> tuple[str, str]:
    segments = _segments(path)
    if len(segments) % 2:
        raise PermanentError(
            f"document path {path!r}: expected an even number of segments "
            f"(collection/id[/collection/id]), found {len(segments)}"
        )
    return "/".join(segments[:-1]), segments[-1]


def _checked_ids(collection: str, ids: Iterable[str]) -> list[str]:
    """Distinct document ids, each checked as _segments checks a path segment. get_many
    is called with hundreds of ids at a time, so the checks run over all of them at once
    and look at single ids only to name a bad one."""
    wanted = list(dict.fromkeys(ids))
    # Delimited by NUL, every rule is one string search over all ids; a hit (even a false
    # one, from an id holding NUL) only sends them through the exact per-id check.
    joined = "\x00" + "\x00".join(wanted) + "\x00"
    if (
        "/" in joined
        or "\x00__" in joined
        or "\x00\x00" in joined
        or "\x00.\x00" in joined
        or "\x00..\x00" in joined
    ):
        for doc_id in wanted:
            if (
                not doc_id
                or "/" in doc_id
                or doc_id in (".", "..")
                or _RESERVED_ID.fullmatch(doc_id) is not None
            ):
                raise PermanentError(
                    f"get_many in {collection}: expected document ids without '/', none "
                    f"empty, '.', '..' or '__x__'; found {doc_id!r}"
                )
    return wanted


def _collection_path(path: str) -> str:
    segments = _segments(path)
    if len(segments) % 2 == 0:
        raise PermanentError(
            f"collection path {path!r}: expected an odd number of segments "
            f"(collection[/id/collection]), found {len(segments)}"
        )
    return path


def _encode(path: str, doc: Mapping[str, Any]) -> str:
    if not isinstance(doc, Mapping):
        raise PermanentError(f"document {path}: expected a mapping, found {type(doc).__name__}")
    plain = dict(doc)
    # SQLite's timestamp form is the UTC ISO string, the form Firestore's reads give back.
    for name in TTL_FIELDS & plain.keys():
        instant = ttl_instant(plain[name], name, path)
        plain[name] = None if instant is None else instant.isoformat()
    try:
        return json.dumps(plain, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"document {path}: expected JSON-compatible values: {exc}") from exc


def _decode(raw: str) -> Doc:
    doc: Doc = json.loads(raw)
    return doc


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_path(collection: str, field: str) -> str:
    """The SQL literal of a JSON path for a Firestore field path ("a.b" is nested)."""
    parts = field.split(".")
    if not field or any(not p or '"' in p for p in parts):
        raise PermanentError(
            f"query of {collection}: field path {field!r} must be '.'-separated non-empty "
            "names without '\"'"
        )
    # A literal (not a bound parameter) so SQLite can match the expression index.
    return _sql_text(
        "$" + "".join(f".{p}" if _SIMPLE_FIELD.fullmatch(p) else f'."{p}"' for p in parts)
    )


def _compile(collection: str, where: Sequence[Where]) -> tuple[list[str], list[Any]]:
    clauses = ["collection = ?"]
    params: list[Any] = [collection]
    for condition in where:
        path = _json_path(collection, condition.field)
        value_expr = f"json_extract(data, {path})"
        type_expr = f"json_type(data, {path})"
        if condition.op == "==":
            clause, clause_params = _equals(
                collection, condition, value_expr, type_expr, condition.value
            )
        elif condition.op == "in":
            values = condition.value
            if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
                raise PermanentError(
                    f"query of {collection}: 'in' on {condition.field} expects a list, "
                    f"found {type(values).__name__}"
                )
            values = list(values)
            if not 1 <= len(values) <= MAX_IN_VALUES:
                raise PermanentError(
                    f"query of {collection}: 'in' on {condition.field} expects 1 to "
                    f"{MAX_IN_VALUES} values, found {len(values)}"
                )
            parts = [_equals(collection, condition, value_expr, type_expr, v) for v in values]
            clause = "(" + " OR ".join(p[0] for p in parts) + ")"
            clause_params = [param for p in parts for param in p[1]]
        elif condition.op in ("<", "<=", ">", ">="):
            clause, clause_params = _range(collection, condition, value_expr, type_expr)
        else:
            raise PermanentError(
                f"query of {collection}: operator {condition.op!r} on {condition.field} is not "
                "one of ==, in, <, <=, >, >="
            )
        clauses.append(clause)
        params.extend(clause_params)
    return clauses, params


def _equals(
    collection: str, condition: Where, value_expr: str, type_expr: str, value: Any
) -> tuple[str, list[Any]]:
    if value is None:
        return f"{type_expr} = 'null'", []
    if isinstance(value, bool):
        return f"{type_expr} = ?", ["true" if value else "false"]
    if isinstance(value, int | float):
        return f"({value_expr} = ? AND {type_expr} IN {_NUMBER_TYPES})", [value]
    if isinstance(value, str):
        return f"({value_expr} = ? AND {type_expr} = 'text')", [value]
    raise _bad_value(collection, condition, value)


def _range(
    collection: str, condition: Where, value_expr: str, type_expr: str
) -> tuple[str, list[Any]]:
    value = condition.value
    op = condition.op
    if isinstance(value, bool):
        # json_extract gives booleans as 0/1; the type test keeps numbers out.
        return f"({value_expr} {op} ? AND {type_expr} IN ('true', 'false'))", [int(value)]
    if isinstance(value, int | float):
        return f"({value_expr} {op} ? AND {type_expr} IN {_NUMBER_TYPES})", [value]
    if isinstance(value, str):
        return f"({value_expr} {op} ? AND {type_expr} = 'text')", [value]
    raise _bad_value(collection, condition, value)


def _bad_value(collection: str, condition: Where, value: Any) -> PermanentError:
    return PermanentError(
        f"query of {collection}: {condition.field} {condition.op} expects a str, number or "
        f"bool{' or None' if condition.op in ('==', 'in') else ''}, found {type(value).__name__}"
    )
