"""Issue 19's done-when: `bananabatch local run` on a JSONL that mixes Gemini and gpt-image
lines produces every image and one summary whose costs split by provider. The local run
starts both emulators (Gemini's and OpenAI's); the lines go to separate batches, one
provider each, in one job with one completion."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from bananabatch import cli, config
from bananabatch.core.records import BatchRecord, JobRecord
from bananabatch.core.states import ItemState, JobState
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock

runner = CliRunner()

GEMINI_LINES = [
    {"key": "g-apple", "prompt": "a red apple on a table"},
    {"key": "g-pear", "prompt": "a green pear", "aspect_ratio": "16:9"},
    {"key": "g-plum", "prompt": "a plum", "model": "gemini-3-pro-image", "image_size": "2K"},
]
OPENAI_LINES = [
    {"key": "o-fox", "prompt": "a fox in snow", "model": "gpt-image-2"},
    {
        "key": "o-owl",
        "prompt": "an owl at night",
        "model": "gpt-image-2",
        "aspect_ratio": "3:2",
        "quality": "high",
    },
    {
        "key": "o-cat",
        "prompt": "a cat, as a JPEG",
        "model": "gpt-image-2",
        "aspect_ratio": "2:3",
        "quality": "low",
        "output_format": "jpeg",
    },
]
# Expected pixel sizes of the gpt-image lines (aspect ratio -> the model's size).
OPENAI_SIZES = {"o-fox": (1024, 1024), "o-owl": (1536, 1024), "o-cat": (1024, 1536)}


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "state"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(config.ENV_BACKEND, "local")
    monkeypatch.setenv(config.ENV_LOCAL_ROOT, str(root))
    # Three lines a batch: each provider's lines fill batches of their own.
    monkeypatch.setenv(config.ENV_MAX_REQUESTS_PER_BATCH, "2")
    for name in (config.ENV_OPENAI_ENABLED, config.ENV_OPENAI_API_KEY, config.ENV_OPENAI_BASE_URL):
        monkeypatch.delenv(name, raising=False)
    return root


def _mixed(path: Path) -> Path:
    lines = [line for pair in zip(GEMINI_LINES, OPENAI_LINES, strict=True) for line in pair]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _state(root: Path, job_id: str) -> tuple[JobRecord, list[BatchRecord]]:
    from bananabatch.adapters.local.state import SqliteStateStore
    from bananabatch.pipeline.repo import Repo

    repo = Repo(SqliteStateStore(root / "state.db"))
    return repo.require_job(job_id), list(repo.batches(job_id=job_id))


def test_local_run_of_a_mixed_file_makes_every_image_and_splits_the_cost_by_provider(
    local_env: Path, tmp_path: Path
) -> None:
    source = _mixed(tmp_path / "mixed.jsonl")
    result = runner.invoke(
        cli.app, ["local", "run", str(source), "--yes", "--root", str(local_env), "--json"]
    )
    assert result.exit_code == cli.EXIT_OK, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["state"] == JobState.SUCCEEDED.value
    assert summary["counts"][ItemState.SUCCEEDED.value] == 6 == summary["line_count"]

    images = local_env / "buckets" / "results" / "jobs" / summary["job_id"] / "images"
    for line in GEMINI_LINES:
        assert (images / f"{line['key']}.png").stat().st_size > 0
    for key, size in OPENAI_SIZES.items():
        (made,) = images.glob(f"{key}.*")
        with Image.open(io.BytesIO(made.read_bytes())) as image:
            assert image.size == size
            assert image.format == ("JPEG" if key == "o-cat" else "PNG")

    by_provider = summary["costs"]["by_provider"]
    assert set(by_provider) == {"gemini", "openai"}
    assert by_provider["gemini"]["items"] == by_provider["openai"]["items"] == 3
    for share in by_provider.values():
        assert share["actual_usd"] > 0
        assert share["estimated_usd"] > 0
    total = sum(share["actual_usd"] for share in by_provider.values())
    assert total == pytest.approx(summary["costs"]["actual_usd"], abs=1e-5)
    # gpt-image-2 at batch price: low 1024x1536, medium 1024x1024, high 1536x1024.
    assert by_provider["openai"]["estimated_usd"] == pytest.approx(
        0.0045 + 0.0265 + 0.15825, rel=0.01
    )

    job, batches = _state(local_env, summary["job_id"])
    assert job.completion_published
    assert {(b.provider, b.model) for b in batches} == {
        ("gemini", "gemini-3.1-flash-lite-image"),
        ("gemini", "gemini-3-pro-image"),
        ("openai", "gpt-image-2"),
    }
    openai_batches = [b for b in batches if b.provider == "openai"]
    assert sorted(b.request_count for b in openai_batches) == [1, 2]
    for batch in openai_batches:
        assert batch.provider_name is not None
        assert batch.provider_name.startswith("batch_")


def test_a_deployment_without_openai_rejects_gpt_image_lines_and_runs_the_rest(
    local_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _mixed(tmp_path / "mixed.jsonl")
    gemini = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(gemini) as emulator:
        # A Gemini deployment (here its emulator, as a real service) without OpenAI enabled.
        monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, emulator.base_url)
        monkeypatch.setenv(config.ENV_GEMINI_API_KEY, "test-key")
        args = ["local", "run", str(source), "--yes", "--root", str(local_env), "--json"]
        result = runner.invoke(cli.app, [*args, "--provider", "gemini"])
    assert result.exit_code == cli.EXIT_PARTIAL, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["counts"][ItemState.SUCCEEDED.value] == 3
    assert summary["counts"][ItemState.REJECTED.value] == 3
    assert set(summary["costs"]["by_provider"]) == {"gemini"}
    rejected = (
        local_env / "buckets" / "results" / "jobs" / summary["job_id"] / "rejected.jsonl"
    ).read_text()
    reasons = [json.loads(line)["reason"] for line in rejected.splitlines()]
    assert len(reasons) == 3
    for reason in reasons:
        assert 'field "model": gpt-image-2 is served by OpenAI, which this deployment' in reason
        assert "BANANABATCH_OPENAI_ENABLED" in reason


def test_the_human_summary_of_a_mixed_run_shows_each_providers_cost(
    local_env: Path, tmp_path: Path
) -> None:
    source = _mixed(tmp_path / "mixed.jsonl")
    result = runner.invoke(
        cli.app, ["local", "run", str(source), "--yes", "--root", str(local_env)]
    )
    assert result.exit_code == cli.EXIT_OK, result.output
    assert "gemini: 3 items, actual (est.)" in result.output
    assert "openai: 3 items, actual (est.)" in result.output
