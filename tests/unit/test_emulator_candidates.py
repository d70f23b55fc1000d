"""The Gemini emulator's seeded candidates and broken-image row faults (issue 21)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from bananabatch.emulator.faults import FaultPlan
from bananabatch.emulator.generate import generate

MODEL = "gemini-3.1-flash-lite-image"


def _request(seed: int | None) -> dict[str, object]:
    config: dict[str, object] = {"responseModalities": ["IMAGE"]}
    if seed is not None:
        config["seed"] = seed
    return {"contents": [{"parts": [{"text": "A green kettle"}]}], "generationConfig": config}


def _image(seed: int | None, fault_kind: str | None = None) -> bytes:
    fault = None
    if fault_kind is not None:
        fault = FaultPlan().row("k", fault_kind).take_row_fault("k")  # type: ignore[arg-type]
    outcome = generate(MODEL, _request(seed), fault=fault)
    assert outcome.response is not None, outcome.error
    part = outcome.response["candidates"][0]["content"]["parts"][-1]
    return base64.b64decode(part["inlineData"]["data"])


def test_seeded_requests_get_different_images_and_the_same_seed_the_same_image() -> None:
    assert _image(1) != _image(2)
    assert _image(1) == _image(1)
    assert _image(None) not in (_image(1), _image(2))


@pytest.mark.parametrize(
    ("kind", "size"),
    [("blank_image", (1024, 1024)), ("uniform_image", (1024, 1024)), ("small_image", (64, 64))],
)
def test_a_broken_image_fault_answers_an_image_of_that_kind(
    kind: str, size: tuple[int, int]
) -> None:
    with Image.open(io.BytesIO(_image(3, kind))) as image:
        assert image.size == size
        low, high = image.convert("L").getextrema()
    assert isinstance(low, int)
    assert isinstance(high, int)
    if kind == "blank_image":
        assert (low, high) == (255, 255)
    if kind == "uniform_image":
        assert high - low <= 2


def test_a_copy_fault_answers_the_image_candidate_one_gets() -> None:
    assert _image(3, "copy_image") == _image(1)
