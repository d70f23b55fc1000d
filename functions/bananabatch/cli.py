"""The `bananabatch` command. Parses, wires, delegates; no pipeline logic lives here.

Exit codes: 0 success, 1 error, 2 usage error, 3 job ended PARTIAL, 4 job ended FAILED or
CANCELLED, 5 job HELD for approval.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bananabatch.config import Backend, ProviderKind, Settings
from bananabatch.core.records import JobRecord
from bananabatch.core.states import ITEM_TERMINAL, ItemState, JobState
from bananabatch.errors import BananaError

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_PARTIAL: Final = 3
EXIT_FAILED: Final = 4
EXIT_HELD: Final = 5

app = typer.Typer(
    help="Bulk image generation on the Gemini Batch API, at batch price.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
local_app = typer.Typer(help="Run the whole pipeline on this machine.", no_args_is_help=True)
app.add_typer(local_app, name="local")

console = Console()
err = Console(stderr=True)
_state: dict[str, bool] = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def exit_code_for(job: JobRecord) -> int:
    return {
        JobState.SUCCEEDED: EXIT_OK,
        JobState.PARTIAL: EXIT_PARTIAL,
        JobState.FAILED: EXIT_FAILED,
        JobState.CANCELLED: EXIT_FAILED,
        JobState.HELD: EXIT_HELD,
    }.get(job.state, EXIT_OK)


@contextmanager
def _errors_as_one_line() -> Iterator[None]:
    try:
        yield
    except BananaError as exc:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None


def _settings(**overrides: Any) -> Settings:
    base = Settings.from_env(os.environ)
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


# --- local run ------------------------------------------------------------------------------


@local_app.command("run")
def local_run(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    root: Annotated[Path, typer.Option(help="Where the local buckets and state live.")] = Path(
        ".bananabatch"
    ),
    provider: Annotated[
        ProviderKind,
        typer.Option(help="emulator (default, free) or gemini (needs GEMINI_API_KEY)."),
    ] = ProviderKind.EMULATOR,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run FILE through the whole pipeline locally and print a summary.

    Example: bananabatch local run examples/prompts.jsonl
    """
    from bananabatch.local.runner import LocalPipeline
    from bananabatch.local.runner import Progress as RunProgress
    from bananabatch.wiring import build_runtime

    with _errors_as_one_line(), _provider_for(provider) as provider_overrides:
        settings = _settings(
            backend=Backend.LOCAL, local_root=root, provider=provider, **provider_overrides
        )
        pipeline = LocalPipeline(build_runtime(settings))
        try:
            if as_json:
                result = pipeline.run_job(file)
            else:
                with _job_progress() as (progress, task):

                    def show(p: RunProgress) -> None:
                        total = p.job.line_count if p.job and p.job.line_count else None
                        done = sum(v for k, v in p.counts.items() if ItemState(k) in ITEM_TERMINAL)
                        progress.update(
                            task,
                            total=total,
                            completed=done,
                            description=_progress_line(p.job, p.counts),
                        )

                    result = pipeline.run_job(file, on_progress=show)
        finally:
            pipeline.close()
        summary = result.summary
        if as_json:
            console.print_json(json.dumps(summary))
        else:
            _print_summary(summary, root)
        raise typer.Exit(exit_code_for(result.job))


@contextmanager
def _provider_for(provider: ProviderKind) -> Iterator[dict[str, Any]]:
    """Start the emulator for an emulator run; pass settings through for a real provider."""
    if provider is not ProviderKind.EMULATOR:
        yield {}
        return
    from bananabatch.emulator.server import EmulatorServer

    with EmulatorServer(demo_emulator_config()) as emulator:
        yield {"gemini_base_url": emulator.base_url, "gemini_api_key": "local-emulator-key"}


def demo_emulator_config() -> Any:
    """Batches that finish in seconds: long enough to see them move, short enough to wait."""
    from bananabatch.emulator.store import EmulatorConfig

    return EmulatorConfig(pending_seconds=1.0, running_seconds=2.0)


@contextmanager
def _job_progress() -> Iterator[tuple[Progress, Any]]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task("uploading", total=None)
        yield progress, task


def _progress_line(job: JobRecord | None, counts: dict[str, int]) -> str:
    if job is None:
        return "uploading"
    parts = [f"{job.state.value.lower():<9}"]
    for state in (ItemState.SUBMITTED, ItemState.SUCCEEDED, ItemState.BLOCKED, ItemState.FAILED):
        if counts.get(state.value):
            parts.append(f"{state.value.lower()} {counts[state.value]}")
    return " · ".join(parts)


def _print_summary(summary: dict[str, Any], root: Path) -> None:
    if not summary:
        err.print("[red]the job left no summary.json[/]")
        return
    counts: dict[str, int] = summary["counts"]
    costs: dict[str, Any] = summary["costs"]
    table = Table(title=f"job {summary['job_id']}: {summary['state']}", show_header=True)
    table.add_column("item state")
    table.add_column("count", justify="right")
    for state, count in counts.items():
        if count:
            table.add_row(state, str(count))
    table.add_row("[bold]input lines[/]", f"[bold]{summary['line_count']}[/]")
    console.print(table)
    cost = Table(title="cost (USD)", show_header=True)
    cost.add_column("")
    cost.add_column("amount", justify="right")
    cost.add_row("estimate at standard price", f"${costs['standard_equivalent_usd']:.4f}")
    cost.add_row("estimate at batch price", f"${costs['estimated_usd']:.4f}")
    cost.add_row("actual (from usageMetadata)", f"${costs['actual_usd']:.4f}")
    cost.add_row("saved against standard price", f"${costs['saved_usd']:.4f}")
    per_image = costs.get("cost_per_accepted_image_usd")
    if per_image is not None:
        cost.add_row("per accepted image", f"${per_image:.4f}")
    console.print(cost)
    files = summary["files"]
    console.print("[bold]results[/]")
    for label, key in (
        ("images", "images"),
        ("results.jsonl", "results"),
        ("rejected.jsonl", "rejected"),
        ("failed.jsonl", "failed"),
        ("gallery", "gallery"),
    ):
        console.print(f"  {label:<15} {files[key]}")
    console.print(f"  {'summary.json':<15} {files['results'].rsplit('/', 1)[0]}/summary.json")
    _ = root


# --- emulator -------------------------------------------------------------------------------


@app.command()
def emulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
) -> None:
    """Serve the Gemini Batch emulator until interrupted.

    Example: bananabatch emulator --port 8765, then GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8765
    """
    from bananabatch.emulator.server import run_forever

    console.print(f"Gemini Batch emulator on http://{host}:{port} (Ctrl-C to stop)")
    run_forever(host, port, demo_emulator_config())


# --- status and ls --------------------------------------------------------------------------


@app.command()
def status(
    job: Annotated[
        str | None, typer.Argument(help="A job id; all recent jobs when omitted.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a job's counts per state and cost (or a table of recent jobs).

    Example: bananabatch status prompts-3f2a9c1d7e44
    """
    from bananabatch.wiring import build_runtime

    with _errors_as_one_line():
        rt = build_runtime(_settings())
        if job is None:
            jobs = list(rt.repo.list_jobs())
            if as_json:
                console.print_json(json.dumps([j.to_doc() for j in jobs]))
            else:
                _print_jobs(jobs)
            return
        record = rt.repo.require_job(job)
        counts = {s.value: rt.repo.count_items(job, s) for s in ItemState}
        counts[ItemState.REJECTED.value] = record.rejected_count
        if as_json:
            console.print_json(json.dumps(record.to_doc() | {"live_counts": counts}))
        else:
            _print_jobs([record], counts=counts)
        raise typer.Exit(exit_code_for(record))


@app.command("ls")
def list_jobs(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List recent jobs.

    Example: bananabatch ls --json
    """
    status(None, as_json)


def _print_jobs(jobs: list[JobRecord], counts: dict[str, int] | None = None) -> None:
    table = Table(show_header=True)
    for column in ("job", "state", "lines", "succeeded", "blocked", "failed", "rejected", "cost"):
        table.add_column(column)
    for job in jobs:
        c = counts or job.counts
        table.add_row(
            job.job_id,
            job.state.value,
            str(job.line_count),
            str(c.get("SUCCEEDED", 0)),
            str(c.get("BLOCKED", 0)),
            str(c.get("FAILED", 0)),
            str(c.get("REJECTED", 0)),
            f"${job.costs.actual_usd or job.costs.estimated_usd:.4f}",
        )
    console.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
