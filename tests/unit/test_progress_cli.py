"""The progress line a person watches (issue 17 parts 3 and 4): money is labelled estimate
or spent, batches done show before any image exists, the rate and ETA come from items done
since watching began, and the line is refreshed while the main thread is busy."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from rich.console import Console

from bananabatch import progress_cli
from bananabatch.core.records import Costs, JobRecord, SourceObject
from bananabatch.core.states import JobState


def _job(state: JobState = JobState.RUNNING, *, actual: float = 0.0) -> JobRecord:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    return JobRecord(
        job_id="catalog-0123456789ab",
        state=state,
        source=SourceObject(bucket="inbox", name="catalog.jsonl", generation="1"),
        created_at=now,
        updated_at=now,
        default_model="gemini-3.1-flash-image-preview",
        results_prefix="file:///tmp/results",
        line_count=5000,
        batch_count=8,
        costs=Costs(estimated_usd=85.355, actual_usd=actual),
    )


def test_money_on_the_progress_line_says_estimate_until_something_is_spent() -> None:
    assert progress_cli.money(_job()) == "est. $85.36"
    assert progress_cli.money(_job(actual=12.5)) == "spent $12.50 of est. $85.36"
    # A job cancelled before anything was paid says so, not its estimate alone.
    assert progress_cli.money(_job(JobState.CANCELLED)) == "spent $0.00 of est. $85.36"


def test_the_line_shows_batches_done_before_any_image_and_counts_with_separators() -> None:
    line = progress_cli.progress_line(_job(), {"SUBMITTED": 5000}, batches_done=0)
    assert line == "running · batches done 0/8 · submitted 5,000 · est. $85.36"


def test_an_ended_job_still_draining_says_it_writes_thumbnails() -> None:
    line = progress_cli.progress_line(_job(JobState.SUCCEEDED, actual=85.0), {"SUCCEEDED": 5000})
    assert "writing the gallery's thumbnails" in line
    assert "spent $85.00" in line


def test_an_ended_local_job_whose_thumbnails_come_on_demand_says_it_is_finishing() -> None:
    job = _job(JobState.SUCCEEDED, actual=85.0)
    line = progress_cli.progress_line(job, {"SUCCEEDED": 5000}, thumbnails_after_end=False)
    assert "thumbnails" not in line
    assert line.startswith("succeeded · finishing · ")


def test_rate_and_eta_do_not_count_items_done_before_watching_began() -> None:
    now = [100.0]
    rate = progress_cli.Rate(clock=lambda: now[0])
    assert rate.text(1000, 5000) == ""  # a resumed job: these were done before we watched
    now[0] = 110.0
    assert rate.text(2000, 5000) == "6,000/min · ETA 30s"
    now[0] = 120.0
    assert rate.text(2000, 5000) == "3,000/min · ETA 1m00s"


def test_the_eta_counts_the_wait_for_the_first_batch_not_only_its_burst() -> None:
    # As seen on a 5,000-line run: nothing for 287 s, then a batch of 667 lands at once.
    now = [0.0]
    rate = progress_cli.Rate(clock=lambda: now[0])
    assert rate.text(0, 5000) == ""
    now[0] = 287.0
    assert rate.text(0, 5000) == ""
    now[0] = 288.5
    text = rate.text(667, 5000)
    # 667 items in 288.5 s: about 139/min, so the 4,333 left take about 31 minutes, not 36 s.
    assert text == "139/min · ETA 31m14s"


def test_the_line_is_refreshed_while_the_main_thread_is_busy() -> None:
    shown = progress_cli.JobProgress(Console(file=open("/dev/null", "w")), disable=True)  # noqa: SIM115
    read_twice = threading.Event()
    reads: list[int] = []

    def read() -> progress_cli.Seen:
        reads.append(1)
        if len(reads) >= 2:
            read_twice.set()
        return _job(), {"SUCCEEDED": 50 * len(reads)}, 1

    with progress_cli.refreshed(shown, read):
        # The main thread is blocked (as in a long batch-done delivery) and the bar moves.
        assert read_twice.wait(timeout=30)
    task = shown.bar.tasks[0]
    assert task.completed >= 100
    assert "batches done 1/8" in task.description


def test_a_job_waiting_for_the_batch_window_says_when_instead_of_an_eta() -> None:
    at = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    job = _job().model_copy(update={"window_at": at})
    before = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)
    line = progress_cli.progress_line(job, {"SUCCEEDED": 1}, batches_done=0, now=before)
    assert line == (
        "running · batches wait for the batch window at 2026-12-08 01:00 UTC · succeeded 1 · "
        "est. $85.36"
    )
    assert progress_cli.waiting_for_window(job, before)
    after = datetime(2026, 12, 8, 1, 0, 1, tzinfo=UTC)
    assert not progress_cli.waiting_for_window(job, after)
    assert "batches done 0/8" in progress_cli.progress_line(job, {}, batches_done=0, now=after)
