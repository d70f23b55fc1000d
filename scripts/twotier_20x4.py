"""Two-tier figures for the README (issue 21): 20 lines x 4 candidates on the local stack, the
emulator told to answer broken drafts; prints the summary and the two-tier section.

    .venv/bin/python scripts/twotier_20x4.py
"""

import json
import tempfile
import time
from pathlib import Path

from bananabatch.cli import print_summary
from bananabatch.config import Backend, Settings
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.local.runner import LocalPipeline
from bananabatch.wiring import build_runtime

tmp = Path(tempfile.mkdtemp())
config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
with EmulatorServer(config) as emulator:
    f = emulator.state.faults
    for key, kind in {
        "sku-01~c1": "blank_image",
        "sku-02~c2": "uniform_image",
        "sku-03~c3": "copy_image",
        "sku-04~c4": "small_image",
        "sku-06~c1": "blank_image",
        "sku-07~c2": "copy_image",
    }.items():
        f.row(key, kind)
    for n in range(1, 5):
        f.row(f"sku-05~c{n}", "blank_image")
    rows = [
        json.dumps(
            {"bananabatch": {"final_model": "gemini-3-pro-image", "candidates": 4, "keep": 1}}
        )
    ]
    rows += [
        json.dumps(
            {
                "key": f"sku-{n:02d}",
                "prompt": f"Product shot {n} of a ceramic mug on linen",
                "aspect_ratio": "1:1",
                "metadata": {"sku": n},
            }
        )
        for n in range(1, 21)
    ]
    path = tmp / "hero.jsonl"
    path.write_text("\n".join(rows) + "\n")
    settings = Settings(
        backend=Backend.LOCAL,
        local_root=tmp / "state",
        gemini_base_url=emulator.base_url,
        gemini_api_key="test-key",
        daily_budget_usd=100.0,
    )
    p = LocalPipeline(build_runtime(settings))
    t = time.monotonic()
    r = p.run_job(path, tick_interval=0.0, timeout=600)
    wall = time.monotonic() - t
    p.close()
    print("WALL", round(wall, 1), "completions", len(r.completions))
    print_summary(r.summary)
    print(
        json.dumps(
            {
                k: r.summary["two_tier"][k]
                for k in ("lines", "stages", "cost_per_accepted_final_image_usd", "culled")
            },
            indent=1,
        )
    )
    print("estimate", r.summary["costs"]["estimated_usd"])
