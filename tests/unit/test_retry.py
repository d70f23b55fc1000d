"""Which failures earn another attempt: retry.is_retryable."""

from __future__ import annotations

import pytest

from bananabatch.core.records import ItemRecord
from bananabatch.core.states import ItemState
from bananabatch.pipeline import retry


def _item(state: ItemState, *, code: int | None = None, reason: str | None = None) -> ItemRecord:
    return ItemRecord(
        job_id="j", key="k", line_no=1, state=state, model="m", error_code=code, reason=reason
    )


@pytest.mark.parametrize(
    ("item", "retryable"),
    [
        (_item(ItemState.FAILED, code=13, reason="INTERNAL"), True),
        (_item(ItemState.FAILED, code=14, reason="UNAVAILABLE"), True),
        (_item(ItemState.FAILED, code=4, reason="DEADLINE_EXCEEDED"), True),
        (_item(ItemState.FAILED, code=503, reason="unavailable"), True),
        (_item(ItemState.FAILED, code=3, reason="invalid request"), False),
        (_item(ItemState.FAILED, code=400, reason="invalid request"), False),
        (_item(ItemState.FAILED, reason=retry.MISSING_SUCCEEDED), True),
        (_item(ItemState.FAILED, reason=retry.NO_OUTPUT_PREFIX + "EXPIRED"), True),
        (_item(ItemState.FAILED, reason="no image: finishReason NO_IMAGE"), False),
        (_item(ItemState.BLOCKED, reason="blocked: finishReason IMAGE_SAFETY"), False),
        (_item(ItemState.SUCCEEDED), False),
    ],
    ids=lambda v: str(v) if isinstance(v, bool) else f"{v.state}-{v.error_code}-{v.reason}",
)
def test_only_failures_that_may_not_recur_are_retried(item: ItemRecord, retryable: bool) -> None:
    assert retry.is_retryable(item) is retryable
