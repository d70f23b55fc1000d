"""OpenAI Batch lines, both ways. Pure: no I/O.

Out: the staged request line, `{"custom_id", "method": "POST", "url", "body"}`, one endpoint
per batch (field sheet §3.1): /v1/images/edits when the body carries input images, else
/v1/images/generations.

In: one line of a batch's output or error file, `{"id", "custom_id", "response":
{"status_code", "body"}, "error"}`, becomes a row in the Developer API's shape
(`ports.ResultRow`), so `core/results.classify_row` decides what it means exactly as it does
for Gemini: an image is `response.candidates[0].content.parts[0].inlineData`, a content-policy
refusal is `response.promptFeedback.blockReason` (BLOCKED, never retried), any other failure
is `error: {code, message}` with the HTTP status as its code (429 and 5xx retryable, other
4xx not). The OpenAI usage object is kept beside the Gemini-shaped usage, as
`response.openaiUsage`, for pricing by token kind.

What the real service writes where is known only from documentation and third parties
(field sheet §3.1; the batch guide): whether a line answered with a 4xx lands in the output
or in the error file, and whether the requests an expired or cancelled batch never ran are
listed in the error file (`batch_expired` / `batch_cancelled`) or simply absent. Both
files are read and every line is read the same way whichever file it came from; a request
that was never run yields no row at all, so the collector's missing-line rule applies to it
whether or not the service listed it (it is retried, as the batch's state says).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

GENERATIONS: Final = "/v1/images/generations"
EDITS: Final = "/v1/images/edits"
ENDPOINTS: Final = (GENERATIONS, EDITS)
# Body fields that carry input images: their presence makes a request an edit. `images` is
# the JSON form (a list of {"image_url"} or {"file_id"}); `image` and `mask` the multipart
# field names, accepted in case a batch line carries them (field sheet §6 row 11: how an
# edit line carries its images inside a batch is not documented).
EDIT_FIELDS: Final = ("images", "image", "mask")

# Error codes of requests the batch never ran (its window closed, or it was cancelled):
# not failures of the request, and not billed. They become no row (see the module note).
NOT_RUN: Final = frozenset({"batch_expired", "batch_cancelled"})
# Error codes of a refusal by the content policy: BLOCKED, never retried.
POLICY_CODES: Final = frozenset(
    {"moderation_blocked", "content_policy_violation", "content_filter", "safety_violation"}
)
# Line-level error codes without an HTTP status, read as the status they stand for.
_CODE_STATUS: Final[Mapping[str, int]] = {
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "internal_error": 500,
    "service_unavailable": 503,
    "timeout": 504,
    "request_timeout": 408,
    "invalid_request": 400,
    "invalid_request_error": 400,
    "invalid_json": 400,
    "invalid_url": 400,
    "invalid_value": 400,
    "model_not_found": 404,
    "not_found": 404,
    "too_many_tokens": 400,
    "token_limit_exceeded": 400,
}
_MIME_BY_FORMAT: Final[Mapping[str, str]] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}


def endpoint_for(body: Mapping[str, Any]) -> str:
    """The batch endpoint a request body belongs to."""
    return EDITS if any(body.get(f) for f in EDIT_FIELDS) else GENERATIONS


def encode(key: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"custom_id": key, "method": "POST", "url": endpoint_for(body), "body": dict(body)}


def with_signed_images(line: dict[str, Any], url_for: Callable[[str], str]) -> int:
    """Replace, in place, every gs:// `image_url` of a staged edit line's `images` with
    url_for(uri) (a signed https URL: OpenAI reads no gs://). Returns how many."""
    body = line.get("body")
    images = body.get("images") if isinstance(body, dict) else None
    count = 0
    if isinstance(images, list):
        for entry in images:
            uri = entry.get("image_url") if isinstance(entry, dict) else None
            if isinstance(uri, str) and uri.startswith("gs://"):
                entry["image_url"] = url_for(uri)
                count += 1
    return count


def to_row(line: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Developer-API-shaped row of one output or error line; None for a request the
    batch never ran (NOT_RUN)."""
    key = line.get("custom_id")
    row: dict[str, Any] = {"key": key if isinstance(key, str) else None}
    error = line.get("error")
    if isinstance(error, Mapping) and error:
        code = _text(error.get("code"))
        if code in NOT_RUN:
            return None
        row["error"] = _error(code, _text(error.get("message")), None)
        return row
    response = line.get("response")
    if not isinstance(response, Mapping):
        # Neither an answer nor an error: classify_row calls it MALFORMED (retryable).
        return row
    status = response.get("status_code")
    body = response.get("body")
    body = body if isinstance(body, Mapping) else {}
    if isinstance(status, int) and not isinstance(status, bool) and status != 200:
        return row | _failure(status, body)
    row["response"] = _image_response(body)
    return row


def _failure(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    inner = body.get("error")
    inner = inner if isinstance(inner, Mapping) else {}
    code = _text(inner.get("code"))
    message = _text(inner.get("message"))
    if code in POLICY_CODES:
        # A refusal: the prompt (or an input image) was blocked. Its words are kept as the
        # row's text, so the item's reason says what the service said.
        refusal: dict[str, Any] = {"promptFeedback": {"blockReason": code.upper()}}
        if message:
            refusal["candidates"] = [{"content": {"parts": [{"text": message}]}}]
        return {"response": refusal}
    return {"error": _error(code, message, status)}


def _error(code: str | None, message: str | None, status: int | None) -> dict[str, Any]:
    number = status if status is not None else _CODE_STATUS.get(code or "")
    text = f"{code}: {message}" if code and message else (message or code or "no message")
    out: dict[str, Any] = {"message": text}
    if number is not None:
        out["code"] = number
    return out


def _image_response(body: Mapping[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    data = body.get("data")
    mime = _MIME_BY_FORMAT.get((_text(body.get("output_format")) or "").lower())
    if isinstance(data, list):
        for entry in data:
            if not isinstance(entry, Mapping):
                continue
            # A str, or a memoryview of the line's bytes (providers/_lines.py, views).
            b64 = entry.get("b64_json")
            if isinstance(b64, str | memoryview) and len(b64):
                inline: dict[str, Any] = {"data": b64}
                if mime:
                    inline["mimeType"] = mime
                parts.append({"inlineData": inline})
            revised = entry.get("revised_prompt")
            if isinstance(revised, str) and revised:
                parts.append({"text": revised})
    # No image in a 200 answer is NO_IMAGE (a bounded retry), as for Gemini.
    candidate: dict[str, Any] = {"content": {"parts": parts}}
    if parts:
        candidate["finishReason"] = "STOP"
    response: dict[str, Any] = {"candidates": [candidate] if parts else []}
    usage = body.get("usage")
    if isinstance(usage, Mapping):
        response["usageMetadata"] = usage_metadata(usage)
        response["openaiUsage"] = dict(usage)
    return response


def usage_metadata(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI image usage as Gemini's usageMetadata: every output token is an image token
    unless output_tokens_details says otherwise."""
    inputs = _count(usage.get("input_tokens"))
    outputs = _count(usage.get("output_tokens"))
    in_details = usage.get("input_tokens_details")
    in_details = in_details if isinstance(in_details, Mapping) else {}
    out_details = usage.get("output_tokens_details")
    image_out = (
        _count(out_details.get("image_tokens")) if isinstance(out_details, Mapping) else outputs
    )
    total = usage.get("total_tokens")
    return {
        "promptTokenCount": inputs,
        "candidatesTokenCount": outputs,
        "totalTokenCount": _count(total) if total is not None else inputs + outputs,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": _count(in_details.get("text_tokens"))},
            {"modality": "IMAGE", "tokenCount": _count(in_details.get("image_tokens"))},
        ],
        "candidatesTokensDetails": [
            {"modality": "IMAGE", "tokenCount": image_out},
            {"modality": "TEXT", "tokenCount": max(0, outputs - image_out)},
        ],
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return max(0, value)
    return 0
