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


def _printed(monkeypatch: pytest.MonkeyPatch, by_lane: dict[str, dict[str, float]]) -> list[str]:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=100, color_system=None))
    costs = {**SUMMARY["costs"], "by_lane": by_lane}  # type: ignore[dict-item]
    cli.print_summary({**SUMMARY, "costs": costs})
    return out.getvalue().splitlines()


def test_items_no_provider_served_are_labelled_failed_not_listed_as_spend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An urgent item whose providers all failed is split under its priority lane, not a
    # provider's: it was never served, and cost nothing.
    lines = _printed(
        monkeypatch,
        {
            "batch": {"items": 13, "actual_usd": 0.3272},
            "gemini-standard": {"items": 1, "actual_usd": 0.02},
            "urgent": {"items": 1, "actual_usd": 0.0},
        },
    )
    text = "\n".join(lines)
    assert "lane urgent: 1 items" not in text
    assert any("urgent: 1 item not served (failed)" in line for line in lines), text
    assert any("lane batch: 13 items" in line and "$0.3272" in line for line in lines), text
    assert any("lane gemini-standard: 1 items" in line and "$0.0200" in line for line in lines)
