"""The `bananabatch` command in a real pseudo-terminal (pexpect), as a person runs it: what
needs a terminal (Ctrl-C, a confirmation prompt, live progress) is tested this way."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pexpect

BIN = str(Path(sys.executable).with_name("bananabatch"))
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def spawn(
    args: list[str], *, cwd: Path, env: Mapping[str, str], columns: int = 100
) -> pexpect.spawn:
    """Start `bananabatch ARGS` on a terminal COLUMNS wide."""
    return pexpect.spawn(
        BIN,
        args,
        cwd=str(cwd),
        env={**os.environ, "TERM": "xterm", **env},
        encoding="utf-8",
        dimensions=(40, columns),
        timeout=60,
    )


def screen_text(raw: str) -> str:
    """What was printed, without colours and cursor moves, one line per line."""
    return _ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")


def finish(child: pexpect.spawn, timeout: float = 60) -> tuple[int, str]:
    """Wait for the command to end: its exit status and everything it printed after the
    last expect."""
    child.expect(pexpect.EOF, timeout=timeout)
    child.close()
    status = child.exitstatus if child.exitstatus is not None else 128 + (child.signalstatus or 0)
    return status, screen_text(child.before or "")
