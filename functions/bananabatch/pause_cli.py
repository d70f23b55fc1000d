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
from bananabatch.pipeline import model_gone, pause
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
    refused key) and, without --kind, try again the models refused as not served; queued
    items go out on the next tick.

    Example: bananabatch resume
    """
    try:
        rt = _runtime()
        lifted = pause.lift(rt, kind or None, by="user")
        # Without --kind, models the provider refused are tried again too.
        models = model_gone.forget(rt) if not kind else []
    except BananaError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        lifted_json = [{"kind": r.kind.value, "reason": r.reason} for r in lifted]
        print(json.dumps({"lifted": lifted_json, "models_retried": models}))
        return
    if not lifted and not models:
        console.print("submission was not paused; nothing to resume")
        return
    for reason in lifted:
        console.print(f"resumed: {reason.describe()}")
    for model in models:
        console.print(f"model {model} will be asked for again (it was refused as not served)")
    console.print("queued batches are submitted on the next tick")


def print_banner(rt: Runtime) -> None:
    """One line per active pause above a job table: why nothing is being submitted."""
    for reason in pause.active_reasons(rt):
        until = f" until {reason.until.isoformat()}" if reason.until else ""
        console.print(
            f"[yellow]submission paused{until}[/] ({reason.kind.value}): {reason.reason}",
            soft_wrap=True,
        )
    gone = model_gone.gone_models(rt)
    for model, answer in sorted(gone.items()):
        console.print(
            f"[yellow]model {model} is not served for batches[/]: {answer}", soft_wrap=True
        )
    if pause.active_reasons(rt) or gone:
        console.print("run `bananabatch resume` once the cause is fixed", soft_wrap=True)
