"""Variation templates (issue 21 point 5): one prompt with `{placeholders}`, a list of
values for each, options per value, and optionally a CSV of rows (products), expanded to
the input lines of a job, one per row and combination of values.

Pure: the template arrives as the dict its YAML or JSON file holds, the rows as the text
stream of their CSV; `bananabatch expand` (expand_cli.py) reads the files and writes the
lines. A template (every field but `prompt` optional):

    prompt: "{title} on {background}, {crop} crop, {treatment}"
    values:
      background:
        key: bg                       # the key's name for it (default: the placeholder)
        values: [white marble, {value: raw linen, key: linen}]
      crop:
        values:
          - {value: square, options: {aspect_ratio: "1:1"}}
          - {value: portrait, options: {aspect_ratio: "4:5"}}
      treatment: [full colour, black and white]   # a plain list
    options: {model: gemini-3-pro-image, display_size: "1200x1200"}   # every line
    rows: {csv: products.csv, key: "sku-{sku}"}   # placeholders may name its columns
    max_lines: 2000                   # the stated limit (default DEFAULT_MAX_LINES)

Lines come in a stable order (rows in file order, then the combinations in the order the
values are written, the last placeholder fastest) with stable, readable keys: the row's
key, then `<name>-<value key>` per placeholder, joined by `__`
(`sku-1001__bg-marble__crop-square__treatment-full-colour`). A value's key is its `key`, or
its text made a slug (lower case ASCII letters, digits, `.` and `-`). Each line's metadata
holds its row's columns and its placeholders' values, to join results back.

Refused, each with what was expected and what was found: a placeholder the prompt uses that
no value list or column gives (missing), a value list the prompt and the row key never use
(unknown: it would only repeat prompts), a name that is both, a placeholder with a format
spec, conversion, index or attribute (`{x!r}`, `{x.y}`), two options of one line set to
different values, a key the project's key rules refuse (rules.key_problem) or that two lines
share, and a template that makes more lines than its limit (counted before anything is
made, the CSV's rows with it, and stopped as soon as it is over).
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from string import Formatter
from typing import Annotated, Any, Final, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bananabatch.core.intake.rules import key_problem
from bananabatch.errors import PermanentError

DEFAULT_MAX_LINES: Final = 10_000
KEY_JOIN: Final = "__"
MAX_PLACEHOLDERS: Final = 16
MAX_VALUES: Final = 10_000
# Line fields a template's options may set (the simple form's, less the ones it makes).
MADE_FIELDS: Final = frozenset({"key", "prompt"})
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SLUG_OUT: Final = re.compile(r"[^a-z0-9.]+")


class TemplateError(PermanentError):
    """A template that cannot be expanded: the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ValueSpec(_Strict):
    value: str
    key: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class PlaceholderSpec(_Strict):
    key: str | None = None
    values: list[str | ValueSpec] = Field(min_length=1, max_length=MAX_VALUES)


class RowsSpec(_Strict):
    csv: str
    key: str | None = None


class TemplateSpec(_Strict):
    prompt: str = Field(min_length=1)
    values: dict[
        str,
        Annotated[list[str | ValueSpec], Field(min_length=1, max_length=MAX_VALUES)]
        | PlaceholderSpec,
    ] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    rows: RowsSpec | None = None
    max_lines: int | None = Field(default=None, ge=1)

    @field_validator("rows", mode="before")
    @classmethod
    def _rows_as_a_path(cls, given: object) -> object:
        # `rows: products.csv` is what people write first: the CSV, keys made from its
        # first column as for {csv: ...} without a key.
        return {"csv": given} if isinstance(given, str) else given


@dataclass(frozen=True)
class Value:
    text: str
    key: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Placeholder:
    name: str
    key_name: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Template:
    """A checked template: expand it with `lines(rows)`."""

    prompt: str
    prompt_fields: tuple[str, ...]
    placeholders: tuple[Placeholder, ...]
    options: Mapping[str, Any]
    rows_csv: str | None
    row_key: str | None
    row_key_fields: tuple[str, ...]
    max_lines: int | None

    @property
    def combinations(self) -> int:
        return math.prod(len(p.values) for p in self.placeholders)

    def limit(self, override: int | None) -> int:
        """The limit in force: --max-lines, else the template's, else the default."""
        if override is not None:
            return override
        return self.max_lines if self.max_lines is not None else DEFAULT_MAX_LINES

    def lines(self, rows: Iterator[Mapping[str, str]] | None = None) -> Iterator[dict[str, Any]]:
        """Every line, in order: for each row (one empty row without a CSV), each
        combination. Raises TemplateError on a bad key, a repeated key, a row missing a
        column, or options that conflict."""
        # Each key to the number of the line that made it (an int: a million keys fit).
        seen: dict[str, int] = {}
        for row_no, row in enumerate(rows if rows is not None else iter([{}]), 1):
            head = self._row_key(row_no, row)
            for combo in itertools.product(*(p.values for p in self.placeholders)):
                line = self._line(row_no, row, head, combo)
                where = _where(row_no if self.rows_csv else None, self.placeholders, combo)
                earlier = seen.get(line["key"])
                if earlier is not None:
                    raise TemplateError(
                        f"line {len(seen) + 1} ({where}) makes key {line['key']!r}, as line "
                        f"{earlier} did: give the rows or values distinct keys"
                    )
                seen[line["key"]] = len(seen) + 1
                yield line

    def _row_key(self, row_no: int, row: Mapping[str, str]) -> str | None:
        if self.rows_csv is None:
            return None
        if self.row_key is None:
            return f"row-{row_no:06d}"
        part = _fill(self.row_key, row, f"rows.key, CSV row {row_no}")
        if not part.strip():
            raise TemplateError(f"CSV row {row_no}: rows.key {self.row_key!r} is empty")
        return part

    def _line(
        self,
        row_no: int,
        row: Mapping[str, str],
        head: str | None,
        combo: tuple[Value, ...],
    ) -> dict[str, Any]:
        values = {p.name: v.text for p, v in zip(self.placeholders, combo, strict=True)}
        where = f"CSV row {row_no}" if self.rows_csv else "the template"
        prompt = _fill(self.prompt, {**row, **values}, f"prompt, {where}")
        parts = [head] if head is not None else []
        parts += [f"{p.key_name}-{v.key}" for p, v in zip(self.placeholders, combo, strict=True)]
        key = KEY_JOIN.join(parts) if parts else "line"
        problem = key_problem(key)
        if problem is not None:
            raise TemplateError(f"{where}: the key {key!r} is refused: {problem}")
        options = dict(self.options)
        setters = dict.fromkeys(options, "options")
        for placeholder, value in zip(self.placeholders, combo, strict=True):
            for name, setting in value.options.items():
                if name in options and options[name] != setting:
                    raise TemplateError(
                        f"option {name!r} is set to {options[name]!r} by {setters[name]} and "
                        f"to {setting!r} by {placeholder.name} {value.text!r}: one line, "
                        "one value"
                    )
                options[name] = setting
                setters[name] = f"{placeholder.name} {value.text!r}"
        metadata = {**options.pop("metadata", {}), **row, **values}
        line: dict[str, Any] = {"key": key, "prompt": prompt, **options}
        if metadata:
            line["metadata"] = metadata
        return line


def load_template(doc: object) -> Template:
    """The template a YAML or JSON document holds, checked; TemplateError says why not."""
    if not isinstance(doc, dict):
        raise TemplateError(f"expected a mapping at the top of the template; found {_kind(doc)}")
    try:
        spec = TemplateSpec.model_validate(doc)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "the template"
        raise TemplateError(f"{where}: {error['msg']}") from None
    prompt_fields = _fields(spec.prompt, "prompt")
    if len(spec.values) > MAX_PLACEHOLDERS:
        raise TemplateError(
            f"values: expected at most {MAX_PLACEHOLDERS} placeholders; found {len(spec.values)}"
        )
    placeholders = tuple(_placeholder(name, given) for name, given in spec.values.items())
    _check_options(spec.options, "options")
    for p in placeholders:
        for v in p.values:
            _check_options(v.options, f"values.{p.name} {v.text!r} options")
    row_key_fields = _fields(spec.rows.key, "rows.key") if spec.rows and spec.rows.key else ()
    named = {p.name for p in placeholders}
    used = set(prompt_fields) | set(row_key_fields)
    unused = [p.name for p in placeholders if p.name not in used]
    if unused:
        raise TemplateError(
            f"values.{unused[0]}: the prompt has no {{{unused[0]}}} placeholder, so its values "
            "would only repeat prompts; use it in the prompt or remove it"
        )
    if spec.rows is None:
        missing = [name for name in prompt_fields if name not in named]
        if missing:
            raise TemplateError(
                f"prompt: {{{missing[0]}}} has no value list (and there are no CSV rows); "
                f"expected one of {_names(named)}"
            )
    return Template(
        prompt=spec.prompt,
        prompt_fields=prompt_fields,
        placeholders=placeholders,
        options=spec.options,
        rows_csv=spec.rows.csv if spec.rows else None,
        row_key=spec.rows.key if spec.rows else None,
        row_key_fields=row_key_fields,
        max_lines=spec.max_lines,
    )


def read_rows(template: Template, stream: TextIO) -> Iterator[dict[str, str]]:
    """The CSV's rows as dicts, checked against the template: its header must give every
    placeholder the prompt and rows.key use that no value list gives, and name none of
    the value lists; a row must have as many fields as the header."""
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise TemplateError(f"{template.rows_csv}: empty, expected a header row") from None
    except csv.Error as exc:
        raise TemplateError(f"{template.rows_csv}: header row: {exc}") from None
    header = _checked_header(template, header)
    row_no = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TemplateError(f"{template.rows_csv} row {row_no + 1}: {exc}") from None
        if not fields:
            continue
        row_no += 1
        if len(fields) != len(header):
            raise TemplateError(
                f"{template.rows_csv} row {row_no}: expected {len(header)} fields as in the "
                f"header; found {len(fields)}"
            )
        yield dict(zip(header, fields, strict=True))


def _checked_header(template: Template, header: list[str]) -> list[str]:
    header = [name.strip().lstrip("\ufeff") for name in header]
    if len(set(header)) != len(header) or "" in header:
        raise TemplateError(
            f"{template.rows_csv}: header {header!r}: expected distinct, non-empty column names"
        )
    named = {p.name for p in template.placeholders}
    both = sorted(named & set(header))
    if both:
        raise TemplateError(
            f"{both[0]!r} is both a CSV column and a value list: rename one of them"
        )
    needed = [n for n in (*template.prompt_fields, *template.row_key_fields) if n not in named]
    missing = [n for n in needed if n not in header]
    if missing:
        raise TemplateError(
            f"{{{missing[0]}}} has no value list and {template.rows_csv} has no such column; "
            f"its columns: {', '.join(header)}"
        )
    return header


def count_lines(template: Template, rows: Iterator[object] | None, limit: int) -> int:
    """How many lines the template makes, counting rows only until the count passes
    `limit` (a huge CSV is not read to its end to be refused)."""
    per_row = template.combinations
    if rows is None:
        return per_row
    total = 0
    for _ in rows:
        total += per_row
        if total > limit:
            return total
    return total


def over_limit(template: Template, count: int, limit: int, *, rows: bool) -> str:
    """Why a template that makes `count` lines is refused; with CSV rows, counting stopped
    as soon as it passed the limit, so the template makes at least that many."""
    factors = " x ".join(f"{len(p.values)} {p.name}" for p in template.placeholders) or "1"
    if rows:
        made = f"at least {count:,} lines ({template.combinations:,} per CSV row: {factors})"
    else:
        made = f"{count:,} lines ({factors})"
    stated = "the template's max_lines" if template.max_lines is not None else "the default"
    return (
        f"the template would make {made}, over the limit of {limit:,} ({stated}); "
        f"raise max_lines in the template or pass --max-lines"
    )


# --- helpers --------------------------------------------------------------------------------


def _placeholder(name: str, given: list[str | ValueSpec] | PlaceholderSpec) -> Placeholder:
    if _IDENTIFIER.fullmatch(name) is None:
        raise TemplateError(
            f"values: {name!r} is not a placeholder name (letters, digits and _, not first a digit)"
        )
    spec = given if isinstance(given, PlaceholderSpec) else PlaceholderSpec(values=given)
    key_name = spec.key if spec.key is not None else _slug(name.replace("_", "-"))
    if not key_name or _slug(key_name) != key_name:
        raise TemplateError(
            f"values.{name}.key: expected lower-case letters, digits, '.' or '-'; "
            f"found {key_name!r}"
        )
    values: list[Value] = []
    keys: dict[str, str] = {}
    for item in spec.values:
        value = item if isinstance(item, ValueSpec) else ValueSpec(value=item)
        key = value.key if value.key is not None else _slug(value.value)
        if not key or key_problem(key) is not None or KEY_JOIN in key:
            raise TemplateError(
                f"values.{name}: {value.value!r} gives the key part {key!r}, which cannot be "
                'part of a key: give it a key (e.g. {value: "...", key: "plain-words"})'
            )
        if key in keys:
            raise TemplateError(
                f"values.{name}: {value.value!r} and {keys[key]!r} both give the key part "
                f"{key!r}: give one of them another key"
            )
        keys[key] = value.value
        values.append(Value(value.value, key, value.options))
    return Placeholder(name, key_name, tuple(values))


def _fields(text: str, where: str) -> tuple[str, ...]:
    """The placeholders of a format string, in order of first use, each a plain name."""
    names: list[str] = []
    try:
        parsed = list(Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{where}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name:
            raise TemplateError(f"{where}: an empty placeholder {{}}; name it, e.g. {{colour}}")
        if _IDENTIFIER.fullmatch(name) is None or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise TemplateError(
                f"{where}: {{{shown}}} is not a plain placeholder; expected {{name}} only"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _fill(text: str, values: Mapping[str, str], where: str) -> str:
    """`text` with each {name} replaced, without str.format (which would evaluate
    attribute and index lookups)."""
    out: list[str] = []
    for literal, name, _, _ in Formatter().parse(text):
        out.append(literal)
        if name is None:
            continue
        if name not in values:
            raise TemplateError(f"{where}: nothing gives {{{name}}}")
        out.append(values[name])
    return "".join(out)


def _check_options(options: Mapping[str, Any], where: str) -> None:
    made = sorted(MADE_FIELDS & set(options))
    if made:
        raise TemplateError(f"{where}: {made[0]!r} is made by the template, not set as an option")
    metadata = options.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise TemplateError(f"{where}: metadata: expected a mapping; found {_kind(metadata)}")


def _slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _SLUG_OUT.sub("-", folded.lower()).strip("-.")


def _where(
    row_no: int | None, placeholders: tuple[Placeholder, ...], combo: tuple[Value, ...]
) -> str:
    parts = [f"CSV row {row_no}"] if row_no is not None else []
    parts += [f"{p.name} {v.text!r}" for p, v in zip(placeholders, combo, strict=True)]
    return ", ".join(parts) or "the template"


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none (the template has no value lists)"


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__
