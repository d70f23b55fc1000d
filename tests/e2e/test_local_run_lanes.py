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


def test_a_local_run_routes_bulk_lines_to_the_local_gateway_emulator(tmp_path: Path) -> None:
    source = tmp_path / "f.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANABATCH_", "GOOGLE_"))}
    env |= {"BANANABATCH_ALLOW_THIRD_PARTY": "true", "BANANABATCH_LOCAL_ROOT": str(tmp_path / "s")}
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
    summary = json.loads(summary_path.read_text())
    assert summary["counts"]["SUCCEEDED"] == 4
    assert summary["costs"]["by_lane"]["compat:local"]["items"] == 2, summary["costs"]
