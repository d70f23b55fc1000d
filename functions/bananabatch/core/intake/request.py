"""Request building: the request of a simple line (Gemini's REST GenerateContentRequest,
or the body of OpenAI's /v1/images/generations or /v1/images/edits for a gpt-image model),
and the per-shape templates that give the same bytes (its content hash) without building
it per line.

Pure. A simple line's request depends on its model, prompt, reference images and options;
LineShape is everything but the prompt for a line without reference images, so a file of a
million lines builds a handful of shapes and pastes each prompt into its shape's template.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Final

from bananabatch.core.catalog import Provider, provider_of
from bananabatch.core.intake.rules import LineOptions

if TYPE_CHECKING:
    from bananabatch.core.intake.model import JsonObject, JsonValue

# Only image output: the product delivers images, text parts would be billed at the text
# rate for nothing, and a refusal still arrives as a finishReason (IMAGE_SAFETY, NO_IMAGE).
RESPONSE_MODALITIES: Final = ("IMAGE",)

# The prompt placeholder the templates are cut around. It cannot occur in the JSON of a
# model id, ratio or size, so the cut is unambiguous.
PROMPT_SLOT: Final = "\x00bananabatch-prompt\x00"
# json.dumps(..., ensure_ascii=False) encodes every string with exactly this function (the C
# one when available), so pasting its output into a template gives the same bytes.
encode_json_string: Final = encode_basestring

_sha256: Final = hashlib.sha256


# OpenAI Batch runs one endpoint per batch (field-2026-12.md §3.1): a gpt-image line with
# reference images is an edit, any other a generation, and planning keeps them apart.
OPENAI_GENERATIONS: Final = "/v1/images/generations"
OPENAI_EDITS: Final = "/v1/images/edits"


def simple_request(
    prompt: str,
    aspect_ratio: str | None,
    image_size: str | None,
    options: LineOptions,
    reference_parts: tuple[JsonObject, ...] = (),
    *,
    model: str | None = None,
    quality: str | None = None,
    output_format: str | None = None,
) -> JsonObject:
    """The request of a simple line: for a gpt-image `model`, the body OpenAI takes
    (openai_body); otherwise the REST GenerateContentRequest (camelCase, image output
    only). No option changes the request today; one that does is written here."""
    del options  # every option today decides how the line is served, not what is asked
    if model is not None and provider_of(model) is Provider.OPENAI:
        assert image_size is not None, "a gpt-image line's size is resolved at intake"
        return openai_body(model, prompt, image_size, quality, output_format, reference_parts)
    generation: JsonObject = {"responseModalities": list(RESPONSE_MODALITIES)}
    if aspect_ratio is not None or image_size is not None:
        image_config: JsonObject = {}
        if aspect_ratio is not None:
            image_config["aspectRatio"] = aspect_ratio
        if image_size is not None:
            image_config["imageSize"] = image_size
        generation["imageConfig"] = image_config
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}, *reference_parts]}],
        "generationConfig": generation,
    }


def reference_part(uri: str, mime_type: str, *, model: str | None = None) -> JsonObject:
    """The request part of one reference image of a simple line (an entry of the edit
    body's `images` for a gpt-image model)."""
    if model is not None and provider_of(model) is Provider.OPENAI:
        # A gs:// URI is made a signed https URL when the batch is created, as for Gemini.
        return {"image_url": uri}
    return {"fileData": {"fileUri": uri, "mimeType": mime_type}}


def openai_body(
    model: str,
    prompt: str,
    size: str,
    quality: str | None,
    output_format: str | None,
    images: tuple[JsonObject, ...] = (),
) -> JsonObject:
    """The body of one gpt-image request: /v1/images/edits when it has input images,
    /v1/images/generations otherwise (openai_endpoint tells which). One image per
    request; gpt-image models always answer in base64."""
    body: JsonObject = {"model": model, "prompt": prompt, "n": 1, "size": size}
    if quality is not None:
        body["quality"] = quality
    if output_format is not None:
        body["output_format"] = output_format
    if images:
        body["images"] = list(images)
    return body


def openai_endpoint(body: Mapping[str, object]) -> str:
    """The OpenAI endpoint a gpt-image request body is for."""
    return OPENAI_EDITS if body.get("images") else OPENAI_GENERATIONS


def openai_batch_line(key: str, body: Mapping[str, object]) -> dict[str, object]:
    """One line of an OpenAI Batch input file (field-2026-12.md §3.1): the item key is
    the custom_id, by which result lines are matched (their order is not guaranteed)."""
    return {"custom_id": key, "method": "POST", "url": openai_endpoint(body), "body": dict(body)}


def canonical_json(value: JsonValue) -> str:
    """The JSON a content hash is taken of: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class LineShape:
    """Everything a simple line without reference images shares with the other lines
    written with the same options. A file has a handful of shapes, so per-line work that
    depends only on these (prices, templates, expected output size) is done once per shape.
    The parser interns shapes: one object per distinct shape, so identity is equality."""

    __slots__ = (
        "aspect_ratio",
        "hash_close",
        "hash_head",
        "hash_open",
        "hash_tail",
        "image_size",
        "model",
        "options",
        "output_format",
        "quality",
    )

    def __init__(
        self,
        model: str,
        aspect_ratio: str | None,
        image_size: str | None,
        options: LineOptions,
        quality: str | None = None,
        output_format: str | None = None,
    ) -> None:
        self.model = model
        self.aspect_ratio = aspect_ratio
        self.image_size = image_size
        self.options = options
        self.quality = quality
        self.output_format = output_format
        # content_hash's input, cut around the prompt (see content_hash).
        canonical = canonical_json(self.request(PROMPT_SLOT))
        head, slot, tail = canonical.partition(encode_json_string(PROMPT_SLOT))
        if not slot or encode_json_string(PROMPT_SLOT) in tail:
            raise AssertionError(f"prompt slot not found exactly once in {canonical!r}")
        self.hash_head = f"{model}\n{head}"
        self.hash_tail = tail
        # sha256 fed with the head up to the prompt's opening quote, to copy for a prompt
        # that needs no escaping (intake hashes a million lines of one shape), and the rest.
        self.hash_open = _sha256(f'{self.hash_head}"'.encode())
        self.hash_close = f'"{tail}'.encode()

    @property
    def cache(self) -> bool:
        return self.options.cache

    @property
    def priority(self) -> str:
        return self.options.priority

    @property
    def allow_third_party(self) -> bool:
        return self.options.allow_third_party

    def request(self, prompt: str) -> JsonObject:
        return simple_request(
            prompt,
            self.aspect_ratio,
            self.image_size,
            self.options,
            model=self.model,
            quality=self.quality,
            output_format=self.output_format,
        )

    def content_hash(self, encoded_prompt: str) -> str:
        """content_hash of a line of this shape, from its prompt as a JSON string literal."""
        return _sha256((self.hash_head + encoded_prompt + self.hash_tail).encode()).hexdigest()

    def __repr__(self) -> str:
        return (
            f"LineShape({self.model!r}, {self.aspect_ratio!r}, {self.image_size!r}, "
            f"{self.options!r}, {self.quality!r}, {self.output_format!r})"
        )
