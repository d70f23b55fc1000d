"""The whole flow on the local stack: a JSONL goes in through on_upload, the real SDK talks
to the emulator, images and reports come out, one completion message is published."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from bananabatch.config import Backend, Settings
from bananabatch.core.messages import load_completion_schema
from bananabatch.core.states import ItemState, JobState
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.local.runner import LocalPipeline, RunResult
from bananabatch.report.thumbs import thumb_object_name
from bananabatch.wiring import build_runtime

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    # A manual clock and zero delays: batches finish on the first poll, so nothing waits.
    config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def pipeline(tmp_path: Path, emulator: EmulatorServer) -> Iterator[LocalPipeline]:
    settings = Settings(
        backend=Backend.LOCAL,
        local_root=tmp_path / "state",
        gemini_base_url=emulator.base_url,
        gemini_api_key="test-key",
        max_requests_per_batch=5,
    )
    local = LocalPipeline(build_runtime(settings))
    yield local
    local.close()


def _run(pipeline: LocalPipeline, path: Path) -> RunResult:
    return pipeline.run_job(path, tick_interval=0.0, timeout=120)


def test_the_example_file_goes_from_upload_to_images_and_one_completion_message(
    pipeline: LocalPipeline, emulator: EmulatorServer
) -> None:
    result = _run(pipeline, EXAMPLES)
    lines = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]

    assert result.job.state is JobState.PARTIAL  # three lines are deliberately bad
    counts = result.summary["counts"]
    assert sum(counts.values()) == len(lines) == result.summary["line_count"]
    assert counts[ItemState.REJECTED] == 3
    assert counts[ItemState.SUCCEEDED] == len(lines) - 3
    # The line on the deprecated model is made, and the summary says what it risks.
    assert any(
        w.startswith("gemini-3.1-flash-image is deprecated") and "gemini-nano-banana-2.1" in w
        for w in result.summary["warnings"]
    ), result.summary["warnings"]

    results_root = pipeline.settings.local_root / "buckets" / pipeline.settings.results_bucket
    job_dir = results_root / "jobs" / result.job.job_id
    for line in lines:
        if line.get("key") in {"old-nano-banana", "bad-ratio", "bad/key"}:
            continue
        key = line.get("key") or "line-000014"
        with Image.open(job_dir / "images" / f"{key}.png") as image:
            ratio = line.get("aspect_ratio") or line.get("request", {}).get(
                "generationConfig", {}
            ).get("imageConfig", {}).get("aspectRatio", "1:1")
            w, h = (int(x) for x in ratio.split(":"))
            assert image.width / image.height == pytest.approx(w / h, rel=0.03), key

    # Thumbnails are made by separate on_batch_done invocations the collector asks for;
    # once the job has settled, every succeeded item has one.
    items = pipeline.runtime.repo.items(result.job.job_id)
    succeeded = [i.key for i in items if i.state is ItemState.SUCCEEDED]
    assert len(succeeded) == counts[ItemState.SUCCEEDED]
    for key in succeeded:
        with Image.open(results_root / thumb_object_name(result.job.job_id, key)) as thumb:
            assert thumb.format == "JPEG", key
            assert max(thumb.size) <= 256, key

    rejected = [json.loads(x) for x in (job_dir / "rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [15, 16, 17]
    assert "shut down" in rejected[0]["reason"]
    assert "use gemini-3.1-flash-lite-image" in rejected[0]["reason"]
    assert "aspect_ratio" in rejected[1]["reason"]
    assert "line 16" in rejected[1]["reason"]

    results = [json.loads(x) for x in (job_dir / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in results] == list(range(1, len(lines) + 1))

    assert len(result.completions) == 1
    message = result.completions[0]
    jsonschema.validate(message, load_completion_schema())
    assert message["job_id"] == result.job.job_id
    assert message["counts"] == counts
    assert message["costs"]["actual_usd"] > 0
    assert message["costs"]["saved_usd"] > 0
    # Nothing was paid for twice.
    assert emulator.state.counters.batches_created == result.job.batch_count


def test_uploading_the_same_object_event_twice_creates_one_job_and_pays_once(
    pipeline: LocalPipeline, emulator: EmulatorServer, tmp_path: Path
) -> None:
    source = tmp_path / "two.jsonl"
    source.write_text('{"key": "a", "prompt": "one"}\n{"key": "b", "prompt": "two"}\n')
    first = _run(pipeline, source)
    objects = pipeline.runtime.objects
    info = objects.stat(pipeline.settings.inbox_bucket, "two.jsonl")
    assert info is not None
    assert info.generation is not None
    from bananabatch import events

    attributes, data = events.storage_finalized_event(
        bucket=pipeline.settings.inbox_bucket,
        name="two.jsonl",
        generation=info.generation,
        size=info.size,
        content_type="application/jsonl",
    )
    pipeline.deliver("on_upload", attributes, data)
    pipeline.tick()
    pipeline.drain()
    assert emulator.state.counters.batches_created == 1
    assert pipeline.runtime.repo.require_job(first.job.job_id).state is JobState.SUCCEEDED
    assert pipeline.completions() == []


def test_a_file_of_only_bad_lines_fails_the_job_with_every_line_rejected(
    pipeline: LocalPipeline, emulator: EmulatorServer, tmp_path: Path
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('not json\n{"prompt": ""}\n')
    result = _run(pipeline, source)
    assert result.job.state is JobState.FAILED
    assert result.summary["counts"][ItemState.REJECTED] == 2
    assert emulator.state.counters.batches_created == 0
    assert len(result.completions) == 1


def test_an_empty_file_fails_with_a_reason_and_one_completion(
    pipeline: LocalPipeline, tmp_path: Path
) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_text("\n\n")
    result = _run(pipeline, source)
    assert result.job.state is JobState.FAILED
    assert result.job.error is not None
    assert "empty" in result.job.error
    assert len(result.completions) == 1


def test_the_demo_jobs_gallery_renders_every_image_in_a_real_chromium(
    pipeline: LocalPipeline,
) -> None:
    from tests.support.browser import assert_gallery_renders

    result = _run(pipeline, EXAMPLES)
    job_dir = (
        pipeline.settings.local_root
        / "buckets"
        / pipeline.settings.results_bucket
        / "jobs"
        / result.job.job_id
    )
    succeeded = {
        json.loads(line)["key"]
        for line in (job_dir / "results.jsonl").read_text().splitlines()
        if json.loads(line)["status"] == "SUCCEEDED"
    }
    assert len(succeeded) == 14
    screenshot = Path(__file__).resolve().parents[1] / "artifacts" / "demo-gallery.png"
    assert_gallery_renders(job_dir / "index.html", succeeded, screenshot)
    assert screenshot.stat().st_size > 10_000


def test_a_finished_batch_is_collected_while_the_emulator_still_renders_another(
    tmp_path: Path, pipeline: LocalPipeline, emulator: EmulatorServer
) -> None:
    """The emulator renders a batch's results when a poll first finds it finished, which
    takes minutes at catalog size; the images of a batch already rendered must be collected
    (and counted on the progress line) meanwhile, not after every batch is rendered."""
    import threading

    from bananabatch.emulator.render import render_png

    release = threading.Event()
    first_batch_done = threading.Event()
    gave_up: list[str] = []

    def render(prompt: str, aspect: str | None, size: str | None) -> bytes:
        # The last batch renders until the test has seen the first one's progress.
        if prompt.startswith("late") and not release.wait(5):
            gave_up.append(prompt)
        return render_png(prompt, aspect, size)

    emulator.state._renderer = render
    path = tmp_path / "two-batches.jsonl"
    lines = [f"early {n}" for n in range(5)] + [f"late {n}" for n in range(5)]
    path.write_text(
        "".join(json.dumps({"key": f"k{n}", "prompt": p}) + "\n" for n, p in enumerate(lines))
    )
    seen: list[int] = []

    def progress(p: object) -> None:
        succeeded = getattr(p, "counts", {}).get(ItemState.SUCCEEDED.value, 0)
        seen.append(succeeded)
        if succeeded >= 5 and not release.is_set():
            first_batch_done.set()
            release.set()

    result = pipeline.run_job(path, tick_interval=0.0, timeout=120, on_progress=progress)
    assert result.job.state is JobState.SUCCEEDED
    # The first batch's five images were counted while the second still rendered.
    assert first_batch_done.is_set(), seen
    assert gave_up == [], seen


def test_images_copied_from_a_duplicate_line_or_the_cache_get_thumbnails_too(
    pipeline: LocalPipeline, tmp_path: Path
) -> None:
    # A copy is made when its original is collected or cached, before the original's
    # thumbnail exists (thumbnails come after the collection): the copy must ask for its own.
    first = tmp_path / "first.jsonl"
    first.write_text(
        "".join(
            json.dumps({"key": f"k{i}", "prompt": f"a lamp, variant {i % 3}"}) + "\n"
            for i in range(7)
        )
    )
    again = tmp_path / "again.jsonl"
    again.write_text(
        "".join(
            json.dumps({"key": f"c{i}", "prompt": f"a lamp, variant {i}"}) + "\n" for i in range(3)
        )
    )
    results_root = pipeline.settings.local_root / "buckets" / pipeline.settings.results_bucket
    for path, copies in ((first, 4), (again, 3)):
        result = _run(pipeline, path)
        items = list(pipeline.runtime.repo.items(result.job.job_id))
        with_images = [i for i in items if i.image_uri]
        assert len(with_images) == len(items), [(i.key, i.state) for i in items]
        assert sum(i.state is not ItemState.SUCCEEDED for i in items) == copies
        for item in with_images:
            thumb = results_root / thumb_object_name(result.job.job_id, item.key)
            assert thumb.exists(), (item.key, item.state)
