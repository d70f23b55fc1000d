"""OpenAI batch result lines become Developer-API-shaped rows that core/results.py classifies
by the same rules as Gemini's, whichever file a line came from and whichever of the
undocumented shapes the service writes (providers/openai_rows.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from bananabatch.core.results import OutcomeKind, classify_row
from bananabatch.providers import openai_rows

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _line(response: Any = None, error: Any = None) -> dict[str, Any]:
    return {"id": "batch_req_1", "custom_id": "k1", "response": response, "error": error}


def _image_body(**extra: Any) -> dict[str, Any]:
    return {"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}]} | extra


def _classify(line: dict[str, Any]) -> Any:
    row = openai_rows.to_row(line)
    assert row is not None
    return classify_row(row)


def test_an_answered_request_is_an_image_keyed_by_custom_id_with_its_usage() -> None:
    usage = {
        "input_tokens": 12,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 2},
        "output_tokens": 200,
        "total_tokens": 212,
    }
    body = _image_body(output_format="jpeg", usage=usage)
    outcome = _classify(_line({"status_code": 200, "body": body}))
    assert (outcome.key, outcome.kind, outcome.image) == ("k1", OutcomeKind.IMAGE, PNG)
    assert outcome.mime_type == "image/jpeg"  # the format the service says, not a sniff
    assert outcome.usage is not None
    assert (outcome.usage.prompt_tokens, outcome.usage.image_output_tokens) == (12, 200)


@pytest.mark.parametrize("code", sorted(openai_rows.POLICY_CODES))
def test_a_content_policy_refusal_is_blocked_and_never_retried(code: str) -> None:
    body = {"error": {"message": "rejected by the safety system", "type": "x", "code": code}}
    outcome = _classify(_line({"status_code": 400, "body": body}))
    assert (outcome.kind, outcome.retryable) == (OutcomeKind.BLOCKED, False)
    assert "safety system" in (outcome.reason() or "")


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
def test_an_http_error_is_an_error_retried_only_when_its_status_says_so(
    status: int, retryable: bool
) -> None:
    body = {"error": {"message": "boom", "type": "server_error", "code": None}}
    outcome = _classify(_line({"status_code": status, "body": body}))
    assert (outcome.kind, outcome.error_code, outcome.retryable) == (
        OutcomeKind.ERROR,
        status,
        retryable,
    )


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("rate_limit_exceeded", True),
        ("server_error", True),
        ("invalid_request", False),
        ("new", False),
    ],
)
def test_a_line_error_without_a_status_is_read_by_its_code(code: str, retryable: bool) -> None:
    outcome = _classify(_line(error={"code": code, "message": "said so"}))
    assert (outcome.kind, outcome.retryable) == (OutcomeKind.ERROR, retryable)
    assert code in (outcome.error_message or "")


@pytest.mark.parametrize("code", sorted(openai_rows.NOT_RUN))
def test_a_request_the_batch_never_ran_yields_no_row(code: str) -> None:
    assert openai_rows.to_row(_line(error={"code": code, "message": "not run"})) is None


def test_an_answer_without_an_image_is_no_image_and_a_line_with_nothing_is_malformed() -> None:
    empty = _classify(_line({"status_code": 200, "body": {"created": 1, "data": []}}))
    assert empty.kind is OutcomeKind.NO_IMAGE
    nothing = _classify(_line())
    assert (nothing.kind, nothing.retryable) == (OutcomeKind.MALFORMED, True)


def test_edit_lines_go_to_the_edits_endpoint_and_their_gcs_images_are_signed() -> None:
    body = {"model": "gpt-image-2", "prompt": "p", "images": [{"image_url": "gs://b/r.png"}]}
    line = openai_rows.encode("k", body)
    assert line["url"] == openai_rows.EDITS
    assert openai_rows.with_signed_images(line, lambda uri: "https://signed/" + uri[5:]) == 1
    assert line["body"]["images"] == [{"image_url": "https://signed/b/r.png"}]
    generation = openai_rows.encode("g", {"model": "gpt-image-2", "prompt": "p"})
    assert generation["url"] == openai_rows.GENERATIONS
