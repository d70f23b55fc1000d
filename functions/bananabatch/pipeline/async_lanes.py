"""The async-callback lanes' attempt (issue 20 points 3 and 4): what pipeline/lanes.py's
`serve` calls for a line routed to async-callback lanes, in place of a synchronous call.
The passes over the providers, the attempt ledger and the breakers are lanes.py's; the
settling of a task once its callback (or the tick's poll) says it ended is tasks.py's.
"""

from __future__ import annotations

from collections.abc import Callable

from bananabatch.core.records import ItemRecord
from bananabatch.core.states import ItemState
from bananabatch.errors import BananaError, ContentRefused, OutcomeUnknown
from bananabatch.log import get_logger
from bananabatch.pipeline import lanes, task_records
from bananabatch.pipeline.lanes import StagedSync, Tried
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)


def submit_task(
    rt: Runtime,
    item: ItemRecord,
    staged: StagedSync,
    lane_name: str,
    tried: Tried,
    before_call: Callable[[], None],
    paused_by: Callable[[Runtime, BananaError], bool],
) -> ItemRecord | None:
    """One attempt on an async-callback lane: claimed, submitted with the receiver's URL
    for its callback, its task remembered. The item stays SUBMITTED (returned so) and its
    task settles it (pipeline/tasks.py); failures before the task exists are the sync
    attempt's (a definite one fails over, an unknown one does not, a refusal is BLOCKED)."""
    job_id, key = item.job_id, item.key
    try:
        lane = rt.async_lane(lane_name)
    except BananaError as exc:
        tried.errors.append(f"{lane_name}: {exc}")
        return None
    before_call()
    n = lanes.claim_attempt(rt, job_id, key, lane_name)
    tried.called += 1
    request = staged.image_request(job_id, f"{job_id}/{key}@{n}")
    try:
        task_id = lane.submit(request, webhook_url=task_records.webhook_url(rt, lane_name))
    except ContentRefused as exc:
        lanes.finish_attempt(rt, job_id, key, n, lanes.REFUSED, str(exc))
        lanes.record_call(rt, lane_name, ok=True)
        return lanes.ended(
            rt, item, lane_name, ItemState.BLOCKED, str(exc), exc.usage, exc.finish_reason
        )
    except OutcomeUnknown as exc:
        return lanes.unknown_outcome(rt, item, lane_name, n, exc, tried)
    except BananaError as exc:
        return lanes.definite_refusal(rt, item, lane_name, n, exc, tried, paused_by)
    # Remembered first: from here the callback, or the tick's poll, settles the item.
    task_records.remember(rt, lane_name, task_id, job_id=job_id, key=key, attempt=n)
    lanes.finish_attempt(rt, job_id, key, n, lanes.TASK, task_id)
    lanes.record_call(rt, lane_name, ok=True)
    log.info("task submitted", extra={"lane": lane_name, "key": key, "task_id": task_id})
    return item.model_copy(
        update={"state": ItemState.SUBMITTED, "provider_lane": lane_name, "updated_at": rt.now()}
    )
