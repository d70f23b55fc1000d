"""Knowing the bill, end to end on the local stack with the emulator: the estimate matches
the billed usage, budgets hold jobs (approve / reject), the dedup cache makes a repeated
request free, and urgent lines arrive while the batch is still pending."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bananabatch.config import Backend, Settings
from bananabatch.core.messages import load_completion_schema
from bananabatch.core.pricing import Lane
from bananabatch.core.records import SourceObject
from bananabatch.core.results import Usage
from bananabatch.core.states import JOB_TERMINAL, BatchState, ItemState, JobState
from bananabatch.cost_cli import estimate_file
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.errors import PermanentError
from bananabatch.local.runner import LocalPipeline, RunResult
from bananabatch.pipeline import budget, control, intake
from bananabatch.wiring import build_runtime

Factory = Callable[..., LocalPipeline]


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def held_emulator() -> Iterator[EmulatorServer]:
    # Batches stay PENDING until the test completes them.
    config = EmulatorConfig(pending_seconds=math.inf, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Iterator[Factory]:
    made: list[LocalPipeline] = []

    def make(server: EmulatorServer, **overrides: Any) -> LocalPipeline:
        settings = Settings(
            backend=Backend.LOCAL,
            local_root=tmp_path / "state",
            gemini_base_url=server.base_url,
            gemini_api_key="test-key",
            max_requests_per_batch=5,
            # These files price every size tier: the model that offers them all (deprecated,
            # still served by the emulator).
            **({"default_model": "gemini-3.1-flash-image"} | overrides),
        )
        local = LocalPipeline(build_runtime(settings))
        made.append(local)
        return local

    yield make
    for local in made:
        local.close()


def _file(tmp_path: Path, name: str, *docs: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _run(pipeline: LocalPipeline, path: Path, **kw: Any) -> RunResult:
    return pipeline.run_job(path, tick_interval=0.0, timeout=120, **kw)


def _finish(pipeline: LocalPipeline, job_id: str) -> list[dict[str, Any]]:
    """Tick and collect until the job is terminal; returns its completion messages."""
    messages: list[dict[str, Any]] = []
    for _ in range(50):
        pipeline.tick()
        pipeline.drain()
        messages += [m for m in pipeline.completions() if m["job_id"] == job_id]
        if pipeline.runtime.repo.require_job(job_id).state in JOB_TERMINAL:
            return messages
    raise AssertionError(f"job {job_id} did not finish")


def _images_dir(pipeline: LocalPipeline, job_id: str) -> Path:
    root = pipeline.settings.local_root / "buckets" / pipeline.settings.results_bucket
    return root / "jobs" / job_id / "images"


MIXED = (
    {"key": "f1", "prompt": "a lighthouse at dusk, oil painting"},
    {"key": "f2", "prompt": "a red fox in snow", "image_size": "2K"},
    {"key": "f3", "prompt": "city skyline at night, long exposure", "image_size": "4K"},
    {"key": "p1", "prompt": "a bowl of ramen, studio light", "model": "gemini-3-pro-image"},
    {"key": "p2", "prompt": "an owl", "model": "gemini-3-pro-image", "image_size": "4K"},
    {"key": "f4", "prompt": "a paper boat on a puddle " * 8, "aspect_ratio": "16:9"},
)


def test_the_estimate_is_within_one_percent_of_the_actual_cost_from_emulated_usage(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    pipeline = make_pipeline(emulator)
    path = _file(tmp_path, "mixed.jsonl", *MIXED)
    before = estimate_file(pipeline.runtime, path)
    result = _run(pipeline, path)

    assert result.job.state is JobState.SUCCEEDED
    costs = result.summary["costs"]
    assert costs["actual_usd"] > 0
    assert costs["estimated_usd"] == pytest.approx(costs["actual_usd"], rel=0.01)
    assert before.after_dedup_usd == pytest.approx(costs["actual_usd"], rel=0.01)
    assert costs["standard_equivalent_usd"] == pytest.approx(before.standard_usd, rel=1e-6)
    assert costs["saved_usd"] == pytest.approx(
        costs["standard_equivalent_usd"] - costs["actual_usd"], abs=1e-6
    )
    assert costs["cost_per_accepted_image_usd"] == pytest.approx(
        costs["actual_usd"] / len(MIXED), rel=1e-4
    )
    assert costs["batch_actual_usd"] == pytest.approx(costs["actual_usd"])
    assert costs["urgent_actual_usd"] == 0.0
    assert result.summary["lanes"] == {"batch": len(MIXED)}


def test_the_estimate_command_prints_json_with_every_figure_per_model_and_size(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path, monkeypatch: Any
) -> None:
    import typer
    from typer.testing import CliRunner

    from bananabatch import cost_cli

    pipeline = make_pipeline(emulator)
    for name, value in pipeline.settings.to_env().items():
        monkeypatch.setenv(name, value)
    path = _file(tmp_path, "mixed.jsonl", *MIXED, MIXED[0] | {"key": "again"})
    app = typer.Typer()
    app.command()(cost_cli.estimate)
    app.command()(cost_cli.approve)
    out = CliRunner().invoke(app, ["estimate", str(path), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert {(g["model"], g["image_size"]) for g in doc["groups"]} == {
        ("gemini-3.1-flash-image", "1K"),
        ("gemini-3.1-flash-image", "2K"),
        ("gemini-3.1-flash-image", "4K"),
        ("gemini-3-pro-image", "1K"),
        ("gemini-3-pro-image", "4K"),
    }
    assert doc["totals"]["dedup_saved_usd"] > 0
    table = CliRunner().invoke(app, ["estimate", str(path)])
    assert table.exit_code == 0, table.output
    assert "Estimate: 7 accepted lines, 0 rejected" in table.output
    assert "No finished jobs yet" in table.output
    # In a pipe the tables are whole: no model name or dollar figure cut to "…".
    assert "…" not in table.output
    assert "gemini-3.1-flash-image" in table.output
    refused = CliRunner().invoke(app, ["approve", "no-such-job"])
    assert refused.exit_code == 1
    assert "no job no-such-job" in refused.output


def test_earlier_jobs_block_and_failure_rates_raise_the_expected_cost_per_image(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    pipeline = make_pipeline(emulator)
    emulator.state.faults.row("b", "image_safety")
    first = _file(
        tmp_path, "first.jsonl", {"key": "a", "prompt": "fine"}, {"key": "b", "prompt": "x"}
    )
    _run(pipeline, first)
    estimate = estimate_file(pipeline.runtime, _file(tmp_path, "next.jsonl", {"prompt": "new"}))
    assert estimate.rates is not None
    assert estimate.rates.accept_rate == pytest.approx(0.5)
    group = estimate.groups[0]
    assert group.expected_per_accepted_image_usd == pytest.approx(group.batch_usd * 2)


def test_a_repeated_prompt_costs_nothing_the_second_time(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    pipeline = make_pipeline(emulator)
    docs = ({"key": "a", "prompt": "a teapot"}, {"key": "b", "prompt": "a cup", "image_size": "2K"})
    first = _run(pipeline, _file(tmp_path, "first.jsonl", *docs))
    assert first.job.costs.actual_usd > 0
    batches = emulator.state.counters.batches_created

    again = _file(tmp_path, "again.jsonl", *docs)
    assert estimate_file(pipeline.runtime, again).after_dedup_usd == 0.0
    second = _run(pipeline, again)

    assert second.job.state is JobState.SUCCEEDED
    assert second.summary["counts"][ItemState.CACHED] == 2
    assert second.summary["costs"]["actual_usd"] == 0.0
    assert second.summary["costs"]["cache_saved_usd"] == pytest.approx(
        first.job.costs.estimated_usd, rel=1e-6
    )
    assert second.completions[0]["costs"]["actual_usd"] == 0.0
    assert emulator.state.counters.batches_created == batches
    images = _images_dir(pipeline, second.job.job_id)
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png"]
    original = _images_dir(pipeline, first.job.job_id) / "a.png"
    assert (images / "a.png").read_bytes() == original.read_bytes()


def test_identical_lines_in_one_file_are_generated_once_and_copied(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    pipeline = make_pipeline(emulator)
    path = _file(
        tmp_path,
        "dups.jsonl",
        {"key": "a", "prompt": "a kite"},
        {"key": "b", "prompt": "a kite"},
        {"key": "c", "prompt": "a kite", "cache": False},
    )
    result = _run(pipeline, path)
    assert result.job.state is JobState.SUCCEEDED
    assert result.summary["counts"][ItemState.CACHED] == 1
    assert result.summary["counts"][ItemState.SUCCEEDED] == 2
    (batch,) = pipeline.runtime.repo.batches(job_id=result.job.job_id)
    assert batch.request_count == 2
    assert (_images_dir(pipeline, result.job.job_id) / "b.png").exists()
    assert result.summary["lanes"] == {"batch": 2, "duplicate": 1}


def test_a_duplicate_of_a_failed_line_is_in_failed_jsonl_with_the_request_it_repeats(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    emulator.state.faults.row_error("a", code=3, message="Invalid request")
    pipeline = make_pipeline(emulator)
    path = _file(
        tmp_path,
        "dups-failed.jsonl",
        {"key": "a", "prompt": "a kite"},
        {"key": "b", "prompt": "a kite"},
        {"key": "c", "prompt": "a lighthouse"},
    )
    result = _run(pipeline, path)
    assert result.job.state is JobState.PARTIAL
    b = pipeline.runtime.repo.get_item(result.job.job_id, "b")
    assert b is not None
    assert (b.state, b.duplicate_of) == (ItemState.FAILED, "a")
    failed = _images_dir(pipeline, result.job.job_id).parent / "failed.jsonl"
    lines = [json.loads(line) for line in failed.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["a", "b"]
    assert lines[0]["request"] == lines[1]["request"]
    assert lines[1]["request"]["contents"][0]["parts"][0]["text"] == "a kite"


def test_a_job_that_opts_out_of_the_cache_pays_again(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    pipeline = make_pipeline(emulator)
    doc = {"key": "a", "prompt": "a lamp"}
    _run(pipeline, _file(tmp_path, "one.jsonl", doc))
    second = _run(
        pipeline, _file(tmp_path, "two.jsonl", doc), metadata={"bananabatch-cache": "off"}
    )
    assert second.summary["counts"][ItemState.SUCCEEDED] == 1
    assert second.job.costs.actual_usd > 0


def test_a_job_over_its_budget_is_held_announced_and_runs_once_approved(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    pipeline = make_pipeline(emulator, job_budget_usd=0.01)
    result = _run(pipeline, _file(tmp_path, "big.jsonl", *MIXED))

    assert result.job.state is JobState.HELD
    (held,) = result.completions
    jsonschema.validate(held, load_completion_schema())
    assert held["state"] == "HELD"
    assert "exceeds the job budget $0.0100" in held["reason"]
    assert held["costs"]["estimated_usd"] == pytest.approx(result.job.costs.estimated_usd)
    pipeline.tick()  # a tick must not submit a held job's batches
    assert emulator.state.counters.batches_created == 0

    approved = control.approve(pipeline.runtime, result.job.job_id)
    assert approved.state is JobState.RUNNING
    messages = _finish(pipeline, result.job.job_id)
    job = pipeline.runtime.repo.require_job(result.job.job_id)
    assert job.state is JobState.SUCCEEDED
    assert [m["state"] for m in messages] == ["SUCCEEDED"]
    day = budget.day_totals(pipeline.runtime, job.budget_day)
    assert day.reserved_usd == 0.0
    assert day.spent_usd == pytest.approx(job.costs.actual_usd)
    with pytest.raises(PermanentError, match="expected HELD, found SUCCEEDED"):
        control.approve(pipeline.runtime, job.job_id)


def test_a_rejected_held_job_is_cancelled_with_its_items_failed_and_one_final_message(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path
) -> None:
    pipeline = make_pipeline(emulator)
    path = _file(tmp_path, "held.jsonl", *MIXED, {"prompt": "now", "priority": "urgent"})
    result = _run(pipeline, path, metadata={"bananabatch-budget-usd": "0.05"})
    assert result.job.state is JobState.HELD

    job = control.reject(pipeline.runtime, result.job.job_id)

    assert job.state is JobState.CANCELLED
    items = list(pipeline.runtime.repo.items(job.job_id))
    assert {i.state for i in items} == {ItemState.FAILED}
    assert {i.reason for i in items} == {"rejected by user"}
    (final,) = [m for m in pipeline.completions() if m["job_id"] == job.job_id]
    jsonschema.validate(final, load_completion_schema())
    assert final["state"] == "CANCELLED"
    assert final["counts"]["FAILED"] == len(MIXED) + 1
    pipeline.tick()
    assert emulator.state.counters.batches_created == 0
    assert emulator.state.counters.sync_requests == 0
    assert all(
        b.state is BatchState.COLLECTED for b in pipeline.runtime.repo.batches(job_id=job.job_id)
    )


def test_a_burst_of_concurrent_uploads_never_exceeds_the_daily_cap(
    make_pipeline: Factory, held_emulator: EmulatorServer, tmp_path: Path
) -> None:
    probe = make_pipeline(held_emulator)
    one = _file(tmp_path, "probe.jsonl", {"prompt": "burst 00"})
    per_job = estimate_file(probe.runtime, one).batch_usd
    cap = per_job * 3.5
    pipeline = make_pipeline(held_emulator, daily_budget_usd=cap)
    rt = pipeline.runtime
    sources = []
    for n in range(10):
        name = f"burst-{n}.jsonl"
        rt.objects.write_bytes(
            rt.settings.inbox_bucket,
            name,
            json.dumps({"prompt": f"burst {n:02d}"}).encode() + b"\n",
            content_type="application/jsonl",
        )
        info = rt.objects.stat(rt.settings.inbox_bucket, name)
        assert info is not None
        assert info.generation is not None
        sources.append(
            SourceObject(bucket=rt.settings.inbox_bucket, name=name, generation=info.generation)
        )
    start = threading.Barrier(len(sources))
    job_ids: list[str | None] = []

    def upload(source: SourceObject) -> None:
        start.wait()
        job_ids.append(intake.handle_upload(rt, source, {}))

    threads = [threading.Thread(target=upload, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    jobs = [rt.repo.require_job(j) for j in job_ids if j is not None]
    assert len(jobs) == 10
    states = [j.state for j in jobs]
    assert states.count(JobState.RUNNING) == 3
    assert states.count(JobState.HELD) == 7
    assert budget.day_totals(rt).committed_usd <= cap
    assert held_emulator.state.counters.batches_created == 3


def test_an_urgent_line_arrives_while_the_batch_is_still_pending(
    make_pipeline: Factory, held_emulator: EmulatorServer, tmp_path: Path
) -> None:
    pipeline = make_pipeline(held_emulator)
    path = _file(
        tmp_path,
        "urgent.jsonl",
        {"key": "now", "prompt": "a hero banner", "priority": "urgent"},
        {"key": "later-1", "prompt": "a catalogue shot"},
        {"key": "later-2", "prompt": "another catalogue shot"},
    )
    job_id = pipeline.upload(path)
    rt = pipeline.runtime

    urgent = rt.repo.get_item(job_id, "now")
    assert urgent is not None
    assert urgent.state is ItemState.SUCCEEDED
    assert (_images_dir(pipeline, job_id) / "now.png").exists()
    assert urgent.usage is not None
    usage = Usage(**urgent.usage)
    expected = rt.prices.cost_of_usage(urgent.model, Lane.STANDARD, usage)
    assert urgent.actual_usd == pytest.approx(expected, abs=1e-6)
    (batch,) = rt.repo.batches(job_id=job_id)
    assert batch.state is BatchState.RUNNING
    assert rt.repo.require_job(job_id).state is JobState.RUNNING
    pipeline.tick()
    pipeline.drain()
    assert rt.repo.require_job(job_id).state is JobState.RUNNING  # the batch is still pending

    held_emulator.state.complete_all()
    messages = _finish(pipeline, job_id)
    assert [m["state"] for m in messages] == ["SUCCEEDED"]
    summary = pipeline.summary(job_id)
    assert summary["lanes"] == {"batch": 2, "urgent": 1}
    costs = summary["costs"]
    assert costs["urgent_actual_usd"] == pytest.approx(expected, abs=1e-6)
    assert costs["batch_actual_usd"] > 0
    assert costs["actual_usd"] == pytest.approx(
        costs["urgent_actual_usd"] + costs["batch_actual_usd"], abs=1e-6
    )
    assert costs["estimated_usd"] == pytest.approx(costs["actual_usd"], rel=0.01)


def test_an_urgent_failure_never_stops_the_batch_part(
    make_pipeline: Factory, emulator: EmulatorServer, tmp_path: Path, monkeypatch: Any
) -> None:
    pipeline = make_pipeline(emulator)

    def refuse(**_kw: Any) -> Any:
        raise PermanentError("generateContent: 400 INVALID_ARGUMENT (test)")

    monkeypatch.setattr(pipeline.runtime.provider, "generate", refuse)
    path = _file(
        tmp_path,
        "mixed-urgent.jsonl",
        {"key": "now", "prompt": "a hero banner", "priority": "urgent"},
        {"key": "later", "prompt": "a catalogue shot"},
    )
    result = _run(pipeline, path)
    assert result.job.state is JobState.PARTIAL
    now = pipeline.runtime.repo.get_item(result.job.job_id, "now")
    later = pipeline.runtime.repo.get_item(result.job.job_id, "later")
    assert now is not None
    assert later is not None
    assert now.state is ItemState.FAILED
    assert now.reason is not None
    assert "400 INVALID_ARGUMENT" in now.reason
    assert later.state is ItemState.SUCCEEDED
    failed = _images_dir(pipeline, result.job.job_id).parent / "failed.jsonl"
    assert [json.loads(line)["key"] for line in failed.read_text().splitlines()] == ["now"]
