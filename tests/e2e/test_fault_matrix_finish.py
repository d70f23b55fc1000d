"""Fault-matrix scenarios for issue 14 (findings 1, 2, 3, 4's collector hang, 7) and
issue 15 part 4's collection lease: every job finishes and nothing is paid twice, whatever
happens around it. Each runs on both stacks and ends with the four invariants
(`assert_invariants`), plus, where the scenario is about closing a job, that its closing
is complete: completion published once, cache filled from every success, budget settled.

A process killed with `kill -9` is modelled the way it looks from outside: an
`InjectedCrash` at a step boundary raised from a direct call (nobody redelivers it), and
the batch-done messages it would have handled lost with the process's in-process bus.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bananabatch import faults
from bananabatch.cli import job_view
from bananabatch.core import records as rec
from bananabatch.core.states import (
    BATCH_PROVIDER_TERMINAL,
    JOB_TERMINAL,
    BatchState,
    ItemState,
    JobState,
)
from bananabatch.emulator.faults import RowFault
from bananabatch.errors import PermanentError
from bananabatch.faults import InjectedCrash
from bananabatch.local.runner import BATCH_DONE_SUBSCRIPTION
from bananabatch.pipeline import budget, collect, control, outcomes, retry, submit
from bananabatch.pipeline.cache import LANE_JOINED
from bananabatch.ports import ProviderBatch, ResultRow
from tests.support.stacks import (
    BATCH_DONE_SUB,
    PROMPTS,
    STEP,
    Completion,
    GcpStack,
    LocalStack,
    Stack,
    StackKind,
    assert_invariants,
    held,
    open_stack,
)

OTHER = [
    '{"key": "o1", "prompt": "a blue boat"}',
    '{"key": "o2", "prompt": "a grey goose"}',
]


def _upload(stack: Stack, lines: list[str], name: str = "prompts.jsonl") -> str:
    return stack.upload(stack.write(lines, name=name))


def _lose_batch_done(stack: Stack) -> int:
    """What a kill -9 of `local run` does to the signals in flight: they die with it."""
    if isinstance(stack, LocalStack):
        return len(stack.pipeline.bus.pull(BATCH_DONE_SUBSCRIPTION, max_messages=1000))
    assert isinstance(stack, GcpStack)
    return len(stack.pull(BATCH_DONE_SUB, limit=1000))


def assert_closed(stack: Stack, job_id: str) -> None:
    """Every step of the job's closing is done: the cache holds every success, the
    budget entry is settled at the actual cost, the completion is published."""
    job = stack.repo.require_job(job_id)
    assert (job.completion_pending, job.completion_published) == (False, True)
    for item in stack.repo.items(job_id):
        if item.state is ItemState.SUCCEEDED and item.request_hash:
            assert stack.runtime.state.get(rec.cache_path(item.request_hash)) is not None, item.key
    assert job.budget_day is not None
    doc = stack.runtime.state.get(rec.budget_path(job.budget_day)) or {}
    assert doc["jobs"][job_id] == {"reserved": 0.0, "spent": round(job.costs.actual_usd, 6)}
    assert budget.day_totals(stack.runtime, job.budget_day).reserved_usd == 0.0


def _settle_all(
    stack: Stack, job_ids: list[str], *, between: Callable[[], object] | None = None
) -> dict[str, list[Completion]]:
    """Stack.settle for several jobs at once, keeping each job's completions."""
    got: dict[str, list[Completion]] = {job_id: [] for job_id in job_ids}

    def pull() -> None:
        stack.drain()
        for completion in stack.completions():
            if completion.job_id in got:
                got[completion.job_id].append(completion)

    for _ in range(14):
        pull()
        jobs = [stack.repo.require_job(job_id) for job_id in job_ids]
        if all(j.state in JOB_TERMINAL and got[j.job_id] for j in jobs):
            break
        if between is not None:
            between()
        stack.clock.advance(STEP)
        stack.tick()
    stack.tick()
    pull()
    return got


def _finished_batches(stack: Stack, job_id: str) -> list[str]:
    return [
        b.batch_id for b in stack.repo.batches(job_id=job_id) if b.state in BATCH_PROVIDER_TERMINAL
    ]


# --- finding 1: one batch cannot stop the deployment ------------------------------------


def test_a_batch_the_provider_no_longer_knows_ends_on_its_own_and_every_other_job_goes_on(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        job_id = _upload(stack, PROMPTS)
        other_id = _upload(stack, OTHER, name="other.jsonl")
        lost = next(b for b in stack.repo.batches(job_id=job_id) if b.index == 1)
        assert lost.state is BatchState.RUNNING
        assert lost.provider_name
        # Deleted in AI Studio; locally: the emulator that knew it died with its process.
        stack.emulator.state.delete_batch(lost.provider_name)
        stack.tick()
        gone = stack.repo.require_batch(lost.batch_id)
        assert gone.state in (BatchState.FAILED, BatchState.COLLECTED)
        assert gone.provider_state == collect.PROVIDER_GONE
        assert "no longer knows" in (gone.provider_error or "")
        view = job_view(stack.runtime, stack.repo.require_job(job_id))
        assert any(lost.batch_id == p["batch_id"] for p in view["problems"]), view
        settled = _settle_all(stack, [job_id, other_id], between=stack.emulator.state.complete_all)
        for each, completions in settled.items():
            assert_invariants(stack, each, completions)
        items = {i.key: i for i in stack.repo.items(job_id)}
        # The lost batch's items went out again, once, by the usual retry rule.
        assert {k for k, i in items.items() if i.attempt == 2} == {"k1", "k2", "k3"}
        assert {i.state for i in items.values()} == {ItemState.SUCCEEDED}
        assert stack.repo.require_job(other_id).state is JobState.SUCCEEDED


@pytest.mark.parametrize("error", [PermanentError, RuntimeError])
def test_a_batch_whose_poll_fails_is_recorded_and_every_other_job_goes_on(
    request: pytest.FixtureRequest,
    kind: StackKind,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Exception],
) -> None:
    """403 (a key switched to another project) or anything unexpected from one batch."""
    with open_stack(request, kind, tmp_path, held()) as stack:
        job_id = _upload(stack, PROMPTS)
        other_id = _upload(stack, OTHER, name="other.jsonl")
        refused = next(b for b in stack.repo.batches(job_id=job_id) if b.index == 2)
        provider = stack.runtime.provider
        real_get = provider.get

        def get(name: str) -> ProviderBatch:
            if name == refused.provider_name:
                raise error("403 PERMISSION_DENIED: the key belongs to another project")
            return real_get(name)

        monkeypatch.setattr(provider, "get", get)
        stack.tick()
        record = stack.repo.require_batch(refused.batch_id)
        assert record.state is BatchState.RUNNING
        assert "403" in (record.last_error or "")
        view = job_view(stack.runtime, stack.repo.require_job(job_id))
        assert [p["batch_id"] for p in view["problems"]] == [refused.batch_id]
        settled = _settle_all(stack, [job_id, other_id], between=stack.emulator.state.complete_all)
        assert_invariants(stack, other_id, settled[other_id])
        if error is PermanentError:
            # Refused for good MAX_POLL_REFUSALS polls in a row: given up, items retried.
            assert_invariants(stack, job_id, settled[job_id])
            ended = stack.repo.require_batch(refused.batch_id)
            assert ended.provider_state == collect.PROVIDER_GONE
            items = {i.key: i for i in stack.repo.items(job_id)}
            assert {k for k, i in items.items() if i.attempt == 2} == {"k4", "k5"}
        else:
            assert stack.repo.require_batch(refused.batch_id).state is BatchState.RUNNING


def test_a_cancel_succeeds_locally_when_the_provider_no_longer_knows_a_batch(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        job_id = _upload(stack, PROMPTS)
        for batch in stack.repo.batches(job_id=job_id):
            assert batch.provider_name
            stack.emulator.state.delete_batch(batch.provider_name)
        outcome = control.cancel_job(stack.runtime, job_id)
        assert outcome["cancelled_batches"] == 2
        completions = stack.settle(job_id)
        assert_invariants(stack, job_id, completions)
        job = stack.repo.require_job(job_id)
        assert job.state is JobState.CANCELLED
        assert {i.state for i in stack.repo.items(job_id)} == {ItemState.FAILED}
        assert_closed(stack, job_id)


# --- finding 2: closing a job is re-entrant ---------------------------------------------


@pytest.mark.parametrize(
    "point", ["finalize.after_terminal", "cache.after_first_entry", "finalize.after_cache"]
)
def test_a_kill_while_closing_the_job_is_repaired_by_the_tick(stack: Stack, point: str) -> None:
    job_id = _upload(stack, PROMPTS)
    stack.tick()
    batches = _finished_batches(stack, job_id)
    assert len(batches) == 2
    _lose_batch_done(stack)
    collect.handle_batch_done(stack.runtime, batches[0])
    with faults.armed(point), pytest.raises(InjectedCrash):
        collect.handle_batch_done(stack.runtime, batches[1])
    job = stack.repo.require_job(job_id)
    assert job.state is JobState.SUCCEEDED
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)
    assert_closed(stack, job_id)


def test_a_redelivered_batch_done_after_a_kill_inside_the_cache_fill_completes_the_cache(
    stack: Stack,
) -> None:
    job_id = _upload(stack, PROMPTS)
    faults.arm("cache.after_first_entry")
    completions = stack.settle(job_id)
    assert faults.hits("cache.after_first_entry") == 1
    assert_invariants(stack, job_id, completions)
    assert_closed(stack, job_id)


def test_a_kill_just_after_the_last_batch_is_collected_does_not_leave_the_job_running(
    stack: Stack,
) -> None:
    job_id = _upload(stack, PROMPTS)
    stack.tick()
    first, last = _finished_batches(stack, job_id)
    _lose_batch_done(stack)
    collect.handle_batch_done(stack.runtime, first)
    with faults.armed("collect.after_collected"), pytest.raises(InjectedCrash):
        collect.handle_batch_done(stack.runtime, last)
    job = stack.repo.require_job(job_id)
    assert job.state is JobState.RUNNING
    assert stack.repo.require_batch(last).state is BatchState.COLLECTED
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)
    assert_closed(stack, job_id)


def test_a_kill_before_the_completion_claim_is_published_by_the_tick_once(stack: Stack) -> None:
    job_id = _upload(stack, PROMPTS[:2])
    stack.tick()
    (batch_id,) = _finished_batches(stack, job_id)
    _lose_batch_done(stack)
    with faults.armed("finalize.after_cache"), pytest.raises(InjectedCrash):
        collect.handle_batch_done(stack.runtime, batch_id)
    job = stack.repo.require_job(job_id)
    assert (job.state, job.completion_pending) == (JobState.SUCCEEDED, True)
    stack.tick()
    stack.tick()
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)
    assert_closed(stack, job_id)


# --- finding 4: a collector that cannot hang --------------------------------------------


def test_an_exception_mid_stream_closes_the_download_at_once_and_resumes_at_the_cursor(
    request: pytest.FixtureRequest,
    kind: StackKind,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with open_stack(request, kind, tmp_path, max_requests_per_batch=200) as stack:
        _exception_mid_stream(stack, monkeypatch)


def _exception_mid_stream(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [f'{{"key": "r{n:03d}", "prompt": "a tile number {n}"}}' for n in range(120)]
    job_id = _upload(stack, lines)
    stack.tick()
    (batch_id,) = _finished_batches(stack, job_id)
    _lose_batch_done(stack)
    provider = stack.runtime.provider
    opened: list[Iterator[ResultRow]] = []
    real_iter = provider.iter_results

    def iter_results(batch: ProviderBatch, *, start_line: int = 0) -> Iterator[ResultRow]:
        rows = real_iter(batch, start_line=start_line)
        opened.append(rows)
        return rows

    monkeypatch.setattr(provider, "iter_results", iter_results)
    real_write = outcomes.write_image
    calls = {"n": 0}

    def write_image(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == collect.CHECKPOINT_ROWS + 10:
            raise OSError("disk full while writing an image")
        real_write(*args, **kwargs)

    monkeypatch.setattr(collect, "write_image", write_image)
    with pytest.raises(OSError, match="disk full") as caught:
        collect.handle_batch_done(stack.runtime, batch_id)
    # The exception (and so the collector's frames) is still alive here: the download must
    # already be closed, not left for the garbage collector to close inside a later
    # request on the same HTTP client (httpcore's pool lock).
    assert caught.value is not None
    (first,) = opened
    assert inspect.getgeneratorstate(first) == inspect.GEN_CLOSED  # type: ignore[arg-type]
    record = stack.repo.require_batch(batch_id)
    assert record.cursor == collect.CHECKPOINT_ROWS
    assert "disk full" in (record.last_error or "")
    assert record.lease_owner is None
    del caught
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)
    assert inspect.getgeneratorstate(opened[1]) == inspect.GEN_CLOSED  # type: ignore[arg-type]


# --- issue 15 part 4: the collection lease ----------------------------------------------


def test_two_deliveries_of_one_batch_never_make_two_collectors_download_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _upload(stack, PROMPTS[:3])
    stack.tick()
    (batch_id,) = _finished_batches(stack, job_id)
    _lose_batch_done(stack)
    provider = stack.runtime.provider
    real_iter = provider.iter_results
    nested: list[collect.CollectReport] = []

    def iter_results(batch: ProviderBatch, *, start_line: int = 0) -> Iterator[ResultRow]:
        for number, row in enumerate(real_iter(batch, start_line=start_line)):
            if number == 0 and not nested:
                # A second delivery of the same signal while this collector downloads.
                nested.append(collect.handle_batch_done(stack.runtime, batch_id))
            yield row

    monkeypatch.setattr(provider, "iter_results", iter_results)
    collect.handle_batch_done(stack.runtime, batch_id)
    (second,) = nested
    assert second.leased_elsewhere
    assert second.rows == 0
    assert sum(stack.emulator.state.counters.downloads.values()) == 1
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)


def test_a_lease_left_by_a_dead_collector_expires_and_collection_resumes_at_the_cursor(
    stack: Stack,
) -> None:
    job_id = _upload(stack, PROMPTS[:3])
    stack.tick()
    (batch_id,) = _finished_batches(stack, job_id)
    _lose_batch_done(stack)
    dead_until = stack.clock() + collect.LEASE
    stack.repo.patch_batch(
        batch_id,
        lambda _b: {"lease_owner": "a-collector-killed-mid-download", "lease_until": dead_until},
    )
    report = collect.handle_batch_done(stack.runtime, batch_id)
    assert report.leased_elsewhere
    assert sum(stack.emulator.state.counters.downloads.values()) == 0
    # The tick does not re-announce a batch under a live lease; once it has expired it does.
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)
    assert sum(stack.emulator.state.counters.downloads.values()) == 1


# --- finding 7: the small ones ----------------------------------------------------------


def test_status_shows_the_reconcile_wait_of_a_create_whose_outcome_is_unknown(
    stack: Stack,
) -> None:
    stack.faults.create_500 = 1  # the create's outcome is unknown: SUBMITTING until found
    job_id = _upload(stack, PROMPTS)
    (view,) = job_view(stack.runtime, stack.repo.require_job(job_id))["waiting"]
    grace = submit.RECONCILE_GRACE.total_seconds()
    assert view["seconds_left"] == grace
    assert "reconcile grace" in view["why"]
    stack.clock.advance(timedelta(minutes=4))
    stack.tick()
    (later,) = job_view(stack.runtime, stack.repo.require_job(job_id))["waiting"]
    assert later["batch_id"] == view["batch_id"]
    assert later["seconds_left"] == grace - 240
    assert later["reconcile_until"] == view["reconcile_until"]
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert job_view(stack.runtime, stack.repo.require_job(job_id))["waiting"] == []


def test_an_upper_case_jsonl_upload_runs_like_any_other(stack: Stack) -> None:
    job_id = _upload(stack, PROMPTS[:2], name="PROMPTS.JSONL")
    assert stack.repo.get_job(job_id) is not None
    completions = stack.settle(job_id)
    assert_invariants(stack, job_id, completions)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_recovered_truncated_download_is_logged_as_a_structured_warning_not_a_traceback(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.faults.truncate_downloads = 1
    job_id = _upload(stack, PROMPTS)
    # The package logger does not propagate (it writes JSON lines itself); the functions
    # framework's loggers (one per function) do, into caplog.
    kept = _Kept()
    package = logging.getLogger("bananabatch")
    package.addHandler(kept)
    try:
        with caplog.at_level(logging.INFO):
            completions = stack.settle(job_id)
    finally:
        package.removeHandler(kept)
    assert stack.failed_deliveries >= 1
    assert_invariants(stack, job_id, completions)
    # The emulator's own account of the truncation it served is not the pipeline's.
    ours = [
        r
        for r in [*caplog.records, *kept.records]
        if not r.name.startswith(("uvicorn", "bananabatch.emulator"))
    ]
    assert [f"{r.name}: {r.getMessage()}" for r in ours if r.exc_info] == []
    redelivered = [r for r in ours if r.getMessage().startswith("transient failure")]
    assert redelivered, "the recovered failure is not logged"
    for record in redelivered:
        assert record.levelno == logging.WARNING
        assert "downloading" in record.__dict__["error"]
        assert record.__dict__["error_type"] == "TransientError"


# --- finding 3: the same request in flight is paid once ---------------------------------


def test_a_request_already_collected_in_a_running_job_is_served_from_the_cache_not_paid_again(
    stack: Stack,
) -> None:
    job_id = _upload(stack, PROMPTS)
    stack.tick()
    first, _last = sorted(_finished_batches(stack, job_id))
    _lose_batch_done(stack)
    collect.handle_batch_done(stack.runtime, first)
    assert stack.repo.require_job(job_id).state is JobState.RUNNING
    collected = {i.key for i in stack.repo.items(job_id) if i.state is ItemState.SUCCEEDED}
    assert collected == {"k1", "k2", "k3"}
    again = _upload(stack, PROMPTS, name="again.jsonl")
    served = {i.key for i in stack.repo.items(again) if i.state is ItemState.CACHED}
    assert served == collected
    settled = _settle_all(stack, [job_id, again])
    for each, completions in settled.items():
        assert_invariants(stack, each, completions)
    # k4 and k5, still in flight in the first job, are joined (pipeline/inflight.py).
    assert stack.emulator.state.submitted_keys(f"bananabatch-{again}") == {}
    joined = {i.key: i.state for i in stack.repo.items(again) if i.lane == LANE_JOINED}
    assert joined == {"k4": ItemState.CACHED, "k5": ItemState.CACHED}


def test_two_concurrent_retries_of_one_job_make_one_retry_job_and_pay_its_items_once(
    stack: Stack,
) -> None:
    stack.faults.rows["k2"] = RowFault("error")  # fails at every attempt
    job_id = _upload(stack, PROMPTS)
    assert_invariants(stack, job_id, stack.settle(job_id))
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL
    stack.faults.rows.clear()
    waiting = threading.Event()
    uploads: list[str] = []

    def upload(path: Path) -> str:
        # Hold the upload until the other `retry` has found the claim taken.
        assert waiting.wait(timeout=30)
        uploads.append(stack.upload(path))
        return uploads[-1]

    made: list[retry.RetryJob] = []
    errors: list[BaseException] = []

    def run(sleep: Callable[[float], None]) -> None:
        try:
            made.append(retry.retry_failed_items(stack.runtime, job_id, upload, sleep=sleep))
        except BaseException as exc:
            errors.append(exc)

    def seen_taken(_seconds: float) -> None:
        waiting.set()
        time.sleep(0.01)

    threads = [threading.Thread(target=run, args=(seen_taken,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(uploads) == 1
    assert sorted(m.created for m in made) == [False, True]
    assert {m.retry_job_id for m in made} == {uploads[0]}
    again = retry.retry_failed_items(stack.runtime, job_id, upload)
    assert (again.retry_job_id, again.created) == (uploads[0], False)
    completions = stack.settle(uploads[0])
    assert_invariants(stack, uploads[0], completions)
    assert [i.key for i in stack.repo.items(uploads[0])] == ["k2"]


def test_local_run_killed_and_run_again_resumes_the_job_and_pays_each_line_once(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with open_stack(request, "local", tmp_path) as stack:
        assert isinstance(stack, LocalStack)
        path = stack.write(PROMPTS)

        def killed(_progress: Any) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            stack.pipeline.run_job(path, on_progress=killed, tick_interval=0)
        (job_id,) = [j.job_id for j in stack.repo.list_jobs()]
        _lose_batch_done(stack)
        told: list[tuple[str, bool]] = []
        result = stack.pipeline.run_job(
            path, tick_interval=0, timeout=60, on_start=lambda j, r: told.append((j, r))
        )
        assert told == [(job_id, True)]
        assert result.resumed
        assert result.job.job_id == job_id
        assert [j.job_id for j in stack.repo.list_jobs()] == [job_id]
        assert_invariants(
            stack,
            job_id,
            [Completion(c, {"job_id": job_id, "state": c["state"]}) for c in result.completions],
        )
        assert sum(stack.emulator.state.submitted_keys("").values()) == len(PROMPTS)


def test_a_retry_whose_upload_fails_hands_its_claim_back_at_once(stack: Stack) -> None:
    stack.faults.rows["k2"] = RowFault("error")
    job_id = _upload(stack, PROMPTS[:2])
    assert_invariants(stack, job_id, stack.settle(job_id))
    stack.faults.rows.clear()

    def broken(_path: Path) -> str:
        raise OSError("the inbox refused the upload")

    with pytest.raises(OSError, match="refused the upload"):
        retry.retry_failed_items(stack.runtime, job_id, broken)

    def never_waits(_seconds: float) -> None:
        raise AssertionError("the claim of the failed retry was not handed back")

    made = retry.retry_failed_items(
        stack.runtime, job_id, lambda path: stack.upload(path), sleep=never_waits
    )
    assert made.created
    assert_invariants(stack, made.retry_job_id, stack.settle(made.retry_job_id))


def test_local_run_ends_when_another_run_of_the_same_file_finished_the_job(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `local run`s of one file at once: the second resumes the first one's job, and
    whichever process closes it publishes the completion on its own in-process bus. The
    other must still see the job end (its record says the closing is done), not wait out
    its timeout for a message that went to another process."""
    with open_stack(request, "local", tmp_path) as stack:
        assert isinstance(stack, LocalStack)
        path = stack.write(PROMPTS)
        monkeypatch.setattr(stack.pipeline, "completions", list)
        result = stack.pipeline.run_job(path, tick_interval=0, timeout=30)
        assert result.job.state is JobState.SUCCEEDED
        assert result.job.finalized
        assert result.completions == []
