from __future__ import annotations

import dataclasses
import io
import json
import tracemalloc
from datetime import date
from typing import Any

import pytest

from bananabatch.core.intake import (
    RESPONSE_MODALITIES,
    AcceptedLine,
    IntakeLimits,
    LineParser,
    RejectedLine,
    content_hash,
    iter_raw_lines,
    key_problem,
    line_key,
)


def as_json(value: object) -> Any:
    """A request built by the parsers (typed as JSON), to index into in an assertion."""
    return value


MODEL = "gemini-3-pro-image"
# A day gemini-2.5-flash-image (the single-size model these rules are shown on) was still
# served; its shutdown is tested in test_model_lifecycle_intake.py.
SERVED_DAY = date(2026, 9, 1)


def parser(**limits: int) -> LineParser:
    return LineParser(default_model=MODEL, limits=IntakeLimits(**limits), today=SERVED_DAY)


def line(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def accept(doc: Any, *, line_no: int = 1, p: LineParser | None = None) -> AcceptedLine:
    result = (p or parser()).parse(line_no, line(doc) if not isinstance(doc, bytes) else doc)
    assert isinstance(result, AcceptedLine), result
    return result


def reject(doc: Any, *, line_no: int = 7, p: LineParser | None = None) -> RejectedLine:
    raw = doc if isinstance(doc, bytes) else line(doc)
    result = (p or parser()).parse(line_no, raw)
    assert isinstance(result, RejectedLine), result
    assert result.reason.startswith(f"line {line_no}")
    return result


# --- the simple form ---------------------------------------------------------------------


def test_a_simple_line_becomes_a_rest_request_with_image_config() -> None:
    got = accept(
        {
            "key": "sku-1",
            "prompt": "a red bicycle",
            "aspect_ratio": "16:9",
            "image_size": "2K",
            "metadata": {"sku": 1},
            "cache": False,
            "priority": "urgent",
        },
        line_no=3,
    )
    assert got.request == {
        "contents": [{"role": "user", "parts": [{"text": "a red bicycle"}]}],
        "generationConfig": {
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
        },
    }
    assert (got.line_no, got.key, got.model) == (3, "sku-1", MODEL)
    assert (got.aspect_ratio, got.image_size) == ("16:9", "2K")
    assert got.metadata == {"sku": 1}
    assert got.cache is False
    assert got.priority == "urgent"
    assert got.native is False
    assert got.prompt_chars == len("a red bicycle")


def test_a_line_with_only_a_prompt_takes_the_defaults() -> None:
    got = accept({"prompt": "a cat"}, line_no=12)
    assert got.key == "line-000012"
    assert got.key_generated is True
    assert got.model == MODEL
    assert got.aspect_ratio is None
    assert got.image_size is None
    assert got.cache is True
    assert got.priority == "normal"
    assert got.allow_third_party is False
    assert got.metadata == {}
    assert got.reference_images == ()
    # No imageConfig at all: the model's own defaults apply (1:1, or the reference's ratio).
    assert as_json(got.request)["generationConfig"] == {
        "responseModalities": list(RESPONSE_MODALITIES)
    }


def test_the_simple_request_asks_for_image_output_only() -> None:
    got = accept({"prompt": "x"})
    assert as_json(got.request)["generationConfig"]["responseModalities"] == ["IMAGE"]


def test_a_lowercase_size_is_normalised_in_the_simple_form() -> None:
    got = accept({"prompt": "x", "image_size": "4k"})
    assert got.image_size == "4K"
    assert as_json(got.request)["generationConfig"]["imageConfig"] == {"imageSize": "4K"}


def test_a_model_alias_or_resource_name_is_canonicalised() -> None:
    assert accept({"prompt": "x", "model": "nano-banana-pro"}).model == "gemini-3-pro-image"
    assert accept({"prompt": "x", "model": "models/gemini-3.1-flash-image-preview"}).model == (
        "gemini-3.1-flash-image"
    )


def test_a_single_size_model_gets_no_image_size_in_its_request() -> None:
    got = accept({"prompt": "x", "model": "gemini-2.5-flash-image", "aspect_ratio": "3:2"})
    assert as_json(got.request)["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2"}


def test_reference_images_become_file_data_parts_after_the_prompt() -> None:
    refs = [
        "gs://inbox/references/a/b.PNG",
        "https://example.com/x.jpeg?sig=1",
        "gs://inbox/references/c.webp",
    ]
    got = accept({"prompt": "put it here", "reference_images": refs})
    assert as_json(got.request)["contents"][0]["parts"] == [
        {"text": "put it here"},
        {"fileData": {"fileUri": refs[0], "mimeType": "image/png"}},
        {"fileData": {"fileUri": refs[1], "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": refs[2], "mimeType": "image/webp"}},
    ]
    assert got.reference_images == tuple(refs)


def test_the_prompt_preview_is_one_short_line() -> None:
    prompt = "first line\nsecond line " + "word " * 100
    got = accept({"prompt": prompt})
    assert len(got.prompt_preview) <= 120
    assert "\n" not in got.prompt_preview
    assert got.prompt_preview.startswith("first line second line")
    assert got.prompt_chars == len(prompt)


def test_the_default_model_can_be_given_by_alias() -> None:
    got = LineParser(default_model="nano-banana-2").parse(1, b'{"prompt": "x"}')
    assert isinstance(got, AcceptedLine)
    assert got.model == "gemini-3.1-flash-image"


def test_an_accepted_line_is_a_complete_frozen_dataclass() -> None:
    got = accept({"prompt": "x", "key": "k"})
    # replace() goes through __init__ with every field, so the fast constructor must have
    # filled each one.
    assert dataclasses.replace(got) == got
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.key = "other"  # type: ignore[misc]


# --- the native form ---------------------------------------------------------------------


def test_a_native_line_is_staged_as_written_without_its_model() -> None:
    request = {
        "contents": [{"role": "user", "parts": [{"text": "a dog"}]}],
        "generation_config": {
            "response_modalities": ["TEXT", "IMAGE"],
            "image_config": {"aspect_ratio": "9:16", "image_size": "4K"},
        },
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "model": "models/gemini-3-pro-image-preview",
    }
    got = accept({"key": "n-1", "request": request, "metadata": {"a": "b"}})
    expected = {k: v for k, v in request.items() if k != "model"}
    assert got.request == expected
    assert got.native is True
    assert (got.key, got.model) == ("n-1", "gemini-3-pro-image")
    assert (got.aspect_ratio, got.image_size) == ("9:16", "4K")
    assert got.prompt_preview == "a dog"
    assert got.metadata == {"a": "b"}


def test_a_native_line_reads_camel_case_image_config() -> None:
    request = {
        "contents": [
            {"parts": [{"text": "x"}, {"fileData": {"fileUri": "gs://inbox/references/r.png"}}]}
        ],
        "generationConfig": {"imageConfig": {"aspectRatio": "4:1", "imageSize": "512"}},
    }
    got = accept({"request": request, "model": "gemini-3.1-flash-image"})
    assert (got.aspect_ratio, got.image_size) == ("4:1", "512")
    assert got.reference_images == ("gs://inbox/references/r.png",)
    assert got.request == request


def test_a_native_request_model_chooses_the_model_when_the_line_has_none() -> None:
    got = accept({"request": {"contents": [{"parts": [{"text": "x"}]}], "model": "nano-banana"}})
    assert got.model == "gemini-2.5-flash-image"
    assert "model" not in got.request


@pytest.mark.parametrize(
    ("request_body", "field", "fragment"),
    [
        ({"contents": []}, "request.contents", "non-empty list"),
        ({"contents": [{"parts": "x"}]}, "request.contents[0].parts", "expected a non-empty list"),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "config": {}},
            "request.config",
            "generationConfig",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"imageConfig": {"aspectRatio": "4:1"}},
            },
            "request.generationConfig.imageConfig.aspectRatio",
            'found "4:1"',
        ),
        (
            # Staged as written, so a lowercase size would reach the service and fail there.
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {"imageConfig": {"imageSize": "2k"}},
            },
            "request.generationConfig.imageConfig.imageSize",
            'found "2k"',
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generation_config": {"response_modalities": ["TEXT"]},
            },
            "request.generation_config.response_modalities",
            "IMAGE",
        ),
        (
            {
                "contents": [{"parts": [{"text": "x"}]}],
                "generationConfig": {},
                "generation_config": {},
            },
            "request",
            "keep one",
        ),
        ({"contents": [{"parts": [{"text": "x"}]}], "model": 5}, "request.model", "string"),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "model": "dall-e"},
            "request.model",
            "unknown model",
        ),
    ],
)
def test_a_bad_native_request_is_rejected_naming_the_path(
    request_body: dict[str, Any], field: str, fragment: str
) -> None:
    got = reject({"key": "k", "request": request_body})
    assert got.field == field
    assert fragment in got.reason
    assert got.key == "k"


def test_a_native_line_whose_model_disagrees_with_its_request_is_rejected() -> None:
    got = reject(
        {
            "model": "gemini-3-pro-image",
            "request": {
                "contents": [{"parts": [{"text": "x"}]}],
                "model": "gemini-2.5-flash-image",
            },
        }
    )
    assert got.field == "model"
    assert "one model" in got.reason


def test_a_native_line_may_not_carry_simple_fields() -> None:
    got = reject({"prompt": "x", "request": {"contents": [{"parts": [{"text": "x"}]}]}})
    assert got.field == "prompt"
    assert "native" in got.reason


def test_a_native_line_with_too_many_images_is_rejected() -> None:
    parts = [{"text": "x"}] + [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}] * 4
    got = reject({"model": "gemini-2.5-flash-image", "request": {"contents": [{"parts": parts}]}})
    assert got.field == "request.contents"
    assert "at most 3" in got.reason


# --- rejections, one per rule --------------------------------------------------------------


def test_an_unsupported_aspect_ratio_names_the_allowed_ones_and_the_model() -> None:
    got = reject({"prompt": "x", "aspect_ratio": "7:3"})
    assert got.field == "aspect_ratio"
    assert got.reason == (
        'line 7, field "aspect_ratio": expected one of 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, '
        '9:16, 16:9, 21:9 for gemini-3-pro-image; found "7:3"'
    )


def test_a_ratio_of_the_newer_model_is_refused_for_the_older_one() -> None:
    assert accept({"prompt": "x", "aspect_ratio": "8:1", "model": "gemini-3.1-flash-image"})
    assert reject({"prompt": "x", "aspect_ratio": "8:1"}).field == "aspect_ratio"


@pytest.mark.parametrize(
    ("model", "size", "fragment"),
    [
        ("gemini-3-pro-image", "8K", "expected one of 1K, 2K, 4K for gemini-3-pro-image"),
        ("gemini-3-pro-image", "512", "expected one of 1K, 2K, 4K"),
        ("gemini-2.5-flash-image", "1K", "single output size"),
    ],
)
def test_a_size_the_model_does_not_offer_is_rejected(model: str, size: str, fragment: str) -> None:
    got = reject({"prompt": "x", "model": model, "image_size": size})
    assert got.field == "image_size"
    assert fragment in got.reason


def test_an_unknown_model_is_rejected_listing_the_known_ones() -> None:
    got = reject({"prompt": "x", "model": "imagen-9"})
    assert got.field == "model"
    assert "gemini-2.5-flash-image, gemini-3-pro-image, gemini-3.1-flash-image" in got.reason


def test_an_unknown_default_model_rejects_lines_that_rely_on_it() -> None:
    got = LineParser(default_model="imagen-9").parse(4, b'{"prompt": "x"}')
    assert isinstance(got, RejectedLine)
    assert "default model" in got.reason
    assert '"imagen-9"' in got.reason


@pytest.mark.parametrize(
    ("doc", "field", "fragment"),
    [
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": " \t\n"}, "prompt", "empty"),
        ({"key": "k"}, "prompt", "required"),
        ({"prompt": 5}, "prompt", "expected a string; found 5"),
        ({"prompt": None}, "prompt", "expected a string; found null"),
        ({"prompt": "x", "cache": "yes"}, "cache", "expected true or false"),
        ({"prompt": "x", "cache": 1}, "cache", "expected true or false"),
        ({"prompt": "x", "priority": "now"}, "priority", "urgent, normal, bulk;"),
        ({"prompt": "x", "metadata": [1]}, "metadata", "expected an object"),
        (
            {"prompt": "x", "reference_images": "gs://inbox/references/x.png"},
            "reference_images",
            "list",
        ),
        ({"prompt": "x", "reference_images": [5]}, "reference_images", "item 1"),
        ({"prompt": "x", "aspect_ratio": 1}, "aspect_ratio", "expected a string"),
        ({"prompt": "x", "colour": "red"}, "colour", "unknown field"),
        ({"prompt": "x", "key": 12}, "key", "expected a string"),
        ({"prompt": "x", "metadata": {"v": float("nan")}}, "metadata", "NaN"),
    ],
)
def test_a_line_of_the_wrong_shape_is_rejected_naming_the_field(
    doc: dict[str, Any], field: str, fragment: str
) -> None:
    got = reject(doc)
    assert got.field == field
    assert f'line 7, field "{field}": ' in got.reason
    assert fragment in got.reason


def test_a_prompt_over_the_limit_is_rejected_with_both_lengths() -> None:
    got = reject({"prompt": "x" * 101}, p=parser(max_prompt_chars=100))
    assert got.field == "prompt"
    assert "at most 100 characters; found 101" in got.reason
    assert accept({"prompt": "x" * 100}, p=parser(max_prompt_chars=100))


def test_a_line_over_the_byte_limit_is_rejected_before_parsing() -> None:
    got = reject(b'{"prompt": "' + b"x" * 200 + b'"}', p=parser(max_line_bytes=100))
    assert got.field is None
    assert "longer than the limit of 100 bytes" in got.reason


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("ftp://host/x.png", "gs:// or https://"),
        ("http://host/x.png", "gs:// or https://"),
        ("/local/x.png", "gs:// or https://"),
        ("gs://bucket-only", "gs://BUCKET/OBJECT"),
        ("gs:///x.png", "gs://BUCKET/OBJECT"),
        ("https:///x.png", "https://HOST/PATH"),
        ("gs://inbox/references/x.tiff", "extension"),
        ("https://example.com/v1beta/files/abc", "extension"),
        ("https://www.googleapis.com/storage/v1/b/results/o/x.png", "Google API host"),
        ("gs://inbox/references/my image.png", "whitespace"),
    ],
)
def test_a_bad_reference_image_is_rejected(uri: str, fragment: str) -> None:
    got = reject({"prompt": "x", "reference_images": ["gs://inbox/references/ok.png", uri]})
    assert got.field == "reference_images"
    assert "item 2" in got.reason
    assert fragment in got.reason


def test_too_many_reference_images_for_the_model_are_rejected() -> None:
    refs = [f"gs://inbox/references/{i}.png" for i in range(4)]
    got = reject({"prompt": "x", "model": "gemini-2.5-flash-image", "reference_images": refs})
    assert got.field == "reference_images"
    assert "at most 3 for gemini-2.5-flash-image; found 4" in got.reason
    assert accept({"prompt": "x", "reference_images": refs})


def test_invalid_utf8_is_rejected_and_kept_readable() -> None:
    got = reject(b'{"prompt": "caf\xe9"}')
    assert "not valid UTF-8" in got.reason
    assert "0xe9" in got.reason
    assert got.raw == '{"prompt": "caf\ufffd"}'


def test_text_that_is_not_json_is_rejected() -> None:
    got = reject(b"prompt: a cat")
    assert "not valid JSON" in got.reason
    assert got.key is None


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"a cat"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_rejected(raw: bytes) -> None:
    assert "expected a JSON object" in reject(raw).reason


def test_nan_and_infinite_numbers_are_rejected_in_either_form() -> None:
    simple = reject(b'{"prompt": "x", "metadata": {"a": NaN}}')
    assert (simple.field, "NaN" in simple.reason) == ("metadata", True)
    native = b'{"request": {"contents": [{"parts": [{"text": "x"}]}], "seed": %s}}'
    assert "not valid JSON: NaN" in reject(native % b"NaN").reason
    too_big = reject(native % b"1e400")
    assert too_big.field == "request"
    assert "out of range" in too_big.reason


def test_an_escaped_lone_surrogate_is_rejected_because_it_cannot_be_written_as_utf8() -> None:
    got = reject(b'{"prompt": "a \\ud800 b"}')
    assert got.field == "prompt"
    assert "surrogate" in got.reason
    # The reason and the kept text must themselves be writable as UTF-8.
    json.dumps([got.reason, got.raw, got.key], ensure_ascii=False).encode()


def test_the_kept_raw_text_is_cut_to_two_thousand_characters() -> None:
    got = reject({"prompt": "x" * 5000, "colour": 1})
    assert len(got.raw) == 2000


# --- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        ("..", '".."'),
        ("a..b", '".."'),
        (".", '"."'),
        ("__x", '"__"'),
        ("", "empty"),
        ("   ", "empty"),
        ("a\nb", "U+000A"),
        ("tab\there", "U+0009"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("k" * 129, "at most 128 characters"),
        # Bidi controls make a name display as another ("x\u202egnp.exe" shows as
        # "xexe.png") in every listing, gallery and console that shows keys.
        ("invoice\u202egnp.exe", "bidi control character U+202E"),
        ("a\u2066b\u2069", "bidi control character U+2066"),
        ("a\u200fb", "bidi control character U+200F"),
        ("a\u061cb", "bidi control character U+061C"),
        ("a\u202ab", "bidi control character U+202A"),
    ],
)
def test_an_unsafe_key_is_rejected(key: str, fragment: str) -> None:
    got = reject({"key": key, "prompt": "x"})
    assert got.field == "key"
    assert fragment in got.reason
    assert key_problem(key) is not None


def test_a_rejection_shows_bidi_controls_escaped_so_the_reason_reads_as_written() -> None:
    got = reject({"key": "invoice\u202egnp.exe", "prompt": "x"})
    assert got.reason.endswith('found "invoice\\u202egnp.exe"'), got.reason
    assert "\u202e" not in got.reason


@pytest.mark.parametrize(
    "key",
    [
        "sku-1",
        "a.b",
        "_x",
        "x__",
        "k" * 128,
        "ñandú 🍌",
        "a b",
        "family 👨\u200d👩\u200d👧",
        "שלום",
    ],
)
def test_a_safe_key_is_kept(key: str) -> None:
    assert accept({"key": key, "prompt": "x"}).key == key
    assert key_problem(key) is None


def test_a_line_without_key_gets_a_stable_key_from_its_line_number() -> None:
    assert line_key(7) == "line-000007"
    assert accept({"prompt": "x"}, line_no=7).key == "line-000007"
    assert accept({"prompt": "x", "key": None}, line_no=1234567).key == "line-1234567"


def test_a_repeated_key_rejects_the_later_line() -> None:
    p = parser()
    first = accept({"key": "dup", "prompt": "x"}, line_no=1, p=p)
    second = reject({"key": "dup", "prompt": "y"}, line_no=2, p=p)
    assert first.key == "dup"
    assert second.field == "key"
    assert "duplicate" in second.reason
    assert second.key == "dup"


def test_a_user_key_that_equals_a_later_generated_key_makes_the_later_line_a_duplicate() -> None:
    p = parser()
    accept({"key": "line-000003", "prompt": "x"}, line_no=1, p=p)
    later = reject({"prompt": "y"}, line_no=3, p=p)
    assert later.key == "line-000003"
    assert "duplicate" in later.reason


def test_a_generated_key_that_a_later_user_key_repeats_makes_the_user_line_a_duplicate() -> None:
    p = parser()
    accept({"prompt": "x"}, line_no=1, p=p)
    assert "duplicate" in reject({"key": "line-000001", "prompt": "y"}, line_no=2, p=p).reason


def test_a_rejected_line_does_not_reserve_its_key() -> None:
    p = parser()
    reject({"key": "k", "prompt": "x", "aspect_ratio": "7:3"}, line_no=1, p=p)
    assert accept({"key": "k", "prompt": "x"}, line_no=2, p=p).key == "k"


def test_a_rejected_line_has_a_record_key_no_accepted_line_can_take() -> None:
    got = reject({"key": "a/b", "prompt": "x"}, line_no=42)
    assert got.record_key == "__line-000042"
    assert key_problem(got.record_key) is not None


# --- layout: blank lines, BOM, CRLF ----------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   ", b"\t", b"\r", b" \r "])
def test_a_blank_line_is_skipped(raw: bytes) -> None:
    assert parser().parse(5, raw) is None


def test_a_bom_on_the_first_line_is_ignored() -> None:
    assert accept(b'\xef\xbb\xbf{"prompt": "x"}', line_no=1).key == "line-000001"
    assert parser().parse(1, b"\xef\xbb\xbf") is None


def test_a_trailing_carriage_return_is_harmless_to_the_parser() -> None:
    assert as_json(accept(b'{"prompt": "x"}\r').request)["contents"][0]["parts"][0]["text"] == "x"


def lines_of(data: bytes, *, max_line_bytes: int = 1000, chunk: int = 7) -> list[tuple[int, bytes]]:
    return list(iter_raw_lines(io.BytesIO(data), max_line_bytes=max_line_bytes, chunk_size=chunk))


def test_lines_are_split_on_newlines_with_one_based_numbers() -> None:
    assert lines_of(b"a\nbb\nccc\n") == [(1, b"a"), (2, b"bb"), (3, b"ccc")]


def test_the_last_line_needs_no_newline() -> None:
    assert lines_of(b"a\nb") == [(1, b"a"), (2, b"b")]


def test_crlf_endings_are_stripped() -> None:
    assert lines_of(b"a\r\nb\r\n") == [(1, b"a"), (2, b"b")]


def test_blank_lines_still_count_in_numbering() -> None:
    assert lines_of(b"a\n\n  \nb\n") == [(1, b"a"), (2, b""), (3, b"  "), (4, b"b")]


def test_a_bom_is_stripped_from_the_first_line_only() -> None:
    bom = b"\xef\xbb\xbf"
    assert lines_of(bom + b"a\n" + bom + b"b", chunk=2) == [(1, b"a"), (2, bom + b"b")]


def test_an_empty_stream_has_no_lines() -> None:
    assert lines_of(b"") == []


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 1 << 20])
def test_splitting_does_not_depend_on_the_read_size(chunk: int) -> None:
    data = b'{"prompt": "a"}\r\n\n{"prompt": "bb"}\nlast'
    assert lines_of(data, chunk=chunk) == [
        (1, b'{"prompt": "a"}'),
        (2, b""),
        (3, b'{"prompt": "bb"}'),
        (4, b"last"),
    ]


@pytest.mark.parametrize("chunk", [1, 4, 10, 1000])
def test_an_overlong_line_comes_out_cut_just_past_the_limit(chunk: int) -> None:
    data = b"short\n" + b"x" * 50 + b"\nafter\n" + b"y" * 11
    got = lines_of(data, max_line_bytes=10, chunk=chunk)
    assert got == [(1, b"short"), (2, b"x" * 11), (3, b"after"), (4, b"y" * 11)]


def test_a_line_of_exactly_the_limit_with_crlf_is_not_cut() -> None:
    assert lines_of(b"x" * 10 + b"\r\n", max_line_bytes=10, chunk=3) == [(1, b"x" * 10)]


class EndlessLine(io.RawIOBase):
    """A stream of one long line, made up as it is read, so only the reader can hold it."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = b"z" * n
        self.left -= n
        return n


def test_an_endless_line_is_read_through_without_being_kept_whole() -> None:
    stream = io.BufferedReader(EndlessLine(20_000_000), buffer_size=4096)
    tracemalloc.start()
    try:
        got = list(iter_raw_lines(stream, max_line_bytes=1000, chunk_size=4096))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [(1, b"z" * 1001)]
    assert peak < 1_000_000  # the line is 20 MB; the reader keeps a chunk and the limit


def test_streamed_lines_and_the_parser_reject_an_overlong_line_by_number() -> None:
    data = b'{"prompt": "ok"}\n{"prompt": "' + b"x" * 500 + b'"}\n{"prompt": "ok2"}\n'
    p = parser(max_line_bytes=100)
    results = [p.parse(n, raw) for n, raw in iter_raw_lines(io.BytesIO(data), max_line_bytes=100)]
    assert [type(r).__name__ for r in results] == ["AcceptedLine", "RejectedLine", "AcceptedLine"]
    rejected = results[1]
    assert isinstance(rejected, RejectedLine)
    assert rejected.line_no == 2
    assert "longer than the limit of 100 bytes" in rejected.reason


# --- content hash -------------------------------------------------------------------------


def test_identical_requests_share_a_content_hash_whatever_their_keys() -> None:
    p = parser()
    a = accept({"key": "a", "prompt": "x", "aspect_ratio": "1:1"}, line_no=1, p=p)
    b = accept({"key": "b", "prompt": "x", "aspect_ratio": "1:1", "cache": False}, line_no=2, p=p)
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 64
    int(content_hash(a), 16)


def test_a_different_prompt_size_or_model_changes_the_content_hash() -> None:
    base = content_hash(accept({"prompt": "x"}))
    assert content_hash(accept({"prompt": "y"})) != base
    assert content_hash(accept({"prompt": "x", "image_size": "2K"})) != base
    assert content_hash(accept({"prompt": "x", "model": "gemini-3.1-flash-image"})) != base


def test_a_native_request_hashes_the_same_in_either_case() -> None:
    camel = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"]},
    }
    snake = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generation_config": {"response_modalities": ["IMAGE"]},
    }
    simple = accept({"prompt": "x"})
    assert content_hash(accept({"request": camel})) == content_hash(accept({"request": snake}))
    assert content_hash(accept({"request": camel})) == content_hash(simple)
