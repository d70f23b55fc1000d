"""The gallery a real local run writes, opened in a real headless Chromium: the same money
as summary.json, rejected lines under the user's key, metadata searchable, hostile input
left as text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bananabatch.config import Backend, Settings
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.local.runner import LocalPipeline
from bananabatch.report.gallery import format_usd, thumb_href
from bananabatch.wiring import build_runtime
from tests.support.browser import open_page

pytestmark = pytest.mark.browser

HOSTILE_KEY = "<img src=x onerror=window.__pwned=1>"
BENCH_KEY = "spring26-outdoor-teak-bench-150cm-natural-finish"
LINES: list[dict[str, Any] | str] = [
    {
        "key": BENCH_KEY,
        "prompt": "A teak garden bench on a patio, product photo",
        "aspect_ratio": "16:9",
        "metadata": {"sku": "TB-150", "campaign": "spring26"},
    },
    {
        "key": HOSTILE_KEY,
        "prompt": "</script><script>window.__pwned=2</script> a chair",
        "metadata": {"note": "<svg onload=window.__pwned=3>"},
    },
    {"key": "spring26-chair-bad-ratio", "prompt": "A chair", "aspect_ratio": "7:3"},
    "this line is not JSON",
    {
        "key": "spring26-lamp",
        # Longer than the records' 120-character preview: the end is searchable too.
        "prompt": "A floor lamp, studio light, "
        + "brass stem and linen shade, " * 5
        + "heliotrope",
        "aspect_ratio": "1:1",
    },
]


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[LocalPipeline]:
    config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config) as emulator:
        settings = Settings(
            backend=Backend.LOCAL,
            local_root=tmp_path / "state",
            gemini_base_url=emulator.base_url,
            gemini_api_key="test-key",
        )
        local = LocalPipeline(build_runtime(settings))
        yield local
        local.close()


def test_a_local_runs_gallery_shows_its_summary_money_keys_and_metadata(
    pipeline: LocalPipeline, tmp_path: Path
) -> None:
    source = tmp_path / "catalog.jsonl"
    source.write_text(
        "".join((json.dumps(line) if isinstance(line, dict) else line) + "\n" for line in LINES)
    )
    result = pipeline.run_job(source, tick_interval=0.0, timeout=120)
    job_dir = (
        pipeline.settings.local_root
        / "buckets"
        / pipeline.settings.results_bucket
        / "jobs"
        / result.job.job_id
    )
    summary = json.loads((job_dir / "summary.json").read_text())
    assert summary["counts"]["REJECTED"] == 2
    assert summary["counts"]["SUCCEEDED"] == 3

    with open_page() as page:
        page.goto(job_dir / "index.html")

        # The money: every figure summary.json has, labelled, the same.
        tiles = page.evaluate(
            "Object.fromEntries(Array.from(document.querySelectorAll('[data-field]'))"
            ".map(t => [t.dataset.field, t.querySelector('dd').textContent]))"
        )
        for field in ("estimated_usd", "standard_equivalent_usd", "actual_usd", "saved_usd"):
            assert tiles[field] == format_usd(summary["costs"][field]), field
        assert tiles["cost_per_accepted_image_usd"] == format_usd(
            summary["costs"]["cost_per_accepted_image_usd"]
        )
        assert summary["costs"]["actual_usd"] > 0

        cards = page.evaluate(
            "Array.from(document.querySelectorAll('#grid article')).map(c =>"
            " [Number(c.dataset.line), c.dataset.state, c.querySelector('.key').textContent,"
            " c.innerText])"
        )
        by_line = {line: (state, key, text) for line, state, key, text in cards}
        assert sorted(by_line) == [1, 2, 3, 4, 5]
        # Rejected lines under the key the user wrote, with the reason; a line with no
        # readable key says so.
        assert by_line[3][:2] == ("REJECTED", "spring26-chair-bad-ratio")
        assert "7:3" in by_line[3][2]
        assert by_line[4][:2] == ("REJECTED", "no key (line 4)")
        assert "__line" not in page.evaluate("document.body.innerText")
        # Full keys and metadata.
        assert by_line[1][1] == BENCH_KEY
        assert "TB-150" in by_line[1][2]

        page.type_into("#q", "tb-150")
        page.settle()
        assert page.evaluate(
            "Array.from(document.querySelectorAll('#grid article')).map(c => c.dataset.line)"
        ) == ["1"]

        page.type_into("#q", "HELIOTROPE")
        page.settle()
        assert page.evaluate(
            "Array.from(document.querySelectorAll('#grid article')).map(c => c.dataset.line)"
        ) == ["5"]

        # The hostile line was made like any other and stays text everywhere.
        page.type_into("#q", "")
        page.settle()
        assert by_line[2][:2] == ("SUCCEEDED", HOSTILE_KEY)
        assert "<svg onload=window.__pwned=3>" in by_line[2][2]
        assert page.evaluate("typeof window.__pwned") == "undefined"
        src = page.wait_for(
            "(() => { const i = document.querySelector('article[data-line=\"2\"] img');"
            " return i && i.complete && i.naturalWidth > 0 && i.getAttribute('src'); })()",
            "the hostile key's image rendered",
        )
        assert src == thumb_href(HOSTILE_KEY)
