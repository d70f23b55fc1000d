"""`bananabatch select JOB KEYS... | --file FILE`: choose the candidates of a two-tier job in
manual selection that go on to the final model. A plain function; cli.py registers it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _complete_job(incomplete: str) -> list[tuple[str, str]]:
    from bananabatch.cli import complete_job_id  # the CLI registers this command

    return complete_job_id(incomplete)


def select(
    job: Annotated[
        str,
        typer.Argument(help="The job id (see `bananabatch ls`).", autocompletion=_complete_job),
    ],
    keys: Annotated[
        list[str] | None,
        typer.Argument(help="Candidate keys to finish (K~cN), as the gallery shows them."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="A selection file, as the gallery's 'Download selection' saves it."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Choose which candidates of a two-tier job are finished on the final model.

    Example: bananabatch select hero-c54c2e5f2c36 --file selection-hero-c54c2e5f2c36.json
    """
    from bananabatch import cli
    from bananabatch.config import Backend
    from bananabatch.core.twotier.selection import SelectionError, parse_selection
    from bananabatch.errors import PermanentError
    from bananabatch.pipeline import finalize, submit
    from bananabatch.pipeline.twotier.select import select as record

    with cli.errors_as_one_line():
        chosen = list(keys or [])
        if file is not None:
            try:
                chosen += parse_selection(file.read_bytes(), job)
            except OSError as exc:
                raise PermanentError(f"cannot read the selection file {file}: {exc}") from None
            except SelectionError as exc:
                raise PermanentError(f"{file}: {exc}") from None
        cli.require_job(job)
        local = cli.settings_from_env().backend is Backend.LOCAL
        rt = cli.open_runtime(with_provider=local)
        made = record(rt, job, chosen)
        if local:
            # Locally the finals are staged and sent now; a deployed stack's next tick
            # (every minute) stages and submits them with the deployment's credentials.
            finalize.finalize_job_if_done(rt, job)
            submit.submit_queued(rt, job_id=job)
        if as_json:
            cli.print_json(
                {
                    "job_id": job,
                    "selected": made.keys,
                    "lines": made.lines,
                    "lines_without_selection": made.lines_without,
                    "recorded": made.recorded,
                }
            )
            return
        said = "selected" if made.recorded else "already selected"
        cli.console.print(
            f"{len(made.keys)} candidates of {made.lines} lines {said} for the final model"
            + (
                f"; {made.lines_without} lines without a selection end FAILED"
                if made.lines_without
                else ""
            ),
            soft_wrap=True,
        )
