"""Who drives the jobs of a local stack right now.

On the local stack nothing runs between commands: a job moves only while a process ticks
and collects for it (`bananabatch local serve` for every job, `local run` and `watch` for
theirs, `submit` while it reads its file). Each such process holds an exclusive `flock` on
a file of its own under ROOT/drivers/ for as long as it runs, saying what it drives. The
kernel releases the lock when the process ends, however it ends (Ctrl-C, kill -9), so a
file whose lock can be taken speaks for nobody: there is no pid to trust or clean up.

The service's file has a fixed name, so a second `local serve` on the same folder finds the
first and stops, and it carries the addresses of the emulators the service runs, so the
other commands (`submit`, `local run`, `watch`, `cancel`) use them instead of asking for
GOOGLE_GEMINI_BASE_URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

SERVICE: Final = "service"
RUN: Final = "run"
WATCH: Final = "watch"
SUBMIT: Final = "submit"
_SERVICE_FILE: Final = "service.lock"


@dataclass
class Driver:
    pid: int
    role: str
    # The job it drives; None for the service (every job).
    job_id: str | None = None
    # The settings of the emulators the process runs in itself (their addresses and keys;
    # {} when it runs none).
    emulators: dict[str, Any] = field(default_factory=dict)
    # The service's gallery server (local/gallery_server.py), once it listens.
    gallery: str | None = None


class AlreadyDriven(Exception):
    """Another live process holds the service's file."""

    def __init__(self, holder: Driver | None) -> None:
        super().__init__(holder)
        self.holder = holder


def folder(root: Path) -> Path:
    return root / "drivers"


class Held:
    """A driver's file, locked for as long as the process drives."""

    def __init__(self, path: Path, fd: int, driver: Driver) -> None:
        self.path, self._fd, self.driver = path, fd, driver

    def announce(self, **changes: Any) -> None:
        """Rewrite what the file says (the service's emulator addresses, once they run)."""
        for name, value in changes.items():
            setattr(self.driver, name, value)
        data = json.dumps(asdict(self.driver)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)


@contextlib.contextmanager
def driving(
    root: Path, role: str, *, job_id: str | None = None, emulators: dict[str, Any] | None = None
) -> Iterator[Held]:
    """Hold a driver's file while the block runs. The service's is one per folder: a second
    service raises AlreadyDriven naming the first."""
    where = folder(root)
    where.mkdir(parents=True, exist_ok=True)
    path = where / (_SERVICE_FILE if role == SERVICE else f"{role}-{os.getpid()}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyDriven(_read(path)) from None
    held = Held(path, fd, Driver(os.getpid(), role, job_id, dict(emulators or {})))
    try:
        held.announce()
        yield held
    finally:
        # The service's file stays (a second service must lock the same file, never a
        # new one); the others go, and one left by a killed process is simply unlocked.
        if role != SERVICE:
            with contextlib.suppress(OSError):
                path.unlink()
        os.close(fd)


def live(root: Path) -> list[Driver]:
    """The processes driving jobs of this folder now: those whose file is locked."""
    found: list[Driver] = []
    where = folder(root)
    if not where.is_dir():
        return found
    for path in sorted(where.glob("*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            driver = _read(path)
            if driver is not None:
                found.append(driver)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)  # nobody holds it: a file left by a dead process
        finally:
            os.close(fd)
    return found


def service(root: Path) -> Driver | None:
    return next((d for d in live(root) if d.role == SERVICE), None)


def drivers_of(root: Path, job_id: str) -> list[Driver]:
    """The live processes that move this job: the service, or one driving it in itself."""
    return [d for d in live(root) if d.role == SERVICE or d.job_id == job_id]


def _read(path: Path) -> Driver | None:
    try:
        doc = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    try:
        return Driver(**doc)
    except TypeError:
        return None
