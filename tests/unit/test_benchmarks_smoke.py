"""Each benchmark's code path at a tiny size: behaviour only, never timings (speed goals
live in benchmarks/, run by `make bench`)."""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from bananabatch.config import Settings
from bananabatch.core.catalog import expected_result_bytes
from bananabatch.core.planning import BatchPlanner, PlanLimits, PlannedBatch
from bananabatch.emulator.render import pad_png, padded_renderer, render_png
from benchmarks import collect, e2e_script, intake, overhead, thumbs


@pytest.fixture(autouse=True)
def _bench_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative bench-out/ lands in the test's own directory.
    monkeypatch.chdir(tmp_path)


def test_padded_png_reaches_the_target_size_and_still_decodes_to_the_same_pixels() -> None:
    png = render_png("x", "1:1", "512")
    padded = pad_png(png, len(png) + 50_000)
    assert len(padded) == len(png) + 50_000
    # The padding is incompressible, so it survives any transport compression.
    assert len(zlib.compress(padded)) > len(png) + 45_000
    with (
        Image.open(io.BytesIO(padded)) as a,
        Image.open(io.BytesIO(png)) as b,
    ):
        assert a.tobytes() == b.tobytes()
    assert pad_png(png, 10) == png
    # Every chunk's length and CRC are right, so strict readers accept it too.
    pos = 8
    while pos < len(padded):
        (length,) = struct.unpack(">I", padded[pos : pos + 4])
        body = padded[pos + 4 : pos + 8 + length]
        (crc,) = struct.unpack(">I", padded[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(body) == crc
        pos += 12 + length
    assert pos == len(padded)


def test_a_padded_render_is_mostly_noisy_pixels_so_it_decodes_like_a_real_image() -> None:
    render = padded_renderer(200_000)
    image = render("a", "1:1", "512")
    assert len(image) == 200_000
    # The pixel data (IDAT) carries nearly all of the size; padding only tops it up.
    idat = _chunk_bytes(image, b"IDAT")
    assert idat > 0.95 * len(image)
    with (
        Image.open(io.BytesIO(image)) as decoded,
        Image.open(io.BytesIO(render_png("padded", "1:1", "512"))) as plain,
    ):
        assert decoded.size == plain.size == (512, 512)
        assert decoded.tobytes() != plain.tobytes()
    # Deterministic per request; not one image for every prompt.
    assert render("a", "1:1", "512") == padded_renderer(200_000)("a", "1:1", "512")
    assert len({render(f"prompt {n}", "1:1", "512") for n in range(40)}) > 1


def test_a_target_smaller_than_the_bare_render_gets_the_bare_render() -> None:
    png = render_png("padded", "1:1", "512")
    assert padded_renderer(len(png) // 2)("a", "1:1", "512") == png


def _chunk_bytes(png: bytes, kind: bytes) -> int:
    pos, total = 8, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == kind:
            total += length
        pos += 12 + length
    return total


def test_collect_benchmark_runs_every_variant_on_the_same_file_in_paired_rounds() -> None:
    result = collect.run_size(lines=3, image_bytes=30_000, rounds=2, naive=True, thumbnails=True)
    assert len(result["rounds"]) == 2
    for one in result["rounds"]:
        assert one["collector"]["images"] == one["minimal"]["images"] == 3
        assert one["bare"]["bytes_read"] == one["minimal"]["bytes_read"] == result["bytes"]
        for name in collect.VARIANTS:
            assert one[name]["peak_rss_mb"] > 0
            assert one[name]["load"] >= 0
    assert result["naive"]["images"] == 3
    assert result["bytes"] > 3 * 30_000
    # Ratios are taken within a round, then summarized: median inside the range.
    ratio = result["ratio_minimal"]
    assert ratio["low"] <= ratio["median"] <= ratio["high"]
    per_round = [r["minimal"]["seconds"] / r["collector"]["seconds"] for r in result["rounds"]]
    assert ratio["low"] == min(per_round)
    # The collector only asks for thumbnails; the workers' run makes every one.
    assert result["rounds"][-1]["collector"]["thumbnail_messages"] == 1
    assert result["thumbnails"]["images"] == 3


def test_minimal_loop_writes_the_images_the_collector_writes(tmp_path: Path) -> None:
    result = collect.run_size(lines=2, image_bytes=20_000, rounds=1)
    written = sorted((Path("bench-out") / "collect" / "minimal").iterdir())
    assert len(written) == 2
    images = sorted(
        p.read_bytes()
        for p in (Path("bench-out") / "collect" / "state").rglob("*.png")
        if "thumb" not in p.name
    )
    assert sorted(p.read_bytes() for p in written) == images
    assert result["images"]["collector"] == 2


def test_sizes_are_rows_of_two_megabyte_lines() -> None:
    assert collect.rows_for(1000) == 500
    assert collect.rows_for(250) == 125
    assert collect.rows_for(2000) == 1000


def test_intake_benchmark_accepts_every_line_against_both_yardsticks() -> None:
    result = intake.run(lines=50, rounds=2)
    runs = result["runs"]
    for name in ("json.loads", "orjson"):
        assert [r["lines"] for r in runs[name]] == [50, 50]
    assert [(r["accepted"], r["state"]) for r in runs["intake"]] == [(50, "RUNNING")] * 2
    median, low, high = result["intake_vs_json_loads"]
    assert 0 < low <= median <= high
    assert result["peak_rss_mb"]["intake"] > 0
    assert result["rounds"] == 2


def test_overhead_benchmark_counts_operations_of_a_real_run() -> None:
    result = overhead.run(lines=3)
    counts = result["counted"]["counts"]
    assert result["counted"]["images"] == 3
    # At least: one image + one thumbnail per item, one item write per line.
    assert counts["gcs_class_a"] >= 6
    assert counts["firestore_write"] >= 3
    assert result["counted"]["invocations"] >= 2
    assert 0 < result["fraction"] < 1


def test_e2e_benchmark_runs_the_user_script_and_local_run_to_the_same_images() -> None:
    # check_outputs raises unless both wrote every image, byte for byte the same, a variant
    # that makes thumbnails during the run made every one, and `local` (on demand) made none
    # during the run and then made the first page's exactly as make_thumbnail does.
    [result] = e2e_script.run(
        prompts=(4,), rounds=1, variants=("local", "local-pillow", "local-nothumbs")
    )
    [row] = result["rounds"]
    on_demand = dict(row["checked"]["local"])
    assert on_demand.pop("first_page_ms") >= 0
    assert on_demand == {"local_images": 4, "script_images": 4, "thumbnails": 0, "different": 0}
    assert row["checked"]["local-pillow"] == {
        "local_images": 4,
        "script_images": 4,
        "thumbnails": 4,
        "different": 0,
    }
    assert row["checked"]["local-nothumbs"]["thumbnails"] == 0
    assert set(row["ratio"]) == {"local", "local-pillow", "local-nothumbs"}
    assert all(mb > 0 for mb in row["rss_mb"].values())
    # The tree's CPU holds the thumbnail workers: never less than the main process's own.
    assert all(row["tree_cpu_seconds"][k] >= row["cpu_seconds"][k] > 0 for k in row["cpu_seconds"])
    assert result["variants"]["local"]["cpu_ratio_median"] > 0


def test_the_pillow_only_variant_hides_pyspng_from_every_process_it_starts() -> None:
    import subprocess
    import sys

    env = e2e_script._env()
    env["PYTHONPATH"] = str(e2e_script._PILLOW_ONLY) + ":" + env["PYTHONPATH"]
    probe = "from bananabatch.report import thumbs; print(thumbs.png_decoder())"
    hidden = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], env=e2e_script._env(), capture_output=True, text=True
    )
    assert (hidden.stdout.strip(), shown.stdout.strip()) == ("Pillow", "libspng")


def test_thumbs_benchmark_compares_both_decoders_on_both_image_sizes() -> None:
    found = thumbs.run(rounds=1, repeat=1)
    assert set(found) == set(thumbs.SIZES)
    for figures in found.values():
        assert figures["libspng_ms"][0] > 0
        assert figures["pillow_ms"][0] > 0


def test_collect_benchmark_measures_other_write_thread_counts_in_the_same_rounds() -> None:
    result = collect.run_size(lines=2, image_bytes=20_000, rounds=1, write_workers=(0, 2))
    assert set(result["alternatives"]) == {"collector-w0", "collector-w2"}
    assert all(r["collector-w0"]["images"] == 2 for r in result["rounds"])


def test_collect_benchmark_measures_other_write_budgets_in_the_same_rounds() -> None:
    result = collect.run_size(lines=2, image_bytes=20_000, rounds=1, write_budgets_mb=(8,))
    assert set(result["alternatives"]) == {"collector-b8"}
    [one] = result["rounds"]
    assert one["collector-b8"]["images"] == 2
    assert one["collector-b8"]["write_budget_bytes"] == 8 * 1024 * 1024
    assert one["collector"]["write_budget_bytes"] == 64 * 1024 * 1024
    assert one["collector"]["minor_faults"] > 0


def test_counting_state_counts_one_write_per_document_of_set_many() -> None:
    class Store:
        def set_many(self, docs: object) -> int:
            return len(list(docs))  # type: ignore[call-overload]

    counts: Counter[str] = Counter()
    proxy = overhead.CountingState(Store(), counts)
    assert proxy.set_many((f"items/{n}", {}) for n in range(7)) == 7
    assert counts["firestore_write"] == 7


def test_planning_closes_a_batch_before_its_output_would_exceed_the_limit() -> None:
    settings = Settings()
    per_image = expected_result_bytes("gemini-3.1-flash-image", "4K")
    planner = BatchPlanner(
        PlanLimits(
            max_requests=settings.max_requests_per_batch,
            max_request_bytes=settings.max_batch_bytes,
            max_output_bytes=settings.max_batch_output_bytes,
        )
    )
    closed: list[PlannedBatch] = []
    for _ in range(200):
        placement = planner.add(
            model="gemini-3.1-flash-image", line_bytes=200, expected_output_bytes=per_image
        )
        closed.extend(placement.closed)
    closed.extend(planner.finish())
    assert sum(b.request_count for b in closed) == 200
    assert all(b.expected_output_bytes <= settings.max_batch_output_bytes for b in closed)
    assert len(closed) > 1
    # The default leaves room under the 2 GB result-file ceiling of the Files API.
    assert settings.max_batch_output_bytes < 2 * 1024**3


def test_kill_trials_reads_a_resume_in_what_local_run_says_when_it_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rich.console import Console

    from bananabatch import cli
    from benchmarks import kill_trials

    said = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=said, width=80))
    cli._say_job_first([])("tiles0-0123456789ab", True)
    assert kill_trials.said_resumed(said.getvalue())
    fresh = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=fresh, width=80))
    cli._say_job_first([])("tiles0-0123456789ab", False)
    assert not kill_trials.said_resumed(fresh.getvalue())
