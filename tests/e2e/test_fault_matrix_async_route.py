"""Fault-matrix rows for the async-callback runner (issue 20 points 3 and 4), on the local
stack and the emulated-GCP stack: a file of urgent lines (Gemini's standard API), normal
lines (batch) and bulk lines that allow third parties, uploaded the normal way; the bulk
lines are routed to the Replicate lane and made on the Replicate emulator through its
signed callbacks (or the tick's poll). Each row ends with the four invariants, the
Replicate emulator's own ledger included (no prompt created twice).

The dated table prices Replicate above batch for Nano Banana Pro (a reseller's $0.15 at
1K against batch's $0.067), so routing would never pick it: these deployments set their
Replicate price to $0.04 (BANANABATCH_REPLICATE_USD_PER_IMAGE), as an owner who pays less
than the table says would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bananabatch.core.states import ItemState, JobState
from bananabatch.emulator.base.outbox import WebhookFaults
from bananabatch.emulator.replicate import ReplicateEmulatorConfig, ReplicateEmulatorServer
from bananabatch.pipeline import lanes, tasks, urgent
from tests.support.stacks import WEBHOOK_URL, Stack, StackKind, assert_invariants, open_stack

RECEIVER_PATH = urlsplit(WEBHOOK_URL).path
REPLICATE_USD = 0.04


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
        sync_lanes=("gemini-standard",),
        async_lanes=("replicate",),
        allow_third_party=True,
        replicate_base_url=replicate.base_url,
        replicate_api_token="r8_test",
        replicate_webhook_secret=replicate.state.signing_secret,
        replicate_usd_per_image=REPLICATE_USD,
    ) as opened:

        def deliver(uri: str, headers: Mapping[str, str], body: bytes) -> int:
            path = urlsplit(uri).path.removeprefix(RECEIVER_PATH)
            assert path == "/replicate", uri
            return opened.webhook(headers, body, path=path)

        replicate.state.webhooks.sender = deliver
        yield opened


def file_lines(*bulk_prompts: str) -> list[str]:
    lines = [
        '{"key": "u1", "prompt": "a hero banner", "priority": "urgent"}',
        '{"key": "n1", "prompt": "a lamp"}',
        '{"key": "n2", "prompt": "a chair", "priority": "batch"}',
    ]
    prompts = bulk_prompts or ("sneaker 1", "sneaker 2", "sneaker 3")
    lines += [
        f'{{"key": "b{i}", "prompt": "{prompt}", "model": "nano-banana-pro", '
        f'"priority": "bulk", "allow_third_party": true}}'
        for i, prompt in enumerate(prompts, start=1)
    ]
    return lines


def _finish(stack: Stack, replicate: ReplicateEmulatorServer) -> None:
    """Every prediction ends; its callback (unless a fault holds it) reaches the receiver."""
    replicate.state.complete_all()
    replicate.state.flush_webhooks()
    stack.drain()


def _settled(
    stack: Stack, replicate: ReplicateEmulatorServer, job_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = assert_invariants(
        stack, job_id, stack.settle(job_id, between=lambda: _finish(stack, replicate))
    )
    assert replicate.state.duplicate_keys() == []
    assert tasks.open_tasks(stack.runtime, job_id) == []
    return summary, {item.key: item for item in stack.repo.items(job_id)}


def _ledger(stack: Stack, job_id: str, key: str) -> list[tuple[str, str]]:
    entries = sorted(lanes.attempts(stack.runtime, job_id, key), key=lambda a: a["n"])
    return [(a["lane"], a["outcome"]) for a in entries]


def test_bulk_lines_are_made_on_replicate_beside_urgent_and_batch_lines(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    job_id = stack.upload(stack.write(file_lines()))
    _finish(stack, replicate)
    summary, items = _settled(stack, replicate, job_id)
    assert summary["counts"]["SUCCEEDED"] == 6
    assert {k: (i.lane, i.provider_lane) for k, i in items.items()} == {
        "u1": ("urgent", "gemini-standard"),
        "n1": ("batch", None),
        "n2": ("batch", None),
        **{f"b{i}": ("sync", "replicate") for i in range(1, 4)},
    }
    assert replicate.state.counters.creates == 3
    assert stack.emulator.state.counters.sync_requests == 1
    for i in range(1, 4):
        assert _ledger(stack, job_id, f"b{i}") == [("replicate", lanes.TASK)]
        assert items[f"b{i}"].actual_usd == pytest.approx(REPLICATE_USD)
    assert stack.repo.require_job(job_id).state is JobState.SUCCEEDED
    assert summary["costs"]["by_lane"]["replicate"]["items"] == 3


def test_a_5xx_at_create_is_not_paid_and_the_item_is_made_on_the_next_round(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.lane_faults.server_errors = 1
    job_id = stack.upload(stack.write(file_lines()))
    _finish(stack, replicate)
    summary, items = _settled(stack, replicate, job_id)
    assert summary["counts"]["SUCCEEDED"] == 6
    ledgers = [_ledger(stack, job_id, f"b{i}") for i in range(1, 4)]
    # The first create failed definitely (nothing made): the only async provider was
    # asked again, and each line was created once.
    assert ledgers[0] == [("replicate", lanes.FAILED), ("replicate", lanes.TASK)]
    assert ledgers[1:] == [[("replicate", lanes.TASK)]] * 2
    assert replicate.state.counters.creates == 3
    assert {items[f"b{i}"].provider_lane for i in range(1, 4)} == {"replicate"}


def test_replicate_down_opens_its_breaker_and_the_items_wait_for_it_unpaid(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.lane_faults.down = True
    job_id = stack.upload(stack.write(file_lines()))
    # The first bulk line failed three times, definitely: FAILED, nothing paid; its
    # failures opened the breaker, so the two others wait PENDING, never called.
    items = {item.key: item for item in stack.repo.items(job_id)}
    assert items["b1"].state is ItemState.FAILED
    assert "every provider failed" in (items["b1"].reason or "")
    assert {items["b2"].state, items["b3"].state} == {ItemState.PENDING}
    assert _ledger(stack, job_id, "b2") == []
    breaker = stack.runtime.state.get(lanes.breaker_path("replicate"))
    assert breaker is not None
    assert breaker["open_until"] is not None
    replicate.state.lane_faults.down = False
    # The tick runs the waiting items again once they are stale; the breaker lets them by.
    _summary, items = _settled(stack, replicate, job_id)
    assert {items["b2"].state, items["b3"].state} == {ItemState.SUCCEEDED}
    assert replicate.state.counters.creates == 2
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL


def test_a_lost_callback_is_made_up_for_by_the_ticks_poll(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.webhooks.faults = WebhookFaults(drop=1)
    job_id = stack.upload(stack.write(file_lines()))
    _finish(stack, replicate)
    assert len(tasks.open_tasks(stack.runtime, job_id)) == 1
    assert stack.repo.require_job(job_id).state is JobState.RUNNING
    stack.clock.advance(tasks.CALLBACK_GRACE)
    stack.tick()
    summary, _items = _settled(stack, replicate, job_id)
    assert summary["counts"]["SUCCEEDED"] == 6
    assert replicate.state.counters.creates == 3


def test_a_task_waiting_past_the_orphan_limit_is_polled_not_failed(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    # Its item is SUBMITTED like a sync call lost with its process, but its task is known:
    # the tick asks the provider instead of failing it as an unknown outcome.
    replicate.state.webhooks.faults = WebhookFaults(drop=3)
    job_id = stack.upload(stack.write(file_lines()))
    _finish(stack, replicate)
    stack.clock.advance(urgent.ORPHANED_AFTER + timedelta(minutes=1))
    assert urgent.recover(stack.runtime).orphaned == 0
    stack.tick()
    summary, _items = _settled(stack, replicate, job_id)
    assert summary["counts"]["SUCCEEDED"] == 6
    assert stack.repo.require_job(job_id).state is JobState.SUCCEEDED


def test_a_content_refusal_on_replicate_is_blocked_and_never_tried_elsewhere(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    replicate.state.lane_faults.refuse.append("*forbidden*")
    job_id = stack.upload(stack.write(file_lines("sneaker 1", "something forbidden")))
    _finish(stack, replicate)
    summary, items = _settled(stack, replicate, job_id)
    assert items["b2"].state is ItemState.BLOCKED
    assert "E005" in (items["b2"].reason or "")
    assert items["b1"].state is ItemState.SUCCEEDED
    assert _ledger(stack, job_id, "b2") == [("replicate", lanes.TASK)]
    assert replicate.state.counters.creates == 2
    assert summary["counts"]["BLOCKED"] == 1
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL


def test_while_replicates_breaker_is_open_new_bulk_lines_go_to_batch_and_are_made_there(
    stack: Stack, replicate: ReplicateEmulatorServer
) -> None:
    # Only one async provider exists (replicate): the lane a bulk line fails over to is
    # batch, for the lines that arrive while the async lane's breaker is open. (Lines
    # already staged for it wait for it, unpaid: the row above.)
    replicate.state.lane_faults.down = True
    first = stack.upload(stack.write(file_lines()))
    breaker = stack.runtime.state.get(lanes.breaker_path("replicate"))
    assert breaker is not None
    assert breaker["open_until"] is not None
    later = file_lines("sneaker 4", "sneaker 5")[3:]
    second = stack.upload(stack.write(later, name="later.jsonl"))
    _finish(stack, replicate)
    summary, items = _settled(stack, replicate, second)
    assert summary["counts"]["SUCCEEDED"] == 2
    assert {k: items[k].lane for k in ("b1", "b2")} == {"b1": "batch", "b2": "batch"}
    assert {k: items[k].provider_lane for k in ("b1", "b2")} == {"b1": None, "b2": None}
    assert _ledger(stack, second, "b1") == []
    assert "replicate" not in summary["costs"].get("by_lane", {})
    assert replicate.state.counters.creates == 0
    # The first job's lines stay the async lane's (the row above); it ends too, with
    # every line in one terminal state and none created twice.
    replicate.state.lane_faults.down = False
    _settled(stack, replicate, first)
