from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.core.results import (
    Outcome,
    OutcomeKind,
    Usage,
    classify_row,
    usage_from_metadata,
)
from bananabatch.core.states import ItemState
from bananabatch.providers._lines import parse_image_line, parse_line

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00fake-png-body" * 10
JPEG = b"\xff\xd8\xff\xe0" + b"fake-jpeg-body" * 10


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def row(response: dict[str, Any], key: str = "sku-42") -> dict[str, Any]:
    return {"key": key, "response": response}


def classify(doc: dict[str, Any]) -> Outcome:
    """Through the one line parser the providers use (providers/_lines.py), then classified,
    as the collector reads a result file: with the image data as a str and as a view of
    the line (the Gemini collector's), which must come to the same outcome."""
    line = json.dumps(doc).encode()
    parsed = parse_line(0, line)
    assert parsed.row is not None, parsed.malformed
    outcome = classify_row(parsed.row)
    viewed = parse_image_line(0, line)
    assert viewed.row is not None, viewed.malformed
    assert classify_row(viewed.row) == outcome
    return outcome


# --- images ---------------------------------------------------------------------------------

# Reference §4.2, gemini-2.5-flash-image with TEXT and IMAGE output.
FLASH_25_LINE = {
    "response": {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here is the product shot you asked for."},
                        {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 12,
            "candidatesTokenCount": 1299,
            "totalTokenCount": 1311,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
            "candidatesTokensDetails": [
                {"modality": "TEXT", "tokenCount": 9},
                {"modality": "IMAGE", "tokenCount": 1290},
            ],
        },
        "modelVersion": "gemini-2.5-flash-image",
        "responseId": "abc",
    },
    "key": "sku-42",
}


def test_an_image_row_yields_the_decoded_image_its_type_and_usage() -> None:
    got = classify(FLASH_25_LINE)
    assert got.kind is OutcomeKind.IMAGE
    assert got.key == "sku-42"
    assert got.image == PNG
    assert got.mime_type == "image/png"
    assert got.text == "Here is the product shot you asked for."
    assert got.finish_reason == "STOP"
    assert got.usage == Usage(
        prompt_tokens=12,
        image_output_tokens=1290,
        text_output_tokens=9,
        thought_tokens=0,
        total_tokens=1311,
    )
    assert got.item_state() is ItemState.SUCCEEDED
    assert got.reason() is None
    assert got.retryable is False


def test_thought_parts_are_skipped_and_the_final_image_is_kept() -> None:
    response = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "Planning the layout", "thought": True},
                        {
                            "inlineData": {"mimeType": "image/png", "data": b64(PNG)},
                            "thought": True,
                        },
                        {
                            "inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)},
                            "thoughtSignature": "c2ln",
                        },
                    ]
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 20,
            "candidatesTokenCount": 1120,
            "thoughtsTokenCount": 300,
            "totalTokenCount": 1440,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}],
        },
    }
    got = classify(row(response))
    assert got.kind is OutcomeKind.IMAGE
    assert got.image == JPEG
    assert got.mime_type == "image/jpeg"
    assert got.text is None  # the only text was a thought
    assert got.usage == Usage(20, 1120, 0, 300, 1440)


def test_only_thought_images_mean_no_image() -> None:
    part = {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}, "thought": True}
    got = classify(row({"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]}))
    assert got.kind is OutcomeKind.NO_IMAGE
    assert got.image is None


def test_snake_case_inline_data_is_read() -> None:
    part = {"inline_data": {"mime_type": "image/webp", "data": b64(b"RIFF0000WEBPVP8 ")}}
    got = classify(row({"candidates": [{"content": {"parts": [part]}, "finish_reason": "STOP"}]}))
    assert got.kind is OutcomeKind.IMAGE
    assert got.mime_type == "image/webp"
    assert got.finish_reason == "STOP"


def test_a_missing_mime_type_is_sniffed_from_the_bytes() -> None:
    part = {"inlineData": {"data": b64(PNG)}}
    got = classify(row({"candidates": [{"content": {"parts": [part]}}]}))
    assert (got.kind, got.mime_type) == (OutcomeKind.IMAGE, "image/png")


def test_an_inline_part_that_is_not_an_image_is_not_the_image() -> None:
    part = {"inlineData": {"mimeType": "text/plain", "data": b64(b"hello")}}
    got = classify(row({"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]}))
    assert got.kind is OutcomeKind.NO_IMAGE


def test_url_safe_base64_without_padding_still_decodes() -> None:
    data = bytes(range(256)) * 3 + b"\xfb\xff"
    encoded = base64.urlsafe_b64encode(data).decode().rstrip("=")
    part = {"inlineData": {"mimeType": "image/png", "data": encoded}}
    got = classify(row({"candidates": [{"content": {"parts": [part]}}]}))
    assert got.image == data


@pytest.mark.parametrize("data", ["a", "not base64!", "iVBOR*w0K"])
def test_broken_base64_is_malformed_not_an_image(data: str) -> None:
    part = {"inlineData": {"mimeType": "image/png", "data": data}}
    got = classify(row({"candidates": [{"content": {"parts": [part]}}]}))
    assert got.kind is OutcomeKind.MALFORMED
    assert got.key == "sku-42"
    assert "base64" in (got.reason() or "")


def test_a_large_image_decodes_byte_for_byte() -> None:
    data = os.urandom(3_000_000)
    part = {"inlineData": {"mimeType": "image/png", "data": b64(data)}}
    got = classify(row({"candidates": [{"content": {"parts": [part]}}]}))
    assert got.image == data


def test_an_image_is_delivered_even_when_a_later_candidate_has_none() -> None:
    image = {"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": b64(PNG)}}]}}
    empty = {"content": {"parts": [{"text": "no"}]}, "finishReason": "STOP"}
    assert classify(row({"candidates": [empty, image]})).kind is OutcomeKind.IMAGE


# --- blocked and no-image outcomes (reference §4.3, including the observed shapes) -----------


def test_a_candidate_with_no_content_and_image_safety_is_blocked() -> None:
    got = classify(row({"candidates": [{"finishReason": "IMAGE_SAFETY"}]}))
    assert got.kind is OutcomeKind.BLOCKED
    assert got.block_reason == "IMAGE_SAFETY"
    assert got.retryable is False
    assert got.item_state() is ItemState.BLOCKED
    assert got.reason() == "blocked: finishReason IMAGE_SAFETY"


def test_a_refusal_text_with_image_safety_is_blocked_and_quotes_the_text() -> None:
    response = {
        "candidates": [
            {
                "content": {"parts": [{"text": "I can't create that image."}]},
                "finishReason": "IMAGE_SAFETY",
            }
        ]
    }
    got = classify(row(response))
    assert got.kind is OutcomeKind.BLOCKED
    assert got.text == "I can't create that image."
    assert got.reason() == 'blocked: finishReason IMAGE_SAFETY ("I can\'t create that image.")'


def test_a_prompt_level_block_is_blocked() -> None:
    response = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
    }
    got = classify(row(response))
    assert got.kind is OutcomeKind.BLOCKED
    assert got.prompt_blocked is True
    assert got.block_reason == "PROHIBITED_CONTENT"
    assert got.finish_reason is None
    assert got.reason() == "blocked: promptFeedback.blockReason PROHIBITED_CONTENT"
    assert got.usage == Usage(7, 0, 0, 0, 7)


def test_a_snake_case_prompt_block_is_blocked() -> None:
    got = classify(row({"prompt_feedback": {"block_reason": "SAFETY"}}))
    assert (got.kind, got.block_reason) == (OutcomeKind.BLOCKED, "SAFETY")


@pytest.mark.parametrize(
    "finish",
    [
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
        "NO_IMAGE",
    ],
)
def test_a_policy_finish_reason_without_an_image_is_a_terminal_block(finish: str) -> None:
    got = classify(
        row({"candidates": [{"content": {"parts": [{"text": "t"}]}, "finishReason": finish}]})
    )
    assert got.kind is OutcomeKind.BLOCKED
    assert got.retryable is False
    assert got.finish_reason == finish


@pytest.mark.parametrize(
    "finish", ["STOP", "OTHER", "IMAGE_OTHER", "MAX_TOKENS", "MALFORMED_RESPONSE"]
)
def test_text_only_for_an_ordinary_reason_is_no_image_and_retryable(finish: str) -> None:
    got = classify(
        row({"candidates": [{"content": {"parts": [{"text": "Sure!"}]}, "finishReason": finish}]})
    )
    assert got.kind is OutcomeKind.NO_IMAGE
    assert got.retryable is True
    assert got.item_state() is ItemState.FAILED
    assert got.reason() == f'no image: finishReason {finish} ("Sure!")'


def test_a_candidate_without_content_is_classified_by_its_finish_reason() -> None:
    assert classify(row({"candidates": [{"finishReason": "STOP"}]})).kind is OutcomeKind.NO_IMAGE
    assert classify(row({"candidates": [{"finishReason": "SPII"}]})).kind is OutcomeKind.BLOCKED


def test_an_unusual_finish_reason_is_no_image_and_not_retried() -> None:
    got = classify(row({"candidates": [{"finishReason": "LANGUAGE"}]}))
    assert (got.kind, got.retryable) == (OutcomeKind.NO_IMAGE, False)


def test_a_response_without_candidates_or_block_is_no_image() -> None:
    got = classify(row({"usageMetadata": {"promptTokenCount": 3}}))
    assert got.kind is OutcomeKind.NO_IMAGE
    assert got.reason() == "no image: no candidate"


# --- error rows (reference §4.4) -------------------------------------------------------------


def test_an_error_row_with_a_grpc_code_is_an_error() -> None:
    message = "An internal error has occurred. Please retry or report in troubleshooting guide."
    got = classify({"key": "k1", "error": {"code": 13, "message": message}})
    assert got.kind is OutcomeKind.ERROR
    assert (got.error_code, got.error_status, got.error_message) == (13, "INTERNAL", message)
    assert got.retryable is True
    assert got.item_state() is ItemState.FAILED
    assert got.reason() == f"error 13 INTERNAL: {message}"


@pytest.mark.parametrize("field", ["error", "status"])
@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        *[(2, True), (4, True), (8, True), (10, True), (13, True), (14, True)],
        *[(3, False), (5, False), (7, False), (9, False), (16, False)],
    ],
)
def test_grpc_codes_decide_whether_an_error_is_retried(
    field: str, code: int, retryable: bool
) -> None:
    got = classify({"key": "k", field: {"code": code, "message": "m"}})
    assert got.kind is OutcomeKind.ERROR
    assert got.retryable is retryable
    assert got.error_code == code


def test_a_status_string_code_is_read_as_a_number() -> None:
    got = classify({"key": "k", "status": {"code": "3", "message": "bad"}})
    assert (got.error_code, got.error_status, got.retryable) == (3, "INVALID_ARGUMENT", False)


def test_a_vertex_status_string_is_an_error_with_its_http_code() -> None:
    got = classify({"status": "Bad Request: 400 INVALID_ARGUMENT", "response": {}})
    assert got.kind is OutcomeKind.ERROR
    assert (got.error_code, got.error_status) == (400, "INVALID_ARGUMENT")
    assert got.retryable is False
    assert got.error_message == "Bad Request: 400 INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        ("429 Too Many Requests", True),
        ("Internal Server Error: 500 INTERNAL", True),
        ("Service Unavailable: 503", True),
        ("504 Gateway Timeout", True),
        ("Not Found: 404 NOT_FOUND", False),
        ("RESOURCE_EXHAUSTED", True),
        ("something went wrong", False),
    ],
)
def test_a_status_string_is_retried_for_transient_codes(status: str, retryable: bool) -> None:
    got = classify({"status": status, "request": {}})
    assert got.kind is OutcomeKind.ERROR
    assert got.retryable is retryable


def test_an_empty_vertex_status_beside_a_response_means_success() -> None:
    doc = dict(FLASH_25_LINE, status="", processed_time="2026-01-01T00:00:00Z")
    assert classify(doc).kind is OutcomeKind.IMAGE


@pytest.mark.parametrize("empty", [None, {}, {"code": 0}, {"code": 0, "message": ""}])
def test_an_empty_error_beside_a_response_means_success(empty: Any) -> None:
    doc = dict(FLASH_25_LINE, error=empty)
    assert classify(doc).kind is OutcomeKind.IMAGE


def test_an_error_wins_over_a_response() -> None:
    doc = dict(FLASH_25_LINE, error={"code": 13, "message": "x"})
    assert classify(doc).kind is OutcomeKind.ERROR


def test_an_error_with_only_a_status_name_is_an_error() -> None:
    got = classify({"key": "k", "error": {"status": "unavailable"}})
    assert (got.kind, got.error_status, got.retryable) == (OutcomeKind.ERROR, "UNAVAILABLE", True)
    assert got.reason() == "error UNAVAILABLE"


def test_an_error_of_an_unreadable_type_is_malformed() -> None:
    got = classify({"key": "k", "error": [1, 2]})
    assert got.kind is OutcomeKind.MALFORMED
    assert got.key == "k"


# --- malformed rows ---------------------------------------------------------------------------


def test_a_row_with_neither_response_nor_error_is_malformed() -> None:
    got = classify({"key": "k"})
    assert got.kind is OutcomeKind.MALFORMED
    assert got.key == "k"
    assert got.item_state() is ItemState.FAILED
    assert got.reason() == ('malformed result: the row has neither "response" nor "error"/"status"')


@pytest.mark.parametrize(
    "response",
    [
        "text",
        {"candidates": "x"},
        {"candidates": [5]},
        {"candidates": [{"content": {"parts": {"a": 1}}}]},
    ],
)
def test_a_response_of_the_wrong_shape_is_malformed(response: Any) -> None:
    assert classify({"key": "k", "response": response}).kind is OutcomeKind.MALFORMED


def test_a_truncated_line_is_no_row_even_when_its_key_can_be_read() -> None:
    # Its key is not guessed from the text: a later whole line for the same key must not
    # lose to it (the first answer for a key stands); without a row the key goes missing
    # and is retried as missing.
    got = parse_line(7, b'{"key": "sku-\\"7\\"", "response": {"candidates": [{"con')
    assert got.row is None
    assert (got.malformed or "").startswith("result line 7: not JSON")


@pytest.mark.parametrize("line", [b"", b"   \n", b"[1]", b'"x"', b"\xff\xfe{", b"nul"])
def test_lines_that_are_not_objects_are_no_rows_and_say_why(line: bytes) -> None:
    got = parse_line(3, line)
    assert got.row is None
    assert (got.malformed or "").startswith("result line 3: ")


def test_an_inlined_response_takes_its_key_from_metadata() -> None:
    got = classify_row({"error": {"code": 13, "message": "m"}, "metadata": {"key": "req_2"}})
    assert got.key == "req_2"


def test_a_numeric_key_is_read_as_text() -> None:
    assert classify_row({"key": 17, "error": {"code": 3}}).key == "17"


# --- usage ------------------------------------------------------------------------------------


def test_usage_counts_may_arrive_as_strings() -> None:
    got = usage_from_metadata(
        {
            "promptTokenCount": "10",
            "candidatesTokenCount": "1416",
            "thoughtsTokenCount": "40",
            "totalTokenCount": "1466",
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": "1120"}],
        }
    )
    assert got == Usage(10, 1120, 296, 40, 1466)


def test_usage_without_totals_is_summed() -> None:
    got = usage_from_metadata(
        {
            "prompt_token_count": 5,
            "thoughts_token_count": 2,
            "candidates_tokens_details": [
                {"modality": "IMAGE", "token_count": 747},
                {"modality": "TEXT", "token_count": 3},
            ],
        }
    )
    assert got == Usage(5, 747, 3, 2, 757)


@pytest.mark.parametrize("value", [None, [], "x"])
def test_no_usage_metadata_means_no_usage(value: Any) -> None:
    assert usage_from_metadata(value) is None


@pytest.mark.parametrize(
    ("kind", "state"),
    [
        (OutcomeKind.IMAGE, ItemState.SUCCEEDED),
        (OutcomeKind.BLOCKED, ItemState.BLOCKED),
        (OutcomeKind.NO_IMAGE, ItemState.FAILED),
        (OutcomeKind.ERROR, ItemState.FAILED),
        (OutcomeKind.MALFORMED, ItemState.FAILED),
    ],
)
def test_each_outcome_kind_maps_to_one_item_state(kind: OutcomeKind, state: ItemState) -> None:
    outcome = Outcome(
        key="k",
        kind=kind,
        image=None,
        mime_type=None,
        text=None,
        finish_reason=None,
        block_reason=None,
        error_code=None,
        error_message=None,
        retryable=False,
        usage=None,
    )
    assert outcome.item_state() is state


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
row_keys = st.sampled_from(
    [
        *("key", "response", "error", "status", "candidates", "content", "parts"),
        *("inlineData", "data", "mimeType", "finishReason", "promptFeedback", "blockReason"),
        *("code", "thought"),
    ]
)
rows = st.recursive(
    st.dictionaries(row_keys, json_values, max_size=4),
    lambda inner: st.dictionaries(row_keys, inner | st.lists(inner, max_size=2), max_size=4),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(rows)
def test_any_row_shape_is_classified_without_raising(doc: dict[str, Any]) -> None:
    got = classify_row(doc)
    assert isinstance(got.kind, OutcomeKind)
    assert isinstance(got.item_state(), ItemState)
    got.reason()
    assert (got.kind is OutcomeKind.IMAGE) == (got.image is not None)
