"""End to end: `bananabatch local run` against the user's own 30-line google-genai script
(USER_SCRIPT below: upload the JSONL, create one batch, poll, download the whole result
file, split, decode, write the images), on the same prompts, against the same emulator.

Both talk over loopback to one emulator that runs in its own process (so neither pays for
rendering and serving in its own CPU time or RSS) and answers at once (no PENDING or
RUNNING wait: what is left is the work on each side). Each variant is a fresh process,
started the way a user starts it (`python script.py`, `bananabatch local run FILE --yes`);
its wall time runs from start to exit, and its peak RSS is the sum over its process tree
(sampled every 50 ms from /proc, so a pool of workers counts) beside the main process's own
high-water mark (wait4's ru_maxrss). A variant that makes thumbnails during the run must
have made every one by the time it exits; `local` (thumbnails on demand, the default) must
have made none, and after the timing the benchmark makes the gallery's first page of them
(FIRST_PAGE) as the gallery server does (pipeline/thumbnails.ensure_thumbnail), checks them
byte-identical to make_thumbnail's and reports how long that page took. The images are
checked byte-identical to the script's, after the timing.

Rounds are paired and alternate which variant goes first; each round gives one ratio, and
the figure is the median ratio with its range, never a ratio of two bests, beside the
machine's load (1-minute load average before and after each round).

Targets (issue 18): local run <= 1.2x the script's wall time at 10k and 50k prompts, with
thumbnails made; at 50k, <= 1/10 of the script's peak RSS.

    python -m benchmarks.e2e_script --prompts 1000,10000 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import OUT, fresh_dir, mb, target, write_prompts

RATIO_TARGET = 1.2
RSS_FRACTION_TARGET = 0.1
API_KEY = "AQ.bench-e2e-key"
# Each image is a noisy 1024x1024 PNG of about this size (emulator/render.py,
# padded_renderer): it costs what a real 1K image of its pixels costs to decode, while the
# result file stays small enough for the script, which holds it three times over in RAM.
IMAGE_BYTES = 48_000
SAMPLE_SECONDS = 0.05
_ROOT = Path(__file__).resolve().parent.parent

USER_SCRIPT = '''\
"""A user's own batch run: prompts.jsonl in, one PNG per key out."""
import base64, json, sys, time
from pathlib import Path

from google import genai

prompts, out, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
out.mkdir(parents=True, exist_ok=True)
client = genai.Client()  # GEMINI_API_KEY and GOOGLE_GEMINI_BASE_URL from the environment
requests = out.with_suffix(".requests.jsonl")
with prompts.open() as source, requests.open("w") as sink:
    for line in source:
        p = json.loads(line)
        body = {"contents": [{"role": "user", "parts": [{"text": p["prompt"]}]}],
                "generationConfig": {"responseModalities": ["IMAGE"]}}
        sink.write(json.dumps({"key": p["key"], "request": body}) + "\\n")
uploaded = client.files.upload(file=requests, config={"mime_type": "jsonl"})
job = client.batches.create(model=model, src=uploaded.name)
done = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
while job.state.name not in done:
    time.sleep(1)
    job = client.batches.get(name=job.name)
result = client.files.download(file=job.dest.file_name)
for line in result.splitlines():
    row = json.loads(line)
    for part in row["response"]["candidates"][0]["content"]["parts"]:
        if "inlineData" in part:
            image = base64.b64decode(part["inlineData"]["data"])
            (out / f"{row['key']}.png").write_bytes(image)
print(job.state.name)
'''


# --- the emulator, in its own process ------------------------------------------------------


def serve(workdir: str, image_bytes: int) -> None:
    """Run the emulator until killed; print its base URL once listening."""
    from bananabatch.emulator import EmulatorConfig, run_forever

    config = EmulatorConfig(
        pending_seconds=0.0,
        running_seconds=0.0,
        workdir=Path(workdir),
        result_image_bytes=image_bytes,
    )
    run_forever("127.0.0.1", 0, config, on_listening=lambda url: print(url, flush=True))


@contextmanager
def emulator(workdir: Path, image_bytes: int) -> Iterator[str]:
    fresh_dir(workdir)
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.e2e_script", "--serve", str(workdir), str(image_bytes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=_ROOT,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the emulator did not start (said {url!r})")
        yield url
    finally:
        process.terminate()
        process.wait(30)


# --- one timed process -----------------------------------------------------------------------


@dataclass
class Timed:
    seconds: float
    tree_peak_mb: float
    main_peak_mb: float
    cpu_seconds: float
    tree_cpu_seconds: float
    stdout: str


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _tree_rss_kb(root: int, cpu: dict[int, float] | None = None) -> int:
    """VmRSS summed over `root` and its descendants, found through /proc's `children`
    lists (reading every process's status instead cost the sampler 6% of a core). With
    `cpu`, each process's own CPU seconds so far (utime + stime) are recorded in it by pid:
    worker processes under a fork server are not the root's children, so wait4's figure
    for the root leaves them out."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            if cpu is not None:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
            for task in os.listdir(f"/proc/{pid}/task"):
                stack.extend(
                    int(child)
                    for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                )
        except (OSError, ValueError):
            continue  # ended while we looked
    return total


def timed(argv: Sequence[str], env: dict[str, str], cwd: Path) -> Timed:
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    peak = [0]
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], _tree_rss_kb(process.pid, cpu))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out.append(process.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(process.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    for reader in readers:
        reader.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {process.returncode}:\n{b''.join(err).decode()[-3000:]}"
        )
    own = usage.ru_utime + usage.ru_stime
    return Timed(
        seconds=seconds,
        tree_peak_mb=max(peak[0], usage.ru_maxrss) / 1024,
        main_peak_mb=usage.ru_maxrss / 1024,
        cpu_seconds=own,
        # Every process of the tree as last sampled, its own CPU only (up to 50 ms of each
        # one's end missed); wait4's figure when larger (it holds the children the root
        # waited for, so the larger of the two counts nothing twice).
        tree_cpu_seconds=max(own, sum(cpu.values())),
        stdout=b"".join(out).decode(),
    )


def _env(**extra: str) -> dict[str, str]:
    return (
        os.environ
        | {"PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
        | extra
    )


# --- the two variants ----------------------------------------------------------------------


def run_script(work: Path, prompts: Path, base_url: str, model: str) -> Timed:
    out = work / "script-out"
    shutil.rmtree(out, ignore_errors=True)
    script = work / "user_script.py"
    script.write_text(USER_SCRIPT, encoding="utf-8")
    env = _env(GEMINI_API_KEY=API_KEY, GOOGLE_GEMINI_BASE_URL=base_url)
    return timed([sys.executable, str(script), str(prompts), str(out), model], env, work)


# How `local run` may be started: the default (thumbnails made on demand by the gallery
# server, none during the run), thumbnails made during the run in worker processes (the
# default before on-demand), delivered inline (the behaviour before issue 18), and no
# thumbnails at all (a stub; the floor `local` should now sit on).
_DURING_RUN = {"BANANABATCH_LOCAL_THUMBNAILS": "during-run"}
LOCAL_VARIANTS = {
    "local": {},
    "local-pool": _DURING_RUN,
    "local-inline": {**_DURING_RUN, "BANANABATCH_LOCAL_THUMBNAIL_WORKERS": "0"},
    "local-nothumbs": {**_DURING_RUN, "BANANABATCH_LOCAL_THUMBNAIL_WORKERS": "0"},
    # Thumbnails as `local-pool`, every PNG decoded by Pillow (pyspng hidden).
    "local-pillow": _DURING_RUN,
}
# The variants whose run makes no thumbnail (the gallery makes them when shown).
ON_DEMAND = frozenset({"local"})
# Cards on a gallery page (report/gallery.PAGE_ITEMS): the thumbnails opening it makes.
FIRST_PAGE = 100
_PILLOW_ONLY = _ROOT / "benchmarks" / "_pillow_only"
_NO_THUMBNAILS = (
    "import sys; from bananabatch.pipeline import thumbnails as t; "
    "t.handle_thumbnails = lambda rt, request: t.ThumbnailReport(); "
    "from bananabatch.cli import main; sys.argv[0] = 'bananabatch'; main()"
)


def run_local(work: Path, prompts: Path, base_url: str, variant: str = "local") -> Timed:
    root = work / f"root-{variant}"
    shutil.rmtree(root, ignore_errors=True)
    env = _env(
        GEMINI_API_KEY=API_KEY,
        GOOGLE_GEMINI_BASE_URL=base_url,
        # A benchmark job is far over the default daily cap; the emulator bills nobody.
        BANANABATCH_DAILY_BUDGET_USD="unlimited",
        **LOCAL_VARIANTS[variant],
    )
    if variant == "local-pillow":
        env["PYTHONPATH"] = os.pathsep.join([str(_PILLOW_ONLY), env["PYTHONPATH"]])
    bananabatch = Path(sys.executable).with_name("bananabatch")
    start = (
        [sys.executable, "-c", _NO_THUMBNAILS]
        if variant == "local-nothumbs"
        else [str(bananabatch)]
    )
    argv = [*start, "local", "run", str(prompts), "--yes", "--json"]
    argv += ["--provider", "gemini", "--root", str(root)]
    return timed(argv, env, work)


def check_outputs(work: Path, prompts: int, variant: str) -> dict[str, int]:
    """Images byte-identical between the script and a local run variant, and the variant's
    thumbnails all made (when it makes them)."""
    script_out = work / "script-out"
    root = work / f"root-{variant}"
    images = sorted(root.glob("buckets/results/jobs/*/images/*.png"))
    thumbs = list(root.glob("buckets/results/jobs/*/thumbs/*.jpg"))
    thumbnails = variant not in ON_DEMAND and variant != "local-nothumbs"
    different = 0
    for image in images:
        theirs = script_out / image.name
        if not theirs.is_file() or _digest(theirs) != _digest(image):
            different += 1
    found = {
        "local_images": len(images),
        "script_images": len(list(script_out.glob("*.png"))),
        "thumbnails": len(thumbs),
        "different": different,
    }
    if (
        found["local_images"] != prompts
        or found["script_images"] != prompts
        or different
        or (thumbnails and found["thumbnails"] != prompts)
        or (variant in ON_DEMAND and found["thumbnails"])
    ):
        raise RuntimeError(f"outputs do not match at {prompts} prompts: {found}")
    if variant in ON_DEMAND:
        found["first_page_ms"] = first_page_on_demand(root, images[:FIRST_PAGE])
    return found


def first_page_on_demand(root: Path, images: Sequence[Path]) -> int:
    """Make the thumbnails of `images` as the gallery server does, check each against
    make_thumbnail's, and return the milliseconds they took (one after another, as one
    server thread would)."""
    from bananabatch.config import Settings
    from bananabatch.pipeline.thumbnails import ensure_thumbnail
    from bananabatch.report.thumbs import make_thumbnail
    from bananabatch.wiring import build_runtime

    rt = build_runtime(Settings(local_root=root), with_provider=False)
    took = 0.0
    for image in images:
        job_id, key = image.parent.parent.name, image.stem
        start = time.perf_counter()
        made = ensure_thumbnail(rt, job_id, key)
        took += time.perf_counter() - start
        if made is None or made != make_thumbnail(image.read_bytes()):
            raise RuntimeError(f"the on-demand thumbnail of {image} is not make_thumbnail's")
    return round(took * 1000)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- rounds --------------------------------------------------------------------------------


def _spread(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}-{fmt.format(max(values))}]"
    )


def run_size(
    prompts: int,
    rounds: int,
    image_bytes: int = IMAGE_BYTES,
    variants: Sequence[str] = ("local",),
) -> dict[str, Any]:
    """Paired rounds of the script and each `local run` variant, in an order that rotates
    every round; each round gives one ratio per variant (its time over the script's)."""
    from bananabatch.core.catalog import DEFAULT_MODEL

    work = fresh_dir(OUT / "e2e_script" / str(prompts)).resolve()
    prompt_file = write_prompts(work / "prompts.jsonl", prompts)
    names = ["script", *variants]
    rows: list[dict[str, Any]] = []
    with emulator(work / "emulator", image_bytes) as base_url:
        for n in range(rounds):
            load_before = os.getloadavg()[0]
            # Rotate which goes first, so drift in the machine's load hits all alike.
            order = names[n % len(names) :] + names[: n % len(names)]
            got: dict[str, Timed] = {}
            for which in order:
                if which == "script":
                    got[which] = run_script(work, prompt_file, base_url, DEFAULT_MODEL)
                    continue
                got[which] = run_local(work, prompt_file, base_url, which)
            load_after = os.getloadavg()[0]
            # After the timing: the same prompts must have given the same bytes.
            checked = {k: check_outputs(work, prompts, k) for k in variants}
            row: dict[str, Any] = {
                "round": n + 1,
                "order": order,
                "load": (load_before, load_after),
                "seconds": {k: v.seconds for k, v in got.items()},
                "cpu_seconds": {k: v.cpu_seconds for k, v in got.items()},
                "tree_cpu_seconds": {k: v.tree_cpu_seconds for k, v in got.items()},
                "rss_mb": {k: v.tree_peak_mb for k, v in got.items()},
                "main_rss_mb": {k: v.main_peak_mb for k, v in got.items()},
                "ratio": {k: got[k].seconds / got["script"].seconds for k in variants},
                "checked": checked,
            }
            rows.append(row)
            print(
                f"  {prompts:>6} prompts, round {n + 1} (order {', '.join(order)}; load "
                f"{load_before:.2f}->{load_after:.2f}): "
                + "; ".join(
                    f"{k} {got[k].seconds:.1f} s ({got[k].tree_cpu_seconds:.1f} s CPU, "
                    f"{mb(got[k].tree_peak_mb)}"
                    + (f", {row['ratio'][k]:.2f}x" if k in variants else "")
                    + ")"
                    for k in names
                ),
                flush=True,
            )
            for k in variants:
                if "first_page_ms" in checked[k]:
                    print(
                        f"    {k}: the gallery's first page, {FIRST_PAGE} thumbnails made on"
                        f" demand after the run: {checked[k]['first_page_ms']} ms",
                        flush=True,
                    )
    loads = [x for r in rows for x in r["load"]]
    summary: dict[str, Any] = {"prompts": prompts, "rounds": rows, "variants": {}}
    script_s = [r["seconds"]["script"] for r in rows]
    script_rss = [r["rss_mb"]["script"] for r in rows]
    print(
        f"  {prompts:>6} prompts: script {_spread(script_s)} s, peak RSS "
        f"{_spread(script_rss, '{:.0f}')} MB; load {min(loads):.2f}-{max(loads):.2f}",
        flush=True,
    )
    for k in variants:
        ratios = [r["ratio"][k] for r in rows]
        # CPU of the whole process tree (thumbnail workers included) over the script's:
        # on a machine loaded past its cores the wall ratio measures the run queue.
        cpu_ratios = [r["tree_cpu_seconds"][k] / r["tree_cpu_seconds"]["script"] for r in rows]
        rss = [r["rss_mb"][k] for r in rows]
        fraction = statistics.median(rss) / statistics.median(script_rss)
        summary["variants"][k] = {
            "ratio_median": statistics.median(ratios),
            "ratio_range": (min(ratios), max(ratios)),
            "cpu_ratio_median": statistics.median(cpu_ratios),
            "cpu_ratio_range": (min(cpu_ratios), max(cpu_ratios)),
            "rss_median": statistics.median(rss),
            "rss_fraction": fraction,
        }
        ratio_ok = statistics.median(ratios) <= RATIO_TARGET
        print(
            f"    {k}: {_spread([r['seconds'][k] for r in rows])} s, ratio "
            f"{_spread(ratios, '{:.2f}')}x (target <= {RATIO_TARGET}x at 10k and 50k: "
            f"{target(ratio_ok)}); CPU {_spread([r['tree_cpu_seconds'][k] for r in rows])} s, "
            f"CPU ratio {_spread(cpu_ratios, '{:.2f}')}x; "
            f"peak RSS {_spread(rss, '{:.0f}')} MB = {fraction:.3f} of "
            f"the script's (target <= {RSS_FRACTION_TARGET} at 50k: "
            f"{target(fraction <= RSS_FRACTION_TARGET)})",
            flush=True,
        )
    return summary


def run(
    *,
    prompts: Sequence[int] = (1_000, 10_000, 50_000),
    rounds: int = 3,
    variants: Sequence[str] = ("local",),
) -> list[dict[str, Any]]:
    print(
        f"\n== end to end: local run against the user's google-genai script "
        f"({rounds} paired alternating rounds per size, {os.cpu_count()} CPUs) =="
    )
    return [run_size(count, rounds, variants=variants) for count in prompts]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:
        serve(argv[1], int(argv[2]))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e_script")
    parser.add_argument("--prompts", default="1000,10000,50000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="local",
        help=f"comma-separated local run variants among {', '.join(LOCAL_VARIANTS)}",
    )
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in LOCAL_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(LOCAL_VARIANTS)}")
    run(prompts=[int(p) for p in args.prompts.split(",")], rounds=args.rounds, variants=variants)


if __name__ == "__main__":
    main(sys.argv[1:])
