"""Issue 17 part 5: tables that never cut anything, in a pipe and on a narrow terminal, and
`--format table|json|csv` on `status` as on `ls`. The terminal cases run on a real 80-column
pseudo-terminal; the pipe cases run the installed command with its stdout a real pipe."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bananabatch import cli, config
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig
from tests.support import terminal

runner = CliRunner()
NAME = "a-catalog-with-a-rather-long-name-for-spring-2026.jsonl"
KEYS = [f"spring26-catalogue-sku-{n:05d}-hero-shot-on-white" for n in range(3)]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    with EmulatorServer(EmulatorConfig(pending_seconds=0.0, running_seconds=0.0)) as emulator:
        values = {
            config.ENV_BACKEND: "local",
            config.ENV_LOCAL_ROOT: str(tmp_path / "state"),
            config.ENV_GEMINI_BASE_URL: emulator.base_url,
            config.ENV_GEMINI_API_KEY: "test-key",
        }
        monkeypatch.chdir(tmp_path)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        yield values


@pytest.fixture
def job_id(tmp_path: Path, env: dict[str, str]) -> str:
    lines = [{"key": key, "prompt": f"product {n}"} for n, key in enumerate(KEYS)]
    lines.append({"key": "spring26-bad-ratio", "prompt": "x", "aspect_ratio": "7:3"})
    (tmp_path / NAME).write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = runner.invoke(
        cli.app, ["local", "run", NAME, "--yes", "--provider", "gemini", "--json"]
    )
    assert result.exit_code == cli.EXIT_PARTIAL, result.output
    return str(json.loads(result.stdout)["job_id"])


def _piped(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [terminal.BIN, *args],
        cwd=tmp_path,
        env={**terminal.session_free_environ(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _on_80_columns(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    child = terminal.spawn(list(args), cwd=tmp_path, env=env, columns=80)
    return terminal.finish(child)


@pytest.mark.parametrize("command", ["ls", "status", "status JOB"])
def test_at_80_columns_every_job_id_count_and_amount_is_shown_whole(
    tmp_path: Path, env: dict[str, str], job_id: str, command: str
) -> None:
    status, said = _on_80_columns(tmp_path, env, *command.replace("JOB", job_id).split())
    assert status in (cli.EXIT_OK, cli.EXIT_PARTIAL), said
    assert "…" not in said
    lines = said.splitlines()
    assert all(len(line) <= 80 for line in lines), said
    assert any(job_id in line for line in lines), said
    text = " ".join(said.split())
    assert "PARTIAL" in text
    assert "succeeded 3" in text
    assert "rejected 1" in text
    assert "spent $0.05 of est. $0.05" in text


@pytest.mark.parametrize("command", ["ls", "status", "status JOB"])
def test_in_a_pipe_the_table_cuts_nothing(
    tmp_path: Path, env: dict[str, str], job_id: str, command: str
) -> None:
    result = _piped(tmp_path, env, *command.replace("JOB", job_id).split())
    assert result.returncode in (cli.EXIT_OK, cli.EXIT_PARTIAL), result
    assert "…" not in result.stdout
    (row,) = [line for line in result.stdout.splitlines() if job_id in line]
    assert "PARTIAL" in row
    assert "spent $0.05 of est. $0.05" in row


def test_status_speaks_csv_with_the_columns_of_ls(
    tmp_path: Path, env: dict[str, str], job_id: str
) -> None:
    one = _piped(tmp_path, env, "status", job_id, "--format", "csv")
    assert one.returncode == cli.EXIT_PARTIAL, one
    (row,) = list(csv.DictReader(one.stdout.splitlines()))
    assert row["job"] == job_id
    assert (row["state"], row["lines"], row["succeeded"], row["rejected"]) == (
        "PARTIAL",
        "4",
        "3",
        "1",
    )
    every = _piped(tmp_path, env, "status", "--format", "csv")
    listed = _piped(tmp_path, env, "ls", "--format", "csv")
    header = every.stdout.splitlines()[0]
    assert header == listed.stdout.splitlines()[0] == one.stdout.splitlines()[0]
    assert [r["job"] for r in csv.DictReader(every.stdout.splitlines())] == [job_id]


def test_status_format_json_is_the_job_view_json_gives(
    tmp_path: Path, env: dict[str, str], job_id: str
) -> None:
    def view(*args: str) -> Any:
        result = _piped(tmp_path, env, "status", *args)
        assert result.returncode == cli.EXIT_PARTIAL, result
        doc = json.loads(result.stdout)
        doc.pop("age_seconds")
        return doc

    formatted = view(job_id, "--format", "json")
    assert formatted == view(job_id, "--json")
    assert formatted["job_id"] == job_id
    assert formatted["counts"]["SUCCEEDED"] == 3


def test_keys_are_whole_in_the_results_a_person_reads(
    tmp_path: Path, env: dict[str, str], job_id: str
) -> None:
    folder = tmp_path / "state" / "buckets" / "results" / "jobs" / job_id
    results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in results] == [*KEYS, "spring26-bad-ratio"]
    costs = list(csv.DictReader((folder / "costs.csv").open()))
    assert [r["key"] for r in costs] == [*KEYS, "spring26-bad-ratio"]
    fetched = _piped(tmp_path, env, "fetch", job_id, "--to", "images")
    assert fetched.returncode == 0, fetched
    assert sorted(p.stem for p in (tmp_path / "images").iterdir()) == KEYS


def test_local_run_at_80_columns_shows_its_plan_progress_and_summary_whole(
    tmp_path: Path, env: dict[str, str]
) -> None:
    lines = [{"key": key, "prompt": f"product {n}"} for n, key in enumerate(KEYS)]
    (tmp_path / NAME).write_text("".join(json.dumps(line) + "\n" for line in lines))
    status, said = _on_80_columns(
        tmp_path, env, "local", "run", NAME, "--yes", "--provider", "gemini"
    )
    assert status == cli.EXIT_OK, said
    assert "…" not in said
    text = " ".join(said.split())
    # No figure of the plan is folded in two.
    assert "standard price $0.10 · batch price $0.05 · to pay $0.05" in text
    # The progress line's words, the money last, whole (wrapped at a space if need be).
    assert "succeeded 3 · spent $0.05 of est. $0.05" in text
    assert "plan for " + NAME in text
