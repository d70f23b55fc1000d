"""The emulator's pure parts: rendering, request reading, token accounting, fault plans."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from bananabatch.core.catalog import image_dimensions, model_spec
from bananabatch.emulator.faults import FaultPlan, RowFault
from bananabatch.emulator.generate import (
    INPUT_IMAGE_TOKENS,
    ImageRequest,
    RequestInvalid,
    generate,
    parse_request,
    prompt_tokens,
    text_output_tokens,
    thought_tokens,
    usage_for,
)
from bananabatch.emulator.render import render_png


def _request(prompt: str = "A red cube", **image_config: str) -> dict[str, Any]:
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"imageConfig": image_config},
    }


def _spec(model: str) -> Any:
    spec = model_spec(model)
    assert spec is not None
    return spec


@pytest.mark.parametrize(
    ("ratio", "size"), [("1:1", "1K"), ("16:9", "2K"), ("9:16", "512"), ("21:9", "1K")]
)
def test_a_render_is_a_png_of_the_catalog_size_for_its_ratio_and_tier(
    ratio: str, size: str
) -> None:
    image = Image.open(io.BytesIO(render_png("A lighthouse at dusk", ratio, size)))
    assert image.format == "PNG"
    assert image.size == image_dimensions(ratio, size)


def test_rendering_the_same_prompt_ratio_and_size_gives_identical_bytes() -> None:
    render_png.cache_clear()
    first = render_png("Same prompt", "4:3", "1K")
    render_png.cache_clear()
    assert render_png("Same prompt", "4:3", "1K") == first
    assert render_png("Other prompt", "4:3", "1K") != first


def test_a_request_is_read_in_camel_case_or_snake_case_alike() -> None:
    spec = _spec("gemini-3-pro-image")
    camel = parse_request(spec, _request(aspectRatio="3:2", imageSize="2K"), batch_model="m")
    snake = parse_request(
        spec,
        {
            "contents": [{"parts": [{"text": "A red cube"}]}],
            "generation_config": {"image_config": {"aspect_ratio": "3:2", "image_size": "2K"}},
        },
        batch_model="m",
    )
    assert camel == snake
    assert (camel.aspect_ratio, camel.image_size, camel.prompt) == ("3:2", "2K", "A red cube")


def test_a_request_without_image_config_gets_a_square_at_the_models_default_size() -> None:
    parsed = parse_request(_spec("gemini-3.1-flash-image"), _request(), batch_model="m")
    assert (parsed.aspect_ratio, parsed.image_size) == ("1:1", "1K")


def test_an_aspect_ratio_the_model_lacks_is_invalid_and_names_the_field() -> None:
    with pytest.raises(RequestInvalid, match=r"aspectRatio '8:1' is not supported"):
        parse_request(_spec("gemini-3-pro-image"), _request(aspectRatio="8:1"), batch_model="m")


def test_a_lowercase_size_tier_is_invalid() -> None:
    with pytest.raises(RequestInvalid, match=r"imageSize '2k'"):
        parse_request(_spec("gemini-3-pro-image"), _request(imageSize="2k"), batch_model="m")


def test_a_single_size_model_ignores_image_size() -> None:
    parsed = parse_request(
        _spec("gemini-2.5-flash-image"), _request(imageSize="4K"), batch_model="m"
    )
    assert parsed.image_size == "1K"


def test_a_line_whose_model_differs_from_the_batch_model_is_invalid() -> None:
    request = _request() | {"model": "models/gemini-3-pro-image"}
    with pytest.raises(RequestInvalid, match="does not match the batch model"):
        parse_request(
            _spec("gemini-3.1-flash-image"), request, batch_model="gemini-3.1-flash-image"
        )


def test_usage_counts_the_catalog_image_tokens_and_thinking_only_for_gemini_3() -> None:
    prompt = "A quiet harbour, early morning, fog"
    req = ImageRequest(prompt, "1:1", "4K", want_text=True, want_image=True, input_images=1)
    pro = usage_for(_spec("gemini-3-pro-image"), req)
    assert pro["candidatesTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": text_output_tokens(prompt)},
        {"modality": "IMAGE", "tokenCount": 2000},
    ]
    assert pro["promptTokenCount"] == prompt_tokens(prompt) + INPUT_IMAGE_TOKENS
    assert pro["thoughtsTokenCount"] == thought_tokens(prompt)
    assert pro["totalTokenCount"] == (
        pro["promptTokenCount"] + pro["candidatesTokenCount"] + pro["thoughtsTokenCount"]
    )
    flash = usage_for(_spec("gemini-2.5-flash-image"), req)
    assert "thoughtsTokenCount" not in flash
    assert flash["candidatesTokensDetails"][-1] == {"modality": "IMAGE", "tokenCount": 1290}


def test_a_successful_row_has_a_text_part_and_a_base64_png_part() -> None:
    outcome = generate(
        "models/gemini-3.1-flash-image", _request(aspectRatio="4:1", imageSize="512")
    )
    assert outcome.error is None
    assert outcome.response is not None
    candidate = outcome.response["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    text, image = candidate["content"]["parts"]
    assert "text" in text
    png = base64.b64decode(image["inlineData"]["data"])
    assert image["inlineData"]["mimeType"] == "image/png"
    assert Image.open(io.BytesIO(png)).size == image_dimensions("4:1", "512")
    assert outcome.response["modelVersion"] == "gemini-3.1-flash-image"


def test_an_image_only_request_gets_no_text_part_and_no_text_tokens() -> None:
    request = _request() | {"generationConfig": {"responseModalities": ["Image"]}}
    outcome = generate("gemini-3-pro-image", request)
    assert outcome.response is not None
    parts = outcome.response["candidates"][0]["content"]["parts"]
    assert [list(p) for p in parts] == [["inlineData"]]
    details = outcome.response["usageMetadata"]["candidatesTokensDetails"]
    assert details == [{"modality": "IMAGE", "tokenCount": 1120}]


def test_an_invalid_request_becomes_a_code_3_error_row() -> None:
    outcome = generate("gemini-3-pro-image", _request(aspectRatio="1:8"))
    assert outcome.response is None
    assert outcome.error is not None
    assert outcome.error["code"] == 3


def test_row_faults_shape_the_outcome() -> None:
    request = _request()
    error = generate("gemini-3-pro-image", request, fault=RowFault("error", code=13, message="x"))
    assert error.error == {"code": 13, "message": "x"}

    safety = generate("gemini-3-pro-image", request, fault=RowFault("image_safety"))
    assert safety.response is not None
    assert safety.response["candidates"] == [{"finishReason": "IMAGE_SAFETY", "index": 0}]

    blocked = generate("gemini-3-pro-image", request, fault=RowFault("prompt_blocked"))
    assert blocked.response is not None
    assert "candidates" not in blocked.response
    assert blocked.response["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"}

    no_image = generate("gemini-3-pro-image", request, fault=RowFault("no_image"))
    assert no_image.response is not None
    candidate = no_image.response["candidates"][0]
    assert candidate["finishReason"] == "NO_IMAGE"
    assert all("inlineData" not in part for part in candidate["content"]["parts"])


def test_a_counted_row_fault_stops_applying_once_used_up() -> None:
    plan = FaultPlan().row("k1", "no_image", times=1)
    assert plan.take_row_fault("k1") is not None
    assert plan.take_row_fault("k1") is None
    assert plan.take_row_fault("k2") is None


def test_an_uncounted_row_fault_applies_every_time() -> None:
    plan = FaultPlan().row_error("k1", code=3, message="bad")
    assert plan.take_row_fault("k1") == plan.take_row_fault("k1") == RowFault("error", 3, "bad")


def test_a_job_fault_matches_display_names_by_pattern() -> None:
    plan = FaultPlan().job("EXPIRED", display_name="bananabatch-job1-*")
    assert plan.take_job_fault("bananabatch-job2-b0001-a1") is None
    fault = plan.take_job_fault("bananabatch-job1-b0001-a1")
    assert fault is not None
    assert fault.state == "EXPIRED"
