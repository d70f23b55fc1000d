"""Thumbnails on other cores for `bananabatch local run`, when it makes them during the run
(BANANABATCH_LOCAL_THUMBNAILS=during-run; by default the gallery server makes each one when
it is first shown, see pipeline/thumbnails.ensure_thumbnail).

In the cloud every thumbnails message is its own on_batch_done invocation, in parallel with
the collector. Delivered inline by the local runner they ran one after another on the
runner's own thread, after the collection that published them: decoding a 1K PNG costs
about 10 ms, so at 1,000 images they took half of a run's wall time (cProfile: 14.2 of 30
s; the whole collection 6.2 s). Here they go to a pool of worker processes as soon as the
collector publishes them, so they are made while the runner collects the next batch, and
on as many cores as the machine has. `wait` returns once every request was handled, so a
run ends with its thumbnails made (or, for an image that cannot have one, logged: the
gallery falls back to the image).

Workers run pipeline/thumbnails.py on the same folder as the runner; they need no state
store, bus or provider. They start from a fork server (no threads of the runner inherited,
and each worker starts in milliseconds from a preloaded process), ignore SIGINT (Ctrl-C is
the runner's to handle; the pool is shut down by it) and log where the runner logs, never
to stdout (it may carry `--json` output).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Final

from bananabatch import log
from bananabatch.config import LocalThumbnails, Settings
from bananabatch.errors import PermanentError
from bananabatch.log import get_logger

_log = get_logger(__name__)

#: Attempts per request, as the local runner's deliveries (runner.MAX_DELIVERIES).
MAX_ATTEMPTS: Final = 5
# Each worker holds one image and its thumbnail at a time: ~60 MB of interpreter and
# Pillow. More workers than cores only queue on the CPU.
MAX_WORKERS: Final = 4
# How often a worker checks that its runner is still there.
RUNNER_CHECK_SECONDS: Final = 1.0
_PRELOAD: Final = ["bananabatch.local.thumbpool", "bananabatch.pipeline.thumbnails"]


def on_demand(settings: Settings) -> bool:
    """Whether local commands leave thumbnails to the gallery server (the default): their
    LocalPipeline(thumbnails_on_demand=...) drops the collector's thumbnails requests."""
    return settings.local_thumbnails is LocalThumbnails.ON_DEMAND


def thumbnail_workers(settings: Settings) -> int:
    """How many workers `local run` uses: the setting, else one per core this process may
    run on, at most MAX_WORKERS."""
    if settings.local_thumbnail_workers is not None:
        return settings.local_thumbnail_workers
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


class ThumbnailPool:
    """Thumbnails requests (the bodies of `kind: thumbnails` messages) handled in worker
    processes. Not thread-safe: the local runner submits and waits from one thread."""

    def __init__(self, settings: Settings, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a thumbnail pool needs at least 1 worker, got {workers}")
        self._settings = settings
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[tuple[Future[dict[str, Any]], bytes, int]] = []
        self.made = 0
        self.failed = 0
        self.worker_pids: set[int] = set()

    def submit(self, body: bytes) -> None:
        self._pending.append((self._start(body), body, 1))
        self._reap(block=False)

    def wait(self) -> None:
        """Until every submitted request is handled (retried up to MAX_ATTEMPTS)."""
        while self._pending:
            self._reap(block=True)

    def close(self) -> None:
        """Stop: requests not started are dropped, those under way finish first. A dropped
        request leaves its thumbnails missing, which the gallery shows as the images."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def _start(self, body: bytes) -> Future[dict[str, Any]]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=_context(),
                initializer=_init_worker,
                initargs=(self._settings.model_dump(mode="json"), _log_target(), os.getpid()),
            )
        try:
            return self._pool.submit(_make, body)
        except BrokenProcessPool:
            # A worker died since the last request and the pool noticed first.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return self._start(body)

    def _reap(self, *, block: bool) -> None:
        if block:
            wait([future for future, _body, _attempt in self._pending], return_when=FIRST_COMPLETED)
        still: list[tuple[Future[dict[str, Any]], bytes, int]] = []
        for future, body, attempt in self._pending:
            if not future.done():
                still.append((future, body, attempt))
                continue
            exc = future.exception()
            if exc is None:
                done = future.result()
                self.made += int(done["made"])
                self.worker_pids.add(int(done["pid"]))
                continue
            if isinstance(exc, BrokenProcessPool) and getattr(self._pool, "_broken", False):
                # A worker died (killed, out of memory): that pool takes nothing more; the
                # next request starts a new one, and each request it held is retried.
                assert self._pool is not None
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            retried = self._retry(body, attempt, exc)
            if retried is not None:
                still.append(retried)
        self._pending = still

    def _retry(
        self, body: bytes, attempt: int, exc: BaseException | None = None
    ) -> tuple[Future[dict[str, Any]], bytes, int] | None:
        if isinstance(exc, PermanentError) or attempt >= MAX_ATTEMPTS:
            self.failed += 1
            _log.error(
                "thumbnails request failed; the gallery shows these images instead",
                extra={"attempts": attempt, "error": str(exc), "request": body[:200].decode()},
            )
            return None
        return self._start(body), body, attempt + 1


def _context() -> Any:
    if sys.platform == "linux":
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def _log_target() -> str | None:
    """The file the runner's pipeline logs go to, if it sends them to one."""
    for handler in logging.getLogger("bananabatch").handlers:
        name = getattr(getattr(handler, "stream", None), "name", None)
        if isinstance(name, str) and not name.startswith("<"):
            return name
    return None


# --- in the worker process ------------------------------------------------------------------

_runtime: Any = None


def _init_worker(settings: dict[str, Any], log_file: str | None, runner: int) -> None:
    global _runtime
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A runner killed outright (kill -9, out of memory) cannot shut its pool down, and a
    # worker never sees its queue close (every worker holds both ends): each one leaves
    # on its own once the runner is gone.
    threading.Thread(target=_exit_without, args=(runner,), daemon=True).start()
    parsed = Settings.model_validate(settings)
    log.configure(
        parsed.log_level,
        Path(log_file).open("a") if log_file else sys.stderr,  # noqa: SIM115 (process-long)
        replace=True,
    )
    from bananabatch.wiring import build_runtime

    _runtime = build_runtime(parsed, with_provider=False)


def _exit_without(runner: int) -> None:
    while _alive(runner):
        time.sleep(RUNNER_CHECK_SECONDS)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A killed runner stays a zombie until its parent (the shell) reaps it.
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True  # no /proc (not Linux): os.kill's answer stands


def _make(body: bytes) -> dict[str, Any]:
    from bananabatch.pipeline import thumbnails

    request = thumbnails.parse_request(json.loads(body))
    report = thumbnails.handle_thumbnails(_runtime, request)
    return {"made": report.made, "pid": os.getpid()}
