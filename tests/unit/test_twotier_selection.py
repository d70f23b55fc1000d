"""The selection file (core/twotier/selection.py) and how a two-tier file is priced
(twotier_cli.estimate_lines)."""

from __future__ import annotations

import io
import json

import pytest

from bananabatch.core.twotier.selection import (
    SelectionError,
    check_keys,
    parse_selection,
    selection_doc,
)
from bananabatch.twotier_cli import estimate_lines, metadata


def test_the_gallery_s_file_parses_back_to_its_keys() -> None:
    doc = selection_doc("job-1", ["b~c2", "a~c1", "a~c1"])
    assert doc == {"job_id": "job-1", "selected": ["a~c1", "b~c2"]}
    assert parse_selection(json.dumps(doc), "job-1") == ["a~c1", "b~c2"]
    assert parse_selection('{"selected": ["a~c1"]}', "any-job") == ["a~c1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "not JSON"),
        ('["a~c1"]', "must be"),
        ('{"job_id": "other", "selected": []}', "for job 'other'"),
        ('{"selected": [1]}', "must be a string"),
    ],
)
def test_a_bad_selection_file_is_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        parse_selection(text, "job-1")


def test_only_candidates_with_an_image_can_be_selected() -> None:
    assert check_keys(["a~c2", "a~c2", "b~c1"], ["a~c1", "a~c2", "b~c1"]) == ["a~c2", "b~c1"]
    with pytest.raises(SelectionError, match="not a candidate of this job with an image: a~c9"):
        check_keys(["a~c9"], ["a~c1"])
    with pytest.raises(SelectionError, match=r"end in ~cN"):
        check_keys(["a"], ["a~c1"])
    with pytest.raises(SelectionError, match="nothing selected"):
        check_keys([], ["a~c1"])


def test_a_two_tier_file_is_priced_as_its_drafts_and_its_finals() -> None:
    header = {"bananabatch": {"final_model": "gemini-3-pro-image", "candidates": 3}}
    text = "\n".join(
        [
            json.dumps(header),
            '{"key": "a", "prompt": "x", "keep": 2}',
            '{"key": "b", "prompt": "y"}',
        ]
    )
    lines = list(estimate_lines(io.BytesIO(text.encode()), max_line_bytes=1 << 20))
    models = [(n, json.loads(raw)["model"]) for n, raw in lines]
    lite, pro = "gemini-3.1-flash-lite-image", "gemini-3-pro-image"
    assert models == [(2, lite)] * 3 + [(2, pro)] * 2 + [(3, lite)] * 3 + [(3, pro)]
    assert [json.loads(raw)["key"] for _, raw in lines][3:5] == ["a", "a~f2"]


def test_a_file_without_header_or_options_is_priced_as_it_is() -> None:
    text = b'{"key": "a", "prompt": "x"}\n{"key": "b", "prompt": "y"}\n'
    assert list(estimate_lines(io.BytesIO(text), max_line_bytes=1 << 20)) == [
        (1, b'{"key": "a", "prompt": "x"}'),
        (2, b'{"key": "b", "prompt": "y"}'),
    ]
    options = metadata("gemini-3-pro-image", None, 2, None, None)
    assert options == {
        "bananabatch-final-model": "gemini-3-pro-image",
        "bananabatch-candidates": "2",
    }
    lines = list(estimate_lines(io.BytesIO(text), max_line_bytes=1 << 20, options=options))
    assert len(lines) == 6
