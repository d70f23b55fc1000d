"""The live progress line of `local run` and `watch`: items done (collected, cached, failed)
from the moment images exist, the rate and an ETA, and money labelled (estimate or spent).

The collector writes item states at every checkpoint (50 rows) while one batch-done delivery
can take minutes at catalog size, so the line is refreshed by a thread that reads the
records, not only between deliveries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column
from rich.text import Text

from bananabatch.core.records import JobRecord
from bananabatch.core.states import ITEM_TERMINAL, JOB_TERMINAL, ItemState, JobState

REFRESH_SECONDS: Final = 0.5
BAR_WIDTH: Final = 30
# What the progress line is drawn from: the job, its item counts, its batches done.
Seen = tuple[JobRecord | None, dict[str, int], int | None]
_SHOWN: Final = (
    ItemState.SUBMITTED,
    ItemState.SUCCEEDED,
    ItemState.CACHED,
    ItemState.BLOCKED,
    ItemState.FAILED,
    ItemState.REJECTED,
)


def done_count(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if ItemState(k) in ITEM_TERMINAL)


def money(job: JobRecord) -> str:
    """Never an unlabelled dollar figure: the estimate until something was paid, then what
    was spent beside it (an ended job always says what it spent, $0.00 included)."""
    costs = job.costs
    if costs.actual_usd > 0 or job.state in JOB_TERMINAL:
        return f"spent ${costs.actual_usd:.2f} of est. ${costs.estimated_usd:.2f}"
    return f"est. ${costs.estimated_usd:.2f}"


def waiting_for_window(job: JobRecord | None, now: datetime | None = None) -> bool:
    """Whether the job's batches still wait for the batch window (pipeline/window.py)."""
    at = job.window_at if job is not None else None
    return (
        at is not None
        and job is not None
        and job.state is JobState.RUNNING
        and (at > (now or datetime.now(UTC)))
    )


def progress_line(
    job: JobRecord | None,
    counts: dict[str, int],
    *,
    batches_done: int | None = None,
    now: datetime | None = None,
    thumbnails_after_end: bool = True,
) -> str:
    """batches_done: how many of the job's batches the provider has finished. A batch's
    images all arrive when it ends, so before the first one does this is the only motion.
    thumbnails_after_end: whether thumbnails are still being made once the job ended (not
    on the local stack, whose gallery server makes them on demand)."""
    if job is None:
        return "reading the file"
    parts = [job.state.value.lower()]
    if waiting_for_window(job, now) and job.window_at is not None:
        parts.append(f"batches wait for the batch window at {job.window_at:%Y-%m-%d %H:%M} UTC")
    elif job.state in JOB_TERMINAL:
        parts.append("writing the gallery's thumbnails" if thumbnails_after_end else "finishing")
    elif batches_done is not None and job.batch_count:
        parts.append(f"batches done {batches_done}/{job.batch_count}")
    parts += [f"{s.value.lower()} {counts[s.value]:,}" for s in _SHOWN if counts.get(s.value)]
    parts.append(money(job))
    return " · ".join(parts)


@dataclass
class Rate:
    """Items per second since watching began, and the time left at that rate."""

    clock: Callable[[], float] = time.monotonic
    _first: tuple[float, int] | None = field(default=None, init=False)

    def text(self, done: int, total: int | None) -> str:
        now = self.clock()
        if self._first is None:
            # Items done before we started watching (a resumed job) are not speed, but the
            # wait for the first batch is: results land a batch at a time, and a rate taken
            # from the first burst alone promised "ETA 36s" for a half-hour job.
            self._first = (now, done)
            return ""
        since, base = self._first
        if now - since < 1.0 or done <= base:
            return ""
        per_second = (done - base) / (now - since)
        text = f"{per_second * 60:,.0f}/min"
        if total:
            left = max(total - done, 0) / per_second
            text += f" · ETA {_duration(left)}"
        return text


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _WordsAbove(Progress):
    """The words of the line (state, counts, money) on a row of their own above the bar:
    whole on any width (wrapped at spaces on a narrow terminal), never ending in "…"."""

    def get_renderables(self) -> Iterable[RenderableType]:
        for task in self.tasks:
            yield Text(task.description, overflow="fold")
        yield self.make_tasks_table(self.tasks)


class JobProgress:
    """One progress bar for one job, updated from any thread."""

    def __init__(
        self, console: Console, *, disable: bool = False, thumbnails_after_end: bool = True
    ) -> None:
        self.thumbnails_after_end = thumbnails_after_end
        self.bar = _WordsAbove(
            BarColumn(bar_width=BAR_WIDTH),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[rate]}", table_column=Column(overflow="fold")),
            TimeElapsedColumn(),
            console=console,
            disable=disable,
        )
        self.task = self.bar.add_task("reading the file", total=None, rate="")
        self.rate = Rate()
        self._lock = threading.Lock()

    def show(
        self, job: JobRecord | None, counts: dict[str, int], batches_done: int | None = None
    ) -> None:
        total = job.line_count if job and job.line_count else None
        done = done_count(counts)
        with self._lock:
            self.bar.update(
                self.task,
                total=total,
                completed=done,
                description=progress_line(
                    job,
                    counts,
                    batches_done=batches_done,
                    thumbnails_after_end=self.thumbnails_after_end,
                ),
                # An ETA from the urgent lines alone would promise seconds for hours.
                rate="" if waiting_for_window(job) else self.rate.text(done, total),
            )


@contextmanager
def job_progress(
    console: Console, *, disable: bool = False, thumbnails_after_end: bool = True
) -> Iterator[JobProgress]:
    shown = JobProgress(console, disable=disable, thumbnails_after_end=thumbnails_after_end)
    with shown.bar:
        yield shown


@contextmanager
def refreshed(shown: JobProgress, read: Callable[[], Seen | None]) -> Iterator[None]:
    """Refresh `shown` from `read` every REFRESH_SECONDS in a thread until the block ends.
    read returns None while there is nothing to show yet."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(REFRESH_SECONDS):
            try:
                seen = read()
            except Exception:  # noqa: BLE001, S112 - a missed refresh is shown by the next one
                continue
            if seen is not None:
                shown.show(*seen)

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
