"""Fault-matrix scenario of issue 15 part 7 (monitoring): a job still RUNNING past its
expected completion is reported once, with the record the deployment's `job-overdue` alert
policy matches, on both stacks (the `stack` fixture), ending with the four invariants."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bananabatch import config
from bananabatch.pipeline import tick
from tests.support.logs import LogRecords, captured
from tests.support.stacks import StackKind, assert_invariants, open_stack

PROMPTS = [
    '{"key": "o1", "prompt": "a lighthouse at dusk"}',
    '{"key": "o2", "prompt": "a lighthouse at dawn"}',
]


@pytest.fixture
def records() -> Iterator[LogRecords]:
    with captured(tick.__name__) as handler:
        yield handler


def _overdue(records: LogRecords) -> list[dict[str, object]]:
    return records.with_message(config.JOB_OVERDUE_MESSAGE)


def test_a_job_running_past_its_expected_completion_is_reported_once_and_still_finishes(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path, records: LogRecords
) -> None:
    with open_stack(request, kind, tmp_path, job_overdue_hours=2.0) as stack:
        # First attempts never finish: the job waits on them until the watchdog steps in.
        stack.faults.stick("*-a1")
        job_id = stack.upload(stack.write(PROMPTS))
        stack.tick()
        stack.drain()
        stack.clock.advance(timedelta(hours=1, minutes=59))
        stack.tick()
        assert _overdue(records) == []  # not yet past the expected completion

        stack.clock.advance(timedelta(minutes=2))
        stack.tick()
        stack.tick()
        (line,) = _overdue(records)
        assert line["severity"] == "WARNING"
        assert line["alert"] == config.JOB_OVERDUE_ALERT
        assert line["job_id"] == job_id
        assert line["expected_hours"] == 2.0
        assert float(str(line["age_hours"])) >= 2.0
        job = stack.runtime.repo.require_job(job_id)
        assert job.overdue_reported

        # The watchdog cancels the stuck batches; their resubmissions finish the job.
        stack.clock.advance(timedelta(hours=stack.settings.stuck_after_hours))
        stack.tick()
        stack.drain()
        assert_invariants(stack, job_id, stack.settle(job_id))
    assert len(_overdue(records)) == 1


def test_the_expected_completion_defaults_to_twice_the_providers_watchdog() -> None:
    gemini = config.Settings.from_env({})
    assert gemini.overdue_hours == 2 * gemini.stuck_after_hours
    vertex = config.Settings.from_env({config.ENV_PROVIDER: "vertex"})
    assert vertex.overdue_hours == 2 * vertex.vertex_stuck_after_hours
    set_ = config.Settings.from_env({config.ENV_JOB_OVERDUE_HOURS: "12"})
    assert set_.overdue_hours == 12.0
