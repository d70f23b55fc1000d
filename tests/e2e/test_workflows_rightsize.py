"""Right-sizing end to end on the local stack (issue 21 point 3): lines that give a
display size are estimated with the saving, generated at the size and ratio intake chose
(the emulator renders the size it is asked for), and a line that also names image_size
is rejected with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from bananabatch import cli
from bananabatch.core.catalog import image_dimensions
from tests.support.local_cli import local_cli_env

runner = CliRunner()
PRO = "gemini-3-pro-image"
NB2 = "gemini-3.1-flash-image"
LINES: list[dict[str, Any]] = [
    {"key": "hero", "prompt": "a sneaker", "model": PRO, "display_size": "600x600"},
    {"key": "banner", "prompt": "a boot", "model": PRO, "display_size": "1920x1080"},
    {"key": "thumb-1", "prompt": "a sock", "model": NB2, "display_size": "400x400"},
    {"key": "thumb-2", "prompt": "a hat", "model": NB2, "max_edge": 480},
    {"key": "both", "prompt": "coat", "model": PRO, "display_size": "600x600", "image_size": "4K"},
]
# What intake must choose, by key: (aspect ratio, size).
CHOSEN = {
    "hero": ("1:1", "2K"),
    "banner": ("16:9", "2K"),
    "thumb-1": ("1:1", "512"),
    "thumb-2": ("1:1", "512"),
}


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with local_cli_env(tmp_path, monkeypatch) as root:
        yield root


def test_right_sized_lines_are_estimated_with_their_saving_and_made_at_the_chosen_size(
    local_env: Path, tmp_path: Path
) -> None:
    source = tmp_path / "sized.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in LINES))

    estimated = runner.invoke(cli.app, ["estimate", str(source), "--json"])
    assert estimated.exit_code == 0, estimated.output
    sizing = json.loads(estimated.stdout)["right_sizing"]
    assert sizing["lines"] == 4
    by_size = {(g["model"], g["image_size"]): g for g in sizing["groups"]}
    assert by_size[(PRO, "2K")]["lines"] == 2
    thumbs = by_size[(NB2, "512")]
    assert thumbs["lines"] == 2
    # Two thumbnails at 512 instead of the default 1K: the saving is theirs (Pro ties).
    assert sizing["saved_vs_default_size_usd"] == pytest.approx(
        2 * (thumbs["default_per_image_usd"] - thumbs["per_image_usd"]), abs=1e-6
    )
    assert sizing["saved_vs_default_size_usd"] > 0
    human = runner.invoke(cli.app, ["estimate", str(source)])
    assert "Right-sizing: 4 line(s)" in human.stdout

    run = runner.invoke(
        cli.app, ["local", "run", str(source), "--yes", "--root", str(local_env), "--json"]
    )
    assert run.exit_code == cli.EXIT_PARTIAL, run.output
    summary = json.loads(run.stdout)
    assert summary["counts"]["SUCCEEDED"] == 4
    assert summary["counts"]["REJECTED"] == 1
    job_dir = local_env / "buckets" / "results" / "jobs" / summary["job_id"]
    for key, (ratio, size) in CHOSEN.items():
        with Image.open(job_dir / "images" / f"{key}.png") as image:
            assert image.size == image_dimensions(ratio, size), key
    rejected = [json.loads(x) for x in (job_dir / "rejected.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rejected] == ["both"]
    assert "expected image_size or display_size, not both" in json.dumps(rejected[0])
