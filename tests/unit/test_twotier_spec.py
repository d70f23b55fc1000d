"""Two-tier headers, options and the draft lines a file becomes (core/twotier/spec, expand)."""

from __future__ import annotations

import json

import pytest

from bananabatch.core.twotier.expand import (
    Expanded,
    Refused,
    TierLine,
    expand_line,
    final_request,
)
from bananabatch.core.twotier.spec import (
    SpecError,
    TwoTierSpec,
    candidate_key,
    candidate_number,
    final_key,
    final_number,
    header_of,
    line_key_of,
    resolve_spec,
)

PRO = "gemini-3-pro-image"
LITE = "gemini-3.1-flash-lite-image"


def test_a_header_line_makes_a_two_tier_spec_with_defaults() -> None:
    header = header_of(json.dumps({"bananabatch": {"final_model": PRO, "keep": 2}}))
    spec = resolve_spec(header, {})
    assert spec == TwoTierSpec(final_model=PRO, draft_model=LITE, candidates=4, keep=2)
    assert TwoTierSpec.from_json(spec.to_json()) == spec


def test_an_ordinary_first_line_is_not_a_header() -> None:
    assert header_of('{"key": "a", "prompt": "bananabatch"}') is None
    assert header_of("not json bananabatch") is None
    assert header_of(b'{"prompt": "x"}') is None


def test_upload_options_win_over_the_header_and_alone_make_a_job_two_tier() -> None:
    header = {"final_model": PRO, "candidates": 3}
    spec = resolve_spec(header, {"bananabatch-candidates": "6", "bananabatch-selection": "manual"})
    assert spec is not None
    assert (spec.candidates, spec.selection) == (6, "manual")
    assert resolve_spec(None, {"bananabatch-final-model": PRO}) == TwoTierSpec(final_model=PRO)
    assert resolve_spec(None, {"bananabatch-cache": "off"}) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, '"final_model" is required'),
        ({"final_model": "gemini-9"}, '"final_model": expected an image model'),
        ({"final_model": "gpt-image-2"}, "run on Gemini models"),
        ({"final_model": PRO, "candidates": 0}, '"candidates": expected an integer from 1 to 16'),
        ({"final_model": PRO, "keep": True}, '"keep"'),
        ({"final_model": PRO, "selection": "vote"}, '"selection"'),
        ({"final_model": PRO, "cull": {"min_sides": 1}}, "unknown threshold"),
        ({"final_model": PRO, "budget": 3}, 'unknown field "budget"'),
    ],
)
def test_a_bad_header_is_refused_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        resolve_spec(fields, {})


def test_keys_of_candidates_and_finals_lead_back_to_their_line() -> None:
    assert candidate_key("sku-1", 3) == "sku-1~c3"
    assert final_key("sku-1", 1) == "sku-1"
    assert final_key("sku-1", 2) == "sku-1~f2"
    assert candidate_number("sku-1~c3", "sku-1") == 3
    assert candidate_number("sku-1~c3", "sku-") is None
    assert candidate_number("sku-10~c3", "sku-1") is None
    assert final_number("sku-1", "sku-1") == 1
    assert final_number("sku-1~f4", "sku-1") == 4
    assert final_number("sku-1~c4", "sku-1") is None
    assert line_key_of("sku-1~f4") == "sku-1"


SPEC = TwoTierSpec(final_model=PRO, candidates=3)


def test_a_simple_line_becomes_seeded_native_drafts_on_the_draft_model() -> None:
    raw = json.dumps(
        {
            "key": "sku-1",
            "prompt": "A red sneaker",
            "aspect_ratio": "4:5",
            "image_size": "2K",
            "metadata": {"sku": "1"},
            "keep": 1,
        }
    )
    out = expand_line(raw, 2, SPEC)
    assert isinstance(out, Expanded)
    drafts = [json.loads(d) for d in out.drafts]
    assert [d["key"] for d in drafts] == ["sku-1~c1", "sku-1~c2", "sku-1~c3"]
    assert {d["model"] for d in drafts} == {LITE}
    assert [d["request"]["generationConfig"]["seed"] for d in drafts] == [1, 2, 3]
    # The Lite model is 1K only: the size is left to its default; the ratio stays.
    assert drafts[0]["request"]["generationConfig"]["imageConfig"] == {"aspectRatio": "4:5"}
    assert drafts[0]["metadata"] == {"sku": "1"}
    assert "keep" not in drafts[0]
    assert "candidates" not in drafts[0]
    line = out.line
    assert (line.key, line.line_no, line.candidates, line.keep) == ("sku-1", 2, 3, 1)
    assert line.request["generationConfig"]["imageConfig"] == {
        "aspectRatio": "4:5",
        "imageSize": "2K",
    }
    assert "seed" not in line.request["generationConfig"]
    assert TierLine.from_json(line.to_json()) == line


def test_a_line_without_a_key_gets_the_key_of_its_own_line_number() -> None:
    out = expand_line('{"prompt": "x", "candidates": 2}', 7, SPEC)
    assert isinstance(out, Expanded)
    assert [json.loads(d)["key"] for d in out.drafts] == ["line-000007~c1", "line-000007~c2"]


def test_a_native_line_keeps_its_request_and_gets_seeds() -> None:
    request = {
        "contents": [{"parts": [{"text": "A blue sneaker"}]}],
        "generationConfig": {"imageConfig": {"aspectRatio": "1:1"}, "temperature": 0.5},
    }
    out = expand_line(json.dumps({"key": "n", "request": request}), 1, SPEC)
    assert isinstance(out, Expanded)
    draft = json.loads(out.drafts[1])["request"]
    assert draft["generationConfig"] == {
        "imageConfig": {"aspectRatio": "1:1"},
        "temperature": 0.5,
        "seed": 2,
    }
    assert out.line.prompt_preview == "A blue sneaker"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"key": "a~c1", "prompt": "x"}, "key"),
        ({"key": "a", "prompt": "x", "candidates": 40}, "candidates"),
        ({"key": "a", "prompt": "x", "candidates": 2, "keep": 3}, "keep"),
        ({"key": "a", "prompt": "x", "model": PRO}, "model"),
    ],
)
def test_what_only_a_two_tier_file_refuses_is_refused_with_line_and_field(
    line: dict[str, object], field: str
) -> None:
    out = expand_line(json.dumps(line), 9, SPEC)
    assert isinstance(out, Refused)
    assert (out.line_no, out.field) == (9, field)
    assert json.loads(out.to_json())["reason"].startswith(f'line 9, field "{field}"')


@pytest.mark.parametrize("raw", ["not json", "[1]", '{"key": "a"}', '{"key": 3, "prompt": "x"}'])
def test_what_intake_rejects_anyway_is_passed_through_once(raw: str) -> None:
    assert expand_line(raw, 1, SPEC) == raw


def test_the_final_request_is_the_original_prompt_with_the_candidate_as_reference() -> None:
    out = expand_line('{"key": "a", "prompt": "A hat", "image_size": "2K"}', 1, SPEC)
    assert isinstance(out, Expanded)
    request = final_request(out.line, "iVBOR", "image/png")
    assert request["contents"][0]["parts"] == [
        {"text": "A hat"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
    ]
    assert request["generationConfig"]["imageConfig"] == {"imageSize": "2K"}
    # the stored line is unchanged
    assert len(out.line.request["contents"][0]["parts"]) == 1
