"""What the CLI says when a person stops waiting (Ctrl-C): the job goes on or waits, nothing
done is lost, and the exact commands to go on or to stop it. Only words; no pipeline logic.
"""

from __future__ import annotations

import logging
from typing import Final

from bananabatch.core.records import JobRecord
from bananabatch.core.states import BATCH_ACTIVE, ITEM_TERMINAL, JOB_TERMINAL, ItemState, JobState
from bananabatch.pipeline.runtime import Runtime

EXIT_INTERRUPTED: Final = 130
APPROVE_FLAG: Final = "--approve"


def quiet_emulator_shutdown() -> None:
    """The emulator inside `local run` stops with the command; a request it was serving
    when Ctrl-C came is cancelled, which uvicorn reports as a traceback nobody can act on."""
    logging.getLogger("uvicorn.error").disabled = True


def where_it_stands(rt: Runtime, job: JobRecord) -> str:
    """'RUNNING: 1,250 of 5,000 lines done, 7 batches in flight' from the records."""
    if job.state is JobState.RECEIVED:
        return "RECEIVED: its file was still being read; nothing was submitted"
    if job.state in JOB_TERMINAL:
        return f"{job.state.value}: it has ended"
    done = job.rejected_count + sum(
        rt.repo.count_items(job.job_id, state)
        for state in ITEM_TERMINAL
        if state is not ItemState.REJECTED
    )
    flying = rt.repo.count_batches(job_id=job.job_id, states=BATCH_ACTIVE)
    if job.window_at is not None:
        from bananabatch.pipeline import pack

        flying += len(pack.shared_batches_of(rt, job.job_id, BATCH_ACTIVE))
    batches = f"{flying} batch{'es' if flying != 1 else ''} in flight"
    return f"{job.state.value}: {done:,} of {job.line_count:,} lines done, {batches}"


def after_local_run(rt: Runtime, job_id: str | None, rerun: str, *, in_process: bool) -> str:
    """The lines `local run` prints on Ctrl-C. rerun is the command that resumes the job;
    in_process says the emulator ran inside the command (its batches ended with it)."""
    if job_id is None:
        return "Stopped before the file reached the inbox: no job was made, nothing was spent."
    job = rt.repo.get_job(job_id)
    if job is None:
        return (
            f"Stopped before job {job_id} was read: nothing was submitted or spent.\n"
            f"To start it: {rerun}"
        )
    if job.state in JOB_TERMINAL:
        return f"Stopped waiting; job {job_id} had already ended {job.state.value}."
    if job.state is JobState.HELD:
        go_on = rerun if rerun.endswith(APPROVE_FLAG) else f"{rerun} {APPROVE_FLAG}"
        return (
            f"Stopped waiting (Ctrl-C); the job is kept. Job {job_id} is HELD: {job.error}\n"
            "Nothing was spent.\n"
            f"  to go on:   {go_on}   (or: bananabatch approve {job_id})\n"
            f"  to stop it: bananabatch reject {job_id}"
        )
    lost = (
        "The emulator that ran its batches stopped with this command; running the file again"
        " sends them again (free: it is the emulator)."
        if in_process
        else "Its batches go on at the provider and are collected when you go on."
    )
    return (
        f"Stopped waiting (Ctrl-C); the job is kept. Job {job_id} is"
        f" {where_it_stands(rt, job)}.\n"
        f"Finished lines are kept and never paid again. {lost}\n"
        f"  to go on:   {rerun}\n"
        f"  to stop it: bananabatch cancel {job_id}"
    )


def after_watch(rt: Runtime, job_id: str, *, local: bool) -> str:
    """The lines `watch` prints on Ctrl-C."""
    job = rt.repo.get_job(job_id)
    if job is None:
        return f"Stopped watching job {job_id}."
    if job.state in JOB_TERMINAL:
        return f"Stopped watching; job {job_id} had already ended {job.state.value}."
    driven = (
        "On the local stack it moves only while `bananabatch local serve` (every job) or a"
        " `watch` of it runs."
        if local
        else "It goes on in the cloud."
    )
    return (
        f"Stopped watching; the job is kept. Job {job_id} is {where_it_stands(rt, job)}.\n"
        f"{driven}\n"
        f"  to go on:   bananabatch watch {job_id}\n"
        f"  to stop it: bananabatch cancel {job_id}"
    )
