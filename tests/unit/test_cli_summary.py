"""The job summary the CLI prints after `local run`, `watch` and `status`."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from bananabatch import cli

SUMMARY = {
    "job_id": "prompts-8d9cb9635416",
    "state": "PARTIAL",
    "line_count": 17,
    "counts": {"SUCCEEDED": 14, "REJECTED": 3},
    "costs": {
        "standard_equivalent_usd": 0.6941,
        "estimated_usd": 0.347,
        "actual_usd": 0.3472,
        "saved_usd": 0.3468,
    },
    "files": {
        "images": "file:///r/jobs/prompts-8d9cb9635416/images/",
        "results": "file:///r/jobs/prompts-8d9cb9635416/results.jsonl",
        "rejected": "file:///r/jobs/prompts-8d9cb9635416/rejected.jsonl",
        "failed": "file:///r/jobs/prompts-8d9cb9635416/failed.jsonl",
        "gallery": "file:///r/jobs/prompts-8d9cb9635416/index.html",
    },
}


def test_the_summary_heading_names_the_job_and_its_state_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=80, color_system=None))
    cli.print_summary(SUMMARY)
    lines = out.getvalue().splitlines()
    assert lines[0] == "job prompts-8d9cb9635416: PARTIAL"
    assert any("SUCCEEDED" in line and "14" in line for line in lines)
