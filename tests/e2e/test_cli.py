"""Every CLI command on the local stack, through typer's test runner, with --json parsed."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bananabatch import cli, config
from bananabatch.emulator.faults import FaultPlan
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from tests.support.local_cli import point_cli_at

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "prompts.jsonl"
runner = CliRunner()


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    config_ = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config_) as server:
        yield server


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer) -> Path:
    return point_cli_at(tmp_path, monkeypatch, emulator.base_url)


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


def as_json(result: Any) -> Any:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_local_run_json_reports_counts_that_add_up_and_exits_3_for_a_partial_job(
    local_env: Path,
) -> None:
    result = invoke("local", "run", str(EXAMPLES), "--yes", "--root", str(local_env), "--json")
    assert result.exit_code == cli.EXIT_PARTIAL, result.output
    summary = as_json(result)
    assert sum(summary["counts"].values()) == summary["line_count"] == 17
    assert summary["counts"]["SUCCEEDED"] == 14
    assert summary["costs"]["actual_usd"] < summary["costs"]["standard_equivalent_usd"]


def test_local_run_prints_a_human_summary_ending_with_the_gallery_path(local_env: Path) -> None:
    result = invoke("local", "run", str(EXAMPLES), "--yes", "--root", str(local_env))
    assert result.exit_code == cli.EXIT_PARTIAL, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("gallery")
    assert lines[-1].endswith("index.html")
    # Just above it: a local run makes no thumbnails, and says who will.
    assert lines[-2].startswith("thumbnails: made as `bananabatch local serve` shows")
    for words in (
        "estimate at standard price",
        "estimate at batch price",
        "saved",
        "rejected.jsonl",
    ):
        assert words in result.stdout


def test_submit_watch_status_ls_and_fetch_follow_one_job(local_env: Path, tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "three.jsonl",
        [{"key": f"k{i}", "prompt": f"prompt {i}", "aspect_ratio": "1:1"} for i in range(3)],
    )
    job_id = as_json(invoke("submit", str(source), "--yes", "--json"))["job_id"]

    watched = invoke("watch", job_id, "--interval", "0", "--json")
    assert watched.exit_code == cli.EXIT_OK, watched.output
    assert as_json(watched)["state"] == "SUCCEEDED"

    status = invoke("status", job_id, "--json")
    assert status.exit_code == cli.EXIT_OK
    view = as_json(status)
    assert view["counts"]["SUCCEEDED"] == 3
    assert view["costs"]["actual_usd"] > 0

    listed = as_json(invoke("ls", "--json"))
    assert [j["job_id"] for j in listed] == [job_id]

    target = tmp_path / "downloaded"
    first = as_json(invoke("fetch", job_id, "--to", str(target), "--json"))
    assert first == {"job_id": job_id, "to": str(target), "fetched": 3, "skipped": 0, "images": 3}
    assert sorted(p.name for p in target.iterdir()) == ["k0.png", "k1.png", "k2.png"]
    again = as_json(invoke("fetch", job_id, "--to", str(target), "--json"))
    assert again["fetched"] == 0
    assert again["skipped"] == 3


def test_retry_resubmits_only_the_failed_items_as_a_new_job(
    local_env: Path, tmp_path: Path, emulator: EmulatorServer
) -> None:
    emulator.state.faults = FaultPlan().row_error("bad", 3, "Request contains an invalid argument.")
    source = write_jsonl(
        tmp_path / "mixed.jsonl",
        [{"key": "good", "prompt": "fine"}, {"key": "bad", "prompt": "fails once"}],
    )
    job_id = as_json(invoke("submit", str(source), "--yes", "--json"))["job_id"]
    assert invoke("watch", job_id, "--interval", "0").exit_code == cli.EXIT_PARTIAL

    emulator.state.faults = FaultPlan()
    retried = as_json(invoke("retry", job_id, "--json"))
    assert retried["items"] == 1
    new_job = retried["retry_job_id"]
    assert new_job != job_id
    assert invoke("watch", new_job, "--interval", "0").exit_code == cli.EXIT_OK
    assert as_json(invoke("status", new_job, "--json"))["counts"]["SUCCEEDED"] == 1


def test_cancel_stops_a_running_job_which_then_ends_cancelled(
    local_env: Path, tmp_path: Path, emulator: EmulatorServer
) -> None:
    emulator.state.config.pending_seconds = math.inf
    source = write_jsonl(tmp_path / "slow.jsonl", [{"key": "a", "prompt": "never finishes"}])
    job_id = as_json(invoke("submit", str(source), "--yes", "--json"))["job_id"]
    cancelled = as_json(invoke("cancel", job_id, "--json"))
    assert cancelled["cancelled_batches"] == 1
    watched = invoke("watch", job_id, "--interval", "0", "--timeout", "30", "--json")
    assert watched.exit_code == cli.EXIT_FAILED, watched.output
    assert as_json(watched)["state"] == "CANCELLED"


def test_an_unknown_job_is_one_clear_error_line_and_exit_code_1(local_env: Path) -> None:
    result = invoke("status", "no-such-job")
    assert result.exit_code == cli.EXIT_ERROR
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "no job no-such-job" in lines[0]


def test_a_usage_error_exits_2() -> None:
    assert invoke("fetch").exit_code == cli.EXIT_USAGE


def _commands() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for info in cli.app.registered_commands:
        assert info.name or info.callback is not None
        found.append(((info.name or info.callback.__name__.replace("_", "-")),))  # type: ignore[union-attr]
    for group in cli.app.registered_groups:
        assert group.typer_instance is not None
        for info in group.typer_instance.registered_commands:
            found.append((str(group.name), str(info.name)))
    return found


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_has_help_with_an_example_and_appears_in_the_readme(
    command: tuple[str, ...],
) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example: bananabatch" in result.output
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"`bananabatch {' '.join(command)}\b", readme), command


def test_local_run_over_the_daily_budget_says_why_it_is_held_and_runs_it_with_approve(
    local_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.ENV_DAILY_BUDGET_USD, "0.01")
    held = invoke("local", "run", str(EXAMPLES), "--yes", "--root", str(local_env), "--json")
    assert held.exit_code == cli.EXIT_HELD, held.output
    doc = as_json(held)
    assert doc["state"] == "HELD"
    assert "daily budget $0.0100" in doc["reason"]
    assert doc["spent_usd"] == 0.0
    assert doc["estimated_usd"] > 0.01
    assert doc["to_run_it"].endswith("--approve")

    human = invoke("local", "run", str(EXAMPLES), "--yes", "--root", str(local_env))
    assert human.exit_code == cli.EXIT_HELD, human.output
    assert f"job {doc['job_id']} is HELD" in human.stderr
    assert "Nothing was spent" in human.stderr
    assert "no summary.json" not in human.output

    ran = invoke(
        "local", "run", str(EXAMPLES), "--yes", "--root", str(local_env), "--approve", "--json"
    )
    assert ran.exit_code == cli.EXIT_PARTIAL, ran.output
    summary = as_json(ran)
    assert summary["job_id"] == doc["job_id"]
    assert summary["counts"]["SUCCEEDED"] == 14
    assert summary["costs"]["actual_usd"] > 0.01


def test_watch_ends_with_the_same_summary_as_local_run(local_env: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "two.jsonl", [{"key": "w1", "prompt": "a red kite"}])
    job_id = as_json(invoke("submit", str(source), "--yes", "--json"))["job_id"]
    watched = invoke("watch", job_id, "--interval", "0")
    assert watched.exit_code == cli.EXIT_OK, watched.output
    assert f"job {job_id}:" in watched.stdout
    assert "SUCCEEDED" in watched.stdout
    assert "actual (from usageMetadata)" in watched.stdout
    assert watched.stdout.strip().splitlines()[-1].startswith("gallery")


def test_a_partial_job_claims_a_saving_only_on_the_images_it_delivered(
    local_env: Path, tmp_path: Path, emulator: EmulatorServer
) -> None:
    emulator.state.faults = FaultPlan().row_error("bad", 3, "Request contains an invalid argument.")
    source = write_jsonl(
        tmp_path / "half.jsonl",
        [{"key": "good", "prompt": "same shape"}, {"key": "bad", "prompt": "same shapes"}],
    )
    job_id = as_json(invoke("submit", str(source), "--yes", "--json"))["job_id"]
    assert invoke("watch", job_id, "--interval", "0").exit_code == cli.EXIT_PARTIAL
    costs = as_json(invoke("status", job_id, "--json"))["costs"]
    # One of two like lines delivered: the saving is half the standard price less what
    # was paid, not the whole file's standard price less it.
    assert costs["saved_usd"] == pytest.approx(
        costs["standard_equivalent_usd"] / 2 - costs["actual_usd"], abs=1e-6
    )
    assert costs["saved_usd"] < costs["standard_equivalent_usd"] - costs["actual_usd"] - 1e-6


def test_cancel_says_what_it_stopped_and_what_was_already_paid(
    local_env: Path, tmp_path: Path, emulator: EmulatorServer
) -> None:
    emulator.state.config.pending_seconds = math.inf
    source = write_jsonl(tmp_path / "slow.jsonl", [{"key": "a", "prompt": "never finishes"}])
    job_id = as_json(invoke("submit", str(source), "--yes", "--json"))["job_id"]
    said = invoke("cancel", job_id)
    assert said.exit_code == 0, said.output
    text = " ".join(said.stdout.split())
    assert "1 batch stopped or asked to stop at the provider" in text
    assert re.search(r"already paid \$0\.00 for 0 images \(of an estimate of \$0\.0\d\)", text)
    assert f"`bananabatch watch {job_id}`" in text


def test_metadata_joins_results_and_the_costs_csv_back_to_the_catalog(
    local_env: Path, tmp_path: Path
) -> None:
    import csv

    source = write_jsonl(
        tmp_path / "catalog.jsonl",
        [
            {
                "key": "sku-1",
                "prompt": "a red kite",
                "metadata": {"sku": "SKU1", "campaign": "s26"},
            },
            {"key": "sku-2", "prompt": "a blue boat"},
            {"key": "sku-3", "prompt": "a field", "aspect_ratio": "7:3", "metadata": {"sku": "S3"}},
        ],
    )
    result = invoke("local", "run", str(source), "--yes", "--root", str(local_env), "--json")
    assert result.exit_code == cli.EXIT_PARTIAL, result.output
    job = as_json(result)
    folder = Path(job["files"]["results"].removeprefix("file://")).parent
    results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert [r["metadata"] for r in results] == [
        {"sku": "SKU1", "campaign": "s26"},
        {},
        {"sku": "S3"},
    ]
    rows = list(csv.DictReader((folder / "costs.csv").open()))
    assert [r["key"] for r in rows] == ["sku-1", "sku-2", "sku-3"]
    assert [r["status"] for r in rows] == ["SUCCEEDED", "SUCCEEDED", "REJECTED"]
    assert json.loads(rows[0]["metadata"]) == {"sku": "SKU1", "campaign": "s26"}
    assert float(rows[0]["cost_usd"]) > 0
    assert rows[0]["image_uri"].endswith("sku-1.png")
    assert rows[0]["lane"] == "batch"


def test_ls_in_a_pipe_cuts_nothing_and_speaks_csv(local_env: Path, tmp_path: Path) -> None:
    import csv

    source = write_jsonl(
        tmp_path / "a-catalog-with-a-rather-long-name-for-spring-2026.jsonl",
        [{"key": "k", "prompt": "a red kite"}],
    )
    job_id = as_json(invoke("submit", str(source), "--yes", "--json"))["job_id"]
    table = invoke("ls")  # the test runner is a pipe, not a terminal
    assert table.exit_code == 0, table.output
    assert job_id in table.stdout
    assert "…" not in table.stdout
    assert "est. $" in table.stdout or "spent $" in table.stdout
    rows = list(csv.DictReader(invoke("ls", "--format", "csv").stdout.splitlines()))
    assert [r["job"] for r in rows] == [job_id]
    assert rows[0]["lines"] == "1"
