"""Run a command on a pseudo-terminal that is its controlling terminal, relaying this
process's stdin to the terminal and the terminal's output to stdout; exit as the command
did (128 + N when signal N ended it).

Usage: python -m tests.support.pty_run ROWS COLUMNS COMMAND [ARG ...]

The terminal tests start this launcher with subprocess instead of letting pexpect fork the
test process: by then the test process has gRPC threads (the Google Cloud clients of other
tests), and a child forked from it ran gRPC's fork handlers, printed an epoll error and died
before it could exec the command, or lost its Ctrl-C (seen in full-suite runs only).
subprocess starts the launcher without running any fork handler, and the launcher, a fresh
interpreter without gRPC, forks the command safely, with Ctrl-C's signals at their defaults.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios


def _relay(master: int) -> None:
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    watched = [master, stdin]
    while True:
        ready, _, _ = select.select(watched, [], [])
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command closed its terminal (it ended)
                data = b""
            if not data:
                return
            os.write(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 65536)
            if data:
                os.write(master, data)
            else:
                watched.remove(stdin)


def main(argv: list[str]) -> int:
    rows, columns, command = int(argv[0]), int(argv[1]), argv[2:]
    pid, master = pty.fork()
    if pid == 0:
        # A person's shell starts a command with Ctrl-C's signals at their defaults; a test
        # run started in the background by a non-interactive shell (`make test &`, as CI
        # may) inherits them ignored, and an ignored SIGINT survives exec: Python would
        # then never see the Ctrl-C the test types.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        os.execvp(command[0], command)  # noqa: S606 (the command is the test's own argv)
    _relay(master)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
