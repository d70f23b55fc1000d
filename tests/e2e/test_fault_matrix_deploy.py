"""Fault matrix rows for per-job webhooks as they are delivered (issue 13 part 6, issue 15
part 4), on the local and the emulated-GCP stack, each ending with the four invariants of
tests/e2e/test_fault_matrix.py:

- a "v1a" (Ed25519) delivery, the form live deliveries carry, announces its batch; so does
  the documented RS256 JWT form;
- a v1a delivery replayed within the signature window costs only one extra batch-done
  message, never a second collection or a second completion;
- a forged v1a delivery, or a genuine per-job one sent to a static-mode receiver, changes
  nothing;
- a `batch.cancelled` (undocumented, but possible) is accepted;
- the receiver reads and writes no state: it only publishes;
- an upload arrives as deployed (the inbox's Pub/Sub notification, pushed with a
  dead-letter policy): redelivered, it still makes one job; a notification of anything but a
  new object starts nothing.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bananabatch import events
from bananabatch.core.records import job_id_for
from bananabatch.core.states import JOB_TERMINAL, BatchState
from bananabatch.emulator.webhooks import DynamicScheme
from bananabatch.errors import PermanentError
from tests.support.stacks import Stack, StackKind, assert_invariants, held, open_stack

PROMPTS = [
    '{"key": "k1", "prompt": "a red apple"}',
    '{"key": "k2", "prompt": "a green pear", "aspect_ratio": "16:9"}',
    '{"key": "k3", "prompt": "a yellow banana"}',
    '{"key": "k4", "prompt": "a purple plum"}',
    '{"key": "k5", "prompt": "an orange orange"}',
]


def _upload(stack: Stack) -> str:
    return stack.upload(stack.write(PROMPTS))


def _v1a_headers(key: ed25519.Ed25519PrivateKey, body: bytes) -> dict[str, str]:
    msg_id, stamp = f"msg_{uuid.uuid4()}", str(int(time.time()))
    signed = key.sign(f"{msg_id}.{stamp}.".encode() + body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1a," + base64.b64encode(signed).decode(),
        "content-type": "application/json",
    }


def _event(batch_name: str, event: str = "batch.succeeded") -> bytes:
    return json.dumps({"type": event, "version": "v1", "data": {"id": batch_name}}).encode()


class _NoState:
    """A state store the receiver must never touch."""

    def __getattr__(self, name: str) -> Any:
        raise PermanentError(f"the webhook receiver touched the state store ({name})")


@pytest.mark.parametrize("signature", ["v1a", "jwt"])
def test_a_per_job_delivery_announces_its_batch_and_the_job_completes(
    request: pytest.FixtureRequest, kind: StackKind, signature: DynamicScheme, tmp_path: Path
) -> None:
    with open_stack(
        request, kind, tmp_path, held(), webhooks="dynamic", webhook_signature=signature
    ) as stack:
        hooks = stack.emulator.state.webhooks
        sent: list[str] = []
        deliver = hooks.sender

        def recording(uri: str, headers: Any, body: bytes) -> int:
            sent.append(headers["webhook-signature"])
            return deliver(uri, headers, body)

        hooks.sender = recording
        job_id = _upload(stack)
        stack.emulator.state.complete_all()
        assert stack.emulator.state.flush_webhooks() == [200, 200]
        assert all(s.startswith("v1a,") == (signature == "v1a") for s in sent), sent
        assert stack.drain() == 2
        assert stack.repo.require_job(job_id).state in JOB_TERMINAL
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))


def test_a_replayed_v1a_delivery_costs_one_extra_message_and_nothing_else(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), webhooks="dynamic") as stack:
        hooks = stack.emulator.state.webhooks
        hooks.faults.duplicate = 2  # both batches' deliveries arrive twice
        job_id = _upload(stack)
        stack.emulator.state.complete_all()
        assert stack.emulator.state.flush_webhooks() == [200, 200, 200, 200]
        assert stack.drain() == 4
        completions = stack.settle(job_id, rounds=1)
        # Invariant 3 (no paid request twice) and 4 (one completion) hold with duplicates.
        assert_invariants(stack, job_id, completions)


def test_a_forged_v1a_delivery_changes_nothing_and_the_genuine_one_still_counts(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), webhooks="dynamic") as stack:
        job_id = _upload(stack)
        names = stack.emulator.state.complete_all()
        impostor = ed25519.Ed25519PrivateKey.generate()
        body = _event(names[0])
        assert stack.webhook(_v1a_headers(impostor, body), body) == 401
        # An HMAC v1 entry is not a per-job scheme, whatever it is signed with.
        v1 = _v1a_headers(impostor, body) | {"webhook-signature": "v1,AAAA"}
        assert stack.webhook(v1, body) == 401
        too_big = _event(names[0]) + b" " * (64 * 1024)
        assert stack.webhook(_v1a_headers(impostor, too_big), too_big) == 413
        assert stack.drain() == 0
        assert {b.state for b in stack.repo.batches(job_id=job_id)} == {BatchState.RUNNING}
        assert stack.emulator.state.flush_webhooks() == [200, 200]
        assert stack.drain() == 2
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))


def test_a_genuine_v1a_delivery_to_a_static_receiver_is_refused_and_the_tick_catches_up(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), webhooks="static") as stack:
        stack.emulator.state.webhooks.faults.drop = 2  # the static deliveries are lost too
        job_id = _upload(stack)
        names = stack.emulator.state.complete_all()
        body = _event(names[0])
        key = stack.emulator.state.webhooks._ed  # the emulator's published Ed25519 key
        assert stack.webhook(_v1a_headers(key, body), body) == 401
        assert stack.drain() == 0
        assert stack.emulator.state.flush_webhooks() == []
        stack.tick()
        assert_invariants(stack, job_id, stack.settle(job_id))


def test_a_batch_cancelled_event_that_arrives_anyway_is_accepted(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), webhooks="dynamic") as stack:
        stack.emulator.state.webhooks.announce_cancelled = True
        job_id = _upload(stack)
        names = stack.emulator.state.batch_names()
        stack.emulator.state.cancel_batch(names[0])
        stack.emulator.state.complete(names[1])
        assert stack.emulator.state.flush_webhooks() == [200, 200]
        assert stack.drain() == 2
        states = {b.provider_name: b.state for b in stack.repo.batches(job_id=job_id)}
        # The cancelled batch was collected on the event's word, not left for the tick.
        assert states[names[0]] in {BatchState.CANCELLED, BatchState.COLLECTED}, states
        # Whatever the pipeline does with the cancelled rows (a retry batch), it finishes.
        for _ in range(5):
            stack.emulator.state.complete_all()
            stack.emulator.state.flush_webhooks()
            stack.drain()
            stack.tick()
        assert_invariants(stack, job_id, stack.settle(job_id))


def test_the_receiver_reads_and_writes_no_state_it_only_publishes(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held(), webhooks="dynamic") as stack:
        job_id = _upload(stack)
        stack.emulator.state.complete_all()
        state = stack.runtime.state
        stack.runtime.state = _NoState()
        try:
            assert stack.emulator.state.flush_webhooks() == [200, 200]
            body = _event("batches/never-created-here")
            key = stack.emulator.state.webhooks._ed
            assert stack.webhook(_v1a_headers(key, body), body) == 200
        finally:
            stack.runtime.state = state
        # Three announcements: two real batches, and one the collector drops as unknown.
        assert stack.drain() == 3
        assert_invariants(stack, job_id, stack.settle(job_id, rounds=1))


# --- uploads as deployed: the inbox notification pushed to on_upload (issue 15 part 7) ------


def _notification_push(
    stack: Stack, name: str, event_type: str = "OBJECT_FINALIZE"
) -> tuple[dict[str, str], dict[str, Any]]:
    """What the uploads push subscription delivers: the inbox's Pub/Sub notification."""
    _, obj = stack.finalized_event(name)
    if "message" in obj:  # the stack already speaks the deployed form
        obj = events.parse_pubsub_event(obj).message.payload()
    data, attributes = events.storage_notification_message(obj, event_type=event_type)
    return events.pubsub_published_event(
        project=str(stack.settings.project),
        topic="uploads",
        subscription="uploads-push",
        data=data,
        attributes=attributes,
    )


def test_an_upload_pushed_from_the_inbox_notification_runs_once_however_often_delivered(
    stack: Stack,
) -> None:
    name = stack.put_inbox(stack.write(PROMPTS))
    attributes, data = _notification_push(stack, name)
    obj = events.parse_upload_event(data)
    assert obj is not None
    job_id = job_id_for(obj.source())
    # Pub/Sub delivers at least once: a redelivery finds the job and submits nothing twice.
    for _ in range(3):
        stack.deliver("on_upload", attributes, data)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert stack.repo.get_job(job_id) is not None


def test_a_notification_of_a_deleted_object_is_acknowledged_and_starts_nothing(
    stack: Stack,
) -> None:
    name = stack.put_inbox(stack.write(PROMPTS))
    attributes, data = _notification_push(stack, name, "OBJECT_DELETE")
    stack.deliver("on_upload", attributes, data)
    obj = events.parse_pubsub_event(data).message.payload()
    assert stack.repo.get_job(job_id_for(events.parse_storage_event(obj).source())) is None
    assert stack.emulator.state.batch_names() == []
