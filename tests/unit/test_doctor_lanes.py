"""doctor's lane checks (issue 20): configured lanes, a key per gateway in use, third parties
configured while they are off, and a gateway probed only when asked (a probe is billed)."""

from __future__ import annotations

from typing import Any

import pytest

from bananabatch.config import CompatLaneConfig, Settings
from bananabatch.doctor import Check, passed
from bananabatch.doctor_lanes import lane_checks


def gateway(**fields: Any) -> CompatLaneConfig:
    return CompatLaneConfig(
        base_url="https://gw.example/v1", models={"gemini-3-pro-image": "nb-pro"}, **fields
    )


def settings(**fields: Any) -> Settings:
    return Settings(gemini_api_key="AQ.test", **fields)


def by_name(checks: list[Check]) -> dict[str, list[Check]]:
    out: dict[str, list[Check]] = {}
    for check in checks:
        out.setdefault(check.name, []).append(check)
    return out


class Probe:
    """Records the gateways it was asked to call; answers or raises as told."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.error = error

    def __call__(self, label: str, config: CompatLaneConfig) -> str:
        self.calls.append(label)
        if self.error is not None:
            raise self.error
        return f"made one image on {label}"


def test_the_default_lanes_pass_and_name_themselves() -> None:
    checks = lane_checks(settings())
    assert [c.name for c in checks] == ["lanes"]
    assert checks[0].verdict == "ok"
    assert "sync gemini-standard; async none; third parties off" in checks[0].detail


def test_a_gateway_in_use_with_its_key_passes_and_is_not_called_unless_asked() -> None:
    probe = Probe()
    checks = lane_checks(
        settings(
            sync_lanes=("gemini-standard", "compat:gw1"),
            compat_lanes={"gw1": gateway(api_key="sk-1")},
            allow_third_party=True,
        ),
        probe=probe,
    )
    found = by_name(checks)
    assert [c.verdict for c in found["lane compat:gw1"]] == ["ok"]
    assert found["probe compat:gw1"][0].verdict == "skip"
    assert "--probe-lanes" in found["probe compat:gw1"][0].detail
    assert probe.calls == []
    assert passed(checks)


def test_a_gateway_in_use_without_a_key_fails_naming_the_variable_and_the_stack_secret() -> None:
    probe = Probe()
    checks = lane_checks(
        settings(
            sync_lanes=("compat:gw-1",),
            compat_lanes={"gw-1": gateway()},
            allow_third_party=True,
        ),
        probe=probe,
        probe_lanes=True,
    )
    lane = by_name(checks)["lane compat:gw-1"]
    assert [c.verdict for c in lane] == ["fail"]
    assert "BANANABATCH_COMPAT_KEY_GW_1" in lane[0].detail
    assert "pulumi config set --secret bananabatch:compatKey-gw-1" in lane[0].detail
    assert probe.calls == []  # nothing to call it with
    assert not passed(checks)


def test_a_third_party_gateway_while_third_parties_are_off_is_a_warning() -> None:
    checks = lane_checks(
        settings(sync_lanes=("compat:gw1",), compat_lanes={"gw1": gateway(api_key="sk")})
    )
    lane = by_name(checks)["lane compat:gw1"]
    assert [c.verdict for c in lane] == ["warn"]
    assert "will ever be routed to it" in lane[0].detail
    assert passed(checks)


def test_the_model_makers_own_endpoint_is_no_third_party_and_is_not_warned_about() -> None:
    checks = lane_checks(
        settings(
            sync_lanes=("compat:own",),
            compat_lanes={"own": gateway(api_key="sk", third_party=False)},
        )
    )
    assert [c.verdict for c in by_name(checks)["lane compat:own"]] == ["ok"]


def test_a_gateway_configured_but_not_in_the_sync_lanes_is_a_warning_and_never_probed() -> None:
    probe = Probe()
    checks = lane_checks(
        settings(compat_lanes={"idle": gateway()}, allow_third_party=True),
        probe=probe,
        probe_lanes=True,
    )
    found = by_name(checks)
    assert [c.verdict for c in found["lane compat:idle"]] == ["warn"]
    assert "never used" in found["lane compat:idle"][0].detail
    assert "probe compat:idle" not in found
    assert probe.calls == []


def test_a_sync_lane_naming_no_gateway_fails() -> None:
    # config load refuses this; a Settings built past it must still be caught.
    unchecked = Settings.model_construct(
        **{**settings().__dict__, "sync_lanes": ("gemini-standard", "compat:ghost")}
    )
    checks = lane_checks(unchecked)
    lane = by_name(checks)["lane compat:ghost"]
    assert [c.verdict for c in lane] == ["fail"]
    assert "not configured" in lane[0].detail


def test_asked_the_probe_calls_each_gateway_in_use_once() -> None:
    probe = Probe()
    checks = lane_checks(
        settings(
            sync_lanes=("compat:a", "compat:b"),
            compat_lanes={"a": gateway(api_key="x"), "b": gateway(api_key="y")},
            allow_third_party=True,
        ),
        probe=probe,
        probe_lanes=True,
    )
    assert probe.calls == ["a", "b"]
    found = by_name(checks)
    assert found["probe compat:a"][0] == Check("probe compat:a", "ok", "made one image on a")


class Refused(Exception):
    status_code = 401


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (Refused("no"), "does not accept the key in BANANABATCH_COMPAT_KEY_GW1"),
        (ConnectionError("refused"), "ConnectionError: refused"),
    ],
)
def test_a_failed_probe_fails_saying_why(error: Exception, fragment: str) -> None:
    checks = lane_checks(
        settings(
            sync_lanes=("compat:gw1",),
            compat_lanes={"gw1": gateway(api_key="sk-secret-value")},
            allow_third_party=True,
        ),
        probe=Probe(error),
        probe_lanes=True,
    )
    probe = by_name(checks)["probe compat:gw1"][0]
    assert probe.verdict == "fail"
    assert fragment in probe.detail
    assert "sk-secret-value" not in str(checks)


def test_async_lanes_are_warned_about_third_parties_off_and_a_price_above_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = {"replicate_api_token": "r8_x"}
    off = by_name(lane_checks(settings(async_lanes=("replicate",), **token)))["lane replicate"]
    assert [c.verdict for c in off] == ["warn"]
    assert "will never be used" in off[0].detail
    on = by_name(lane_checks(settings(async_lanes=("replicate",), allow_third_party=True, **token)))
    assert [c.verdict for c in on["lane replicate"]] == ["warn"]
    # The dated table prices Replicate above batch for every model it hosts.
    assert "no line is routed to it" in on["lane replicate"][0].detail
    from bananabatch.core import routing

    monkeypatch.setattr(routing, "flat_price", lambda *_args: 0.01)
    on = by_name(lane_checks(settings(async_lanes=("replicate",), allow_third_party=True, **token)))
    assert [c.verdict for c in on["lane replicate"]] == ["ok"]


def test_replicate_named_without_its_token_fails_naming_the_variable_and_the_stack_secret() -> None:
    lane = by_name(lane_checks(settings(async_lanes=("replicate",), allow_third_party=True)))[
        "lane replicate"
    ]
    assert [c.verdict for c in lane] == ["fail", "warn"]
    assert "REPLICATE_API_TOKEN" in lane[0].detail
    assert "bananabatch:replicateApiToken" in lane[0].detail
    with_token = settings(
        async_lanes=("replicate",), allow_third_party=True, replicate_api_token="r8_x"
    )
    assert [c.verdict for c in by_name(lane_checks(with_token))["lane replicate"]] == ["warn"]
