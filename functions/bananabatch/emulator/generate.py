"""What the emulated model answers for one GenerateContentRequest. Pure except for the
injected renderer.

Token counts are deterministic functions of the request, exposed so tests can predict a
job's exact cost: `usage_for` gives the usageMetadata a successful image row carries.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bananabatch.core.catalog import ModelSpec, effective_size, model_spec
from bananabatch.emulator.faults import RowFault
from bananabatch.emulator.render import BROKEN_KINDS, broken_png, render_png, vary_png

Json = dict[str, Any]
Renderer = Callable[[str, str | None, str | None], bytes]
# Says why the service could not read a fileData URI: (gRPC code, message), or None.
UriCheck = Callable[[str], tuple[int, str] | None]

# Input image tokens per reference image (Gemini 3 pricing: "input image = 560 tokens").
INPUT_IMAGE_TOKENS = 560

# gRPC canonical codes used in row errors (reference §4.4).
INVALID_ARGUMENT = 3

_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    return _SNAKE.sub("_", name).lower()


def pick(obj: Mapping[str, Any] | None, camel: str, default: Any = None) -> Any:
    """A field by its camelCase name or its snake_case twin: the service accepts both."""
    if not isinstance(obj, Mapping):
        return default
    if camel in obj:
        return obj[camel]
    return obj.get(snake(camel), default)


class RequestInvalid(ValueError):
    """The request cannot be served; becomes a code 3 row error (or a 400 when synchronous)."""

    def __init__(self, message: str, code: int = INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code


def file_uris(request: Any) -> list[str]:
    """Every fileData URI of a request, in either case, in every content."""
    uris: list[str] = []
    contents = pick(request, "contents") if isinstance(request, Mapping) else None
    if isinstance(contents, Mapping):
        contents = [contents]
    for content in contents if isinstance(contents, list) else []:
        parts = pick(content, "parts") if isinstance(content, Mapping) else None
        for part in parts if isinstance(parts, list) else []:
            data = pick(part, "fileData") if isinstance(part, Mapping) else None
            uri = pick(data, "fileUri") if isinstance(data, Mapping) else None
            if isinstance(uri, str):
                uris.append(uri)
    return uris


@dataclass(frozen=True)
class ImageRequest:
    """The parts of a GenerateContentRequest the emulator acts on."""

    prompt: str
    aspect_ratio: str
    image_size: str
    want_text: bool
    want_image: bool
    input_images: int
    # generationConfig.seed: a seeded request's image varies with it (render.vary_png).
    seed: int | None = None


def parse_request(
    spec: ModelSpec, request: Any, *, batch_model: str, check_uri: UriCheck | None = None
) -> ImageRequest:
    """Validate a request against the model's catalog entry. Raises RequestInvalid.

    Every fileData URI goes through check_uri first, as the service reads every reference
    before generating: a row never succeeds on a reference that cannot be read."""
    if not isinstance(request, Mapping):
        raise RequestInvalid(f"request must be a JSON object, found {type(request).__name__}")
    if check_uri is not None:
        _check_references(request, check_uri)
    line_model = pick(request, "model")
    if line_model and model_spec(str(line_model)) is not spec:
        raise RequestInvalid(
            f"request.model {line_model!r} does not match the batch model {batch_model!r}"
        )
    prompt, images = _prompt_and_images(request)
    config = pick(request, "generationConfig") or {}
    modalities = [str(m).upper() for m in pick(config, "responseModalities") or ["TEXT", "IMAGE"]]
    ratio, size = _image_options(spec, pick(config, "imageConfig") or {})
    return ImageRequest(
        prompt=prompt,
        aspect_ratio=str(ratio),
        image_size=effective_size(spec, size),
        want_text="TEXT" in modalities,
        want_image="IMAGE" in modalities,
        input_images=images,
        seed=_seed(config),
    )


def _seed(config: Any) -> int | None:
    seed = pick(config, "seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _check_references(request: Mapping[str, Any], check_uri: UriCheck) -> None:
    for uri in file_uris(request):
        problem = check_uri(uri)
        if problem is not None:
            raise RequestInvalid(problem[1], problem[0])


def _prompt_and_images(request: Mapping[str, Any]) -> tuple[str, int]:
    """The user's text, joined, and how many image parts (inline or by URI) came with it."""
    contents = pick(request, "contents")
    if isinstance(contents, Mapping):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise RequestInvalid("contents is not specified")
    texts: list[str] = []
    images = 0
    for part in _user_parts(contents):
        if isinstance(pick(part, "text"), str):
            texts.append(part_text(part))
        elif pick(part, "inlineData") is not None or pick(part, "fileData") is not None:
            images += 1
    prompt = "\n".join(texts).strip()
    if not prompt and not images:
        raise RequestInvalid("contents has no text and no image")
    return prompt, images


def _user_parts(contents: list[Any]) -> Iterator[Mapping[str, Any]]:
    for content in contents:
        if not isinstance(content, Mapping):
            raise RequestInvalid("each item of contents must be an object")
        if pick(content, "role", "user") != "user":
            continue
        for part in pick(content, "parts") or []:
            if not isinstance(part, Mapping):
                raise RequestInvalid("each part must be an object")
            yield part


def _image_options(spec: ModelSpec, image_config: Any) -> tuple[Any, Any]:
    """The requested aspect ratio and image size, checked against the model's."""
    ratio = pick(image_config, "aspectRatio") or "1:1"
    if ratio not in spec.aspect_ratios:
        raise RequestInvalid(
            f"generationConfig.imageConfig.aspectRatio {ratio!r} is not supported by "
            f"{spec.model_id}; expected one of {', '.join(spec.aspect_ratios)}"
        )
    size = pick(image_config, "imageSize")
    # Models with a single size ignore imageSize (reference §8.1 leaves reject-or-ignore open).
    if size is not None and spec.image_sizes and size not in spec.image_sizes:
        raise RequestInvalid(
            f"generationConfig.imageConfig.imageSize {size!r} is not supported by "
            f"{spec.model_id}; expected one of {', '.join(spec.image_sizes)}"
        )
    return ratio, size


def generate_text(model_id: str, request: Any, *, rid: str = "") -> RowOutcome:
    """A text model's answer: one text part, usage counted as for the image models."""
    if not isinstance(request, Mapping):
        return RowOutcome(error={"code": INVALID_ARGUMENT, "message": "request must be an object"})
    contents = pick(request, "contents")
    if isinstance(contents, Mapping):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        return RowOutcome(error={"code": INVALID_ARGUMENT, "message": "contents is not specified"})
    texts = [
        part_text(part)
        for content in contents
        if isinstance(content, Mapping)
        for part in pick(content, "parts") or []
        if isinstance(part, Mapping)
    ]
    prompt = "\n".join(t for t in texts if t).strip()
    if not prompt:
        return RowOutcome(error={"code": INVALID_ARGUMENT, "message": "contents has no text"})
    answer = f"An answer to: {prompt[:80]}"
    prompt_count, output = prompt_tokens(prompt), math.ceil(len(answer) / 4)
    usage: Json = {
        "promptTokenCount": prompt_count,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt_count + output,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_count}],
    }
    candidate = {
        "content": {"role": "model", "parts": [{"text": answer}]},
        "finishReason": "STOP",
        "index": 0,
    }
    return RowOutcome(
        response={
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model_id,
            "responseId": rid or response_id(model_id, prompt),
        }
    )


def part_text(part: Mapping[str, Any]) -> str:
    text = pick(part, "text")
    return text if isinstance(text, str) else ""


# --- deterministic token counts ----------------------------------------------------------


def prompt_tokens(prompt: str) -> int:
    return math.ceil(len(prompt) / 4)


def reply_text(prompt: str) -> str:
    """The text part that accompanies an image."""
    return f"Here is an image for: {prompt[:80]}"


def text_output_tokens(prompt: str) -> int:
    return math.ceil(len(reply_text(prompt)) / 4)


def thinks(spec: ModelSpec) -> bool:
    return spec.thinks


def thought_tokens(prompt: str) -> int:
    """Gemini 3 image models always think; the count varies a little with the prompt."""
    return 100 + zlib.crc32(prompt.encode("utf-8")) % 157


def image_output_tokens(spec: ModelSpec, image_size: str) -> int:
    return spec.image_tokens[effective_size(spec, image_size)]


def usage_for(spec: ModelSpec, req: ImageRequest, *, image: bool = True) -> Json:
    """usageMetadata for a row, exactly as the emulator reports it."""
    prompt = prompt_tokens(req.prompt)
    prompt_details = [{"modality": "TEXT", "tokenCount": prompt}]
    if req.input_images:
        prompt_details.append(
            {"modality": "IMAGE", "tokenCount": req.input_images * INPUT_IMAGE_TOKENS}
        )
        prompt += req.input_images * INPUT_IMAGE_TOKENS
    text = text_output_tokens(req.prompt) if req.want_text or not image else 0
    image_tokens = image_output_tokens(spec, req.image_size) if image else 0
    thoughts = thought_tokens(req.prompt) if thinks(spec) else 0
    details: list[Json] = []
    if text:
        details.append({"modality": "TEXT", "tokenCount": text})
    if image_tokens:
        details.append({"modality": "IMAGE", "tokenCount": image_tokens})
    usage: Json = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": text + image_tokens,
        "totalTokenCount": prompt + text + image_tokens + thoughts,
        "promptTokensDetails": prompt_details,
        "candidatesTokensDetails": details,
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


# --- responses ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RowOutcome:
    """Either a GenerateContentResponse or a google.rpc.Status-like error."""

    response: Json | None = None
    error: Json | None = None


def response_id(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:22]


def generate(
    model: str,
    request: Any,
    *,
    fault: RowFault | None = None,
    rid: str = "",
    render: Renderer = render_png,
    check_uri: UriCheck | None = None,
) -> RowOutcome:
    """The outcome of one request for `model` (`models/<id>` or a bare id)."""
    model_id = model.removeprefix("models/")
    spec = model_spec(model_id)
    if fault is not None and fault.kind == "error":
        return RowOutcome(error={"code": fault.code, "message": fault.message})
    if spec is None:
        # Not an image model of the catalog: the caller served it as a text model (the
        # service runs text batches too).
        return generate_text(model_id, request, rid=rid)
    try:
        req = parse_request(spec, request, batch_model=model, check_uri=check_uri)
    except RequestInvalid as exc:
        return RowOutcome(error={"code": exc.code, "message": str(exc)})
    base: Json = {"modelVersion": model_id, "responseId": rid or response_id(model_id, req.prompt)}

    if fault is not None and fault.kind == "prompt_blocked":
        prompt = prompt_tokens(req.prompt)
        usage: Json = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        return RowOutcome(
            response={"promptFeedback": {"blockReason": fault.block_reason}, "usageMetadata": usage}
            | base
        )
    if fault is not None and fault.kind == "image_safety":
        usage = usage_for(spec, req, image=False)
        usage["candidatesTokenCount"] = 0
        usage["candidatesTokensDetails"] = []
        usage["totalTokenCount"] = usage["promptTokenCount"] + usage.get("thoughtsTokenCount", 0)
        candidate = {"finishReason": "IMAGE_SAFETY", "index": 0}
        return RowOutcome(response={"candidates": [candidate], "usageMetadata": usage} | base)
    if (fault is not None and fault.kind == "no_image") or not req.want_image:
        text = (
            "I could not create an image for that request."
            if req.want_image
            else reply_text(req.prompt)
        )
        candidate = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "finishReason": "NO_IMAGE" if req.want_image else "STOP",
            "index": 0,
        }
        usage = usage_for(spec, req, image=False)
        return RowOutcome(response={"candidates": [candidate], "usageMetadata": usage} | base)

    if fault is not None and fault.kind in BROKEN_KINDS:
        png = broken_png(fault.kind, req.prompt, req.aspect_ratio, req.image_size, render)
    else:
        png = render(req.prompt, req.aspect_ratio, req.image_size)
        if req.seed is not None:
            png = vary_png(png, req.seed)
    parts: list[Json] = []
    if req.want_text:
        parts.append({"text": reply_text(req.prompt)})
    parts.append(
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode("ascii")}}
    )
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
    return RowOutcome(
        response={"candidates": [candidate], "usageMetadata": usage_for(spec, req)} | base
    )
