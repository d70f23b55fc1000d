"""Every rule an input line is held to, and every option's default, each written once here
with its message. The reference parser (reference.py) applies them in order; the fast parser
(fast.py) only asks them, or uses the data and patterns they define.

Pure. A rule raises Reject(field, message) or answers None for "no problem"; the parser adds
the line number. The JSON-level limits (depth, metadata size, key bytes) are derived from
the stores in core/limits.py; the native form's allowlist is native.py.

Adding an option: one field in OptionFields (what a line may write) and its default in
LineOptions (what a line that does not write it gets). Both forms take it, pydantic checks
its type (a Literal's values are named in the rejection), the parsers carry it in
AcceptedLine.options / LineShape.options, and lines that differ in it get different shapes.
If it changes what is asked of the model, request.simple_request writes it into the request.

The fields only gpt-image models take (quality, output format; the size from the aspect
ratio) are held to their rules in openai_rules.py, beside these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date
from functools import cache
from typing import Any, Final, Literal, NotRequired, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import ConfigDict, TypeAdapter, ValidationError

# pydantic needs typing_extensions' TypedDict on Python < 3.12.
from typing_extensions import TypedDict, get_type_hints

from bananabatch.core.catalog import (
    ALL_MODELS,
    VERTEX_BATCH_SIZES,
    ModelSpec,
    Provider,
    Status,
    lifecycle_problem,
    model_spec,
)
from bananabatch.core.intake.limits import MAX_KEY_CHARS, key_bytes_problem, metadata_problem
from bananabatch.core.intake.text import Reject, show
from bananabatch.core.references import ReferencePolicy

# --- options -------------------------------------------------------------------------------

# How soon a line is wanted, which decides its lane (core/routing.py): urgent goes to the
# fastest configured synchronous lane at its price, normal to batch at half price, bulk to
# the cheapest lane the line may use. "batch" is what files written before the three levels
# call normal: it is taken, and read as normal, so old files keep working.
Priority = Literal["urgent", "normal", "bulk", "batch"]
PRIORITIES: Final = get_args(Priority)
URGENT: Final = "urgent"
NORMAL: Final = "normal"
BULK: Final = "bulk"
# The levels as a line's options carry them ("batch" read as "normal"), fastest first.
PRIORITY_LEVELS: Final = (URGENT, NORMAL, BULK)
PRIORITY_SYNONYMS: Final[Mapping[str, str]] = {"batch": NORMAL}


class OptionFields(TypedDict):
    """The options a line may write, in either form, and their types."""

    cache: NotRequired[bool]
    priority: NotRequired[Priority]
    # May this line go through a third party (a gateway or hosted-model provider that is not
    # the model's maker)? Only where the deployment allows it too (Settings.allow_third_party):
    # some owners' compliance forbids intermediaries, so both default to no.
    allow_third_party: NotRequired[bool]


@dataclass(frozen=True, slots=True)
class LineOptions:
    """A line's options: each one as the line wrote it, or its default (written only here)."""

    cache: bool = True
    priority: Priority = NORMAL
    allow_third_party: bool = False


OPTION_NAMES: Final = tuple(OptionFields.__annotations__)
DEFAULT_OPTIONS: Final = LineOptions()
if tuple(f.name for f in fields(LineOptions)) != OPTION_NAMES:
    raise AssertionError("OptionFields and LineOptions must name the same options in order")


def options_of(line: Mapping[str, object]) -> LineOptions:
    """The options of a line's validated fields (an absent option takes its default); one
    object per distinct set of values."""
    return _options(tuple(map(line.get, OPTION_NAMES)))


@cache
def _options(values: tuple[object, ...]) -> LineOptions:
    # None stands for absent: pydantic refuses null for every option.
    given: dict[str, Any] = {
        name: value for name, value in zip(OPTION_NAMES, values, strict=True) if value is not None
    }
    priority = given.get("priority")
    if isinstance(priority, str) and priority in PRIORITY_SYNONYMS:
        # One level, one shape: a "batch" line and a "normal" line are planned together.
        given["priority"] = PRIORITY_SYNONYMS[priority]
    return LineOptions(**given)


# --- the fields of a line ----------------------------------------------------------------------


class _SimpleHead(TypedDict):
    key: NotRequired[str | None]
    prompt: str
    aspect_ratio: NotRequired[str | None]
    image_size: NotRequired[str | None]
    # Instead of image_size: the size the image is shown at ("600x600") or its longest
    # side; intake picks the size and ratio for it (rightsize.py).
    display_size: NotRequired[str | None]
    max_edge: NotRequired[int | None]
    # gpt-image models only (check_openai_fields): what each model takes is in the catalog.
    quality: NotRequired[str | None]
    output_format: NotRequired[str | None]
    model: NotRequired[str | None]
    reference_images: NotRequired[list[str]]
    # Any JSON; metadata_problem holds it to the stores' limits.
    metadata: NotRequired[dict[str, Any]]


class SimpleFields(_SimpleHead, OptionFields):
    """A simple line (DESIGN.md "Input line"): a prompt and options."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]


class _NativeHead(TypedDict):
    key: NotRequired[str | None]
    # A GenerateContentRequest in REST form; native.check_request holds it to the allowlist.
    request: dict[str, Any]
    model: NotRequired[str | None]
    metadata: NotRequired[dict[str, Any]]


class NativeFields(_NativeHead, OptionFields):
    """A native line: a request as the service takes it, and options."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]


# TypedDicts rather than BaseModels: validating straight to a dict is about twice as fast,
# and the hot path reads each field once anyway.
SIMPLE: Final = TypeAdapter(SimpleFields)
NATIVE: Final = TypeAdapter(NativeFields)
SIMPLE_FIELDS: Final = tuple(SimpleFields.__annotations__)
NATIVE_FIELDS: Final = tuple(NativeFields.__annotations__)
_LITERAL: Final[object] = Literal
# The values of every option that takes one of a few, for its rejection.
_CHOICES: Final[Mapping[str, tuple[object, ...]]] = {
    name: get_args(kind)
    for name, kind in get_type_hints(OptionFields).items()
    if get_origin(kind) is _LITERAL
} | {"priority": PRIORITY_LEVELS}  # the synonym is taken, not advertised


def pydantic_reject(exc: ValidationError, *, simple: bool) -> Reject:
    """The rejection of a line whose fields have the wrong names or types: the first error."""
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    field = str(loc[0]) if loc else None
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        return Reject(field, _unknown_field(field, simple=simple))
    if kind == "literal_error":
        choices = ", ".join(map(str, _CHOICES.get(field or "", ())))
        return Reject(field, f"expected one of {choices}; found {show(value)}")
    if kind == "missing":
        return Reject(field, "required")
    if len(loc) > 1 and isinstance(loc[1], int):
        item = f"item {loc[1] + 1}: "
    else:
        item = f"{loc[1]!s}: " if len(loc) > 1 else ""
    expected = _EXPECTED.get(kind)
    if expected is None:
        return Reject(field, f"{item}{error['msg']}; found {show(value)}")
    return Reject(field, f"{item}expected {expected}; found {show(value)}")


_EXPECTED: Final[Mapping[str, str]] = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "an integer",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


def _unknown_field(field: str | None, *, simple: bool) -> str:
    if not simple and field in SIMPLE_FIELDS:
        return 'not allowed in a native line (one with "request")'
    allowed = SIMPLE_FIELDS if simple else NATIVE_FIELDS
    return f"unknown field; expected one of {', '.join(allowed)}"


# --- key -----------------------------------------------------------------------------------

# Bidi controls (U+061C, U+200E/F, U+202A-E, U+2066-9) make a key display as another name.
_KEY_BAD: Final = re.compile(
    r"[/\\\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]|\.\."
)
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# A key that key_problem accepts and that needs no JSON escaping, as a pattern: printable
# ASCII without space, `"`, `/` or `\`, at most MAX_KEY_CHARS, not "__"-prefixed, not ".",
# no "..". Matched on its own or inside a line (where a `"` ends it); a key it does not match
# may still be fine: key_problem decides. The parsers use it as their shortcut.
PLAIN_KEY: Final = rf'(?!__|\.(?:"|\Z))(?![^"]*\.\.)[!#-.0-\[\]-~]{{1,{MAX_KEY_CHARS}}}'
plain_key: Final = re.compile(PLAIN_KEY).fullmatch


def line_key(line_no: int) -> str:
    """The stable key given to a line without one."""
    return f"line-{line_no:06d}"


def key_problem(key: str) -> str | None:
    """Why a key is not safe as an object and document name, or None when it is."""
    if not key or key.isspace():
        return "must not be empty"
    if len(key) > MAX_KEY_CHARS:
        return f"expected at most {MAX_KEY_CHARS} characters, found {len(key)} in key"
    too_long = key_bytes_problem(key)
    if too_long is not None:
        return too_long
    bad = _KEY_BAD.search(key)
    if bad is not None:
        return _bad_key_text(bad.group())
    if key == ".":
        return 'must not be "."'
    if key.startswith("__"):
        return 'must not start with "__" (reserved)'
    return None


def _bad_key_text(found: str) -> str:
    if found == "..":
        return 'must not contain ".."'
    if found in "/\\":
        return f"must not contain {found!r} (keys become object names)"
    if found in _BIDI:
        return (
            f"must not contain bidi control character U+{ord(found):04X} (it makes a name "
            "display as another)"
        )
    return f"must not contain control character U+{ord(found):04X}"


def check_key(line_no: int, key: str | None) -> tuple[str, bool]:
    """The line's key (its own, or line_key when it has none) and whether it was generated."""
    if key is None:
        return line_key(line_no), True
    if plain_key(key) is None:
        problem = key_problem(key)
        if problem is not None:
            raise Reject("key", f"{problem}; found {show(key)}")
    return key, False


def duplicate_key(key: str) -> Reject:
    return Reject("key", f"duplicate key {show(key)}: an earlier line already uses it")


# --- prompt --------------------------------------------------------------------------------


def prompt_problem(prompt: str, max_chars: int) -> str | None:
    """Why a simple line's prompt cannot be sent, or None."""
    if not prompt or prompt.isspace():
        return "must not be empty or only whitespace"
    if len(prompt) > max_chars:
        return f"expected at most {max_chars} characters; found {len(prompt)}"
    return None


def check_prompt(prompt: str, max_chars: int) -> None:
    problem = prompt_problem(prompt, max_chars)
    if problem is not None:
        raise Reject("prompt", problem)


# --- model, aspect ratio, size -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelRules:
    """What a line naming one model may ask of it, on one deployment."""

    spec: ModelSpec
    ratios: frozenset[str]
    sizes: frozenset[str]
    ratios_text: str
    sizes_text: str
    # Said after a size rejection when the lane, not the model, limits the sizes.
    sizes_note: str = ""


KNOWN_MODELS: Final = ", ".join(spec.model_id for spec in ALL_MODELS)
_VERTEX_SIZES_NOTE: Final = (
    " (Vertex batch produces 1K images only; send 2K/4K lines to a deployment with provider=gemini)"
)


def _rules_for(spec: ModelSpec, *, vertex: bool) -> ModelRules:
    sizes = spec.image_sizes
    note = ""
    # Vertex limits Gemini's batches; a gpt-image line goes to OpenAI whatever the
    # deployment's Gemini backend is.
    if vertex and sizes and spec.provider is Provider.GEMINI:
        sizes = tuple(size for size in sizes if size in VERTEX_BATCH_SIZES)
        note = _VERTEX_SIZES_NOTE if sizes != spec.image_sizes else ""
    return ModelRules(
        spec=spec,
        ratios=frozenset(spec.aspect_ratios),
        sizes=frozenset(sizes),
        ratios_text=", ".join(spec.aspect_ratios),
        sizes_text=", ".join(sizes),
        sizes_note=note,
    )


@cache
def rules_table(day: date, vertex: bool, openai: bool = True) -> Mapping[str, ModelRules]:
    """The models a line may name on `day`, by model id: a shut-down model has no rules,
    nor has a gpt-image model on a deployment without the OpenAI provider (`openai`), so
    a line naming one falls through to model_rules, which says why (and names the
    replacement). `vertex` limits Gemini sizes to what Vertex batch produces."""
    return {
        spec.model_id: _rules_for(spec, vertex=vertex)
        for spec in ALL_MODELS
        if spec.status_on(day) is not Status.SHUT_DOWN
        and (openai or spec.provider is not Provider.OPENAI)
    }


#: Why a gpt-image line is refused where the OpenAI provider is off (config's names).
OPENAI_DISABLED: Final = (
    "is served by OpenAI, which this deployment has not enabled (set "
    "BANANABATCH_OPENAI_ENABLED=true and OPENAI_API_KEY; README: OpenAI gpt-image lines)"
)


def model_rules(
    table: Mapping[str, ModelRules], name: str, *, today: date, given: bool, written: str
) -> ModelRules:
    """The rules of the model `name` (an id or an alias), or why no line may name it.
    `given` is False when the line names none and `name` is the job's default model;
    `written` is the name as written, for the message."""
    rules = table.get(name)
    if rules is not None:
        return rules
    origin = "" if given else " (the job's default model)"
    spec = model_spec(name)
    if spec is None:
        raise Reject(
            "model", f"unknown model {show(written)}{origin}; expected one of {KNOWN_MODELS}"
        )
    rules = table.get(spec.model_id)
    if rules is not None:
        return rules
    problem = lifecycle_problem(spec.model_id, today)
    if problem is None:
        problem = f"{spec.model_id} {OPENAI_DISABLED}"
    raise Reject("model", f"{problem}{origin}")


def check_aspect_ratio(rules: ModelRules, aspect: object, field: str) -> None:
    if aspect is not None and (not isinstance(aspect, str) or aspect not in rules.ratios):
        raise Reject(
            field,
            f"expected one of {rules.ratios_text} for {rules.spec.model_id}; found {show(aspect)}",
        )


def simple_size(size: str) -> str:
    """A simple line's image size as staged: taken in either case ("2k" is "2K",
    "1024X1536" is gpt-image's "1024x1536"). A native line's is staged as written, and
    the service refuses "2k"."""
    return size.lower() if "x" in size.lower() else size.upper()


def check_size(rules: ModelRules, size: str, field: str, *, shown: str) -> str:
    """`size` if the model takes it (a simple line's is upper-cased first, a native line's
    checked as written: the service refuses "2k"); `shown` is the size as written."""
    spec = rules.spec
    if not rules.sizes:
        raise Reject(
            field,
            f"{spec.model_id} has a single output size and takes no image size; "
            f"found {show(shown)}",
        )
    if size not in rules.sizes:
        raise Reject(
            field,
            f"expected one of {rules.sizes_text} for {spec.model_id}; found {show(shown)}"
            f"{rules.sizes_note}",
        )
    return size


# --- reference images --------------------------------------------------------------------------

# Image types Gemini accepts as input, by file extension.
IMAGE_MIME_BY_EXTENSION: Final[Mapping[str, str]] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
}
IMAGE_MIMES: Final = frozenset(IMAGE_MIME_BY_EXTENSION.values())
# Input images /v1/images/edits takes (PNG, JPEG, WebP).
OPENAI_IMAGE_MIMES: Final = frozenset({"image/png", "image/jpeg", "image/webp"})
_IMAGE_MIMES_TEXT: Final = ", ".join(sorted(IMAGE_MIMES))


def check_reference_count(spec: ModelSpec, count: int, field: str, *, what: str = "") -> None:
    """At most the model's number of reference images (`what` names the kind of item)."""
    if count > spec.max_reference_images:
        raise Reject(
            field,
            f"{what}expected at most {spec.max_reference_images} for {spec.model_id}; "
            f"found {count}",
        )


def reference_problem(uri: str, policy: ReferencePolicy) -> str | None:
    """Why `uri` cannot be a reference image, from its text alone (form and location)."""
    if any(ch.isspace() or ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in uri):
        return f"must not contain whitespace or control characters; found {show(uri)}"
    return policy.problem(uri)


def reference_mime(
    index: int, uri: str, policy: ReferencePolicy, spec: ModelSpec | None = None
) -> str:
    """The MIME type of a simple line's reference image, or a rejection naming the item
    (`spec`: the line's model, when it limits the types further)."""
    where = f"item {index + 1}: "
    problem = reference_problem(uri, policy)
    if problem is not None:
        raise Reject("reference_images", where + problem)
    path = uri[5:].partition("/")[2] if uri.startswith("gs://") else urlsplit(uri).path
    extension = path.rsplit("/", 1)[-1].rpartition(".")[2].lower() if "." in path else ""
    mime = IMAGE_MIME_BY_EXTENSION.get(extension)
    if mime is None:
        known = ", ".join(f".{e}" for e in IMAGE_MIME_BY_EXTENSION)
        raise Reject(
            "reference_images",
            f"{where}cannot tell the image type from the name; expected an extension among "
            f"{known} (or use the native form with an explicit mimeType); found {show(uri)}",
        )
    if spec is not None and spec.provider is Provider.OPENAI and mime not in OPENAI_IMAGE_MIMES:
        raise Reject(
            "reference_images",
            f"{where}{spec.model_id} takes input images of types "
            f"{', '.join(sorted(OPENAI_IMAGE_MIMES))}; found {mime} ({show(uri)})",
        )
    return mime


def check_image_mime(field: str, mime: str) -> None:
    """A native image part's stated type must be one Gemini takes."""
    if mime.lower() not in IMAGE_MIMES:
        raise Reject(field, f"expected an image type among {_IMAGE_MIMES_TEXT}; found {show(mime)}")


# --- metadata --------------------------------------------------------------------------------


def check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata:
        problem = metadata_problem(metadata)
        if problem is not None:
            raise Reject("metadata", problem)
