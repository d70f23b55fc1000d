"""The parts of an emulator's state every emulator shares: a clock tests move by hand, the
ledger of requests accepted for (paid) generation that the fault matrix reads ("no paid
request twice"), a work directory, the fault plan, and submitted work (a batch, a
prediction) that moves PENDING -> RUNNING -> FINISHED by the injected clock, evaluated
whenever someone looks, with the control API tests and the local runner use to force it
(`advance`, `complete`, `complete_all`). Nothing sleeps.
"""

from __future__ import annotations

import abc
import itertools
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from bananabatch.emulator.base.outbox import WebhookOutbox
from bananabatch.emulator.faults import FaultPlan

# Stages submitted work moves through; a fault or a cancel decides which terminal state it is.
PENDING, RUNNING, FINISHED = 0, 1, 2


class ManualClock:
    """A clock that only moves when told to: `...Config(clock=clock)`."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass(frozen=True)
class Accepted:
    """One request row a batch (or one prediction, one call) accepted for paid generation."""

    batch_name: str
    display_name: str
    key: str | None


class StateConfig(Protocol):
    faults: FaultPlan

    @property
    def pending_seconds(self) -> float:
        """Seconds new work stays PENDING; math.inf holds it until forced."""

    @property
    def running_seconds(self) -> float:
        """Seconds it then stays RUNNING."""

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def workdir(self) -> Path | None:
        """Where bodies live; a fresh temporary directory (removed on close) when None."""


class Work(Protocol):
    """Submitted work as the shared lifecycle sees it."""

    seq: int
    forced: int
    stuck: bool
    lock: threading.Lock

    @property
    def created(self) -> float: ...

    @property
    def terminal(self) -> bool: ...


ConfigT = TypeVar("ConfigT", bound=StateConfig)
WorkT = TypeVar("WorkT", bound=Work)


class Ledger:
    """The requests accepted for paid generation, behind the state's lock: what the fault
    matrix reads to show that no paid request was accepted twice."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.accepted: list[Accepted] = []

    def accept(self, entries: Iterable[Accepted]) -> None:
        with self._lock:
            self.accepted.extend(entries)

    def submitted_keys(self, display_name_prefix: str = "") -> Counter[str | None]:
        """How many times each key was accepted for generation, over work whose display
        name starts with the prefix (a job's batches share `bananabatch-<job_id>-`)."""
        with self._lock:
            return Counter(
                a.key for a in self.accepted if a.display_name.startswith(display_name_prefix)
            )

    def duplicate_keys(self, display_name_prefix: str = "") -> list[str | None]:
        counts = self.submitted_keys(display_name_prefix)
        return sorted((k for k, n in counts.items() if n > 1), key=str)


class EmulatorStateBase(Ledger, abc.ABC, Generic[ConfigT, WorkT]):
    """Subclasses keep their work in `_works` by id, set `webhooks`, and say how work is
    named (`handle`), looked up (`_work`), brought up to date (`get_work`) and what state it
    shows (`status_of`)."""

    webhooks: WebhookOutbox

    def __init__(self, config: ConfigT, *, prefix: str, subdirs: tuple[str, ...]) -> None:
        super().__init__()
        self.config = config
        self._owns_workdir = config.workdir is None
        self.workdir = config.workdir or Path(tempfile.mkdtemp(prefix=prefix))
        for sub in subdirs:
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._works: dict[str, WorkT] = {}
        self._seq = itertools.count()

    @property
    def faults(self) -> FaultPlan:
        return self.config.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        with self._lock:
            self.config.faults = plan

    def now(self) -> float:
        return self.config.clock()

    def close(self) -> None:
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- what each emulator says -----------------------------------------------------------

    @abc.abstractmethod
    def handle(self, work: WorkT) -> str:
        """The name clients use for the work (`batches/x`, `batch_x`, a prediction id)."""

    @abc.abstractmethod
    def _work(self, handle: str) -> WorkT:
        """The work by its handle, as it stands, or the service's not-found error."""

    @abc.abstractmethod
    def get_work(self, handle: str) -> WorkT:
        """The work brought up to date with the clock."""

    @abc.abstractmethod
    def status_of(self, work: WorkT) -> str:
        """The state the service shows for the work."""

    # --- the lifecycle -----------------------------------------------------------------------

    def _stage(self, work: WorkT, now: float) -> int:
        """Where the clock (or a forced step) has brought the work; stuck work never
        finishes by itself."""
        elapsed = now - work.created
        pending, running = self.config.pending_seconds, self.config.running_seconds
        by_time = (
            PENDING if elapsed < pending else RUNNING if elapsed < pending + running else FINISHED
        )
        if work.stuck:
            by_time = min(by_time, RUNNING)
        return max(by_time, work.forced)

    # --- control API (tests, local runner) -------------------------------------------------

    def advance(self, handle: str) -> str:
        """Move work one stage on (PENDING -> RUNNING -> terminal); returns its state."""
        work = self._work(handle)
        with work.lock:
            work.forced = min(FINISHED, self._stage(work, self.now()) + 1)
        return self.status_of(self.get_work(handle))

    def complete(self, handle: str) -> str:
        """Finish work now (rendering its results); returns its terminal state."""
        work = self._work(handle)
        with work.lock:
            work.forced = FINISHED
        return self.status_of(self.get_work(handle))

    def complete_all(self) -> list[str]:
        """Finish all live work; returns the handles."""
        with self._lock:
            live = [self.handle(w) for w in self._works.values() if not w.terminal]
        for handle in live:
            self.complete(handle)
        return live

    def flush_webhooks(self) -> list[int]:
        """Send every queued webhook delivery now."""
        return self.webhooks.flush()

    def batch_state(self, handle: str) -> str:
        return self.status_of(self.get_work(handle))

    def batch_names(self) -> list[str]:
        with self._lock:
            return [self.handle(w) for w in sorted(self._works.values(), key=lambda w: w.seq)]
