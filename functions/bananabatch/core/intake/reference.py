"""The reference parser: what every input line means, written to be read. It is the
specification; the fast parser (fast.py) must answer exactly what it answers, and the
property tests hold it to that.

Pure but for `check_references`, the store's answer to whether a reference image can be
read, which the caller hands in. A line (DESIGN.md "Input line") goes through these steps,
and the first that fails is its rejection, naming the line and the field:

1. blank (or a lone BOM on line 1): no answer at all; longer than `max_line_bytes`: rejected;
2. read as a simple line's fields (rules.SimpleFields) by pydantic's JSON parser, which
   gives the values typed. A line that does not read as one is read again by the standard
   library to say precisely why: UTF-8, nested at most MAX_JSON_DEPTH, a JSON object,
   nothing in it that no JSON writer can emit again (lone surrogates, out-of-range
   numbers), then a native line if it has `request` (rules.NativeFields), else the simple
   line's fields with their names and types;
3. each field against its rule in rules.py (key, model, prompt, aspect ratio, size,
   reference images, metadata), a native request against its allowlist (native.py);
4. the reference images readable, then the key not used by an earlier line of the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final, NamedTuple, NoReturn

from pydantic import ValidationError

from bananabatch.core.catalog import canonical_model
from bananabatch.core.intake.limits import DEFAULT_LIMITS, IntakeLimits, json_depth_problem
from bananabatch.core.intake.model import (
    RAW_KEEP_CHARS,
    AcceptedLine,
    JsonObject,
    RejectedLine,
    accepted_line,
    prompt_preview,
    text_preview,
)
from bananabatch.core.intake.native import check_request, image_config, request_model
from bananabatch.core.intake.openai_rules import check_native_model, check_openai_fields
from bananabatch.core.intake.request import reference_part, simple_request
from bananabatch.core.intake.rightsize import RightSizeTally, right_size
from bananabatch.core.intake.rules import (
    NATIVE,
    SIMPLE,
    LineOptions,
    ModelRules,
    SimpleFields,
    check_aspect_ratio,
    check_image_mime,
    check_key,
    check_metadata,
    check_prompt,
    check_reference_count,
    check_size,
    duplicate_key,
    line_key,
    model_rules,
    options_of,
    pydantic_reject,
    reference_mime,
    reference_problem,
    rules_table,
    simple_size,
)
from bananabatch.core.intake.seen import HashTable, SeenHashes
from bananabatch.core.intake.stream import BOM
from bananabatch.core.intake.text import Reject, encodable, json_type, show
from bananabatch.core.references import UNREADABLE, ReferencePolicy

# The reference locations of a deployment with the default bucket names (config.Settings).
DEFAULT_REFERENCES: Final = ReferencePolicy.for_buckets("inbox", "results")
# What a parser or a check can raise about one line; each is that line's rejection.
PARSER_ERRORS: Final = (ArithmeticError, LookupError, RecursionError, TypeError, ValueError)


def parser_failure(exc: BaseException) -> str:
    return f"could not be parsed ({type(exc).__name__}); the line is rejected, the file goes on"


class SimpleLine(NamedTuple):
    """A simple line that passed every rule, before it takes the form its caller wants
    (ReferenceParser.parse: an AcceptedLine; LineParser.parse_fast: a FastLine if it has
    no reference images)."""

    line_no: int
    key: str
    key_generated: bool
    rules: ModelRules
    prompt: str
    aspect_ratio: str | None
    image_size: str | None
    reference_images: tuple[str, ...]
    reference_parts: tuple[JsonObject, ...]
    metadata: JsonObject | None
    options: LineOptions
    # gpt-image lines only (rules.check_openai_fields).
    quality: str | None = None
    output_format: str | None = None

    def accepted(self) -> AcceptedLine:
        return accepted_line(
            line_no=self.line_no,
            key=self.key,
            model=self.rules.spec.model_id,
            request=simple_request(
                self.prompt,
                self.aspect_ratio,
                self.image_size,
                self.options,
                self.reference_parts,
                model=self.rules.spec.model_id,
                quality=self.quality,
                output_format=self.output_format,
            ),
            aspect_ratio=self.aspect_ratio,
            image_size=self.image_size,
            prompt_preview=prompt_preview(self.prompt),
            reference_images=self.reference_images,
            metadata=self.metadata or {},
            options=self.options,
            native=False,
            prompt_chars=len(self.prompt),
            key_generated=self.key_generated,
            quality=self.quality,
            output_format=self.output_format,
        )


# A line's verdict, before a simple line takes its form; None for a blank line.
Verdict = SimpleLine | AcceptedLine | RejectedLine | None


class ReferenceParser:
    """Validates the lines of one job, in order; remembers accepted keys to refuse duplicates.

    Keys are remembered as 60-bit hashes, not as strings, in a SeenHashes table (8 bytes a
    slot; a Python set took about 77 MB a million keys) whatever the keys' length; intake
    hands in a table sized for its file and budget (`seen`). Two different keys
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
        openai: bool = True,
        seen: HashTable | None = None,
    ) -> None:
        """`openai` False refuses lines for gpt-image models (the deployment has no
        OpenAI provider). `today` decides which models are shut down (the catalog's
        lifecycles); `vertex`
        limits sizes to what Vertex batch produces. `check_references` gives the index of
        the first of a line's reference images that the store cannot serve as an image, or
        None; it does the I/O, so the parser stays pure. `references` is where reference
        images may live (core.references); intake and estimate pass the deployment's."""
        self._default_model_input = default_model
        self._default_model = canonical_model(default_model)
        self._today = today or datetime.now(UTC).date()
        self._table = rules_table(self._today, vertex, openai)
        self._limits = limits
        self._check_references = check_references
        self._references = references if references is not None else DEFAULT_REFERENCES
        self._seen: HashTable = SeenHashes() if seen is None else seen
        # Models of accepted lines that did not come back as FastLines (whose shapes say).
        self._models_seen: set[str] = set()
        self._right_sized = RightSizeTally()

    def parse(self, line_no: int, raw: bytes) -> AcceptedLine | RejectedLine | None:
        """One line (without its newline). None for a blank line."""
        verdict = self._verdict(line_no, raw)
        return verdict.accepted() if isinstance(verdict, SimpleLine) else verdict

    def _verdict(self, line_no: int, raw: bytes) -> Verdict:
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if not raw or raw.isspace():
            return None
        if len(raw) > self._limits.max_line_bytes:
            limit = self._limits.max_line_bytes
            return self._reject(
                line_no, raw, None, None, f"the line is longer than the limit of {limit} bytes"
            )
        try:
            return self._parse_line(line_no, raw)
        except PARSER_ERRORS as exc:
            # No input line may fail the file: whatever a parser or a check raises about one
            # line (a bound missed, a bug) is that line's rejection. The store's errors
            # (TransientError from the reference check) are not among these and propagate.
            return self._reject(line_no, raw, None, None, parser_failure(exc))

    def models_used(self) -> set[str]:
        """The models of every line accepted so far (for the job's lifecycle warnings)."""
        return set(self._models_seen)

    def right_sizing(self) -> RightSizeTally:
        """The lines accepted so far that chose their size from display_size or max_edge."""
        return self._right_sized

    def _parse_line(self, line_no: int, raw: bytes) -> SimpleLine | AcceptedLine | RejectedLine:
        try:
            fields = SIMPLE.validate_json(raw)
        except ValidationError:
            return self._parse_object(line_no, raw)
        try:
            return self._accept_simple(line_no, fields)
        except Reject as exc:
            key = _shown_key(line_no, fields)
            return self._reject(line_no, raw, key, exc.field, exc.message)

    def _parse_object(self, line_no: int, raw: bytes) -> SimpleLine | AcceptedLine | RejectedLine:
        """A line that is not a simple line's fields as written: why, or a native line."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
            return self._reject(line_no, raw, None, None, f"not valid UTF-8: {where}")
        too_deep = json_depth_problem(raw)
        if too_deep is not None:
            return self._reject(line_no, raw, None, None, too_deep)
        try:
            obj = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            return self._reject(line_no, raw, None, None, f"not valid JSON: {exc}")
        if not isinstance(obj, dict):
            found = json_type(obj)
            return self._reject(line_no, raw, None, None, f"expected a JSON object; found {found}")
        try:
            _check_encodable(obj)
            if "request" in obj:
                return self._accept_native(line_no, obj)
            return self._accept_simple(line_no, _validated_simple(obj))
        except Reject as exc:
            return self._reject(line_no, raw, _shown_key(line_no, obj), exc.field, exc.message)

    # --- the simple form ----------------------------------------------------------------------

    def _accept_simple(self, line_no: int, f: SimpleFields) -> SimpleLine:
        """A simple line whose fields have the right names and types, held to each rule."""
        key, generated = check_key(line_no, f.get("key"))
        rules = self._model(f.get("model"))
        prompt = f["prompt"]
        check_prompt(prompt, self._limits.max_prompt_chars)
        aspect = f.get("aspect_ratio")
        check_aspect_ratio(rules, aspect, "aspect_ratio")
        size = f.get("image_size")
        if size is not None:
            size = check_size(rules, simple_size(size), "image_size", shown=size)
        display, edge = f.get("display_size"), f.get("max_edge")
        sized = None
        if display is not None or edge is not None:
            sized = right_size(rules, aspect, size, display, edge)
            aspect, size = sized.aspect_ratio, sized.image_size
        size, quality, output_format = check_openai_fields(
            rules, aspect, size, f.get("quality"), f.get("output_format"), f.get("priority")
        )
        refs = tuple(f.get("reference_images") or ())
        parts = self._reference_parts(rules, refs)
        metadata = f.get("metadata")
        check_metadata(metadata)
        self._claim(key)
        self._models_seen.add(rules.spec.model_id)
        options = options_of(f)
        if sized is not None:
            self._right_sized.add(
                rules.spec.model_id, size, quality, options.priority, sized.covers
            )
        return SimpleLine(
            line_no,
            key,
            generated,
            rules,
            prompt,
            aspect,
            size,
            refs,
            parts,
            metadata or None,
            options,
            quality,
            output_format,
        )

    def _reference_parts(self, rules: ModelRules, refs: tuple[str, ...]) -> tuple[JsonObject, ...]:
        if not refs:
            return ()
        check_reference_count(rules.spec, len(refs), "reference_images")
        spec = rules.spec
        parts = tuple(
            reference_part(
                uri, reference_mime(index, uri, self._references, spec), model=spec.model_id
            )
            for index, uri in enumerate(refs)
        )
        self._readable(None, list(refs))
        return parts

    # --- the native form ----------------------------------------------------------------------

    def _accept_native(self, line_no: int, obj: dict[str, Any]) -> AcceptedLine:
        """A line with `request`: its fields, the request against the allowlist, then the
        rules the simple form's fields have."""
        try:
            f = NATIVE.validate_python(obj)
        except ValidationError as exc:
            raise pydantic_reject(exc, simple=False) from None
        key, generated = check_key(line_no, f.get("key"))
        request = f["request"]
        found = check_request(request)
        rules = self._native_model(f.get("model"), request_model(request))
        check_native_model(rules)
        self._check_native_parts(request, found.mime_types, found.file_uris)
        prompt_chars = sum(len(t) for t in found.texts)
        if prompt_chars > self._limits.max_prompt_chars:
            raise Reject(
                "request.contents",
                f"text parts: expected at most {self._limits.max_prompt_chars} characters in "
                f"all; found {prompt_chars}",
            )
        check_reference_count(rules.spec, found.images, "request.contents", what="image parts: ")
        metadata = f.get("metadata")
        check_metadata(metadata)
        aspect, size = image_config(rules, request)
        if "model" in request:
            request = {k: v for k, v in request.items() if k != "model"}
        uris = [uri for _, uri in found.file_uris]
        if uris:
            self._readable([path for path, _ in found.file_uris], uris)
        self._claim(key)
        self._models_seen.add(rules.spec.model_id)
        return AcceptedLine(
            line_no=line_no,
            key=key,
            model=rules.spec.model_id,
            request=request,
            aspect_ratio=aspect,
            image_size=size,
            prompt_preview=text_preview(next((t for t in found.texts if t.strip()), "")),
            reference_images=tuple(uris),
            metadata=metadata or {},
            options=options_of(f),
            native=True,
            prompt_chars=prompt_chars,
            key_generated=generated,
        )

    def _native_model(self, line_model: str | None, inner_model: str | None) -> ModelRules:
        """The model of a native line: the line's, or the request's, which must agree."""
        if (
            line_model is not None
            and inner_model is not None
            and canonical_model(line_model) != canonical_model(inner_model)
        ):
            raise Reject(
                "model",
                f"the line says {show(line_model)} but request.model says "
                f"{show(inner_model)}; one batch holds one model",
            )
        try:
            return self._model(line_model if line_model is not None else inner_model)
        except Reject as exc:
            if line_model is None and inner_model is not None:
                exc.field = "request.model"
            raise

    def _check_native_parts(
        self,
        request: dict[str, Any],
        mime_types: Sequence[tuple[str, str]],
        file_uris: Sequence[tuple[str, str]],
    ) -> None:
        contents = request.get("contents")
        if not isinstance(contents, list) or not contents:
            raise Reject("request.contents", f"expected a non-empty list; found {show(contents)}")
        for path, mime in mime_types:
            check_image_mime(path, mime)
        for path, uri in file_uris:
            problem = reference_problem(uri, self._references)
            if problem is not None:
                raise Reject(path, f"reference image {problem}")

    # --- shared steps ---------------------------------------------------------------------------

    def _model(self, model: str | None) -> ModelRules:
        if model is None:
            return model_rules(
                self._table,
                self._default_model,
                today=self._today,
                given=False,
                written=self._default_model_input,
            )
        return model_rules(self._table, model, today=self._today, given=True, written=model)

    def _readable(self, paths: Sequence[str] | None, uris: Sequence[str]) -> None:
        """Reject the line when the store cannot serve one of its references as an image:
        `paths` name each URI's field (native form), None means reference_images. Asked
        before the key is claimed, so a corrected line later in the file may reuse it."""
        if self._check_references is None:
            return
        index = self._check_references(uris)
        if index is None:
            return
        # Written the same whatever the store found (no object, no right to read it, not
        # an image): a rejection must not tell what lies in a bucket.
        if paths is None:
            raise Reject("reference_images", f"item {index + 1}: {uris[index]}: {UNREADABLE}")
        raise Reject(paths[index], f"reference image {uris[index]}: {UNREADABLE}")

    def _claim(self, key: str) -> None:
        if not self._seen.add(hash(key) >> 4):
            raise duplicate_key(key)

    def _reject(
        self, line_no: int, raw: bytes, key: str | None, field: str | None, message: str
    ) -> RejectedLine:
        where = f"line {line_no}, field {show(field)}" if field else f"line {line_no}"
        return RejectedLine(
            line_no=line_no,
            key=key if key is None or encodable(key) else None,
            field=field,
            reason=f"{where}: {message}",
            raw=raw[: RAW_KEEP_CHARS * 4].decode("utf-8", "replace")[:RAW_KEEP_CHARS],
        )


def _validated_simple(obj: dict[str, Any]) -> SimpleFields:
    try:
        return SIMPLE.validate_python(obj)
    except ValidationError as exc:
        raise pydantic_reject(exc, simple=True) from None


def _shown_key(line_no: int, obj: Mapping[str, object]) -> str | None:
    """The key a rejection names: as written if a string, the generated one if absent."""
    key = obj.get("key")
    if key is None:
        return line_key(line_no)
    return key if isinstance(key, str) else None


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _check_encodable(obj: dict[str, Any]) -> None:
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
            raise Reject(
                name,
                "contains an unpaired surrogate escape (\\uD800-\\uDFFF), which is not "
                "valid Unicode",
            ) from None
        except ValueError:
            raise Reject(
                name, "contains a number out of range (NaN, Infinity or too large)"
            ) from None
