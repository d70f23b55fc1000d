"""Variation templates (issue 21 point 5): a prompt with {placeholders}, value lists with
options, optional CSV rows, expanded to lines with stable, readable keys; hostile templates
are refused before anything is made."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from bananabatch.core.intake.rules import key_problem
from bananabatch.core.variations import (
    DEFAULT_MAX_LINES,
    TemplateError,
    count_lines,
    load_template,
    over_limit,
    read_rows,
)

PRODUCTS = "sku,title\n1001,a yellow sneaker\n1002,a red boot\n"
TEMPLATE: dict[str, Any] = {
    "prompt": "{title} on {background}, {crop} crop",
    "values": {
        "background": {
            "key": "bg",
            "values": ["white marble", {"value": "raw linen", "key": "linen"}],
        },
        "crop": {
            "values": [
                {"value": "square", "options": {"aspect_ratio": "1:1"}},
                {"value": "portrait", "options": {"aspect_ratio": "4:5"}},
            ]
        },
    },
    "options": {"model": "gemini-3-pro-image", "metadata": {"campaign": "spring"}},
    "rows": {"csv": "products.csv", "key": "sku-{sku}"},
}


def expand(doc: dict[str, Any], csv_text: str | None = None) -> list[dict[str, Any]]:
    template = load_template(doc)
    if csv_text is None:
        return list(template.lines())
    return list(template.lines(read_rows(template, io.StringIO(csv_text))))


def test_a_template_with_rows_makes_one_line_per_row_and_combination_in_a_stable_order() -> None:
    lines = expand(TEMPLATE, PRODUCTS)
    assert [line["key"] for line in lines] == [
        "sku-1001__bg-white-marble__crop-square",
        "sku-1001__bg-white-marble__crop-portrait",
        "sku-1001__bg-linen__crop-square",
        "sku-1001__bg-linen__crop-portrait",
        "sku-1002__bg-white-marble__crop-square",
        "sku-1002__bg-white-marble__crop-portrait",
        "sku-1002__bg-linen__crop-square",
        "sku-1002__bg-linen__crop-portrait",
    ]
    assert lines == expand(TEMPLATE, PRODUCTS)  # stable
    first = lines[0]
    assert first["prompt"] == "a yellow sneaker on white marble, square crop"
    assert first["model"] == "gemini-3-pro-image"
    assert first["aspect_ratio"] == "1:1"
    assert lines[1]["aspect_ratio"] == "4:5"
    assert first["metadata"] == {
        "campaign": "spring",
        "sku": "1001",
        "title": "a yellow sneaker",
        "background": "white marble",
        "crop": "square",
    }
    assert all(key_problem(line["key"]) is None for line in lines)


def test_without_rows_the_keys_are_the_values_alone() -> None:
    doc = {
        "prompt": "a {colour} {thing}",
        "values": {"colour": ["Red", "Bleu Clair"], "thing": ["hat"]},
    }
    lines = expand(doc)
    assert [(line["key"], line["prompt"]) for line in lines] == [
        ("colour-red__thing-hat", "a Red hat"),
        ("colour-bleu-clair__thing-hat", "a Bleu Clair hat"),
    ]


def test_a_row_without_a_key_template_is_keyed_by_its_number() -> None:
    doc = {"prompt": "{title}", "rows": {"csv": "p.csv"}}
    assert [line["key"] for line in expand(doc, PRODUCTS)] == ["row-000001", "row-000002"]


def test_accented_values_give_ascii_slugs() -> None:
    lines = expand({"prompt": "{bg}", "values": {"bg": ["Crème brûlée"]}})
    assert lines[0]["key"] == "bg-creme-brulee"


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"prompt": "{a} and {b}", "values": {"a": ["x"]}}, "prompt: {b} has no value list"),
        (
            {"prompt": "{a}", "values": {"a": ["x"], "colour": ["red"]}},
            "values.colour: the prompt has no {colour}",
        ),
        ({"prompt": "{a.__class__}", "values": {"a": ["x"]}}, "is not a plain placeholder"),
        ({"prompt": "{a[0]}", "values": {"a": ["x"]}}, "is not a plain placeholder"),
        ({"prompt": "{a!r}", "values": {"a": ["x"]}}, "{a!r} is not a plain placeholder"),
        ({"prompt": "{a:>99999}", "values": {"a": ["x"]}}, "is not a plain placeholder"),
        ({"prompt": "{}", "values": {}}, "an empty placeholder"),
        ({"prompt": "{a", "values": {"a": ["x"]}}, "literal braces"),
        ({"prompt": "{a}", "values": {"a": ["Red!", "red."]}}, "both give the key part 'red'"),
        ({"prompt": "{a}", "values": {"a": ["!!!"]}}, "gives the key part ''"),
        ({"prompt": "{a}", "values": {"a": []}}, "values.a"),
        ({"prompt": "{a}", "values": {"a": [1]}}, "values.a"),
        (
            {"prompt": "{a}", "values": {"a": ["x"]}, "options": {"key": "k"}},
            "'key' is made by the template",
        ),
        ({"prompt": "{a}", "values": {"a": ["x"]}, "extra": 1}, "extra"),
        ({"prompt": "{a}", "values": {"a": ["x"]}, "max_lines": 0}, "max_lines"),
        ({"prompt": "{a}", "values": {"a": {"key": "Bad Key", "values": ["x"]}}}, "values.a.key"),
        ({"prompt": "", "values": {}}, "prompt"),
    ],
)
def test_a_bad_template_is_refused_saying_where(doc: dict[str, Any], says: str) -> None:
    with pytest.raises(TemplateError) as exc:
        expand(doc)
    assert says in str(exc.value)


def test_a_non_mapping_document_is_refused() -> None:
    with pytest.raises(TemplateError, match="expected a mapping at the top"):
        load_template(["prompt"])


def test_options_two_values_set_differently_are_refused() -> None:
    doc = {
        "prompt": "{a} {b}",
        "values": {
            "a": [{"value": "x", "options": {"aspect_ratio": "1:1"}}],
            "b": [{"value": "y", "options": {"aspect_ratio": "4:5"}}],
        },
    }
    with pytest.raises(TemplateError, match="option 'aspect_ratio' is set to '1:1' by a 'x'"):
        expand(doc)


def test_rows_that_share_a_key_are_refused_naming_both_lines() -> None:
    with pytest.raises(TemplateError, match=r"line 2 \(CSV row 2\) makes key 'sku-1', as line 1"):
        expand(
            {"prompt": "{title}", "rows": {"csv": "p.csv", "key": "sku-{sku}"}},
            "sku,title\n1,a\n1,b\n",
        )


def test_a_row_key_the_key_rules_refuse_is_refused() -> None:
    doc = {"prompt": "{title}", "rows": {"csv": "p.csv", "key": "{sku}"}}
    with pytest.raises(TemplateError, match="must not contain"):
        expand(doc, "sku,title\na/b,x\n")
    with pytest.raises(TemplateError, match="must not start with"):
        expand(doc, "sku,title\n__x,x\n")


@pytest.mark.parametrize(
    ("csv_text", "says"),
    [
        ("", "empty, expected a header row"),
        ("sku,sku\n1,2\n", "expected distinct, non-empty column names"),
        ("sku\n1\n", "{title} has no value list and p.csv has no such column"),
        ("sku,title\n1,a,extra\n", "row 1: expected 2 fields as in the header; found 3"),
        ("sku,title\n1," + "x" * 200_000 + "\n", "p.csv row 1: field larger than field limit"),
    ],
)
def test_a_bad_csv_is_refused_saying_where(csv_text: str, says: str) -> None:
    with pytest.raises(TemplateError) as exc:
        expand({"prompt": "{title}", "rows": {"csv": "p.csv", "key": "sku-{sku}"}}, csv_text)
    assert says in str(exc.value)


def test_a_name_both_a_column_and_a_value_list_is_refused() -> None:
    doc = {"prompt": "{title}", "values": {"title": ["x"]}, "rows": {"csv": "p.csv"}}
    with pytest.raises(TemplateError, match="both a CSV column and a value list"):
        expand(doc, PRODUCTS)


def test_the_count_is_rows_times_combinations_and_stops_reading_past_the_limit() -> None:
    template = load_template(TEMPLATE)
    assert template.combinations == 4
    assert count_lines(template, None, 10) == 4
    read = 0

    def rows() -> Iterator[dict[str, str]]:
        nonlocal read
        for n in range(1_000_000):
            read += 1
            yield {"sku": str(n), "title": "t"}

    assert count_lines(template, rows(), 10) == 12
    assert read == 3  # a million-row CSV is refused after three rows
    says = over_limit(template, 12, 10, rows=True)
    assert says.startswith(
        "the template would make at least 12 lines (4 per CSV row: 2 background x 2 crop)"
    )
    assert "(the default)" in says


def test_the_limit_is_the_flag_then_the_templates_then_the_default() -> None:
    template = load_template({**TEMPLATE, "max_lines": 50})
    assert template.limit(None) == 50
    assert template.limit(7) == 7
    assert load_template(TEMPLATE).limit(None) == DEFAULT_MAX_LINES


def test_a_combinatorial_explosion_is_counted_without_being_made() -> None:
    values = {f"p{n}": [f"v{m}" for m in range(10)] for n in range(12)}
    prompt = " ".join(f"{{p{n}}}" for n in range(12))
    template = load_template({"prompt": prompt, "values": values})
    assert count_lines(template, None, 1000) == 10**12
    assert "10 p0 x 10 p1" in over_limit(template, 10**12, 1000, rows=False)


def test_rows_may_be_given_as_just_the_csv_path() -> None:
    doc = {"prompt": "{title} on {bg}", "values": {"bg": ["oak"]}, "rows": "products.csv"}
    template = load_template(doc)
    assert template == load_template({**doc, "rows": {"csv": "products.csv"}})
    assert template.rows_csv == "products.csv"
