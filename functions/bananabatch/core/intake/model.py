"""The line model: what the parsers answer for one input line.

Pure. A line is accepted (AcceptedLine, or FastLine for a simple line without reference
images, whose request is built from its LineShape only when needed), rejected (RejectedLine,
with the reason a person reads) or blank (None). ParsedChunk is the same answers for many
consecutive lines, in columns, as the hot loop of intake wants them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeAlias, TypeVar

from bananabatch.core.intake.native import camel
from bananabatch.core.intake.request import (
    LineShape,
    canonical_json,
    encode_json_string,
)
from bananabatch.core.intake.rules import LineOptions

# A JSON value as the parsers give it (what json.loads returns, for a valid line).
JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"

PREVIEW_CHARS: Final = 120
RAW_KEEP_CHARS: Final = 2_000

_sha256: Final = hashlib.sha256
_new_object: Final = object.__new__


@dataclass(frozen=True)
class AcceptedLine:
    line_no: int
    key: str
    model: str
    # REST GenerateContentRequest, ready to stage (camelCase for the simple form; the
    # native form as written, minus any `model` field).
    request: JsonObject
    aspect_ratio: str | None
    image_size: str | None
    prompt_preview: str
    reference_images: tuple[str, ...]
    metadata: JsonObject
    # The line's options (rules.LineOptions: each one's value or its default).
    options: LineOptions
    native: bool = False
    # All text of the request, for a prompt-token estimate (prompt_preview is cut short).
    prompt_chars: int = 0
    key_generated: bool = False
    # gpt-image lines: the quality and output format asked for (defaults filled in); None
    # for Gemini lines.
    quality: str | None = None
    output_format: str | None = None

    @property
    def cache(self) -> bool:
        return self.options.cache

    @property
    def priority(self) -> str:
        return self.options.priority

    @property
    def allow_third_party(self) -> bool:
        return self.options.allow_third_party


def accepted_line(
    *,
    line_no: int,
    key: str,
    model: str,
    request: JsonObject,
    aspect_ratio: str | None,
    image_size: str | None,
    prompt_preview: str,
    reference_images: tuple[str, ...],
    metadata: JsonObject,
    options: LineOptions,
    native: bool,
    prompt_chars: int,
    key_generated: bool,
    quality: str | None = None,
    output_format: str | None = None,
) -> AcceptedLine:
    """An AcceptedLine, built without the frozen dataclass __init__, which sets each field
    through object.__setattr__ and costs as much as parsing the line's JSON."""
    line: AcceptedLine = _new_object(AcceptedLine)
    vars(line).update(
        line_no=line_no,
        key=key,
        model=model,
        request=request,
        aspect_ratio=aspect_ratio,
        image_size=image_size,
        prompt_preview=prompt_preview,
        reference_images=reference_images,
        metadata=metadata,
        options=options,
        native=native,
        prompt_chars=prompt_chars,
        key_generated=key_generated,
        quality=quality,
        output_format=output_format,
    )
    return line


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line_no: int
    # The key as written (or generated); it may be unsafe or a duplicate, so never use it
    # as an object or document name: use record_key.
    key: str | None
    field: str | None
    reason: str
    raw: str

    @property
    def record_key(self) -> str:
        """A name for this line's item record, unique per line and never equal to an
        accepted key (accepted keys cannot start with `__`)."""
        return f"__line-{self.line_no:06d}"


def line_key(line_no: int) -> str:
    """The stable key given to a line without one."""
    return f"line-{line_no:06d}"


def prompt_preview(prompt: str) -> str:
    """The prompt_preview of a simple line's prompt."""
    return prompt if len(prompt) <= PREVIEW_CHARS and prompt.isprintable() else text_preview(prompt)


def text_preview(text: str) -> str:
    """Any text cut to PREVIEW_CHARS, its whitespace runs made single spaces if it has
    characters that do not print."""
    head = text[: PREVIEW_CHARS + 1]
    if not head.isprintable():
        head = " ".join(head.split())
    if len(head) > PREVIEW_CHARS:
        head = head[: PREVIEW_CHARS - 1] + "…"
    return head


class FastLine(NamedTuple):
    """An accepted simple line without reference images, as LineParser.parse_fast returns
    it: the request is not built (LineShape.request builds it when needed)."""

    line_no: int
    key: str
    prompt: str
    shape: LineShape
    metadata: JsonObject | None
    key_generated: bool

    @property
    def prompt_preview(self) -> str:
        return prompt_preview(self.prompt)

    def accepted(self) -> AcceptedLine:
        """The same line as LineParser.parse gives it."""
        shape = self.shape
        return accepted_line(
            line_no=self.line_no,
            key=self.key,
            model=shape.model,
            request=shape.request(self.prompt),
            aspect_ratio=shape.aspect_ratio,
            image_size=shape.image_size,
            prompt_preview=self.prompt_preview,
            reference_images=(),
            metadata=self.metadata if self.metadata is not None else {},
            options=shape.options,
            native=False,
            prompt_chars=len(self.prompt),
            key_generated=self.key_generated,
            quality=shape.quality,
            output_format=shape.output_format,
        )


class ParsedChunk:
    """LineParser.parse_chunk's answer for consecutive lines.

    The lines parse_fast gives as a FastLine without metadata (nearly all lines of a large
    file), in input order, as columns: row i is FastLine(line_nos[i], keys[i], prompts[i],
    shapes[i], None, generated[i]), its prompt as a JSON string is encoded[i] and its
    content_hash digests[i]. Every other non-blank line is in `others` as (the number of
    rows before it, the line parse_fast gives), in input order.
    """

    __slots__ = (
        "digests",
        "encoded",
        "generated",
        "keys",
        "line_nos",
        "others",
        "prompts",
        "shapes",
    )

    def __init__(self) -> None:
        self.line_nos: list[int] = []
        self.keys: list[str] = []
        self.prompts: list[str] = []
        self.encoded: list[str] = []
        self.shapes: list[LineShape] = []
        self.generated: list[bool] = []
        self.digests: list[str] = []
        self.others: list[tuple[int, FastLine | AcceptedLine | RejectedLine]] = []

    def drop_rows(self, rows: Sequence[int]) -> None:
        """Take out the rows `rows` (ascending; none of `others` may come after the first)."""
        if not rows:
            return
        start, drop = rows[0], set(rows)
        _drop(self.line_nos, start, drop)
        _drop(self.keys, start, drop)
        _drop(self.prompts, start, drop)
        _drop(self.encoded, start, drop)
        _drop(self.shapes, start, drop)
        _drop(self.generated, start, drop)
        _drop(self.digests, start, drop)

    def fast_line(self, row: int) -> FastLine:
        return FastLine(
            self.line_nos[row],
            self.keys[row],
            self.prompts[row],
            self.shapes[row],
            None,
            self.generated[row],
        )


_T = TypeVar("_T")


def _drop(column: list[_T], start: int, drop: set[int]) -> None:
    tail = column[start:]
    del column[start:]
    column.extend(value for at, value in enumerate(tail, start) if at not in drop)


def content_hash(line: AcceptedLine | FastLine) -> str:
    """sha256 hex of the model and the canonical JSON of the request.

    Native requests are normalised to camelCase keys first, so the same request written in
    either case hashes alike. Reference images count by URI, not by their bytes. A FastLine
    hashes from its shape's template, to the same value as its AcceptedLine.
    """
    if isinstance(line, FastLine):
        return line.shape.content_hash(encode_json_string(line.prompt))
    request = _camel_keys(line.request) if line.native else line.request
    return _sha256(f"{line.model}\n{canonical_json(request)}".encode()).hexdigest()


def _camel_keys(value: JsonValue) -> JsonValue:
    if isinstance(value, dict):
        return {camel(k): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value
