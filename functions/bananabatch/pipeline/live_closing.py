"""Two threads of one process closing the same job at the same time.

The tick's repair and a collector can close one job together (the local runner's ticker
thread beside its drain; a function instance serving both): each would write every report,
which at 10k items is seconds of CPU on a machine whose other core the drain is using.
Each step of a closing is idempotent, so running both is correct, only wasteful: a
finalizer that may leave the job to a live one (WhenLive.SKIP) skips it, a finalizer whose
batch may be the one that ends the job (WhenLive.WAIT) runs after the live one and finds
little left to do. A skip only ever leaves work that another thread of this process is
doing right now: if that thread fails, the job is left as a crash would leave it, and the
next tick repairs it. Other processes are not seen here; the closing's conditional writes
keep them apart as before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

# Finalizations running in this process, by (store, job): the threads running them. The
# store's identity keeps two runtimes of one process (tests' stacks) apart.
_live: dict[tuple[int, str], list[int]] = {}
_live_changed = threading.Condition()


class WhenLive(Enum):
    """What finalize_job_if_done does when another thread of this process is finalizing
    the same job."""

    RUN = "run"  # run beside it (each step is idempotent)
    SKIP = "skip"  # leave the job to it: the tick, which repairs what crashes left
    WAIT = "wait"  # run after it: a collector, whose batch may be the one that ends the job


@contextmanager
def closing(store: object, job_id: str, when_live: WhenLive) -> Iterator[bool]:
    """Whether this thread closes the job (True) or leaves it to a live one (False).

    A SKIP that meets a live finalizer misses nothing: the live one either closes the
    job, or found a batch still open, whose collector then finalizes (WAIT never skips).
    A WAIT runs once the live one is done, and finds the job closed by then, or not yet
    closable, exactly as if they had run one after the other."""
    key = (id(store), job_id)
    me = threading.get_ident()

    def others() -> bool:
        # This thread's own finalize further up its stack is never waited for.
        return any(t != me for t in _live.get(key, ()))

    with _live_changed:
        if when_live is WhenLive.SKIP and others():
            mine = False
        else:
            if when_live is WhenLive.WAIT:
                _live_changed.wait_for(lambda: not others())
            _live.setdefault(key, []).append(me)
            mine = True
    if not mine:
        yield False
        return
    try:
        yield True
    finally:
        with _live_changed:
            _live[key].remove(me)
            if not _live[key]:
                del _live[key]
            _live_changed.notify_all()
