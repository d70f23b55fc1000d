"""Typed access to the records in the state store, and the conditional moves between states.

Every state change is a read-decide-write in one transaction: the state machine in
core/states.py decides, the store's `update` makes it atomic. A move reports whether this
call made it, which is how "exactly one completion message" and "never submit twice" are
enforced across concurrent or redelivered events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bananabatch.core import records as rec
from bananabatch.core.records import BatchRecord, ItemRecord, JobRecord, Record
from bananabatch.core.states import (
    BatchState,
    ItemState,
    JobState,
    can_advance_batch,
    can_advance_item,
    can_advance_job,
)
from bananabatch.errors import NotFound
from bananabatch.ports import Doc, StateStore, Where

R = TypeVar("R", bound=Record)
T = TypeVar("T")


@dataclass(frozen=True)
class Move(Generic[T]):
    """The outcome of a conditional move: the record as it stands, and whether we moved it."""

    record: T
    moved: bool


class Repo:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    # --- jobs -------------------------------------------------------------------------

    def create_job(self, job: JobRecord) -> bool:
        return self.store.create(rec.job_path(job.job_id), job.to_doc())

    def get_job(self, job_id: str) -> JobRecord | None:
        doc = self.store.get(rec.job_path(job_id))
        return JobRecord.model_validate(doc) if doc else None

    def require_job(self, job_id: str) -> JobRecord:
        job = self.get_job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id} in the state store", job_id=job_id)
        return job

    def list_jobs(self, *, limit: int | None = None) -> Iterator[JobRecord]:
        for doc in self.store.query("jobs", order_by="created_at", limit=limit):
            yield JobRecord.model_validate(doc)

    def move_job(
        self,
        job_id: str,
        target: JobState,
        *,
        expect: Iterable[JobState] | None = None,
        change: Callable[[JobRecord], Mapping[str, Any]] | None = None,
    ) -> Move[JobRecord]:
        """Move the job to target if the machine allows it (and it is in expect, if given)."""
        allowed = frozenset(expect) if expect is not None else None

        def decide(job: JobRecord) -> JobRecord | None:
            if allowed is not None and job.state not in allowed:
                return None
            if not can_advance_job(job.state, target):
                return None
            extra = dict(change(job)) if change else {}
            return job.model_copy(update={**extra, "state": target})

        return self._move(rec.job_path(job_id), JobRecord, decide)

    def patch_job(
        self, job_id: str, change: Callable[[JobRecord], Mapping[str, Any] | None]
    ) -> JobRecord:
        """Change fields of a job without a state move (counters, flags)."""

        def decide(job: JobRecord) -> JobRecord | None:
            fields = change(job)
            return job.model_copy(update=dict(fields)) if fields else None

        return self._move(rec.job_path(job_id), JobRecord, decide).record

    # --- items ------------------------------------------------------------------------

    def put_items(self, items: Iterable[ItemRecord]) -> int:
        return self.store.set_many(
            (rec.item_path(item.job_id, item.key), item.to_doc()) for item in items
        )

    def get_item(self, job_id: str, key: str) -> ItemRecord | None:
        doc = self.store.get(rec.item_path(job_id, key))
        return ItemRecord.model_validate(doc) if doc else None

    def get_items(self, job_id: str, keys: Iterable[str]) -> dict[str, ItemRecord]:
        """The job's items with these keys that exist, keyed by key, in as few reads as the
        store allows (a batch's keys at once, at submission)."""
        docs = self.store.get_many(rec.items_collection(job_id), keys)
        return {key: ItemRecord.model_validate(doc) for key, doc in docs.items()}

    def move_item(
        self,
        job_id: str,
        key: str,
        target: ItemState,
        *,
        expect: Iterable[ItemState],
        change: Mapping[str, Any] | None = None,
    ) -> Move[ItemRecord]:
        """Move one item to target if it is still in one of `expect` (a conditional write:
        of two workers racing for the same item, exactly one moves it)."""
        allowed = frozenset(expect)

        def decide(item: ItemRecord) -> ItemRecord | None:
            if item.state not in allowed or not can_advance_item(item.state, target):
                return None
            return item.model_copy(update={**(change or {}), "state": target})

        return self._move(rec.item_path(job_id, key), ItemRecord, decide)

    def items(
        self, job_id: str, *, where: Iterable[Where] = (), order_by: str | None = None
    ) -> Iterator[ItemRecord]:
        for doc in self.store.query(rec.items_collection(job_id), list(where), order_by=order_by):
            yield ItemRecord.model_validate(doc)

    def items_of_batch(self, batch: BatchRecord) -> dict[str, ItemRecord]:
        """The batch's items, keyed as its request file keys them (`<job>/<key>` in a
        shared batch of the batch window, pipeline/pack.py)."""
        where = [Where("batch_id", "==", batch.batch_id)]
        return {
            batch.request_key(job_id, item.key): item
            for job_id in batch.job_ids
            for item in self.items(job_id, where=where)
        }

    def count_items(self, job_id: str, state: ItemState) -> int:
        """Items of the job in state, counting those of batches whose item records do not
        exist yet (manifest only, see pipeline/materialize.py) as the PENDING they are."""
        count = self.store.count(rec.items_collection(job_id), [Where("state", "==", state.value)])
        if state is ItemState.PENDING:
            count += self.unmaterialized_count(job_id)
        return count

    def unmaterialized_batches(self, job_id: str) -> Iterator[BatchRecord]:
        """Batches of the job whose items exist only in their manifest."""
        where = [Where("job_id", "==", job_id), Where("items_materialized", "==", False)]
        for doc in self.store.query("batches", where):
            batch = BatchRecord.model_validate(doc)
            if batch.manifest_object is not None:
                yield batch

    def unmaterialized_count(self, job_id: str) -> int:
        return sum(batch.request_count for batch in self.unmaterialized_batches(job_id))

    # --- batches ----------------------------------------------------------------------

    def create_batch(self, batch: BatchRecord) -> bool:
        return self.store.create(rec.batch_path(batch.batch_id), batch.to_doc())

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        doc = self.store.get(rec.batch_path(batch_id))
        return BatchRecord.model_validate(doc) if doc else None

    def require_batch(self, batch_id: str) -> BatchRecord:
        batch = self.get_batch(batch_id)
        if batch is None:
            raise NotFound(f"no batch {batch_id} in the state store", batch_id=batch_id)
        return batch

    def batches(
        self,
        *,
        job_id: str | None = None,
        states: Iterable[BatchState] | None = None,
        limit: int | None = None,
    ) -> Iterator[BatchRecord]:
        where: list[Where] = []
        if job_id is not None:
            where.append(Where("job_id", "==", job_id))
        if states is not None:
            where.append(Where("state", "in", [s.value for s in states]))
        for doc in self.store.query("batches", where, order_by="created_at", limit=limit):
            yield BatchRecord.model_validate(doc)

    def count_batches(self, *, job_id: str | None = None, states: Iterable[BatchState]) -> int:
        where = [Where("state", "in", [s.value for s in states])]
        if job_id is not None:
            where.append(Where("job_id", "==", job_id))
        return self.store.count("batches", where)

    def move_batch(
        self,
        batch_id: str,
        target: BatchState,
        *,
        expect: Iterable[BatchState] | None = None,
        change: Callable[[BatchRecord], Mapping[str, Any]] | None = None,
    ) -> Move[BatchRecord]:
        allowed = frozenset(expect) if expect is not None else None

        def decide(batch: BatchRecord) -> BatchRecord | None:
            if allowed is not None and batch.state not in allowed:
                return None
            if not can_advance_batch(batch.state, target):
                return None
            extra = dict(change(batch)) if change else {}
            return batch.model_copy(update={**extra, "state": target})

        return self._move(rec.batch_path(batch_id), BatchRecord, decide)

    def patch_batch(
        self, batch_id: str, change: Callable[[BatchRecord], Mapping[str, Any] | None]
    ) -> BatchRecord:
        def decide(batch: BatchRecord) -> BatchRecord | None:
            fields = change(batch)
            return batch.model_copy(update=dict(fields)) if fields else None

        return self._move(rec.batch_path(batch_id), BatchRecord, decide).record

    # --- shared -----------------------------------------------------------------------

    def _move(self, path: str, model: type[R], decide: Callable[[R], R | None]) -> Move[R]:
        # fn may run several times under contention; only the last run's verdict counts.
        verdict: dict[str, bool] = {"moved": False}

        def fn(doc: Doc | None) -> Doc | None:
            verdict["moved"] = False
            if doc is None:
                raise NotFound(f"no document at {path}")
            new = decide(model.model_validate(doc))
            if new is None:
                return None
            verdict["moved"] = True
            return new.to_doc()

        after = self.store.update(path, fn)
        if after is None:
            raise NotFound(f"no document at {path}")
        return Move(model.model_validate(after), verdict["moved"])
