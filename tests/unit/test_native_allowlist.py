"""Native lines on an allowlist: only the request fields the product understands and prices
pass; anything else is rejected with a reason naming the field; every file reference, in
any part of the request, is held to the reference rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bananabatch.core.intake import AcceptedLine, LineParser, RejectedLine, native

MODEL = "gemini-3.1-flash-image"
REF = "gs://inbox/references/fox.png"
TEXT: dict[str, Any] = {"contents": [{"parts": [{"text": "a fox"}]}]}


def parse(request: dict[str, Any], **line: Any) -> AcceptedLine | RejectedLine:
    raw = json.dumps({"key": "n", "request": request} | line).encode()
    got = LineParser(default_model=MODEL).parse(1, raw)
    assert got is not None
    return got


def test_every_allowed_field_in_either_spelling_passes() -> None:
    request = {
        "contents": [
            {"role": "user", "parts": [{"text": "make it blue"}, {"file_data": {"file_uri": REF}}]},
            {
                "role": "model",
                "parts": [{"text": "ok", "thought": True, "thoughtSignature": "c2ln"}],
            },
            {
                "role": "user",
                "parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}}],
            },
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generation_config": {
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
            "temperature": 0.5,
            "topP": 0.9,
            "topK": 40,
            "seed": 7,
            "maxOutputTokens": 2000,
        },
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    got = parse(request)
    assert isinstance(got, AcceptedLine), got
    assert got.request == request
    assert got.reference_images == (REF,)
    assert got.aspect_ratio == "16:9"
    # The system instruction is text the model reads and the bill counts; thoughts are not.
    assert got.prompt_chars == len("make it blue") + len("be brief")


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        (TEXT | {"tools": [{"googleSearch": {}}]}, "request.tools"),
        (TEXT | {"toolConfig": {}}, "request.toolConfig"),
        (TEXT | {"cachedContent": "cachedContents/abc"}, "request.cachedContent"),
        (TEXT | {"cached_content": "cachedContents/abc"}, "request.cached_content"),
        (TEXT | {"labels": {"a": "b"}}, "request.labels"),
        (TEXT | {"config": {}}, "request.config"),
        (TEXT | {"surprise": 1}, "request.surprise"),
        (
            TEXT | {"generationConfig": {"candidateCount": 4}},
            "request.generationConfig.candidateCount",
        ),
        (
            TEXT | {"generationConfig": {"thinkingConfig": {"thinkingBudget": 9999}}},
            "request.generationConfig.thinkingConfig",
        ),
        (
            TEXT | {"generationConfig": {"imageConfig": {"personGeneration": "ALLOW_ALL"}}},
            "request.generationConfig.imageConfig.personGeneration",
        ),
        (
            TEXT | {"generationConfig": {"responseMimeType": "application/json"}},
            "request.generationConfig.responseMimeType",
        ),
        (
            {"contents": [{"parts": [{"text": "x", "functionCall": {"name": "f"}}]}]},
            "request.contents[0].parts[0].functionCall",
        ),
        (
            {"contents": [{"parts": [{"executableCode": {}}]}]},
            "request.contents[0].parts[0].executableCode",
        ),
        ({"contents": [{"parts": [{"text": "x"}], "extra": 1}]}, "request.contents[0].extra"),
        (
            {"contents": [{"parts": [{"fileData": {"fileUri": REF, "videoMetadata": {}}}]}]},
            "request.contents[0].parts[0].fileData.videoMetadata",
        ),
        (
            TEXT | {"safetySettings": [{"category": "X", "threshold": "Y", "method": "Z"}]},
            "request.safetySettings[0].method",
        ),
    ],
)
def test_a_field_off_the_allowlist_is_rejected_naming_it(
    request_body: dict[str, Any], field: str
) -> None:
    got = parse(request_body)
    assert isinstance(got, RejectedLine), got
    assert got.field == field
    assert got.reason.startswith(f'line 1, field "{field}": not allowed')


@pytest.mark.parametrize(
    ("request_body", "field", "fragment"),
    [
        ({"contents": [{"parts": [{"text": 5}]}]}, "request.contents[0].parts[0].text", "string"),
        (
            {"contents": [{"role": "system", "parts": [{"text": "x"}]}]},
            "request.contents[0].role",
            "user, model",
        ),
        ({"contents": [{"role": "user"}]}, "request.contents[0].parts", "required"),
        ({"contents": [{"parts": [{}]}]}, "request.contents[0].parts[0]", "exactly one of"),
        (
            {"contents": [{"parts": [{"text": "x", "fileData": {"fileUri": REF}}]}]},
            "request.contents[0].parts[0]",
            "exactly one of",
        ),
        (
            {"contents": [{"parts": [{"fileData": {"mimeType": "image/png"}}]}]},
            "request.contents[0].parts[0].fileData.fileUri",
            "required",
        ),
        (
            {
                "contents": [
                    {"parts": [{"inlineData": {"mimeType": "application/pdf", "data": "JVBER"}}]}
                ]
            },
            "request.contents[0].parts[0].inlineData.mimeType",
            "image type",
        ),
        (TEXT | {"generationConfig": {"seed": 1.5}}, "request.generationConfig.seed", "integer"),
        # Integers are int32 in the service's schema; a 40-digit seed is no request.
        (
            TEXT | {"generationConfig": {"seed": 10**40}},
            "request.generationConfig.seed",
            "between -2147483648 and 2147483647",
        ),
        (
            TEXT | {"generationConfig": {"maxOutputTokens": -(2**31) - 1}},
            "request.generationConfig.maxOutputTokens",
            "between",
        ),
        (
            TEXT | {"generationConfig": {"temperature": "hot"}},
            "request.generationConfig.temperature",
            "number",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}]}] * (native.MAX_CONTENTS + 1)},
            "request.contents",
            f"at most {native.MAX_CONTENTS}",
        ),
        (
            {"contents": [{"parts": [{"text": "x"}] * (native.MAX_PARTS + 1)}]},
            "request.contents[0].parts[64]",
            f"at most {native.MAX_PARTS}",
        ),
        (
            TEXT | {"safetySettings": [{"category": "X"}] * 17},
            "request.safetySettings",
            "at most 16",
        ),
    ],
)
def test_an_allowed_field_of_the_wrong_shape_is_rejected_naming_it(
    request_body: dict[str, Any], field: str, fragment: str
) -> None:
    got = parse(request_body)
    assert isinstance(got, RejectedLine), got
    assert got.field == field
    assert fragment in got.reason


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "http://169.254.169.254/computeMetadata/v1/x.png",
        "https://127.0.0.1/x.png",
        "https://metadata.google.internal/x.png",
        "https://user:pw@example.com/x.png",
        "gs://results/jobs/other-job-0123456789ab/images/k.png",
        "gs://elsewhere/x.png",
    ],
)
@pytest.mark.parametrize("where", ["contents", "systemInstruction"])
def test_a_file_uri_anywhere_in_a_native_request_is_confined(uri: str, where: str) -> None:
    part = {"fileData": {"fileUri": uri, "mimeType": "image/png"}}
    if where == "contents":
        request = {"contents": [{"parts": [{"text": "x"}, part]}]}
        field = "request.contents[0].parts[1].fileData.fileUri"
    else:
        request = TEXT | {"systemInstruction": {"parts": [part]}}
        field = "request.systemInstruction.parts[0].fileData.fileUri"
    got = parse(request)
    assert isinstance(got, RejectedLine), got
    assert got.field == field
    assert got.reason.startswith(f'line 1, field "{field}": reference image ')


def test_a_readable_check_covers_the_system_instruction_too() -> None:
    looked_at: list[list[str]] = []

    def check(uris: Any) -> int | None:
        looked_at.append(list(uris))
        return 1

    request = {
        "contents": [{"parts": [{"text": "x"}, {"fileData": {"fileUri": REF}}]}],
        "systemInstruction": {"parts": [{"fileData": {"fileUri": REF.replace("fox", "owl")}}]},
    }
    raw = json.dumps({"key": "n", "request": request}).encode()
    got = LineParser(default_model=MODEL, check_references=check).parse(1, raw)
    assert isinstance(got, RejectedLine)
    assert looked_at == [[REF, REF.replace("fox", "owl")]]
    assert got.field == "request.systemInstruction.parts[0].fileData.fileUri"


def test_the_allowlist_is_data_in_one_module() -> None:
    assert set(native.REQUEST_FIELDS) == {
        "contents",
        "systemInstruction",
        "generationConfig",
        "safetySettings",
        "model",
    }
    assert set(native.OBJECT_FIELDS["generationConfig"]) >= {"responseModalities", "imageConfig"}
    assert "candidateCount" not in native.OBJECT_FIELDS["generationConfig"]
    assert "thinkingConfig" not in native.OBJECT_FIELDS["generationConfig"]
