"""The `bananabatch` command. Parses, wires, delegates; no pipeline logic lives here.

It works against the local stack (BANANABATCH_BACKEND=local, the default: a folder, SQLite
and the emulator) and a deployed one (BANANABATCH_BACKEND=gcp with the project and buckets
set) alike. Every command has --json for scripts.

Exit codes: 0 success, 1 error, 2 usage error, 3 job ended PARTIAL, 4 job ended FAILED or
CANCELLED, 5 job HELD for approval, 130 interrupted.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from bananabatch import (
    config,
    cost_cli,
    doctor_cli,
    errors_cli,
    expand_cli,
    fetch_cli,
    interrupt_cli,
    lanes_cli,
    log,
    pause_cli,
    preview_cli,
    progress_cli,
    select_cli,
    serve_cli,
    tables_cli,
    twotier_cli,
    webhook_cli,
)
from bananabatch.config import Backend, ProviderKind, Settings
from bananabatch.core.records import JobRecord
from bananabatch.core.states import (
    BATCH_PROVIDER_TERMINAL,
    ITEM_TERMINAL,
    JOB_TERMINAL,
    BatchState,
    ItemState,
    JobState,
)
from bananabatch.errors import BananaError, PermanentError
from bananabatch.local import drivers
from bananabatch.pipeline.budget import JOB_BUDGET_KEY
from bananabatch.pipeline.cache import LANE_SYNC, LANE_URGENT
from bananabatch.pipeline.runtime import Runtime

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_PARTIAL: Final = 3
EXIT_FAILED: Final = 4
EXIT_HELD: Final = 5
BATCH_DONE_STATES: Final = BATCH_PROVIDER_TERMINAL | {BatchState.COLLECTED}
# What `local run` says when it resumes an unfinished job of the same file (the crash
# trials read it: benchmarks/kill_trials.py).
RESUMED_SAYS: Final = "resumed:"

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

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
YesOpt = Annotated[
    bool,
    typer.Option(
        "--yes", "-y", help="Run without asking after the plan (needed when not on a terminal)."
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show the plan (lines, rejections, cost) and stop.")
]


def complete_job_id(incomplete: str) -> list[tuple[str, str]]:
    """Shell completion of a job id: the jobs of the configured store whose id starts with
    what was typed, newest first, each with its state as help. Never fails: a store that
    cannot be read completes nothing."""
    try:
        rt = open_runtime()
        jobs = [j for j in recent_jobs(rt) if j.job_id.startswith(incomplete)]
    except Exception:  # noqa: BLE001 - completion must never print an error into the shell
        return []
    return [(j.job_id, f"{j.state.value}, {j.line_count:,} lines") for j in jobs]


JobArg = Annotated[
    str,
    typer.Argument(help="The job id (see `bananabatch ls`).", autocompletion=complete_job_id),
]


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


FormatOpt = Annotated[
    Format | None,
    typer.Option("--format", help="table (default), json or csv; nothing is cut short."),
]


errors_cli.show_flags_as_flags()


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        console.print(f"bananabatch {version('bananabatch')}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks on errors (anywhere on the line).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug


def exit_code_for(job: JobRecord) -> int:
    return {
        JobState.SUCCEEDED: EXIT_OK,
        JobState.PARTIAL: EXIT_PARTIAL,
        JobState.FAILED: EXIT_FAILED,
        JobState.CANCELLED: EXIT_FAILED,
        JobState.HELD: EXIT_HELD,
    }.get(job.state, EXIT_OK)


@contextmanager
def errors_as_one_line() -> Iterator[None]:
    """A BananaError becomes one red line and exit code 1 (a traceback only with --debug)."""
    try:
        yield
    except BananaError as exc:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(EXIT_ERROR) from None


def settings_from_env(**overrides: Any) -> Settings:
    base = Settings.from_env(os.environ)
    settings = base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    # A running `local serve` says where its emulators are: no address to set by hand.
    found = serve_cli.service_emulators(settings)
    return settings.model_copy(update=found) if found else settings


def open_runtime(*, with_provider: bool = False, **overrides: Any) -> Runtime:
    from bananabatch.wiring import build_runtime

    settings = settings_from_env(**overrides)
    if settings.backend is Backend.LOCAL:
        _quiet_pipeline_logs(settings)
    return build_runtime(settings, with_provider=with_provider)


def _quiet_pipeline_logs(settings: Settings) -> None:
    # The pipeline logs JSON for Cloud Logging; on a terminal it goes to a file instead.
    logs = settings.local_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log.configure(settings.log_level, (logs / "pipeline.jsonl").open("a"), replace=True)


def require_text_file(path: Path) -> None:
    """A binary file under a .jsonl name is refused as one error, not a rejection per line."""
    why = errors_cli.not_text(path)
    if why is not None:
        raise PermanentError(why)


def require_job(job_id: str) -> JobRecord:
    """The job, from the state store alone: a job that does not exist is said before any
    provider is set up (no emulator URL or API key asked for a typo)."""
    settings = settings_from_env()
    rt = open_runtime()
    job = rt.repo.get_job(job_id)
    if job is None:
        where = (
            f"in {settings.local_root}"
            if settings.backend is Backend.LOCAL
            else f"in project {settings.project}"
        )
        raise PermanentError(f"no job {job_id} {where}: `bananabatch ls` lists the jobs")
    return job


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


# --- local run ------------------------------------------------------------------------------


@local_app.command("run")
def local_run(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    root: Annotated[
        Path,
        typer.Option(help="Where the local buckets and state live.", envvar=config.ENV_LOCAL_ROOT),
    ] = Path(".bananabatch"),
    provider: Annotated[
        ProviderKind,
        typer.Option(help="emulator (default, free) or gemini (real, paid: needs GEMINI_API_KEY)."),
    ] = ProviderKind.EMULATOR,
    as_json: JsonOpt = False,
    approve: Annotated[
        bool,
        typer.Option(
            "--approve",
            help="Run the job even when its estimate is over a budget cap (it is held"
            " otherwise, with nothing spent).",
        ),
    ] = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    final_model: twotier_cli.FinalModelOpt = None,
    draft_model: twotier_cli.DraftModelOpt = None,
    candidates: twotier_cli.CandidatesOpt = None,
    keep: twotier_cli.KeepOpt = None,
    selection: twotier_cli.SelectionOpt = None,
) -> None:
    """Show the plan for FILE, ask, then run it through the whole pipeline on this machine
    and print a summary. Not on a terminal it runs only with --yes.

    Example: bananabatch local run examples/prompts.jsonl --yes
    """
    from bananabatch.local.runner import LocalPipeline, RunResult
    from bananabatch.local.thumbpool import on_demand, thumbnail_workers
    from bananabatch.pipeline import control
    from bananabatch.wiring import build_runtime

    with errors_as_one_line():
        require_text_file(file)
        tiers = twotier_cli.metadata(final_model, draft_model, candidates, keep, selection)
        again = f"bananabatch local run {file} --yes" + (" --approve" if approve else "")
        again += "".join(f" --{k.removeprefix('bananabatch-')} {v}" for k, v in tiers.items())
        emulated = openai_emulated() if provider is ProviderKind.EMULATOR else {}
        planned = settings_from_env(
            backend=Backend.LOCAL, local_root=root, provider=provider, **emulated
        )
        if not _plan_then_ask(planned, file, yes=yes, dry_run=dry_run, again=again, options=tiers):
            raise typer.Exit(EXIT_OK if dry_run else EXIT_ERROR)
    with (
        errors_as_one_line(),
        _provider_for(provider, root) as provider_overrides,
        drivers.driving(root, drivers.RUN, emulators=_own(provider_overrides)) as held,
    ):
        settings = settings_from_env(
            backend=Backend.LOCAL, local_root=root, provider=provider, **provider_overrides
        )
        _quiet_pipeline_logs(settings)
        pipeline = LocalPipeline(
            build_runtime(settings),
            thumbnail_workers=thumbnail_workers(settings),
            thumbnails_on_demand=on_demand(settings),
        )
        seen: list[str] = []
        said = _say_job_first(seen)

        def started(job_id: str, resumed: bool) -> None:
            held.announce(job_id=job_id)
            said(job_id, resumed)

        def run() -> RunResult:
            # No time limit: a 5,000-line file takes longer than any fixed one, and Ctrl-C
            # stops waiting without harm.
            if as_json:
                return pipeline.run_job(
                    file, on_start=started, timeout=math.inf, metadata=tiers or None
                )
            with progress_cli.job_progress(
                err, thumbnails_after_end=not on_demand(settings)
            ) as shown:

                def read() -> progress_cli.Seen | None:
                    return _seen(pipeline.runtime, seen[0]) if seen else None

                with progress_cli.refreshed(shown, read):
                    return pipeline.run_job(
                        file,
                        on_progress=lambda _p: shown.show(*_seen(pipeline.runtime, seen[0])),
                        on_start=started,
                        timeout=math.inf,
                        metadata=tiers or None,
                    )

        try:
            result = run()
            if result.job.state is JobState.HELD and approve:
                # The same approval `bananabatch approve` gives: the estimate is reserved
                # outside the cap, then the run resumes the job it just held.
                control.approve(pipeline.runtime, result.job.job_id)
                result = run()
        except KeyboardInterrupt:
            _interrupted_run(pipeline.runtime, seen, file, provider, approve=approve)
        finally:
            pipeline.close()
        if result.job.state is JobState.HELD:
            _print_held(result.job, file, as_json)
        elif as_json:
            print_json(result.summary)
        else:
            _print_local_summary(result.summary, root, on_demand(settings))
        raise typer.Exit(exit_code_for(result.job))


def _print_local_summary(summary: dict[str, Any], root: Path, thumbnails_on_demand: bool) -> None:
    hint = serve_cli.gallery_hint(root, summary["job_id"]) if thumbnails_on_demand else None
    print_summary(summary, gallery_note=hint)


def _plan_then_ask(
    settings: Settings,
    file: Path,
    *,
    yes: bool,
    dry_run: bool,
    again: str,
    job_cap_usd: float | None = None,
    options: Mapping[str, str] | None = None,
) -> bool:
    """The plan on stderr, then the question (preview_cli.go_ahead). A file whose earlier
    run did not finish resumes its job without a new plan: it was agreed to then."""
    from bananabatch.local.runner import unfinished_job_of
    from bananabatch.wiring import build_runtime

    if settings.backend is Backend.LOCAL:
        _quiet_pipeline_logs(settings)
    # The plan reads files and state only: no provider, so no emulator URL or key is needed.
    rt = build_runtime(settings, with_provider=False)
    if settings.backend is Backend.LOCAL and unfinished_job_of(rt, file) and not dry_run:
        return True
    plan = preview_cli.make_plan(rt, file, job_cap_usd=job_cap_usd, options=options)
    preview_cli.print_plan(plan, err)
    return preview_cli.go_ahead(plan, err, yes=yes, dry_run=dry_run, again=again)


def _say_job_first(seen: list[str]) -> Callable[[str, bool], None]:
    """The on_start of a local run: the job id, once per command (an --approve run starts
    the same job twice), before intake, so it is on screen before anything is paid."""

    def started(job_id: str, resumed: bool) -> None:
        if seen:
            return
        seen.append(job_id)
        how = (
            f"{RESUMED_SAYS} an earlier run of this file did not finish; finished lines are"
            " kept and not paid again"
            if resumed
            else "Ctrl-C stops waiting, not the job"
        )
        err.print(f"job {job_id} ({how})", soft_wrap=True, highlight=False)

    return started


def _interrupted_run(
    rt: Runtime, seen: list[str], file: Path, provider: ProviderKind, *, approve: bool = False
) -> NoReturn:
    interrupt_cli.quiet_emulator_shutdown()
    # The run goes on as it was asked for: a job stopped before its approval needs it again.
    rerun = (
        f"bananabatch local run {file}"
        + (f" --provider {provider.value}" if provider is not ProviderKind.EMULATOR else "")
        + (f" {interrupt_cli.APPROVE_FLAG}" if approve else "")
    )
    said = interrupt_cli.after_local_run(
        rt, seen[0] if seen else None, rerun, in_process=provider is ProviderKind.EMULATOR
    )
    err.print(said, soft_wrap=True, highlight=False)
    raise typer.Exit(interrupt_cli.EXIT_INTERRUPTED) from None


def _print_held(job: JobRecord, file: Path, as_json: bool) -> None:
    """A held job has no summary yet: say why it waits, that nothing was spent, and the
    two ways on."""
    again = f"bananabatch local run {file} --approve"
    if as_json:
        print_json(
            {
                "job_id": job.job_id,
                "state": job.state.value,
                "reason": job.error,
                "estimated_usd": job.costs.estimated_usd,
                "spent_usd": 0.0,
                "to_run_it": again,
            }
        )
        return
    err.print(
        f"[bold yellow]job {job.job_id} is HELD[/]: {job.error}\n"
        f"Nothing was spent. To run it anyway: {again}",
        soft_wrap=True,
    )


@contextmanager
def _provider_for(provider: ProviderKind, root: Path) -> Iterator[dict[str, Any]]:
    """Start the emulators for an emulator run (Gemini's, and OpenAI's for gpt-image
    lines); pass settings through for a real provider."""
    if provider is not ProviderKind.EMULATOR:
        yield {}
        return
    running = drivers.service(root)
    if running is not None and running.emulators:
        # A local service runs: its emulators, so its tick and this run see the same batches.
        yield {**running.emulators, SERVICE_EMULATORS: True}
        return
    from bananabatch.emulator.openai import OpenAIEmulatorConfig, OpenAIEmulatorServer
    from bananabatch.emulator.server import EmulatorServer

    config = demo_emulator_config()
    # It reads the local folder's stand-ins for signed reference URLs, and nothing else.
    config.local_files_root = root
    openai_config = OpenAIEmulatorConfig(
        pending_seconds=config.pending_seconds, running_seconds=config.running_seconds
    )
    with (
        EmulatorServer(config) as emulator,
        OpenAIEmulatorServer(openai_config) as openai_emu,
        lanes_cli.emulated_lanes() as lanes,
    ):
        yield {
            "gemini_base_url": emulator.base_url,
            "gemini_api_key": "local-emulator-key",
            **openai_emulated(openai_emu.base_url),
            **lanes,
        }


# Marks provider settings that are the running service's emulators, not this command's.
SERVICE_EMULATORS: Final = "_service_emulators"


def _own(overrides: dict[str, Any]) -> dict[str, str]:
    """The emulator addresses a command runs in itself (none when they are the service's)."""
    if overrides.pop(SERVICE_EMULATORS, False):
        return {}
    return {k: str(v) for k, v in overrides.items() if k.endswith("_base_url")}


def openai_emulated(base_url: str | None = None) -> dict[str, Any]:
    """The settings of a local run whose gpt-image lines go to the OpenAI emulator (its
    address once it runs; before, for the plan, only that they are taken)."""
    found: dict[str, Any] = {"openai_enabled": True, "openai_api_key": "local-emulator-key"}
    return found | ({"openai_base_url": base_url} if base_url else {})


def demo_emulator_config() -> Any:
    """Batches that finish in seconds: long enough to see them move, short enough to wait."""
    from bananabatch.emulator.store import EmulatorConfig

    return EmulatorConfig(pending_seconds=1.0, running_seconds=2.0)


def _add_lane_split(cost: Table, split: dict[str, Any]) -> None:
    """The actual split across the lanes (issue 20): batch, cache, each sync provider. Items
    split under their priority lane ("urgent", "sync") instead of a provider were served by
    none (every provider failed, or the call was lost): said so, not listed as spend."""
    if len(split) > 1:
        for name, share in sorted(split.items()):
            items = share["items"]
            if name in (LANE_URGENT, LANE_SYNC) and not share["actual_usd"]:
                plural = "item" if items == 1 else "items"
                cost.add_row(f"  {name}: {items} {plural} not served (failed)", "—")
                continue
            cost.add_row(f"  lane {name}: {items} items", f"${share['actual_usd']:.4f}")


def print_summary(summary: dict[str, Any], *, gallery_note: str | None = None) -> None:
    """The job's summary for a person; its last line is the gallery's path, what they open
    next (`gallery_note`, where its thumbnails come from, goes just above it)."""
    if not summary:
        err.print("[red]the job left no summary.json[/]")
        return
    counts: dict[str, int] = summary["counts"]
    costs: dict[str, Any] = summary["costs"]
    # The heading on a line of its own: as the title of a two-column table it was centred
    # over it and wrapped a word a line ("job" / "prompts-8d9c…:" / "PARTIAL").
    console.print(f"[bold]job {summary['job_id']}: {summary['state']}[/]", soft_wrap=True)
    table = Table()
    table.add_column("item state")
    table.add_column("count", justify="right")
    for state, count in counts.items():
        if count:
            table.add_row(state, str(count))
    table.add_row("[bold]input lines[/]", f"[bold]{summary['line_count']}[/]")
    console.print(table)
    cost = Table(title="cost (USD)")
    cost.add_column("")
    cost.add_column("amount", justify="right")
    cost.add_row("estimate at standard price", f"${costs['standard_equivalent_usd']:.4f}")
    cost.add_row("estimate at batch price", f"${costs['estimated_usd']:.4f}")
    cost.add_row("actual (from usageMetadata)", f"${costs['actual_usd']:.4f}")
    cost.add_row("saved against standard price", f"${costs['saved_usd']:.4f}")
    per_image = costs.get("cost_per_accepted_image_usd")
    if per_image is not None:
        cost.add_row("per accepted image", f"${per_image:.4f}")
    shares = costs.get("by_provider") or {}
    if len(shares) > 1:
        # A file mixing providers: what each one's lines cost (summary.json has the same).
        for name, share in sorted(shares.items()):
            cost.add_row(
                f"  {name}: {share['items']} items, actual (est.)",
                f"${share['actual_usd']:.4f} (${share['estimated_usd']:.4f})",
            )
    _add_lane_split(cost, costs.get("by_lane") or {})
    console.print(cost)
    twotier_cli.print_stages(summary.get("two_tier"), console)
    if summary.get("error"):
        console.print(f"[red]reason:[/] {summary['error']}", soft_wrap=True)
    files = summary["files"]
    console.print("[bold]results[/]")
    for label, key in (
        ("images", "images"),
        ("results.jsonl", "results"),
        ("rejected.jsonl", "rejected"),
        ("failed.jsonl", "failed"),
    ):
        console.print(f"  {label:<15} {_display_path(files[key])}", soft_wrap=True)
    summary_uri = files["results"].rsplit("/", 1)[0] + "/summary.json"
    console.print(f"  {'summary.json':<15} {_display_path(summary_uri)}", soft_wrap=True)
    if gallery_note:
        console.print(gallery_note, soft_wrap=True)
    console.print(f"[bold]gallery[/]          {_display_path(files['gallery'])}", soft_wrap=True)


def _display_path(uri: str) -> str:
    """Local results as paths relative to the working directory; cloud URIs unchanged."""
    if not uri.startswith("file://"):
        return uri
    path = Path(uri.removeprefix("file://"))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- emulator -------------------------------------------------------------------------------


@app.command()
def emulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    api_key: Annotated[
        str | None,
        typer.Option(help="Accept only this key, as the service would (default: any key)."),
    ] = None,
    local_root: Annotated[
        Path,
        typer.Option(help="The local stack's state folder: reference images under it can be read."),
    ] = Path(".bananabatch"),
) -> None:
    """Serve the Gemini Batch emulator until interrupted.

    Example: bananabatch emulator --port 8765   (then GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8765)
    """
    from bananabatch.emulator.server import run_forever

    config = demo_emulator_config()
    config.api_key = api_key
    config.local_files_root = local_root

    def listening(base_url: str) -> None:
        console.print(f"Gemini Batch emulator on {base_url} (Ctrl-C to stop)", highlight=False)
        console.print(f"  export GOOGLE_GEMINI_BASE_URL={base_url}", highlight=False)

    with errors_as_one_line():
        try:
            run_forever(host, port, config, on_listening=listening)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PermanentError(
                f"port {port} on {host} is already in use (another emulator?): stop it, or"
                f" choose another with --port (and set GOOGLE_GEMINI_BASE_URL to match)"
            ) from None
        except KeyboardInterrupt:
            console.print("emulator stopped")


# --- submit, status, ls, watch ----------------------------------------------------------------


@app.command()
def submit(
    file: Annotated[str, typer.Argument(help="A local JSONL path or a gs:// URI.")],
    budget_usd: Annotated[
        float | None,
        typer.Option(
            "--budget",
            min=0,
            help="A cap in USD for this job; it can only lower the configured job cap.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    final_model: twotier_cli.FinalModelOpt = None,
    draft_model: twotier_cli.DraftModelOpt = None,
    candidates: twotier_cli.CandidatesOpt = None,
    keep: twotier_cli.KeepOpt = None,
    selection: twotier_cli.SelectionOpt = None,
) -> None:
    """Show the plan for FILE, ask, then upload it to the inbox and start its job; prints the
    job id. Not on a terminal it submits only with --yes. Exits 5 when the job is held over
    a budget, 4 when it failed at intake, with the reason.

    Example: bananabatch submit prompts.jsonl --budget 2.50 --yes
    """
    metadata = None if budget_usd is None else {JOB_BUDGET_KEY: f"{budget_usd:g}"}
    tiers = twotier_cli.metadata(final_model, draft_model, candidates, keep, selection)
    if tiers:
        metadata = {**(metadata or {}), **tiers}
    with errors_as_one_line():
        settings = settings_from_env()
        local = settings.backend is Backend.LOCAL
        path = Path(file)
        if local and not path.is_file():
            raise PermanentError(f"no such file: {file} (the local backend takes a local path)")
        again = f"bananabatch submit {file} --yes" + (
            f" --budget {budget_usd:g}" if budget_usd is not None else ""
        )
        again += "".join(f" --{k.removeprefix('bananabatch-')} {v}" for k, v in tiers.items())
        if not _submit_agreed(settings, path, yes, dry_run, again, budget_usd, tiers):
            raise typer.Exit(EXIT_OK if dry_run else EXIT_ERROR)
        # Locally, on_upload runs in this process and submits, so it needs the provider; a
        # deployed stack only needs the upload (the cloud function does the rest).
        rt = open_runtime(with_provider=local)
        if local:
            job_id = _submit_locally(rt, path, metadata)
        else:
            from bananabatch.deployed import submit_file

            job_id = submit_file(rt.settings, file, metadata=metadata)
        job = rt.repo.get_job(job_id) if local else None
        if as_json:
            print_json({"job_id": job_id, **({"state": job.state.value} if job else {})})
        else:
            console.print(job_id)
        if job is not None and job.state in {JobState.HELD, JobState.FAILED}:
            err.print(f"job {job_id} is {job.state.value}: {job.error}", soft_wrap=True)
            raise typer.Exit(exit_code_for(job))


def _submit_agreed(
    settings: Settings,
    path: Path,
    yes: bool,
    dry_run: bool,
    again: str,
    budget_usd: float | None,
    options: Mapping[str, str] | None = None,
) -> bool:
    if path.is_file():
        require_text_file(path)
        return _plan_then_ask(
            settings,
            path,
            yes=yes,
            dry_run=dry_run,
            again=again,
            job_cap_usd=budget_usd,
            options=options,
        )
    # A gs:// object is not read here, so there is no plan: only --yes sends it.
    if dry_run or not yes:
        raise PermanentError(
            f"{path} is not a local file, so no plan can be shown; `bananabatch estimate` a"
            f" local copy, or submit it with --yes"
        )
    return True


def _submit_locally(rt: Runtime, path: Path, metadata: dict[str, str] | None) -> str:
    from bananabatch.local.runner import LocalPipeline
    from bananabatch.local.thumbpool import on_demand

    pipeline = LocalPipeline(rt, thumbnails_on_demand=on_demand(rt.settings))
    try:
        # Held while intake reads the file, so a service does not read it again meanwhile.
        with drivers.driving(rt.settings.local_root, drivers.SUBMIT) as held:
            placed = pipeline.place(path, metadata=metadata)
            held.announce(job_id=placed.job_id)
            pipeline.deliver_upload(placed)
            # A batch that ended at create was announced on this process's bus, which dies
            # with the command: collect it now rather than at the tick's re-announcement.
            pipeline.drain()
    finally:
        pipeline.close()
    job = rt.repo.get_job(placed.job_id)
    idle = serve_cli.nothing_drives(rt.settings.local_root, job) if job else None
    if idle is not None:
        err.print(
            f"job {placed.job_id} is submitted; nothing is driving it yet: start"
            " `bananabatch local serve` (every job) or `bananabatch watch"
            f" {placed.job_id}` to move it",
            soft_wrap=True,
            highlight=False,
        )
    return placed.job_id


@app.command()
def status(
    job: Annotated[
        str | None,
        typer.Argument(help="A job id; recent jobs when omitted.", autocompletion=complete_job_id),
    ] = None,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """Show a job's counts per state, cost and age (or a table of recent jobs).

    Example: bananabatch status prompts-3f2a9c1d7e44 --format csv
    """
    with errors_as_one_line():
        chosen = Format.JSON if as_json else fmt or Format.TABLE
        if job is None:
            rt = open_runtime()
            jobs = recent_jobs(rt)
            if chosen is Format.JSON:
                print_json([job_view(rt, j) for j in jobs])
            else:
                print_jobs(rt, jobs, chosen)
            return
        record = require_job(job)
        rt = open_runtime()
        if chosen is Format.JSON:
            print_json(job_view(rt, record))
        else:
            print_jobs(rt, [record], chosen)
        raise typer.Exit(exit_code_for(record))


@app.command("ls")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, help="How many of the newest jobs to show.")] = 20,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """List recent jobs, newest first.

    Example: bananabatch ls --limit 5 --format csv
    """
    with errors_as_one_line():
        rt = open_runtime()
        jobs = recent_jobs(rt)[:limit]
        print_jobs(rt, jobs, Format.JSON if as_json else fmt or Format.TABLE)


def recent_jobs(rt: Runtime) -> list[JobRecord]:
    return sorted(rt.repo.list_jobs(), key=lambda j: j.created_at, reverse=True)


def live_counts(rt: Runtime, job: JobRecord) -> dict[str, int]:
    counts = {s.value: rt.repo.count_items(job.job_id, s) for s in ItemState}
    counts[ItemState.REJECTED.value] = job.rejected_count
    return counts


def job_view(rt: Runtime, job: JobRecord) -> dict[str, Any]:
    counts = job.counts if job.state in JOB_TERMINAL else live_counts(rt, job)
    age = (rt.now() - job.created_at).total_seconds()
    return {
        "job_id": job.job_id,
        "state": job.state.value,
        "source": job.source.uri,
        "line_count": job.line_count,
        "counts": counts,
        "costs": job.costs.to_doc(),
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "age_seconds": round(age, 1),
        "results_prefix": job.results_prefix,
        "error": job.error,
        # Set while a deployment-wide pause keeps this job's batches queued.
        "paused": job.paused,
        "pauses": job.pauses,
        # Local stack: what to do when no process moves the job (None when one does).
        "not_driven": _nothing_drives(rt, job),
        **status_notes(rt, job),
    }


def _nothing_drives(rt: Runtime, job: JobRecord) -> str | None:
    if rt.settings.backend is not Backend.LOCAL:
        return None
    return serve_cli.nothing_drives(rt.settings.local_root, job)


def status_notes(rt: Runtime, job: JobRecord) -> dict[str, Any]:
    """What `status` says beyond counts: failures recorded on the job or its batches (each
    isolated: the others go on), and batches waiting out the reconcile grace."""
    from bananabatch.pipeline.status import job_notes

    return job_notes(rt, job)


JOB_COLUMNS: Final = (
    "job",
    "state",
    "lines",
    "done",
    "succeeded",
    "blocked",
    "failed",
    "rejected",
    "cost",
    "age",
)


def job_rows(rt: Runtime, jobs: list[JobRecord]) -> list[list[str]]:
    rows = []
    for job in jobs:
        view = job_view(rt, job)
        c = view["counts"]
        done = sum(v for k, v in c.items() if ItemState(k) in ITEM_TERMINAL)
        rows.append(
            [
                job.job_id,
                job.state.value + (" (paused)" if job.paused else ""),
                str(job.line_count),
                str(done),
                str(c.get("SUCCEEDED", 0) + c.get("CACHED", 0)),
                str(c.get("BLOCKED", 0)),
                str(c.get("FAILED", 0)),
                str(c.get("REJECTED", 0)),
                progress_cli.money(job),
                _age(view["age_seconds"]),
            ]
        )
    return rows


def print_jobs(rt: Runtime, jobs: list[JobRecord], fmt: Format = Format.TABLE) -> None:
    if fmt is Format.JSON:
        print_json([job_view(rt, j) for j in jobs])
        return
    if fmt is Format.CSV:
        writer = csv.writer(sys.stdout)
        writer.writerow(JOB_COLUMNS)
        writer.writerows(job_rows(rt, jobs))
        return
    pause_cli.print_banner(rt)
    tables_cli.print_job_table(console, JOB_COLUMNS, job_rows(rt, jobs))
    for job in jobs:
        notes = status_notes(rt, job)
        # soft_wrap: a long error is one line in a pipe, never broken into pieces.
        for problem in notes["problems"]:
            where = problem.get("batch_id") or "job"
            err.print(
                f"[yellow]{job.job_id}[/] {where}: {problem['error']}",
                soft_wrap=True,
                highlight=False,
            )
        for wait in notes["waiting"]:
            err.print(
                f"[yellow]{job.job_id}[/] {wait['batch_id']}: {wait['why']}",
                soft_wrap=True,
                highlight=False,
            )
        if notes.get("window"):
            err.print(
                f"[yellow]{job.job_id}[/] {notes['window']['why']}", soft_wrap=True, highlight=False
            )
        for shared in notes.get("shared", []):
            mine = shared["lines_of_this_job"]
            err.print(
                f"[yellow]{job.job_id}[/] {mine} line{'s ride' if mine != 1 else ' rides'} in "
                f"shared batch {shared['batch_id']} ({shared['state']}, {shared['lines']} lines "
                f"of {shared['jobs']} jobs, packed at the batch window)",
                soft_wrap=True,
                highlight=False,
            )
        idle = _nothing_drives(rt, job)
        if idle is not None:
            err.print(f"[yellow]{job.job_id}[/] {idle}", soft_wrap=True, highlight=False)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
def watch(
    job: JobArg,
    interval: Annotated[float, typer.Option(min=0, help="Seconds between refreshes.")] = 2.0,
    timeout: Annotated[float, typer.Option(min=0, help="Give up after this many seconds.")] = 48
    * 3600,
    as_json: JsonOpt = False,
) -> None:
    """Follow a job with a live progress bar until it ends; exits with the job's code.

    On the local backend, without a `bananabatch local serve` running, watch also plays the
    scheduler for this job while it runs (it ticks and collects).

    Example: bananabatch watch prompts-3f2a9c1d7e44
    """
    with errors_as_one_line():
        require_job(job)
        settings = settings_from_env()
        local = settings.backend is Backend.LOCAL
        # A running service drives every local job: watch then only follows.
        drive = local and drivers.service(settings.local_root) is None
        rt = open_runtime(with_provider=drive)
        try:
            with ExitStack() as driving:
                ticker = _drive_one(rt, job, interval, driving) if drive else None
                record = _follow(rt, job, ticker, interval, timeout, as_json)
        except KeyboardInterrupt:
            err.print(
                interrupt_cli.after_watch(rt, job, local=local), soft_wrap=True, highlight=False
            )
            raise typer.Exit(interrupt_cli.EXIT_INTERRUPTED) from None
        if as_json:
            print_json(job_view(rt, record))
        elif record.state in JOB_TERMINAL:
            print_summary(read_summary(rt, job))
        raise typer.Exit(exit_code_for(record))


def read_summary(rt: Runtime, job_id: str) -> dict[str, Any]:
    """The job's summary.json ({} while it has none)."""
    try:
        doc = json.loads(
            rt.objects.read_bytes(rt.settings.results_bucket, f"jobs/{job_id}/summary.json")
        )
    except BananaError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _seen(rt: Runtime, job_id: str) -> progress_cli.Seen:
    record = rt.repo.get_job(job_id)
    if record is None:
        return None, {}, None
    done = rt.repo.count_batches(job_id=job_id, states=BATCH_DONE_STATES)
    return record, live_counts(rt, record), done


def _drive_one(rt: Runtime, job: str, interval: float, stack: ExitStack) -> Any:
    """This process plays the local scheduler while `watch` runs: the tick on a thread,
    the collection here. Returns (ticker, pipeline)."""
    from bananabatch.local.runner import LocalPipeline
    from bananabatch.local.thumbpool import on_demand

    pipeline = LocalPipeline(rt, thumbnails_on_demand=on_demand(rt.settings))
    stack.callback(pipeline.close)
    stack.enter_context(drivers.driving(rt.settings.local_root, drivers.WATCH, job_id=job))
    # A job whose intake a crash cut off goes on from here too, and so do its finished
    # batches whose signals died with an earlier process.
    pipeline.finish_intake(job)
    pipeline.announce_finished(job)
    return stack.enter_context(pipeline.ticking(interval)), pipeline


def _follow(
    rt: Runtime, job: str, driving: Any, interval: float, timeout: float, as_json: bool
) -> JobRecord:
    """The live progress line until the job ends (or is held); delivers the batch-done
    signals when this process drives the job."""
    started = time.monotonic()
    with (
        progress_cli.job_progress(err, disable=as_json) as shown,
        progress_cli.refreshed(shown, lambda: _seen(rt, job)),
    ):
        while True:
            delivered = 0
            if driving is not None:
                ticker, pipeline = driving
                ticker.check()
                delivered = pipeline.drain()
            record = rt.repo.require_job(job)
            shown.show(*_seen(rt, job))
            if record.state in JOB_TERMINAL or record.state is JobState.HELD:
                return record
            if time.monotonic() - started > timeout:
                raise PermanentError(f"job {job} still {record.state.value} after {timeout:.0f} s")
            if driving is None:
                time.sleep(interval)
            elif not delivered:
                driving[0].wait(min(interval, 0.5))


# --- fetch, retry, cancel ---------------------------------------------------------------------


app.command()(fetch_cli.fetch)
app.command()(select_cli.select)


@app.command()
def retry(job: JobArg, as_json: JsonOpt = False) -> None:
    """Resubmit a finished job's failed items as a new job (from its failed.jsonl).

    Example: bananabatch retry prompts-3f2a9c1d7e44
    """
    from bananabatch.pipeline.retry import retry_failed_items

    with errors_as_one_line():
        require_job(job)
        rt = open_runtime(with_provider=True)
        if rt.settings.backend is Backend.LOCAL:
            from bananabatch.local.runner import LocalPipeline
            from bananabatch.local.thumbpool import on_demand

            pipeline = LocalPipeline(rt, thumbnails_on_demand=on_demand(rt.settings))
            try:
                made = retry_failed_items(rt, job, pipeline.upload)
            finally:
                pipeline.close()
        else:
            from bananabatch.deployed import submit_file

            made = retry_failed_items(rt, job, lambda path: submit_file(rt.settings, str(path)))
        if as_json:
            print_json(
                {
                    "job_id": job,
                    "retry_job_id": made.retry_job_id,
                    "items": made.items,
                    "created": made.created,
                }
            )
        elif made.created:
            console.print(f"{made.items} failed items resubmitted as job {made.retry_job_id}")
        else:
            console.print(
                f"job {job} was already retried as job {made.retry_job_id};"
                " its failed items are not paid again"
            )


@app.command()
def cancel(job: JobArg, as_json: JsonOpt = False) -> None:
    """Cancel a job: queued batches never start, running ones are cancelled at the provider.

    Images already generated are kept; the job ends CANCELLED.

    Example: bananabatch cancel prompts-3f2a9c1d7e44
    """
    from bananabatch.pipeline.control import cancel_job

    with errors_as_one_line():
        require_job(job)
        settings = settings_from_env()
        if settings.backend is Backend.LOCAL:
            from bananabatch.local.runner import cancel_locally

            _quiet_pipeline_logs(settings)
            outcome = cancel_locally(settings, job)
        else:
            outcome = cancel_job(open_runtime(with_provider=True), job)
        outcome.update(paid_so_far(open_runtime(), job))
        if as_json:
            print_json(outcome)
        else:
            console.print(cancel_report(job, outcome), soft_wrap=True, highlight=False)


def paid_so_far(rt: Runtime, job_id: str) -> dict[str, Any]:
    """What a job has already paid (the actual cost of its collected items) and delivered,
    against its estimate: what a cancel could not stop."""
    job = rt.repo.require_job(job_id)
    paid = images = 0.0
    for item in rt.repo.items(job_id):
        paid += item.actual_usd or 0.0
        images += item.state in {ItemState.SUCCEEDED, ItemState.CACHED}
    return {
        "paid_usd": round(paid, 6),
        "images_delivered": int(images),
        "estimated_usd": job.costs.estimated_usd,
    }


def cancel_report(job_id: str, outcome: dict[str, Any]) -> str:
    """What was stopped and what had already been paid, in words. A batch the provider had
    already finished when the cancel reached it is paid all the same and still collected."""
    n = outcome["cancelled_batches"]
    stopped = f"{n} batch{'es' if n != 1 else ''} stopped or asked to stop at the provider"
    paid = (
        f"already paid ${outcome['paid_usd']:,.2f} for {outcome['images_delivered']:,} images"
        f" (of an estimate of ${outcome['estimated_usd']:,.2f}); batches the provider had"
        " already finished are paid and their images still collected"
    )
    if outcome.get("state") == JobState.CANCELLED.value:
        return f"job {job_id} ended CANCELLED: {stopped}; {paid}."
    return (
        f"job {job_id}: {stopped}; {paid}. It ends CANCELLED once they are collected"
        f" (`bananabatch watch {job_id}`)."
    )


# Cost commands live with the budget and cache code they drive.
app.command()(cost_cli.estimate)
app.command()(cost_cli.approve)
app.command()(cost_cli.reject)
app.command()(expand_cli.expand)
app.command()(doctor_cli.doctor)
app.command()(webhook_cli.webhook_register)
app.command()(pause_cli.resume)
local_app.command("serve")(serve_cli.serve)


def main() -> None:
    argv, debug = errors_cli.split_debug(sys.argv[1:])
    _state["debug"] = debug
    try:
        app(args=argv, prog_name="bananabatch")
    except KeyboardInterrupt:
        # A command with something in flight says what and how to go on; any other is
        # simply stopped, without a traceback.
        err.print("interrupted")
        sys.exit(interrupt_cli.EXIT_INTERRUPTED)
    except Exception as exc:
        if _state["debug"]:
            raise
        err.print(
            f"[bold red]error:[/] {errors_cli.one_line(exc)}", soft_wrap=True, highlight=False
        )
        sys.exit(EXIT_ERROR)
