"""One attempt of an item on one provider, whatever the lane's kind (issue 20 points 3 and
4): what pipeline/lanes.py's `serve` calls for each provider of its passes.

Every attempt is the same up to the provider's answer: the lane is set up, the rate limit
waited for, the attempt claimed in the ledger before the call, and a refusal, an unknown
outcome or a definite failure handled alike (lanes.py's outcome helpers). The kind says
only what the call is and what its answer means:

- a synchronous lane (`generate`) answers with the image: the item ends SUCCEEDED;
- an async-callback lane (`submit`, with the receiver's URL for its callback) answers with
  a task id: the task is remembered first, the item stays SUBMITTED, and its callback or
  the tick's poll settles it (pipeline/tasks.py).
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
from bananabatch.ports import ImageRequest
from bananabatch.providers.gemini_standard import AnsweredWithoutImage

log = get_logger(__name__)

#: What the provider's answer makes of the item (the ledger and the breaker told too),
#: given the attempt's number.
Answered = Callable[[int], ItemRecord]
#: A lane's call: sends the request, and returns what its answer makes of the item.
Send = Callable[[ImageRequest], Answered]


def attempt(
    rt: Runtime,
    item: ItemRecord,
    staged: StagedSync,
    lane_name: str,
    tried: Tried,
    before_call: Callable[[], None],
    paused_by: Callable[[Runtime, BananaError], bool],
) -> ItemRecord | None:
    """One attempt on one provider: the item's record once the provider answered (final,
    or SUBMITTED to an async lane's task), or None to go on to the next."""
    job_id, key = item.job_id, item.key
    try:
        send = (_submit if staged.kind == lanes.ASYNC_KIND else _generate)(
            rt, item, staged, lane_name
        )
    except BananaError as exc:
        tried.errors.append(f"{lane_name}: {exc}")
        return None
    before_call()
    n = lanes.claim_attempt(rt, job_id, key, lane_name)
    tried.called += 1
    try:
        answered = send(staged.image_request(job_id, f"{job_id}/{key}@{n}"))
    except ContentRefused as exc:
        lanes.finish_attempt(rt, job_id, key, n, lanes.REFUSED, str(exc))
        lanes.record_call(rt, lane_name, ok=True)
        return lanes.ended(
            rt, item, lane_name, ItemState.BLOCKED, str(exc), exc.usage, exc.finish_reason
        )
    except AnsweredWithoutImage as exc:
        lanes.finish_attempt(rt, job_id, key, n, lanes.ANSWERED, str(exc))
        lanes.record_call(rt, lane_name, ok=True)
        return lanes.ended(
            rt, item, lane_name, ItemState.FAILED, str(exc), exc.usage, exc.outcome.finish_reason
        )
    except OutcomeUnknown as exc:
        return lanes.unknown_outcome(rt, item, lane_name, n, exc, tried)
    except BananaError as exc:
        return lanes.definite_refusal(rt, item, lane_name, n, exc, tried, paused_by)
    return answered(n)


def _generate(rt: Runtime, item: ItemRecord, staged: StagedSync, lane_name: str) -> Send:
    """A synchronous lane's call: the answer is the image, and the item ends with it."""
    lane = rt.sync_lane(lane_name)

    def send(request: ImageRequest) -> Answered:
        result = lane.generate(request, timeout_s=lanes.timeout_s(rt, lane_name))

        def answered(n: int) -> ItemRecord:
            lanes.finish_attempt(rt, item.job_id, item.key, n, lanes.SUCCEEDED)
            lanes.record_call(rt, lane_name, ok=True)
            return lanes.succeeded(rt, item, staged, lane_name, result)

        return answered

    return send


def _submit(rt: Runtime, item: ItemRecord, _staged: StagedSync, lane_name: str) -> Send:
    """An async-callback lane's call: the answer is a task, remembered before anything
    else (from then on its callback, or the tick's poll, settles the item)."""
    lane = rt.async_lane(lane_name)

    def send(request: ImageRequest) -> Answered:
        task_id = lane.submit(request, webhook_url=task_records.webhook_url(rt, lane_name))

        def answered(n: int) -> ItemRecord:
            task_records.remember(
                rt, lane_name, task_id, job_id=item.job_id, key=item.key, attempt=n
            )
            lanes.finish_attempt(rt, item.job_id, item.key, n, lanes.TASK, task_id)
            lanes.record_call(rt, lane_name, ok=True)
            log.info(
                "task submitted", extra={"lane": lane_name, "key": item.key, "task_id": task_id}
            )
            return item.model_copy(
                update={
                    "state": ItemState.SUBMITTED,
                    "provider_lane": lane_name,
                    "updated_at": rt.now(),
                }
            )

        return answered

    return send
