"""The collector's image writes: a small pool bounded by bytes in flight.

A write (a file, or an upload to Cloud Storage) mostly waits outside the GIL, so on a pool
it overlaps with reading and parsing the next rows on the collector's thread. How many
threads depends on what a write waits on (write_workers).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from bananabatch.pipeline.runtime import Runtime

# For a store whose writes wait on the network (Cloud Storage): two threads keep one
# upload going while the next is handed over; on the 2-vCPU benchmark machine more threads
# only took CPU from the stream the whole batch waits on (profiled, see README).
WRITE_WORKERS = 2
# For a store whose writes are system calls (the folder stand-in, write_concurrency 1):
# a file write takes well under a millisecond, and every system call a write thread makes
# is a GIL hand-off with the read loop (cProfile charged 0.1 s of a 0.8 s collection to
# `socket.settimeout` and 0.04 s to waking the pool's threads); one thread, as the
# minimal loop has, halves the hand-offs of two.
LOCAL_WRITE_WORKERS = 1
# What the pool may hold at once: the encoded bytes of every queued or running write.
# Memory stays at about this much plus the line being parsed, whatever the file size; one
# write is always admitted, so an image bigger than the whole budget still goes through,
# alone.
MAX_WRITE_BYTES_IN_FLIGHT = 64 * 1024 * 1024


class Writes:
    """A pool of object writes bounded by bytes in flight. `drain` waits for all of them
    and re-raises the first failure, so a checkpoint never moves the cursor past a row whose
    image is not stored; `submit` also re-raises a failure it finds, to stop early."""

    def __init__(self, workers: int = WRITE_WORKERS, max_bytes: int | None = None) -> None:
        # workers=0: every write runs in the caller's thread, before submit returns.
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="collect-write") if workers else None
        )
        self._in_flight: deque[Future[None]] = deque()
        # Read when made, not when defined: the benchmark measures other budgets.
        self._max_bytes = MAX_WRITE_BYTES_IN_FLIGHT if max_bytes is None else max_bytes
        self._bytes = 0
        self.peak_bytes = 0
        self._released = threading.Condition()

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def bytes_in_flight(self) -> int:
        with self._released:
            return self._bytes

    def submit(self, fn: Callable[[], None], size: int) -> None:
        """Run fn on the pool, once `size` more bytes fit in the budget (inline: now)."""
        if self._pool is None:
            self.peak_bytes = max(self.peak_bytes, size)
            fn()
            return
        with self._released:
            while self._bytes and self._bytes + size > self._max_bytes:
                self._released.wait()
            self._bytes += size
            self.peak_bytes = max(self.peak_bytes, self._bytes)
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._release(size)
            raise
        future.add_done_callback(lambda _done: self._release(size))
        in_flight = self._in_flight
        in_flight.append(future)
        while in_flight and in_flight[0].done():
            in_flight.popleft().result()

    def _release(self, size: int) -> None:
        with self._released:
            self._bytes -= size
            self._released.notify_all()

    def drain(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().result()

    def close(self) -> None:
        # After a failure: writes not started are dropped (the rows are replayed from the
        # cursor), writes under way finish before the invocation returns.
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def write_workers(rt: Runtime) -> int:
    """Write threads for this runtime's store: WRITE_WORKERS when writes wait on the
    network, LOCAL_WRITE_WORKERS (0: inline) when they are system calls."""
    return WRITE_WORKERS if rt.objects.write_concurrency > 1 else LOCAL_WRITE_WORKERS
