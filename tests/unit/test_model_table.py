"""The README's model table is the catalog's and the price table's, not a copy that drifts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from bananabatch.core import catalog
from bananabatch.core.model_table import (
    BEGIN,
    END,
    OPENAI_BEGIN,
    OPENAI_END,
    markdown_table,
    openai_markdown_table,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_model_table_is_exactly_what_the_catalog_and_prices_say() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1
    assert text.count(END) == 1
    shown = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert shown == markdown_table(), (
        "README.md's model table is stale: paste the output of "
        "`.venv/bin/python -m bananabatch.core.model_table` between its markers"
    )


def _row(table: str, model: str) -> list[str]:
    (line,) = [row for row in table.splitlines() if row.startswith(f"| `{model}`")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_each_model_shows_lifecycle_batch_support_sizes_and_dated_prices() -> None:
    table = markdown_table()
    assert len([r for r in table.splitlines() if r.startswith("| `")]) == len(catalog.MODELS)
    lite = _row(table, "gemini-3.1-flash-lite-image")
    assert lite[0].endswith("**default**")
    assert lite[1:5] == ["GA 2026-06-30", "documented", "1K", "14"]
    assert lite[6:] == ["~0.0168", "2026-12-07"]
    nb21 = _row(table, "gemini-nano-banana-2.1")
    assert nb21[2] == "**unknown** (warned)"
    assert nb21[3] == "1K, 2K, 4K"
    old = _row(table, "gemini-2.5-flash-image")
    assert old[1].startswith("**shut down** 2026-10-02")
    assert "`gemini-3.1-flash-lite-image`" in old[1]
    assert old[2] == "—"


def test_the_table_follows_the_day_it_is_rendered_for() -> None:
    # Before its deprecation, 3.1 Flash Image read as GA; the README is rendered for the
    # catalog's own date.
    before = _row(markdown_table(date(2026, 7, 1)), "gemini-3.1-flash-image")
    assert before[1] == "GA 2026-05-28"
    after = _row(markdown_table(), "gemini-3.1-flash-image")
    assert after[1].startswith("**deprecated** 2026-10-06")


def test_the_readme_gpt_image_table_is_exactly_what_the_catalog_and_prices_say() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(OPENAI_BEGIN) == 1
    assert text.count(OPENAI_END) == 1
    shown = text[text.index(OPENAI_BEGIN) : text.index(OPENAI_END) + len(OPENAI_END)]
    assert shown == openai_markdown_table(), (
        "README.md's gpt-image table is stale: paste the second table printed by "
        "`.venv/bin/python -m bananabatch.core.model_table` between its markers"
    )


def test_the_gpt_image_table_shows_each_quality_at_each_size_and_the_shut_model() -> None:
    table = openai_markdown_table()
    rows = [r for r in table.splitlines() if r.startswith("| `gpt-image-2` ")]
    assert [r.split("|")[4].strip() for r in rows] == ["low", "medium (default)", "high"]
    assert rows[0].split("|")[5].strip() == "0.003"
    assert "**shut down** 2026-10-23 → `gpt-image-2`" in table
