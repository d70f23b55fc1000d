"""OpenAICompatLane (a SyncImageLane) against the OpenAI-compatible images emulator, through
the unmodified `openai` SDK: one image per call, and every failure read as the lane runner
needs it: not sent (fail over), refused (BLOCKED), made but unanswered (outcome unknown)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image

from bananabatch.config import CompatLaneConfig
from bananabatch.emulator.base.lane_faults import LaneFaults
from bananabatch.emulator.compat import CompatEmulatorConfig, CompatEmulatorServer
from bananabatch.errors import (
    ContentRefused,
    ModelUnavailable,
    OutcomeUnknown,
    PermanentError,
    ProviderAuthError,
    ProviderQuotaExceeded,
    TransientError,
)
from bananabatch.ports import ImageRequest, SyncImageLane
from bananabatch.providers.compat_images import OpenAICompatLane
from tests.support.emulators import free_port

MODEL = "gemini-3-pro-image"
GATEWAY_NAME = "nano-banana-pro"
ATTEMPT = "job-1:sku-1:1"


def _request(key: str = "sku-1", **changes: Any) -> ImageRequest:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "key": key,
        "attempt_id": f"job-1:{key}:1",
        "model": MODEL,
        "prompt": f"a yellow sneaker ({key})",
        "aspect_ratio": "16:9",
        "image_size": "1K",
    }
    fields.update(changes)
    return ImageRequest(**fields)


@pytest.fixture
def emu() -> Iterator[CompatEmulatorServer]:
    config = CompatEmulatorConfig(api_key="gw-key", models=frozenset({GATEWAY_NAME}))
    with CompatEmulatorServer(config) as server:
        yield server


def _lane(
    base_url: str, *, key: str = "gw-key", models: dict[str, str] | None = None
) -> OpenAICompatLane:
    config = CompatLaneConfig(
        base_url=base_url, api_key=key, models=models or {MODEL: GATEWAY_NAME}
    )
    return OpenAICompatLane("gw1", config)


@pytest.fixture
def lane(emu: CompatEmulatorServer) -> Iterator[OpenAICompatLane]:
    made = _lane(emu.base_url)
    yield made
    made.close()


def test_it_is_a_sync_lane_named_after_its_label(lane: OpenAICompatLane) -> None:
    assert isinstance(lane, SyncImageLane)
    assert lane.name == "compat:gw1"


def test_one_call_makes_one_image_at_the_requested_ratio_billed_once_under_the_attempt(
    lane: OpenAICompatLane, emu: CompatEmulatorServer
) -> None:
    result = lane.generate(_request(), timeout_s=30)
    assert result.mime_type == "image/png"
    width, height = Image.open(io.BytesIO(result.image)).size
    assert width > height  # 16:9 went through as the gateway's aspect_ratio
    assert emu.state.submitted_keys() == {ATTEMPT: 1}


def test_an_image_answered_as_a_url_is_fetched(
    lane: OpenAICompatLane, emu: CompatEmulatorServer
) -> None:
    # The lane asks for b64_json; a gateway that answers with a URL anyway is still read.
    emu.state.config.url_answers = True
    result = lane.generate(_request(), timeout_s=30)
    assert result.image.startswith(b"\x89PNG")
    assert emu.state.submitted_keys() == {ATTEMPT: 1}


def test_a_provider_that_is_down_fails_over_and_nothing_was_made(
    lane: OpenAICompatLane, emu: CompatEmulatorServer
) -> None:
    emu.state.faults.down = True
    with pytest.raises(TransientError) as caught:
        lane.generate(_request(), timeout_s=30)
    assert not isinstance(caught.value, OutcomeUnknown)
    assert "503" in str(caught.value)
    assert emu.state.submitted_keys() == {}


def test_a_server_error_fails_over_and_a_rate_limit_says_how_long_to_wait(
    lane: OpenAICompatLane, emu: CompatEmulatorServer
) -> None:
    emu.state.faults = LaneFaults(server_errors=1, rate_limited=1, retry_after_seconds=7)
    with pytest.raises(TransientError) as first:
        lane.generate(_request(), timeout_s=30)
    assert not isinstance(first.value, (OutcomeUnknown, ProviderQuotaExceeded))
    with pytest.raises(ProviderQuotaExceeded) as second:
        lane.generate(_request(), timeout_s=30)
    assert second.value.retry_after == timedelta(seconds=7)
    assert emu.state.submitted_keys() == {}
    lane.generate(_request(), timeout_s=30)
    assert emu.state.submitted_keys() == {ATTEMPT: 1}


def test_a_content_policy_refusal_is_blocked_not_failed_over(
    lane: OpenAICompatLane, emu: CompatEmulatorServer
) -> None:
    emu.state.faults.refuse.append("*forbidden*")
    with pytest.raises(ContentRefused) as caught:
        lane.generate(_request(prompt="something forbidden"), timeout_s=30)
    assert isinstance(caught.value, PermanentError)
    assert emu.state.counters.refused == 1
    assert emu.state.submitted_keys() == {}


def test_a_read_timeout_after_the_request_was_sent_is_an_unknown_outcome_and_was_billed(
    lane: OpenAICompatLane, emu: CompatEmulatorServer
) -> None:
    emu.state.faults.stall = 1
    with pytest.raises(OutcomeUnknown):
        lane.generate(_request(), timeout_s=0.5)
    emu.state.release_stalled()
    # The provider made it: that is why the runner must not send it elsewhere.
    assert emu.state.submitted_keys() == {ATTEMPT: 1}


def test_a_provider_nobody_listens_for_was_never_sent_to() -> None:
    lane = _lane(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(TransientError) as caught:
        lane.generate(_request(), timeout_s=5)
    assert not isinstance(caught.value, OutcomeUnknown)
    assert "not sent" in str(caught.value)


def test_a_slow_answer_is_slow_on_the_tests_clock_and_still_arrives(
    lane: OpenAICompatLane, emu: CompatEmulatorServer
) -> None:
    waited: list[float] = []
    emu.state.faults = LaneFaults(slow=1, slow_seconds=45.0, on_slow=waited.append)
    assert lane.generate(_request(), timeout_s=30).image
    assert waited == [45.0]


def test_a_refused_key_is_a_configuration_error(emu: CompatEmulatorServer) -> None:
    lane = _lane(emu.base_url, key="wrong")
    with pytest.raises(ProviderAuthError):
        lane.generate(_request(), timeout_s=30)


def test_a_model_the_gateway_does_not_serve_is_unavailable(emu: CompatEmulatorServer) -> None:
    lane = _lane(emu.base_url, models={MODEL: "no-such-model"})
    with pytest.raises(ModelUnavailable) as caught:
        lane.generate(_request(), timeout_s=30)
    assert caught.value.model == MODEL


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "gemini-3.1-flash-image"},
        {"prompt": None, "gemini_request": {"contents": []}},
        {"reference_images": ("gs://inbox/references/shoe.png",)},
    ],
    ids=["model-not-on-this-lane", "native-line-without-prompt", "reference-images"],
)
def test_a_request_the_lane_cannot_express_is_refused_before_anything_is_sent(
    lane: OpenAICompatLane, emu: CompatEmulatorServer, changes: dict[str, Any]
) -> None:
    with pytest.raises(PermanentError):
        lane.generate(_request(**changes), timeout_s=30)
    assert emu.state.counters.calls == 0
