"""The publisher of a job's staged files and batch records.

A batch's lines are buffered as text while it fills (OpenBatch) and written in large
pieces to its request file and manifest; when the planner closes the batch, its files are
published whole and then its QUEUED batch record is created, so a record never points at
a partial file.
"""

from __future__ import annotations

import queue
import threading
from contextlib import ExitStack
from datetime import datetime
from typing import IO, NamedTuple

from bananabatch.core import records as rec
from bananabatch.core.catalog import provider_of
from bananabatch.core.planning import PlannedBatch
from bananabatch.core.records import BatchRecord, JobRecord
from bananabatch.core.states import BatchState
from bananabatch.log import get_logger
from bananabatch.pipeline import budget
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)

# Lines (and bytes) buffered per open batch before one write to its request file and
# manifest.
WRITE_LINES = 1024
WRITE_BYTES = 1024 * 1024
# Writes each publisher thread may be behind the read loop: with the bounds above, a few MB.
PUBLISH_QUEUE = 4


class _Write(NamedTuple):
    batch: int
    requests: bytes
    manifest: bytes


class _Close(NamedTuple):
    planned: PlannedBatch
    closed_at: datetime


_Message = _Write | _Close | None  # None: stop


class Publisher:
    """Writes the staged batch files and the batch records, on background threads when the
    object store says its writes wait on the network (ObjectStore.write_concurrency > 1),
    inline otherwise.

    Creating and publishing objects on Cloud Storage costs tens of milliseconds of latency
    each, two per batch: on threads of their own they overlap the read loop, which is CPU.
    A local folder's writes are system calls that take the GIL back after each one, so on
    threads they would only queue behind the read loop for the GIL (measured: the read
    loop then spent a quarter of its time blocked on a full queue); inline they cost their
    system calls and nothing else.

    All messages of one batch go to the same thread, in order, so a batch's files are whole
    and published before its record is created, exactly as when done inline. The first
    failure is kept and raised to the read loop at its next message (and by finish); the
    files of batches not yet closed are then discarded, never published partly.
    """

    def __init__(self, rt: Runtime, job: JobRecord, threads: int | None = None) -> None:
        if threads is None:
            threads = rt.objects.write_concurrency
        self.rt = rt
        self.job = job
        self.error: BaseException | None = None
        # Bounded, so the loop cannot run ahead of the store by more than a few MB.
        self._queues: list[queue.Queue[_Message]] = (
            [queue.Queue(maxsize=PUBLISH_QUEUE) for _ in range(threads)] if threads > 1 else []
        )
        # Batch index -> its open files; each index is only ever touched by one thread.
        self._open: dict[int, ExitStack] = {}
        self._sinks: dict[int, tuple[IO[bytes], IO[bytes]]] = {}
        self._threads = [
            threading.Thread(
                target=self._work, args=(n, q), name=f"intake-publisher-{n}", daemon=True
            )
            for n, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    # --- the read loop's side ------------------------------------------------------------

    def write(self, index: int, requests: bytes, manifest: bytes) -> None:
        self._put(index, _Write(index, requests, manifest))

    def close_batch(self, planned: PlannedBatch, closed_at: datetime) -> None:
        self._put(planned.index, _Close(planned, closed_at))

    def finish(self) -> None:
        """Wait for every message; raise the first failure."""
        self._stop()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Stop after a failure in the read loop: open files are discarded."""
        if self.error is None:
            self.error = RuntimeError("intake stopped")
        self._stop()
        if not self._threads:
            self._discard(None)

    def _put(self, index: int, message: _Write | _Close) -> None:
        if self.error is not None:
            raise self.error
        if self._queues:
            self._queues[index % len(self._queues)].put(message)
            return
        try:
            self._handle(message)
        except BaseException as exc:
            self.error = exc
            raise

    def _stop(self) -> None:
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()

    # --- the threads ---------------------------------------------------------------------

    def _work(self, owner: int, messages: queue.Queue[_Message]) -> None:
        while True:
            message = messages.get()
            if message is None:
                if self.error is not None:
                    self._discard(owner)
                return
            if self.error is not None:
                continue  # drain, so the loop never blocks on a full queue
            try:
                self._handle(message)
            # Whatever it is, the read loop re-raises it (finish, or its next message).
            except BaseException as exc:  # noqa: BLE001
                if self.error is None:
                    self.error = exc
                self._discard(owner)

    def _handle(self, message: _Write | _Close) -> None:
        if isinstance(message, _Write):
            sinks = self._sinks.get(message.batch)
            if sinks is None:
                sinks = self._open_batch(message.batch)
            sinks[0].write(message.requests)
            sinks[1].write(message.manifest)
            return
        planned = message.planned
        self._sinks.pop(planned.index, None)
        stack = self._open.pop(planned.index, None)
        if stack is not None:
            # Published here, whole: a batch record never points at a partial file.
            stack.close()
        record_batch(self.rt, self.job, planned, message.closed_at)

    def _open_batch(self, index: int) -> tuple[IO[bytes], IO[bytes]]:
        rt, job_id = self.rt, self.job.job_id
        results = rt.settings.results_bucket
        stack = ExitStack()
        self._open[index] = stack
        requests = stack.enter_context(
            rt.objects.open_write(
                results, rec.request_object_name(job_id, index), content_type="application/jsonl"
            )
        )
        manifest = stack.enter_context(
            rt.objects.open_write(
                results, rec.manifest_object_name(job_id, index), content_type="application/jsonl"
            )
        )
        self._sinks[index] = (requests, manifest)
        return requests, manifest

    def _discard(self, owner: int | None) -> None:
        """Discard the open files of the batches this thread owns (index % threads), or
        all of them (owner None: no threads)."""
        threads = len(self._queues)
        for index in [i for i in list(self._open) if owner is None or i % threads == owner]:
            self._sinks.pop(index, None)
            stack = self._open.pop(index)
            # Raising into the sinks' context managers discards the partial objects.
            try:
                stack.__exit__(RuntimeError, RuntimeError("intake stopped"), None)
            except Exception:
                log.exception("could not discard a partial staged file")


class OpenBatch:
    """A batch still filling: its lines wait here as text, so that each encode and each
    write covers up to WRITE_LINES lines or WRITE_BYTES bytes."""

    __slots__ = ("buffered", "index", "manifest_lines", "request_lines")

    def __init__(self, index: int) -> None:
        self.index = index
        self.request_lines: list[str] = []
        self.manifest_lines: list[str] = []
        self.buffered = 0  # request bytes in request_lines

    def extend(
        self, requests: list[str], manifests: list[str], size: int, publisher: Publisher
    ) -> None:
        """Add lines (size: their request bytes in all, newlines included)."""
        self.request_lines += requests
        self.manifest_lines += manifests
        self.buffered += size
        if len(self.request_lines) >= WRITE_LINES or self.buffered >= WRITE_BYTES:
            self.flush(publisher)

    def flush(self, publisher: Publisher) -> None:
        if self.request_lines:
            publisher.write(
                self.index,
                ("\n".join(self.request_lines) + "\n").encode(),
                "".join(self.manifest_lines).encode(),
            )
            self.request_lines.clear()
            self.manifest_lines.clear()
            self.buffered = 0


def record_batch(rt: Runtime, job: JobRecord, planned: PlannedBatch, now: datetime) -> None:
    """The QUEUED record of a staged batch. `now` is when the read loop closed it: records
    are created on several threads, and created_at must still follow the batches' order
    (submission takes queued batches oldest first)."""
    batch_id = rec.batch_id_for(job.job_id, planned.index)
    rt.repo.create_batch(
        BatchRecord(
            batch_id=batch_id,
            job_id=job.job_id,
            index=planned.index,
            attempt=1,
            state=BatchState.QUEUED,
            model=planned.model,
            provider=provider_of(planned.model).value,
            display_name=rec.display_name_for(batch_id),
            request_object=rec.request_object_name(job.job_id, planned.index),
            manifest_object=rec.manifest_object_name(job.job_id, planned.index),
            request_count=planned.request_count,
            request_bytes=planned.request_bytes,
            expected_output_bytes=planned.expected_output_bytes,
            created_at=now,
            updated_at=now,
            # Not submittable until the job passes the budget check and runs.
            next_submit_after=budget.HOLD_UNTIL,
        )
    )
