"""`local run` makes no thumbnails by default (the gallery server makes each on demand); made
during the run (BANANABATCH_LOCAL_THUMBNAILS=during-run) they come from worker processes
while it collects, and the run ends with every one made (local/thumbpool.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from bananabatch.config import Backend, Settings
from bananabatch.core import records as rec
from bananabatch.core.states import ItemState, JobState
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.local.runner import LocalPipeline
from bananabatch.local.thumbpool import ThumbnailPool
from bananabatch.pipeline import thumbnails
from bananabatch.report.thumbs import make_thumbnail, thumb_object_name
from bananabatch.wiring import build_runtime


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config) as server:
        yield server


def _settings(tmp_path: Path, emulator: EmulatorServer) -> Settings:
    return Settings(
        backend=Backend.LOCAL,
        local_root=tmp_path / "state",
        gemini_base_url=emulator.base_url,
        gemini_api_key="test-key",
        max_requests_per_batch=5,
    )


def test_a_run_with_a_thumbnail_pool_ends_with_every_thumbnail_made_in_other_processes(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"key": f"k{n:02d}", "prompt": f"a pear {n}"}) + "\n" for n in range(12))
    )
    pipeline = LocalPipeline(build_runtime(_settings(tmp_path, emulator)), thumbnail_workers=2)
    try:
        result = pipeline.run_job(prompts, tick_interval=0.0, timeout=120)
        assert pipeline.thumbnails is not None
        pool = pipeline.thumbnails
        assert result.job.state is JobState.SUCCEEDED
        assert result.summary["counts"][ItemState.SUCCEEDED] == 12
        results = pipeline.settings.results_bucket
        for n in range(12):
            name = thumb_object_name(result.job.job_id, f"k{n:02d}")
            with Image.open(io.BytesIO(pipeline.runtime.objects.read_bytes(results, name))) as t:
                assert t.format == "JPEG"
                assert max(t.size) <= 256
        assert pool.made == 12
        assert pool.failed == 0
        assert pool.worker_pids
        assert os.getpid() not in pool.worker_pids
        # None went through on_batch_done inline: 3 batches collected, no thumbnails there.
        assert result.deliveries["on_batch_done"] == 3
    finally:
        pipeline.close()


def test_a_run_with_thumbnails_on_demand_makes_none_and_each_is_made_when_asked_for(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"key": f"k{n:02d}", "prompt": f"a plum {n}"}) + "\n" for n in range(7))
    )
    pipeline = LocalPipeline(
        build_runtime(_settings(tmp_path, emulator)),
        thumbnail_workers=2,
        thumbnails_on_demand=True,
    )
    try:
        result = pipeline.run_job(prompts, tick_interval=0.0, timeout=120)
        assert pipeline.thumbnails is None  # no pool started for thumbnails nobody made
        assert result.job.state is JobState.SUCCEEDED
        assert result.summary["counts"][ItemState.SUCCEEDED] == 7
        rt = pipeline.runtime
        results = rt.settings.results_bucket
        job_id = result.job.job_id
        assert not list(rt.objects.list(results, f"jobs/{job_id}/thumbs/"))
        # The collector's requests were dropped, not delivered: 2 batches collected.
        assert result.deliveries["on_batch_done"] == 2
        image = rt.objects.read_bytes(results, rec.image_object_name(job_id, "k03", "image/png"))
        made = thumbnails.ensure_thumbnail(rt, job_id, "k03")
        assert made is not None
        assert made == make_thumbnail(image)
        assert rt.objects.read_bytes(results, thumb_object_name(job_id, "k03")) == made
    finally:
        pipeline.close()


def _store_images(settings: Settings, job_id: str, keys: list[str]) -> bytes:
    rt = build_runtime(settings, with_provider=False)
    for key in keys:
        out = io.BytesIO()
        Image.new("RGB", (640, 480), (10, 120, 200)).save(out, format="PNG")
        rt.objects.write_bytes(
            settings.results_bucket,
            rec.image_object_name(job_id, key, "image/png"),
            out.getvalue(),
            content_type="image/png",
        )
    body = {
        "schema_version": thumbnails.SCHEMA_VERSION,
        "kind": thumbnails.KIND,
        "job_id": job_id,
        "batch_id": f"{job_id}-b0000",
        "keys": keys,
        "mime_types": ["image/png"] * len(keys),
    }
    return json.dumps(body).encode()


def test_a_killed_worker_loses_no_thumbnail_the_request_is_made_again(tmp_path: Path) -> None:
    settings = Settings(backend=Backend.LOCAL, local_root=tmp_path / "state")
    first = _store_images(settings, "job-a", ["a1", "a2"])
    second = _store_images(settings, "job-b", ["b1", "b2", "b3"])
    pool = ThumbnailPool(settings, workers=1)
    try:
        pool.submit(first)
        pool.wait()
        for pid in pool.worker_pids:
            os.kill(pid, signal.SIGKILL)
        # Whether the pool notices the dead worker before or after this request is given
        # to it, the request is made by a new worker.
        pool.submit(second)
        pool.wait()
        assert pool.made == 5
        assert pool.failed == 0
        rt = build_runtime(settings, with_provider=False)
        for job, key in [("job-a", "a1"), ("job-a", "a2"), ("job-b", "b1"), ("job-b", "b3")]:
            assert rt.objects.stat(settings.results_bucket, thumb_object_name(job, key))
    finally:
        pool.close()


def test_a_request_that_can_never_succeed_is_given_up_and_counted_not_raised(
    tmp_path: Path,
) -> None:
    settings = Settings(backend=Backend.LOCAL, local_root=tmp_path / "state")
    pool = ThumbnailPool(settings, workers=1)
    try:
        pool.submit(b'{"kind": "thumbnails", "job_id": 7}')
        pool.wait()
        assert pool.failed == 1
        assert pool.made == 0
    finally:
        pool.close()


_KILLED_RUNNER = """
import json, sys
from bananabatch.config import Backend, Settings
from bananabatch.local.thumbpool import ThumbnailPool

settings = Settings(backend=Backend.LOCAL, local_root=sys.argv[1])
pool = ThumbnailPool(settings, workers=2)
pool.submit(sys.argv[2].encode())
pool.wait()
print(json.dumps(sorted(pool.worker_pids)), flush=True)
sys.stdin.read()  # until killed
"""


def test_workers_of_a_runner_killed_with_sigkill_do_not_outlive_it(tmp_path: Path) -> None:
    settings = Settings(backend=Backend.LOCAL, local_root=tmp_path / "state")
    body = _store_images(settings, "job-k", ["k1"])
    runner = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUNNER, str(settings.local_root), body.decode()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        pids = json.loads(runner.stdout.readline())
        assert pids
        runner.kill()
        runner.wait()
        # Generous: a worker checks for its runner about once a second.
        deadline = time.monotonic() + 60
        alive = list(pids)
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in pids if _running(pid)]
            time.sleep(0.2)
        assert alive == [], f"workers {alive} outlived their runner"
    finally:
        if runner.poll() is None:
            runner.kill()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
