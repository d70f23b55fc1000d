"""Intake of a 1,000,000-line JSONL against a bare `json.loads` pass over the same file.

The intake variant is pipeline.intake.handle_upload on the local stack (folder, SQLite,
emulator), i.e. parse, validate, dedup against the file and the cache, plan, stage each
batch's request file and manifest (no item record per line: those are created per batch at
submission), then submit: max_active_batches=1 so submission sends one batch (creating its
items) and the rest stay queued for the tick, as a real deployment would with capacity
full. Targets: <= 3x the bare pass, peak RSS <= 256 MB.

Both variants share the machine with whatever else runs on it; the intake also creates a
few thousand files, so a busy or slow disk shows in its time and not in the bare pass's.
The intake's process CPU time is printed next to its wall time for that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks._child import run_variant
from benchmarks.common import OUT, fresh_dir, local_settings, mb, target, write_prompts

TIME_TARGET = 3.0
RSS_TARGET_MB = 256.0


def bare_variant(path: str) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    lines = 0
    with open(path, "rb") as source:
        for line in source:
            json.loads(line)
            lines += 1
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "lines": lines,
    }


def intake_variant(path: str, root: str, base_url: str) -> dict[str, Any]:
    from bananabatch import events
    from bananabatch.pipeline import intake
    from bananabatch.wiring import build_runtime

    rt = build_runtime(local_settings(Path(root), base_url, max_active_batches=1))
    bucket, name = rt.settings.inbox_bucket, Path(path).name
    with (
        open(path, "rb") as source,
        rt.objects.open_write(bucket, name, content_type="application/jsonl") as sink,
    ):
        while chunk := source.read(1024 * 1024):
            sink.write(chunk)
    info = rt.objects.stat(bucket, name)
    assert info is not None
    assert info.generation is not None
    _, data = events.storage_finalized_event(
        bucket=bucket,
        name=name,
        generation=info.generation,
        size=info.size,
        content_type="application/jsonl",
    )
    source_object = events.StorageObjectData.model_validate(data).source()
    started, cpu = time.perf_counter(), time.process_time()
    job_id = intake.handle_upload(rt, source_object, {})
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert job_id is not None
    job = rt.repo.require_job(job_id)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "lines": job.line_count,
        "accepted": job.accepted_count,
        "batches": job.batch_count,
        "state": job.state.value,
    }


def run(*, lines: int = 1_000_000) -> dict[str, Any]:
    from bananabatch.emulator import EmulatorConfig, EmulatorServer

    work = OUT / "intake"
    path = work / f"prompts-{lines}.jsonl"
    if not path.exists():
        write_prompts(path, lines)
    # A new state folder per run, and the old ones removed only after the measurement:
    # deleting the previous run's ~10,000 files just before it made ext4 scan past their
    # freshly freed inodes for every file the intake then created, which cost seconds of
    # kernel time inside the measured intake (seen as recently_deleted and find_inode_bit
    # in `perf`) and measured the harness's cleanup rather than the intake.
    stale = sorted(work.glob("state*"))
    root = work / f"state-{os.getpid()}-{time.time_ns()}"
    root.mkdir(parents=True)
    config = EmulatorConfig(workdir=fresh_dir(OUT / "intake-emulator"))
    try:
        with EmulatorServer(config) as emulator:
            bare = run_variant("benchmarks.intake:bare_variant", path=str(path))
            ours = run_variant(
                "benchmarks.intake:intake_variant",
                path=str(path),
                root=str(root),
                base_url=emulator.base_url,
            )
    finally:
        for old in [*stale, root]:
            shutil.rmtree(old, ignore_errors=True)
    ratio = ours["seconds"] / bare["seconds"]
    size = path.stat().st_size
    print(f"\n== intake: {lines:,} lines, {size / 1e6:,.0f} MB ==")
    print(
        f"  bare json.loads {bare['seconds']:7.2f} s  (cpu {bare['cpu_seconds']:6.2f} s)  "
        f"peak RSS {mb(bare['peak_rss_mb'])}"
    )
    print(
        f"  intake          {ours['seconds']:7.2f} s  (cpu {ours['cpu_seconds']:6.2f} s)  "
        f"peak RSS {mb(ours['peak_rss_mb'])}  accepted {ours['accepted']:,} in "
        f"{ours['batches']} batches, job {ours['state']}"
    )
    print(
        f"  intake time / bare json.loads = {ratio:.2f} (target <= {TIME_TARGET}: "
        f"{target(ratio <= TIME_TARGET)})"
    )
    print(
        f"  intake peak RSS {mb(ours['peak_rss_mb'])} (target <= {RSS_TARGET_MB:.0f} MB: "
        f"{target(ours['peak_rss_mb'] <= RSS_TARGET_MB)}); one invocation allows 540 s, 1 GiB"
    )
    print(
        f"  intake cpu / bare json.loads cpu = {ours['cpu_seconds'] / bare['cpu_seconds']:.2f}"
        "  (both threads of the intake process; the disk's own work is not in it)"
    )
    return {"bare": bare, "intake": ours, "ratio": ratio}
