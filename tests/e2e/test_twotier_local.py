"""Two-tier jobs on the local stack (issue 21): drafts on the Lite model, the cull of the
broken images the emulator was told to produce, finals on Pro with the candidate as the
reference, one completion message, and each stage's cost per accepted image."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bananabatch.config import Backend, Settings
from bananabatch.core.states import ItemState, JobState
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.local.runner import LocalPipeline, RunResult
from bananabatch.wiring import build_runtime

LITE = "gemini-3.1-flash-lite-image"
PRO = "gemini-3-pro-image"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
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
        daily_budget_usd=100.0,
    )
    local = LocalPipeline(build_runtime(settings))
    yield local
    local.close()


def _file(tmp_path: Path, lines: int, header: dict[str, object] | None) -> Path:
    path = tmp_path / "hero.jsonl"
    rows = [] if header is None else [json.dumps({"bananabatch": header})]
    rows += [
        json.dumps(
            {
                "key": f"sku-{n:02d}",
                "prompt": f"Product shot {n} of a ceramic mug on linen",
                "aspect_ratio": "1:1",
                "metadata": {"sku": n},
            }
        )
        for n in range(1, lines + 1)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def _job_dir(pipeline: LocalPipeline, result: RunResult) -> Path:
    root = pipeline.settings.local_root / "buckets" / pipeline.settings.results_bucket
    return root / "jobs" / result.job.job_id


def test_twenty_lines_by_four_candidates_cull_the_broken_drafts_and_finish_on_pro(
    tmp_path: Path, pipeline: LocalPipeline, emulator: EmulatorServer
) -> None:
    faults = emulator.state.faults
    broken = {
        "sku-01~c1": "blank_image",
        "sku-02~c2": "uniform_image",
        "sku-03~c3": "copy_image",
        "sku-04~c4": "small_image",
    }
    for key, kind in broken.items():
        faults.row(key, kind)  # type: ignore[arg-type]
    # Every draft of sku-05 is broken: it is drafted again, and its second round is fine.
    for n in range(1, 5):
        faults.row(f"sku-05~c{n}", "blank_image")
    path = _file(tmp_path, 20, {"final_model": PRO, "candidates": 4, "keep": 1})

    result = pipeline.run_job(path, tick_interval=0.0, timeout=300)

    assert result.job.state is JobState.SUCCEEDED, result.summary
    summary = result.summary
    two = summary["two_tier"]
    assert two["lines"] == {"total": 20, "succeeded": 20, "failed": 0}
    drafts, finals = two["stages"]["draft"], two["stages"]["final"]
    assert drafts["model"] == LITE
    assert finals["model"] == PRO
    assert drafts["images"] == 84  # 80 + sku-05's second round of 4
    assert drafts["accepted"] == 84 - 4 - 4
    assert finals["images"] == 20
    assert finals["accepted"] == 20
    assert drafts["cost_per_accepted_image_usd"] == pytest.approx(
        drafts["actual_usd"] / 76, rel=1e-4
    )
    assert finals["cost_per_accepted_image_usd"] == pytest.approx(
        finals["actual_usd"] / 20, rel=1e-4
    )
    assert two["cost_per_accepted_final_image_usd"] == pytest.approx(
        (drafts["actual_usd"] + finals["actual_usd"]) / 20, rel=1e-4
    )
    outcomes = {o["key"]: o for o in two["line_outcomes"]}
    assert outcomes["sku-05"]["drafts"] == 8
    # Summary counts add up to its lines: every draft and final is an item.
    counts = summary["counts"]
    assert sum(counts.values()) == summary["line_count"] == 104
    assert counts[ItemState.SUCCEEDED] == 104

    job_dir = _job_dir(pipeline, result)
    verdicts = {}
    for name in sorted((job_dir / "twotier").glob("verdicts-*.jsonl")):
        for raw in name.read_text().splitlines():
            doc = json.loads(raw)
            verdicts[doc["key"]] = doc
    assert verdicts["sku-01~c1"]["reason"].startswith("blank or near-uniform")
    assert verdicts["sku-02~c2"]["reason"].startswith("blank or near-uniform")
    assert verdicts["sku-03~c3"]["reason"].startswith("near-duplicate of sku-03~c1")
    assert verdicts["sku-04~c4"]["reason"].startswith("too small: 64x64")
    culled = {k for k, v in verdicts.items() if not v["kept"] and "~c" in k}
    assert culled == set(broken) | {f"sku-05~c{n}" for n in range(1, 5)}

    # Each final went to Pro with its line's prompt and the chosen candidate inline.
    sources = {}
    for name in (job_dir / "twotier").glob("finals-*.jsonl"):
        for raw in name.read_text().splitlines():
            doc = json.loads(raw)
            sources[doc["key"]] = doc["candidate"]
    assert set(sources) == {f"sku-{n:02d}" for n in range(1, 21)}
    assert sources["sku-01"] != "sku-01~c1"
    assert sources["sku-05"] in {f"sku-05~c{n}" for n in range(5, 9)}
    pro_requests = []
    for request_file in sorted((job_dir / "requests").glob("*.jsonl")):
        for raw in request_file.read_text().splitlines():
            line = json.loads(raw)
            if line["key"] in sources:
                pro_requests.append(line)
    assert len(pro_requests) == 20
    first = next(r for r in pro_requests if r["key"] == "sku-01")
    parts = first["request"]["contents"][0]["parts"]
    assert parts[0] == {"text": "Product shot 1 of a ceramic mug on linen"}
    candidate_png = (job_dir / "images" / f"{sources['sku-01']}.png").read_bytes()
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == candidate_png
    assert (job_dir / "images" / "sku-01.png").exists()

    # The next estimate of a two-tier file uses what this job measured, and says on what.
    import io

    from bananabatch.twotier_cli import measured_rates

    draft, final = measured_rates(pipeline.runtime, io.BytesIO(path.read_bytes()))
    assert draft.row is not None
    assert (draft.row.generated, draft.row.first_attempts, draft.row.accepted) == (84, 80, 76)
    assert draft.effective == pytest.approx(0.0168 * (1 + 4 / 80) / (76 / 84))
    assert draft.describe().endswith("measured on 84 images")
    assert final.row is not None
    assert (final.row.generated, final.row.accepted) == (20, 20)

    # One completion message, after the finals, not after stage one.
    completions = result.completions + [
        m for m in pipeline.completions() if m.get("job_id") == result.job.job_id
    ]
    assert len(completions) == 1
    assert completions[0]["state"] == "SUCCEEDED"


def test_a_manual_selection_round_trips_through_the_gallery_export_and_the_select_command(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from bananabatch import cli, config
    from tests.support.browser import open_page
    from tests.support.stacks import assert_invariants, open_stack

    with open_stack(request, "local", tmp_path) as stack:
        options = {
            "bananabatch-final-model": PRO,
            "bananabatch-candidates": "3",
            "bananabatch-selection": "manual",
        }
        path = _file(tmp_path, 2, None)
        job_id = stack.upload(path, metadata=options)
        assert stack.settle(job_id, rounds=6) == []  # the drafts are back; it waits
        job_dir = stack.settings.local_root / "buckets" / stack.settings.results_bucket
        index = job_dir / "jobs" / job_id / "index.html"

        with open_page() as page:
            page.goto(index)
            ticked = ["sku-01~c3", "sku-02~c1"]
            for key in ticked:
                page.evaluate(f"document.querySelector('input[data-key=\"{key}\"]').click()")
            assert page.evaluate("document.getElementById('download-selection').textContent") == (
                "Download selection (2)"
            )
            # What the button hands the browser to save: read it back from its Blob.
            # (the link's click, which would start the download, only records its name)
            page.evaluate(
                "URL.createObjectURL = function (blob) {"
                " blob.text().then(function (t) { window.savedSelection = t; });"
                " return 'blob:selection'; };"
                " HTMLAnchorElement.prototype.click = function () {"
                " window.savedAs = this.download; }"
            )
            page.evaluate("document.getElementById('download-selection').click()")
            saved = page.wait_for("window.savedSelection", "the downloaded selection file")
            assert page.evaluate("window.savedAs") == f"selection-{job_id}.json"
        selection_file = tmp_path / f"selection-{job_id}.json"
        selection_file.write_text(saved)
        assert json.loads(saved) == {"job_id": job_id, "selected": ticked}

        monkeypatch.setenv(config.ENV_BACKEND, "local")
        monkeypatch.setenv(config.ENV_LOCAL_ROOT, str(stack.settings.local_root))
        monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, stack.settings.gemini_base_url or "")
        monkeypatch.setenv(config.ENV_GEMINI_API_KEY, "test-key")
        chosen = CliRunner().invoke(
            cli.app, ["select", job_id, "--file", str(selection_file), "--json"]
        )
        assert chosen.exit_code == 0, chosen.output
        assert json.loads(chosen.stdout)["selected"] == ticked

        summary = assert_invariants(stack, job_id, stack.settle(job_id, rounds=20))
        outcomes = {o["key"]: o for o in summary["two_tier"]["line_outcomes"]}
        assert outcomes["sku-01"]["accepted"] == ["sku-01"]
        assert outcomes["sku-02"]["accepted"] == ["sku-02"]
        sources = [
            json.loads(line)
            for info in (job_dir / "jobs" / job_id / "twotier").glob("finals-*.jsonl")
            for line in info.read_text().splitlines()
        ]
        assert sorted((s["key"], s["candidate"]) for s in sources) == [
            ("sku-01", "sku-01~c3"),
            ("sku-02", "sku-02~c1"),
        ]
