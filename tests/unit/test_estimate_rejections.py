"""`bananabatch estimate` names the lines intake would reject and why, the first of them,
in its JSON as in its text (a count alone does not say what to fix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bananabatch import config, cost_cli

LINES = [
    '{"key": "ok", "prompt": "a lamp"}',
    "not json at all",
    '{"key": "big", "prompt": "a chair", "image_size": "9K"}',
    *(f'{{"key": "n{i}"}}' for i in range(12)),
]


@pytest.fixture
def estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv(config.ENV_BACKEND, "local")
    monkeypatch.setenv(config.ENV_LOCAL_ROOT, str(tmp_path / "state"))
    (tmp_path / "f.jsonl").write_text("".join(line + "\n" for line in LINES))
    app = typer.Typer()
    app.command()(cost_cli.estimate)
    app.command()(cost_cli.approve)
    return app


def test_the_json_estimate_lists_the_first_rejected_lines_with_their_reasons(
    estimate: typer.Typer, tmp_path: Path
) -> None:
    out = CliRunner().invoke(estimate, ["estimate", str(tmp_path / "f.jsonl"), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["rejected"] == 14
    rejected = doc["rejected_lines"]
    assert len(rejected) == 14
    assert [r["line"] for r in rejected[:3]] == [2, 3, 4]
    assert rejected[1]["key"] == "big"
    assert "9K" in rejected[1]["reason"] or "image_size" in str(rejected[1]["field"])
    assert all(r["reason"] for r in rejected)


def test_the_text_estimate_names_the_first_rejected_lines_and_counts_the_rest(
    estimate: typer.Typer, tmp_path: Path
) -> None:
    out = CliRunner().invoke(estimate, ["estimate", str(tmp_path / "f.jsonl")])
    assert out.exit_code == 0, out.output
    assert "rejected line 3 (big):" in out.output
    assert "rejected line 2:" in out.output
    assert "… and 4 more" in out.output
