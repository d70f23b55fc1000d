"""The collector's write pool: bounded by bytes in flight, failures never lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bananabatch.pipeline.outcomes import write_cost
from bananabatch.pipeline.writes import Writes

WAIT = 5.0


class _Gate:
    """Writes that hold their bytes until released, recording what ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[int] = []
        self._lock = threading.Lock()

    def write(self, n: int) -> Callable[[], None]:
        def run() -> None:
            with self._lock:
                self.started.append(n)
            assert self.release.wait(WAIT)

        return run


def _in_background(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def _eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_submit_waits_while_the_byte_budget_is_full() -> None:
    gate = _Gate()
    writes = Writes(workers=4, max_bytes=100)
    try:
        writes.submit(gate.write(1), 60)
        writes.submit(gate.write(2), 40)  # exactly fills the budget
        third = _in_background(lambda: writes.submit(gate.write(3), 10))

        third.join(0.2)
        assert third.is_alive(), "a write past the budget must wait"
        assert writes.bytes_in_flight == 100

        gate.release.set()
        third.join(WAIT)
        assert not third.is_alive()
        writes.drain()
        assert writes.peak_bytes <= 100
        assert writes.bytes_in_flight == 0
        assert sorted(gate.started) == [1, 2, 3]
    finally:
        gate.release.set()
        writes.close()


def test_bytes_in_flight_never_exceed_the_budget() -> None:
    writes = Writes(workers=3, max_bytes=1000)
    seen: list[int] = []
    try:
        for n in range(200):
            size = 50 + (n * 37) % 400

            def run() -> None:
                seen.append(writes.bytes_in_flight)
                time.sleep(0.0005)

            writes.submit(run, size)
        writes.drain()
    finally:
        writes.close()

    assert max(seen) <= 1000
    assert writes.peak_bytes <= 1000


def test_a_write_bigger_than_the_whole_budget_runs_alone() -> None:
    gate = _Gate()
    writes = Writes(workers=4, max_bytes=100)
    try:
        writes.submit(gate.write(1), 30)
        big = _in_background(lambda: writes.submit(gate.write(2), 500))
        big.join(0.2)
        assert big.is_alive(), "it waits for the pool to empty first"

        gate.release.set()
        big.join(WAIT)
        writes.drain()
        assert writes.peak_bytes == 500
        assert gate.started == [1, 2]
    finally:
        gate.release.set()
        writes.close()


def test_drain_reraises_a_failed_write() -> None:
    writes = Writes(workers=2, max_bytes=100)
    go = threading.Event()

    def fail() -> None:
        assert go.wait(WAIT)
        raise OSError("disk full")

    try:
        writes.submit(fail, 10)
        go.set()
        with pytest.raises(OSError, match="disk full"):
            writes.drain()
        assert writes.bytes_in_flight == 0
    finally:
        writes.close()


def test_submit_surfaces_an_earlier_failure_without_waiting_for_drain() -> None:
    writes = Writes(workers=1, max_bytes=1000)
    go = threading.Event()

    def fail() -> None:
        assert go.wait(WAIT)
        raise OSError("disk full")

    try:
        writes.submit(fail, 10)
        go.set()
        _eventually(lambda: writes.bytes_in_flight == 0)
        with pytest.raises(OSError, match="disk full"):
            writes.submit(lambda: None, 10)
    finally:
        writes.close()


def test_close_drops_writes_not_started_and_frees_their_bytes() -> None:
    gate = _Gate()
    writes = Writes(workers=1, max_bytes=1000)
    writes.submit(gate.write(1), 10)
    writes.submit(gate.write(2), 10)
    _eventually(lambda: gate.started == [1])

    closer = _in_background(writes.close)
    gate.release.set()
    closer.join(WAIT)

    assert not closer.is_alive()
    assert gate.started == [1]
    assert writes.bytes_in_flight == 0


def test_the_cost_of_an_image_write_is_its_encoded_bytes_alone() -> None:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (640, 480), (1, 2, 3)).save(out, format="PNG")
    png = out.getvalue()

    # The collector decodes nothing: thumbnails are made by other invocations.
    assert write_cost(png) == len(png)
    assert write_cost(b"not an image") == len(b"not an image")


def test_inline_writes_run_before_submit_returns_and_raise_their_failure_there() -> None:
    writes = Writes(workers=0, max_bytes=100)
    ran: list[int] = []
    try:
        writes.submit(lambda: ran.append(threading.get_ident()), 500)
        assert ran == [threading.get_ident()], "an inline write runs in the caller's thread"
        assert writes.bytes_in_flight == 0
        assert writes.peak_bytes == 500

        def fail() -> None:
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            writes.submit(fail, 10)
        writes.drain()  # nothing left in flight
    finally:
        writes.close()


def test_the_collector_uses_few_write_threads_for_a_store_of_system_calls() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from bananabatch.pipeline import writes

    def runtime(concurrency: int) -> Any:
        return cast(Any, SimpleNamespace(objects=SimpleNamespace(write_concurrency=concurrency)))

    # A folder's writes are system calls: a second thread only fights the read loop for
    # the GIL. Cloud Storage's wait on the network: they overlap.
    assert writes.write_workers(runtime(1)) == writes.LOCAL_WRITE_WORKERS
    assert writes.write_workers(runtime(4)) == writes.WRITE_WORKERS
    assert writes.LOCAL_WRITE_WORKERS < writes.WRITE_WORKERS
