"""What the emulated Images API answers for one batch request line. Pure except for the
renderer.

The answer is (HTTP status, body), as a batch output line carries it. Validation follows
the Images API reference for GPT image models; what is not documented first-hand is marked:
the sizes gpt-image-2 takes ("any valid resolution", edges multiples of 16, up to 3840) come
from third parties (UNVERIFIED), as do the token counts per quality, which are derived from
the field sheet's per-image prices at $30 / 1M output tokens (§3.2, ARITHMETIC).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bananabatch.emulator.faults import RowFault
from bananabatch.emulator.openai.render import FORMATS, render

Json = dict[str, Any]
Renderer = Callable[[str, int, int, str], bytes]

GENERATIONS: Final = "/v1/images/generations"
EDITS: Final = "/v1/images/edits"
# Models the emulator serves for image batches, and those it answers as shut down.
SERVED_MODELS: Final = frozenset(
    {
        "gpt-image-2",
        "gpt-image-2-2026-04-21",
        "gpt-image-1.5",
        "gpt-image-1-mini",
        "gpt-image-2.5-sunburst",
        "gpt-image-2.5-flare",
    }
)
SHUT_DOWN: Final = {"gpt-image-1": "2026-10-23", "dall-e-2": "2026-05-12", "dall-e-3": "2026-05-12"}
QUALITIES: Final = ("low", "medium", "high", "auto")
MAX_EDGE: Final = 3840
MIN_EDGE: Final = 256
MAX_RATIO: Final = 3.0
MAX_PROMPT_CHARS: Final = 32_000
# Output image tokens at 1024x1024 per quality ("auto" is medium), scaled by pixel area.
TOKENS_1K: Final = {"low": 200, "medium": 1767, "high": 7033, "auto": 1767}
INPUT_IMAGE_TOKENS: Final = 323
_SIZE: Final = re.compile(r"^(\d{2,5})x(\d{2,5})$")

REFUSAL_MESSAGE: Final = (
    "Your request was rejected as a result of our safety system. Your request may contain "
    "content that is not allowed by our safety system."
)
# gRPC codes a FaultPlan row error may carry, as the HTTP status OpenAI would answer.
_HTTP_OF_GRPC: Final = {3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 13: 500, 14: 503, 16: 401}


@dataclass(frozen=True)
class Answer:
    status: int
    body: Json

    @property
    def ok(self) -> bool:
        return self.status == 200


def error(
    status: int, message: str, code: str | None, kind: str, param: str | None = None
) -> Answer:
    return Answer(
        status, {"error": {"message": message, "type": kind, "param": param, "code": code}}
    )


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> Answer:
    return error(400, message, code, "invalid_request_error", param)


def dimensions(size: Any) -> tuple[int, int] | str:
    """(width, height) of a size value, or why it is refused."""
    if size is None or size == "auto":
        return 1024, 1024
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        return f"Invalid size {size!r}: expected 'auto' or WIDTHxHEIGHT"
    width, height = int(match.group(1)), int(match.group(2))
    if width % 16 or height % 16:
        return f"Invalid size {size!r}: width and height must be multiples of 16"
    if not (min(width, height) >= MIN_EDGE and max(width, height) <= MAX_EDGE):
        return f"Invalid size {size!r}: edges must be between {MIN_EDGE} and {MAX_EDGE} pixels"
    if max(width, height) / min(width, height) > MAX_RATIO:
        return f"Invalid size {size!r}: the aspect ratio must be at most 3:1"
    return width, height


def usage_for(body: Mapping[str, Any]) -> Json:
    """The usage a successful answer to this body reports (deterministic, so tests can
    predict a job's cost)."""
    size = dimensions(body.get("size"))
    width, height = size if isinstance(size, tuple) else (1024, 1024)
    quality = body.get("quality") if body.get("quality") in TOKENS_1K else "auto"
    raw_n = body.get("n")
    n = raw_n if isinstance(raw_n, int) and not isinstance(raw_n, bool) else 1
    # round(), as the catalog rounds its 1.5x sizes (core/catalog_openai.py).
    per_image = round(TOKENS_1K[str(quality)] * width * height / (1024 * 1024))
    text = math.ceil(len(str(body.get("prompt") or "")) / 4)
    images = INPUT_IMAGE_TOKENS * len(_input_images(body))
    output = per_image * int(n)
    return {
        "input_tokens": text + images,
        "input_tokens_details": {"text_tokens": text, "image_tokens": images},
        "output_tokens": output,
        "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
        "total_tokens": text + images + output,
    }


def _input_images(body: Mapping[str, Any]) -> list[Any]:
    found: list[Any] = []
    for field in ("images", "image"):
        value = body.get(field)
        if isinstance(value, list):
            found.extend(value)
        elif value:
            found.append(value)
    return found


def answer(
    url: str,
    body: Any,
    *,
    fault: RowFault | None = None,
    created: int = 0,
    renderer: Renderer = render,
) -> Answer:
    """The answer to one request line."""
    if fault is not None and fault.kind == "error":
        status = fault.code if fault.code >= 100 else _HTTP_OF_GRPC.get(fault.code, 500)
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return error(status, fault.message, "server_error" if status >= 500 else None, kind)
    if not isinstance(body, Mapping):
        return invalid("The request body must be a JSON object.", code="invalid_json")
    problem = _problem(url, body)
    if problem is not None:
        return problem
    if fault is not None and fault.kind in ("image_safety", "prompt_blocked"):
        return error(400, REFUSAL_MESSAGE, "moderation_blocked", "image_generation_user_error")
    size = dimensions(body.get("size"))
    assert isinstance(size, tuple)
    output_format = str(body.get("output_format") or "png")
    quality = str(body.get("quality") or "auto")
    n = int(body.get("n") or 1)
    data: list[Json] = []
    if fault is None or fault.kind != "no_image":
        for index in range(n):
            prompt = str(body["prompt"]) + (f" #{index + 1}" if index else "")
            image = renderer(prompt, size[0], size[1], output_format)
            data.append({"b64_json": base64.b64encode(image).decode("ascii")})
    return Answer(
        200,
        {
            "created": created,
            "background": "opaque",
            "data": data,
            "output_format": output_format,
            "quality": "medium" if quality == "auto" else quality,
            "size": f"{size[0]}x{size[1]}",
            "usage": usage_for(body),
        },
    )


def _model_problem(model: Any) -> Answer | None:
    if not isinstance(model, str) or not model:
        return invalid(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if model in SHUT_DOWN:
        return error(
            404,
            f"The model `{model}` was shut down on {SHUT_DOWN[model]}.",
            "model_not_found",
            "invalid_request_error",
            "model",
        )
    if model not in SERVED_MODELS:
        return error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "model_not_found",
            "invalid_request_error",
            "model",
        )
    return None


def _problem(url: str, body: Mapping[str, Any]) -> Answer | None:
    refused = _model_problem(body.get("model"))
    if refused is not None:
        return refused
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        return invalid(f"Invalid 'prompt': string too long (max {MAX_PROMPT_CHARS}).", "prompt")
    size = dimensions(body.get("size"))
    if isinstance(size, str):
        return invalid(size, "size")
    if body.get("quality") is not None and body.get("quality") not in QUALITIES:
        return invalid(f"Invalid 'quality': {body.get('quality')!r}.", "quality")
    output_format = body.get("output_format", "png")
    if output_format not in FORMATS:
        return invalid(f"Invalid 'output_format': {output_format!r}.", "output_format")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        return invalid("Invalid 'n': must be an integer from 1 to 10.", "n")
    images = _input_images(body)
    if url == EDITS and not images:
        return invalid(
            "Missing required parameter: 'images'.", "images", "missing_required_parameter"
        )
    if url == GENERATIONS and images:
        return invalid(
            "Unrecognized request argument supplied: images", "images", "unknown_parameter"
        )
    return None
