"""The native form's allowlist: which fields of a GenerateContentRequest an input line may
carry, and the walk that holds a request to it.

Pure. Only what the product understands and prices passes: contents of text, inline-image
and file-image parts, the generation options for images, a system instruction (built of the
same parts) and safety settings. Anything else (`tools`, `toolConfig`, `cachedContent`,
`candidateCount`, `thinkingConfig`, `labels`, any unknown key) would be passed to the
provider unpriced, so it is refused with a reason naming the field. Field names are taken in
either REST spelling (camelCase or snake_case), as the service takes them.

The walk also gathers what intake needs from the request: its text (for the token estimate),
its image parts (counted against the model's reference limit) and every file URI with the
path of the field it sits in, so each is held to the reference rule (core.references)
wherever it appears.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bananabatch.core.intake.rules import ModelRules, check_aspect_ratio, check_size
from bananabatch.core.intake.text import Reject, show

# --- the allowlist, as data ---------------------------------------------------------------

# Field -> what its value must be. "content" and "contents" are Content objects (role and
# parts), "parts" a list of Part objects, anything in FIELD_TYPES a JSON type.
REQUEST_FIELDS: Final[Mapping[str, str]] = {
    "contents": "contents",
    "systemInstruction": "content",
    "generationConfig": "object:generationConfig",
    "safetySettings": "list:safetySetting",
    # The line's model, in the request instead; intake compares and removes it.
    "model": "string",
}
CONTENT_FIELDS: Final[Mapping[str, str]] = {"role": "string", "parts": "parts"}
ROLES: Final = ("user", "model")
# A part holds exactly one of these.
PART_DATA_FIELDS: Final = ("text", "inlineData", "fileData")
PART_FIELDS: Final[Mapping[str, str]] = {
    "text": "string",
    "inlineData": "object:inlineData",
    "fileData": "object:fileData",
    # A model turn's thought and its signature, which multi-turn image editing hands back.
    "thought": "boolean",
    "thoughtSignature": "string",
}
OBJECT_FIELDS: Final[Mapping[str, Mapping[str, str]]] = {
    "inlineData": {"mimeType": "string", "data": "string"},
    "fileData": {"mimeType": "string", "fileUri": "string"},
    "generationConfig": {
        "responseModalities": "list:string",
        "imageConfig": "object:imageConfig",
        "temperature": "number",
        "topP": "number",
        "topK": "number",
        "seed": "integer",
        "maxOutputTokens": "integer",
    },
    "imageConfig": {"aspectRatio": "string", "imageSize": "string"},
    "safetySetting": {"category": "string", "threshold": "string"},
}
# Why some familiar fields are refused, for a more useful reason than "not allowed".
REFUSAL_HINTS: Final[Mapping[str, str]] = {
    "config": 'the SDK\'s name; in a REST request the options go in "generationConfig"',
    "tools": "tools are not priced by this product",
    "toolConfig": "tools are not priced by this product",
    "cachedContent": "cached contents are not priced by this product",
    "candidateCount": "one image per line: each line is one request and one result",
    "thinkingConfig": "thinking options are not priced by this product",
}
# Sizes, so that no request is larger than the product can price and stage.
MAX_CONTENTS: Final = 32
MAX_PARTS: Final = 64
MAX_SAFETY_SETTINGS: Final = 16
MAX_RESPONSE_MODALITIES: Final = 4
# The range of the service's integer fields (int32 in its schema).
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


@dataclass
class NativeParts:
    """What the walk gathers from an allowed request."""

    texts: list[str] = field(default_factory=list)
    parts: int = 0
    images: int = 0
    # (field path, URI) of every fileData part, in contents and in the system instruction.
    file_uris: list[tuple[str, str]] = field(default_factory=list)
    # (field path, mimeType) of every image part that states one.
    mime_types: list[tuple[str, str]] = field(default_factory=list)


def camel(name: str) -> str:
    """A REST field name in camelCase (the service takes either spelling)."""
    if "_" not in name:
        return name
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def check_request(request: Mapping[str, Any]) -> NativeParts:
    """Hold a native request to the allowlist; raise Reject naming the first field that is
    not allowed or not of the allowed type."""
    found = NativeParts()
    _check_object(request, "request", REQUEST_FIELDS, found)
    return found


def _check_object(
    obj: Mapping[str, Any], path: str, allowed: Mapping[str, str], found: NativeParts
) -> None:
    seen: dict[str, str] = {}
    for name, value in obj.items():
        where = f"{path}.{name}"
        name_camel = camel(name)
        kind = allowed.get(name_camel)
        if kind is None:
            hint = REFUSAL_HINTS.get(name_camel)
            expected = ", ".join(allowed)
            raise Reject(
                where,
                f"not allowed ({hint}); expected only {expected}"
                if hint
                else f"not allowed in a native request; expected only {expected}",
            )
        if name_camel in seen:
            raise Reject(path, f'both "{seen[name_camel]}" and "{name}" are set; keep one')
        seen[name_camel] = name
        _check_value(value, where, kind, found)


def _check_value(value: Any, where: str, kind: str, found: NativeParts) -> None:
    check = _CHECKS.get(kind.partition(":")[0])
    if check is not None:
        check(value, where, kind, found)
    elif not _is_json_type(value, kind):
        article = "an" if kind[0] in "aeiou" else "a"
        raise Reject(where, f"expected {article} {kind}; found {_type(value)}")
    elif kind == "integer" and not INT32_MIN <= value <= INT32_MAX:
        # int32 in the service's schema; compared before any str(): a huge int prints slowly.
        raise Reject(
            where, f"expected an integer between {INT32_MIN} and {INT32_MAX}; found one outside"
        )


def _check_contents(value: Any, where: str, _kind: str, found: NativeParts) -> None:
    if not isinstance(value, list) or not value:
        raise Reject(where, f"expected a non-empty list; found {_type(value)}")
    if len(value) > MAX_CONTENTS:
        raise Reject(where, f"expected at most {MAX_CONTENTS}; found {len(value)}")
    for index, content in enumerate(value):
        _check_content(content, f"{where}[{index}]", "content", found)


def _check_content(value: Any, where: str, _kind: str, found: NativeParts) -> None:
    if not isinstance(value, dict):
        raise Reject(where, f"expected an object; found {_type(value)}")
    _check_object(value, where, CONTENT_FIELDS, found)
    role = value.get("role")
    if role is not None and role not in ROLES:
        raise Reject(f"{where}.role", f"expected one of {', '.join(ROLES)}; found {_type(role)}")
    if "parts" not in value:
        raise Reject(f"{where}.parts", "required")


def _check_parts(value: Any, where: str, _kind: str, found: NativeParts) -> None:
    if not isinstance(value, list) or not value:
        raise Reject(where, f"expected a non-empty list; found {_type(value)}")
    for index, part in enumerate(value):
        _check_part(part, f"{where}[{index}]", found)


def _check_nested_object(value: Any, where: str, kind: str, found: NativeParts) -> None:
    if not isinstance(value, dict):
        raise Reject(where, f"expected an object; found {_type(value)}")
    _check_object(value, where, OBJECT_FIELDS[kind.partition(":")[2]], found)


def _check_list(value: Any, where: str, kind: str, found: NativeParts) -> None:
    item_kind = kind.partition(":")[2]
    if not isinstance(value, list):
        raise Reject(where, f"expected a list; found {_type(value)}")
    limit = MAX_SAFETY_SETTINGS if item_kind == "safetySetting" else MAX_RESPONSE_MODALITIES
    if len(value) > limit:
        raise Reject(where, f"expected at most {limit} items; found {len(value)}")
    item = "object:safetySetting" if item_kind == "safetySetting" else item_kind
    for index, entry in enumerate(value):
        _check_value(entry, f"{where}[{index}]", item, found)


_Check = Callable[[Any, str, str, NativeParts], None]
# The kinds that are not a JSON type, by the part of their name before ":".
_CHECKS: Final[Mapping[str, _Check]] = {
    "contents": _check_contents,
    "content": _check_content,
    "parts": _check_parts,
    "object": _check_nested_object,
    "list": _check_list,
}


def _check_part(part: Any, where: str, found: NativeParts) -> None:
    if not isinstance(part, dict):
        raise Reject(where, f"expected an object; found {_type(part)}")
    _check_object(part, where, PART_FIELDS, found)
    data = [camel(name) for name in part if camel(name) in PART_DATA_FIELDS]
    if len(data) != 1:
        raise Reject(
            where,
            f"expected exactly one of {', '.join(PART_DATA_FIELDS)}; found "
            f"{', '.join(data) if data else 'none'}",
        )
    found.images += data[0] != "text"
    found.parts += 1
    if found.parts > MAX_PARTS:
        raise Reject(where, f"expected at most {MAX_PARTS} parts in all; found more")
    for name, value in part.items():
        kind = camel(name)
        if kind == "text":
            if not part.get("thought"):
                found.texts.append(value)
        elif kind in ("inlineData", "fileData"):
            _gather_data(value, f"{where}.{name}", kind, found)


def _gather_data(value: Mapping[str, Any], where: str, kind: str, found: NativeParts) -> None:
    for inner, inner_value in value.items():
        inner_camel = camel(inner)
        if inner_camel == "mimeType":
            found.mime_types.append((f"{where}.{inner}", inner_value))
        elif inner_camel == "fileUri":
            found.file_uris.append((f"{where}.{inner}", inner_value))
    if kind == "fileData" and not any(camel(k) == "fileUri" for k in value):
        raise Reject(f"{where}.fileUri", "required")


def _is_json_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    raise AssertionError(f"unknown kind {kind!r} in the allowlist")


def _type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, str):
        return f'"{value[:40]}"' if len(value) <= 40 else f'"{value[:37]}..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return "a number"


# --- what intake reads from an allowed request -------------------------------------------------


def request_model(request: Mapping[str, Any]) -> str | None:
    """The model a native request names inside it, if any."""
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise Reject("request.model", f"expected a string; found {show(model)}")
    return model


def image_config(rules: ModelRules, request: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Aspect ratio and size of a native request, read in either case, checked as written."""
    generation, path = _either_named(request, "generationConfig", "generation_config", "request")
    if generation is None:
        return None, None
    if not isinstance(generation, dict):
        raise Reject(path, f"expected an object; found {show(generation)}")
    _check_modalities(generation, path)
    config, path = _either_named(generation, "imageConfig", "image_config", path)
    if config is None:
        return None, None
    if not isinstance(config, dict):
        raise Reject(path, f"expected an object; found {show(config)}")
    aspect, ratio_path = _either_named(config, "aspectRatio", "aspect_ratio", path)
    check_aspect_ratio(rules, aspect, ratio_path)
    size, size_path = _either_named(config, "imageSize", "image_size", path)
    if size is not None:
        if not isinstance(size, str):
            raise Reject(size_path, f"expected a string; found {show(size)}")
        # Staged as written, so no case folding here: the service refuses "2k".
        size = check_size(rules, size, size_path, shown=size)
    return aspect, size


def _check_modalities(generation: Mapping[str, Any], path: str) -> None:
    modalities, field = _either_named(generation, "responseModalities", "response_modalities", path)
    if modalities is None:
        return
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise Reject(field, f"expected a list of strings; found {show(modalities)}")
    if "IMAGE" not in (m.upper() for m in modalities):
        raise Reject(field, f'expected it to include "IMAGE"; found {show(modalities)}')


def _either_named(
    mapping: Mapping[str, Any], camel_name: str, snake_name: str, path: str
) -> tuple[Any, str]:
    """The value of a field written in either case (None when absent) and its path as
    written; both spellings at once is a rejection at `path`."""
    if camel_name in mapping and snake_name in mapping:
        raise Reject(path, f'both "{camel_name}" and "{snake_name}" are set; keep one')
    if camel_name in mapping:
        return mapping[camel_name], f"{path}.{camel_name}"
    return mapping.get(snake_name), f"{path}.{snake_name}"
