"""Issue 17 part 1: interrupts are safe and resumable. The job id is said before anything is
paid; Ctrl-C stops waiting, not the job, and says what is in flight and how to go on; a
local job can be resumed or cancelled whatever state a crash left it in; a broken job never
blocks another. Ctrl-C is sent on a real terminal (pexpect)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bananabatch import cli, config, faults, wiring
from bananabatch.config import Settings
from bananabatch.core.states import BatchState, JobState
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig
from bananabatch.errors import TransientError
from bananabatch.local.runner import BATCH_DONE_SUBSCRIPTION, LocalPipeline
from tests.support import terminal

runner = CliRunner()
LINES = [{"key": f"sku-{n:03d}", "prompt": f"product shot {n}"} for n in range(6)]


@pytest.fixture
def held_emulator() -> Iterator[EmulatorServer]:
    """An emulator whose batches stay pending until the test lets them finish."""
    with EmulatorServer(EmulatorConfig(pending_seconds=math.inf, running_seconds=0.0)) as emu:
        yield emu


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_emulator: EmulatorServer
) -> dict[str, str]:
    values = {
        config.ENV_BACKEND: "local",
        config.ENV_LOCAL_ROOT: str(tmp_path / "state"),
        config.ENV_GEMINI_BASE_URL: held_emulator.base_url,
        config.ENV_GEMINI_API_KEY: "test-key",
    }
    monkeypatch.chdir(tmp_path)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _file(tmp_path: Path, name: str = "catalog.jsonl", lines: list[dict[str, Any]] = LINES) -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _json(*args: str) -> Any:
    result = runner.invoke(cli.app, list(args))
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


def _pipeline() -> LocalPipeline:
    settings = Settings.from_env(os.environ)
    return LocalPipeline(wiring.build_runtime(settings), sleep=lambda _s: None)


def test_ctrl_c_in_local_run_says_the_job_first_then_how_to_go_on_and_a_rerun_pays_once(
    tmp_path: Path, env: dict[str, str], held_emulator: EmulatorServer
) -> None:
    path = _file(tmp_path)
    run = ["local", "run", path.name, "--yes", "--provider", "gemini"]
    child = terminal.spawn(run, cwd=tmp_path, env=env)
    child.expect(r"job (catalog-[0-9a-f]{12})")
    job_id = child.match.group(1)
    child.expect("running")
    child.sendintr()
    status, said = terminal.finish(child)
    assert status == 130, said
    assert "Traceback" not in said
    assert f"Job {job_id} is RUNNING: 0 of 6 lines done, 1 batch in flight" in said
    assert "bananabatch local run catalog.jsonl --provider gemini" in said
    assert f"bananabatch cancel {job_id}" in said
    assert _json("status", job_id, "--json")["state"] == "RUNNING"

    held_emulator.state.config.pending_seconds = 0.0
    again = terminal.spawn(run, cwd=tmp_path, env=env)
    again.expect(f"job {job_id} \\(resumed")
    status, said = terminal.finish(again)
    assert status == cli.EXIT_OK, said
    assert [j["job_id"] for j in _json("ls", "--json")] == [job_id]
    assert sorted(held_emulator.state.submitted_keys("").values()) == [1] * len(LINES)


def test_the_job_id_is_told_before_anything_is_submitted(
    tmp_path: Path, env: dict[str, str], held_emulator: EmulatorServer
) -> None:
    pipeline = _pipeline()
    told: list[tuple[str, int]] = []
    held_emulator.state.config.pending_seconds = 0.0
    try:
        result = pipeline.run_job(
            _file(tmp_path),
            tick_interval=0,
            timeout=60,
            on_start=lambda job, _resumed: told.append(
                (job, sum(held_emulator.state.submitted_keys("").values()))
            ),
        )
    finally:
        pipeline.close()
    assert told == [(result.job.job_id, 0)]
    assert result.job.state is JobState.SUCCEEDED


def _cut_off_in_intake(tmp_path: Path) -> str:
    """A job whose intake died after making the job record, every delivery of it."""
    pipeline = _pipeline()
    faults.arm("intake.after_job_created", times=5)
    try:
        with pytest.raises(TransientError):
            pipeline.upload(_file(tmp_path))
    finally:
        faults.reset()
        pipeline.close()
    (job,) = _json("ls", "--json")
    assert job["state"] == "RECEIVED"
    return str(job["job_id"])


def test_a_job_cut_off_while_its_file_was_read_can_be_cancelled_without_paying(
    tmp_path: Path, env: dict[str, str], held_emulator: EmulatorServer
) -> None:
    job_id = _cut_off_in_intake(tmp_path)
    cancelled = runner.invoke(cli.app, ["cancel", job_id, "--json"])
    assert cancelled.exit_code == 0, cancelled.output
    assert _json("status", job_id, "--json")["state"] == "CANCELLED"
    assert held_emulator.state.submitted_keys("") == {}


def test_a_job_cut_off_while_its_file_was_read_is_resumed_by_watch(
    tmp_path: Path, env: dict[str, str], held_emulator: EmulatorServer
) -> None:
    job_id = _cut_off_in_intake(tmp_path)
    held_emulator.state.config.pending_seconds = 0.0
    watched = runner.invoke(cli.app, ["watch", job_id, "--interval", "0", "--json"])
    assert watched.exit_code == cli.EXIT_OK, watched.output
    assert _json("status", job_id, "--json")["counts"]["SUCCEEDED"] == len(LINES)


def test_cancel_ends_a_job_whose_finished_batch_died_uncollected_with_its_emulator(
    tmp_path: Path, env: dict[str, str], held_emulator: EmulatorServer, monkeypatch: Any
) -> None:
    pipeline = _pipeline()
    try:
        job_id = pipeline.upload(_file(tmp_path))
        held_emulator.state.config.pending_seconds = 0.0
        pipeline.tick()  # the batch is seen SUCCEEDED and announced...
        lost = pipeline.bus.pull(BATCH_DONE_SUBSCRIPTION, max_messages=100)
        assert lost  # ...and the process dies before collecting it
        (batch,) = pipeline.runtime.repo.batches(job_id=job_id)
        assert batch.state is BatchState.SUCCEEDED
    finally:
        pipeline.close()
    monkeypatch.delenv(config.ENV_GEMINI_BASE_URL)  # the emulator ran inside `local run`
    cancelled = runner.invoke(cli.app, ["cancel", job_id, "--json"])
    assert cancelled.exit_code == 0, cancelled.output
    assert _json("status", job_id, "--json")["state"] == "CANCELLED"


def test_a_job_broken_by_a_crash_does_not_block_the_next_one(
    tmp_path: Path, env: dict[str, str], held_emulator: EmulatorServer, monkeypatch: Any
) -> None:
    gone = EmulatorServer(EmulatorConfig(pending_seconds=math.inf, running_seconds=0.0)).start()
    try:
        monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, gone.base_url)
        stuck = _json("submit", str(_file(tmp_path)), "--yes", "--json")["job_id"]
    finally:
        gone.stop()  # its batch is now unknown to every provider there is
    monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, held_emulator.base_url)
    other = _file(tmp_path, "other.jsonl", [{"key": "o1", "prompt": "a blue boat"}])
    held_emulator.state.config.pending_seconds = 0.0
    result = runner.invoke(
        cli.app, ["local", "run", str(other), "--yes", "--provider", "gemini", "--json"]
    )
    assert result.exit_code == cli.EXIT_OK, result.output
    assert json.loads(result.stdout)["counts"]["SUCCEEDED"] == 1
    assert _json("status", stuck, "--json")["state"] in {"RUNNING", "SUCCEEDED"}


def test_ctrl_c_in_watch_says_the_job_is_kept_and_how_to_go_on(
    tmp_path: Path, env: dict[str, str]
) -> None:
    job_id = _json("submit", str(_file(tmp_path)), "--yes", "--json")["job_id"]
    child = terminal.spawn(["watch", job_id, "--interval", "0.2"], cwd=tmp_path, env=env)
    child.expect("running")
    child.sendintr()
    status, said = terminal.finish(child)
    assert status == 130, said
    assert "Traceback" not in said
    assert (
        "it moves only while `bananabatch local serve` (every job) or a `watch` of it"
        in " ".join(said.split())
    )
    assert f"to go on:   bananabatch watch {job_id}" in said
    assert f"to stop it: bananabatch cancel {job_id}" in said
    assert _json("status", job_id, "--json")["state"] == "RUNNING"


@pytest.mark.parametrize("approve_given", [False, True])
def test_ctrl_c_while_the_job_is_held_says_to_go_on_with_approve(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    approve_given: bool,
) -> None:
    import io

    import typer
    from rich.console import Console

    from bananabatch.config import ProviderKind

    monkeypatch.setenv(config.ENV_JOB_BUDGET_USD, "0.001")
    path = _file(tmp_path)
    held = runner.invoke(cli.app, ["submit", path.name, "--yes", "--json"])
    assert held.exit_code == cli.EXIT_HELD, held.output
    job_id = json.loads(held.stdout)["job_id"]
    said = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=said, width=200))
    pipeline = _pipeline()
    try:
        # What `local run` says on Ctrl-C with the job HELD (over a cap, nothing spent).
        with pytest.raises(typer.Exit):
            cli._interrupted_run(
                pipeline.runtime,
                [job_id],
                Path(path.name),
                ProviderKind.EMULATOR,
                approve=approve_given,
            )
    finally:
        pipeline.close()
    text = " ".join(said.getvalue().split())
    assert f"Job {job_id} is HELD" in text
    assert "nothing was spent" in text.lower()
    assert "to go on: bananabatch local run catalog.jsonl --approve" in text
    assert f"bananabatch approve {job_id}" in text
    # A held job is rejected, not cancelled (it never reserved anything).
    assert f"to stop it: bananabatch reject {job_id}" in text


def test_a_rerun_after_a_kill_mid_urgent_call_settles_the_urgent_lane_at_once(
    tmp_path: Path, env: dict[str, str], held_emulator: EmulatorServer
) -> None:
    # The tick waits urgent.ORPHANED_AFTER (15 minutes) before it calls a claimed urgent item
    # lost, for a deployed worker may be slow rather than dead; a rerun of `local run`, the
    # only driver of the job, knows the earlier run is dead: it hung 15 minutes without this.
    held_emulator.state.config.pending_seconds = 0.0
    lines = [
        *LINES[:2],
        {"key": "now", "prompt": "a hero banner", "priority": "urgent"},
        {"key": "soon", "prompt": "a hero logo", "priority": "urgent"},
    ]
    path = _file(tmp_path, lines=lines)
    first = _pipeline()
    faults.arm("urgent.after_claim")
    try:
        job_id = first.upload(path)
        assert faults.hits("urgent.after_claim") == 1
        states = {i.key: i.state.value for i in first.runtime.repo.items(job_id)}
        assert (states["now"], states["soon"]) == ("SUBMITTED", "PENDING")
    finally:
        faults.reset()
        first.close()
    calls_before = held_emulator.state.counters.sync_requests
    again = _pipeline()
    try:
        result = again.run_job(path, tick_interval=0, timeout=60)
    finally:
        again.close()
    assert result.resumed
    assert result.job.state is JobState.PARTIAL
    items = {i.key: i for i in again.runtime.repo.items(result.job.job_id)}
    assert items["now"].state.value == "FAILED"
    assert "outcome unknown" in (items["now"].reason or "")
    assert items["soon"].state.value == "SUCCEEDED"
    assert held_emulator.state.counters.sync_requests == calls_before + 1
