"""The `bananabatch` command in a real pseudo-terminal (pexpect), as a person runs it: what
needs a terminal (Ctrl-C, a confirmation prompt, live progress) is tested this way."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pexpect
from pexpect.popen_spawn import PopenSpawn

BIN = str(Path(sys.executable).with_name("bananabatch"))
_REPO = str(Path(__file__).resolve().parents[2])
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def session_free_environ() -> dict[str, str]:
    """os.environ without the test session's own set-up: the emulator hosts and credentials
    the Google Cloud tests put there would send the command's clients to the session's
    emulators and fakes (in full-suite runs the Ctrl-C tests' commands died on a gRPC error,
    or ran on past Ctrl-C, while each passed alone)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BANANABATCH_", "GOOGLE_", "CLOUDSDK_", "GCE_"))
        and not k.endswith("_EMULATOR_HOST")
        and k != "GEMINI_API_KEY"
    }


class Terminal(PopenSpawn):  # type: ignore[misc]
    """pexpect on a command running on its own terminal (tests.support.pty_run)."""

    def sendintr(self) -> None:
        """Ctrl-C, typed on the terminal: its line discipline sends SIGINT to the command."""
        self.send("\x03")

    def close(self) -> None:
        self.wait()


def spawn(args: list[str], *, cwd: Path, env: Mapping[str, str], columns: int = 100) -> Terminal:
    """Start `bananabatch ARGS` on a terminal COLUMNS wide."""
    return Terminal(
        [sys.executable, "-m", "tests.support.pty_run", "40", str(columns), BIN, *args],
        cwd=str(cwd),
        env={
            **session_free_environ(),
            "TERM": "xterm",
            **env,
            # The launcher is this repository's module, wherever the command runs.
            "PYTHONPATH": _REPO,
        },
        encoding="utf-8",
        timeout=60,
    )


def screen_text(raw: str) -> str:
    """What was printed, without colours and cursor moves, one line per line."""
    return _ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")


def finish(child: Terminal, timeout: float = 60) -> tuple[int, str]:
    """Wait for the command to end: its exit status and everything it printed after the
    last expect."""
    child.expect(pexpect.EOF, timeout=timeout)
    child.close()
    status = child.exitstatus if child.exitstatus is not None else 128 + (child.signalstatus or 0)
    return status, screen_text(child.before or "")
