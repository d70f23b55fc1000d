"""`bananabatch expand TEMPLATE`: a variation template (core/variations.py) to a JSONL of
input lines, with how many lines and what they will cost. A plain function; cli.py
registers it.

It reads the template (YAML or JSON, at most MAX_TEMPLATE_BYTES; YAML aliases refused, so
a small file cannot stand for a huge one) and its CSV (beside the template unless the path
is absolute), refuses a template over its line limit before writing anything, writes the
lines to a temporary file beside the output, prices and checks them exactly as
`bananabatch estimate` does (the same parser intake runs), and only then moves the file
into place: a template that makes a line intake would reject leaves no output behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Final

import typer
import yaml
from rich.console import Console

from bananabatch import cost_cli
from bananabatch.core.estimate import FileEstimate
from bananabatch.core.intake import RejectedLine
from bananabatch.core.variations import (
    Template,
    TemplateError,
    count_lines,
    load_template,
    over_limit,
    read_rows,
)

MAX_TEMPLATE_BYTES: Final = 1_000_000
console = Console()


class _NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader without aliases: `*name` lets a few bytes stand for a structure
    exponentially larger (the 'billion laughs'), and a template never needs one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise TemplateError(
                f"line {mark.line + 1}: YAML aliases (*name) are not allowed in a template"
            )
        return super().compose_node(parent, index)


def read_template(path: Path) -> Template:
    size = path.stat().st_size
    if size > MAX_TEMPLATE_BYTES:
        raise TemplateError(
            f"{path}: {size:,} bytes, over the {MAX_TEMPLATE_BYTES:,} a template may have "
            "(put long lists of rows in the CSV)"
        )
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            doc = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
        elif suffix == ".json":
            doc = json.loads(text)
        else:
            raise TemplateError(f"{path}: expected a .yaml, .yml or .json template")
    except (yaml.YAMLError, ValueError) as exc:
        raise TemplateError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    return load_template(doc)


def expand(
    template: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the lines (default: TEMPLATE.jsonl)."),
    ] = None,
    max_lines: Annotated[
        int | None,
        typer.Option(
            "--max-lines", min=1, help="Allow this many lines (over the template's max_lines)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Expand a variation TEMPLATE (YAML or JSON) into a JSONL of input lines, with the cost.

    Example: bananabatch expand catalog.yaml -o catalog.jsonl
    """
    with cost_cli._errors_as_one_line():
        spec = read_template(template)
        out = output if output is not None else template.with_suffix(".jsonl")
        if out.resolve() == template.resolve():
            raise TemplateError(f"{out} is the template itself: name another output")
        limit = spec.limit(max_lines)
        csv_path = _csv_path(template, spec)
        if csv_path is not None and out.resolve() == csv_path.resolve():
            # It would be replaced by the lines made from it.
            raise TemplateError(f"{out} is the template's CSV: name another output")
        count = _count(spec, csv_path, limit)
        if count > limit:
            raise TemplateError(over_limit(spec, count, limit, rows=csv_path is not None))
        rows_read = _write(spec, csv_path, out)
        shown = _print_outcome if not as_json else _print_json
        shown(out, count, rows_read, spec, _estimate_or_remove(out))


def _csv_path(template: Path, spec: Template) -> Path | None:
    if spec.rows_csv is None:
        return None
    path = Path(spec.rows_csv)
    path = path if path.is_absolute() else template.parent / path
    if not path.is_file():
        raise TemplateError(f"rows.csv: no file {path}")
    return path


def _count(spec: Template, csv_path: Path | None, limit: int) -> int:
    if csv_path is None:
        return count_lines(spec, None, limit)
    with csv_path.open(encoding="utf-8-sig", newline="") as stream:
        return count_lines(spec, read_rows(spec, stream), limit)


def _write(spec: Template, csv_path: Path | None, out: Path) -> int:
    """Write every line to a temporary file beside `out`, then move it there; the number
    of CSV rows read (0 without a CSV)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    rows = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            if csv_path is None:
                for line in spec.lines():
                    sink.write(json.dumps(line, ensure_ascii=False) + "\n")
            else:
                with csv_path.open(encoding="utf-8-sig", newline="") as stream:
                    seen_rows = _Counted(read_rows(spec, stream))
                    for line in spec.lines(seen_rows):
                        sink.write(json.dumps(line, ensure_ascii=False) + "\n")
                    rows = seen_rows.count
        Path(tmp).replace(out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rows


class _Counted:
    """An iterator that counts what it gives."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.count = 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        item = next(self._inner)
        self.count += 1
        return item


def _estimate_or_remove(out: Path) -> FileEstimate:
    """The estimate of the written lines; a template that made lines intake would reject
    is an error, and its output is removed."""
    rejected: list[RejectedLine] = []

    def keep(line: RejectedLine) -> None:
        if not rejected:
            rejected.append(line)

    try:
        result = cost_cli.estimate_file(
            cost_cli._runtime(with_provider=False), out, on_rejected=keep
        )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    if result.rejected:
        out.unlink(missing_ok=True)
        first = rejected[0]
        raise TemplateError(
            f"the template makes {result.rejected:,} line(s) intake would reject, so "
            f"nothing was written; the first, key {first.key!r}: {first.reason}"
        )
    return result


def _print_outcome(out: Path, count: int, rows: int, spec: Template, result: FileEstimate) -> None:
    made = (
        f"{rows:,} rows x {spec.combinations:,} combinations"
        if spec.rows_csv
        else (f"{spec.combinations:,} combinations")
    )
    console.print(f"wrote {count:,} lines to {out} ({made})", highlight=False, soft_wrap=True)
    console.print(
        f"estimate: ${result.after_dedup_usd:,.4f} at batch price "
        f"(${result.standard_usd:,.4f} at standard price); `bananabatch estimate {out}` "
        "shows it per model and size",
        highlight=False,
        soft_wrap=True,
    )
    for warning in result.price_warnings:
        console.print(f"[yellow]price warning:[/] {warning}")


def _print_json(out: Path, count: int, rows: int, spec: Template, result: FileEstimate) -> None:
    typer.echo(
        json.dumps(
            {
                "output": str(out),
                "lines": count,
                "rows": rows if spec.rows_csv else None,
                "combinations": spec.combinations,
                "estimate": result.to_doc(),
            },
            indent=2,
        )
    )
