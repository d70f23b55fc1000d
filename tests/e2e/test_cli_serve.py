"""Issue 17 part 4: `bananabatch local serve` drives submitted local jobs without a `watch`,
is safe to stop (Ctrl-C, kill -9) and to start twice; and when nothing drives a submitted
local job, `status` says so plainly. The service runs on a real terminal (pexpect); the
other commands run as a person's second terminal would, as processes of their own."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from bananabatch import cli, config
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig
from tests.support import terminal

LINES = [{"key": f"sku-{n:03d}", "prompt": f"catalog shot {n}"} for n in range(6)]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "catalog.jsonl").write_text("".join(json.dumps(x) + "\n" for x in LINES))
    return tmp_path


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {config.ENV_BACKEND: "local", config.ENV_LOCAL_ROOT: str(home / "state"), **extra}


def bananabatch(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [terminal.BIN, *args],
        cwd=home,
        env={**terminal.session_free_environ(), "COLUMNS": "200", **_env(home, **extra)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _view(home: Path, job_id: str, **extra: str) -> Any:
    shown = bananabatch(home, "status", job_id, "--json", **extra)
    assert shown.stdout.strip(), shown
    return json.loads(shown.stdout)


def _until_ended(home: Path, job_id: str, **extra: str) -> Any:
    """status, asked again until the job ends (the service moves it; nothing else does)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        view = _view(home, job_id, **extra)
        if view["state"] in {"SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"}:
            return view
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end: {view}")


def _serve(home: Path, **extra: str) -> terminal.Terminal:
    child = terminal.spawn(
        ["local", "serve", "--interval", "0.2"], cwd=home, env=_env(home, **extra)
    )
    child.expect(r"local service for \S+ \(pid (\d+)\)")
    child.service_pid = int(child.match.group(1))
    return child


def test_a_submitted_job_ends_with_the_service_running_and_no_watch(home: Path) -> None:
    service = _serve(home)
    try:
        # No emulator address: submit finds the service's emulator by itself.
        submitted = bananabatch(home, "submit", "catalog.jsonl", "--yes", "--json")
        assert submitted.returncode == 0, submitted
        job_id = json.loads(submitted.stdout)["job_id"]
        view = _until_ended(home, job_id)
        assert view["state"] == "SUCCEEDED"
        assert view["counts"]["SUCCEEDED"] == len(LINES)
        service.expect(f"job {job_id} ended SUCCEEDED")
    finally:
        service.sendintr()
    status, said = terminal.finish(service)
    assert status == cli.EXIT_OK, said
    assert "local service stopped" in said
    assert "Traceback" not in said


def test_a_second_service_on_the_same_folder_says_where_the_first_runs_and_stops(
    home: Path,
) -> None:
    first = _serve(home)
    try:
        second = bananabatch(home, "local", "serve")
        assert second.returncode == cli.EXIT_ERROR, second
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith("error: a local service (pid ")
        assert "already drives the jobs in" in line
    finally:
        first.sendintr()
    status, said = terminal.finish(first)
    assert status == cli.EXIT_OK, said


@pytest.fixture
def held_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(pending_seconds=math.inf, running_seconds=0.0)) as emu:
        yield emu


def test_status_says_plainly_when_nothing_drives_a_submitted_job_and_a_service_then_does(
    home: Path, held_emulator: EmulatorServer
) -> None:
    url = {config.ENV_GEMINI_BASE_URL: held_emulator.base_url, config.ENV_GEMINI_API_KEY: "k"}
    submitted = bananabatch(home, "submit", "catalog.jsonl", "--yes", "--json", **url)
    assert submitted.returncode == 0, submitted
    job_id = json.loads(submitted.stdout)["job_id"]
    assert "nothing is driving it yet" in submitted.stderr
    assert "bananabatch local serve" in submitted.stderr
    shown = bananabatch(home, "status", job_id, **url)
    said = " ".join(shown.stderr.split())
    assert f"nothing is driving job {job_id} now" in said
    assert "bananabatch local serve" in said
    assert "nothing is driving" in (_view(home, job_id, **url)["not_driven"] or "")
    service = _serve(home, **url)
    try:
        assert _view(home, job_id, **url)["not_driven"] is None
        assert "nothing is driving" not in bananabatch(home, "status", job_id, **url).stderr
    finally:
        service.sendintr()
    terminal.finish(service)


def test_a_service_killed_mid_job_is_started_again_and_each_line_is_paid_once(
    home: Path, held_emulator: EmulatorServer
) -> None:
    url = {config.ENV_GEMINI_BASE_URL: held_emulator.base_url, config.ENV_GEMINI_API_KEY: "k"}
    job_id = json.loads(
        bananabatch(home, "submit", "catalog.jsonl", "--yes", "--json", **url).stdout
    )["job_id"]
    service = _serve(home, **url)
    service.expect(pexpect.TIMEOUT, timeout=1.0)  # it polls the batch, still pending
    os.kill(service.service_pid, signal.SIGKILL)
    terminal.finish(service)
    held_emulator.state.config.pending_seconds = 0.0
    again = _serve(home, **url)
    try:
        view = _until_ended(home, job_id, **url)
    finally:
        again.sendintr()
    terminal.finish(again)
    assert view["state"] == "SUCCEEDED"
    assert sorted(held_emulator.state.submitted_keys("").values()) == [1] * len(LINES)
