"""`bananabatch doctor`: parse, run the checks (bananabatch/doctor.py), print, exit."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bananabatch.config import Settings
from bananabatch.doctor import Check, passed, run_doctor
from bananabatch.errors import ConfigError

console = Console()
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
    probe_lanes: Annotated[
        bool,
        typer.Option(
            "--probe-lanes",
            help="Also make one image on each gateway in use (the gateway bills it).",
        ),
    ] = False,
) -> None:
    """Preflight before the first real job: key form, an authenticated call, which catalog
    models the service batches, static webhook registration, and on the gcp backend the
    buckets, Firestore and topics. Exits 0 when nothing failed (warnings allowed), 1 otherwise.

    Example: bananabatch doctor --json   (with GEMINI_API_KEY=AQ.... BANANABATCH_PROVIDER=gemini)
    """
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        checks = [Check("config", "fail", str(exc))]
    else:
        checks = [
            Check(
                "config",
                "ok",
                f"provider {settings.provider.value}, backend "
                f"{settings.backend.value}, default model {settings.default_model}",
            )
        ]
        checks += run_doctor(settings, datetime.now(UTC).date(), probe_lanes=probe_lanes)
    ok = passed(checks)
    if as_json:
        typer.echo(json.dumps({"ok": ok, "checks": [c.to_doc() for c in checks]}, indent=2))
    else:
        table = Table(title="bananabatch doctor")
        for column in ("check", "result", "detail"):
            table.add_column(column, overflow="fold")
        for check in checks:
            style = _STYLE[check.verdict]
            table.add_row(check.name, f"[{style}]{check.verdict}[/]", check.detail)
        console.print(table)
        console.print("[green]ready[/]" if ok else "[bold red]not ready[/]: fix the failed checks")
    raise typer.Exit(0 if ok else 1)
