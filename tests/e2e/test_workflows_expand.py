"""`bananabatch expand` end to end on the local stack (issue 21 point 5): a YAML template
over a CSV of products becomes a JSONL whose cost is reported as `estimate` prices it, and
that file runs to one image per key; hostile templates leave no output behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bananabatch import cli
from tests.support.local_cli import local_cli_env

runner = CliRunner()
TEMPLATE = """\
prompt: "{title} on {background}, {crop} crop"
values:
  background:
    key: bg
    values: [white marble, {value: raw linen, key: linen}]
  crop:
    values:
      - {value: square, options: {aspect_ratio: "1:1"}}
      - {value: portrait, options: {aspect_ratio: "4:5"}}
options: {model: gemini-3.1-flash-lite-image}
rows: {csv: products.csv, key: "sku-{sku}"}
max_lines: 20
"""
PRODUCTS = "sku,title\n1001,a yellow sneaker\n1002,a red boot\n1003,a green hat\n"


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with local_cli_env(tmp_path, monkeypatch) as root:
        yield root


def invoke(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


def write(folder: Path, template: str = TEMPLATE, products: str = PRODUCTS) -> Path:
    (folder / "products.csv").write_text(products)
    path = folder / "catalog.yaml"
    path.write_text(template)
    return path


def test_a_template_expands_to_priced_lines_that_run_to_one_image_per_key(
    local_env: Path, tmp_path: Path
) -> None:
    template = write(tmp_path)
    expanded = invoke("expand", str(template), "--json")
    assert expanded.exit_code == 0, expanded.output
    outcome = json.loads(expanded.stdout)
    out = tmp_path / "catalog.jsonl"
    assert outcome["output"] == str(out)
    assert (outcome["lines"], outcome["rows"], outcome["combinations"]) == (12, 3, 4)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 12
    assert lines[0]["key"] == "sku-1001__bg-white-marble__crop-square"
    assert lines[-1]["key"] == "sku-1003__bg-linen__crop-portrait"
    # The cost reported is what `estimate` says of the file.
    estimated = json.loads(invoke("estimate", str(out), "--json").stdout)
    assert outcome["estimate"]["totals"] == estimated["totals"]
    assert outcome["estimate"]["totals"]["after_dedup_usd"] > 0
    human = invoke("expand", str(template))
    assert "wrote 12 lines" in human.stdout
    assert "3 rows x 4 combinations" in human.stdout

    run = invoke("local", "run", str(out), "--yes", "--root", str(local_env), "--json")
    assert run.exit_code == cli.EXIT_OK, run.output
    summary = json.loads(run.stdout)
    assert summary["counts"]["SUCCEEDED"] == 12
    images = local_env / "buckets" / "results" / "jobs" / summary["job_id"] / "images"
    assert sorted(p.stem for p in images.glob("*.png")) == sorted(line["key"] for line in lines)


def test_over_its_limit_a_template_is_refused_unless_told_and_writes_nothing(
    local_env: Path, tmp_path: Path
) -> None:
    template = write(tmp_path, TEMPLATE.replace("max_lines: 20", "max_lines: 8"))
    refused = invoke("expand", str(template))
    assert refused.exit_code == 1
    assert "over the limit of 8 (the template's max_lines)" in refused.output
    assert "--max-lines" in refused.output
    assert not (tmp_path / "catalog.jsonl").exists()
    allowed = invoke("expand", str(template), "--max-lines", "12", "--json")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["lines"] == 12


def test_a_huge_csv_is_refused_after_reading_only_past_the_limit(
    local_env: Path, tmp_path: Path
) -> None:
    huge = "sku,title\n" + "".join(f"{n},product {n}\n" for n in range(300_000))
    template = write(tmp_path, TEMPLATE, huge)
    refused = invoke("expand", str(template))
    assert refused.exit_code == 1
    assert "at least 24 lines (4 per CSV row" in refused.output
    assert not (tmp_path / "catalog.jsonl").exists()


@pytest.mark.parametrize(
    ("template", "says"),
    [
        (TEMPLATE.replace("{crop} crop", "{crop} crop, {colour}"), "{colour} has no value list"),
        (TEMPLATE.replace('key: "sku-{sku}"', 'key: "{title}"'), "duplicate key"),
        ("a: &x [1]\nprompt: '{v}'\nvalues: {v: *x}\n", "YAML aliases (*name) are not allowed"),
        (TEMPLATE.replace("gemini-3.1-flash-lite-image", "gemini-2.5-flash-image"), "shut down"),
    ],
)
def test_a_hostile_template_is_one_error_line_and_leaves_no_output(
    local_env: Path, tmp_path: Path, template: str, says: str
) -> None:
    products = PRODUCTS if "duplicate" not in says else "sku,title\n1,same\n2,same\n"
    path = write(tmp_path, template, products)
    result = invoke("expand", str(path))
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    if says == "duplicate key":
        assert "makes key 'same__bg-white-marble__crop-square', as line 1 did" in flat
    else:
        assert says in flat
    assert not (tmp_path / "catalog.jsonl").exists()
    assert not list(tmp_path.glob(".catalog.jsonl.*"))


def test_the_output_may_be_neither_the_template_nor_its_csv(
    local_env: Path, tmp_path: Path
) -> None:
    template = write(tmp_path)
    for target in (template, tmp_path / "products.csv"):
        before = target.read_text()
        refused = invoke("expand", str(template), "-o", str(target))
        assert refused.exit_code == 1
        assert f"{target} is the template" in " ".join(refused.output.split())
        assert target.read_text() == before
