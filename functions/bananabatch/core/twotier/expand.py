"""A two-tier file's lines turned into stage one's draft lines, and what stage two needs of
each line kept apart. Pure.

Each line of the file becomes `candidates` native lines for the draft model, keyed
`K~c1..K~cN`, identical but for `generationConfig.seed` (the candidate number): distinct
requests, so in-file dedup keeps them apart while a resubmitted file still finds its drafts
in the cache. The line itself (prompt, ratio, size, reference images, metadata, keep) is kept
as a TierLine for stage two, which asks the final model with the original prompt.

What intake would reject anyway (not JSON, not an object, no prompt) is passed through
unchanged, once, for intake to say why. What only a two-tier file refuses (a `~` in the key,
a bad `candidates` or `keep`) is refused here, with the line number and field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bananabatch.core.catalog import model_spec
from bananabatch.core.intake.model import line_key
from bananabatch.core.intake.request import RESPONSE_MODALITIES
from bananabatch.core.twotier.spec import MAX_CANDIDATES, TwoTierSpec, candidate_key

# A reference image's type from its name; the service reads the bytes anyway.
_MIME_BY_SUFFIX: Final = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
_TIER_FIELDS: Final = ("candidates", "keep")


@dataclass(frozen=True, slots=True)
class TierLine:
    """One line of a two-tier file, as stage two needs it."""

    key: str
    line_no: int
    candidates: int
    keep: int
    # The request stage two sends, without the candidate image: the line's own request
    # (simple lines: built from prompt, ratio, size and references), model removed.
    request: dict[str, Any]
    aspect_ratio: str | None = None
    image_size: str | None = None
    prompt_preview: str = ""
    template: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "line_no": self.line_no,
                "candidates": self.candidates,
                "keep": self.keep,
                "request": self.request,
                "aspect_ratio": self.aspect_ratio,
                "image_size": self.image_size,
                "prompt_preview": self.prompt_preview,
                "template": self.template,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TierLine:
        doc = json.loads(text)
        return cls(**doc)


@dataclass(frozen=True, slots=True)
class Refused:
    line_no: int
    key: str | None
    field: str
    message: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "line": self.line_no,
                "key": self.key,
                "field": self.field,
                "reason": f'line {self.line_no}, field "{self.field}": {self.message}',
            },
            ensure_ascii=False,
        )


@dataclass(frozen=True, slots=True)
class Expanded:
    line: TierLine
    drafts: tuple[str, ...]  # JSON lines, without newlines


def expand_line(raw: str, line_no: int, spec: TwoTierSpec) -> Expanded | Refused | str:
    """The draft lines of one input line; the line itself (str) when intake should judge it;
    or the refusal of a line only a two-tier file refuses."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(value, dict):
        return raw
    line: dict[str, Any] = value
    key = line.get("key")
    if key is None:
        key = line_key(line_no)
    if not isinstance(key, str):
        return raw
    counts = _tier_counts(line, line_no, key, spec)
    if isinstance(counts, Refused):
        return counts
    base = {k: v for k, v in line.items() if k not in _TIER_FIELDS}
    built = _line_request(base)
    if built is None:
        return raw
    request, prompt, aspect, size = built
    candidates, keep = counts
    template = spec.template
    metadata = line.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("template"), str):
        template = metadata["template"]
    return Expanded(
        TierLine(
            key=key,
            line_no=line_no,
            candidates=candidates,
            keep=keep,
            request=request,
            aspect_ratio=aspect,
            image_size=size,
            prompt_preview=" ".join(prompt.split())[:120],
            template=template,
        ),
        tuple(_draft_line(base, key, n, request, spec) for n in range(1, candidates + 1)),
    )


def _tier_counts(
    line: Mapping[str, Any], line_no: int, key: str, spec: TwoTierSpec
) -> tuple[int, int] | Refused:
    if "~" in key:
        return Refused(line_no, key, "key", '"~" is kept for candidate keys in a two-tier file')
    if "model" in line:
        return Refused(
            line_no,
            key,
            "model",
            "a two-tier line takes its models from the header (draft_model, final_model)",
        )
    counts: list[int] = []
    for name, default in (("candidates", spec.candidates), ("keep", spec.keep)):
        given = line.get(name, default)
        if (
            isinstance(given, bool)
            or not isinstance(given, int)
            or not 1 <= given <= MAX_CANDIDATES
        ):
            return Refused(
                line_no,
                key,
                name,
                f"expected an integer from 1 to {MAX_CANDIDATES}; found {given!r}",
            )
        counts.append(given)
    candidates, keep = counts
    if keep > candidates and spec.selection == "auto":
        return Refused(
            line_no,
            key,
            "keep",
            f"keeps {keep} of {candidates} candidates: expected at most as many as there are "
            "candidates",
        )
    return candidates, keep


def _line_request(
    base: Mapping[str, Any],
) -> tuple[dict[str, Any], str, str | None, str | None] | None:
    """The line's request for the final model (no model in it), its prompt, ratio and size;
    None when the line is not one intake would accept in its shape."""
    if "request" in base:
        given = base.get("request")
        if not isinstance(given, dict):
            return None
        request = {k: v for k, v in given.items() if k != "model"}
        prompt = _request_text(request)
        image = _image_config(request)
        aspect, size = image.get("aspectRatio"), image.get("imageSize")
    else:
        given_prompt = base.get("prompt")
        references = base.get("reference_images") or []
        if not isinstance(given_prompt, str) or not isinstance(references, list):
            return None
        prompt = given_prompt
        if not all(isinstance(r, str) for r in references):
            return None
        aspect, size = base.get("aspect_ratio"), base.get("image_size")
        request = _simple_request(prompt, aspect, size, references)
    if not (aspect is None or isinstance(aspect, str)):
        return None
    if not (size is None or isinstance(size, str)):
        return None
    return request, prompt, aspect, size


def more_drafts(
    line: TierLine, numbers: range, spec: TwoTierSpec
) -> list[tuple[str, dict[str, Any]]]:
    """(key, request) of further candidates of a line (a regeneration round)."""
    return [(candidate_key(line.key, n), draft_request(line.request, n, spec)) for n in numbers]


def draft_request(request: Mapping[str, Any], n: int, spec: TwoTierSpec) -> dict[str, Any]:
    """The line's request for the draft model, as candidate n: its seed is n, and an image
    size the draft model does not offer is left to the model's default."""
    draft: dict[str, Any] = json.loads(json.dumps(request))
    config = draft.setdefault("generationConfig", {})
    config["seed"] = n
    image = config.get("imageConfig")
    draft_spec = model_spec(spec.draft_model)
    if (
        isinstance(image, dict)
        and "imageSize" in image
        and (draft_spec is None or image["imageSize"] not in draft_spec.image_sizes)
    ):
        del image["imageSize"]
    return draft


def _draft_line(
    base: Mapping[str, Any], key: str, n: int, request: Mapping[str, Any], spec: TwoTierSpec
) -> str:
    line: dict[str, Any] = {
        "key": candidate_key(key, n),
        "model": spec.draft_model,
        "request": draft_request(request, n, spec),
    }
    for name in ("metadata", "cache"):
        if name in base:
            line[name] = base[name]
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def _simple_request(
    prompt: str, aspect: object, size: object, references: list[str]
) -> dict[str, Any]:
    generation: dict[str, Any] = {"responseModalities": list(RESPONSE_MODALITIES)}
    image: dict[str, Any] = {}
    if aspect is not None:
        image["aspectRatio"] = aspect
    if size is not None:
        image["imageSize"] = size
    if image:
        generation["imageConfig"] = image
    parts: list[dict[str, Any]] = [{"text": prompt}]
    for uri in references:
        suffix = uri[uri.rfind(".") :].lower() if "." in uri.rsplit("/", 1)[-1] else ""
        mime = _MIME_BY_SUFFIX.get(suffix, "image/png")
        parts.append({"fileData": {"fileUri": uri, "mimeType": mime}})
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": generation}


def _request_text(request: Mapping[str, Any]) -> str:
    texts: list[str] = []
    contents = request.get("contents")
    if isinstance(contents, list):
        for content in contents:
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return "\n".join(texts)


def _image_config(request: Mapping[str, Any]) -> dict[str, Any]:
    config = request.get("generationConfig")
    image = config.get("imageConfig") if isinstance(config, dict) else None
    return image if isinstance(image, dict) else {}


def final_request(line: TierLine, image_b64: str, mime_type: str) -> dict[str, Any]:
    """Stage two's request: the line's own request with the candidate image added to its
    user turn as the reference (the prompt is the original one)."""
    request: dict[str, Any] = json.loads(json.dumps(line.request))
    given = request.get("contents")
    contents: list[Any] = (
        [given] if isinstance(given, dict) else given if isinstance(given, list) else []
    )
    request["contents"] = contents
    user = next(
        (c for c in reversed(contents) if isinstance(c, dict) and c.get("role", "user") == "user"),
        None,
    )
    if user is None:
        user = {"role": "user", "parts": []}
        contents.append(user)
    user.setdefault("parts", []).append({"inlineData": {"mimeType": mime_type, "data": image_b64}})
    return request
