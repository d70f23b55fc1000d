"""`bananabatch doctor --probe-lanes` against the OpenAI-compatible emulator, through the
lane the pipeline uses and the unmodified openai SDK: a right key makes one image, a wrong
key is explained, and without the flag no request reaches the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from bananabatch.config import CompatLaneConfig, Settings
from bananabatch.doctor import Check, Probes, run_doctor
from bananabatch.emulator.compat import CompatEmulatorConfig, CompatEmulatorServer

TODAY = date(2026, 12, 7)


@pytest.fixture
def gateway() -> Iterator[CompatEmulatorServer]:
    with CompatEmulatorServer(CompatEmulatorConfig(api_key="sk-right")) as server:
        yield server


def _checks(server: CompatEmulatorServer, key: str, *, probe_lanes: bool) -> dict[str, Check]:
    settings = Settings(
        gemini_api_key="AQ.test",
        sync_lanes=("gemini-standard", "compat:gw1"),
        compat_lanes={
            "gw1": CompatLaneConfig(
                base_url=server.base_url,
                api_key=key,
                models={"gemini-3-pro-image": "nano-banana-pro"},
                usd_per_image=0.05,
                timeout_s=30,
            )
        },
        allow_third_party=True,
    )
    probes = Probes(
        list_models=lambda _s: {"gemini-3.1-flash-lite-image": ("batchGenerateContent",)},
        list_webhooks=lambda _s: [],
        gcp=lambda _s: [],
    )
    checks = run_doctor(settings, TODAY, probes, probe_lanes=probe_lanes)
    return {c.name: c for c in checks}


def test_without_the_flag_doctor_sends_nothing_to_the_gateway(
    gateway: CompatEmulatorServer,
) -> None:
    checks = _checks(gateway, "sk-right", probe_lanes=False)
    assert checks["probe compat:gw1"].verdict == "skip"
    assert gateway.state.counters.calls == 0


def test_asked_doctor_makes_one_image_on_the_gateway(gateway: CompatEmulatorServer) -> None:
    check = _checks(gateway, "sk-right", probe_lanes=True)["probe compat:gw1"]
    assert check.verdict == "ok", check.detail
    assert "made one gemini-3-pro-image image as nano-banana-pro" in check.detail
    assert "$0.0500 per image" in check.detail
    assert (gateway.state.counters.calls, gateway.state.counters.images) == (1, 1)


def test_a_key_the_gateway_refuses_is_explained(gateway: CompatEmulatorServer) -> None:
    check = _checks(gateway, "sk-wrong", probe_lanes=True)["probe compat:gw1"]
    assert check.verdict == "fail"
    assert "does not accept the key in BANANABATCH_COMPAT_KEY_GW1" in check.detail
