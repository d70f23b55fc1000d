"""Job tables that never cut anything (issue 17 part 5): at their natural width in a pipe,
as a table on a terminal wide enough for it, and as one short block per job on a narrower
one (rich would otherwise squeeze the columns until their cells are empty or end in "…").
Only layout; the rows come from cli.job_rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from rich.console import Console
from rich.table import Table

# A pipe has no width to fit: the table is printed whole, one row per line.
PIPE_WIDTH: Final = 10_000
_LEFT: Final = frozenset({"job", "state", "cost"})


def job_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table()
    for column in columns:
        table.add_column(
            column, justify="left" if column in _LEFT else "right", no_wrap=True, overflow="fold"
        )
    for row in rows:
        table.add_row(*row)
    return table


def printer(console: Console) -> Console:
    """Where a table goes: the console itself on a terminal; in a pipe, a console as wide as
    the table (a pipe's default 80 columns would cut cells to "…")."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=PIPE_WIDTH, no_color=True)


def fits(console: Console, table: Table) -> bool:
    """Whether the table fits the console at its natural width (a pipe has room for any)."""
    if not console.is_terminal:
        return True
    natural = console.measure(table, options=console.options.update_width(PIPE_WIDTH)).maximum
    return natural <= console.width


def print_job_table(
    console: Console, columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """The table where it fits; in a pipe at its natural width; else a block per job."""
    table = job_table(columns, rows)
    if not console.is_terminal:
        printer(console).print(table)
        return
    if fits(console, table):
        console.print(table)
        return
    for row in rows:
        cell = dict(zip(columns, row, strict=True))
        console.print(f"[bold]{cell['job']}[/]", highlight=False)
        console.print(
            f"  {cell['state']} · lines {cell['lines']} · done {cell['done']} · age {cell['age']}",
            highlight=False,
        )
        console.print(
            f"  succeeded {cell['succeeded']} · blocked {cell['blocked']}"
            f" · failed {cell['failed']} · rejected {cell['rejected']}",
            highlight=False,
        )
        console.print(f"  {cell['cost']}", highlight=False)
