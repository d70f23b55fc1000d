"""Creating a job for an uploaded object and admitting it against the budget.

One JSONL object in the inbox becomes one job, RECEIVED; its input is read and staged
(pipeline.intake.read), then the job is admitted: RUNNING, or HELD when its estimate is
over a cap; every job move is pipeline.lifecycle's. Nothing here spends money; submission
starts only after the job has moved to RUNNING, which is why a crash anywhere in intake can
simply be redone.
"""

from __future__ import annotations

from collections.abc import Mapping

from bananabatch.config import env_name_for
from bananabatch.core import records as rec
from bananabatch.core.records import Costs, JobRecord, SourceObject
from bananabatch.core.staging import IntakeTally
from bananabatch.core.states import ItemState, JobState
from bananabatch.core.twotier.spec import SpecError
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import budget, control, finalize, lifecycle
from bananabatch.pipeline.intake.dedup import DedupOverflow
from bananabatch.pipeline.intake.read import stage_file
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.twotier import intake as twotier_intake

log = get_logger(__name__)


def handle_upload(rt: Runtime, source: SourceObject, metadata: Mapping[str, str]) -> str | None:
    """Create and stage the job for an uploaded object. Returns the job id, or None when
    the object is not a JSONL file. A redelivered event does nothing."""
    if not rec.is_jsonl_name(source.name):
        log.info("ignoring non-JSONL upload", extra={"object": source.uri})
        return None
    job_id = rec.job_id_for(source)
    with labels(job_id=job_id):
        now = rt.now()
        created = lifecycle.receive(
            rt,
            JobRecord(
                job_id=job_id,
                state=JobState.RECEIVED,
                source=source,
                created_at=now,
                updated_at=now,
                default_model=metadata.get("model") or rt.settings.default_model,
                results_prefix=rt.results_uri(rec.results_prefix(job_id)),
                options={k: v for k, v in metadata.items() if k.startswith("bananabatch-")},
            ),
        )
        crash_point("intake.after_job_created")
        job = rt.repo.require_job(job_id)
        if not created and job.state is not JobState.RECEIVED:
            log.info("duplicate upload event: job already %s", job.state.value)
            return job_id
        if not created:
            # A previous delivery died before the job left RECEIVED, so nothing was
            # submitted yet: staging again is safe because it is deterministic.
            log.warning("resuming an intake that did not finish")
        log.info("intake started", extra={"object": source.uri})
        _stage(rt, job)
        return job_id


def source_bucket(job: JobRecord) -> str:
    return job.source.bucket


def _stage(rt: Runtime, job: JobRecord) -> None:
    refused = _refusal(rt, job)
    if refused is not None:
        _fail_job(rt, job, refused)
        return
    try:
        # A two-tier file is read as its draft file (pipeline/twotier/intake.py).
        tiered = twotier_intake.prepare(rt, job)
    except SpecError as exc:
        _fail_job(rt, job, str(exc))
        return
    try:
        tally = stage_file(rt, tiered.job if tiered else job)
    except DedupOverflow as exc:
        _fail_job(rt, job, exc.message)
        return
    extra = twotier_intake.finish(rt, tiered, tally) if tiered else {}
    if tally.lines == 0:
        _fail_job(rt, job, "the file is empty: expected one JSON object per line")
        return
    for warning in tally.warnings:
        log.warning("model warning: %s", warning)
    _admit(rt, job, tally, extra)


def _refusal(rt: Runtime, job: JobRecord) -> str | None:
    """Why the input cannot be read at all, or None."""
    info = rt.objects.stat(source_bucket(job), job.source.name)
    if info is None:
        # The object was deleted after the event fired: nothing to do, and retrying cannot help.
        return f"input object {job.source.uri} no longer exists"
    limit = rt.settings.max_input_bytes
    if info.size > limit:
        return (
            f"input is {info.size} bytes; the configured limit is {limit}"
            f" bytes (set {env_name_for('max_input_bytes')} to change it)"
        )
    return None


def _admit(
    rt: Runtime, job: JobRecord, tally: IntakeTally, extra: Mapping[str, object] | None = None
) -> None:
    """Move the staged job to HELD (over a budget cap) or RUNNING."""
    costs = Costs(
        estimated_usd=round(tally.estimated_batch_usd, 6),
        standard_equivalent_usd=round(tally.estimated_standard_usd, 6),
        cache_saved_usd=round(tally.cache_saved_usd, 6),
    )
    staged = {
        "line_count": tally.lines,
        "accepted_count": tally.accepted,
        "rejected_count": tally.rejected,
        "batch_count": len(tally.batches),
        "urgent_count": tally.urgent,
        "counts": {
            ItemState.REJECTED.value: tally.rejected,
            ItemState.PENDING.value: tally.accepted,
        },
        "costs": costs,
        "warnings": tally.warnings,
        **(extra or {}),
    }
    hold, day = budget.admit(rt, job, costs.estimated_usd) if tally.accepted else (None, None)
    if hold is not None:
        # Over a cap: nothing is reserved or submitted until a person approves or rejects.
        held = lifecycle.hold(rt, job.job_id, hold, staged)
        log.warning("job held over budget: %s", hold)
        if held.moved:
            finalize.publish_completion_if_pending(rt, job.job_id)
        return
    moved = lifecycle.start(rt, job.job_id, budget_day=day, staged=staged)
    log.info(
        "intake finished",
        extra={
            "lines": tally.lines,
            "accepted": tally.accepted,
            "rejected": tally.rejected,
            "batches": len(tally.batches),
            "estimated_usd": costs.estimated_usd,
        },
    )
    if not moved.moved:
        return
    # A crash here leaves queued batches and a RUNNING job; the tick submits them.
    crash_point("intake.after_stage")
    if tally.accepted == 0:
        finalize.finalize_job_if_done(rt, job.job_id)
        return
    control.start_running(rt, job.job_id)


def _fail_job(rt: Runtime, job: JobRecord, reason: str) -> None:
    log.error("job refused at intake: %s", reason)
    finalize.close_job(rt, job, forced=JobState.FAILED, error=reason)
