"""`bananabatch doctor` end to end: against the emulator from a clean environment (the
fresh-clone path), on both stacks (the gcp one reaches buckets, Firestore and topics), and
each failure it exists to catch, explained."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from typer.testing import CliRunner

from bananabatch import cli, config
from bananabatch.config import Settings, WebhookMode
from bananabatch.core.catalog import CATALOG_AS_OF, DEFAULT_MODEL
from bananabatch.doctor import (
    UNAUTHENTICATED_SENTENCE,
    Check,
    Probes,
    judge_models,
    list_models,
    list_webhooks,
    passed,
    run_doctor,
)
from bananabatch.emulator.models import SERVED_MODELS_WITH_BATCH
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig
from bananabatch.errors import ProviderAuthError
from tests.support.stacks import Stack

runner = CliRunner()


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig()) as server:
        yield server


def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing but what a fresh clone's user sets: no BANANABATCH_* left from elsewhere."""
    for name in config.ALL_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _doctor(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(cli.app, ["doctor", "--json", *args])
    return result.exit_code, json.loads(result.output)


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in doc["checks"]}


def test_doctor_runs_green_against_the_emulator_from_a_clean_environment(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, emulator.base_url)
    monkeypatch.setenv(config.ENV_GEMINI_API_KEY, "local")
    code, doc = _doctor()
    assert code == 0, doc
    assert doc["ok"] is True
    checks = _by_name(doc)
    assert checks["auth"]["verdict"] == "ok"
    assert checks["default model"]["verdict"] == "ok"
    assert DEFAULT_MODEL in checks["default model"]["detail"]
    assert "gemini-3-pro-image" in checks["catalog models with batch"]["detail"]
    # NB2.1's batch support is undocumented, and the emulator plays that answer by default.
    assert "gemini-nano-banana-2.1" in checks["catalog models without batch"]["detail"]
    assert checks["files store"]["verdict"] == "ok"
    assert checks["files store"]["detail"].startswith("0.00 GiB of 20 GiB used")
    assert all(c["verdict"] != "fail" for c in doc["checks"])


def test_doctor_warns_when_the_files_store_is_past_its_threshold(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, emulator.base_url)
    monkeypatch.setenv(config.ENV_GEMINI_API_KEY, "local")
    monkeypatch.setenv(config.ENV_FILES_STORE_WARN_BYTES, "100")
    client = genai.Client(api_key="local", http_options={"base_url": emulator.base_url})
    client.files.upload(file=io.BytesIO(b"{}\n" * 100), config={"mime_type": "jsonl"})
    code, doc = _doctor()
    files = _by_name(doc)["files store"]
    assert files["verdict"] == "warn", files
    assert "result files cannot be deleted" in files["detail"]
    assert code == 0  # a warning, not a failure: nothing is wrong yet


def test_doctor_refuses_a_standard_key_with_the_auth_key_sentence(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _clean_env(monkeypatch, tmp_path)
    monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, emulator.base_url)
    monkeypatch.setenv(config.ENV_PROVIDER, "gemini")
    monkeypatch.setenv(config.ENV_GEMINI_API_KEY, "AIzaSyA-standard-key-0000000000000000")
    code, doc = _doctor()
    assert code == 1
    assert doc["checks"][0]["verdict"] == "fail"
    assert config.AUTH_KEY_SENTENCE in doc["checks"][0]["detail"]
    assert emulator.state.counters.batches_created == 0


def test_doctor_explains_a_key_the_service_does_not_know(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with EmulatorServer(EmulatorConfig(api_key="AQ.the-right-one")) as server:
        settings = Settings(gemini_base_url=server.base_url, gemini_api_key="AQ.another-one")
        checks = {c.name: c for c in run_doctor(settings, CATALOG_AS_OF)}
    assert checks["auth"].verdict == "fail"
    assert "API key not valid" in checks["auth"].detail


@pytest.mark.parametrize(
    "error",
    [
        genai_errors.ClientError(
            401,
            {
                "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials.",
                    "status": "UNAUTHENTICATED",
                    "details": [{"reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED"}],
                }
            },
        ),
        ProviderAuthError("401 UNAUTHENTICATED ACCESS_TOKEN_TYPE_UNSUPPORTED"),
    ],
)
def test_doctor_explains_a_401_access_token_type_unsupported(error: Exception) -> None:
    def refuse(_settings: Settings) -> dict[str, tuple[str, ...]]:
        raise error

    probes = Probes(list_models=refuse, list_webhooks=list_webhooks, gcp=lambda _s: [])
    settings = Settings(provider="gemini", gemini_api_key="AQ.bound-elsewhere")
    checks = run_doctor(settings, CATALOG_AS_OF, probes)
    auth = {c.name: c for c in checks}["auth"]
    assert auth.verdict == "fail"
    assert auth.detail.startswith(UNAUTHENTICATED_SENTENCE)
    assert not passed(checks)


def test_the_emulator_lists_models_as_the_sdk_reads_them(emulator: EmulatorServer) -> None:
    listed = list_models(Settings(gemini_base_url=emulator.base_url))
    assert "batchGenerateContent" in listed[DEFAULT_MODEL]
    assert "batchGenerateContent" in listed["gemini-2.5-flash"]  # text batches exist too
    assert "batchGenerateContent" not in listed["gemini-embedding-001"]
    # models.get, through the SDK's own types.
    from google import genai

    client = genai.Client(api_key="k", http_options={"base_url": emulator.base_url})
    model = client.models.get(model="gemini-3-pro-image")
    assert model.name == "models/gemini-3-pro-image"
    assert model.supported_actions is not None
    assert "batchGenerateContent" in model.supported_actions
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.get(model="imagen-9")
    assert caught.value.code == 404
    # A small page size walks every page.
    names = [m.name for m in client.models.list(config={"page_size": 2})]
    assert len(names) == len(listed) == len(set(names))


def test_the_emulator_can_play_nano_banana_2_1_with_batch_support() -> None:
    with EmulatorServer(EmulatorConfig(served_models=SERVED_MODELS_WITH_BATCH)) as server:
        listed = list_models(Settings(gemini_base_url=server.base_url))
    assert "batchGenerateContent" in listed["gemini-nano-banana-2.1"]
    checks = judge_models(listed, DEFAULT_MODEL, CATALOG_AS_OF)
    assert "catalog models without batch" not in {c.name for c in checks}


def test_models_missing_either_way_are_flagged_and_an_unbatchable_default_fails() -> None:
    listed = {
        "gemini-3-pro-image": ("generateContent", "batchGenerateContent"),
        DEFAULT_MODEL: ("generateContent",),
        "gemini-4-flash-image": ("generateContent", "batchGenerateContent"),
        "gemini-2.5-flash": ("generateContent", "batchGenerateContent"),
    }
    checks = {c.name: c for c in judge_models(listed, DEFAULT_MODEL, CATALOG_AS_OF)}
    assert checks["default model"].verdict == "fail"
    assert "without batchGenerateContent" in checks["default model"].detail
    assert checks["image models not in the catalog"].detail.startswith("gemini-4-flash-image")
    missing = checks["catalog models not listed"].detail
    assert "gemini-3.1-flash-image" in missing
    assert "gemini-2.5-flash-image" not in missing  # shut down: its absence is expected
    assert "although its model page documents batch support" in (
        checks["catalog models without batch"].detail
    )
    # The same list on a day 2.5 Flash Image was still served misses it too.
    early = {c.name: c for c in judge_models(listed, DEFAULT_MODEL, date(2026, 9, 1))}
    assert "gemini-2.5-flash-image" in early["catalog models not listed"].detail


def test_static_webhook_mode_checks_the_registration(emulator: EmulatorServer) -> None:
    url = "https://example.test/hook"
    settings = Settings(
        gemini_base_url=emulator.base_url,
        webhook_mode=WebhookMode.STATIC,
        webhook_url=url,
        webhook_secret="whsec_c2VjcmV0",
    )
    before = {c.name: c for c in run_doctor(settings, CATALOG_AS_OF)}["webhook"]
    assert before.verdict == "fail"
    assert "no webhook registered" in before.detail
    httpx.post(
        f"{emulator.base_url}/v1beta/webhooks",
        headers={"x-goog-api-key": "k"},
        json={"uri": url, "subscribed_events": ["batch.succeeded", "batch.failed"]},
    ).raise_for_status()
    after = {c.name: c for c in run_doctor(settings, CATALOG_AS_OF)}["webhook"]
    assert after == Check("webhook", "ok", f"{url} is registered")
    no_secret = settings.model_copy(update={"webhook_secret": None})
    assert {c.name: c for c in run_doctor(no_secret, CATALOG_AS_OF)}["webhook"].verdict == "fail"


def test_doctor_reaches_every_store_of_the_stack(stack: Stack) -> None:
    checks = run_doctor(stack.settings, CATALOG_AS_OF)
    assert passed(checks), checks
    names = {c.name: c for c in checks}
    if stack.settings.backend is config.Backend.GCP:
        for topic in (
            stack.settings.topic_tick,
            stack.settings.topic_batch_done,
            stack.settings.topic_completions,
        ):
            assert names[f"topic {topic}"].verdict == "ok"
        assert names["firestore"].verdict == "ok"
        assert names[f"bucket {stack.settings.results_bucket}"].verdict == "ok"
        # A topic that does not exist is a failure, named.
        missing = stack.settings.model_copy(update={"topic_completions": "no-such-topic"})
        failed = {c.name: c for c in run_doctor(missing, CATALOG_AS_OF)}
        assert failed["topic no-such-topic"].verdict == "fail"
    else:
        assert names["gcp"].verdict == "skip"
