"""Shared set-up: the local stack on an emulator, and a report table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bananabatch.config import Backend, Settings

OUT = Path("bench-out")
API_KEY = "bench-key"


def local_settings(root: Path, base_url: str, **overrides: Any) -> Settings:
    return Settings(
        backend=Backend.LOCAL,
        local_root=root,
        gemini_base_url=base_url,
        gemini_api_key=API_KEY,
        # Benchmarks run far more images than the default daily cap allows; the emulator
        # bills nobody.
        **({"daily_budget_usd": None} | overrides),
    )


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_prompts(path: Path, count: int, *, image_size: str | None = None) -> Path:
    """count simple input lines; written in one pass with a buffered writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"image_size": image_size} if image_size else {}
    with path.open("w", encoding="utf-8", buffering=1024 * 1024) as sink:
        for n in range(count):
            line = {"key": f"k{n:07d}", "prompt": f"a banana on a plate, study {n}"} | extra
            sink.write(json.dumps(line) + "\n")
    return path


def mb(value: float) -> str:
    return f"{value:,.0f} MB"


def target(ok: bool) -> str:
    return "met" if ok else "NOT met"
