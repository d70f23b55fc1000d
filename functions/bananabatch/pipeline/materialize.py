"""Batch items from manifests: a batch-lane line has no item record until its batch is
about to be submitted, cancelled or rejected (pipeline/intake.py says why); this makes
them.
"""

from __future__ import annotations

from typing import Any

from bananabatch.core.manifest import decode_entry, item_from_entry
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
) -> int:
    """Make the batch's items exist and stand in `state`; returns how many were written.

    Items named in the batch's manifest and not yet recorded are created in `state` (with
    `reason`). Existing items of the batch that are not terminal move to `state` too,
    unless only_absent; terminal items are never touched, so a redelivered or reconciled
    call cannot undo what a collector recorded. A batch without a manifest (a retry batch)
    just has its existing open items moved.

    Callers run this while nothing else writes the batch's items: on the claim
    QUEUED -> SUBMITTING before the create call, or before a QUEUED batch is cancelled or
    rejected. It must complete before the batch can reach the provider or a terminal
    state, because the collector reads items, not manifests. Idempotent.
    """
    now = rt.now()
    existing = rt.repo.items_of_batch(batch)
    written = 0
    pending: list[ItemRecord] = []

    def moved(item: ItemRecord) -> ItemRecord | None:
        if only_absent or item.state in ITEM_TERMINAL or item.state is state:
            return None
        update: dict[str, Any] = {"state": state, "updated_at": now}
        if reason is not None:
            update["reason"] = reason
        return item.model_copy(update=update)

    def add(item: ItemRecord | None) -> None:
        nonlocal written
        if item is None:
            return
        pending.append(item)
        if len(pending) >= MATERIALIZE_FLUSH:
            written += rt.repo.put_items(pending)
            pending.clear()

    if batch.manifest_object is not None:
        results = rt.settings.results_bucket
        where = f"{batch.manifest_object} of batch {batch.batch_id}"
        try:
            with rt.objects.open_read(results, batch.manifest_object) as stream:
                for number, raw in enumerate(stream, start=1):
                    if not raw.strip():
                        continue
                    entry = decode_entry(raw, where=f"{where}, line {number}")
                    current = existing.pop(entry.key, None)
                    if current is None:
                        add(item_from_entry(entry, batch, state, now, reason=reason))
                    else:
                        add(moved(current))
        except NotFound as exc:
            raise PermanentError(
                f"manifest {where} is gone: expected the {batch.request_count} items of "
                "the batch in it",
                job_id=batch.job_id,
                batch_id=batch.batch_id,
            ) from exc
    for item in existing.values():
        add(moved(item))
    if pending:
        written += rt.repo.put_items(pending)
    if batch.manifest_object is not None and not batch.items_materialized:
        rt.repo.patch_batch(
            batch.batch_id,
            lambda b: None if b.items_materialized else {"items_materialized": True},
        )
    return written
