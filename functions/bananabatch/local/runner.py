"""`bananabatch local run`: the deployed code path on one machine.

The entry points in functions/main.py are loaded by functions-framework, exactly as Cloud
Functions loads them, and receive the same CloudEvent envelopes Eventarc delivers: a
storage finalization for the upload, Pub/Sub envelopes for ticks and batch-done messages.
The in-process bus stands in for Pub/Sub push subscriptions; a failed delivery is retried
with backoff, as the platform's retry policy would.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

import functions_framework
from flask.testing import FlaskClient

import bananabatch
from bananabatch import events, wiring
from bananabatch.adapters.local.bus import InProcessBus
from bananabatch.config import Backend, ProviderKind, Settings
from bananabatch.core.records import JobRecord, SourceObject, is_jsonl_name, job_id_for
from bananabatch.core.states import BATCH_PROVIDER_TERMINAL, JOB_TERMINAL, ItemState, JobState
from bananabatch.errors import BananaError, NotFound, PermanentError, TransientError
from bananabatch.local import drivers
from bananabatch.local.thumbpool import ThumbnailPool, on_demand
from bananabatch.pipeline import thumbnails, urgent
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import BatchProvider

MAIN_PY: Final = Path(bananabatch.__file__).resolve().parent.parent / "main.py"
LOCAL_PROJECT: Final = "local"
BATCH_DONE_SUBSCRIPTION: Final = "on-batch-done"
COMPLETIONS_SUBSCRIPTION: Final = "local-completions"
MAX_DELIVERIES: Final = 5
# Object metadata holding the SHA-256 of an uploaded file, so that running the same file
# again after a crash finds the interrupted job instead of starting (and paying) another.
CONTENT_HASH_KEY: Final = "content-sha256"


@dataclass
class Progress:
    job: JobRecord | None
    counts: dict[str, int]
    batches: int
    elapsed: float


@dataclass(frozen=True)
class PlacedUpload:
    """A file in the inbox whose finalization event is not delivered yet."""

    job_id: str
    attributes: dict[str, str]
    data: dict[str, Any]


@dataclass
class RunResult:
    job: JobRecord
    completions: list[dict[str, Any]]
    summary: dict[str, Any]
    deliveries: dict[str, int] = field(default_factory=dict)
    failed_deliveries: int = 0
    # The job was found unfinished from an earlier run of the same file and resumed.
    resumed: bool = False


# How long a waiting run sleeps when nothing was delivered (a tick wakes it sooner).
IDLE_SECONDS: Final = 0.2


class Ticker:
    """Calls `tick` every `interval` seconds on a daemon thread until stopped. A tick that
    fails is kept and raised by `check` in the caller's thread, as the tick's failure was
    raised by the run before (a failed delivery is already retried by `deliver`)."""

    def __init__(self, tick: Callable[[], None], interval: float) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._ticked = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="local-tick", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._failure = exc
                self._ticked.set()
                return
            self._ticked.set()
            # Without an interval, one tick after another, yielding between them.
            self._stop.wait(max(self._interval, 0.001))

    def check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, or until the next tick has run."""
        self._ticked.wait(seconds)
        self._ticked.clear()

    def stop(self, wait: float | None = None) -> None:
        self._stop.set()
        self._thread.join(wait)


class LocalPipeline:
    """The three event-driven functions plus a bus and a clock-driven tick, in one process."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        sleep: Callable[[float], None] = time.sleep,
        thumbnail_workers: int = 0,
        thumbnails_on_demand: bool = False,
    ) -> None:
        """sleep waits out the backoff between redeliveries; tests pass one that returns at
        once, since nothing in a redelivery depends on the time between attempts.
        thumbnail_workers > 0 makes thumbnails in that many worker processes while the
        run goes on (local/thumbpool.py); 0 delivers their messages to on_batch_done in
        turn, one invocation each, as the cloud does. thumbnails_on_demand drops them
        instead: the gallery server makes a thumbnail when it is first asked for
        (pipeline.thumbnails.ensure_thumbnail), so no run spends time on them."""
        if runtime.settings.backend is not Backend.LOCAL:
            raise PermanentError(
                "local run needs the local backend (folder, SQLite, in-process bus)"
            )
        if not isinstance(runtime.bus, InProcessBus):
            raise PermanentError("local run needs the in-process bus")
        self.runtime = runtime
        self.bus: InProcessBus = runtime.bus
        self.settings: Settings = runtime.settings
        wiring.install(runtime)
        self.clients: dict[str, FlaskClient] = {
            name: functions_framework.create_app(  # type: ignore[no-untyped-call]
                target=name, source=str(MAIN_PY), signature_type="cloudevent"
            ).test_client()
            for name in ("on_upload", "on_tick", "on_batch_done", "on_billing_alert")
        }
        self.bus.create_subscription(BATCH_DONE_SUBSCRIPTION, self.settings.topic_batch_done)
        self.bus.create_subscription(COMPLETIONS_SUBSCRIPTION, self.settings.topic_completions)
        self.deliveries: dict[str, int] = {}
        self.failed_deliveries = 0
        # The tick runs on a thread of its own while a run waits (see `ticking`).
        self._counting = threading.Lock()
        self._sleep = sleep
        self.thumbnails_on_demand = thumbnails_on_demand
        self.thumbnails = (
            ThumbnailPool(self.settings, thumbnail_workers)
            if thumbnail_workers and not thumbnails_on_demand
            else None
        )

    # --- delivery ---------------------------------------------------------------------

    def deliver(
        self, function: str, attributes: Mapping[str, str], data: Mapping[str, Any]
    ) -> None:
        """POST one CloudEvent in binary mode; retry a failed delivery like the platform."""
        headers = {f"ce-{k}": v for k, v in attributes.items() if k != "datacontenttype"}
        headers["Content-Type"] = "application/json"
        body = json.dumps(data)
        for attempt in range(1, MAX_DELIVERIES + 1):
            with self._counting:
                self.deliveries[function] = self.deliveries.get(function, 0) + 1
            response = self.clients[function].post("/", data=body, headers=headers)
            if response.status_code < 300:
                return
            with self._counting:
                self.failed_deliveries += 1
            if attempt == MAX_DELIVERIES:
                raise TransientError(
                    f"{function} failed {MAX_DELIVERIES} deliveries of event {attributes['id']};"
                    f" last status {response.status_code}: {response.get_data(as_text=True)[:300]}"
                )
            self._sleep(min(2.0, 0.1 * 2**attempt))

    def upload(
        self, path: Path, *, name: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Copy a file into the inbox bucket and deliver its finalization. Returns the job id."""
        placed = self.place(path, name=name, metadata=metadata)
        self.deliver_upload(placed)
        return placed.job_id

    def place(
        self, path: Path, *, name: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> PlacedUpload:
        """Copy a file into the inbox bucket, without telling intake yet: its job id is
        known (bucket, name, generation) before anything is staged or paid."""
        objects = self.runtime.objects
        bucket = self.settings.inbox_bucket
        object_name = name or path.name
        if not is_jsonl_name(object_name):
            # The same rule as the upload trigger: a job starts only for *.jsonl (any case).
            raise PermanentError(
                f"{path}: only *.jsonl files (any case) start a job; found {object_name!r}"
            )
        metadata = {**(metadata or {}), CONTENT_HASH_KEY: file_digest(path)}
        with (
            path.open("rb") as source,
            objects.open_write(
                bucket, object_name, content_type="application/jsonl", metadata=metadata
            ) as sink,
        ):
            while chunk := source.read(1024 * 1024):
                sink.write(chunk)
        info = objects.stat(bucket, object_name)
        if info is None or info.generation is None:
            raise PermanentError(f"upload of {path} to {bucket}/{object_name} left no object")
        attributes, data = events.storage_finalized_event(
            bucket=bucket,
            name=object_name,
            generation=info.generation,
            size=info.size,
            content_type="application/jsonl",
            metadata=metadata,
        )
        job_id = job_id_for(events.StorageObjectData.model_validate(data).source())
        return PlacedUpload(job_id, attributes, data)

    def deliver_upload(self, placed: PlacedUpload) -> None:
        self.deliver("on_upload", placed.attributes, placed.data)

    def tick(self) -> None:
        attributes, data = events.pubsub_published_event(
            project=LOCAL_PROJECT,
            topic=self.settings.topic_tick,
            subscription="on-tick",
            data=b'{"source":"local-runner"}',
            attributes={},
        )
        self.deliver("on_tick", attributes, data)

    def drain(self, limit: int | None = None) -> int:
        """Deliver queued batch-done messages, including those the deliveries publish, until
        none is left (or `limit` were delivered). Returns how many were delivered, not
        counting the collector's thumbnails requests: they go to on_batch_done on the same
        topic and are delivered here too, but they signal no batch."""
        delivered = 0
        while (limit is None or delivered < limit) and (
            messages := self.bus.pull(
                BATCH_DONE_SUBSCRIPTION,
                max_messages=50 if limit is None else min(50, limit - delivered),
            )
        ):
            for message in messages:
                if message.attributes.get("kind") == thumbnails.KIND:
                    if self.thumbnails_on_demand:
                        continue  # pulled is acknowledged: made when the gallery asks
                    if self.thumbnails is not None:
                        self.thumbnails.submit(message.data)
                        continue
                attributes, data = events.pubsub_published_event(
                    project=LOCAL_PROJECT,
                    topic=self.settings.topic_batch_done,
                    subscription=BATCH_DONE_SUBSCRIPTION,
                    data=message.data,
                    attributes=message.attributes,
                    message_id=message.message_id,
                )
                self.deliver("on_batch_done", attributes, data)
                if message.attributes.get("kind") != thumbnails.KIND:
                    delivered += 1
        return delivered

    def completions(self) -> list[dict[str, Any]]:
        return [
            json.loads(m.data) for m in self.bus.pull(COMPLETIONS_SUBSCRIPTION, max_messages=1000)
        ]

    def resumable(self, path: Path, *, name: str | None = None) -> str | None:
        """The unfinished job of an earlier run of this same file (same inbox name, same
        bytes), if there is one: running the file again after a crash resumes it rather
        than paying for every line again (`finish_intake` completes an intake it cut off)."""
        return unfinished_job_of(self.runtime, path, name=name)

    def recover_sync_lanes(self, job_id: str) -> None:
        """Settle at once the synchronous-lane items a dead run of this job left: run the
        PENDING ones, fail the SUBMITTED ones as outcome unknown (never called again). The
        tick does the same only after urgent.ORPHANED_AFTER (15 minutes), for a deployed
        stack cannot tell a dead worker from a slow one; here, when no other live process
        drives the job (drivers.py), the one that claimed them is known to be dead."""
        mine = os.getpid()
        root = self.settings.local_root
        if any(d.pid != mine for d in drivers.drivers_of(root, job_id)):
            return
        urgent.recover(self.runtime, job_id=job_id, orphaned_after=timedelta(0))

    def _inbox_source(self, object_name: str) -> SourceObject | None:
        info = self.runtime.objects.stat(self.settings.inbox_bucket, object_name)
        if info is None or info.generation is None:
            return None
        return SourceObject(
            bucket=self.settings.inbox_bucket, name=object_name, generation=info.generation
        )

    def finish_intake(self, job_id: str, *, path: Path | None = None) -> bool:
        """Deliver the upload event again for a job whose intake never finished (no record
        yet, or RECEIVED: the process died while reading the file). Intake is idempotent and
        a cancelled job's batches are never submitted. False when the job needs nothing or
        its inbox object is gone."""
        job = self.runtime.repo.get_job(job_id)
        if job is not None and job.state is not JobState.RECEIVED:
            return False
        source: SourceObject | None
        if job is not None:
            source = job.source
        elif path is not None:
            # Placed in the inbox, then killed before intake made the job record.
            source = self._inbox_source(path.name)
        else:
            return False
        if source is None:
            return False
        info = self.runtime.objects.stat(source.bucket, source.name)
        if info is None or info.generation != source.generation:
            return False
        attributes, data = events.storage_finalized_event(
            bucket=source.bucket,
            name=source.name,
            generation=source.generation,
            size=info.size,
            content_type=info.content_type or "application/jsonl",
            metadata=dict(info.metadata),
        )
        self.deliver("on_upload", attributes, data)
        return True

    def announce_finished(self, job_id: str | None = None) -> int:
        """Announce again the finished, uncollected batches of a job (of every job when
        None) that an earlier process left: their batch-done signals lived on its
        in-process bus and died with it. The tick would announce them too, but only after
        REANNOUNCE_AFTER; collection is idempotent and leased, so a batch another process is
        collecting is left to it."""
        from bananabatch.pipeline import pack, submit

        now = self.runtime.now()
        announced = 0
        finished = list(self.runtime.repo.batches(job_id=job_id, states=BATCH_PROVIDER_TERMINAL))
        if job_id is not None:
            # The job's lines the batch window packed with other files' (pipeline/pack.py).
            finished += pack.shared_batches_of(self.runtime, job_id, BATCH_PROVIDER_TERMINAL)
        for batch in finished:
            if batch.lease_until is not None and batch.lease_until > now:
                continue
            submit.publish_batch_done(self.runtime, batch)
            announced += 1
        return announced

    # --- the whole flow ---------------------------------------------------------------

    def run_job(
        self,
        path: Path,
        *,
        tick_interval: float = 1.0,
        timeout: float = 600.0,
        on_progress: Callable[[Progress], None] | None = None,
        metadata: Mapping[str, str] | None = None,
        on_start: Callable[[str, bool], None] | None = None,
    ) -> RunResult:
        """Run the file's job to its end. A job left unfinished by an earlier run of the
        same file (killed, Ctrl-C) is resumed, not started again; on_start(job_id, resumed)
        is told which, before the wait."""
        started = time.monotonic()
        resumed_job = self.resumable(path)
        placed = None if resumed_job else self.place(path, metadata=metadata)
        job_id = resumed_job or (placed.job_id if placed else "")
        # Said before intake runs: intake submits, so the id is known before anything is paid.
        if on_start is not None:
            on_start(job_id, resumed_job is not None)
        if placed is not None:
            self.deliver_upload(placed)
        else:
            self.finish_intake(job_id, path=path)
            self.announce_finished(job_id)
            self.recover_sync_lanes(job_id)
        repo = self.runtime.repo
        completions: list[dict[str, Any]] = []
        with self.ticking(tick_interval) as ticker:
            while True:
                ticker.check()
                done, delivered = self._step(job_id, started, completions, on_progress)
                if done:
                    break
                if time.monotonic() - started > timeout:
                    raise TransientError(
                        f"job {job_id} did not finish within {timeout:.0f} s locally",
                        job_id=job_id,
                    )
                if not delivered:
                    ticker.wait(IDLE_SECONDS)
        if self.thumbnails is not None:
            self.thumbnails.wait()
        final = repo.require_job(job_id)
        return RunResult(
            job=final,
            completions=completions,
            summary=self.summary(job_id),
            deliveries=dict(self.deliveries),
            failed_deliveries=self.failed_deliveries,
            resumed=resumed_job is not None,
        )

    def _step(
        self,
        job_id: str,
        started: float,
        completions: list[dict[str, Any]],
        on_progress: Callable[[Progress], None] | None,
    ) -> tuple[bool, int]:
        """Deliver what is queued and show where the job stands: whether the job waits no
        more (ended and closed, or held for a person), and how many signals were delivered."""
        repo = self.runtime.repo
        delivered = self.drain()
        completions.extend(m for m in self.completions() if m.get("job_id") == job_id)
        job = repo.get_job(job_id)
        if on_progress is not None:
            on_progress(self.progress(job_id, started))
        if job is not None and job.state is JobState.HELD:
            return True, delivered
        return (
            job is not None
            and job.state in JOB_TERMINAL
            # Its completion came on this bus, or another process closed the job (a
            # concurrent run of the same file) and published it on its own bus.
            and (any(m.get("state") == job.state.value for m in completions) or job.finalized)
        ), delivered

    @contextmanager
    def ticking(self, interval: float) -> Iterator[Ticker]:
        """The scheduler's tick every `interval` seconds on a thread of its own, for as long
        as the block runs, while the caller delivers the batch-done signals it publishes.
        As in the cloud, where the tick and each collection are separate invocations: a
        poll that takes long (the emulator renders a batch's results the first time a poll
        finds it finished, minutes at catalog size) no longer holds up the collection of
        the batches already announced, so their images are counted as they arrive."""
        ticker = Ticker(self.tick, interval)
        ticker.start()
        try:
            yield ticker
        except BaseException:
            # Ctrl-C or a failure: do not wait out a long poll; the thread is a daemon.
            ticker.stop(wait=1.0)
            raise
        ticker.stop()

    def progress(self, job_id: str, started: float) -> Progress:
        repo = self.runtime.repo
        job = repo.get_job(job_id)
        counts = {s.value: repo.count_items(job_id, s) for s in ItemState}
        if job is not None:
            counts[ItemState.REJECTED.value] = job.rejected_count
        return Progress(
            job=job,
            counts=counts,
            batches=job.batch_count if job else 0,
            elapsed=time.monotonic() - started,
        )

    def summary(self, job_id: str) -> dict[str, Any]:
        name = f"jobs/{job_id}/summary.json"
        try:
            doc = json.loads(self.runtime.objects.read_bytes(self.settings.results_bucket, name))
        except BananaError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def close(self) -> None:
        if self.thumbnails is not None:
            self.thumbnails.close()
        wiring.uninstall()


def unfinished_job_of(rt: Runtime, path: Path, *, name: str | None = None) -> str | None:
    """The unfinished job an earlier run of this same file (same inbox name, same bytes)
    left, if any. Reads the inbox and the state store only: no provider needed."""
    object_name = name or path.name
    info = rt.objects.stat(rt.settings.inbox_bucket, object_name)
    if info is None or info.generation is None:
        return None
    if info.metadata.get(CONTENT_HASH_KEY) != file_digest(path):
        return None
    source = SourceObject(
        bucket=rt.settings.inbox_bucket, name=object_name, generation=info.generation
    )
    job_id = job_id_for(source)
    job = rt.repo.get_job(job_id)
    if job is not None and job.state in JOB_TERMINAL:
        return None
    return job_id


def file_digest(path: Path) -> str:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


# --- cancel on the local stack ---------------------------------------------------------------


class EmulatorGone:
    """The provider of a local stack whose emulator is not running. The emulator keeps its
    batches in memory, so they ended with it: every one is unknown (NotFound), which lets a
    cancel end them (pipeline/control.py) instead of failing on them. What needs no
    emulator (decoding a request line for the reports) is the real provider's."""

    def __init__(self, offline: BatchProvider, why: str) -> None:
        self._offline = offline
        self.why = why

    def get(self, name: str) -> Any:
        raise NotFound(self.why)

    def cancel(self, name: str) -> None:
        raise NotFound(self.why)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._offline, name)


# Where an emulator that is not running is said to be: the discard port, which nothing
# serves, so any call that reaches the network fails at once as a connection error.
_NOWHERE: Final = "http://127.0.0.1:9"


def emulator_gone(settings: Settings) -> str | None:
    """Why the local stack's emulator cannot be running, or None when it may be (or the
    provider is a real one)."""
    if settings.provider is not ProviderKind.EMULATOR:
        return None
    if not settings.gemini_base_url:
        return (
            "no emulator address is set: the emulator ran inside `bananabatch local run` and"
            " ended with it"
        )
    where = urlsplit(settings.gemini_base_url)
    try:
        with socket.create_connection((where.hostname or "127.0.0.1", where.port or 80), 2.0):
            return None
    except OSError as exc:
        return f"nothing answers at {settings.gemini_base_url} ({exc.strerror or exc})"


def cancel_locally(settings: Settings, job_id: str) -> dict[str, Any]:
    """`bananabatch cancel` on the local stack: always ends the job. With the emulator gone
    its batches end FAILED at once, and their batch-done messages (published on this
    process's bus) are delivered here, so the job closes CANCELLED before the command
    returns; with a provider that answers, the job ends once its batches are collected
    (`watch` or `local run` plays the scheduler)."""
    from bananabatch.pipeline import control, submit

    why = emulator_gone(settings)
    if why is None:
        runtime = wiring.build_runtime(settings)
    else:
        offline = settings.model_copy(update={"gemini_base_url": _NOWHERE})
        runtime = wiring.build_runtime(offline)
        runtime.provider = cast(BatchProvider, EmulatorGone(runtime.provider, why))
    # Subscribed before the cancel publishes: a message published before the subscription
    # exists is not delivered to it (as on Pub/Sub).
    pipeline = LocalPipeline(runtime, thumbnails_on_demand=on_demand(settings))
    try:
        outcome = control.cancel_job(runtime, job_id)
        # Cut off while reading its file: the rest of intake runs now, and since the job is
        # marked cancelled its batches are cancelled before submission, never paid.
        pipeline.finish_intake(job_id)
        if why is not None:
            # A batch that finished at the emulator but whose collection died with the
            # process: the collector finds it gone and ends it, so the job can close now.
            from bananabatch.pipeline import pack

            mine = [*runtime.repo.batches(job_id=job_id), *pack.shared_batches_of(runtime, job_id)]
            for batch in mine:
                if batch.state in BATCH_PROVIDER_TERMINAL:
                    submit.publish_batch_done(runtime, batch)
        pipeline.drain()
    finally:
        pipeline.close()
    outcome["state"] = runtime.repo.require_job(job_id).state.value
    return outcome
