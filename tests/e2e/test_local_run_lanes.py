"""`bananabatch local run` starts the third-party lane emulators (issue 20 point 6): with
third parties allowed, bulk lines go to the local OpenAI-compatible gateway `compat:local`
(its emulator, through the openai SDK), urgent ones to Gemini's standard API, normal ones to
batch, and every image is made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bananabatch import config

LINES = [
    {"key": "u1", "prompt": "a hero banner", "priority": "urgent"},
    {"key": "n1", "prompt": "a lamp"},
    *(
        {
            "key": f"b{i}",
            "prompt": f"sneaker {i}",
            "model": "gemini-3-pro-image",
            "priority": "bulk",
            "allow_third_party": True,
        }
        for i in (1, 2)
    ),
]


def local_run(tmp_path: Path, **settings: str) -> dict[str, Any]:
    """`bananabatch local run` of LINES with third parties allowed; the job's summary."""
    source = tmp_path / "f.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANABATCH_", "GOOGLE_"))}
    env |= {"BANANABATCH_ALLOW_THIRD_PARTY": "true", "BANANABATCH_LOCAL_ROOT": str(tmp_path / "s")}
    env |= settings
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "bananabatch"),
            "local",
            "run",
            str(source),
            "--yes",
            "--approve",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (summary_path,) = (tmp_path / "s").glob("buckets/results/jobs/*/summary.json")
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return summary


def test_a_local_run_routes_bulk_lines_to_the_local_gateway_emulator(tmp_path: Path) -> None:
    summary = local_run(tmp_path)
    assert summary["counts"]["SUCCEEDED"] == 4
    assert summary["costs"]["by_lane"]["compat:local"]["items"] == 2, summary["costs"]


def test_a_deployment_price_below_batch_routes_bulk_lines_to_replicate_and_bills_it(
    tmp_path: Path,
) -> None:
    # Batch: $0.067 a 1K Nano Banana Pro image; the local gateway: the table's $0.05.
    summary = local_run(tmp_path, **{config.ENV_REPLICATE_USD_PER_IMAGE: "0.02"})
    assert summary["counts"]["SUCCEEDED"] == 4
    by_lane = summary["costs"]["by_lane"]
    assert "compat:local" not in by_lane, by_lane
    assert by_lane["replicate"]["items"] == 2, by_lane
    assert by_lane["replicate"]["actual_usd"] == pytest.approx(0.04), by_lane
