"""A sync-lane line as staged (pipeline/lanes.StagedSync): files staged before the lanes
existed still run on Gemini's standard API, and a gateway gets the line's prompt."""

from __future__ import annotations

from bananabatch.pipeline.lanes import StagedSync, attempt_path

REQUEST = {"contents": [{"parts": [{"text": "a cat"}]}]}


def test_a_line_staged_before_the_lanes_goes_to_gemini_standard() -> None:
    staged = StagedSync.from_doc({"key": "k", "model": "gemini-3-pro-image", "request": REQUEST})
    assert staged.lanes == ("gemini-standard",)
    assert staged.prices == {}


def test_a_routed_line_carries_its_providers_prices_and_prompt() -> None:
    staged = StagedSync.from_doc(
        {
            "key": "k",
            "model": "gemini-3-pro-image",
            "request": REQUEST,
            "lanes": ["compat:gw1", "compat:gw2"],
            "prices": {"compat:gw1": 0.05},
            "prompt": "a cat",
            "image_size": "4K",
        }
    )
    request = staged.image_request("job", "job/k@1")
    assert staged.lanes == ("compat:gw1", "compat:gw2")
    assert (request.prompt, request.image_size, request.attempt_id) == ("a cat", "4K", "job/k@1")
    assert request.gemini_request == REQUEST


def test_attempt_ids_stay_unique_when_keys_hold_the_separator() -> None:
    assert attempt_path("j", "a@1", 2) != attempt_path("j", "a", 12)
