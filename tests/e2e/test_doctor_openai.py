"""`bananabatch doctor` on the OpenAI provider (issue 19 part 7): skipped where it is off,
its key checked against the service (here the OpenAI emulator, through the unmodified SDK),
a refused key and a malformed webhook secret explained."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from bananabatch.config import Settings
from bananabatch.doctor import Check, Probes, passed, run_doctor
from bananabatch.emulator.openai import OpenAIEmulatorConfig, OpenAIEmulatorServer

TODAY = date(2026, 12, 7)


@pytest.fixture
def openai_emulator() -> Iterator[OpenAIEmulatorServer]:
    with OpenAIEmulatorServer(OpenAIEmulatorConfig(api_key="sk-right")) as server:
        yield server


def _probes(**openai: Any) -> Probes:
    """Gemini's side answered as healthy: these tests look at OpenAI's checks only."""
    return Probes(
        list_models=lambda _s: {"gemini-3.1-flash-lite-image": ("batchGenerateContent",)},
        list_webhooks=lambda _s: [],
        gcp=lambda _s: [],
        **openai,
    )


def _openai(settings: Settings) -> dict[str, Check]:
    checks = run_doctor(settings, TODAY, _probes())
    return {c.name: c for c in checks if c.name.startswith("openai")}


def _settings(**fields: Any) -> Settings:
    return Settings(gemini_api_key="AQ.test", **fields)


def test_doctor_skips_openai_where_it_is_not_enabled() -> None:
    checks = _openai(_settings())
    assert list(checks) == ["openai"]
    assert checks["openai"].verdict == "skip"
    assert "rejected at intake" in checks["openai"].detail


def test_doctor_fails_an_enabled_openai_without_a_key() -> None:
    checks = _openai(_settings(openai_enabled=True))
    assert checks["openai key"].verdict == "fail"
    assert "OPENAI_API_KEY is empty" in checks["openai key"].detail


def test_doctor_passes_an_accepted_key_and_a_webhook_secret(
    openai_emulator: OpenAIEmulatorServer,
) -> None:
    settings = _settings(
        openai_enabled=True,
        openai_api_key="sk-right",
        openai_base_url=openai_emulator.base_url,
        openai_webhook_secret="whsec_c2VjcmV0",
    )
    checks = _openai(settings)
    assert checks["openai auth"].verdict == "ok", checks["openai auth"]
    assert checks["openai webhook"].verdict == "ok"
    assert passed(list(checks.values()))


def test_doctor_explains_a_key_openai_refuses(openai_emulator: OpenAIEmulatorServer) -> None:
    settings = _settings(
        openai_enabled=True, openai_api_key="sk-wrong", openai_base_url=openai_emulator.base_url
    )
    checks = _openai(settings)
    assert checks["openai auth"].verdict == "fail"
    assert "401" in checks["openai auth"].detail
    assert "does not accept this key" in checks["openai auth"].detail
    assert checks["openai webhook"].verdict == "skip"  # polling still finds the batches


def test_doctor_fails_a_webhook_secret_that_is_not_a_signing_secret() -> None:
    settings = _settings(
        openai_enabled=True, openai_api_key="sk-x", openai_webhook_secret="my-password"
    )
    checks = {c.name: c for c in run_doctor(settings, TODAY, _probes(openai=lambda _s: 0))}
    assert checks["openai webhook"].verdict == "fail"
    assert "whsec_" in checks["openai webhook"].detail
