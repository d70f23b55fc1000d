"""Injectable crash points at the step boundaries of intake, submission and collection.

Production never arms one, so `crash_point` is a dictionary lookup that finds nothing. A
test arms a point by name; the next time the code passes it, `InjectedCrash` is raised.
It deliberately is not a BananaError: the entry points let it escape, functions-framework
answers HTTP 500, and the platform (or the local runner) redelivers the event, which is
exactly what a process dying at that line looks like from the outside.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

# Every boundary the code declares; arming an unknown name is a test bug, so it is refused.
POINTS: Final = (
    "intake.after_job_created",
    "intake.after_stage",
    "submit.after_requests_claimed",
    "submit.after_claim",
    "submit.after_create",
    "collect.after_rows",
    "collect.after_retry_staged",
    "collect.after_collected",
    "finalize.after_terminal",
    "cache.after_first_entry",
    "finalize.after_cache",
    "finalize.after_claim",
    "urgent.after_claim",
    "inflight.after_claim_taken",
    "inflight.after_item_released",
    "window.after_mark",
    "pack.after_claim",
    "pack.after_materialize",
    "pack.after_files",
    "pack.after_items",
    "pack.after_batches",
)

_lock = threading.Lock()
_armed: dict[str, int] = {}
_hits: dict[str, int] = {}


class InjectedCrash(Exception):
    """Raised at an armed crash point."""


def crash_point(name: str) -> None:
    """Crash here if a test armed this point (each arming crashes once per count)."""
    if not _armed:
        return
    with _lock:
        left = _armed.get(name, 0)
        if left <= 0:
            return
        _armed[name] = left - 1
        _hits[name] = _hits.get(name, 0) + 1
    raise InjectedCrash(f"injected crash at {name}")


def arm(name: str, times: int = 1) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}; expected one of {', '.join(POINTS)}")
    with _lock:
        _armed[name] = _armed.get(name, 0) + times


def hits(name: str) -> int:
    with _lock:
        return _hits.get(name, 0)


def reset() -> None:
    with _lock:
        _armed.clear()
        _hits.clear()


@contextmanager
def armed(name: str, times: int = 1) -> Iterator[None]:
    arm(name, times)
    try:
        yield
    finally:
        reset()
