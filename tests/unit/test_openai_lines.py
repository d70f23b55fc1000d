"""Lines for OpenAI's gpt-image models (issue 19 part 2): what a line may ask of them, what is
sent, and why a line is refused. Each rejection names the line, the field, what is allowed
and what was found, and both parsers give the same answer (the property tests hold them to
that for every valid line; here each rule is checked by name)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from bananabatch.core.catalog import (
    ALL_MODELS,
    OPENAI_MODELS,
    Provider,
    lifecycle_problem,
    model_spec,
    provider_of,
)
from bananabatch.core.intake import AcceptedLine, LineParser, ReferenceParser, RejectedLine
from bananabatch.core.intake.request import (
    OPENAI_EDITS,
    OPENAI_GENERATIONS,
    openai_batch_line,
    openai_endpoint,
)

TODAY = date(2026, 12, 7)
GEMINI = "gemini-3.1-flash-lite-image"


def parse(doc: dict[str, Any], *, openai: bool = True, line_no: int = 7) -> Any:
    raw = json.dumps(doc).encode()
    fast = LineParser(default_model=GEMINI, today=TODAY, openai=openai).parse(line_no, raw)
    exact = ReferenceParser(default_model=GEMINI, today=TODAY, openai=openai).parse(line_no, raw)
    assert fast == exact
    return exact


def accepted(doc: dict[str, Any]) -> AcceptedLine:
    line = parse(doc)
    assert isinstance(line, AcceptedLine), line
    return line


def rejected(doc: dict[str, Any], **kwargs: Any) -> RejectedLine:
    line = parse(doc, **kwargs)
    assert isinstance(line, RejectedLine), line
    return line


def test_gpt_image_models_are_openais_and_gemini_models_geminis() -> None:
    assert provider_of("gpt-image-2") is Provider.OPENAI
    assert provider_of(GEMINI) is Provider.GEMINI
    assert {s.model_id for s in OPENAI_MODELS} >= {"gpt-image-1", "gpt-image-2"}
    assert all(s.provider is Provider.OPENAI for s in OPENAI_MODELS)
    assert len({s.model_id for s in ALL_MODELS}) == len(ALL_MODELS)


def test_a_plain_gpt_image_2_line_is_a_generation_with_every_default_written() -> None:
    line = accepted({"key": "sku-1", "prompt": "a red fox", "model": "gpt-image-2"})
    assert line.model == "gpt-image-2"
    assert line.request == {
        "model": "gpt-image-2",
        "prompt": "a red fox",
        "n": 1,
        "size": "1024x1024",
        "quality": "medium",
        "output_format": "png",
    }
    assert (line.image_size, line.quality, line.output_format) == ("1024x1024", "medium", "png")
    assert openai_endpoint(line.request) == OPENAI_GENERATIONS


@pytest.mark.parametrize(
    ("ratio", "size"), [("1:1", "1024x1024"), ("3:2", "1536x1024"), ("2:3", "1024x1536")]
)
def test_the_aspect_ratio_maps_to_the_models_size(ratio: str, size: str) -> None:
    line = accepted({"prompt": "x", "model": "gpt-image-2", "aspect_ratio": ratio})
    assert line.request["size"] == size
    assert line.image_size == size
    assert line.aspect_ratio == ratio


def test_quality_and_output_format_are_sent_as_written() -> None:
    line = accepted(
        {"prompt": "x", "model": "gpt-image-2", "quality": "high", "output_format": "webp"}
    )
    assert line.request["quality"] == "high"
    assert line.request["output_format"] == "webp"


def test_a_size_written_in_capitals_is_the_models_size() -> None:
    line = accepted({"prompt": "x", "model": "gpt-image-2", "image_size": "1024X1536"})
    assert line.request["size"] == "1024x1536"


@pytest.mark.parametrize(
    ("doc", "field", "says"),
    [
        (
            {"aspect_ratio": "16:9"},
            "aspect_ratio",
            'expected one of 1:1, 3:2, 2:3 for gpt-image-2; found "16:9"',
        ),
        (
            {"image_size": "2K"},
            "image_size",
            'expected one of 1024x1024, 1536x1024, 1024x1536 for gpt-image-2; found "2K"',
        ),
        (
            {"aspect_ratio": "3:2", "image_size": "1024x1536"},
            "image_size",
            "aspect_ratio 3:2 is 1536x1024 on gpt-image-2; expected that size or no "
            'image_size; found "1024x1536"',
        ),
        (
            {"quality": "ultra"},
            "quality",
            'expected one of low, medium, high for gpt-image-2; found "ultra"',
        ),
        (
            {"output_format": "gif"},
            "output_format",
            'expected one of png, jpeg, webp for gpt-image-2; found "gif"',
        ),
        (
            {"priority": "urgent"},
            "priority",
            "expected normal or bulk for gpt-image-2: the urgent lane is Gemini's synchronous "
            'API; found "urgent"',
        ),
        (
            {"reference_images": ["gs://inbox/references/a.heic"]},
            "reference_images",
            "item 1: gpt-image-2 takes input images of types image/jpeg, image/png, "
            'image/webp; found image/heic ("gs://inbox/references/a.heic")',
        ),
        (
            {"reference_images": [f"gs://inbox/references/{n}.png" for n in range(17)]},
            "reference_images",
            "expected at most 16 for gpt-image-2; found 17",
        ),
    ],
)
def test_an_invalid_combination_is_rejected_naming_line_field_allowed_and_found(
    doc: dict[str, Any], field: str, says: str
) -> None:
    line = rejected({"key": "k", "prompt": "x", "model": "gpt-image-2", **doc})
    assert line.field == field
    assert line.reason == f'line 7, field "{field}": {says}'


@pytest.mark.parametrize("field", ["quality", "output_format"])
def test_a_gemini_line_may_not_ask_for_gpt_image_options(field: str) -> None:
    line = rejected({"prompt": "x", "model": GEMINI, field: "low"})
    assert line.field == field
    assert f"{GEMINI} takes no {field}; only gpt-image models do" in line.reason


def test_gpt_image_1_is_rejected_as_shut_down_naming_its_replacement() -> None:
    line = rejected({"prompt": "x", "model": "gpt-image-1"})
    assert line.field == "model"
    assert "gpt-image-1 was shut down on 2026-10-23" in line.reason
    assert line.reason.endswith("use gpt-image-2 instead")
    assert lifecycle_problem("gpt-image-1", date(2026, 10, 22)) is None


def test_a_native_line_cannot_name_a_gpt_image_model() -> None:
    line = rejected({"request": {"contents": [{"parts": [{"text": "x"}]}]}, "model": "gpt-image-2"})
    assert line.field == "model"
    assert "takes simple lines only" in line.reason


def test_gpt_image_lines_are_refused_where_the_openai_provider_is_off() -> None:
    line = rejected({"prompt": "x", "model": "gpt-image-2"}, openai=False)
    assert line.field == "model"
    assert "gpt-image-2 is served by OpenAI, which this deployment has not enabled" in line.reason
    assert "BANANABATCH_OPENAI_ENABLED" in line.reason
    # Gemini lines are untouched.
    assert isinstance(parse({"prompt": "x"}, openai=False), AcceptedLine)


def test_reference_images_make_an_edit_request() -> None:
    refs = ["gs://inbox/references/a.png", "https://h.example/b.jpg"]
    line = accepted({"key": "e", "prompt": "x", "model": "gpt-image-2", "reference_images": refs})
    assert line.request["images"] == [{"image_url": uri} for uri in refs]
    assert openai_endpoint(line.request) == OPENAI_EDITS
    assert openai_batch_line("e", line.request) == {
        "custom_id": "e",
        "method": "POST",
        "url": "/v1/images/edits",
        "body": line.request,
    }


def test_a_gpt_image_default_model_gives_plain_lines_its_defaults() -> None:
    parser = LineParser(default_model="gpt-image-2", today=TODAY)
    exact = ReferenceParser(default_model="gpt-image-2", today=TODAY)
    raws = [b'{"key": "a", "prompt": "one"}', b'{"key": "b", "prompt": "two"}']
    chunk = parser.parse_chunk(1, raws)
    for row, raw in enumerate(raws):
        reference = exact.parse(row + 1, raw)
        assert isinstance(reference, AcceptedLine)
        assert chunk.fast_line(row).accepted() == reference
        assert reference.request["size"] == "1024x1024"


def test_the_unconfirmed_gpt_image_2_5_models_are_accepted_with_a_warning() -> None:
    from bananabatch.core.catalog import model_warnings

    accepted({"prompt": "x", "model": "gpt-image-2.5-sunburst"})
    spec = model_spec("gpt-image-2.5-flare")
    assert spec is not None
    warnings = model_warnings(["gpt-image-2.5-flare"], TODAY)
    assert any("Batch API support is not documented" in w for w in warnings)
