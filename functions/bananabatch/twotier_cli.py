"""The CLI's side of two-tier jobs (issue 21): the options of `submit` and `local run` that
make a job two-tier (upload metadata, which wins over the file's header line), the lines
`estimate` and the plan price for such a file (every draft candidate on the draft model,
and `keep` finals per line on the final model), and the estimate's section of measured
accept and regeneration rates (core/twotier/rates.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import IO, Annotated, Any

import typer
from rich.console import Console

from bananabatch.core.intake import iter_raw_lines
from bananabatch.core.pricing import Lane
from bananabatch.core.twotier import spec as tier
from bananabatch.core.twotier.expand import Expanded, expand_line
from bananabatch.core.twotier.rates import RateLine, combine, decode_rows, rate_lines
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.twotier.store import RATES_PREFIX

FinalModelOpt = Annotated[
    str | None,
    typer.Option(
        "--final-model",
        help="Make it a two-tier job: drafts on --draft-model, the chosen ones finished on"
        " this model (wins over the file's header line).",
    ),
]
DraftModelOpt = Annotated[
    str | None, typer.Option("--draft-model", help="Two-tier: the model of the drafts.")
]
CandidatesOpt = Annotated[
    int | None,
    typer.Option("--candidates", min=1, max=16, help="Two-tier: drafts per line (default 4)."),
]
KeepOpt = Annotated[
    int | None,
    typer.Option("--keep", min=1, max=16, help="Two-tier: finals kept per line (default 1)."),
]
SelectionOpt = Annotated[
    str | None,
    typer.Option(
        "--selection",
        help="Two-tier: auto (best-scoring survivors) or manual (`bananabatch select`).",
    ),
]


def metadata(
    final_model: str | None,
    draft_model: str | None,
    candidates: int | None,
    keep: int | None,
    selection: str | None,
) -> dict[str, str]:
    """The upload metadata the options write (empty when none is given)."""
    given = {
        tier.META_FINAL_MODEL: final_model,
        tier.META_DRAFT_MODEL: draft_model,
        tier.META_CANDIDATES: None if candidates is None else str(candidates),
        tier.META_KEEP: None if keep is None else str(keep),
        tier.META_SELECTION: selection,
    }
    return {k: v for k, v in given.items() if v is not None}


def estimate_lines(
    stream: IO[bytes], *, max_line_bytes: int, options: Mapping[str, str] | None = None
) -> Iterator[tuple[int, bytes]]:
    """The numbered lines to price: the file's own, or for a two-tier file its draft lines
    and one line per kept final (numbered as their line)."""
    lines = iter_raw_lines(stream, max_line_bytes=max_line_bytes)
    first = next(lines, None)
    if first is None:
        return
    header = tier.header_of(first[1])
    spec = tier.resolve_spec(header, options or {})
    if spec is None:
        yield first
        yield from lines
        return
    rest = lines if header is not None else _chain(first, lines)
    for line_no, raw in rest:
        if not raw.strip():
            continue
        out = expand_line(raw.decode("utf-8", "replace"), line_no, spec)
        if not isinstance(out, Expanded):
            yield line_no, raw if isinstance(out, str) else b'{"bananabatch_refused": true}'
            continue
        for draft in out.drafts:
            yield line_no, draft.encode()
        final = {"model": spec.final_model, "request": out.line.request, "cache": False}
        for n in range(1, out.line.keep + 1):
            yield line_no, json.dumps({"key": tier.final_key(out.line.key, n), **final}).encode()


def _chain(
    first: tuple[int, bytes], rest: Iterator[tuple[int, bytes]]
) -> Iterator[tuple[int, bytes]]:
    yield first
    yield from rest


def measured_rates(
    rt: Runtime, stream: IO[bytes], options: Mapping[str, str] | None = None
) -> list[RateLine]:
    """The rates section of a two-tier file's estimate: each stage's price and what finished
    jobs measured of it; empty for another file."""
    head = stream.readline(64 * 1024)
    spec = tier.resolve_spec(tier.header_of(head), options or {})
    if spec is None:
        return []
    rows = []
    for info in rt.objects.list(rt.settings.results_bucket, RATES_PREFIX):
        try:
            rows += decode_rows(rt.objects.read_bytes(info.bucket, info.name))
        except ValueError:
            continue  # a damaged record measures nothing
    wanted = [
        (
            "draft",
            spec.draft_model,
            spec.template,
            rt.prices.image_price(spec.draft_model, None, Lane.BATCH),
        ),
        (
            "final",
            spec.final_model,
            spec.template,
            rt.prices.image_price(spec.final_model, None, Lane.BATCH),
        ),
    ]
    return rate_lines(wanted, combine(rows))


def rates_doc(lines: list[RateLine]) -> list[dict[str, Any]]:
    return [
        {
            "stage": line.stage,
            "model": line.model,
            "template": line.template,
            "price_usd": line.price,
            "measured_images": line.row.generated if line.row else 0,
            "accept_rate": line.row.accept_rate if line.row else None,
            "regeneration_rate": line.row.regeneration_rate if line.row else None,
            "cost_per_accepted_image_usd": line.effective,
        }
        for line in lines
    ]


def print_rates(lines: list[RateLine], out: Console) -> None:
    if not lines:
        return
    out.print("two-tier, per accepted image (price x (1 + regeneration rate) / accept rate):")
    for line in lines:
        out.print(f"  {line.describe()}", soft_wrap=True, highlight=False)


def print_stages(report: Mapping[str, Any] | None, out: Console) -> None:
    """A two-tier job's summary: lines, and each stage's cost per accepted image."""
    if not report:
        return
    from rich.table import Table

    lines = report["lines"]
    table = Table(
        title=f"two-tier: {lines['succeeded']} of {lines['total']} lines finished"
        + (f", {lines['failed']} failed" if lines["failed"] else "")
    )
    for column in ("stage", "model", "images", "accepted", "actual", "per accepted image"):
        table.add_column(column, justify="left" if column in ("stage", "model") else "right")
    for stage in ("draft", "final"):
        figures = report["stages"][stage]
        per = figures["cost_per_accepted_image_usd"]
        table.add_row(
            stage,
            figures["model"],
            str(figures["images"]),
            str(figures["accepted"]),
            f"${figures['actual_usd']:.4f}",
            "—" if per is None else f"${per:.4f}",
        )
    both = report.get("cost_per_accepted_final_image_usd")
    table.add_section()
    table.add_row(
        "both",
        "",
        "",
        str(report["stages"]["final"]["accepted"]),
        "",
        "—" if both is None else f"${both:.4f}",
    )
    out.print(table)
    for outcome in report.get("line_outcomes", []):
        if outcome["state"] == "FAILED":
            out.print(
                f"  {outcome['key']}: FAILED: {outcome['reason']}", soft_wrap=True, highlight=False
            )
