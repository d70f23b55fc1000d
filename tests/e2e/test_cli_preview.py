"""Issue 17 part 2: a preview before spending. `local run` and `submit` show the plan (lines
per model, rejected lines with reasons, cost at standard and batch price, budget headroom)
and ask on a terminal; --yes skips the question, --dry-run stops after the plan, and in a
pipe nothing is asked and nothing is spent without --yes."""

from __future__ import annotations

import json
import os
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
LINES = [
    {"key": "sku-1", "prompt": "a red kite", "metadata": {"sku": "1"}},
    {"key": "sku-2", "prompt": "a blue boat"},
    {"key": "sku-3", "prompt": "a wide field", "aspect_ratio": "7:3"},
]


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(pending_seconds=0.0, running_seconds=0.0)) as emu:
        yield emu


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer
) -> dict[str, str]:
    values = {
        config.ENV_BACKEND: "local",
        config.ENV_LOCAL_ROOT: str(tmp_path / "state"),
        config.ENV_GEMINI_BASE_URL: emulator.base_url,
        config.ENV_GEMINI_API_KEY: "test-key",
    }
    monkeypatch.chdir(tmp_path)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "catalog.jsonl").write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return values


def _jobs() -> list[Any]:
    result = runner.invoke(cli.app, ["ls", "--json"])
    return list(json.loads(result.stdout))


def _plan_was_shown(said: str) -> None:
    assert "plan for catalog.jsonl: 3 lines, 2 to generate, 1 rejected" in said
    assert "rejected line 3 (sku-3)" in said
    assert "7:3" in said
    assert "at batch price" in said
    assert "at standard price" in said
    assert "budget: today $0.00 committed of $10.00" in said


@pytest.mark.parametrize("command", [["local", "run"], ["submit"]])
def test_on_a_terminal_the_plan_is_shown_and_no_spends_nothing(
    tmp_path: Path, env: dict[str, str], emulator: EmulatorServer, command: list[str]
) -> None:
    provider = ["--provider", "gemini"] if command[0] == "local" else []
    child = terminal.spawn([*command, "catalog.jsonl", *provider], cwd=tmp_path, env=env)
    child.expect(r"Run it, spending up to \$[0-9.]+ \(estimate\)\? \[y/N\]")
    _plan_was_shown(terminal.screen_text(child.before or ""))
    child.sendline("n")
    status, said = terminal.finish(child)
    assert status == cli.EXIT_ERROR, said
    assert "Nothing was uploaded or spent." in said
    assert _jobs() == []
    assert emulator.state.submitted_keys("") == {}


def test_on_a_terminal_yes_runs_the_job(
    tmp_path: Path, env: dict[str, str], emulator: EmulatorServer
) -> None:
    child = terminal.spawn(
        ["local", "run", "catalog.jsonl", "--provider", "gemini"], cwd=tmp_path, env=env
    )
    child.expect(r"\[y/N\]")
    child.sendline("y")
    status, said = terminal.finish(child)
    assert status == cli.EXIT_PARTIAL, said
    assert sorted(str(k) for k in emulator.state.submitted_keys("")) == ["sku-1", "sku-2"]


@pytest.mark.parametrize("command", [["local", "run"], ["submit"]])
def test_in_a_pipe_nothing_is_asked_and_nothing_spent_without_yes(
    env: dict[str, str], emulator: EmulatorServer, command: list[str]
) -> None:
    result = runner.invoke(cli.app, [*command, "catalog.jsonl"])
    assert result.exit_code == cli.EXIT_ERROR
    assert "not on a terminal, so nothing was asked and nothing spent" in result.stderr
    assert "--yes" in result.stderr
    _plan_was_shown(result.stderr)
    assert "…" not in result.stderr  # the plan is whole in a pipe
    assert _jobs() == []
    assert emulator.state.submitted_keys("") == {}


@pytest.mark.parametrize("command", [["local", "run"], ["submit"]])
def test_dry_run_shows_the_plan_and_stops(
    env: dict[str, str], emulator: EmulatorServer, command: list[str]
) -> None:
    result = runner.invoke(cli.app, [*command, "catalog.jsonl", "--dry-run"])
    assert result.exit_code == cli.EXIT_OK, result.output
    _plan_was_shown(result.stderr)
    assert "dry run: nothing was uploaded or spent" in result.stderr
    assert _jobs() == []


def test_submit_of_an_empty_file_exits_non_zero_with_the_reason(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    result = runner.invoke(cli.app, ["submit", "empty.jsonl", "--yes"])
    assert result.exit_code == cli.EXIT_ERROR
    assert "has no lines: nothing to run" in result.stderr
    assert _jobs() == []


def test_submit_of_a_job_held_over_budget_exits_5_with_the_reason(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.ENV_JOB_BUDGET_USD, "0.01")
    result = runner.invoke(cli.app, ["submit", "catalog.jsonl", "--yes"])
    assert result.exit_code == cli.EXIT_HELD, result.output
    assert "the job will be HELD with nothing spent" in result.stderr
    assert "is HELD: estimated" in result.stderr


def test_make_demo_runs_to_the_end_without_a_question() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    (demo,) = [line for line in makefile.splitlines() if "bananabatch local run" in line]
    assert "--yes" in demo.split("||")[0]


def test_the_demo_path_plans_without_an_emulator_url(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make demo`: the emulator runs inside `local run`, so nothing says where it is yet.
    monkeypatch.delenv(config.ENV_GEMINI_BASE_URL)
    result = runner.invoke(cli.app, ["local", "run", "catalog.jsonl", "--dry-run"])
    assert result.exit_code == cli.EXIT_OK, result.output
    _plan_was_shown(result.stderr)


def test_a_file_of_many_bad_lines_is_planned_keeping_only_the_first_rejections(
    env: dict[str, str], tmp_path: Path
) -> None:
    # The plan once kept every rejected line with its raw text: 790 MB for a 145 MB file.
    bad = "".join(json.dumps({"key": f"k{i}", "prompt": ""}) + "\n" for i in range(150))
    (tmp_path / "bad.jsonl").write_text(bad)
    result = runner.invoke(cli.app, ["submit", "bad.jsonl", "--dry-run"])
    assert result.exit_code == cli.EXIT_OK, result.output
    assert "150 rejected" in result.stderr
    assert "rejected line 10 (k9)" in result.stderr
    assert "rejected line 11 " not in result.stderr
    assert "… and 140 more (all in rejected.jsonl)" in result.stderr
    from bananabatch import preview_cli
    from bananabatch.wiring import build_runtime

    rt = build_runtime(config.Settings.from_env(os.environ))
    plan = preview_cli.make_plan(rt, tmp_path / "bad.jsonl")
    assert plan.estimate.rejected == 150
    assert [r.line_no for r in plan.rejected] == list(range(1, 101))
    assert all(r.raw == "" for r in plan.rejected)
