"""`bananabatch estimate FILE`, `approve JOB`, `reject JOB`: the bill before and the budget
decisions. Plain functions; cli.py registers them with `app.command()(...)`.

They work against the state store the environment configures (the local one by default),
so `estimate` sees that store's dedup cache and the outcomes of its finished jobs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console
from rich.table import Table

from bananabatch import errors_cli, preview_cli, tables_cli, twotier_cli
from bananabatch.config import ProviderKind, Settings
from bananabatch.core.estimate import FileEstimate, FileEstimator, HybridPlan, observed_rates
from bananabatch.core.intake import IntakeLimits, LineParser, RejectedLine
from bananabatch.core.pricing import price_warnings
from bananabatch.core.records import JobRecord
from bananabatch.core.rightsize_saving import right_size_saving
from bananabatch.core.routing import flat_price_warnings, price_source, router_for
from bananabatch.core.states import JOB_TERMINAL
from bananabatch.errors import BananaError, PermanentError
from bananabatch.pipeline import cache, control
from bananabatch.pipeline.references import reference_policy
from bananabatch.pipeline.runtime import Runtime

EXIT_ERROR: Final = 1

console = Console()
err = Console(stderr=True)


@contextmanager
def _errors_as_one_line() -> Iterator[None]:
    try:
        yield
    except BananaError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None


def _runtime(*, with_provider: bool) -> Runtime:
    from bananabatch.wiring import build_runtime

    return build_runtime(Settings.from_env(os.environ), with_provider=with_provider)


def _require_job(job_id: str) -> None:
    """A job that does not exist is said before any provider is set up."""
    if _runtime(with_provider=False).repo.get_job(job_id) is None:
        raise PermanentError(f"no job {job_id} here: `bananabatch ls` lists the jobs")


def estimate_file(
    rt: Runtime,
    path: Path,
    *,
    cache_on: bool = True,
    on_rejected: Callable[[RejectedLine], object] | None = None,
    options: Mapping[str, str] | None = None,
) -> FileEstimate:
    """Parse FILE as intake would and price it against rt's cache and finished jobs;
    on_rejected sees each line intake would reject."""
    limits = IntakeLimits()
    parser = LineParser(
        default_model=rt.settings.default_model,
        limits=limits,
        today=rt.now().date(),
        vertex=rt.settings.provider is ProviderKind.VERTEX,
        references=reference_policy(rt.settings),
        openai=rt.settings.openai_enabled,
    )
    estimator = FileEstimator(
        rt.prices,
        is_cached=lambda digest: cache.lookup(rt, digest) is not None,
        cache_enabled=cache_on,
        router=router_for(rt.settings, rt.prices),
    )
    with path.open("rb") as stream:
        # A two-tier file is priced as its drafts and its finals (twotier_cli).
        for line_no, raw in twotier_cli.estimate_lines(
            stream, max_line_bytes=limits.max_line_bytes, options=options
        ):
            parsed = parser.parse(line_no, raw)
            if parsed is not None:
                estimator.add(parsed)
                if on_rejected is not None and isinstance(parsed, RejectedLine):
                    on_rejected(parsed)
    rates = observed_rates(job.counts for job in rt.repo.list_jobs() if job.state in JOB_TERMINAL)
    result = estimator.result(rates)
    result.price_warnings = price_warnings(
        rt.prices,
        parser.models_used(),
        rt.now().date(),
        rt.settings.price_max_age_days,
    )
    if result.hybrid is not None:
        used = [lane.lane for lane in result.hybrid.lanes]
        result.price_warnings += flat_price_warnings(used, rt.settings)
        for lane in result.hybrid.lanes:
            lane.price_source = price_source(rt.settings, lane.lane)
    result.right_sizing = right_size_saving(parser.right_sizing(), rt.prices)
    return result


def estimate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Price as if uploaded with bananabatch-cache: off.")
    ] = False,
) -> None:
    """Price FILE before uploading it: standard, batch and after-dedup cost per model and size.

    Example: bananabatch estimate examples/prompts.jsonl --json
    """
    with _errors_as_one_line():
        why = errors_cli.not_text(file)
        if why is not None:
            raise PermanentError(why)
        rt = _runtime(with_provider=False)
        rejected = preview_cli.FirstRejections()
        result = estimate_file(rt, file, cache_on=not no_cache, on_rejected=rejected.append)
        with file.open("rb") as stream:
            tiers = twotier_cli.measured_rates(rt, stream)
        if as_json:
            doc = result.to_doc()
            # The first of them (`rejected` counts them all), as the run's plan lists them.
            doc["rejected_lines"] = preview_cli.rejections_doc(rejected.lines)
            if tiers:
                doc["two_tier_rates"] = twotier_cli.rates_doc(tiers)
            typer.echo(json.dumps(doc, indent=2))
            return
        _print_estimate(result, rejected.lines)
        twotier_cli.print_rates(tiers, console)


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.4f}"


def _print_estimate(result: FileEstimate, rejected: list[RejectedLine]) -> None:
    table = Table(title=f"Estimate: {result.accepted} accepted lines, {result.rejected} rejected")
    for column in ("model", "size", "lines", "urgent", "dups", "cached"):
        table.add_column(column, justify="left" if column in ("model", "size") else "right")
    for column in ("standard", "batch", "after dedup", "per accepted image"):
        table.add_column(column, justify="right")
    for g in result.groups:
        table.add_row(
            g.model,
            g.image_size,
            str(g.lines),
            str(g.urgent_lines),
            str(g.duplicate_lines),
            str(g.cached_lines),
            _usd(g.standard_usd),
            _usd(g.batch_usd),
            _usd(g.after_dedup_usd),
            _usd(g.expected_per_accepted_image_usd),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        str(result.accepted),
        "",
        "",
        "",
        _usd(result.standard_usd),
        _usd(result.batch_usd),
        _usd(result.after_dedup_usd),
        "",
    )
    tables_cli.printer(console).print(table)
    preview_cli.print_rejections(console, rejected, result.rejected)
    if result.hybrid is not None and result.accepted:
        _print_hybrid(result.hybrid, result.accepted)
    for warning in result.price_warnings:
        console.print(f"[yellow]price warning:[/] {warning}")
    for line in result.right_sizing.text() if result.right_sizing else ():
        console.print(line, highlight=False)
    rates = result.rates
    if rates is None:
        console.print("No finished jobs yet: per-image cost assumes every image is accepted.")
    else:
        console.print(
            f"From {rates.jobs} finished job(s): block rate {rates.block_rate:.1%}, "
            f"regeneration rate {rates.regeneration_rate:.1%}."
        )


def _saving(usd: float) -> str:
    """A saving, or what it costs more (urgent lines at the standard price)."""
    return _usd(usd) if usd >= 0 else f"{_usd(-usd)} more"


def _print_hybrid(plan: HybridPlan, accepted: int) -> None:
    """Lines and cost per lane, next to all-standard and all-batch, and the saving."""
    table = Table(title="Hybrid plan: where each line goes (before dedup)")
    table.add_column("lane")
    for column in ("lines", "share", "cost", "per image"):
        table.add_column(column, justify="right")
    for lane in plan.lanes:
        table.add_row(
            f"{lane.lane} ({lane.kind.value})",
            str(lane.lines),
            f"{lane.lines / accepted:.0%}",
            _usd(lane.usd),
            _usd(lane.usd / lane.lines if lane.lines else None),
        )
    table.add_section()
    table.add_row("hybrid", str(accepted), "100%", _usd(plan.hybrid_usd), "")
    table.add_row("all standard", str(accepted), "", _usd(plan.all_standard_usd), "")
    table.add_row("all batch", str(accepted), "", _usd(plan.all_batch_usd), "")
    tables_cli.printer(console).print(table)
    console.print(
        f"Saving: {_saving(plan.all_standard_usd - plan.hybrid_usd)} against all-standard, "
        f"{_saving(plan.all_batch_usd - plan.hybrid_usd)} against all-batch."
    )
    for lane in plan.lanes:
        if lane.price_source is not None:
            console.print(f"price of {lane.lane}: {lane.price_source}", highlight=False)
    for note, lines in sorted(plan.notes.items()):
        console.print(f"[yellow]routing:[/] {lines} line(s): {note}")


def _print_job_state(record: JobRecord, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"job_id": record.job_id, "state": record.state.value}))
    else:
        console.print(f"{record.job_id}: {record.state.value}")


def approve(
    job: Annotated[str, typer.Argument(help="The HELD job's id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job's id and state as JSON.")
    ] = False,
) -> None:
    """Start a job HELD over budget: its estimate is reserved and its batches submitted.

    Example: bananabatch approve prompts-82cb098d8bfb
    """
    with _errors_as_one_line():
        _require_job(job)
        _print_job_state(control.approve(_runtime(with_provider=True), job), as_json)


def reject(
    job: Annotated[str, typer.Argument(help="The HELD job's id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job's id and state as JSON.")
    ] = False,
) -> None:
    """Cancel a job HELD over budget: nothing is generated, its items fail "rejected by user".

    Example: bananabatch reject prompts-82cb098d8bfb
    """
    with _errors_as_one_line():
        _require_job(job)
        _print_job_state(control.reject(_runtime(with_provider=True), job), as_json)
