from __future__ import annotations

import pytest

from bananabatch import config
from bananabatch.config import Backend, ProviderKind, Settings
from bananabatch.errors import ConfigError


def test_settings_read_every_field_from_its_environment_variable() -> None:
    env = {
        config.ENV_BACKEND: "gcp",
        config.ENV_PROVIDER: "vertex",
        config.ENV_PROJECT: "my-project",
        config.ENV_MAX_ACTIVE_BATCHES: "7",
        config.ENV_DAILY_BUDGET_USD: "12.5",
        config.ENV_PRICE_OVERRIDES: '{"gemini-3-pro-image": {"batch_multiplier": 0.8}}',
    }
    settings = Settings.from_env(env)
    assert settings.backend is Backend.GCP
    assert settings.provider is ProviderKind.VERTEX
    assert settings.project == "my-project"
    assert settings.max_active_batches == 7
    assert settings.daily_budget_usd == 12.5
    assert settings.price_overrides == {"gemini-3-pro-image": {"batch_multiplier": 0.8}}


def test_blank_environment_values_fall_back_to_defaults() -> None:
    settings = Settings.from_env({config.ENV_MAX_ACTIVE_BATCHES: "  "})
    assert settings.max_active_batches == Settings().max_active_batches


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.max_attempts = 9  # type: ignore[misc]


def test_an_invalid_value_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="max_active_batches"):
        Settings.from_env({config.ENV_MAX_ACTIVE_BATCHES: "zero"})


def test_to_env_round_trips_through_from_env() -> None:
    original = Settings(
        backend=Backend.GCP, project="p", job_budget_usd=3.0, price_overrides={"m": {"x": 1.0}}
    )
    assert Settings.from_env(original.to_env()) == original


def test_every_env_constant_is_a_distinct_name() -> None:
    names = [v for k, v in vars(config).items() if k.startswith("ENV_")]
    assert len(names) == len(set(names)) == len(config.ALL_ENV_NAMES)


def test_secrets_do_not_appear_in_the_settings_repr() -> None:
    settings = Settings(gemini_api_key="sk-very-secret", webhook_secret="whsec_abc")
    assert "sk-very-secret" not in repr(settings)
    assert "whsec_abc" not in repr(settings)


def test_a_refused_setting_is_named_without_echoing_its_value() -> None:
    # A standard key may still open other Google APIs: refusing it must not print it.
    key = "AIzaSyD-secret-looking-0123456789abcdef"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({config.ENV_GEMINI_API_KEY: key, config.ENV_MAX_ACTIVE_BATCHES: "x"})
    message = str(caught.value)
    assert "gemini_api_key" in message
    assert "auth key" in message
    assert "max_active_batches" in message
    assert "secret-looking" not in message
    assert "errors.pydantic.dev" not in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gemini-3-pro-imag", "unknown fallback model 'gemini-3-pro-imag'"),
        ("gemini-2.5-flash-image", "the fallback model cannot be used"),
    ],
)
def test_a_fallback_model_that_could_never_serve_is_refused_at_config_load(
    value: str, expected: str
) -> None:
    # A typo here would only show when a model is gone: the worst moment to find it.
    with pytest.raises(ConfigError, match=expected):
        Settings.from_env({config.ENV_FALLBACK_MODEL: value})


def test_a_catalog_fallback_model_is_taken_by_its_canonical_id() -> None:
    settings = Settings.from_env({config.ENV_FALLBACK_MODEL: "models/gemini-3-pro-image"})
    assert settings.fallback_model == "gemini-3-pro-image"


COMPAT = (
    '{"gw1": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-gw-secret",'
    ' "models": {"nano-banana-pro": "nb-pro"}, "usd_per_image": 0.05}}'
)


def test_lanes_default_to_gemini_alone_with_third_parties_off() -> None:
    settings = Settings()
    assert settings.sync_lanes == (config.GEMINI_STANDARD_LANE,)
    assert settings.async_lanes == ()
    assert settings.allow_third_party is False
    assert settings.failover_on_unknown is False


def test_sync_lanes_are_read_in_failover_order_with_their_gateways() -> None:
    settings = Settings.from_env(
        {
            config.ENV_SYNC_LANES: "compat:gw1, gemini-standard",
            config.ENV_COMPAT_LANES: COMPAT,
            config.ENV_ALLOW_THIRD_PARTY: "true",
        }
    )
    assert settings.sync_lanes == ("compat:gw1", "gemini-standard")
    gateway = settings.compat_lanes["gw1"]
    # Models are named by the catalog's id whatever alias the owner wrote.
    assert gateway.models == {"gemini-3-pro-image": "nb-pro"}
    assert (gateway.usd_per_image, gateway.third_party) == (0.05, True)
    assert Settings.from_env(settings.to_env()) == settings
    assert "sk-gw-secret" not in repr(settings)


GATEWAY_NO_KEY = (
    '{"gw-1": {"base_url": "https://gw.example/v1", "models": {"nano-banana-pro": "x"}}}'
)


def test_a_gateway_key_is_read_from_its_own_variable_as_a_deployment_injects_it() -> None:
    assert config.compat_key_env("gw-1") == "BANANABATCH_COMPAT_KEY_GW_1"
    settings = Settings.from_env(
        {
            config.ENV_SYNC_LANES: "compat:gw-1",
            config.ENV_COMPAT_LANES: GATEWAY_NO_KEY,
            "BANANABATCH_COMPAT_KEY_GW_1": " sk-from-secret ",
        }
    )
    assert settings.compat_lanes["gw-1"].api_key == "sk-from-secret"
    assert "sk-from-secret" not in repr(settings)
    # Without the variable the gateway has no key (doctor says so), and nothing fails here.
    assert (
        Settings.from_env({config.ENV_COMPAT_LANES: GATEWAY_NO_KEY}).compat_lanes["gw-1"].api_key
        == ""
    )


def test_a_gateway_key_variable_without_its_gateway_or_beside_a_json_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="BANANABATCH_COMPAT_KEY_GW2 is set") as caught:
        Settings.from_env(
            {config.ENV_COMPAT_LANES: GATEWAY_NO_KEY, "BANANABATCH_COMPAT_KEY_GW2": "sk-stray"}
        )
    assert "sk-stray" not in str(caught.value)
    with pytest.raises(ConfigError, match="set twice") as caught:
        Settings.from_env(
            {
                config.ENV_COMPAT_LANES: GATEWAY_NO_KEY.replace(
                    '"models"', '"api_key": "a", "models"'
                ),
                "BANANABATCH_COMPAT_KEY_GW_1": "sk-other",
            }
        )
    assert "sk-other" not in str(caught.value)


def test_gateway_labels_whose_key_variables_collide_are_refused() -> None:
    lane = '{"base_url": "u", "models": {"nano-banana-pro": "x"}}'
    with pytest.raises(ConfigError, match="rename one"):
        Settings.from_env({config.ENV_COMPAT_LANES: f'{{"a-b": {lane}, "a_b": {lane}}}'})


def test_a_sync_lane_without_its_gateway_is_refused_at_config_load() -> None:
    with pytest.raises(ConfigError, match="sync lane 'compat:gw2'"):
        Settings.from_env({config.ENV_SYNC_LANES: "compat:gw2", config.ENV_COMPAT_LANES: COMPAT})


def test_a_gateway_serving_an_unknown_model_is_refused_at_config_load() -> None:
    with pytest.raises(ConfigError, match="compat_lanes"):
        Settings.from_env(
            {config.ENV_COMPAT_LANES: '{"gw": {"base_url": "x", "models": {"dall-e-9": "d"}}}'}
        )
