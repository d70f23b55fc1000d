"""The lanes of issue 20 are deployable: their settings reach every function, and each
OpenAI-compatible gateway's key is a Secret Manager secret of its own, read only by the
functions that call the gateways, never part of plain configuration."""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

import bananabatch.config as cfg
from bananabatch_infra.stack_config import InfraConfigError, PipelineArgs, load_args
from tests.infra import harness, spec
from tests.infra.checks import (
    FUNCTION,
    SECRET,
    SECRET_VERSION,
    Deployment,
    check_function_env,
    check_secret_values_hidden,
    iam_grants,
    strings_in,
)
from tests.infra.test_checks_catch_breakage import function, mutate
from tests.infra.test_stack_config import FakeConfig

SCENARIO = "gemini-lanes"
MAIN = Path(__file__).resolve().parents[2] / "infra" / "__main__.py"
GATEWAY = {"baseUrl": "https://gw.example/v1", "models": {"gemini-3-pro-image": "nb-pro"}}


def _env(dep: Deployment, entry_point: str) -> tuple[dict[str, str], dict[str, str]]:
    """A function's plain environment, and its secret variables by name -> secret id."""
    fn = dep.function(entry_point)
    assert fn is not None, entry_point
    service = fn.inputs["serviceConfig"]
    secrets = {s["key"]: s["secret"] for s in service.get("secretEnvironmentVariables") or []}
    return dict(service["environmentVariables"]), secrets


def test_each_gateway_key_is_a_secret_of_its_own_with_a_secret_version() -> None:
    dep = spec.deployed(SCENARIO)
    ids = {r.inputs["secretId"] for r in dep.of_type(SECRET)}
    for label in spec.GATEWAY_KEYS:
        assert f"bananabatch-compat-key-{label}" in ids
    versions = [
        v for v in dep.of_type(SECRET_VERSION) if "compat-key" in str(v.inputs.get("secret"))
    ]
    assert len(versions) == len(spec.GATEWAY_KEYS)
    assert check_secret_values_hidden(dep, spec.GATEWAY_KEYS.values()) == []


def test_no_gateway_key_is_in_any_plain_environment_or_output() -> None:
    dep = spec.deployed(SCENARIO)
    for entry_point in spec.ENTRY_POINTS:
        if dep.function(entry_point) is None:
            continue
        plain, _secrets = _env(dep, entry_point)
        gateways = json.loads(plain[cfg.ENV_COMPAT_LANES])
        assert set(gateways) == set(spec.GATEWAY_KEYS)
        assert all("api_key" not in lane for lane in gateways.values())
        for key in spec.GATEWAY_KEYS.values():
            assert not any(key in text for text in strings_in(plain)), entry_point
    for value in dep.outputs.values():
        for key in spec.GATEWAY_KEYS.values():
            assert not any(key in text for text in strings_in(value))


def test_gateway_keys_reach_only_the_functions_that_call_the_sync_lanes() -> None:
    dep = spec.deployed(SCENARIO)
    args = spec.scenario(SCENARIO)
    want = {
        cfg.compat_key_env(label): f"bananabatch-compat-key-{label}" for label in args.compat_lanes
    }
    assert want == {
        "BANANABATCH_COMPAT_KEY_GW_1": "bananabatch-compat-key-gw-1",
        "BANANABATCH_COMPAT_KEY_GW2": "bananabatch-compat-key-gw2",
    }
    for entry_point in ("on_upload", "on_tick"):
        _plain, secrets = _env(dep, entry_point)
        assert {k: v for k, v in secrets.items() if k in want} == want
    for entry_point in ("on_batch_done",):
        _plain, secrets = _env(dep, entry_point)
        assert not set(secrets) & set(want)


def test_only_the_calling_functions_service_accounts_may_read_the_gateway_keys() -> None:
    dep = spec.deployed(SCENARIO)
    readers: dict[str, set[str]] = {}
    grants, problems = iam_grants(dep)
    assert problems == []
    for grant in grants:
        if grant.scope.startswith("secret:bananabatch-compat-key-"):
            assert grant.role == "roles/secretmanager.secretAccessor"
            assert grant.condition is None
            readers.setdefault(grant.scope, set()).add(grant.member)
    args = spec.scenario(SCENARIO)
    callers = {spec.sa(args, "upload"), spec.sa(args, "tick")}
    assert readers == {
        f"secret:bananabatch-compat-key-{label}": callers for label in spec.GATEWAY_KEYS
    }


def test_the_functions_read_the_lanes_and_the_keys_as_deployed() -> None:
    """What config.Settings makes of a function's environment, with each secret variable
    filled by its secret's value as Cloud Functions does."""
    dep = spec.deployed(SCENARIO)
    by_secret = {f"bananabatch-compat-key-{k}": v for k, v in spec.GATEWAY_KEYS.items()}
    by_secret["bananabatch-replicate-api-token"] = spec.REPLICATE_TOKEN
    for entry_point, with_keys in (
        ("on_upload", True),
        ("on_tick", True),
        ("on_batch_done", False),
    ):
        plain, secrets = _env(dep, entry_point)
        values = {name: by_secret[sid] for name, sid in secrets.items() if sid in by_secret}
        settings = cfg.Settings.from_env(
            {**plain, **values, cfg.ENV_GEMINI_API_KEY: spec.GEMINI_KEY.replace("AIza", "AQ.")}
        )
        assert settings.sync_lanes == ("gemini-standard", "compat:gw-1", "compat:gw2")
        assert settings.async_lanes == ("replicate",)
        assert settings.allow_third_party
        assert settings.failover_on_unknown
        keys = {label: lane.api_key for label, lane in settings.compat_lanes.items()}
        assert keys == (dict(spec.GATEWAY_KEYS) if with_keys else dict.fromkeys(keys, ""))
        assert settings.compat_lanes["gw2"].usd_per_image == 0.05
        assert settings.replicate_api_token == spec.REPLICATE_TOKEN
        assert settings.replicate_models == {"gemini-3-pro-image": "google/nano-banana-pro"}
        assert settings.replicate_usd_per_image == {"1K": 0.04, "4K": 0.08}


def test_replicates_token_reaches_the_callers_and_its_signing_secret_the_receiver_only() -> None:
    dep = spec.deployed(SCENARIO)
    ids = {r.inputs["secretId"] for r in dep.of_type(SECRET)}
    assert {"bananabatch-replicate-api-token", "bananabatch-replicate-webhook-secret"} <= ids
    assert (
        check_secret_values_hidden(dep, [spec.REPLICATE_TOKEN, spec.REPLICATE_WEBHOOK_SECRET]) == []
    )
    _plain, receiver = _env(dep, "on_gemini_webhook")
    assert receiver == {cfg.ENV_REPLICATE_WEBHOOK_SECRET: "bananabatch-replicate-webhook-secret"}
    url = dep.function("on_gemini_webhook")
    assert url is not None
    for entry_point in spec.PROVIDER_CALLERS:
        plain, secrets = _env(dep, entry_point)
        assert secrets[cfg.ENV_REPLICATE_API_TOKEN] == "bananabatch-replicate-api-token"
        assert cfg.ENV_REPLICATE_WEBHOOK_SECRET not in secrets
        # Each prediction names the receiver (its /replicate sub-path, pipeline/tasks.py).
        assert plain[cfg.ENV_WEBHOOK_URL] == url.state["url"]
        assert plain[cfg.ENV_REPLICATE_MODELS] == spec.REPLICATE_MODELS
    grants, _problems = iam_grants(dep)
    readers: dict[str, set[str]] = {
        g.scope: set() for g in grants if g.scope.startswith("secret:bananabatch-replicate-")
    }
    for g in grants:
        if g.scope in readers:
            readers[g.scope].add(g.member)
    args = spec.scenario(SCENARIO)
    assert readers == {
        "secret:bananabatch-replicate-api-token": {
            spec.sa(args, "upload"),
            spec.sa(args, "tick"),
            spec.sa(args, "collect"),
        },
        "secret:bananabatch-replicate-webhook-secret": {spec.sa(args, "webhook")},
    }


def test_replicate_secrets_are_not_deployed_unless_its_lane_is_named() -> None:
    args = PipelineArgs(
        project=harness.PROJECT,
        gemini_api_key=spec.GEMINI_KEY,
        replicate_api_token="r8_unused",
        replicate_webhook_secret="whsec_unused",
    )
    assert not args.replicate_enabled
    assert not args.webhook_on
    dep = harness.deploy(args)
    assert not [r for r in dep.of_type(SECRET) if "replicate" in r.inputs["secretId"]]


def test_a_stack_without_lanes_sets_no_lane_variables() -> None:
    for entry_point in spec.PROVIDER_CALLERS:
        plain, secrets = _env(spec.deployed("gemini"), entry_point)
        lane_names = {
            cfg.ENV_SYNC_LANES,
            cfg.ENV_ASYNC_LANES,
            cfg.ENV_COMPAT_LANES,
            cfg.ENV_ALLOW_THIRD_PARTY,
            cfg.ENV_FAILOVER_ON_UNKNOWN,
        }
        assert not set(plain) & lane_names
        assert not any(k.startswith(cfg.COMPAT_KEY_ENV_PREFIX) for k in secrets)


def _lanes_env(dep: Deployment) -> list[str]:
    args = spec.scenario(SCENARIO)
    return check_function_env(dep, spec.expected_plain_env(args), spec.expected_secret_env(args))


def test_the_environment_check_notices_a_gateway_key_in_plain_configuration() -> None:
    dep = spec.deployed(SCENARIO)
    assert _lanes_env(dep) == []
    key_name = cfg.compat_key_env("gw2")
    upload = function(dep, "on_upload")

    def as_plain_variable(inputs: dict[str, Any]) -> None:
        service = inputs["serviceConfig"]
        service["secretEnvironmentVariables"] = [
            s for s in service["secretEnvironmentVariables"] if s["key"] != key_name
        ]
        service["environmentVariables"][key_name] = spec.GATEWAY_KEYS["gw2"]

    def inside_the_lanes_json(inputs: dict[str, Any]) -> None:
        plain = inputs["serviceConfig"]["environmentVariables"]
        lanes = json.loads(plain[cfg.ENV_COMPAT_LANES])
        lanes["gw2"]["api_key"] = spec.GATEWAY_KEYS["gw2"]
        plain[cfg.ENV_COMPAT_LANES] = json.dumps(lanes)

    problems = _lanes_env(mutate(dep, upload, as_plain_variable))
    assert any("(a gateway key) is a plain variable" in p for p in problems), problems
    problems = _lanes_env(mutate(dep, upload, inside_the_lanes_json))
    assert any("gateway gw2's key is in the plain" in p for p in problems), problems
    hidden = check_secret_values_hidden(
        mutate(dep, upload, inside_the_lanes_json), spec.GATEWAY_KEYS.values()
    )
    assert any("plain text" in p for p in hidden), hidden


# --- stack configuration ------------------------------------------------------------------

KEY = {"geminiApiKey": "k"}


def load(values: dict[str, str], secrets: dict[str, str] | None = None) -> PipelineArgs:
    return load_args(FakeConfig(values, {**KEY, **(secrets or {})}), FakeConfig({"project": "p-1"}))


def test_lane_settings_are_read_from_stack_config_and_keys_as_secret_outputs() -> None:
    args = load(
        {
            "syncLanes": "gemini-standard, compat:gw1",
            "asyncLanes": "replicate",
            "compatLanes": json.dumps({"gw1": {**GATEWAY, "usdPerImage": 0.04, "timeoutS": 30}}),
            "allowThirdParty": "true",
            "failoverOnUnknown": "yes",
            "replicateUsdPerImage": "0.03",
        },
        {"compatKey-gw1": "sk-gw1", "replicateApiToken": "r8_x", "replicateWebhookSecret": "w"},
    )
    assert args.sync_lanes == ("gemini-standard", "compat:gw1")
    assert args.replicate_usd_per_image == "0.03"
    assert isinstance(args.replicate_api_token, pulumi.Output)
    assert isinstance(args.replicate_webhook_secret, pulumi.Output)
    assert args.replicate_webhook_on
    assert args.async_lanes == ("replicate",)
    lane = args.compat_lanes["gw1"]
    assert (lane.base_url, lane.usd_per_image, lane.timeout_s, lane.api_key) == (
        "https://gw.example/v1",
        0.04,
        30.0,
        "",
    )
    assert lane.models == {"gemini-3-pro-image": "nb-pro"}
    assert args.allow_third_party
    assert args.failover_on_unknown
    assert isinstance(args.compat_lane_keys["gw1"], pulumi.Output)
    assert "sk-gw1" not in repr(args)


def test_defaults_are_the_applications() -> None:
    args, defaults = load({}), cfg.Settings()
    assert args.sync_lanes == defaults.sync_lanes
    assert args.async_lanes == defaults.async_lanes
    assert not args.compat_lanes
    assert not args.compat_lane_keys
    assert args.allow_third_party is defaults.allow_third_party is False
    assert args.failover_on_unknown is defaults.failover_on_unknown is False


@pytest.mark.parametrize(
    ("values", "secrets", "fragment"),
    [
        # a key in plain config, under any spelling
        ({"compatLanes": json.dumps({"gw1": {**GATEWAY, "apiKey": "sk"}})}, {}, "never goes"),
        ({"compatLanes": json.dumps({"gw1": {**GATEWAY, "api_key": "sk"}})}, {}, "never goes"),
        # a gateway without its key says how to set it
        (
            {"compatLanes": json.dumps({"gw1": GATEWAY})},
            {},
            "pulumi config set --secret bananabatch:compatKey-gw1",
        ),
        # a sync lane naming no gateway, as the functions would refuse it
        ({"syncLanes": "gemini-standard,compat:nope"}, {}, "sync lane 'compat:nope'"),
        ({"compatLanes": json.dumps({"gw1": {**GATEWAY, "bogus": 1}})}, {}, "unknown bogus"),
        ({"compatLanes": json.dumps({"gw1": {**GATEWAY, "models": {}}})}, {}, "at least one"),
        ({"compatLanes": "[1]"}, {}, "object of gateways"),
        ({"compatLanes": "{not json"}, {}, "not a JSON object"),
        ({"allowThirdParty": "maybe"}, {}, "true or false"),
        # Replicate needs its token; its model names are checked as the functions would
        ({"asyncLanes": "replicate"}, {}, "bananabatch:replicateApiToken"),
        (
            {"asyncLanes": "replicate", "replicateModels": '{"dall-e-9": "a/b"}'},
            {"replicateApiToken": "r8"},
            "unknown catalog model",
        ),
        # Replicate's own price: a number >= 0, or numbers by size tier, as the functions check
        (
            {"asyncLanes": "replicate", "replicateUsdPerImage": "-0.01"},
            {"replicateApiToken": "r8"},
            "bananabatch:replicateUsdPerImage: a price must be a number >= 0",
        ),
        (
            {"asyncLanes": "replicate", "replicateUsdPerImage": '{"8K": 0.1}'},
            {"replicateApiToken": "r8"},
            "replicateUsdPerImage: unknown size tier 8K",
        ),
        # labels whose key variables would be the same
        (
            {"compatLanes": json.dumps({"a-b": GATEWAY, "a_b": GATEWAY})},
            {"compatKey-a-b": "x", "compatKey-a_b": "y"},
            "rename one",
        ),
    ],
)
def test_unusable_lane_configuration_is_refused_with_what_to_do(
    values: dict[str, str], secrets: dict[str, str], fragment: str
) -> None:
    with pytest.raises(InfraConfigError, match=fragment):
        load(values, secrets)


def test_a_refused_plain_key_is_never_echoed() -> None:
    with pytest.raises(InfraConfigError) as caught:
        load({"compatLanes": json.dumps({"gw1": {**GATEWAY, "apiKey": "sk-leak-me"}})})
    assert "sk-leak-me" not in str(caught.value)


def test_a_pipeline_args_gateway_holding_a_key_is_refused() -> None:
    gateway = cfg.CompatLaneConfig(
        base_url="https://gw.example/v1", models={"gemini-3-pro-image": "x"}, api_key="sk"
    )
    with pytest.raises(InfraConfigError, match="never goes in plain"):
        PipelineArgs(
            project="p",
            gemini_api_key="k",
            compat_lanes={"gw1": gateway},
            compat_lane_keys={"gw1": "sk"},
        )


# --- through infra/__main__.py and pulumi.Config ------------------------------------------


@pytest.fixture
def lanes_stack() -> Iterator[None]:
    config = {
        "gcp:project": harness.PROJECT,
        "bananabatch:geminiApiKey": "AIza-from-stack-config",
        "bananabatch:syncLanes": "gemini-standard,compat:gw1",
        # Structured config (`pulumi config set --path`) reaches the program as JSON.
        "bananabatch:compatLanes": json.dumps({"gw1": GATEWAY}),
        "bananabatch:compatKey-gw1": "sk-from-stack-config",
        "bananabatch:allowThirdParty": "true",
    }
    pulumi.runtime.set_all_config(
        config, secret_keys=["bananabatch:geminiApiKey", "bananabatch:compatKey-gw1"]
    )
    yield
    pulumi.runtime.set_all_config({}, secret_keys=[])


def test_main_deploys_the_lanes_from_stack_config(
    lanes_stack: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pulumi, "export", lambda _key, _value: None)
    harness.MOCKS.reset()

    def program() -> None:
        runpy.run_path(str(MAIN), run_name="__main__")

    harness.run_program(program)
    dep = Deployment(resources=tuple(harness.MOCKS.resources))
    assert check_secret_values_hidden(dep, ["sk-from-stack-config"]) == []
    assert "bananabatch-compat-key-gw1" in {r.inputs["secretId"] for r in dep.of_type(SECRET)}
    upload: Any = next(r for r in dep.of_type(FUNCTION) if r.inputs["name"].endswith("on-upload"))
    service = upload.inputs["serviceConfig"]
    assert service["environmentVariables"][cfg.ENV_SYNC_LANES] == "gemini-standard,compat:gw1"
    assert service["environmentVariables"][cfg.ENV_ALLOW_THIRD_PARTY] == "true"
    keys = [
        s for s in service["secretEnvironmentVariables"] if s["key"] == "BANANABATCH_COMPAT_KEY_GW1"
    ]
    assert [s["secret"] for s in keys] == ["bananabatch-compat-key-gw1"]
