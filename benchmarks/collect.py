"""Collector on result files of 250 MB, 1 GB and 2 GB served by the emulator, against two
yardsticks that read the very same stream:
(a) the minimal loop: split the stream into lines, find the data span by byte search,
    decode it with pybase64's SIMD decoder straight from the line, write the image. Nothing
    else: no JSON, no records, no checkpoints. The floor of any collector written here;
(b) a bare HTTP read: the stream read and dropped, the floor of any reader at all.
Optionally (c) the naive approach: SDK files.download of the whole file into memory, then
split (its memory is the point: 2x the file).

Each variant runs in its own process (peak RSS is per process). The variants run in paired
rounds: in each round all three run one after the other, the order turned around every
round, and the round's ratios (the yardstick's time / the collector's time, so 1.0 is "as
fast as the yardstick") are taken within the round, where the machine's load is the same
for all three. The figure is the median of those per-round ratios with their range, and the
1-minute load average is printed beside it; never a ratio of two bests. Targets: collector
>= 0.9x the minimal loop at every size, collector peak RSS <= 200 MB.

The collector runs as deployed: it writes images and publishes one thumbnails message per
checkpoint, which nobody processes during the timing (in the cloud other invocations do,
in parallel). `thumbnails=True` measures the thumbnail workers' cost separately after the
last round: pipeline/thumbnails over exactly the requests the collector published.

The emulator's images have noise in their pixels (emulator/render.py, padded_renderer), so
they cost what a real PNG of their size costs to decode.

`python -m benchmarks.collect --sizes 250 1000 2000 --rounds 5` runs chosen sizes (MB of
result file); `--profile DIR` also runs the collector once more per size under cProfile.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import queue
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks._child import run_variant
from benchmarks.common import API_KEY, OUT, fresh_dir, local_settings, mb, target, write_prompts

MINIMAL_TARGET = 0.9
RSS_TARGET_MB = 200.0
IMAGE_BYTES = 1_500_000
# Result-file sizes (MB) and rows: a row is a 1.5 MB image as ~2 MB of base64.
SIZES_MB = (250, 1000, 2000)
VARIANTS = ("collector", "minimal", "inline", "bare")


def rows_for(size_mb: int, image_bytes: int = IMAGE_BYTES) -> int:
    line = image_bytes * 4 // 3 + 400
    return max(1, round(size_mb * 1_000_000 / line))


@contextmanager
def _stream(client: httpx.Client, url: str) -> Iterator[Iterator[bytes]]:
    """The download as the collector's provider asks for it, chunks as they come."""
    with client.stream(
        "GET", url, params={"alt": "media"}, headers={"x-goog-api-key": API_KEY}
    ) as response:
        response.raise_for_status()
        yield response.iter_bytes()


def bare_variant(url: str) -> dict[str, Any]:
    """Read the stream and drop it: the floor of any reader."""
    # Made before the timing, as the collector's provider client is (building one costs
    # 0.1 s and more: an SSL context even for http).
    client = httpx.Client(timeout=300)
    started, cpu = time.perf_counter(), time.process_time()
    read = 0
    with client, _stream(client, url) as chunks:
        for chunk in chunks:
            read += len(chunk)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "images": 0,
        "bytes_read": read,
    }


def _images(lines: Iterator[bytes]) -> Iterator[bytes]:
    """Each line's image: byte search for the "data" value, SIMD-decoded from the line."""
    import pybase64

    for line in lines:
        field = line.find(b'"data"')
        if field < 0:
            continue
        begin = line.find(b'"', line.find(b":", field + 6)) + 1
        end = line.find(b'"', begin)
        yield pybase64.b64decode(memoryview(line)[begin:end], validate=True)


def minimal_variant(url: str, out_dir: str, overlap: bool = True) -> dict[str, Any]:
    """Lines, byte search for the data span, SIMD base64 from the line itself, write.

    overlap=True (the yardstick): the writes go to one writer thread through a short
    queue, so a write (which waits outside the GIL) overlaps reading the next line, as
    the collector's write pool does; the best loop that can be written here. overlap=False:
    the same loop writing in line, one image after the other."""
    from bananabatch.providers._common import split_lines

    out = fresh_dir(Path(out_dir))
    client = httpx.Client(timeout=300)
    started, cpu = time.perf_counter(), time.process_time()
    images = read = 0
    pending: queue.Queue[tuple[Path, bytes] | None] = queue.Queue(maxsize=8)

    def write(path: Path, image: bytes) -> None:
        with open(path, "wb") as sink:
            sink.write(image)

    def writer() -> None:
        while (job := pending.get()) is not None:
            write(*job)

    thread = threading.Thread(target=writer) if overlap else None
    if thread is not None:
        thread.start()
    try:
        with client, _stream(client, url) as chunks:

            def counted() -> Iterator[bytes]:
                nonlocal read
                for chunk in chunks:
                    read += len(chunk)
                    yield chunk

            for image in _images(split_lines(counted())):
                if thread is not None:
                    pending.put((out / f"{images}.png", image))
                else:
                    write(out / f"{images}.png", image)
                images += 1
    finally:
        if thread is not None:
            pending.put(None)
            thread.join()
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "images": images,
        "bytes_read": read,
    }


def naive_variant(base_url: str, file_name: str, out_dir: str) -> dict[str, Any]:
    """What the SDK makes easy: download the whole file into memory, then split it."""
    from google import genai

    out = fresh_dir(Path(out_dir))
    started, cpu = time.perf_counter(), time.process_time()
    client = genai.Client(api_key=API_KEY, http_options={"base_url": base_url})
    body = client.files.download(file=file_name)
    images = 0
    for line in body.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for candidate in (row.get("response") or {}).get("candidates", []):
            for part in (candidate.get("content") or {}).get("parts", []):
                data = (part.get("inlineData") or {}).get("data")
                if data:
                    (out / f"{row['key']}.png").write_bytes(base64.b64decode(data))
                    images += 1
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "images": images,
        "bytes_read": len(body),
    }


def collector_variant(
    root: str,
    base_url: str,
    batch_id: str,
    requests_file: str | None = None,
    profile: str | None = None,
    write_workers: int | None = None,
    write_budget_mb: int | None = None,
) -> dict[str, Any]:
    """The real collector (pipeline.collect) on the local stack. The thumbnails requests it
    publishes are kept on a subscription, as Pub/Sub would, and saved to requests_file
    (after the timing) for thumbnails_variant. `profile`: a path for cProfile's stats.
    `write_workers`: the folder store's write threads, in place of the collector's choice
    (0: writes inline), to measure the choice; `write_budget_mb`: the write pool's bytes in
    flight (writes.MAX_WRITE_BYTES_IN_FLIGHT), likewise."""
    from bananabatch.adapters.local.bus import InProcessBus
    from bananabatch.pipeline import collect
    from bananabatch.wiring import build_runtime

    if write_workers is not None:
        from bananabatch.pipeline import writes

        writes.LOCAL_WRITE_WORKERS = write_workers
    if write_budget_mb is not None:
        from bananabatch.pipeline import writes

        writes.MAX_WRITE_BYTES_IN_FLIGHT = write_budget_mb * 1024 * 1024
    rt = build_runtime(local_settings(Path(root), base_url))
    bus = rt.bus
    assert isinstance(bus, InProcessBus)
    bus.create_subscription("bench-batch-done", rt.settings.topic_batch_done)
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu = time.perf_counter(), time.process_time()
    report = collect.handle_batch_done(rt, batch_id)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    published = [
        json.loads(m.data)
        for m in bus.pull("bench-batch-done", max_messages=1_000_000)
        if m.attributes.get("kind") == "thumbnails"
    ]
    if requests_file is not None:
        Path(requests_file).write_text(json.dumps(published), encoding="utf-8")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "images": report.images,
        "rows": report.rows,
        "thumbnail_messages": len(published),
        "write_budget_bytes": writes_budget(),
    }


def writes_budget() -> int:
    from bananabatch.pipeline import writes

    return writes.Writes(workers=0).max_bytes


def thumbnails_variant(root: str, base_url: str, requests_file: str) -> dict[str, Any]:
    """What the thumbnail workers do for the batch: every request the collector published,
    through pipeline.thumbnails, one after the other in one process (in the cloud each is
    its own invocation, running in parallel)."""
    from bananabatch.pipeline import thumbnails
    from bananabatch.wiring import build_runtime

    rt = build_runtime(local_settings(Path(root), base_url))
    requests = json.loads(Path(requests_file).read_text(encoding="utf-8"))
    started, cpu = time.perf_counter(), time.process_time()
    made = 0
    for payload in requests:
        made += thumbnails.handle_thumbnails(rt, thumbnails.parse_request(payload)).made
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "images": made,
        "messages": len(requests),
    }


def prepare(work: Path, emulator: Any, lines: int) -> dict[str, Any]:
    """Stage one job of `lines` prompts, submit it through on_upload and let the emulator
    finish it; returns what the variants need."""
    from bananabatch.local.runner import LocalPipeline
    from bananabatch.wiring import build_runtime

    fresh_dir(work)
    prompts = write_prompts(work / "prompts.jsonl", lines)
    # One batch whatever the size: the planner's default cap (1.5 GiB of expected output
    # per batch) would split the 2 GB file in two.
    settings = local_settings(work / "state", emulator.base_url, max_batch_output_bytes=8 * 1024**3)
    pipeline = LocalPipeline(build_runtime(settings))
    try:
        job_id = pipeline.upload(prompts)
        emulator.state.complete_all()
        batches = list(pipeline.runtime.repo.batches(job_id=job_id))
    finally:
        pipeline.close()
    if len(batches) != 1 or batches[0].provider_name is None:
        raise RuntimeError(f"expected one submitted batch, found {batches}")
    op = emulator.state.get_batch(batches[0].provider_name)
    file_name = op.output_file
    entry = emulator.state.get_file(file_name)
    return {
        "batch_id": batches[0].batch_id,
        "file_name": file_name,
        "file_bytes": entry.size,
        "url": f"{emulator.base_url}/v1beta/{file_name}:download",
        "root": str(work / "state"),
    }


def _restore(snapshot: Path, root: Path) -> None:
    """The local stack as prepare() left it: each collector round collects the same batch."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(snapshot, root)


def spread(values: list[float]) -> dict[str, float]:
    """Median and range: what every figure of this benchmark is reported as."""
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


def _fmt(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} [{s['low']:.{digits}f}–{s['high']:.{digits}f}]"


def paired_rounds(
    variants: dict[str, Callable[[], dict[str, Any]]], rounds: int
) -> list[dict[str, dict[str, Any]]]:
    """Every variant once per round, the order turned around each round (so none always
    runs first, on a cold page cache, or last); the 1-minute load average beside each."""
    names = list(variants)
    results: list[dict[str, dict[str, Any]]] = []
    for round_no in range(max(1, rounds)):
        order = names if round_no % 2 == 0 else names[::-1]
        one: dict[str, dict[str, Any]] = {}
        for name in order:
            load = os.getloadavg()[0]
            one[name] = variants[name]() | {"load": load}
        results.append(one)
    return results


def run_size(
    *,
    lines: int,
    image_bytes: int = IMAGE_BYTES,
    rounds: int = 5,
    naive: bool = False,
    thumbnails: bool = False,
    profile_dir: Path | None = None,
    write_workers: tuple[int, ...] = (),
    write_budgets_mb: tuple[int, ...] = (),
) -> dict[str, Any]:
    """One result file of `lines` rows; the paired rounds over it; figures printed."""
    from bananabatch.emulator import EmulatorConfig, EmulatorServer

    work = OUT / "collect"
    config = EmulatorConfig(
        pending_seconds=0.0,
        running_seconds=0.0,
        workdir=fresh_dir(OUT / "collect-emulator"),
        result_image_bytes=image_bytes,
    )
    with EmulatorServer(config) as emulator:
        started = time.perf_counter()
        setup = prepare(work, emulator, lines)
        setup_seconds = time.perf_counter() - started
        size = setup["file_bytes"]
        root = Path(setup["root"])
        snapshot = work / "state-prepared"
        shutil.copytree(root, snapshot)
        requests_file = work / "thumbnail-requests.json"
        # Read once before any timing, so no variant pays for a cold page cache alone.
        run_variant("benchmarks.collect:bare_variant", url=setup["url"])
        collected = [False]

        def collector(
            write_workers: int | None = None, write_budget_mb: int | None = None
        ) -> dict[str, Any]:
            if collected[0]:
                _restore(snapshot, root)
            collected[0] = True
            return run_variant(
                "benchmarks.collect:collector_variant",
                root=str(root),
                base_url=emulator.base_url,
                batch_id=setup["batch_id"],
                requests_file=str(requests_file),
                write_workers=write_workers,
                write_budget_mb=write_budget_mb,
            )

        alternatives: dict[str, Callable[[], dict[str, Any]]] = {
            f"collector-w{n}": functools.partial(collector, n) for n in write_workers
        } | {
            f"collector-b{n}": functools.partial(collector, write_budget_mb=n)
            for n in write_budgets_mb
        }
        results = paired_rounds(
            alternatives
            | {
                "collector": collector,
                "minimal": lambda: run_variant(
                    "benchmarks.collect:minimal_variant",
                    url=setup["url"],
                    out_dir=str(work / "minimal"),
                ),
                "inline": lambda: run_variant(
                    "benchmarks.collect:minimal_variant",
                    url=setup["url"],
                    out_dir=str(work / "inline"),
                    overlap=False,
                ),
                "bare": lambda: run_variant("benchmarks.collect:bare_variant", url=setup["url"]),
            },
            rounds,
        )
        thumbs = (
            run_variant(
                "benchmarks.collect:thumbnails_variant",
                root=str(root),
                base_url=emulator.base_url,
                requests_file=str(requests_file),
            )
            if thumbnails
            else None
        )
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            _restore(snapshot, root)
            run_variant(
                "benchmarks.collect:collector_variant",
                root=str(root),
                base_url=emulator.base_url,
                batch_id=setup["batch_id"],
                profile=str((profile_dir / f"collector-{lines}.prof").resolve()),
            )
        naive_result = (
            run_variant(
                "benchmarks.collect:naive_variant",
                base_url=emulator.base_url,
                file_name=setup["file_name"],
                out_dir=str(work / "naive"),
            )
            if naive
            else None
        )
    summary = _summarize(results, size)
    for name in sorted(results[0]):
        if name.startswith("collector-"):
            ratios = [r["minimal"]["seconds"] / r[name]["seconds"] for r in results]
            cpu = [r["minimal"]["cpu_seconds"] / r[name]["cpu_seconds"] for r in results]
            summary.setdefault("alternatives", {})[name] = {
                "seconds": spread([r[name]["seconds"] for r in results]),
                "cpu_seconds": spread([r[name]["cpu_seconds"] for r in results]),
                "ratio_minimal": spread(ratios),
                "cpu_ratio_minimal": spread(cpu),
                "peak_rss_mb": max(r[name]["peak_rss_mb"] for r in results),
            }
    _print(lines, size, setup_seconds, results, summary, thumbs, naive_result)
    return summary | {
        "lines": lines,
        "bytes": size,
        "rounds": results,
        "thumbnails": thumbs,
        "naive": naive_result,
    }


def _summarize(results: list[dict[str, dict[str, Any]]], size: int) -> dict[str, Any]:
    seconds = {name: spread([r[name]["seconds"] for r in results]) for name in VARIANTS}
    return {
        "seconds": seconds,
        "cpu_seconds": {
            name: spread([r[name]["cpu_seconds"] for r in results]) for name in VARIANTS
        },
        "mb_per_s": {
            name: spread([size / r[name]["seconds"] / 1e6 for r in results]) for name in VARIANTS
        },
        # Within each round: the yardstick's time over the collector's.
        "ratio_minimal": spread(
            [r["minimal"]["seconds"] / r["collector"]["seconds"] for r in results]
        ),
        "ratio_bare": spread([r["bare"]["seconds"] / r["collector"]["seconds"] for r in results]),
        # The same within each round for CPU seconds (this process's threads, not the
        # emulator's): steadier than wall time on a machine others share.
        "cpu_ratio_minimal": spread(
            [r["minimal"]["cpu_seconds"] / r["collector"]["cpu_seconds"] for r in results]
        ),
        "ratio_inline": spread(
            [r["inline"]["seconds"] / r["collector"]["seconds"] for r in results]
        ),
        "minimal_over_bare": spread(
            [r["bare"]["seconds"] / r["minimal"]["seconds"] for r in results]
        ),
        "peak_rss_mb": {name: max(r[name]["peak_rss_mb"] for r in results) for name in VARIANTS},
        "load": spread([r[name]["load"] for r in results for name in VARIANTS]),
        "images": {name: results[-1][name]["images"] for name in VARIANTS},
    }


def _print(
    lines: int,
    size: int,
    setup_seconds: float,
    results: list[dict[str, dict[str, Any]]],
    summary: dict[str, Any],
    thumbs: dict[str, Any] | None,
    naive: dict[str, Any] | None,
) -> None:
    print(f"\n== collector: {lines} rows, {size / 1e6:,.0f} MB result file ==")
    print(f"  set-up (intake, submit, emulator render): {setup_seconds:.1f} s")
    for n, r in enumerate(results):
        cells = "  ".join(f"{name} {r[name]['seconds']:6.2f} s" for name in VARIANTS)
        ratio = r["minimal"]["seconds"] / r["collector"]["seconds"]
        load = max(r[name]["load"] for name in VARIANTS)
        print(f"  round {n}: {cells}  -> {ratio:.2f}x minimal  (load {load:.2f})")
    for name in VARIANTS:
        print(
            f"  {name:9s} {_fmt(summary['seconds'][name])} s  "
            f"{_fmt(summary['mb_per_s'][name], 0)} MB/s  "
            f"CPU {_fmt(summary['cpu_seconds'][name])} s  "
            f"peak RSS {mb(summary['peak_rss_mb'][name])}"
        )
    if naive is not None:
        print(
            f"  naive     {naive['seconds']:.2f} s  CPU {naive['cpu_seconds']:.2f} s  "
            f"peak RSS {mb(naive['peak_rss_mb'])}"
        )
    ok = summary["ratio_minimal"]["median"] >= MINIMAL_TARGET
    rss = summary["peak_rss_mb"]["collector"]
    print(
        f"  collector / minimal loop = {_fmt(summary['ratio_minimal'])} "
        f"(median [range] of {len(results)} paired rounds; target >= {MINIMAL_TARGET}: "
        f"{target(ok)})"
    )
    print(f"  collector / inline loop  = {_fmt(summary['ratio_inline'])} (writes not overlapped)")
    print(f"  CPU: collector / minimal = {_fmt(summary['cpu_ratio_minimal'])}")
    print(f"  collector / bare read    = {_fmt(summary['ratio_bare'])}")
    print(f"  minimal / bare read      = {_fmt(summary['minimal_over_bare'])}")
    print(
        f"  collector peak RSS {mb(rss)} (target <= {RSS_TARGET_MB:.0f} MB: {target(rss <= 200)})"
    )
    print(f"  load (1-min average at each variant's start): {_fmt(summary['load'])}")
    for name, alt in summary.get("alternatives", {}).items():
        print(
            f"  {name} (w: folder store's write threads, 0 = inline; b: MB of writes in"
            " flight): "
            f"{_fmt(alt['seconds'])} s, CPU {_fmt(alt['cpu_seconds'])} s, "
            f"x minimal {_fmt(alt['ratio_minimal'])} wall, {_fmt(alt['cpu_ratio_minimal'])} CPU, "
            f"peak RSS {mb(alt['peak_rss_mb'])}"
        )
    if thumbs is not None:
        made = max(1, thumbs["images"])
        print(
            f"  thumbnail workers (not in the collector's time): {thumbs['images']} thumbnails "
            f"from {thumbs['messages']} messages, "
            f"CPU {1000 * thumbs['cpu_seconds'] / made:.1f} ms/image, "
            f"wall {1000 * thumbs['seconds'] / made:.1f} ms/image, "
            f"peak RSS {mb(thumbs['peak_rss_mb'])}"
        )


def run(
    *,
    sizes_mb: tuple[int, ...] = SIZES_MB,
    rounds: int = 5,
    image_bytes: int = IMAGE_BYTES,
    naive: bool = False,
    thumbnails: bool = False,
    profile_dir: Path | None = None,
    write_workers: tuple[int, ...] = (),
    write_budgets_mb: tuple[int, ...] = (),
) -> list[dict[str, Any]]:
    """Every size in turn (a fresh emulator and file each), then one table."""
    found = [
        run_size(
            lines=rows_for(size, image_bytes),
            image_bytes=image_bytes,
            rounds=rounds,
            naive=naive,
            thumbnails=thumbnails,
            profile_dir=profile_dir,
            write_workers=write_workers,
            write_budgets_mb=write_budgets_mb,
        )
        for size in sizes_mb
    ]
    print(
        "\n  size | collector s | minimal s | bare s | ×minimal | ×bare | CPU ×minimal "
        "| peak RSS | load"
    )
    for r in found:
        print(
            f"  {r['bytes'] / 1e6:,.0f} MB | {_fmt(r['seconds']['collector'])} | "
            f"{_fmt(r['seconds']['minimal'])} | {_fmt(r['seconds']['bare'])} | "
            f"{_fmt(r['ratio_minimal'])} | {_fmt(r['ratio_bare'])} | "
            f"{_fmt(r['cpu_ratio_minimal'])} | {mb(r['peak_rss_mb']['collector'])} | "
            f"{_fmt(r['load'])}"
        )
    return found


def main(argv: list[str] | None = None) -> None:
    import logging

    logging.disable(logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collect")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES_MB), help="MB")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--thumbnails", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, help="folder for cProfile stats")
    parser.add_argument(
        "--write-workers",
        type=int,
        nargs="*",
        default=[],
        help="also run the collector with this many folder-store write threads (0: inline), "
        "in the same paired rounds",
    )
    parser.add_argument(
        "--write-budgets",
        type=int,
        nargs="*",
        default=[],
        help="also run the collector with this many MB of image writes in flight, in the"
        " same paired rounds",
    )
    args = parser.parse_args(argv)
    run(
        sizes_mb=tuple(args.sizes),
        rounds=args.rounds,
        naive=args.naive,
        thumbnails=args.thumbnails,
        profile_dir=args.profile,
        write_workers=tuple(args.write_workers),
        write_budgets_mb=tuple(args.write_budgets),
    )


if __name__ == "__main__":
    main()
