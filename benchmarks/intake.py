"""Intake against a bare `json.loads` pass and an `orjson` pass over the same file.

`python -m benchmarks.intake --lines 1000000 5000000 15000000 --rounds 3` (`make bench` runs
1M lines). The intake variant is pipeline.intake.handle_upload on the local stack (folder,
SQLite, emulator), i.e. parse, validate, dedup against the file and the cache, plan, stage
each batch's request file and manifest (no item record per line: those are created per
batch at submission), then submit: max_active_batches=1 so submission sends one batch
(creating its items) and the rest stay queued for the tick, as a real deployment would with
capacity full. The yardsticks only read the file line by line and parse each line: with the
standard library's json.loads, and with orjson (a dev-only dependency, never deployed).
Targets: intake <= 3x the json.loads pass on the median round; peak RSS <= 256 MB at 5M
lines (the upload function has 1 GiB; tests/infra/test_intake_memory.py holds the dedup
budget within it).

Every variant runs in a fresh process of its own, so its peak RSS (VmHWM) is its own. The
machine is shared, so the variants alternate: each round runs all three back to back (in an
order rotated every round), each ratio is taken within its round (intake / json.loads of
the same round, never a ratio of two bests), and every figure is the median of the rounds
with its range [min-max], beside the 1-minute load average read around each round. The
ratio of CPU seconds (each process's own, threads included) is printed beside the ratio of
wall seconds: on a machine loaded past its cores, wall time measures the queue as much as
the code.

The intake's local stand-ins keep their files in RAM when the machine has a tmpfs
(/dev/shm; $BANANABATCH_BENCH_STATE picks another folder): the intake creates thousands of
files, and on this development VM's ext4 the time to create a file swings tenfold with what
was deleted before (seconds of kernel time in `perf`: find_inode_bit, recently_deleted),
which measured the disk, not the intake. In production those files are Cloud Storage
objects.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._child import run_variant
from benchmarks.common import OUT, fresh_dir, local_settings, target, write_prompts

TIME_TARGET = 3.0
RSS_TARGET_MB = 256.0
RSS_TARGET_LINES = 5_000_000
ROUNDS = 3
SIZES = (1_000_000, 5_000_000, 15_000_000)
STATE_ENV = "BANANABATCH_BENCH_STATE"
RESULTS = OUT / "intake-results.json"


def bare_variant(path: str) -> dict[str, Any]:
    return _yardstick(path, json.loads)


def orjson_variant(path: str) -> dict[str, Any]:
    import orjson

    return _yardstick(path, orjson.loads)


def _yardstick(path: str, loads: Any) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    lines = 0
    with open(path, "rb") as source:
        for line in source:
            loads(line)
            lines += 1
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "lines": lines,
    }


def intake_variant(
    path: str, root: str, base_url: str, dedup_bytes: int | None = None
) -> dict[str, Any]:
    from bananabatch import events
    from bananabatch.pipeline import intake
    from bananabatch.wiring import build_runtime

    budget = {} if dedup_bytes is None else {"intake_dedup_bytes": dedup_bytes}
    rt = build_runtime(local_settings(Path(root), base_url, max_active_batches=1, **budget))
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


def state_dir() -> tuple[Path, str]:
    """Where the intake's local stand-ins (folder store, SQLite) keep their files, and how
    to name it: $BANANABATCH_BENCH_STATE if set, else a RAM-backed folder when the machine
    has one (/dev/shm), else bench-out/ on the disk."""
    chosen = os.environ.get(STATE_ENV)
    if chosen:
        return Path(chosen), f"${STATE_ENV} ({chosen})"
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / "bananabatch-bench", "RAM (/dev/shm)"
    return OUT / "intake", "disk (bench-out/)"


def median_range(values: Sequence[float]) -> tuple[float, float, float]:
    """The median and the range [min, max] of a round's figures."""
    return statistics.median(values), min(values), max(values)


def shown(values: Sequence[float], fmt: str = ".2f", unit: str = "") -> str:
    mid, low, high = median_range(values)
    return f"{mid:{fmt}}{unit} [{low:{fmt}}-{high:{fmt}}]"


def run(
    *, lines: int = 1_000_000, rounds: int = ROUNDS, dedup_bytes: int | None = None
) -> dict[str, Any]:
    """Paired alternating rounds at one size; prints every round and the summary.
    `dedup_bytes` sets the intake's dedup budget (a small one makes it spill)."""
    from bananabatch.emulator import EmulatorConfig, EmulatorServer

    path = OUT / "intake" / f"prompts-{lines}.jsonl"
    if not path.exists():
        write_prompts(path, lines)
    ram, where = state_dir()
    config = EmulatorConfig(workdir=fresh_dir(OUT / "intake-emulator"))
    names = ("intake", "json.loads", "orjson")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    loads: list[float] = []
    size = path.stat().st_size
    budget = "" if dedup_bytes is None else f"; dedup budget {dedup_bytes:,} bytes"
    print(f"\n== intake: {lines:,} lines, {size / 1e6:,.0f} MB; files in {where}{budget} ==")
    with EmulatorServer(config) as emulator:
        variants = {
            "intake": lambda: _intake_in(ram, path, emulator.base_url, dedup_bytes),
            "json.loads": lambda: run_variant("benchmarks.intake:bare_variant", path=str(path)),
            "orjson": lambda: run_variant("benchmarks.intake:orjson_variant", path=str(path)),
        }
        for n in range(rounds):
            before = os.getloadavg()[0]
            order = names[n % 3 :] + names[: n % 3]
            for name in order:
                runs[name].append(variants[name]())
            loads.append((before + os.getloadavg()[0]) / 2)
            got = {name: runs[name][-1] for name in names}
            intake_s = got["intake"]["seconds"]
            print(
                f"  round {n + 1} ({' > '.join(order)}; load {loads[-1]:.1f}): "
                + ", ".join(
                    f"{name} {got[name]['seconds']:.2f} s ({got[name]['peak_rss_mb']:,.0f} MB)"
                    for name in names
                )
                + f"; intake/json.loads {intake_s / got['json.loads']['seconds']:.2f}"
                + f", intake/orjson {intake_s / got['orjson']['seconds']:.2f}",
                flush=True,
            )
    return _summary(lines, size, runs, loads)


def _summary(
    lines: int, size: int, runs: dict[str, list[dict[str, Any]]], loads: list[float]
) -> dict[str, Any]:
    seconds = {name: [r["seconds"] for r in rs] for name, rs in runs.items()}
    cpu = {name: [r["cpu_seconds"] for r in rs] for name, rs in runs.items()}
    vs_bare = [i / b for i, b in zip(seconds["intake"], seconds["json.loads"], strict=True)]
    vs_orjson = [i / o for i, o in zip(seconds["intake"], seconds["orjson"], strict=True)]
    cpu_vs_bare = [i / b for i, b in zip(cpu["intake"], cpu["json.loads"], strict=True)]
    cpu_vs_orjson = [i / o for i, o in zip(cpu["intake"], cpu["orjson"], strict=True)]
    rss = {name: max(r["peak_rss_mb"] for r in rs) for name, rs in runs.items()}
    last = runs["intake"][-1]
    print(
        f"  median [range] of {len(loads)} rounds: intake {shown(seconds['intake'], unit=' s')}, "
        f"json.loads {shown(seconds['json.loads'], unit=' s')}, "
        f"orjson {shown(seconds['orjson'], unit=' s')}; load {shown(loads, '.1f')}"
    )
    print(
        f"  intake / json.loads {shown(vs_bare)} (target <= {TIME_TARGET} on the median: "
        f"{target(statistics.median(vs_bare) <= TIME_TARGET)}); intake / orjson {shown(vs_orjson)}"
    )
    print(
        f"  CPU seconds: intake {shown(cpu['intake'])}, json.loads {shown(cpu['json.loads'])}, "
        f"orjson {shown(cpu['orjson'])}; intake / json.loads {shown(cpu_vs_bare)}, "
        f"intake / orjson {shown(cpu_vs_orjson)}"
    )
    rss_note = (
        f" (target <= {RSS_TARGET_MB:.0f} MB at {RSS_TARGET_LINES:,} lines: "
        f"{target(rss['intake'] <= RSS_TARGET_MB)})"
        if lines == RSS_TARGET_LINES
        else ""
    )
    print(
        f"  peak RSS (highest of the rounds): intake {rss['intake']:,.0f} MB{rss_note}, "
        f"json.loads {rss['json.loads']:,.0f} MB, orjson {rss['orjson']:,.0f} MB; accepted "
        f"{last['accepted']:,} in {last['batches']} batches, job {last['state']}"
    )
    return {
        "lines": lines,
        "bytes": size,
        "rounds": len(loads),
        "seconds": {name: median_range(v) for name, v in seconds.items()},
        "cpu_seconds": {name: median_range(v) for name, v in cpu.items()},
        "intake_vs_json_loads": median_range(vs_bare),
        "intake_vs_orjson": median_range(vs_orjson),
        "cpu_intake_vs_json_loads": median_range(cpu_vs_bare),
        "cpu_intake_vs_orjson": median_range(cpu_vs_orjson),
        "peak_rss_mb": rss,
        "load": median_range(loads),
        "runs": runs,
    }


def _intake_in(
    parent: Path, path: Path, base_url: str, dedup_bytes: int | None = None
) -> dict[str, Any]:
    # A new state folder per run, removed only after the measurement: deleting the previous
    # run's thousands of files just before it made ext4 scan past their freshly freed inodes
    # for every file the intake then created, which cost seconds of kernel time inside the
    # measured intake (seen as recently_deleted and find_inode_bit in `perf`).
    root = parent / f"state-{os.getpid()}-{time.time_ns()}"
    root.mkdir(parents=True)
    try:
        return run_variant(
            "benchmarks.intake:intake_variant",
            path=str(path),
            root=str(root),
            base_url=base_url,
            dedup_bytes=dedup_bytes,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    import logging

    parser = argparse.ArgumentParser(prog="python -m benchmarks.intake", description=__doc__)
    parser.add_argument("--lines", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--dedup-bytes", type=int, default=None, help="the intake's dedup budget (default: 384 MiB)"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    results = [
        run(lines=lines, rounds=args.rounds, dedup_bytes=args.dedup_bytes) for lines in args.lines
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(
        f"\n  {'lines':>11} | intake s | json.loads s | orjson s | intake/json.loads "
        "| (CPU) | peak RSS | load"
    )
    for r in results:
        s = r["seconds"]
        wall, cpu = r["intake_vs_json_loads"], r["cpu_intake_vs_json_loads"]
        print(
            f"  {r['lines']:>11,} | {s['intake'][0]:.2f} | {s['json.loads'][0]:.2f} | "
            f"{s['orjson'][0]:.2f} | {wall[0]:.2f} [{wall[1]:.2f}-{wall[2]:.2f}] | "
            f"{cpu[0]:.2f} [{cpu[1]:.2f}-{cpu[2]:.2f}] | "
            f"{r['peak_rss_mb']['intake']:,.0f} MB | {r['load'][0]:.1f} [{r['load'][1]:.1f}-"
            f"{r['load'][2]:.1f}]"
        )
    print(f"  (all figures: {RESULTS})")


if __name__ == "__main__":
    main()
