"""Async-callback tasks (issue 20 point 4): a task an AsyncImageLane accepted, from the moment
its id is known until its image is written, whichever signal comes first.

- The lane runner records every submitted task (`remember`), right after `submit` answered
  its id, under `lane_tasks/{lane}:{task_id}` with the item and the attempt it serves.
- The provider's signed webhook reaches the public receiver at the provider's sub-path
  (functions/main.py, `/replicate`), which verifies it with that provider's scheme and only
  publishes a `kind: "task"` message on the batch-done topic (`publish_done`): the receiver
  holds no state rights and no provider token.
- The batch-done consumer (`handle_done`) asks the lane for the task (a verified webhook can
  only make us look sooner at a task we created) and settles it.
- The tick polls the tasks whose callback has not come within `CALLBACK_GRACE`
  (`poll_overdue`): a lost callback costs at most a tick and the grace.

Settling is conditional (`pending` -> `done` in one transaction), so a duplicated callback,
a callback racing the tick, or a redelivered message settles a task once. What settling does
to the item is `settle_item`: the image written and the item SUCCEEDED, a content refusal
BLOCKED, any other failure FAILED, the job finalized when it was its last open item. The
runner that routes lines to async lanes may pass its own (failover on a failure that was not
billed is its decision, as for the sync lanes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Final

from bananabatch.core.records import ItemRecord
from bananabatch.core.states import ItemState
from bananabatch.errors import PermanentError, TransientError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import finalize
from bananabatch.pipeline.outcomes import image_location, write_image, write_thumbnail_if_decodable
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.task_records import (
    DONE,
    PENDING,
    WEBHOOK_PATHS,
    TaskRecord,
    open_tasks,
    remember,
    task_path,
    webhook_url,
)
from bananabatch.ports import TaskStatus

log = get_logger(__name__)

# What the lane runner uses: remember a task, list the open ones.
__all__ = [
    "CALLBACK_GRACE",
    "KIND",
    "WEBHOOK_PATHS",
    "TaskRecord",
    "check",
    "handle_done",
    "open_tasks",
    "poll_overdue",
    "publish_done",
    "remember",
    "settle_item",
    "webhook_url",
]

KIND: Final = "task"
SCHEMA_VERSION: Final = 1
# How long a task may go without its callback before the tick asks the provider.
CALLBACK_GRACE: Final = timedelta(minutes=2)


Settle = Callable[[Runtime, TaskRecord, TaskStatus], None]


# --- the receiver's half: no state, no provider token ---------------------------------------


def publish_done(rt: Runtime, lane: str, task_id: str, webhook_id: str) -> dict[str, Any]:
    """Announce a verified callback on the batch-done topic; touches no state."""
    message = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "lane": lane,
        "task_id": task_id,
        "webhook_id": webhook_id,
    }
    rt.bus.publish(
        rt.settings.topic_batch_done,
        json.dumps(message, separators=(",", ":")).encode(),
        {"kind": KIND, "lane": lane, "task_id": task_id, "source": "webhook"},
    )
    log.info("task callback delivered", extra={"lane": lane, "task_id": task_id})
    return {"status": "accepted", "task_id": task_id}


# --- the consumer and the tick -----------------------------------------------------------------


def handle_done(rt: Runtime, payload: Mapping[str, Any], settle: Settle | None = None) -> bool:
    """A `kind: "task"` message: look the task up at the provider and settle it. True when
    this call settled it."""
    lane, task_id = payload.get("lane"), payload.get("task_id")
    if not isinstance(lane, str) or not isinstance(task_id, str) or not lane or not task_id:
        raise PermanentError(f"task message: expected lane and task_id strings; found {payload!r}")
    doc = rt.state.get(task_path(lane, task_id))
    if doc is None:
        with labels(task_id=task_id):
            log.warning("callback for a task this deployment did not submit", extra={"lane": lane})
        return False
    return check(rt, TaskRecord.from_doc(doc), settle)


def poll_overdue(rt: Runtime, settle: Settle | None = None) -> int:
    """The tick's backstop: ask the provider about every open task whose callback has not
    come within CALLBACK_GRACE of its submission (or of the last look). Returns how many
    were settled."""
    settled = 0
    now = rt.now()
    for record in open_tasks(rt):
        last = record.checked_at or record.submitted_at
        if now - last < CALLBACK_GRACE:
            continue
        with labels(job_id=record.job_id, task_id=record.task_id):
            try:
                settled += check(rt, record, settle)
            except TransientError as exc:
                log.warning("task poll failed; next tick", extra={"error": str(exc)})
    return settled


def check(rt: Runtime, record: TaskRecord, settle: Settle | None = None) -> bool:
    """Ask the lane where the task stands; settle it once when it has ended."""
    if record.state != PENDING:
        return False
    status = rt.async_lane(record.lane).poll(record.task_id)
    if status.state == "pending":
        _touch(rt, record)
        return False
    if not _claim(rt, record):
        return False  # a duplicate callback or the tick got there first
    (settle or settle_item)(rt, record, status)
    return True


def _touch(rt: Runtime, record: TaskRecord) -> None:
    def mark(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if doc is None else {**doc, "checked_at": rt.now().isoformat()}

    rt.state.update(task_path(record.lane, record.task_id), mark)


def _claim(rt: Runtime, record: TaskRecord) -> bool:
    won = False

    def mark(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal won
        if doc is None or doc.get("state") != PENDING:
            won = False
            return doc
        won = True
        return {**doc, "state": DONE, "done_at": rt.now().isoformat()}

    rt.state.update(task_path(record.lane, record.task_id), mark)
    return won


# --- what an ended task does to its item ------------------------------------------------------


def settle_item(rt: Runtime, record: TaskRecord, status: TaskStatus) -> None:
    """Write the item's outcome: SUCCEEDED with its image, BLOCKED for a content refusal,
    FAILED otherwise; then finalize the job if nothing of it is open any more."""
    item = rt.repo.get_item(record.job_id, record.key)
    if item is None:
        log.error("task for an item that does not exist", extra={"key": record.key})
        return
    rt.repo.put_items([_outcome(rt, item, record, status)])
    if not open_tasks(rt, record.job_id):
        finalize.finalize_job_if_done(rt, record.job_id)


def _outcome(rt: Runtime, item: ItemRecord, record: TaskRecord, status: TaskStatus) -> ItemRecord:
    update: dict[str, Any] = {"updated_at": rt.now()}
    if "provider_lane" in ItemRecord.model_fields:
        update["provider_lane"] = record.lane
    if status.state == "succeeded" and status.result is not None:
        result = status.result
        mime = result.mime_type or "image/png"
        name, located = image_location(rt, item, mime)
        write_image(rt, item, name, result.image, mime)
        write_thumbnail_if_decodable(rt, item, result.image)
        update.update(located)
        update.update({"state": ItemState.SUCCEEDED, "reason": None})
        # The provider's own charge where it says it; otherwise the lane's flat price per
        # image that the estimate priced the line at.
        cost = result.cost_usd if result.cost_usd is not None else item.estimated_usd
        update["actual_usd"] = round(cost, 6)
        return item.model_copy(update=update)
    reason = status.error or f"{record.lane} task {record.task_id} failed"
    if status.refused:
        update.update(
            {"state": ItemState.BLOCKED, "reason": reason, "finish_reason": "content_policy"}
        )
    else:
        update.update({"state": ItemState.FAILED, "reason": reason})
        if not status.maybe_billed:
            update["actual_usd"] = 0.0
    return item.model_copy(update=update)
