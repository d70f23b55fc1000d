"""The spend commands from outside, on the local stack: `submit --budget` can only lower a
cap, and a paused deployment shows in `ls` / `status` until `bananabatch resume`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bananabatch import cli, config
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock

runner = CliRunner()
LINES = [{"key": f"k{n}", "prompt": f"a picture {n}"} for n in range(3)]


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    config_ = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config_) as server:
        yield server


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(config.ENV_BACKEND, "local")
    monkeypatch.setenv(config.ENV_LOCAL_ROOT, str(tmp_path / "state"))
    monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, emulator.base_url)
    monkeypatch.setenv(config.ENV_GEMINI_API_KEY, "test-key")
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return path


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


def test_submit_budget_lowers_the_job_cap_but_cannot_raise_it(
    local_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.ENV_JOB_BUDGET_USD, "0.01")
    result = invoke("submit", str(local_env), "--yes", "--budget", "1000000", "--json")
    assert result.exit_code == cli.EXIT_HELD, result.output
    job_id = json.loads(result.stdout)["job_id"]
    shown = invoke("status", job_id, "--json")
    assert shown.exit_code == 5  # HELD
    view = json.loads(shown.stdout)
    assert view["state"] == "HELD"
    assert "job budget $0.0100" in view["error"]


def test_a_paused_deployment_shows_in_ls_and_resume_lifts_it(
    local_env: Path, emulator: EmulatorServer
) -> None:
    fault = emulator.state.faults.refuse_creates("credits_depleted", times=None)
    result = invoke("submit", str(local_env), "--yes", "--json")
    job_id = json.loads(result.stdout)["job_id"]
    listing = invoke("ls")
    assert "submission paused (credits_depleted)" in listing.stdout
    assert "bananabatch resume" in listing.stdout
    (listed,) = json.loads(invoke("ls", "--json").stdout)
    assert listed["state"] == "RUNNING"
    view = json.loads(invoke("status", job_id, "--json").stdout)
    assert view["paused"].startswith("credits_depleted: 429 RESOURCE_EXHAUSTED")
    fault.times = 0
    resumed = invoke("resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert [r["kind"] for r in json.loads(resumed.stdout)["lifted"]] == ["credits_depleted"]
    assert json.loads(invoke("status", job_id, "--json").stdout)["paused"] is None
    assert "nothing to resume" in invoke("resume").stdout
    watched = invoke("watch", job_id)
    assert watched.exit_code == 0, watched.output
    assert emulator.state.counters.batches_created == 1


def test_a_model_gone_shows_in_ls_and_resume_tries_it_again(
    local_env: Path, emulator: EmulatorServer
) -> None:
    model = config.DEFAULT_MODEL
    # The whole pipeline in this process, against the test's emulator ("gemini" at its URL).
    root = str(local_env.parent / "state")
    run = ("local", "run", str(local_env), "--yes", "--provider", "gemini", "--root", root)
    fault = emulator.state.faults.refuse_creates("model_not_found", times=None, model=model)
    # No fallback configured: the job fails, each item saying why.
    assert invoke(*run).exit_code == 4
    listing = invoke("ls")
    assert f"model {model} is not served for batches" in listing.stdout
    assert "bananabatch resume" in listing.stdout
    (listed,) = json.loads(invoke("ls", "--json").stdout)
    assert listed["state"] == "FAILED"
    fault.times = 0
    resumed = invoke("resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout) == {"lifted": [], "models_retried": [model]}
    assert "not served" not in invoke("ls").stdout
    local_env.write_text(local_env.read_text().replace("picture", "photo"))
    assert invoke(*run).exit_code == 0
    assert emulator.state.counters.creates_refused == 1


def test_a_local_submit_whose_batch_ends_at_create_has_collected_it_before_it_returns(
    local_env: Path, emulator: EmulatorServer
) -> None:
    # A refusal that ends the batch at create publishes its batch-done; locally that
    # message lives in this command's process, so submit delivers it before exiting
    # (otherwise the job waited for the tick's re-announcement, 3 minutes later).
    emulator.state.faults.refuse_creates("model_not_found", times=None)
    result = invoke("submit", str(local_env), "--yes", "--json")
    assert result.exit_code == cli.EXIT_FAILED, result.output
    job_id = json.loads(result.stdout)["job_id"]
    view = json.loads(invoke("status", job_id, "--json").stdout)
    assert view["state"] == "FAILED", view
    assert view["counts"]["FAILED"] == len(LINES)
