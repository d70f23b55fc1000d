"""`bananabatch resume`, and how a paused deployment shows in `status` and `ls`.

Submission pauses deployment-wide when Gemini says the prepaid credits are depleted, when
the billing kill switch fires, or when the key is refused (pipeline/pause.py). Items stay
queued; `resume` lifts the pause and the next tick submits them.
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console

from bananabatch.config import Settings
from bananabatch.errors import BananaError
from bananabatch.pipeline import pause
from bananabatch.pipeline.runtime import Runtime

console = Console()
err = Console(stderr=True)


def _runtime() -> Runtime:
    from bananabatch.wiring import build_runtime

    return build_runtime(Settings.from_env(os.environ), with_provider=False)


def resume(
    kind: Annotated[
        list[pause.PauseKind] | None,
        typer.Option("--kind", help="Lift only this reason (repeatable); all by default."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Lift the deployment-wide submission pause (credits depleted, billing kill switch,
    refused key); queued items go out on the next tick.

    Example: bananabatch resume
    """
    try:
        lifted = pause.lift(_runtime(), kind or None, by="user")
    except BananaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps({"lifted": [{"kind": r.kind.value, "reason": r.reason} for r in lifted]}))
        return
    if not lifted:
        console.print("submission was not paused; nothing to resume")
        return
    for reason in lifted:
        console.print(f"resumed: {reason.describe()}")
    console.print("queued batches are submitted on the next tick")


def print_banner(rt: Runtime) -> None:
    """One line per active pause above a job table: why nothing is being submitted."""
    for reason in pause.active_reasons(rt):
        until = f" until {reason.until.isoformat()}" if reason.until else ""
        console.print(
            f"[yellow]submission paused{until}[/] ({reason.kind.value}): {reason.reason}",
            soft_wrap=True,
        )
    if pause.active_reasons(rt):
        console.print("run `bananabatch resume` once the cause is fixed", soft_wrap=True)
