"""Fault-matrix scenarios of two-tier jobs (issue 21), on both stacks (the `stack` fixture),
each ending with the four invariants of tests/e2e/test_fault_matrix.py: the emulator is told
to answer broken drafts and failing finals, and the job still pays each request once and
ends with one completion."""

from __future__ import annotations

import json

from bananabatch.core.states import ItemState, JobState
from bananabatch.pipeline import finalize
from bananabatch.pipeline.twotier.select import select
from tests.support.stacks import Stack, assert_invariants

PRO = "gemini-3-pro-image"


def _lines(keys: str, header: dict[str, object] | None) -> list[str]:
    rows = [] if header is None else [json.dumps({"bananabatch": header})]
    return rows + [
        json.dumps({"key": key, "prompt": f"a {key} teapot on a shelf", "aspect_ratio": "4:5"})
        for key in keys
    ]


def _report(stack: Stack, job_id: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(stack.read_result(f"jobs/{job_id}/twotier/report.json"))
    return doc


def test_broken_drafts_are_culled_a_failed_final_is_retried_and_a_hopeless_line_fails(
    stack: Stack,
) -> None:
    faults = stack.faults
    faults.row("a~c1", "blank_image")
    faults.row("b~c3", "copy_image")
    for n in range(1, 10):  # every draft c ever gets is blank: 3 rounds of 3, then FAILED
        faults.row(f"c~c{n}", "blank_image")
    # d's first final is refused for good (not a retryable code): the next survivor goes.
    faults.row_error("d", code=3, message="Request contains an invalid argument.")
    header = {"final_model": PRO, "candidates": 3, "keep": 1}
    job_id = stack.upload(stack.write(_lines("abcde", header), name="teapots.jsonl"))

    summary = assert_invariants(stack, job_id, stack.settle(job_id, rounds=30))

    job = stack.repo.require_job(job_id)
    assert job.state is JobState.PARTIAL
    two = summary["two_tier"]
    assert two["lines"] == {"total": 5, "succeeded": 4, "failed": 1}
    outcomes = {o["key"]: o for o in two["line_outcomes"]}
    assert outcomes["c"]["state"] == "FAILED"
    assert outcomes["c"]["drafts"] == 9
    assert outcomes["c"]["reason"].startswith(
        "attempts exhausted: none of 9 drafts (at most 9) survived the cull"
    )
    assert outcomes["d"]["accepted"] == ["d~f2"]
    items = {i.key: i for i in stack.repo.items(job_id)}
    assert items["c"].state is ItemState.FAILED
    assert items["c"].reason == outcomes["c"]["reason"]
    assert items["d"].state is ItemState.FAILED
    assert items["d~f2"].state is ItemState.SUCCEEDED
    assert {k for k in items if "~c" in k} == {
        *(f"{k}~c{n}" for k in "abde" for n in (1, 2, 3)),
        *(f"c~c{n}" for n in range(1, 10)),
    }
    assert two["culled"] == {
        "draft: blank or near-uniform": 10,
        "draft: near-duplicate of b~c1": 1,
    }
    stages = two["stages"]
    assert stages["draft"]["images"] == 21
    assert stages["draft"]["accepted"] == 10
    assert stages["final"]["images"] == 5  # a, b, d, d~f2, e
    assert stages["final"]["accepted"] == 4
    assert stages["final"]["model"] == PRO
    # The draft rounds and the final retry are regenerations the rates remember.
    rates = {(r["stage"], r["template"]): r for r in two["rates"]}
    assert rates[("draft", None)]["first_attempts"] == 15
    assert rates[("final", None)]["first_attempts"] == 4


def test_a_manual_selection_finishes_exactly_what_was_chosen(stack: Stack) -> None:
    options = {
        "bananabatch-final-model": PRO,
        "bananabatch-candidates": "2",
        "bananabatch-selection": "manual",
    }
    job_id = stack.upload(stack.write(_lines("xyz", None), name="manual.jsonl"), metadata=options)

    # The drafts come back and the job waits for a person: no completion yet.
    assert stack.settle(job_id, rounds=6) == []
    job = stack.repo.require_job(job_id)
    assert job.state is JobState.RUNNING
    page = stack.read_result(f"jobs/{job_id}/index.html").decode()
    assert '"select":true' in page
    made = select(stack.runtime, job_id, ["x~c2", "y~c1", "y~c2"])
    assert (made.lines, made.lines_without, made.recorded) == (2, 1, True)
    finalize.finalize_job_if_done(stack.runtime, job_id)  # what `select` does next
    # The same selection again changes nothing; another is refused, not paid for.
    assert not select(stack.runtime, job_id, ["y~c2", "x~c2", "y~c1"]).recorded

    summary = assert_invariants(stack, job_id, stack.settle(job_id, rounds=20))

    two = summary["two_tier"]
    outcomes = {o["key"]: o for o in two["line_outcomes"]}
    assert outcomes["x"]["accepted"] == ["x"]
    assert sorted(outcomes["y"]["accepted"]) == ["y", "y~f2"]
    assert outcomes["z"]["state"] == "FAILED"
    assert outcomes["z"]["reason"] == "no candidate of this line was selected"
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL
    # Manual selections are what the draft stage's accept rate measures.
    assert two["stages"]["draft"]["accepted"] == 3
    objects = stack.runtime.objects
    named = objects.list(stack.settings.results_bucket, f"jobs/{job_id}/twotier/finals-")
    sources = [stack.read_result(info.name).decode() for info in named]
    assert len(sources) == 1
    assert {json.loads(line)["candidate"] for line in sources[0].splitlines()} == {
        "x~c2",
        "y~c1",
        "y~c2",
    }
    page = stack.read_result(f"jobs/{job_id}/index.html").decode()
    assert '"select":false' in page


def test_a_planner_that_finds_the_lease_taken_stages_nothing(stack: Stack) -> None:
    from datetime import timedelta

    from bananabatch.pipeline import lifecycle

    options = {"bananabatch-final-model": PRO, "bananabatch-candidates": "2"}
    job_id = stack.upload(stack.write(_lines("pq", None), name="lease.jsonl"), metadata=options)
    # Another finalizer is planning this job: this one must not plan the same round again.
    assert lifecycle.claim_twotier_lease(
        stack.runtime, job_id, "someone-else", lasting=timedelta(hours=1)
    )
    for _ in range(4):
        stack.drain()
        stack.tick()
    assert stack.repo.require_job(job_id).state is JobState.RUNNING
    assert not [i for i in stack.repo.items(job_id) if "~" not in i.key]  # no final staged
    lifecycle.release_twotier_lease(stack.runtime, job_id, "someone-else")
    finalize.finalize_job_if_done(stack.runtime, job_id)
    summary = assert_invariants(stack, job_id, stack.settle(job_id, rounds=20))
    assert summary["two_tier"]["lines"] == {"total": 2, "succeeded": 2, "failed": 0}


def test_a_header_that_cannot_be_used_fails_the_job_at_intake_with_nothing_paid(
    stack: Stack,
) -> None:
    bad = [json.dumps({"bananabatch": {"final_model": "gemini-9-ultra"}}), *_lines("a", None)]
    job_id = stack.upload(stack.write(bad, name="badheader.jsonl"))
    completions = stack.settle(job_id, rounds=2)
    job = stack.repo.require_job(job_id)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.startswith('header line: "final_model": expected an image model')
    assert len(completions) == 1
    assert stack.emulator.state.submitted_keys() == {}


def test_a_two_tier_file_past_its_line_limit_is_refused_naming_the_line(stack: Stack) -> None:
    from bananabatch.core.twotier.spec import MAX_LINES

    header = json.dumps({"bananabatch": {"final_model": PRO}})
    rows = [json.dumps({"key": f"k{n}", "prompt": "p"}) for n in range(MAX_LINES + 1)]
    job_id = stack.upload(stack.write([header, *rows], name="huge.jsonl"))
    stack.settle(job_id, rounds=2)
    job = stack.repo.require_job(job_id)
    assert job.state is JobState.FAILED
    assert job.error == (
        f"a two-tier file takes at most {MAX_LINES:,} lines; line {MAX_LINES + 2} is past it:"
        " split the file"
    )
    assert stack.emulator.state.submitted_keys() == {}
