"""The plan before spending (issue 17 part 2): what `local run` and `submit` show before they
upload, and the one question they ask on a terminal. In a pipe nothing is asked and nothing
is spent without --yes; --dry-run stops after the plan.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import typer
from rich.console import Console
from rich.table import Table

from bananabatch import tables_cli
from bananabatch.core.estimate import FileEstimate
from bananabatch.core.intake import RejectedLine
from bananabatch.errors import PermanentError
from bananabatch.pipeline import budget
from bananabatch.pipeline.runtime import Runtime

# The rejected lines listed in the plan; all of them are in rejected.jsonl after the run.
SHOWN_REJECTIONS: Final = 10
# The rejected lines the plan keeps (its --json lists them): the first ones only, so a file
# of a million bad lines is planned in bounded memory (keeping all took 790 MB for 145 MB).
KEPT_REJECTIONS: Final = 100


@dataclass
class FirstRejections:
    """The first `limit` rejected lines, without their raw text."""

    limit: int = KEPT_REJECTIONS
    lines: list[RejectedLine] = field(default_factory=list)

    def append(self, line: RejectedLine) -> None:
        if len(self.lines) < self.limit:
            self.lines.append(RejectedLine(line.line_no, line.key, line.field, line.reason, raw=""))


def rejections_doc(lines: list[RejectedLine]) -> list[dict[str, Any]]:
    """Rejected lines as the JSON outputs list them."""
    return [{"line": r.line_no, "key": r.key, "field": r.field, "reason": r.reason} for r in lines]


def print_rejections(out: Console, lines: list[RejectedLine], count: int, where: str = "") -> None:
    """The first SHOWN_REJECTIONS rejected lines with their reasons, and how many more
    (`count` is all of them; `where` says where those are)."""
    for r in lines[:SHOWN_REJECTIONS]:
        key = f" ({r.key})" if r.key else ""
        out.print(f"  rejected line {r.line_no}{key}: {r.reason}", soft_wrap=True, highlight=False)
    if count > SHOWN_REJECTIONS:
        out.print(f"  … and {count - SHOWN_REJECTIONS:,} more{where}", highlight=False)


@dataclass
class Plan:
    file: Path
    estimate: FileEstimate
    # The first KEPT_REJECTIONS of them: estimate.rejected counts them all.
    rejected: list[RejectedLine] = field(default_factory=list)
    margin: float = 0.0
    job_cap_usd: float | None = None
    daily_cap_usd: float | None = None
    committed_today_usd: float = 0.0

    @property
    def reserved_usd(self) -> float:
        return budget.with_margin(self.estimate.after_dedup_usd, self.margin)

    @property
    def over_cap(self) -> str | None:
        """Why the job would be HELD over a cap, or None."""
        amount = self.reserved_usd
        if self.job_cap_usd is not None and amount > self.job_cap_usd + 1e-9:
            return f"over the job budget ${self.job_cap_usd:,.2f}"
        if self.daily_cap_usd is not None:
            left = self.daily_cap_usd - self.committed_today_usd
            if amount > left + 1e-9:
                return f"over what is left of today's budget (${max(left, 0):,.2f})"
        return None

    def to_doc(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "estimate": self.estimate.to_doc(),
            "rejected_lines": rejections_doc(self.rejected),
            "reserved_with_margin_usd": round(self.reserved_usd, 6),
            "job_budget_usd": self.job_cap_usd,
            "daily_budget_usd": self.daily_cap_usd,
            "committed_today_usd": round(self.committed_today_usd, 6),
            "held_because": self.over_cap,
        }


def make_plan(
    rt: Runtime,
    path: Path,
    *,
    job_cap_usd: float | None = None,
    options: Mapping[str, str] | None = None,
) -> Plan:
    from bananabatch.cost_cli import estimate_file

    rejected = FirstRejections()
    estimate = estimate_file(rt, path, on_rejected=rejected.append, options=options)
    caps = [c for c in (job_cap_usd, rt.settings.job_budget_usd) if c is not None]
    return Plan(
        file=path,
        estimate=estimate,
        rejected=rejected.lines,
        margin=rt.settings.budget_margin,
        job_cap_usd=min(caps) if caps else None,
        daily_cap_usd=rt.settings.daily_budget_usd,
        committed_today_usd=budget.day_totals(rt).committed_usd,
    )


def print_plan(plan: Plan, out: Console) -> None:
    est = plan.estimate
    table = Table(
        title=f"plan for {plan.file.name}: {est.lines:,} lines, {est.accepted:,} to generate,"
        f" {est.rejected:,} rejected",
        title_justify="left",
    )
    # Short headers, so the table fits 100 columns; narrower, a block per row below.
    # "reused": repeats within the file and lines cached from earlier jobs (not paid).
    for column in ("model", "size", "lines", "urgent", "reused", "standard", "batch", "to pay"):
        table.add_column(
            column, justify="left" if column in ("model", "size") else "right", no_wrap=True
        )
    rows = [
        (
            g.model,
            g.image_size,
            f"{g.lines:,}",
            f"{g.urgent_lines:,}",
            f"{g.duplicate_lines + g.cached_lines:,}",
            f"${g.standard_usd:,.2f}",
            f"${g.batch_usd:,.2f}",
            f"${g.after_dedup_usd:,.2f}",
        )
        for g in est.groups
    ]
    for row in rows:
        table.add_row(*row)
    if tables_cli.fits(out, table):
        tables_cli.printer(out).print(table)
    else:
        # Too narrow for the table: a block per model and size, no figure cut in two.
        out.print(table.title, highlight=False)
        for model, size, lines, urgent, repeats, standard, batch, to_pay in rows:
            out.print(
                f"  {model} {size}: {lines} lines, {urgent} urgent, {repeats} reused"
                " (repeats or cached)"
            )
            out.print(f"    standard price {standard} · batch price {batch} · to pay {to_pay}")
    print_rejections(out, plan.rejected, est.rejected, where=" (all in rejected.jsonl)")
    out.print(_money_line(plan), soft_wrap=True, highlight=False)
    out.print(_budget_line(plan), soft_wrap=True, highlight=False)


def _money_line(plan: Plan) -> str:
    est = plan.estimate
    saved = est.standard_usd - est.after_dedup_usd
    return (
        f"estimate: ${est.after_dedup_usd:,.2f} at batch price (${est.standard_usd:,.2f} at"
        f" standard price, ${saved:,.2f} less); ${plan.reserved_usd:,.2f} reserved with the"
        f" {plan.margin:.0%} margin"
    )


def _budget_line(plan: Plan) -> str:
    parts = []
    if plan.job_cap_usd is not None:
        parts.append(f"job budget ${plan.job_cap_usd:,.2f}")
    if plan.daily_cap_usd is not None:
        left = plan.daily_cap_usd - plan.committed_today_usd
        parts.append(
            f"today ${plan.committed_today_usd:,.2f} committed of ${plan.daily_cap_usd:,.2f}"
        )
        parts.append(f"${max(left - plan.reserved_usd, 0):,.2f} left after this job")
    held = plan.over_cap
    budget_text = "budget: " + (", ".join(parts) if parts else "no cap set")
    if held:
        budget_text += f" — {held}: the job will be HELD with nothing spent"
    return budget_text


def on_a_terminal(console: Console) -> bool:
    return sys.stdin.isatty() and console.is_terminal


def go_ahead(plan: Plan, out: Console, *, yes: bool, dry_run: bool, again: str) -> bool:
    """After the plan: True to spend. dry_run stops here; --yes skips the question; a pipe
    never spends without --yes. again is the command that runs it without asking."""
    if plan.estimate.lines == 0:
        raise PermanentError(f"{plan.file} has no lines: nothing to run (one JSON object per line)")
    if dry_run:
        out.print(
            f"dry run: nothing was uploaded or spent. To run it: {again}",
            highlight=False,
            soft_wrap=True,
        )
        return False
    if yes:
        return True
    if not on_a_terminal(out):
        raise PermanentError(
            "not run: not on a terminal, so nothing was asked and nothing spent;"
            f" to run it: {again}"
        )
    if plan.estimate.accepted == 0:
        return True
    answer = typer.confirm(
        f"Run it, spending up to ${plan.estimate.after_dedup_usd:,.2f} (estimate)?", default=False
    )
    if not answer:
        out.print("Nothing was uploaded or spent.")
    return answer
