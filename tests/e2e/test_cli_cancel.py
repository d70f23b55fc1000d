"""`bananabatch cancel` on the local stack always ends the job, even when the emulator that
ran its batches is gone: the emulator inside `local run` dies with that process (killed,
Ctrl-C), and one started with `bananabatch emulator` may have been stopped."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bananabatch import cli, config
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock

runner = CliRunner()


def _invoke(*args: str) -> Any:
    result = runner.invoke(cli.app, list(args))
    return result


def _json(result: Any) -> Any:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("url_left_set", [False, True])
def test_cancel_ends_the_job_cancelled_when_its_emulator_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url_left_set: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(config.ENV_BACKEND, "local")
    monkeypatch.setenv(config.ENV_LOCAL_ROOT, str(tmp_path / "state"))
    monkeypatch.setenv(config.ENV_GEMINI_API_KEY, "test-key")
    source = tmp_path / "slow.jsonl"
    source.write_text(
        "".join(
            json.dumps({"key": f"k{n}", "prompt": f"never finishes {n}"}) + "\n" for n in range(3)
        )
    )
    emulator = EmulatorServer(
        EmulatorConfig(pending_seconds=math.inf, running_seconds=0.0, clock=ManualClock())
    ).start()
    try:
        monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, emulator.base_url)
        job_id = _json(_invoke("submit", str(source), "--yes", "--json"))["job_id"]
        running = _json(_invoke("status", job_id, "--json"))
        assert running["state"] == "RUNNING"
    finally:
        emulator.stop()
    if not url_left_set:
        # The emulator ran inside `local run`: nothing says where it was.
        monkeypatch.delenv(config.ENV_GEMINI_BASE_URL)
    cancelled = _invoke("cancel", job_id, "--json")
    assert cancelled.exit_code == 0, cancelled.output
    assert _json(cancelled)["cancelled_batches"] == 1
    status = _json(_invoke("status", job_id, "--json"))
    assert status["state"] == "CANCELLED"
    assert status["counts"]["FAILED"] == 3
    assert sum(status["counts"].values()) == 3
