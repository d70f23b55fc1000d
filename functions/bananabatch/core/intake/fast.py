"""The fast parser: the reference parser's answers, at a small multiple of a bare
`json.loads` pass over a million lines. Its only contract is to answer exactly what
reference.ReferenceParser answers; the property tests (tests/unit/test_intake_fast.py,
test_intake_properties.py) hold it to that.

It decides nothing on its own. A line whose every field is plainly fine (by the rules'
own functions, data and patterns in rules.py) is accepted here; every other line is handed
to the reference parser, which finds the reason or accepts it. Two steps, each for the
common line:

- parse_fast: one pydantic `validate_json` call and plain checks; a simple line without
  reference images comes back as a FastLine (key, prompt and an interned LineShape)
  instead of an AcceptedLine with its request built, because intake writes such lines
  from per-shape templates and never needs the request as a dict;
- parse_chunk: a plain line (`{"key": ..., "prompt": ...}`, nothing to unescape) of a
  file whose plain shape is known is recognised by a regular expression without parsing
  JSON, and the chunk comes back as columns (model.ParsedChunk).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date
from typing import Final, cast

from pydantic import ValidationError

from bananabatch.core.intake.limits import DEFAULT_LIMITS, IntakeLimits, metadata_problem
from bananabatch.core.intake.model import (
    AcceptedLine,
    FastLine,
    ParsedChunk,
    RejectedLine,
)
from bananabatch.core.intake.openai_rules import check_openai_fields
from bananabatch.core.intake.reference import ReferenceParser, SimpleLine
from bananabatch.core.intake.request import LineShape, encode_json_string
from bananabatch.core.intake.rightsize import right_size
from bananabatch.core.intake.rules import (
    DEFAULT_OPTIONS,
    PLAIN_KEY,
    SIMPLE,
    LineOptions,
    SimpleFields,
    duplicate_key,
    key_problem,
    line_key,
    options_of,
    plain_key,
    prompt_problem,
    simple_size,
)
from bananabatch.core.intake.seen import HashTable
from bananabatch.core.intake.stream import BOM
from bananabatch.core.intake.text import Reject
from bananabatch.core.references import ReferencePolicy

_validate_simple_json: Final = SIMPLE.validator.validate_json
_new_tuple: Final = tuple.__new__


def _plain_pattern_texts(prompt_char: str) -> tuple[str, str]:
    """The plain line, `{"key": ..., "prompt": ...}` in either order or a prompt alone,
    recognised without parsing JSON: nearly every line of a large file is one, and a regex
    match costs less than a JSON parse plus the checks on the dict it builds.

    Each pattern admits only strings that need no JSON unescaping, so the captured text is
    the values themselves (once decoded from UTF-8): a key that rules.PLAIN_KEY matches (so
    key_problem accepts it), a prompt of `prompt_char`s (no `"`, `\\` or control character:
    JSON forbids raw ones), still to be held to prompt_problem. Anything else (escapes,
    other fields, other spacing than spaces and tabs) fails the match and takes parse_fast,
    which accepts it or hands it to the reference parser.

    Both name their groups `key` (empty or None when absent), `encoded` (the prompt as its
    JSON string, quotes included) and `prompt`.
    """
    ws = r"[ \t]*"
    comma = ws + r"," + ws
    key = r'"key"' + ws + r":" + ws + r'"(?P<key>' + PLAIN_KEY + r')"'
    prompt = r'"prompt"' + ws + r":" + ws + r'(?P<encoded>"(?P<prompt>' + prompt_char + r'+)")'
    open_, close = ws + r"\{" + ws, ws + r"\}" + ws
    return (
        open_ + key + comma + prompt + close,
        open_ + prompt + r"(?:" + comma + key + r")?" + close,
    )


# The bytes a plain line never has but for the newline that ends it: with none in a chunk,
# a prompt is any run of characters but `"` (and a match still spans one line; see
# _plain_chunk), which the regex engine takes in far fewer steps than a set of characters.
_NEEDS_ESCAPE: Final = bytes([*range(0x0A), *range(0x0B, 0x20), ord("\\")])
_KEY_FIRST_TEXT, _PROMPT_FIRST_TEXT = _plain_pattern_texts(r'[^"\\\x00-\x1f]')
_KEY_FIRST_ANY, _PROMPT_FIRST_ANY = _plain_pattern_texts(r'[^"]')
# One line, as bytes (fullmatch).
_KEY_FIRST: Final = re.compile(_KEY_FIRST_TEXT.encode())
_PROMPT_FIRST: Final = re.compile(_PROMPT_FIRST_TEXT.encode())
# A whole chunk's text without _NEEDS_ESCAPE, a line a match (findall gives each line's
# groups: key, encoded, prompt for the key first; encoded, prompt, key for the prompt
# first). json.dumps' own layout first: without the optional spacing it takes half the time.
_JSON_DUMPS_LINES: Final = re.compile(
    r'(?m)^\{"key": "(' + PLAIN_KEY + r')", "prompt": ("([^"]+)")\}$'
)
_KEY_FIRST_LINES: Final = re.compile(f"(?m)^{_KEY_FIRST_ANY}$")
_PROMPT_FIRST_LINES: Final = re.compile(f"(?m)^{_PROMPT_FIRST_ANY}$")
# The most chunks parsed line by line, after whole-chunk passes that missed, before the next
# try (see LineParser._plain_skip).
PLAIN_BACKOFF: Final = 32
_ShapeKey = tuple[str, str | None, str | None, LineOptions, str | None, str | None]


def _digests(shape: LineShape, prompts: Sequence[str]) -> list[str]:
    """shape.content_hash of lines whose prompts need no escaping, from the shape's hash of
    its head (copied) rather than hashing the head again for each."""
    hash_open, hash_close = shape.hash_open.copy, shape.hash_close
    digests: list[str] = []
    add = digests.append
    for prompt in prompts:
        hashing = hash_open()
        hashing.update(prompt.encode())
        hashing.update(hash_close)
        add(hashing.hexdigest())
    return digests


class LineParser(ReferenceParser):
    """The parser intake and estimate use: ReferenceParser's answers, fast. `parse` gives
    them as the reference does; parse_fast and parse_chunk in the forms intake wants."""

    def __init__(
        self,
        *,
        default_model: str,
        limits: IntakeLimits = DEFAULT_LIMITS,
        check_references: Callable[[Sequence[str]], int | None] | None = None,
        today: date | None = None,
        vertex: bool = False,
        references: ReferencePolicy | None = None,
        openai: bool = True,
        seen: HashTable | None = None,
    ) -> None:
        super().__init__(
            default_model=default_model,
            limits=limits,
            check_references=check_references,
            today=today,
            vertex=vertex,
            references=references,
            openai=openai,
            seen=seen,
        )
        self._max_line_bytes = limits.max_line_bytes
        self._max_prompt_chars = limits.max_prompt_chars
        self._default_rules = self._table.get(self._default_model)
        self._shapes: dict[_ShapeKey, LineShape] = {}
        # The shape of a line with no option set (the job's default model, every option at
        # its default), once a line of it is accepted; its key, if the default model is served.
        self._plain_shape: LineShape | None = None
        self._plain_key: _ShapeKey | None = None
        # After a chunk that is not all plain lines, the next `_plain_skip` chunks go line by
        # line without trying the whole-chunk pass, twice as many after each miss in a row
        # (up to PLAIN_BACKOFF): a file whose every chunk holds an odd line pays for the
        # missed pass on few chunks, a file with an odd line here and there on one.
        self._plain_skip = 0
        self._plain_backoff = 1
        if self._default_rules is not None:
            # A gpt-image default model gives a plain line its size, quality and format.
            size, quality, output_format = check_openai_fields(
                self._default_rules, None, None, None, None
            )
            self._plain_key = (
                self._default_rules.spec.model_id,
                None,
                size,
                DEFAULT_OPTIONS,
                quality,
                output_format,
            )

    def parse(self, line_no: int, raw: bytes) -> AcceptedLine | RejectedLine | None:
        """One line (without its newline), as ReferenceParser.parse answers it."""
        result = self.parse_fast(line_no, raw)
        return result.accepted() if isinstance(result, FastLine) else result

    def parse_fast(self, line_no: int, raw: bytes) -> FastLine | AcceptedLine | RejectedLine | None:
        """As parse, but a simple line without reference images comes back as a FastLine."""
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if not raw or len(raw) > self._max_line_bytes:
            return self._reference(line_no, raw)
        try:
            f = _validate_simple_json(raw)
        except ValidationError:
            return self._reference(line_no, raw)
        shape_key = self._shape_key(f)
        key = f.get("key")
        prompt = f["prompt"]
        if (
            shape_key is None
            or prompt_problem(prompt, self._max_prompt_chars) is not None
            or (key is not None and plain_key(key) is None and key_problem(key) is not None)
        ):
            return self._reference(line_no, raw)
        generated = key is None
        if key is None:
            key = line_key(line_no)
        if not self._seen.add(hash(key) >> 4):
            return self._duplicate(line_no, raw, key)
        shape = self._shapes.get(shape_key) or self._shape(*shape_key)
        if "display_size" in f or "max_edge" in f:
            self._tally_right_sized(f, shape)
        metadata = f.get("metadata") or None
        return _new_tuple(FastLine, (line_no, key, prompt, shape, metadata, generated))

    def _reference(self, line_no: int, raw: bytes) -> FastLine | AcceptedLine | RejectedLine | None:
        """The reference parser's answer, a simple line without reference images as a
        FastLine."""
        verdict = self._verdict(line_no, raw)
        if not isinstance(verdict, SimpleLine):
            return verdict
        if verdict.reference_images:
            return verdict.accepted()
        shape = self._shape(
            verdict.rules.spec.model_id,
            verdict.aspect_ratio,
            verdict.image_size,
            verdict.options,
            verdict.quality,
            verdict.output_format,
        )
        return FastLine(
            line_no, verdict.key, verdict.prompt, shape, verdict.metadata, verdict.key_generated
        )

    def _shape_key(self, f: SimpleFields) -> _ShapeKey | None:
        """The shape of a simple line whose model, aspect ratio, size and metadata are
        plainly fine and that has no reference images, as its key among the shapes; None
        for any other line."""
        if len(f) == 1 + ("key" in f):
            # Only a prompt and a key: every option at its default.
            return self._plain_key
        model = f.get("model")
        rules = self._default_rules if model is None else self._table.get(model)
        aspect = f.get("aspect_ratio")
        size = f.get("image_size")
        if size is not None:
            size = simple_size(size)
        metadata = f.get("metadata")
        if (
            rules is None
            or f.get("reference_images")
            or (aspect is not None and aspect not in rules.ratios)
            or (size is not None and size not in rules.sizes)
            or (metadata and metadata_problem(metadata) is not None)
        ):
            return None
        try:
            display, edge = f.get("display_size"), f.get("max_edge")
            if display is not None or edge is not None:
                sized = right_size(rules, aspect, size, display, edge)
                aspect, size = sized.aspect_ratio, sized.image_size
            size, quality, output_format = check_openai_fields(
                rules, aspect, size, f.get("quality"), f.get("output_format"), f.get("priority")
            )
        except Reject:
            return None
        return (rules.spec.model_id, aspect, size, options_of(f), quality, output_format)

    def _shape(
        self,
        model: str,
        aspect: str | None,
        size: str | None,
        options: LineOptions,
        quality: str | None = None,
        output_format: str | None = None,
    ) -> LineShape:
        """The one shape of lines with these options (made the first time)."""
        shape_key = (model, aspect, size, options, quality, output_format)
        shape = self._shapes.get(shape_key)
        if shape is None:
            shape = self._shapes[shape_key] = LineShape(*shape_key)
            if shape_key == self._plain_key:
                self._plain_shape = shape
        return shape

    def parse_chunk(self, first: int, raws: Sequence[bytes]) -> ParsedChunk:
        """parse_fast over consecutive lines (numbered from `first`), as intake wants them:
        the FastLines without metadata as columns, with their content hashes, and every
        other line apart. The same verdicts and reasons as parse_fast line by line.

        A plain line (_KEY_FIRST, _PROMPT_FIRST) of a file whose plain shape is known is
        accepted here without a JSON parse; any other line goes to parse_fast. A chunk of
        plain lines only (nearly every chunk of a large file) is recognised in one regex
        pass over its text (_plain_chunk); any other chunk line by line (_parse_lines).
        """
        shape = self._plain_shape
        if first == 1 or shape is None or not raws:
            return self._parse_lines(first, raws)
        if self._plain_skip:
            self._plain_skip -= 1
            return self._parse_lines(first, raws)
        plain = self._plain_chunk(first, raws, shape)
        if plain is not None:
            self._plain_backoff = 1
            return plain
        self._plain_skip = self._plain_backoff
        self._plain_backoff = min(2 * self._plain_backoff, PLAIN_BACKOFF)
        return self._parse_lines(first, raws)

    def _parse_lines(self, first: int, raws: Sequence[bytes]) -> ParsedChunk:
        """parse_chunk, a line at a time: one loop over the chunk instead of a call and a
        FastLine per line.

        The keys of a run of plain lines are claimed together (_settle), once per run
        instead of once per line; in a run that repeats a key the first occurrence still
        wins.
        """
        out = ParsedChunk()
        # Bound methods and constants in locals: the loop runs once per line of the file.
        add_line_no, add_key, add_prompt = out.line_nos.append, out.keys.append, out.prompts.append
        add_encoded, add_shape = out.encoded.append, out.shapes.append
        add_generated, add_digest = out.generated.append, out.digests.append
        # The plain lines since the last settle: their key hashes, and where they start.
        run: list[int] = []
        claim = run.append
        run_at = run_row = 0
        max_chars, max_bytes = self._max_prompt_chars, self._max_line_bytes
        key_first, prompt_first = _KEY_FIRST.fullmatch, _PROMPT_FIRST.fullmatch
        # The plain shape, and its hash parts: set once a plain line has been parsed, and
        # only read then (hash_open not None).
        shape = cast(LineShape, self._plain_shape)
        hash_open = shape.hash_open.copy if shape is not None else None
        hash_close = shape.hash_close if shape is not None else b""
        for line_no, raw in enumerate(raws, first):
            m = (
                (key_first(raw) or prompt_first(raw))
                if hash_open is not None and len(raw) <= max_bytes and line_no != 1
                else None
            )
            if m is not None:
                key_bytes, prompt_bytes = m.group("key", "prompt")
                try:
                    prompt = prompt_bytes.decode()
                except UnicodeDecodeError:
                    prompt = ""  # the reference parser says why
                # prompt_problem's test, inline (a call a line costs ~5% of intake); a
                # prompt that fails it goes to parse_fast, which says why.
                if 0 < len(prompt) <= max_chars and not prompt.isspace():
                    key = line_key(line_no) if key_bytes is None else key_bytes.decode()
                    if not run:
                        run_at, run_row = line_no, len(out.line_nos)
                    claim(hash(key) >> 4)
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
            if run:
                self._settle(out, run, run_row, raws[run_at - first : line_no - first], run_at)
            self._add_parsed(out, line_no, raw)
            if hash_open is None and self._plain_shape is not None:
                # This line made the plain shape known: the patterns apply from the next.
                shape = self._plain_shape
                hash_open, hash_close = shape.hash_open.copy, shape.hash_close
        if run:
            self._settle(out, run, run_row, raws[run_at - first :], run_at)
        return out

    def _plain_chunk(
        self, first: int, raws: Sequence[bytes], shape: LineShape
    ) -> ParsedChunk | None:
        """parse_chunk's answer for a chunk whose every line is plain (_KEY_FIRST, or
        _PROMPT_FIRST) with a prompt that passes prompt_problem's test, from one regex pass
        over the chunk's text and a C-level step per column; None for any other chunk (the
        loop line by line answers it).

        The same lines as the loop's: text that decodes as a whole decodes piece by piece;
        a pattern here admits a line iff the loop's does, given no _NEEDS_ESCAPE byte; and
        a match runs from a line's start to a line's end, so as many matches as lines means
        each line is one match (a match across lines would leave fewer).
        """
        if max(map(len, raws)) > self._max_line_bytes:
            return None
        data = b"\n".join(raws)
        if len(data.translate(None, _NEEDS_ESCAPE)) != len(data):
            return None
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return None
        # What a chunk holds at once is kept small: intake's peak memory is held to a bound.
        del data
        count = len(raws)
        found = _JSON_DUMPS_LINES.findall(text)
        if len(found) != count:
            found = _KEY_FIRST_LINES.findall(text)
        if len(found) == count:
            del text
            keys, encoded, prompts = (list(column) for column in zip(*found, strict=True))
            del found
            generated = [False] * count
        elif not found and len(found := _PROMPT_FIRST_LINES.findall(text)) == count:
            del text
            encoded, prompts, given = (list(column) for column in zip(*found, strict=True))
            del found
            keys = [key or line_key(n) for n, key in enumerate(given, first)]
            generated = [not key for key in given]
        else:
            return None
        if max(map(len, prompts)) > self._max_prompt_chars or any(map(str.isspace, prompts)):
            return None
        out = ParsedChunk()
        out.line_nos = list(range(first, first + count))
        out.keys, out.prompts, out.encoded = keys, prompts, encoded
        out.shapes = [shape] * count
        out.generated = generated
        out.digests = _digests(shape, prompts)
        self._settle(out, [hash(key) >> 4 for key in keys], 0, raws, first)
        return out

    def _settle(
        self, out: ParsedChunk, run: list[int], row: int, raws: Sequence[bytes], first: int
    ) -> None:
        """Claim the key hashes `run` of a run of plain lines (rows `row` on of `out`, lines
        `raws` numbered from `first`), and empty `run`. When one of them was seen before or
        repeats in the run, they are claimed again one by one, in order, and a line whose
        key is taken leaves the rows for `others` as a duplicate: the verdicts of a claim a
        line."""
        if not self._seen.add_all_new(run):
            claim, line_nos, keys = self._seen.add, out.line_nos, out.keys
            repeats = [at for at, value in enumerate(run, row) if not claim(value)]
            duplicates = [
                self._duplicate(line_nos[at], raws[line_nos[at] - first], keys[at])
                for at in repeats
            ]
            out.drop_rows(repeats)
            # A duplicate sits after the rows kept before it.
            pairs = enumerate(zip(repeats, duplicates, strict=True))
            out.others.extend((at - n, duplicate) for n, (at, duplicate) in pairs)
        run.clear()

    def _add_parsed(self, out: ParsedChunk, line_no: int, raw: bytes) -> None:
        """parse_fast's answer for one line, into the chunk's columns or its others."""
        parsed = self.parse_fast(line_no, raw)
        if parsed is None:
            return
        if type(parsed) is FastLine and parsed.metadata is None:
            prompt_json = encode_json_string(parsed.prompt)
            out.line_nos.append(line_no)
            out.keys.append(parsed.key)
            out.prompts.append(parsed.prompt)
            out.encoded.append(prompt_json)
            out.shapes.append(parsed.shape)
            out.generated.append(parsed.key_generated)
            out.digests.append(parsed.shape.content_hash(prompt_json))
        else:
            out.others.append((len(out.line_nos), parsed))

    def models_used(self) -> set[str]:
        """The models of every line accepted so far (for the job's lifecycle warnings)."""
        return super().models_used() | {shape.model for shape in self._shapes.values()}

    def _tally_right_sized(self, f: SimpleFields, shape: LineShape) -> None:
        """Count an accepted right-sized line, as the reference parser does (the choice is
        the one _shape_key made: cached)."""
        display, edge = f.get("display_size"), f.get("max_edge")
        if display is None and edge is None:
            return
        model = f.get("model")
        rules = self._default_rules if model is None else self._table.get(model)
        assert rules is not None, "the line was accepted with these rules"
        size = f.get("image_size")
        sized = right_size(rules, f.get("aspect_ratio"), size, display, edge)
        self._right_sized.add(
            shape.model, shape.image_size, shape.quality, shape.options.priority, sized.covers
        )

    def _duplicate(self, line_no: int, raw: bytes, key: str) -> RejectedLine:
        exc = duplicate_key(key)
        return self._reject(line_no, raw, key, exc.field, exc.message)
