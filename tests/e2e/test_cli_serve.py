"""Issue 17 part 4: `bananabatch local serve` drives submitted local jobs without a `watch`,
is safe to stop (Ctrl-C, kill -9) and to start twice; and when nothing drives a submitted
local job, `status` says so plainly. The service runs on a real terminal (pexpect); the
other commands run as a person's second terminal would, as processes of their own."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from PIL import Image

from bananabatch import cli, config
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig
from bananabatch.report.thumbs import make_thumbnail
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


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_the_service_makes_a_thumbnail_the_gallery_asks_for_once_and_serves_it_after(
    home: Path,
) -> None:
    # `local run` makes no thumbnails: its job is done when its images and records are.
    ran = bananabatch(home, "local", "run", "catalog.jsonl", "--yes", "--json")
    assert ran.returncode == cli.EXIT_OK, ran
    job_id = json.loads(ran.stdout)["job_id"]
    job_dir = home / "state" / "buckets" / "results" / "jobs" / job_id
    image = (job_dir / "images" / "sku-002.png").read_bytes()
    assert not list(job_dir.glob("thumbs/*"))
    service = terminal.spawn(
        ["local", "serve", "--interval", "0.2", "--gallery-port", "0"], cwd=home, env=_env(home)
    )
    try:
        service.expect(r"galleries at (http://127\.0\.0\.1:\d+)/")
        base = service.match.group(1)
        service.expect("local service for")
        thumb_url = f"{base}/jobs/{job_id}/thumbs/sku-002.jpg"

        status, kind, first = _get(thumb_url)

        assert (status, kind) == (200, "image/jpeg")
        assert first == make_thumbnail(image)  # what the thumbnail workers would write
        stored = job_dir / "thumbs" / "sku-002.jpg"
        assert stored.read_bytes() == first
        with Image.open(io.BytesIO(first)) as decoded:
            assert decoded.format == "JPEG"
            assert max(decoded.size) == 256
        # The second request reads the stored one (replaced here, so it shows).
        other = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(other, format="JPEG")
        replacement = stored.with_name("replacement.tmp")
        replacement.write_bytes(other.getvalue())
        replacement.replace(stored)
        assert _get(thumb_url) == (200, "image/jpeg", other.getvalue())
        # The page itself, and a thumbnail whose image does not exist (the page falls back).
        status, kind, page = _get(f"{base}/jobs/{job_id}/index.html")
        assert (status, kind.split(";")[0]) == (200, "text/html")
        assert b"thumbs/" in page or b"thumbExtension" in page
        assert _get(f"{base}/jobs/{job_id}/thumbs/no-such-key.jpg")[0] == 404
        assert [p.name for p in job_dir.glob("thumbs/*")] == ["sku-002.jpg"]
    finally:
        service.sendintr()
    status, said = terminal.finish(service)
    assert status == cli.EXIT_OK, said
    assert "Traceback" not in said


@pytest.mark.browser
def test_a_gallery_opened_from_the_service_shows_every_thumbnail_made_on_demand(
    home: Path, tmp_path: Path
) -> None:
    from tests.support.browser import assert_rendered, inspect_url

    ran = bananabatch(home, "local", "run", "catalog.jsonl", "--yes", "--json")
    assert ran.returncode == cli.EXIT_OK, ran
    job_id = json.loads(ran.stdout)["job_id"]
    job_dir = home / "state" / "buckets" / "results" / "jobs" / job_id
    assert not list(job_dir.glob("thumbs/*"))
    keys = {line["key"] for line in LINES}
    service = terminal.spawn(["local", "serve", "--interval", "0.2"], cwd=home, env=_env(home))
    try:
        service.expect(r"galleries at (http://127\.0\.0\.1:\d+)/")
        base = service.match.group(1)
        service.expect("local service for")

        report = inspect_url(f"{base}/jobs/{job_id}/index.html", tmp_path / "gallery.png")

        assert_rendered(report, keys)
        # Each card shows its thumbnail (made when the page asked), not the full image.
        assert report.sources == {key: f"thumbs/{key}.jpg" for key in keys}
        for key in keys:
            image = (job_dir / "images" / f"{key}.png").read_bytes()
            assert (job_dir / "thumbs" / f"{key}.jpg").read_bytes() == make_thumbnail(image)
    finally:
        service.sendintr()
    status, said = terminal.finish(service)
    assert status == cli.EXIT_OK, said
