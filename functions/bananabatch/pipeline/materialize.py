"""Batch items from manifests: a batch-lane line has no item record until its batch is
about to be submitted, cancelled or rejected (pipeline/intake/__init__.py says why); this
makes them. On submission, pipeline/claims.py first sets apart the lines another job's
request in flight (or the cache) serves: those get items of their own, and are skipped here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bananabatch.core.manifest import LANE_BATCH, ManifestEntry, decode_entry, item_from_entry
from bananabatch.core.records import BatchRecord, ItemRecord
from bananabatch.core.states import ITEM_TERMINAL, ItemState
from bananabatch.errors import NotFound, PermanentError
from bananabatch.pipeline.runtime import Runtime

MATERIALIZE_FLUSH = 500


def materialize_items(
    rt: Runtime,
    batch: BatchRecord,
    state: ItemState,
    *,
    reason: str | None = None,
    only_absent: bool = False,
    skip: Collection[str] | None = None,
) -> int:
    """Make the batch's items exist and stand in `state`; returns how many were written.

    Items named in the batch's manifest and not yet recorded are created in `state` (with
    `reason`). Existing items of the batch that are not terminal move to `state` too,
    unless only_absent; terminal items are never touched, so a redelivered or reconciled
    call cannot undo what a collector recorded. A batch without a manifest (a retry batch)
    just has its existing open items moved. Lines set apart from the batch at submission
    (pipeline/claims.py: `skip`, else every key whose item is not the batch's) are neither
    created nor moved.

    Callers run this while nothing else writes the batch's items: on the claim
    QUEUED -> SUBMITTING before the create call, or before a QUEUED batch is cancelled or
    rejected. It must complete before the batch can reach the provider or a terminal
    state, because the collector reads items, not manifests. Idempotent.
    """
    target = _Target(state, rt.now(), reason, only_absent)
    existing = rt.repo.items_of_batch(batch)
    writer = _Writer(rt)
    if batch.manifest_object is not None:
        entries = list(manifest_entries(rt, batch, batch.manifest_object))
        if skip is None:
            skip = set_apart(batch, rt.repo.get_items(batch.job_id, [e.key for e in entries]))
        for entry in entries:
            if entry.key in skip:
                continue
            current = existing.pop(entry.key, None)
            writer.add(target.created(entry, batch) if current is None else target.moved(current))
    for item in existing.values():
        writer.add(target.moved(item))
    written = writer.flush()
    if batch.manifest_object is not None and not batch.items_materialized:
        rt.repo.patch_batch(
            batch.batch_id,
            lambda b: None if b.items_materialized else {"items_materialized": True},
        )
    return written


def set_apart(batch: BatchRecord, existing: Mapping[str, ItemRecord]) -> set[str]:
    """The keys, among existing items of the batch's lines, set apart from it at an earlier
    submission (served by the cache or another job's request, or paid in a batch of their
    own: pipeline/claims.py and pipeline/inflight.py)."""
    return {
        key
        for key, item in existing.items()
        if item.batch_id != batch.batch_id or item.lane not in (None, LANE_BATCH)
    }


@dataclass(frozen=True)
class _Target:
    """Where materialize_items puts the batch's items."""

    state: ItemState
    now: datetime
    reason: str | None
    only_absent: bool

    def created(self, entry: ManifestEntry, batch: BatchRecord) -> ItemRecord:
        return item_from_entry(entry, batch, self.state, self.now, reason=self.reason)

    def moved(self, item: ItemRecord) -> ItemRecord | None:
        if self.only_absent or item.state in ITEM_TERMINAL or item.state is self.state:
            return None
        update: dict[str, Any] = {"state": self.state, "updated_at": self.now}
        if self.reason is not None:
            update["reason"] = self.reason
        return item.model_copy(update=update)


class _Writer:
    """Item records written MATERIALIZE_FLUSH at a time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.pending: list[ItemRecord] = []
        self.written = 0

    def add(self, item: ItemRecord | None) -> None:
        if item is None:
            return
        self.pending.append(item)
        if len(self.pending) >= MATERIALIZE_FLUSH:
            self.flush()

    def flush(self) -> int:
        if self.pending:
            self.written += self.rt.repo.put_items(self.pending)
            self.pending.clear()
        return self.written


def manifest_entries(rt: Runtime, batch: BatchRecord, name: str) -> Iterator[ManifestEntry]:
    where = f"{name} of batch {batch.batch_id}"
    try:
        with rt.objects.open_read(rt.settings.results_bucket, name) as stream:
            for number, raw in enumerate(stream, start=1):
                if raw.strip():
                    yield decode_entry(raw, where=f"{where}, line {number}")
    except NotFound as exc:
        raise PermanentError(
            f"manifest {where} is gone: expected the {batch.request_count} items of the batch "
            "in it",
            job_id=batch.job_id,
            batch_id=batch.batch_id,
        ) from exc
