"""`bananabatch status` on the local stack says when a job waiting for the batch window
(issue 21 point 4) will go, in the window's time zone and in UTC; urgent lines are done."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bananabatch import cli, config
from tests.support.local_cli import local_cli_env

runner = CliRunner()


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    window = {config.ENV_BATCH_WINDOW: "0 2 * * *", config.ENV_BATCH_WINDOW_TZ: "Europe/Paris"}
    with local_cli_env(tmp_path, monkeypatch, window) as root:
        yield root


def test_status_shows_when_a_waiting_job_will_go(local_env: Path, tmp_path: Path) -> None:
    source = tmp_path / "night.jsonl"
    source.write_text(
        '{"key": "later", "prompt": "a lamp"}\n'
        '{"key": "now", "prompt": "a lamp, now", "priority": "urgent"}\n'
    )
    submitted = runner.invoke(cli.app, ["submit", str(source), "--yes", "--json"])
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.stdout)["job_id"]

    view = json.loads(runner.invoke(cli.app, ["status", job_id, "--json"]).stdout)
    window = view["window"]
    assert window["batches"] == 1
    at = datetime.fromisoformat(window["at"])
    assert (at.hour, at.minute) in {(1, 0), (0, 0)}  # 02:00 Paris: CET or CEST
    assert 0 < window["seconds_left"] <= 24 * 3600
    assert view["counts"]["SUCCEEDED"] == 1  # the urgent line did not wait
    assert view["counts"]["PENDING"] == 1

    shown = runner.invoke(cli.app, ["status", job_id])
    flat = " ".join(shown.output.split())
    assert f'{job_id} waiting for the batch window "0 2 * * *" (Europe/Paris)' in flat
    assert "urgent lines did not wait" in flat
