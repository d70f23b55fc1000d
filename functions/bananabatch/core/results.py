"""Result rows: classify one row of a batch's output file, or one urgent response. Pure.

Lines are parsed into rows in one place, the provider adapters' `providers/_lines.py`
(`parse_line`, held by tests to answer exactly what the plain `_common.parse_row` answers);
a line that is not a JSON object never becomes a row, so its key goes missing and is
retried as such. What a row means is decided here, and only here.

Follows ../shared/reference/gemini-batch-api.md §4: a row is `{"key", "response"}` on
success and carries `error` or `status` on failure (which of the two is not settled, so both
are read; Vertex puts an error string in `status` and "" on success). Field names are read in
camelCase or snake_case. Every shape, however odd, yields an Outcome; nothing raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from bananabatch.core import b64
from bananabatch.core.row_errors import is_retryable, row_failure
from bananabatch.core.states import ItemState

TEXT_KEEP_CHARS: Final = 2_000

# Policy and recitation stops: terminal, a retry of the same prompt would be refused again.
# NO_IMAGE is here because the product treats "the model declined to draw" as a block.
# MODEL_ARMOR is Vertex's prompt/response screening, a policy block as well.
BLOCK_FINISH_REASONS: Final = frozenset(
    {
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
        "NO_IMAGE",
        "MODEL_ARMOR",
    }
)
# The model finished without drawing, for no policy reason: worth a bounded retry.
RETRY_FINISH_REASONS: Final = frozenset(
    {"STOP", "OTHER", "IMAGE_OTHER", "MAX_TOKENS", "MALFORMED_RESPONSE"}
)

_IMAGE_SIGNATURES: Final = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


class OutcomeKind(StrEnum):
    IMAGE = "IMAGE"
    BLOCKED = "BLOCKED"
    NO_IMAGE = "NO_IMAGE"
    ERROR = "ERROR"
    MALFORMED = "MALFORMED"


_ITEM_STATE: Final[Mapping[OutcomeKind, ItemState]] = {
    OutcomeKind.IMAGE: ItemState.SUCCEEDED,
    OutcomeKind.BLOCKED: ItemState.BLOCKED,
    OutcomeKind.NO_IMAGE: ItemState.FAILED,
    OutcomeKind.ERROR: ItemState.FAILED,
    OutcomeKind.MALFORMED: ItemState.FAILED,
}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    image_output_tokens: int
    text_output_tokens: int
    thought_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class Outcome:
    key: str | None
    kind: OutcomeKind
    image: bytes | None
    mime_type: str | None
    text: str | None
    finish_reason: str | None
    # promptFeedback.blockReason, or for a candidate stopped by policy its finishReason.
    block_reason: str | None
    error_code: int | None
    # For ERROR the provider's message; for MALFORMED what was wrong with the row.
    error_message: str | None
    retryable: bool
    usage: Usage | None
    # Canonical status name for errors (INTERNAL, INVALID_ARGUMENT...), when known.
    error_status: str | None = None
    prompt_blocked: bool = False

    def item_state(self) -> ItemState:
        return _ITEM_STATE[self.kind]

    def reason(self) -> str | None:
        """One human line saying why there is no image; None for an image."""
        kind = self.kind
        if kind is OutcomeKind.IMAGE:
            return None
        if kind is OutcomeKind.BLOCKED:
            where = "promptFeedback.blockReason" if self.prompt_blocked else "finishReason"
            return f"blocked: {where} {self.block_reason}{_quoted(self.text)}"
        if kind is OutcomeKind.NO_IMAGE:
            finish = f"finishReason {self.finish_reason}" if self.finish_reason else "no candidate"
            return f"no image: {finish}{_quoted(self.text)}"
        if kind is OutcomeKind.ERROR:
            head = " ".join(
                str(p) for p in ("error", self.error_code, self.error_status) if p is not None
            )
            return f"{head}: {self.error_message}" if self.error_message else head
        return f"malformed result: {self.error_message}"


def _quoted(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return f' ("{flat[:197]}...")' if len(flat) > 200 else f' ("{flat}")'


def _outcome(
    key: str | None,
    kind: OutcomeKind,
    *,
    retryable: bool,
    image: bytes | None = None,
    mime_type: str | None = None,
    text: str | None = None,
    finish_reason: str | None = None,
    block_reason: str | None = None,
    error_code: int | None = None,
    error_message: str | None = None,
    error_status: str | None = None,
    usage: Usage | None = None,
    prompt_blocked: bool = False,
) -> Outcome:
    return Outcome(
        key=key,
        kind=kind,
        image=image,
        mime_type=mime_type,
        text=text,
        finish_reason=finish_reason,
        block_reason=block_reason,
        error_code=error_code,
        error_message=error_message,
        retryable=retryable,
        usage=usage,
        error_status=error_status,
        prompt_blocked=prompt_blocked,
    )


def _malformed(key: str | None, why: str, usage: Usage | None = None) -> Outcome:
    # Retryable: nothing usable came back and nothing says a retry would fail the same way;
    # the collector bounds retries by attempt count.
    return _outcome(key, OutcomeKind.MALFORMED, retryable=True, error_message=why, usage=usage)


# --- entry points ----------------------------------------------------------------------


def classify_row(row: Mapping[str, Any]) -> Outcome:
    """Classify one decoded result row (file line or inlined response)."""
    if not isinstance(row, Mapping):
        return _malformed(None, f"expected an object; found {type(row).__name__}")
    key = _row_key(row)
    response = row.get("response")
    for field in ("error", "status"):
        if field not in row:
            continue
        failure = row_failure(row[field])
        if failure is None:
            continue
        if isinstance(failure, str):
            return _malformed(key, f'unreadable "{field}" field: {failure}')
        code, status, message = failure
        usage = (
            usage_from_metadata(_get(response, "usageMetadata", "usage_metadata"))
            if isinstance(response, Mapping)
            else None
        )
        return _outcome(
            key,
            OutcomeKind.ERROR,
            retryable=is_retryable(code, status),
            error_code=code,
            error_status=status,
            error_message=message,
            usage=usage,
        )
    if response is None:
        return _malformed(key, 'the row has neither "response" nor "error"/"status"')
    if not isinstance(response, Mapping):
        return _malformed(key, f'"response": expected an object; found {type(response).__name__}')
    return _classify_response(key, response)


def usage_from_metadata(usage_metadata: Mapping[str, Any] | None) -> Usage | None:
    """Token counts from usageMetadata; image tokens from the IMAGE modality entry."""
    if not isinstance(usage_metadata, Mapping):
        return None
    prompt = _count(_get(usage_metadata, "promptTokenCount", "prompt_token_count"))
    thoughts = _count(_get(usage_metadata, "thoughtsTokenCount", "thoughts_token_count"))
    details = _get(usage_metadata, "candidatesTokensDetails", "candidates_tokens_details")
    image = 0
    detail_sum = 0
    if isinstance(details, list):
        for entry in details:
            if not isinstance(entry, Mapping):
                continue
            tokens = _count(_get(entry, "tokenCount", "token_count"))
            detail_sum += tokens
            modality = entry.get("modality")
            if isinstance(modality, str) and modality.upper() == "IMAGE":
                image += tokens
    raw_candidates = _get(usage_metadata, "candidatesTokenCount", "candidates_token_count")
    candidates = _count(raw_candidates) if raw_candidates is not None else detail_sum
    total_raw = _get(usage_metadata, "totalTokenCount", "total_token_count")
    total = _count(total_raw) if total_raw is not None else prompt + candidates + thoughts
    return Usage(
        prompt_tokens=prompt,
        image_output_tokens=image,
        text_output_tokens=max(0, candidates - image),
        thought_tokens=thoughts,
        total_tokens=total,
    )


# --- responses -------------------------------------------------------------------------


def _classify_response(key: str | None, response: Mapping[str, Any]) -> Outcome:
    usage = usage_from_metadata(_get(response, "usageMetadata", "usage_metadata"))
    feedback = _get(response, "promptFeedback", "prompt_feedback")
    prompt_block = _get(feedback, "blockReason", "block_reason") if feedback else None
    if not isinstance(prompt_block, str) or not prompt_block:
        prompt_block = None
    picked = _pick_candidate(response.get("candidates"))
    if isinstance(picked, str):
        return _malformed(key, picked, usage)
    chosen, found, texts = picked
    text = "\n".join(texts)[:TEXT_KEEP_CHARS] or None
    finish = _enum_text(chosen.get("finishReason", chosen.get("finish_reason"))) if chosen else None
    if found is not None:
        data, mime = found
        image = b64.decode(data)
        if image is None:
            return _malformed(key, "the image data is not valid base64", usage)
        mime = mime or _sniff(image)
        if mime is not None and image:
            return _outcome(
                key,
                OutcomeKind.IMAGE,
                retryable=False,
                image=image,
                mime_type=mime,
                text=text,
                finish_reason=finish,
                usage=usage,
            )
    if prompt_block is not None or finish in BLOCK_FINISH_REASONS:
        return _outcome(
            key,
            OutcomeKind.BLOCKED,
            retryable=False,
            text=text,
            finish_reason=finish,
            block_reason=prompt_block if prompt_block is not None else finish,
            usage=usage,
            prompt_blocked=prompt_block is not None,
        )
    # No finish reason at all (or an unspecified one) says nothing against a retry either.
    retryable = finish is None or finish in RETRY_FINISH_REASONS or finish.endswith("UNSPECIFIED")
    return _outcome(
        key, OutcomeKind.NO_IMAGE, retryable=retryable, text=text, finish_reason=finish, usage=usage
    )


# (base64 data, mime type if given) of a candidate's image part. The data is a str, or a
# memoryview of the line's ASCII bytes when providers/_lines.py lifted it (the same text).
_Image = tuple[str | memoryview, str | None]


def _pick_candidate(
    candidates: Any,
) -> tuple[Mapping[str, Any] | None, _Image | None, list[str]] | str:
    """The candidate that speaks for the row (the first with an image, else the first),
    its image and its texts; or why the candidates cannot be read."""
    if candidates is None:
        candidates = []
    if not isinstance(candidates, list):
        return '"candidates": expected a list'
    chosen: Mapping[str, Any] | None = None
    found: _Image | None = None
    texts: list[str] = []
    for candidate in candidates:
        if not isinstance(candidate, Mapping):
            return '"candidates": expected a list of objects'
        read = _read_parts(candidate)
        if isinstance(read, str):
            return read
        if chosen is None or (found is None and read[1] is not None):
            chosen, (texts, found) = candidate, read
        if found is not None:
            break
    return chosen, found, texts


def _read_parts(candidate: Mapping[str, Any]) -> tuple[list[str], _Image | None] | str:
    """A candidate's texts and its image; or why its parts cannot be read."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if parts is None:
        parts = []
    if not isinstance(parts, list):
        return '"content.parts": expected a list'
    texts: list[str] = []
    image: _Image | None = None
    for part in parts:
        if not isinstance(part, Mapping) or part.get("thought") is True:
            continue  # interim "thought" images are not the deliverable
        text = part.get("text")
        if isinstance(text, str) and text:
            texts.append(text)
        # The last one: a model that forgets to mark interim images as thoughts still ends
        # with its final image.
        image = _inline_image(part) or image
    return texts, image


def _inline_image(part: Mapping[str, Any]) -> _Image | None:
    inline = _get(part, "inlineData", "inline_data")
    if not isinstance(inline, Mapping):
        return None
    data = inline.get("data")
    mime = _get(inline, "mimeType", "mime_type")
    mime = mime.lower() if isinstance(mime, str) and mime else None
    if isinstance(data, str | memoryview) and data and (mime is None or mime.startswith("image/")):
        return data, mime
    return None


def _sniff(image: bytes) -> str | None:
    for signature, mime in _IMAGE_SIGNATURES:
        if image.startswith(signature):
            return mime
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return None


# --- small readers -----------------------------------------------------------------------


def _row_key(row: Mapping[str, Any]) -> str | None:
    key = row.get("key")
    if key is None:
        # Inlined responses carry the key in metadata (reference §5).
        metadata = row.get("metadata")
        key = metadata.get("key") if isinstance(metadata, Mapping) else None
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return None


def _get(mapping: Any, camel: str, snake: str) -> Any:
    if not isinstance(mapping, Mapping):
        return None
    value = mapping.get(camel)
    return value if value is not None else mapping.get(snake)


def _count(value: Any) -> int:
    """int64 fields arrive as JSON numbers or strings; anything unreadable counts as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return max(0, int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0


def _enum_text(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) and value else None
