"""Input lines: split a JSONL stream, validate each line, build the request to stage.

Pure: no I/O beyond reading the stream it is handed. Two line forms (DESIGN.md "Input
line"): the simple form (`prompt` plus options) and the native form (`request`, a Gemini
GenerateContentRequest in REST form). Every rejection names the line and the field.

The package, by what each module is for:

- model: the line model (AcceptedLine, FastLine, RejectedLine, ParsedChunk) and the
  content hash that identifies a request; limits: the limits a line is held to (its
  size, its key's, its JSON's depth, its metadata's), derived from the stores';
- rules: every rule a line is held to and every option's default, each written once with
  its message; native: the native form's allowlist and the rules of its request;
- reference: the reference parser, written to be read: the specification;
- fast: LineParser, the reference's answers at a small multiple of a bare `json.loads`
  pass (one validate_json call per line, or a regex for a plain line), nothing else;
- request: request building (the simple form's request, per-shape templates);
- stream: line streaming and chunking; text: how values are shown in a reason.

This module is the package's public API.
"""

from bananabatch.core.intake.fast import LineParser
from bananabatch.core.intake.limits import DEFAULT_LIMITS, IntakeLimits
from bananabatch.core.intake.model import (
    PREVIEW_CHARS,
    RAW_KEEP_CHARS,
    AcceptedLine,
    FastLine,
    JsonObject,
    JsonValue,
    ParsedChunk,
    RejectedLine,
    content_hash,
    prompt_preview,
)
from bananabatch.core.intake.reference import DEFAULT_REFERENCES, ReferenceParser
from bananabatch.core.intake.request import (
    PROMPT_SLOT,
    RESPONSE_MODALITIES,
    LineShape,
    encode_json_string,
    simple_request,
)
from bananabatch.core.intake.rules import (
    BULK,
    IMAGE_MIME_BY_EXTENSION,
    NORMAL,
    PRIORITIES,
    PRIORITY_LEVELS,
    URGENT,
    LineOptions,
    key_problem,
    line_key,
)
from bananabatch.core.intake.stream import BOM, iter_line_chunks, iter_raw_lines

__all__ = [
    "BOM",
    "BULK",
    "DEFAULT_LIMITS",
    "DEFAULT_REFERENCES",
    "IMAGE_MIME_BY_EXTENSION",
    "NORMAL",
    "PREVIEW_CHARS",
    "PRIORITIES",
    "PRIORITY_LEVELS",
    "PROMPT_SLOT",
    "RAW_KEEP_CHARS",
    "RESPONSE_MODALITIES",
    "URGENT",
    "AcceptedLine",
    "FastLine",
    "IntakeLimits",
    "JsonObject",
    "JsonValue",
    "LineOptions",
    "LineParser",
    "LineShape",
    "ParsedChunk",
    "ReferenceParser",
    "RejectedLine",
    "content_hash",
    "encode_json_string",
    "iter_line_chunks",
    "iter_raw_lines",
    "key_problem",
    "line_key",
    "prompt_preview",
    "simple_request",
]
