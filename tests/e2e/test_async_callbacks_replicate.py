"""Async-callback tasks end to end (issue 20 point 4), on the local and the emulated-GCP
stacks: items of a running job sent to the Replicate lane (the adapter driven directly, as
the lane runner will drive it), their signed callbacks through the public receiver's
`/replicate` sub-path, the batch-done consumer fetching and writing each image, the tick
polling the tasks whose callback was lost, and the job closed once, with one completion.

Faults: lost, duplicated and held callbacks, a forged one, a content refusal, the provider
down while the tick polls. Every scenario ends with the four invariants: one terminal state
per item, an image for every success, nothing paid twice (the emulator's ledger), exactly
one completion message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bananabatch.core.records import ItemRecord, JobRecord, SourceObject
from bananabatch.core.states import JOB_TERMINAL, ItemState, JobState
from bananabatch.emulator.base.outbox import WebhookFaults, standard_headers
from bananabatch.emulator.replicate import ReplicateEmulatorConfig, ReplicateEmulatorServer
from bananabatch.pipeline import tasks
from bananabatch.ports import ImageRequest
from tests.support.stacks import (
    PNG_MAGIC,
    WEBHOOK_URL,
    Completion,
    Stack,
    StackKind,
    open_stack,
)

MODEL = "gemini-3-pro-image"
RECEIVER_PATH = urlsplit(WEBHOOK_URL).path


@pytest.fixture
def replicate() -> Iterator[ReplicateEmulatorServer]:
    with ReplicateEmulatorServer(ReplicateEmulatorConfig(api_token="r8_test")) as server:
        yield server


@pytest.fixture
def stack(
    request: pytest.FixtureRequest,
    kind: StackKind,
    tmp_path: Path,
    replicate: ReplicateEmulatorServer,
) -> Iterator[Stack]:
    with open_stack(
        request,
        kind,
        tmp_path,
        webhook_url=WEBHOOK_URL,
        async_lanes=("replicate",),
        replicate_base_url=replicate.base_url,
        replicate_api_token="r8_test",
        replicate_webhook_secret=replicate.state.signing_secret,
    ) as opened:

        def deliver(uri: str, headers: Mapping[str, str], body: bytes) -> int:
            # The URL the prediction named: the receiver's, at the provider's sub-path.
            path = urlsplit(uri).path.removeprefix(RECEIVER_PATH)
            assert path == "/replicate", uri
            return opened.webhook(headers, body, path=path)

        replicate.state.webhooks.sender = deliver
        yield opened


def _prompt(key: str) -> str:
    return f"product shot of {key}"


def _submit(stack: Stack, keys: list[str], *, refused: str = "") -> str:
    """A running job whose items went to the Replicate lane: what the lane runner does,
    done here with the adapter itself (claim, submit, remember the task)."""
    rt = stack.runtime
    job_id = f"async-{uuid.uuid4().hex[:8]}"
    now = rt.now()
    rt.repo.create_job(
        JobRecord(
            job_id=job_id,
            state=JobState.RUNNING,
            source=SourceObject(bucket=rt.settings.inbox_bucket, name="p.jsonl", generation="1"),
            created_at=now,
            updated_at=now,
            default_model=MODEL,
            results_prefix=f"jobs/{job_id}/",
            line_count=len(keys),
            accepted_count=len(keys),
        )
    )
    rt.repo.put_items(
        ItemRecord(
            job_id=job_id,
            key=key,
            line_no=n,
            state=ItemState.SUBMITTED,
            model=MODEL,
            aspect_ratio="1:1",
            image_size="1K",
            attempt=1,
            estimated_usd=0.15,
            prompt_preview=_prompt(key),
        )
        for n, key in enumerate(keys, start=1)
    )
    lane = rt.async_lane("replicate")
    url = tasks.webhook_url(rt, "replicate")
    assert url == WEBHOOK_URL + "/replicate"
    for key in keys:
        prompt = refused if key == "refused" else _prompt(key)
        request = ImageRequest(
            job_id=job_id, key=key, attempt_id=f"{job_id}:{key}:1", model=MODEL, prompt=prompt
        )
        task_id = lane.submit(request, webhook_url=url)
        tasks.remember(rt, "replicate", task_id, job_id=job_id, key=key, attempt=1)
    return job_id


def _finish(stack: Stack, replicate: ReplicateEmulatorServer) -> None:
    replicate.state.complete_all()
    replicate.state.flush_webhooks()
    stack.drain()


def _invariants(
    stack: Stack, replicate: ReplicateEmulatorServer, job_id: str, completions: list[Completion]
) -> dict[str, ItemRecord]:
    job = stack.repo.require_job(job_id)
    assert job.state in JOB_TERMINAL, job.state
    items = {i.key: i for i in stack.repo.items(job_id)}
    assert all(
        i.state in (ItemState.SUCCEEDED, ItemState.BLOCKED, ItemState.FAILED)
        for i in items.values()
    )
    for item in items.values():
        if item.state is ItemState.SUCCEEDED:
            assert stack.read_result(f"jobs/{job_id}/images/{item.key}.png").startswith(PNG_MAGIC)
    assert replicate.state.duplicate_keys() == []
    assert len(completions) == 1, completions
    assert completions[0].state == job.state.value
    assert tasks.open_tasks(stack.runtime, job_id) == []
    return items


def test_callbacks_through_the_receiver_bring_every_image_and_close_the_job_once(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    job_id = _submit(stack, ["a", "b", "c"])
    _finish(stack, replicate)
    items = _invariants(stack, replicate, job_id, stack.settle(job_id))
    assert {i.state for i in items.values()} == {ItemState.SUCCEEDED}
    assert stack.repo.require_job(job_id).state is JobState.SUCCEEDED
    # Every callback was accepted by the receiver.
    assert [status for _, status in replicate.state.webhooks.delivered] == [200, 200, 200]


def test_lost_callbacks_are_made_up_for_by_the_ticks_poll(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.webhooks.faults = WebhookFaults(drop=2)
    job_id = _submit(stack, ["a", "b", "c"])
    _finish(stack, replicate)
    assert stack.repo.require_job(job_id).state is JobState.RUNNING
    assert len(tasks.open_tasks(stack.runtime, job_id)) == 2
    stack.clock.advance(tasks.CALLBACK_GRACE)
    stack.tick()
    items = _invariants(stack, replicate, job_id, stack.settle(job_id))
    assert {i.state for i in items.values()} == {ItemState.SUCCEEDED}


def test_duplicated_callbacks_settle_each_task_once(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.webhooks.faults = WebhookFaults(duplicate=3)
    job_id = _submit(stack, ["a", "b", "c"])
    _finish(stack, replicate)
    assert len(replicate.state.webhooks.delivered) == 6
    items = _invariants(stack, replicate, job_id, stack.settle(job_id))
    assert {i.state for i in items.values()} == {ItemState.SUCCEEDED}
    # Each task was read once to settle it, not once per delivery.
    assert replicate.state.counters.gets == 3


def test_a_held_callback_that_arrives_after_the_poll_settled_its_task_changes_nothing(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.webhooks.faults = WebhookFaults(delay=1)
    job_id = _submit(stack, ["a", "b"])
    _finish(stack, replicate)
    stack.clock.advance(tasks.CALLBACK_GRACE)
    stack.tick()
    completions = stack.settle(job_id)
    assert replicate.state.webhooks.release() == 1
    replicate.state.flush_webhooks()
    stack.drain()
    completions += stack.completions(job_id)
    _invariants(stack, replicate, job_id, completions)


def test_a_content_refusal_is_blocked_and_the_job_ends_partial(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.lane_faults.refuse.append("*forbidden*")
    job_id = _submit(stack, ["a", "refused"], refused="something forbidden")
    _finish(stack, replicate)
    items = _invariants(stack, replicate, job_id, stack.settle(job_id))
    assert items["refused"].state is ItemState.BLOCKED
    assert "E005" in (items["refused"].reason or "")
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL


def test_forged_and_unsigned_callbacks_are_refused_and_change_nothing(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.webhooks.faults = WebhookFaults(delay=1)
    job_id = _submit(stack, ["a"])
    replicate.state.complete_all()
    held = replicate.state.webhooks._held[0]
    forged_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    stamp = int(held.headers["webhook-timestamp"])
    forged = standard_headers(forged_secret, held.headers["webhook-id"], stamp, held.body)
    unsigned = {k: v for k, v in held.headers.items() if k != "webhook-signature"}
    assert stack.webhook(forged, held.body, path="/replicate") == 401
    assert stack.webhook(unsigned, held.body, path="/replicate") == 401
    # A Replicate delivery at the Gemini path is verified with Gemini's scheme, not taken.
    assert stack.webhook(held.headers, held.body) in (401, 404)
    stack.drain()
    assert tasks.open_tasks(stack.runtime, job_id) != []
    replicate.state.webhooks.release()
    replicate.state.flush_webhooks()
    stack.drain()
    _invariants(stack, replicate, job_id, stack.settle(job_id))


def test_a_provider_down_when_the_tick_polls_is_asked_again_on_the_next_tick(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.webhooks.faults = WebhookFaults(drop=1)
    job_id = _submit(stack, ["a"])
    _finish(stack, replicate)
    replicate.state.lane_faults.down = True
    stack.clock.advance(tasks.CALLBACK_GRACE)
    stack.tick()
    assert stack.repo.require_job(job_id).state is JobState.RUNNING
    replicate.state.lane_faults.down = False
    items = _invariants(stack, replicate, job_id, stack.settle(job_id))
    assert items["a"].state is ItemState.SUCCEEDED
