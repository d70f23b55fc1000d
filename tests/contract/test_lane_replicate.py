"""ReplicateLane (an AsyncImageLane) against the Replicate emulator, through the unmodified
official `replicate` client: submit answers a prediction id at once, the image arrives by a
signed webhook (verified with Replicate's documented scheme) or by a poll, and every failure
is read as the lane runner needs it."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image
from replicate.client import Client

from bananabatch.emulator.base.lane_faults import LaneFaults
from bananabatch.emulator.base.outbox import WebhookFaults, standard_headers
from bananabatch.emulator.base.state import ManualClock
from bananabatch.emulator.replicate import ReplicateEmulatorConfig, ReplicateEmulatorServer
from bananabatch.errors import (
    OutcomeUnknown,
    PermanentError,
    ProviderAuthError,
    ProviderQuotaExceeded,
    TransientError,
)
from bananabatch.ports import AsyncImageLane, ImageRequest
from bananabatch.providers.replicate_lane import ReplicateLane
from bananabatch.webhooks import WebhookRejected

TOKEN = "r8_emulated"
HOOK = "https://receiver.example/on_gemini_webhook/replicate"
PROMPT = "a yellow sneaker (sku-1)"


def _request(key: str = "sku-1", **changes: Any) -> ImageRequest:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "key": key,
        "attempt_id": f"job-1:{key}:1",
        "model": "gemini-3-pro-image",
        "prompt": f"a yellow sneaker ({key})",
        "aspect_ratio": "9:16",
        "image_size": "1K",
    }
    fields.update(changes)
    return ImageRequest(**fields)


@dataclass
class Inbox:
    """Where the emulator's deliveries go instead of the network."""

    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __call__(self, uri: str, headers: Mapping[str, str], body: bytes) -> int:
        assert uri == HOOK
        self.got.append((dict(headers), body))
        return 200


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def emu(clock: ManualClock, inbox: Inbox) -> Iterator[ReplicateEmulatorServer]:
    config = ReplicateEmulatorConfig(api_token=TOKEN, clock=clock)
    with ReplicateEmulatorServer(config) as server:
        server.state.webhooks.sender = inbox
        yield server


def _lane(
    emu: ReplicateEmulatorServer, *, token: str = TOKEN, timeout_s: float = 30.0
) -> ReplicateLane:
    return ReplicateLane(
        api_token=token,
        base_url=emu.base_url,
        webhook_secret=emu.state.signing_secret,
        timeout_s=timeout_s,
    )


@pytest.fixture
def lane(emu: ReplicateEmulatorServer) -> Iterator[ReplicateLane]:
    made = _lane(emu)
    yield made
    made.close()


def test_it_is_an_async_lane(lane: ReplicateLane) -> None:
    assert isinstance(lane, AsyncImageLane)
    assert lane.name == "replicate"


def test_the_signing_secret_is_the_accounts_default_one_read_with_the_official_client(
    emu: ReplicateEmulatorServer,
) -> None:
    client = Client(api_token=TOKEN, base_url=emu.base_url)
    assert client.webhooks.default.secret().key == emu.state.signing_secret
    assert emu.state.signing_secret.startswith("whsec_")


def test_submit_answers_at_once_and_a_poll_finds_the_image_when_the_prediction_ends(
    lane: ReplicateLane, emu: ReplicateEmulatorServer, clock: ManualClock
) -> None:
    task = lane.submit(_request(), webhook_url=None)
    assert lane.poll(task).state == "pending"
    clock.advance(1.0)
    assert lane.poll(task).state == "pending"  # processing
    clock.advance(2.0)
    done = lane.poll(task)
    assert done.state == "succeeded"
    assert done.result is not None
    assert done.result.mime_type == "image/png"
    width, height = Image.open(io.BytesIO(done.result.image)).size
    assert height > width  # 9:16 went through as the model's aspect_ratio
    assert emu.state.submitted_keys() == {PROMPT: 1}
    assert emu.state.works_input(task) == {
        "prompt": PROMPT,
        "output_format": "png",
        "aspect_ratio": "9:16",
        "resolution": "1K",
    }


def test_the_end_comes_by_a_signed_webhook_that_verifies_and_carries_the_image(
    lane: ReplicateLane, emu: ReplicateEmulatorServer, inbox: Inbox
) -> None:
    task = lane.submit(_request(), webhook_url=HOOK)
    emu.state.complete(task)
    emu.state.flush_webhooks()
    # Only the end was asked for (webhook_events_filter=["completed"]).
    assert len(inbox.got) == 1
    headers, body = inbox.got[0]
    assert headers["webhook-signature"].startswith("v1,")
    status = lane.parse_webhook(headers, body)
    assert status.task_id == task
    assert status.state == "succeeded"
    assert status.result is not None
    assert status.result.image.startswith(b"\x89PNG")


def test_a_duplicated_callback_verifies_twice_and_names_the_same_task(
    lane: ReplicateLane, emu: ReplicateEmulatorServer, inbox: Inbox
) -> None:
    emu.state.webhooks.faults = WebhookFaults(duplicate=1)
    task = lane.submit(_request(), webhook_url=HOOK)
    emu.state.complete(task)
    emu.state.flush_webhooks()
    assert len(inbox.got) == 2
    ids = {lane.verify_delivery(h, b).prediction_id for h, b in inbox.got}
    assert ids == {task}
    assert inbox.got[0][0]["webhook-id"] == inbox.got[1][0]["webhook-id"]


def test_a_lost_callback_leaves_the_poll_to_find_the_image(
    lane: ReplicateLane, emu: ReplicateEmulatorServer, inbox: Inbox
) -> None:
    emu.state.webhooks.faults = WebhookFaults(drop=1)
    task = lane.submit(_request(), webhook_url=HOOK)
    emu.state.complete(task)
    emu.state.flush_webhooks()
    assert inbox.got == []
    assert lane.poll(task).state == "succeeded"


def _delivery(
    emu: ReplicateEmulatorServer, lane: ReplicateLane, inbox: Inbox
) -> tuple[dict[str, str], bytes]:
    task = lane.submit(_request(), webhook_url=HOOK)
    emu.state.complete(task)
    emu.state.flush_webhooks()
    return inbox.got[-1]


def test_forged_tampered_stale_unsigned_and_oversized_deliveries_are_refused(
    lane: ReplicateLane, emu: ReplicateEmulatorServer, inbox: Inbox
) -> None:
    headers, body = _delivery(emu, lane, inbox)
    other_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    forged = standard_headers(
        other_secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body
    )
    stale = standard_headers(
        emu.state.signing_secret,
        headers["webhook-id"],
        int(headers["webhook-timestamp"]) - 3600,
        body,
    )
    cases: list[tuple[Mapping[str, str], bytes, int]] = [
        (forged, body, 401),
        (headers, body.replace(b"succeeded", b"succeedex"), 401),
        (stale, body, 401),
        ({k: v for k, v in headers.items() if k != "webhook-signature"}, body, 401),
        ({**headers, "webhook-signature": "v1,not-base64!"}, body, 401),
        ({**headers, "webhook-signature": "v1a," + headers["webhook-signature"][3:]}, body, 401),
        ({**headers, "webhook-id": "msg_\u202eevil"}, body, 400),
        (headers, b"{" + b" " * 70_000 + b"}", 413),
    ]
    for bad_headers, bad_body, status in cases:
        with pytest.raises(WebhookRejected) as caught:
            lane.parse_webhook(bad_headers, bad_body)
        assert caught.value.status == status, (bad_headers, caught.value)


def test_without_a_signing_secret_no_delivery_is_taken(
    emu: ReplicateEmulatorServer, inbox: Inbox
) -> None:
    signed = _lane(emu)
    headers, body = _delivery(emu, signed, inbox)
    unsigned = ReplicateLane(api_token=None, webhook_secret=None)
    with pytest.raises(WebhookRejected) as caught:
        unsigned.parse_webhook(headers, body)
    assert caught.value.status == 404


def test_a_content_policy_failure_is_a_refusal(
    lane: ReplicateLane, emu: ReplicateEmulatorServer
) -> None:
    emu.state.lane_faults.refuse.append("*forbidden*")
    task = lane.submit(_request(prompt="something forbidden"), webhook_url=None)
    emu.state.complete(task)
    status = lane.poll(task)
    assert status.state == "failed"
    assert status.refused
    assert "E005" in (status.error or "")


def test_a_provider_that_is_down_fails_over_and_nothing_was_made(
    lane: ReplicateLane, emu: ReplicateEmulatorServer
) -> None:
    task = lane.submit(_request("sku-0"), webhook_url=None)
    emu.state.lane_faults.down = True
    with pytest.raises(TransientError) as caught:
        lane.submit(_request(), webhook_url=None)
    assert not isinstance(caught.value, OutcomeUnknown)
    with pytest.raises(TransientError):
        lane.poll(task)
    assert PROMPT not in emu.state.submitted_keys()


def test_a_server_error_fails_over_and_a_throttle_says_how_long_to_wait(
    lane: ReplicateLane, emu: ReplicateEmulatorServer
) -> None:
    emu.state.lane_faults = LaneFaults(server_errors=1, rate_limited=1, retry_after_seconds=7)
    with pytest.raises(TransientError) as first:
        lane.submit(_request(), webhook_url=None)
    assert not isinstance(first.value, (OutcomeUnknown, ProviderQuotaExceeded))
    with pytest.raises(ProviderQuotaExceeded) as second:
        lane.submit(_request(), webhook_url=None)
    assert second.value.retry_after == timedelta(seconds=7)
    assert emu.state.submitted_keys() == {}


def test_a_create_whose_answer_never_came_is_an_unknown_outcome_and_exists(
    emu: ReplicateEmulatorServer,
) -> None:
    lane = _lane(emu, timeout_s=0.5)
    emu.state.lane_faults.stall = 1
    with pytest.raises(OutcomeUnknown):
        lane.submit(_request(), webhook_url=None)
    emu.state.release_stalled()
    assert emu.state.submitted_keys() == {PROMPT: 1}


def test_a_slow_prediction_stays_pending_until_its_extra_time_has_passed_on_the_clock(
    lane: ReplicateLane, emu: ReplicateEmulatorServer, clock: ManualClock
) -> None:
    emu.state.lane_faults = LaneFaults(slow=1, slow_seconds=600.0)
    task = lane.submit(_request(), webhook_url=None)
    clock.advance(3.0)
    assert lane.poll(task).state == "pending"
    clock.advance(600.0)
    assert lane.poll(task).state == "succeeded"


def test_an_output_not_fetched_within_the_hour_is_a_lost_paid_image(
    lane: ReplicateLane, emu: ReplicateEmulatorServer, clock: ManualClock
) -> None:
    task = lane.submit(_request(), webhook_url=None)
    emu.state.complete(task)
    clock.advance(3601.0)
    with pytest.raises(PermanentError, match="lost"):
        lane.poll(task)


def test_a_refused_token_is_a_configuration_error(emu: ReplicateEmulatorServer) -> None:
    with pytest.raises(ProviderAuthError):
        _lane(emu, token="r8_wrong").submit(_request(), webhook_url=None)


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "gemini-3.1-flash-lite-image"},
        {"prompt": None, "gemini_request": {"contents": []}},
        {"reference_images": ("gs://inbox/references/shoe.png",)},
    ],
    ids=["model-not-hosted", "native-line-without-prompt", "gs-reference"],
)
def test_a_request_the_lane_cannot_express_is_refused_before_anything_is_sent(
    lane: ReplicateLane, emu: ReplicateEmulatorServer, changes: dict[str, Any]
) -> None:
    with pytest.raises(PermanentError):
        lane.submit(_request(**changes), webhook_url=None)
    assert emu.state.counters.creates == 0


def test_an_unknown_prediction_polls_as_failed(lane: ReplicateLane) -> None:
    status = lane.poll("nosuchprediction")
    assert status.state == "failed"
