"""Input lines: split a JSONL stream, validate each line, build the request to stage.

Pure: no I/O beyond reading the stream it is handed. Two line forms (DESIGN.md "Input
line"): the simple form (`prompt` plus options) and the native form (`request`, a Gemini
GenerateContentRequest in REST form). Every rejection names the line and the field.

Speed: a million simple lines must parse in a small multiple of a bare `json.loads` loop,
so an accepted simple line takes one pydantic `validate_json` call and plain checks.
Everything else (native lines, and every line the fast path refuses) goes through a slow
path that parses again with the standard library to say precisely what is wrong.
`LineParser.parse_fast` goes one step further for intake: a simple line without reference
images comes back as a FastLine (key, prompt and an interned LineShape) instead of an
AcceptedLine with its request built, because intake writes such lines from per-shape
templates and never needs the request as a dict.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from json.encoder import encode_basestring
from typing import IO, Any, Final, Literal, NamedTuple, NotRequired, cast
from urllib.parse import urlsplit

from pydantic import ConfigDict, TypeAdapter, ValidationError

# pydantic needs typing_extensions' TypedDict on Python < 3.12.
from typing_extensions import TypedDict

from bananabatch.core.catalog import (
    MODELS,
    VERTEX_BATCH_SIZES,
    ModelSpec,
    Status,
    canonical_model,
    lifecycle_problem,
    model_spec,
)
from bananabatch.core.limits import (
    MAX_KEY_CHARS,
    json_depth_problem,
    key_bytes_problem,
    metadata_problem,
)
from bananabatch.core.native import NativeProblem, check_request
from bananabatch.core.references import UNREADABLE, ReferencePolicy

PREVIEW_CHARS: Final = 120
RAW_KEEP_CHARS: Final = 2_000
BOM: Final = b"\xef\xbb\xbf"
# Only image output: the product delivers images, text parts would be billed at the text
# rate for nothing, and a refusal still arrives as a finishReason (IMAGE_SAFETY, NO_IMAGE).
RESPONSE_MODALITIES: Final = ("IMAGE",)
PRIORITIES: Final = ("batch", "urgent")

# Image types Gemini accepts as input, by file extension.
IMAGE_MIME_BY_EXTENSION: Final[Mapping[str, str]] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
}
_IMAGE_MIMES: Final = frozenset(IMAGE_MIME_BY_EXTENSION.values())
_IMAGE_MIMES_TEXT: Final = ", ".join(sorted(_IMAGE_MIMES))

_READ_CHUNK: Final = 1 << 20
_sha256: Final = hashlib.sha256
_new_object: Final = object.__new__
_new_tuple: Final = tuple.__new__
# Bidi controls (U+061C, U+200E/F, U+202A-E, U+2066-9) make a key display as another name.
_KEY_BAD: Final = re.compile(
    r"[/\\\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]|\.\."
)
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Shown escaped in a reason: a raw one would reorder the text around it wherever it is read.
_SHOWN_ESCAPED: Final = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_KNOWN_MODELS: Final = ", ".join(spec.model_id for spec in MODELS)
# The reference locations of a deployment with the default bucket names (config.Settings).
DEFAULT_REFERENCES: Final = ReferencePolicy.for_buckets("inbox", "results")


def _plain_patterns() -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """The plain line, `{"key": ..., "prompt": ...}` in either order or a prompt alone,
    recognised without parsing JSON: nearly every line of a large file is one, and a regex
    match costs less than a JSON parse plus the checks on the dict it builds.

    Each pattern admits only strings that need no JSON unescaping, so the captured bytes
    are the values themselves once decoded: a key of printable ASCII without space, `"`,
    `/` or `\\`, of at most MAX_KEY_CHARS, that key_problem accepts; a prompt without `"`,
    `\\` or a control character (JSON forbids raw ones), still to be decoded as UTF-8 and
    checked. Anything else (escapes, other fields, other spacing than spaces and tabs)
    fails the match and takes the general path, which accepts or rejects it on its own.

    (key first: groups key, prompt), (prompt first: groups prompt, key or None).
    """
    ws = rb"[ \t]*"
    comma = ws + rb"," + ws
    # key_problem's rules: not "__"-prefixed, not ".", no ".." anywhere (the lookahead
    # stops at the closing quote, which the key cannot hold).
    key = (
        rb'"key"' + ws + rb":" + ws + rb'"(?!__|\.")(?![^"]*\.\.)([!#-.0-\[\]-~]{1,%d})"'
    ) % MAX_KEY_CHARS
    prompt = rb'"prompt"' + ws + rb":" + ws + rb'"([^"\\\x00-\x1f]+)"'
    open_, close = ws + rb"\{" + ws, ws + rb"\}" + ws
    return (
        re.compile(open_ + key + comma + prompt + close),
        re.compile(open_ + prompt + rb"(?:" + comma + key + rb")?" + close),
    )


_KEY_FIRST, _PROMPT_FIRST = _plain_patterns()


@dataclass(frozen=True)
class IntakeLimits:
    max_line_bytes: int = 1_000_000
    max_prompt_chars: int = 20_000


DEFAULT_LIMITS: Final = IntakeLimits()


@dataclass(frozen=True)
class AcceptedLine:
    line_no: int
    key: str
    model: str
    # REST GenerateContentRequest, ready to stage (camelCase for the simple form; the
    # native form as written, minus any `model` field).
    request: dict[str, Any]
    aspect_ratio: str | None
    image_size: str | None
    prompt_preview: str
    reference_images: tuple[str, ...]
    metadata: dict[str, Any]
    cache: bool
    priority: str
    native: bool = False
    # All text of the request, for a prompt-token estimate (prompt_preview is cut short).
    prompt_chars: int = 0
    key_generated: bool = False


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


# The prompt placeholder the templates are cut around. It cannot occur in the JSON of a
# model id, ratio or size, so the cut is unambiguous.
PROMPT_SLOT: Final = "\x00bananabatch-prompt\x00"
# json.dumps(..., ensure_ascii=False) encodes every string with exactly this function (the C
# one when available), so pasting its output into a template gives the same bytes.
encode_json_string: Final = encode_basestring


def simple_request(
    prompt: str,
    aspect_ratio: str | None,
    image_size: str | None,
    reference_parts: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """The REST GenerateContentRequest of a simple line (camelCase, image output only)."""
    generation: dict[str, Any] = {"responseModalities": list(RESPONSE_MODALITIES)}
    if aspect_ratio is not None or image_size is not None:
        image_config: dict[str, str] = {}
        if aspect_ratio is not None:
            image_config["aspectRatio"] = aspect_ratio
        if image_size is not None:
            image_config["imageSize"] = image_size
        generation["imageConfig"] = image_config
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}, *reference_parts]}],
        "generationConfig": generation,
    }


class LineShape:
    """Everything a simple line without reference images shares with the other lines
    written with the same options. A file has a handful of shapes, so per-line work that
    depends only on these (prices, templates, expected output size) is done once per shape.
    The parser interns shapes: one object per distinct shape, so identity is equality."""

    __slots__ = (
        "aspect_ratio",
        "cache",
        "hash_close",
        "hash_head",
        "hash_open",
        "hash_tail",
        "image_size",
        "model",
        "priority",
    )

    def __init__(
        self,
        model: str,
        aspect_ratio: str | None,
        image_size: str | None,
        cache: bool,
        priority: str,
    ) -> None:
        self.model = model
        self.aspect_ratio = aspect_ratio
        self.image_size = image_size
        self.cache = cache
        self.priority = priority
        # content_hash's input, cut around the prompt (see content_hash).
        canonical = _canonical_json(self.request(PROMPT_SLOT))
        head, slot, tail = canonical.partition(encode_json_string(PROMPT_SLOT))
        if not slot or encode_json_string(PROMPT_SLOT) in tail:
            raise AssertionError(f"prompt slot not found exactly once in {canonical!r}")
        self.hash_head = f"{model}\n{head}"
        self.hash_tail = tail
        # sha256 fed with the head up to the prompt's opening quote, to copy for a prompt
        # that needs no escaping (intake hashes a million lines of one shape), and the rest.
        self.hash_open = _sha256(f'{self.hash_head}"'.encode())
        self.hash_close = f'"{tail}'.encode()

    def request(self, prompt: str) -> dict[str, Any]:
        return simple_request(prompt, self.aspect_ratio, self.image_size)

    def content_hash(self, encoded_prompt: str) -> str:
        """content_hash of a line of this shape, from its prompt as a JSON string literal."""
        return _sha256((self.hash_head + encoded_prompt + self.hash_tail).encode()).hexdigest()

    def __repr__(self) -> str:
        return (
            f"LineShape({self.model!r}, {self.aspect_ratio!r}, {self.image_size!r}, "
            f"cache={self.cache!r}, priority={self.priority!r})"
        )


class FastLine(NamedTuple):
    """An accepted simple line without reference images, as LineParser.parse_fast returns
    it: the request is not built (LineShape.request builds it when needed)."""

    line_no: int
    key: str
    prompt: str
    shape: LineShape
    metadata: dict[str, Any] | None
    key_generated: bool

    @property
    def prompt_preview(self) -> str:
        return prompt_preview(self.prompt)

    def accepted(self) -> AcceptedLine:
        """The same line as LineParser.parse gives it."""
        shape = self.shape
        return _accepted(
            {
                "line_no": self.line_no,
                "key": self.key,
                "model": shape.model,
                "request": shape.request(self.prompt),
                "aspect_ratio": shape.aspect_ratio,
                "image_size": shape.image_size,
                "prompt_preview": self.prompt_preview,
                "reference_images": (),
                "metadata": self.metadata if self.metadata is not None else {},
                "cache": shape.cache,
                "priority": shape.priority,
                "native": False,
                "prompt_chars": len(self.prompt),
                "key_generated": self.key_generated,
            }
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

    def fast_line(self, row: int) -> FastLine:
        return FastLine(
            self.line_nos[row],
            self.keys[row],
            self.prompts[row],
            self.shapes[row],
            None,
            self.generated[row],
        )


# --- line shapes -------------------------------------------------------------------------


class _SimpleLine(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    key: NotRequired[str | None]
    prompt: str
    aspect_ratio: NotRequired[str | None]
    image_size: NotRequired[str | None]
    model: NotRequired[str | None]
    reference_images: NotRequired[list[str]]
    metadata: NotRequired[dict[str, Any]]
    cache: NotRequired[bool]
    priority: NotRequired[Literal["batch", "urgent"]]


class _NativeLine(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    key: NotRequired[str | None]
    request: dict[str, Any]
    model: NotRequired[str | None]
    metadata: NotRequired[dict[str, Any]]
    cache: NotRequired[bool]
    priority: NotRequired[Literal["batch", "urgent"]]


# TypedDicts rather than BaseModels: validating straight to a dict is about twice as fast,
# and the hot path reads each field once anyway.
_SIMPLE: Final = TypeAdapter(_SimpleLine)
_NATIVE: Final = TypeAdapter(_NativeLine)
_validate_simple_json: Final = _SIMPLE.validator.validate_json
_SIMPLE_FIELDS: Final = tuple(_SimpleLine.__annotations__)
_NATIVE_FIELDS: Final = tuple(_NativeLine.__annotations__)


class _Reject(Exception):
    """Internal: carries one rejection out of nested checks."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class _ModelRules:
    spec: ModelSpec
    ratios: frozenset[str]
    sizes: frozenset[str]
    ratios_text: str
    sizes_text: str
    # Said after a size rejection when the lane, not the model, limits the sizes.
    sizes_note: str = ""


_VERTEX_SIZES_NOTE: Final = (
    " (Vertex batch produces 1K images only; send 2K/4K lines to a deployment with provider=gemini)"
)


def _rules_for(spec: ModelSpec, *, vertex: bool = False) -> _ModelRules:
    sizes = spec.image_sizes
    note = ""
    if vertex and sizes:
        sizes = tuple(size for size in sizes if size in VERTEX_BATCH_SIZES)
        note = _VERTEX_SIZES_NOTE if sizes != spec.image_sizes else ""
    return _ModelRules(
        spec=spec,
        ratios=frozenset(spec.aspect_ratios),
        sizes=frozenset(sizes),
        ratios_text=", ".join(spec.aspect_ratios),
        sizes_text=", ".join(sizes),
        sizes_note=note,
    )


@cache
def _rules_table(day: date, vertex: bool) -> Mapping[str, _ModelRules]:
    """The models a line may name on `day`: a shut-down model has no rules, so every path
    falls through to LineParser._rules, which says why and names the replacement."""
    return {
        spec.model_id: _rules_for(spec, vertex=vertex)
        for spec in MODELS
        if spec.status_on(day) is not Status.SHUT_DOWN
    }


# --- the parser --------------------------------------------------------------------------


class LineParser:
    """Validates the lines of one job, in order; remembers accepted keys to refuse duplicates.

    Keys are remembered as 60-bit hashes, not as strings: a million keys take about 77 MB
    (32-byte ints plus the set's table) whatever the keys' length. Two different keys
    sharing a hash would make the later one a false duplicate (rejected, never merged);
    with a million keys the chance of that is about one in two million. The hash is
    Python's own str hash: it is cached on the string and about ten times cheaper than
    blake2b, which mattered at a million lines. It is salted per process, so a retried
    intake could differ from the first only in that one-in-millions event; it would then
    reject a different line, and nothing is paid before intake finishes anyway.
    """

    def __init__(
        self,
        *,
        default_model: str,
        limits: IntakeLimits = DEFAULT_LIMITS,
        check_references: Callable[[Sequence[str]], int | None] | None = None,
        today: date | None = None,
        vertex: bool = False,
        references: ReferencePolicy | None = None,
    ) -> None:
        """`today` decides which models are shut down (the catalog's lifecycles); `vertex`
        limits sizes to what Vertex batch produces."""
        self._default_model_input = default_model
        self._today = today or datetime.now(UTC).date()
        self._table = _rules_table(self._today, vertex)
        # Models of accepted lines that did not come back as FastLines (whose shapes say).
        self._models_seen: set[str] = set()
        # The index of the first of a line's reference images that the store cannot serve
        # as an image, or None; it does the I/O, so the parser stays pure. Called before the
        # key is claimed, so a corrected line later in the file may reuse the key.
        self._check_references = check_references
        # Where reference images may live (core.references); intake and estimate pass the
        # deployment's, built from its settings.
        self._references = references if references is not None else DEFAULT_REFERENCES
        self._default_model = canonical_model(default_model)
        self._limits = limits
        self._max_line_bytes = limits.max_line_bytes
        self._max_prompt_chars = limits.max_prompt_chars
        self._seen: set[int] = set()
        self._default_rules = self._table.get(self._default_model)
        self._shapes: dict[tuple[str, str | None, str | None, bool, str], LineShape] = {}
        # The shape of a line with no option set (the job's default model, batch lane).
        self._plain_shape: LineShape | None = None

    def parse(self, line_no: int, raw: bytes) -> AcceptedLine | RejectedLine | None:
        """One line (without its newline). None for a blank line."""
        result = self._parse(line_no, raw, False)
        # Never a FastLine without fast=True; the check only tells the type checker so.
        return result.accepted() if isinstance(result, FastLine) else result

    def parse_fast(self, line_no: int, raw: bytes) -> FastLine | AcceptedLine | RejectedLine | None:
        """As parse, with the same checks and the same reasons, but a simple line without
        reference images comes back as a FastLine.

        The common line (a simple line whose every field is plainly fine) is accepted
        here with the checks of _accept_simple written as conditions to pass; any line
        that does not pass them all takes the full path, which finds the reason. So this
        accepts exactly what _accept_simple accepts, at about half its cost per line.
        """
        if line_no == 1 or not raw or len(raw) > self._max_line_bytes:
            return self._parse(line_no, raw, True)
        try:
            f = _validate_simple_json(raw)
        except ValidationError:
            # _parse without its preamble, which this line has passed.
            return None if raw.isspace() else self._slow(line_no, raw)
        key = f.get("key")
        prompt = f["prompt"]
        # pydantic leaves absent fields out, so a line of only a prompt and a key has every
        # option at its default: one length test instead of six lookups.
        plain = len(f) == (1 if key is None and "key" not in f else 2)
        if plain:
            model = aspect = size = None
            rules = self._default_rules
        else:
            model = f.get("model")
            aspect = f.get("aspect_ratio")
            size = f.get("image_size")
            rules = self._default_rules if model is None else self._table.get(model)
            if size is not None:
                size = size.upper()
        if (
            rules is None
            or (not plain and (f.get("reference_images") or f.get("metadata")))
            or not prompt
            or len(prompt) > self._max_prompt_chars
            or prompt.isspace()
            or (aspect is not None and aspect not in rules.ratios)
            or (size is not None and size not in rules.sizes)
            or (
                key is not None
                and not (
                    key
                    and len(key) <= MAX_KEY_CHARS
                    and key.isascii()
                    and key.isprintable()
                    and "/" not in key
                    and "\\" not in key
                    and ".." not in key
                    and not key.startswith("__")
                    and key != "."
                    and not key.isspace()
                )
            )
        ):
            try:
                return self._accept_simple(line_no, f, True)
            except _Reject as exc:
                return self._reject(
                    line_no, raw, line_key(line_no) if key is None else key, exc.field, exc.message
                )
            except _PARSER_ERRORS as exc:
                return self._reject(line_no, raw, None, None, _parser_failure(exc))
        generated = key is None
        if key is None:
            key = line_key(line_no)
        # One probe of the million-entry set (add, then compare sizes), not two.
        seen = self._seen
        known = len(seen)
        seen.add(hash(key) >> 4)
        if len(seen) == known:
            return self._duplicate_key(line_no, raw, key)
        shape = self._plain_shape if plain else None
        if shape is None:
            shape_key = (
                rules.spec.model_id,
                aspect,
                size,
                f.get("cache", True),
                f.get("priority", "batch"),
            )
            shape = self._shapes.get(shape_key)
            if shape is None:
                shape = self._shapes[shape_key] = LineShape(*shape_key)
            if plain:
                self._plain_shape = shape
        return _new_tuple(FastLine, (line_no, key, prompt, shape, None, generated))

    def parse_chunk(self, first: int, raws: Sequence[bytes]) -> ParsedChunk:
        """parse_fast over consecutive lines (numbered from `first`), as intake wants them:
        the FastLines without metadata as columns, with their content hashes, and every
        other line apart. The same verdicts and reasons as parse_fast line by line.

        A plain line (_KEY_FIRST, _PROMPT_FIRST) of a file whose plain shape is known is
        accepted here without a JSON parse; any line that is not plainly fine goes to
        parse_fast, which finds the reason. One loop over the chunk instead of a call and
        a FastLine per line: a million-line file is nearly all plain lines.
        """
        out = ParsedChunk()
        # Bound methods and constants in locals: the loop runs once per line of the file.
        add_line_no, add_key, add_prompt = out.line_nos.append, out.keys.append, out.prompts.append
        add_encoded, add_shape = out.encoded.append, out.shapes.append
        add_generated, add_digest = out.generated.append, out.digests.append
        others = out.others
        seen = self._seen
        claim = seen.add
        max_chars, max_bytes = self._max_prompt_chars, self._max_line_bytes
        key_first, prompt_first = _KEY_FIRST.fullmatch, _PROMPT_FIRST.fullmatch
        # The plain shape, and its hash parts: set once a plain line has been parsed, and
        # only read then (hash_open not None).
        shape = cast(LineShape, self._plain_shape)
        hash_open = shape.hash_open.copy if shape is not None else None
        hash_close = shape.hash_close if shape is not None else b""
        for line_no, raw in enumerate(raws, first):
            if hash_open is not None and len(raw) <= max_bytes and line_no != 1:
                m = key_first(raw)
                if m is not None:
                    key_bytes, prompt_bytes = m.group(1, 2)
                else:
                    m = prompt_first(raw)
                    if m is not None:
                        prompt_bytes, key_bytes = m.group(1, 2)
                if m is not None:
                    try:
                        prompt = prompt_bytes.decode()
                    except UnicodeDecodeError:
                        prompt = ""  # parse_fast says why
                    # Not empty by the pattern, unless it was not UTF-8.
                    if prompt and len(prompt) <= max_chars and not prompt.isspace():
                        key = line_key(line_no) if key_bytes is None else key_bytes.decode()
                        # One probe of the million-entry set (add, then compare sizes).
                        known = len(seen)
                        claim(hash(key) >> 4)
                        if len(seen) == known:
                            others.append(
                                (len(out.line_nos), self._duplicate_key(line_no, raw, key))
                            )
                            continue
                        add_line_no(line_no)
                        add_key(key)
                        add_prompt(prompt)
                        add_encoded(f'"{prompt}"')  # needs no escaping, by the pattern
                        add_shape(shape)
                        add_generated(key_bytes is None)
                        hashing = hash_open()
                        hashing.update(prompt_bytes)
                        hashing.update(hash_close)
                        add_digest(hashing.hexdigest())
                        continue
            parsed = self.parse_fast(line_no, raw)
            if hash_open is None and self._plain_shape is not None:
                # This line made the plain shape known: the patterns apply from the next.
                shape = self._plain_shape
                hash_open, hash_close = shape.hash_open.copy, shape.hash_close
            if parsed is None:
                continue
            if type(parsed) is FastLine and parsed[4] is None:
                add_line_no(line_no)
                add_key(parsed[1])
                add_prompt(parsed[2])
                prompt_json = encode_json_string(parsed[2])
                add_encoded(prompt_json)
                fast_shape = parsed[3]
                add_shape(fast_shape)
                add_generated(parsed[5])
                add_digest(fast_shape.content_hash(prompt_json))
            else:
                others.append((len(out.line_nos), parsed))
        return out

    def models_used(self) -> set[str]:
        """The models of every line accepted so far (for the job's lifecycle warnings)."""
        return self._models_seen | {shape.model for shape in self._shapes.values()}

    def _duplicate_key(self, line_no: int, raw: bytes, key: str) -> RejectedLine:
        return self._reject(
            line_no, raw, key, "key", f"duplicate key {_show(key)}: an earlier line already uses it"
        )

    def _parse(
        self, line_no: int, raw: bytes, fast: bool
    ) -> FastLine | AcceptedLine | RejectedLine | None:
        if not raw or raw.isspace():
            return None
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
            if not raw or raw.isspace():
                return None
        if len(raw) > self._limits.max_line_bytes:
            return self._reject(
                line_no,
                raw,
                None,
                None,
                f"the line is longer than the limit of {self._limits.max_line_bytes} bytes",
            )
        try:
            fields = _validate_simple_json(raw)
        except ValidationError:
            return self._slow(line_no, raw)
        try:
            return self._accept_simple(line_no, fields, fast)
        except _Reject as exc:
            key = fields.get("key")
            return self._reject(
                line_no, raw, line_key(line_no) if key is None else key, exc.field, exc.message
            )
        except _PARSER_ERRORS as exc:
            return self._reject(line_no, raw, None, None, _parser_failure(exc))

    # The common case: a simple line that pydantic already typed.
    def _accept_simple(
        self, line_no: int, f: _SimpleLine, fast: bool = False
    ) -> AcceptedLine | FastLine:
        key = f.get("key")
        generated = key is None
        if key is None:
            key = line_key(line_no)
        elif (
            not key
            or len(key) > MAX_KEY_CHARS
            # Printable ASCII has no control characters, so only / \\ and .. can be wrong
            # with it; str.isascii and str.isprintable are much cheaper than the regex.
            or (
                ("/" in key or "\\" in key or ".." in key)
                if key.isascii() and key.isprintable()
                else _KEY_BAD.search(key) is not None or key_bytes_problem(key) is not None
            )
            or key.startswith("__")
            or key == "."
            or key.isspace()
        ):
            raise _Reject("key", f"{key_problem(key)}; found {_show(key)}")
        model = f.get("model")
        rules = (
            self._table.get(model) if model is not None else self._default_rules
        ) or self._rules(model)
        prompt = f["prompt"]
        if not prompt or prompt.isspace():
            raise _Reject("prompt", "must not be empty or only whitespace")
        if len(prompt) > self._limits.max_prompt_chars:
            raise _Reject(
                "prompt",
                f"expected at most {self._limits.max_prompt_chars} characters; found {len(prompt)}",
            )
        spec = rules.spec
        aspect = f.get("aspect_ratio")
        if aspect is not None and aspect not in rules.ratios:
            raise _Reject(
                "aspect_ratio",
                f"expected one of {rules.ratios_text} for {spec.model_id}; found {_show(aspect)}",
            )
        size = f.get("image_size")
        if size is not None:
            size = _check_size(rules, size.upper(), "image_size", shown=size)
        parts: list[dict[str, Any]] = []
        refs = f.get("reference_images")
        if refs:
            if len(refs) > spec.max_reference_images:
                raise _Reject(
                    "reference_images",
                    f"expected at most {spec.max_reference_images} for {spec.model_id}; "
                    f"found {len(refs)}",
                )
            for index, uri in enumerate(refs):
                mime = _ref_mime(index, uri, self._references)
                parts.append({"fileData": {"fileUri": uri, "mimeType": mime}})
            self._readable(None, refs)
        metadata = f.get("metadata")
        if metadata:
            _check_metadata(metadata)
        # self._claim(key), inlined: this runs once per line.
        digest = hash(key) >> 4
        if digest in self._seen:
            raise _Reject("key", f"duplicate key {_show(key)}: an earlier line already uses it")
        self._seen.add(digest)
        if fast and not refs:
            cache = f.get("cache", True)
            priority = f.get("priority", "batch")
            shape_key = (spec.model_id, aspect, size, cache, priority)
            shape = self._shapes.get(shape_key)
            if shape is None:
                shape = self._shapes[shape_key] = LineShape(*shape_key)
            return FastLine(line_no, key, prompt, shape, metadata or None, generated)
        self._models_seen.add(spec.model_id)
        return _accepted(
            {
                "line_no": line_no,
                "key": key,
                "model": spec.model_id,
                "request": simple_request(prompt, aspect, size, tuple(parts)),
                "aspect_ratio": aspect,
                "image_size": size,
                "prompt_preview": prompt
                if len(prompt) <= PREVIEW_CHARS and prompt.isprintable()
                else _preview(prompt),
                "reference_images": tuple(refs) if refs else (),
                "metadata": metadata or {},
                "cache": f.get("cache", True),
                "priority": f.get("priority", "batch"),
                "native": False,
                "prompt_chars": len(prompt),
                "key_generated": generated,
            }
        )

    # Everything the fast path did not accept: find the precise reason, or accept a native
    # line.
    def _slow(self, line_no: int, raw: bytes) -> AcceptedLine | RejectedLine:
        try:
            return self._slow_checked(line_no, raw)
        except _PARSER_ERRORS as exc:
            # No input line may fail the file: whatever a parser or a check raises about one
            # line (a bound missed, a bug) is that line's rejection. The store's errors
            # (TransientError from the reference check) are not among these and propagate.
            return self._reject(line_no, raw, None, None, _parser_failure(exc))

    def _slow_checked(self, line_no: int, raw: bytes) -> AcceptedLine | RejectedLine:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self._reject(
                line_no,
                raw,
                None,
                None,
                f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}",
            )
        too_deep = json_depth_problem(raw)
        if too_deep is not None:
            return self._reject(line_no, raw, None, None, too_deep)
        try:
            obj = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            return self._reject(line_no, raw, None, None, f"not valid JSON: {exc}")
        if not isinstance(obj, dict):
            return self._reject(
                line_no, raw, None, None, f"expected a JSON object; found {_json_type(obj)}"
            )
        raw_key = obj.get("key")
        shown_key = raw_key if isinstance(raw_key, str) else None
        if "key" not in obj or raw_key is None:
            shown_key = line_key(line_no)
        try:
            _check_encodable(obj)
            if "request" in obj:
                return self._accept_native(line_no, obj)
            try:
                fields = _SIMPLE.validate_python(obj)
            except ValidationError as exc:
                raise _pydantic_reject(exc, simple=True) from None
            accepted = self._accept_simple(line_no, fields)
        except _Reject as exc:
            return self._reject(line_no, raw, shown_key, exc.field, exc.message)
        assert isinstance(accepted, AcceptedLine)  # fast=False never gives a FastLine
        return accepted

    def _accept_native(self, line_no: int, obj: dict[str, Any]) -> AcceptedLine:
        try:
            f = _NATIVE.validate_python(obj)
        except ValidationError as exc:
            raise _pydantic_reject(exc, simple=False) from None
        key, generated = self._check_key(line_no, f.get("key"))
        line_model = f.get("model")
        request = f["request"]
        try:
            found = check_request(request)
        except NativeProblem as exc:
            raise _Reject(exc.field, exc.message) from None
        inner_model = request.get("model")
        if inner_model is not None and not isinstance(inner_model, str):
            raise _Reject("request.model", f"expected a string; found {_show(inner_model)}")
        if (
            line_model is not None
            and inner_model is not None
            and canonical_model(line_model) != canonical_model(inner_model)
        ):
            raise _Reject(
                "model",
                f"the line says {_show(line_model)} but request.model says "
                f"{_show(inner_model)}; one batch holds one model",
            )
        try:
            rules = self._rules(line_model if line_model is not None else inner_model)
        except _Reject as exc:
            if line_model is None and inner_model is not None:
                exc.field = "request.model"
            raise
        spec = rules.spec

        contents = request.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Reject("request.contents", f"expected a non-empty list; found {_show(contents)}")
        texts = found.texts
        images = found.images
        for path, mime in found.mime_types:
            if mime.lower() not in _IMAGE_MIMES:
                raise _Reject(
                    path, f"expected an image type among {_IMAGE_MIMES_TEXT}; found {_show(mime)}"
                )
        for path, uri in found.file_uris:
            problem = _ref_problem(uri, self._references)
            if problem is not None:
                raise _Reject(path, f"reference image {problem}")
        prompt_chars = sum(len(t) for t in texts)
        if prompt_chars > self._limits.max_prompt_chars:
            raise _Reject(
                "request.contents",
                f"text parts: expected at most {self._limits.max_prompt_chars} characters in "
                f"all; found {prompt_chars}",
            )
        if images > spec.max_reference_images:
            raise _Reject(
                "request.contents",
                f"image parts: expected at most {spec.max_reference_images} for "
                f"{spec.model_id}; found {images}",
            )

        metadata = f.get("metadata")
        if metadata:
            _check_metadata(metadata)
        aspect, size = _native_image_config(rules, request)
        if "model" in request:
            request = {k: v for k, v in request.items() if k != "model"}
        if found.file_uris:
            uris = [uri for _, uri in found.file_uris]
            self._readable([path for path, _ in found.file_uris], uris)
        self._claim(key)
        self._models_seen.add(spec.model_id)
        first_text = next((t for t in texts if t.strip()), "")
        return AcceptedLine(
            line_no=line_no,
            key=key,
            model=spec.model_id,
            request=request,
            aspect_ratio=aspect,
            image_size=size,
            prompt_preview=_preview(first_text),
            reference_images=tuple(uri for _, uri in found.file_uris),
            metadata=f.get("metadata") or {},
            cache=f.get("cache", True),
            priority=f.get("priority", "batch"),
            native=True,
            prompt_chars=prompt_chars,
            key_generated=generated,
        )

    def _rules(self, model: str | None) -> _ModelRules:
        name = model if model is not None else self._default_model
        rules = self._table.get(name)
        if rules is not None:
            return rules
        spec = model_spec(name)
        if spec is not None:
            rules = self._table.get(spec.model_id)
            if rules is not None:
                return rules
            problem = lifecycle_problem(spec.model_id, self._today)
            origin = "" if model is not None else " (the job's default model)"
            raise _Reject("model", f"{problem}{origin}")
        shown = _show(model if model is not None else self._default_model_input)
        origin = "" if model is not None else " (the job's default model)"
        raise _Reject("model", f"unknown model {shown}{origin}; expected one of {_KNOWN_MODELS}")

    def _check_key(self, line_no: int, key: str | None) -> tuple[str, bool]:
        if key is None:
            return line_key(line_no), True
        problem = key_problem(key)
        if problem is not None:
            raise _Reject("key", f"{problem}; found {_show(key)}")
        return key, False

    def _readable(self, paths: Sequence[str] | None, uris: Sequence[str]) -> None:
        """Reject the line when the store cannot serve one of its references as an image:
        `paths` name each URI's field (native form), None means reference_images."""
        if self._check_references is None:
            return
        index = self._check_references(uris)
        if index is None:
            return
        # Written the same whatever the store found (no object, no right to read it, not
        # an image): a rejection must not tell what lies in a bucket.
        if paths is None:
            raise _Reject("reference_images", f"item {index + 1}: {uris[index]}: {UNREADABLE}")
        raise _Reject(paths[index], f"reference image {uris[index]}: {UNREADABLE}")

    def _claim(self, key: str) -> None:
        digest = hash(key) >> 4
        seen = self._seen
        if digest in seen:
            raise _Reject("key", f"duplicate key {_show(key)}: an earlier line already uses it")
        seen.add(digest)

    def _reject(
        self, line_no: int, raw: bytes, key: str | None, field: str | None, message: str
    ) -> RejectedLine:
        where = f"line {line_no}, field {_show(field)}" if field else f"line {line_no}"
        return RejectedLine(
            line_no=line_no,
            key=key if key is None or _encodable(key) else None,
            field=field,
            reason=f"{where}: {message}",
            raw=raw[: RAW_KEEP_CHARS * 4].decode("utf-8", "replace")[:RAW_KEEP_CHARS],
        )


# --- checks ------------------------------------------------------------------------------


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
        found = bad.group()
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
    if key == ".":
        return 'must not be "."'
    if key.startswith("__"):
        return 'must not start with "__" (reserved)'
    return None


def _native_image_config(
    rules: _ModelRules, request: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """Aspect ratio and size of a native request, read in either case, checked as written."""
    gen_name, generation = _either_named(
        request, "generationConfig", "generation_config", "request"
    )
    if generation is None:
        return None, None
    path = f"request.{gen_name}"
    if not isinstance(generation, dict):
        raise _Reject(path, f"expected an object; found {_show(generation)}")
    mod_name, modalities = _either_named(
        generation, "responseModalities", "response_modalities", path
    )
    if modalities is not None:
        field = f"{path}.{mod_name}"
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
            raise _Reject(field, f"expected a list of strings; found {_show(modalities)}")
        if "IMAGE" not in (m.upper() for m in modalities):
            raise _Reject(field, f'expected it to include "IMAGE"; found {_show(modalities)}')
    cfg_name, image_config = _either_named(generation, "imageConfig", "image_config", path)
    if image_config is None:
        return None, None
    path = f"{path}.{cfg_name}"
    if not isinstance(image_config, dict):
        raise _Reject(path, f"expected an object; found {_show(image_config)}")
    spec = rules.spec
    ratio_name, aspect = _either_named(image_config, "aspectRatio", "aspect_ratio", path)
    if aspect is not None and (not isinstance(aspect, str) or aspect not in rules.ratios):
        raise _Reject(
            f"{path}.{ratio_name}",
            f"expected one of {rules.ratios_text} for {spec.model_id}; found {_show(aspect)}",
        )
    size_name, size = _either_named(image_config, "imageSize", "image_size", path)
    if size is not None:
        field = f"{path}.{size_name}"
        if not isinstance(size, str):
            raise _Reject(field, f"expected a string; found {_show(size)}")
        # Staged as written, so no case folding here: the service refuses "2k".
        size = _check_size(rules, size, field, shown=size)
    return aspect, size


def _check_size(rules: _ModelRules, size: str, field: str, *, shown: str) -> str:
    spec = rules.spec
    if not rules.sizes:
        raise _Reject(
            field,
            f"{spec.model_id} has a single output size and takes no image size; "
            f"found {_show(shown)}",
        )
    if size not in rules.sizes:
        raise _Reject(
            field,
            f"expected one of {rules.sizes_text} for {spec.model_id}; found {_show(shown)}"
            f"{rules.sizes_note}",
        )
    return size


def _ref_problem(uri: str, policy: ReferencePolicy) -> str | None:
    """Why `uri` cannot be a reference image, from its text alone (form and location)."""
    if any(ch.isspace() or ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in uri):
        return f"must not contain whitespace or control characters; found {_show(uri)}"
    return policy.problem(uri)


def _ref_mime(index: int, uri: str, policy: ReferencePolicy) -> str:
    """The MIME type of a reference image URI, or a rejection naming the item."""
    where = f"item {index + 1}: "
    problem = _ref_problem(uri, policy)
    if problem is not None:
        raise _Reject("reference_images", where + problem)
    path = uri[5:].partition("/")[2] if uri.startswith("gs://") else urlsplit(uri).path
    extension = path.rsplit("/", 1)[-1].rpartition(".")[2].lower() if "." in path else ""
    mime = IMAGE_MIME_BY_EXTENSION.get(extension)
    if mime is None:
        known = ", ".join(f".{e}" for e in IMAGE_MIME_BY_EXTENSION)
        raise _Reject(
            "reference_images",
            f"{where}cannot tell the image type from the name; expected an extension among "
            f"{known} (or use the native form with an explicit mimeType); found {_show(uri)}",
        )
    return mime


def _check_metadata(metadata: dict[str, Any]) -> None:
    problem = metadata_problem(metadata)
    if problem is not None:
        raise _Reject("metadata", problem)


def _check_encodable(obj: Mapping[str, Any]) -> None:
    """Refuse values the stdlib parser lets through but no JSON writer can emit: lone
    surrogate escapes (\\ud800) and out-of-range numbers (1e400 becomes inf)."""
    try:
        json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return
    except (ValueError, UnicodeEncodeError):
        pass
    for name, value in obj.items():
        try:
            json.dumps({name: value}, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _Reject(
                name,
                "contains an unpaired surrogate escape (\\uD800-\\uDFFF), which is not "
                "valid Unicode",
            ) from None
        except ValueError:
            raise _Reject(
                name, "contains a number out of range (NaN, Infinity or too large)"
            ) from None


# What a parser or a check can raise about one line; each is that line's rejection.
_PARSER_ERRORS: Final = (ArithmeticError, LookupError, RecursionError, TypeError, ValueError)


def _parser_failure(exc: BaseException) -> str:
    return f"could not be parsed ({type(exc).__name__}); the line is rejected, the file goes on"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _pydantic_reject(exc: ValidationError, *, simple: bool) -> _Reject:
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    field = str(loc[0]) if loc else None
    kind = error["type"]
    value = error.get("input")
    if len(loc) > 1 and isinstance(loc[1], int):
        item = f"item {loc[1] + 1}: "
    elif len(loc) > 1:
        item = f"{loc[1]!s}: "
    else:
        item = ""
    allowed = _SIMPLE_FIELDS if simple else _NATIVE_FIELDS
    if kind == "extra_forbidden":
        if not simple and field in _SIMPLE_FIELDS:
            message = 'not allowed in a native line (one with "request")'
        else:
            message = f"unknown field; expected one of {', '.join(allowed)}"
    elif kind == "missing":
        message = "required"
    elif kind == "string_type":
        message = f"{item}expected a string; found {_show(value)}"
    elif kind == "bool_type":
        message = f"{item}expected true or false; found {_show(value)}"
    elif kind == "list_type":
        message = f"{item}expected a list; found {_show(value)}"
    elif kind in ("dict_type", "model_type"):
        message = f"{item}expected an object; found {_show(value)}"
    elif kind == "literal_error":
        message = f"expected one of {', '.join(PRIORITIES)}; found {_show(value)}"
    else:
        message = f"{item}{error['msg']}; found {_show(value)}"
    return _Reject(field, message)


# --- helpers -----------------------------------------------------------------------------


def _accepted(fields: dict[str, Any]) -> AcceptedLine:
    """Build an AcceptedLine without the frozen dataclass __init__, which sets each field
    through object.__setattr__ and costs as much as parsing the line's JSON."""
    line: AcceptedLine = _new_object(AcceptedLine)
    line.__dict__.update(fields)
    return line


def _either_named(mapping: Mapping[str, Any], camel: str, snake: str, path: str) -> tuple[str, Any]:
    if camel in mapping and snake in mapping:
        raise _Reject(path, f'both "{camel}" and "{snake}" are set; keep one')
    if camel in mapping:
        return camel, mapping[camel]
    return snake, mapping.get(snake)


def prompt_preview(prompt: str) -> str:
    """The prompt_preview of a simple line's prompt."""
    return prompt if len(prompt) <= PREVIEW_CHARS and prompt.isprintable() else _preview(prompt)


def _preview(text: str) -> str:
    head = text[: PREVIEW_CHARS + 1]
    if not head.isprintable():
        head = " ".join(head.split())
    if len(head) > PREVIEW_CHARS:
        head = head[: PREVIEW_CHARS - 1] + "…"
    return head


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(value: Any) -> str:
    """A value as JSON, cut short, and always encodable (reasons end up in UTF-8 files)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if not _encodable(text):
        text = json.dumps(value, default=str)
    elif not text.isascii():
        text = _SHOWN_ESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


# --- streaming ---------------------------------------------------------------------------


def iter_raw_lines(
    stream: IO[bytes], *, max_line_bytes: int, chunk_size: int = _READ_CHUNK
) -> Iterator[tuple[int, bytes]]:
    """Split a byte stream into (1-based line number, line) without newlines.

    Strips a UTF-8 BOM from the start of the stream and a trailing CR from every line. A
    line longer than max_line_bytes comes out cut to max_line_bytes + 1 bytes, so the
    parser sees it is too long, and its remainder is read past without being kept: memory
    stays within one line limit plus one read chunk.
    """
    for first, lines in iter_line_chunks(
        stream, max_line_bytes=max_line_bytes, chunk_size=chunk_size
    ):
        yield from enumerate(lines, first)


def iter_line_chunks(
    stream: IO[bytes], *, max_line_bytes: int, chunk_size: int = _READ_CHUNK
) -> Iterator[tuple[int, list[bytes]]]:
    """iter_raw_lines a read chunk at a time: (number of the first line, its lines).

    For a loop over a million lines: `for n, line in enumerate(lines, first)` costs less per
    line than resuming a generator, and a chunk without a CR and without an overlong line
    (nearly all of them) is split with one bytes.split and no per-line work.
    """
    cap = max_line_bytes + 2  # room for a CR, so a line of exactly the limit plus CR fits
    line_no = 0
    carry: list[bytes] = []  # pieces of the unfinished line, at most cap bytes in total
    carried = 0

    def finish(line: bytes) -> bytes:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > max_line_bytes:
            line = line[: max_line_bytes + 1]
        return line

    for chunk in _chunks_without_bom(stream, chunk_size):
        pieces = chunk.split(b"\n")
        tail = pieces.pop()
        if pieces:
            if carry:
                carry.append(pieces[0])
                pieces[0] = b"".join(carry)
                carry = []
                carried = 0
            # Only the first piece, joined with the carry, can be longer than the chunk or
            # end in a CR that came with the previous chunk.
            first = pieces[0]
            if (
                b"\r" in chunk
                or first.endswith(b"\r")
                or len(first) > max_line_bytes
                or (len(chunk) > max_line_bytes and max(map(len, pieces)) > max_line_bytes)
            ):
                pieces = [finish(piece) for piece in pieces]
            yield line_no + 1, pieces
            line_no += len(pieces)
        if tail and carried < cap:
            piece = tail[: cap - carried]
            carry.append(piece)
            carried += len(piece)
    if carry:
        yield line_no + 1, [finish(b"".join(carry))]


def _chunks_without_bom(stream: IO[bytes], chunk_size: int) -> Iterator[bytes]:
    head = b""
    # A short read may split the BOM itself, so gather three bytes before looking.
    while len(head) < len(BOM):
        chunk = stream.read(chunk_size)
        if not chunk:
            break
        head += chunk
    if head.startswith(BOM):
        head = head[len(BOM) :]
    if head:
        yield head
    while chunk := stream.read(chunk_size):
        yield chunk


# --- identity for the dedup cache ----------------------------------------------------------


def content_hash(line: AcceptedLine | FastLine) -> str:
    """sha256 hex of the model and the canonical JSON of the request.

    Native requests are normalised to camelCase keys first, so the same request written in
    either case hashes alike. Reference images count by URI, not by their bytes. A FastLine
    hashes from its shape's template, to the same value as its AcceptedLine.
    """
    if isinstance(line, FastLine):
        return line.shape.content_hash(encode_json_string(line.prompt))
    request: Any = _camel_keys(line.request) if line.native else line.request
    return _sha256(f"{line.model}\n{_canonical_json(request)}".encode()).hexdigest()


def _canonical_json(request: Any) -> str:
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def _camel(name: str) -> str:
    if "_" not in name:
        return name
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)
