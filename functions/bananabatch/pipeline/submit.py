"""Submission through a ledger: the only code that spends money.

A batch record is moved QUEUED -> SUBMITTING (a conditional write, so only one worker
gets to try) *before* the provider's create call, and SUBMITTING -> RUNNING with the
provider's batch name the moment create returns. A record found in SUBMITTING therefore
means "the create may or may not have happened": it is reconciled by looking the batch
up by its unique display name, never by calling create again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tenacity import RetryCallState, wait_random_exponential

from bananabatch.core.catalog import Provider, canonical_model
from bananabatch.core.records import BatchRecord, JobRecord
from bananabatch.core.states import (
    BATCH_ACTIVE,
    BATCH_PROVIDER_TERMINAL,
    ITEM_TERMINAL,
    JOB_TERMINAL,
    BatchState,
    ItemState,
)
from bananabatch.errors import (
    ModelUnavailable,
    PermanentError,
    ProviderAuthError,
    ProviderOutcomeUnknown,
    ProviderQuotaExceeded,
    QuotaKind,
)
from bananabatch.faults import crash_point
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import claims, model_gone, pack, pause
from bananabatch.pipeline.materialize import materialize_items
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import ProviderBatch

log = get_logger(__name__)

# How long a SUBMITTING record may go unseen by the provider before we conclude the create
# never happened. Long enough for a slow create call still in flight on another worker and
# for the provider's list to catch up; short next to the 48 h the provider gives a batch.
RECONCILE_GRACE = timedelta(minutes=10)

CANCELLED_BEFORE_SUBMISSION = "cancelled by user before submission"

# Backoff between submission attempts refused for a rate limit without a RetryInfo delay:
# exponential with full jitter, capped at 30 minutes.
_QUOTA_BACKOFF = wait_random_exponential(multiplier=30, max=30 * 60)


def quota_backoff(attempt: int) -> timedelta:
    """Delay before retrying a create refused for quota, for the given attempt number."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return timedelta(seconds=_QUOTA_BACKOFF(state))


def submit_queued(rt: Runtime, *, job_id: str | None = None) -> int:
    """Submit queued batches (of one job, or of all jobs) while capacity allows and no
    deployment-wide pause (pipeline/pause.py) stops it. Returns how many were created."""
    pause.lapse_expired(rt)
    gate = pause.gate(rt)
    capacity = rt.settings.max_active_batches - rt.repo.count_batches(states=BATCH_ACTIVE)
    now = rt.now()
    queued = list(rt.repo.batches(states=[BatchState.QUEUED]))
    if gate.open and any(pack.may_pack(batch, now) for batch in queued):
        # At the batch window, the waiting files' batches are packed into shared ones
        # first, whoever submits (pipeline/pack.py); a claimed source is never sent alone.
        pack.pack_due(rt, queued)
        queued = list(rt.repo.batches(states=[BatchState.QUEUED]))
    round_ = _Round(gate, capacity, now, rate_limited=_rate_limited(queued, now))
    jobs: dict[str, JobRecord | None] = {}
    for batch in queued:
        if job_id is not None and batch.job_id != job_id:
            continue
        if batch.packed_into is not None:
            continue
        if not _job_may_spend(rt, batch, jobs):
            continue
        if not round_.gate.open:
            round_.waiting.add(batch.job_id)
            continue
        if round_.capacity <= 0:
            log.info("active batch limit reached; the rest wait for the next tick")
            break
        if round_.holds_back(batch):
            continue
        round_.after(rt, batch, submit_batch(rt, batch.batch_id, gate=round_.gate))
    if round_.waiting and round_.gate.blocking is not None:
        pause.mark_paused_jobs(rt, round_.gate.why, sorted(round_.waiting))
    return round_.created


def _rate_limited(queued: list[BatchRecord], now: datetime) -> set[str]:
    """The providers under a rate limit. A rate limit is the provider's project's, not one
    batch's: while its latest quota backoff (the provider's RetryInfo delay, or ours) runs,
    no batch of any job is sent to it; the other provider's batches still go."""
    latest: dict[str, datetime] = {}
    for batch in queued:
        after = batch.next_submit_after
        if after is not None and _quota_backoff(batch):
            kind = provider_name(batch)
            latest[kind] = max(after, latest.get(kind, after))
    return {kind for kind, after in latest.items() if after > now}


def provider_name(batch: BatchRecord) -> str:
    """The provider a batch record names (records from before there were two: Gemini)."""
    return batch.provider or Provider.GEMINI.value


def _job_may_spend(rt: Runtime, batch: BatchRecord, jobs: dict[str, JobRecord | None]) -> bool:
    """Whether the batch's job may spend now (jobs caches the records read this round); a
    shared batch of the batch window, while any of its members may."""
    if batch.members:
        if not pack.all_stopped(rt, batch, jobs):
            return True
        cancel_unsubmitted(rt, batch, pack.STOPPED_REASON)
        return False
    if batch.job_id not in jobs:
        jobs[batch.job_id] = rt.repo.get_job(batch.job_id)
    job = jobs[batch.job_id]
    if job is not None and job.may_spend:
        return True
    # Ended or cancelled jobs never spend again (a batch can come back to QUEUED after a
    # cancel, by reconciliation); RECEIVED and HELD jobs wait for approval.
    if job is None or job.cancel_requested or job.state in JOB_TERMINAL:
        cancel_unsubmitted(rt, batch, _stopped_reason(job))
    return False


@dataclass
class _Round:
    """What one submission round has learned so far."""

    gate: pause.Gate
    capacity: int
    now: datetime
    # Providers whose creates are refused for quota until their backoff has passed.
    rate_limited: set[str]
    created: int = 0
    # Jobs with batches that could not go because submission is paused.
    waiting: set[str] = field(default_factory=set)

    def holds_back(self, batch: BatchRecord) -> bool:
        """A quota backoff (the project's, or this batch's own) keeps the batch back."""
        after = batch.next_submit_after
        return provider_name(batch) in self.rate_limited or (after is not None and after > self.now)

    def after(self, rt: Runtime, batch: BatchRecord, outcome: BatchRecord | None) -> None:
        if self.gate.probe:
            # One probe per round: open again only if it lifted the pause.
            self.gate = pause.gate(rt)
        if outcome is None:
            return
        if outcome.provider_state == claims.NOT_SUBMITTED:
            return  # nothing created: no place taken among the active batches
        if outcome.state is not BatchState.QUEUED:
            self.created += 1
            self.capacity -= 1
        elif outcome.next_submit_after is not None:
            # Refused for quota: later batches to the same provider would be refused too.
            self.rate_limited.add(provider_name(outcome))
        else:
            # Refused in a way that paused the deployment: nothing else goes this round.
            self.gate = pause.gate(rt)
            if not self.gate.open:
                self.waiting.add(batch.job_id)


def submit_batch(
    rt: Runtime, batch_id: str, *, gate: pause.Gate | None = None
) -> BatchRecord | None:
    """Try to create one queued batch at the provider. Returns the batch as it stands."""
    with labels(batch_id=batch_id):
        claim = rt.repo.move_batch(
            batch_id,
            BatchState.SUBMITTING,
            expect={BatchState.QUEUED},
            change=lambda b: {
                "submitting_since": rt.now(),
                "submit_attempts": b.submit_attempts + 1,
                "updated_at": rt.now(),
            },
        )
        if not claim.moved:
            return claim.record
        # The batch's requests are claimed against other jobs' in flight and its item
        # records created from its manifest (or, for a retry batch, moved) before the
        # create call, while no collector can touch them: once the provider has the
        # batch, collection needs every item to exist. Lines another job's request (or
        # the cache) serves are set apart and left out of the request file
        # (pipeline/claims.py). Idempotent, so a claim again after a reconcile or a quota
        # refusal repeats it harmlessly.
        # A shared batch first leaves out the lines of members that stopped meanwhile.
        batch = claims.materialize_for_submission(rt, pack.filter_stopped(rt, claim.record))
        # A crash here leaves SUBMITTING with nothing created: reconciled after the grace.
        crash_point("submit.after_claim")
        if batch.request_count == 0:
            return _nothing_to_submit(rt, batch)
        with labels(job_id=batch.job_id):
            gone = model_gone.gone_models(rt).get(canonical_model(batch.model))
            if gone is not None:
                # Known not to be served: never asked again (its one alert is out).
                return _model_gone(rt, batch, gone)
            try:
                made = rt.batch_provider(batch).create(
                    model=batch.model,
                    display_name=batch.display_name,
                    request_bucket=rt.settings.results_bucket,
                    request_object=batch.request_object,
                    request_count=batch.request_count,
                )
            except ProviderQuotaExceeded as exc:
                return _refused_for_quota(rt, batch, exc)
            except ProviderAuthError as exc:
                # Nothing works until someone fixes the key: pause everything, alert once,
                # never retry by ourselves. The items stay queued for `resume`.
                mark_items(rt, batch, ItemState.PENDING)
                pause.pause(rt, pause.PauseKind.AUTH, _answer(exc.message))
                return _requeue(rt, batch, None)
            except ProviderOutcomeUnknown as exc:
                log.warning(
                    "create outcome unknown; will reconcile by display name",
                    extra={"error": str(exc), "display_name": batch.display_name},
                )
                return rt.repo.get_batch(batch_id)
            except ModelUnavailable as exc:
                answer = _answer(exc.message)
                model_gone.record_gone(rt, batch.model, answer)
                return _model_gone(rt, batch, answer)
            except PermanentError as exc:
                reason = str(exc)
                log.error("provider rejected the batch", extra={"error": reason})
                moved = rt.repo.move_batch(
                    batch_id,
                    BatchState.FAILED,
                    expect={BatchState.SUBMITTING},
                    change=lambda _b: {
                        "provider_error": reason,
                        "finished_at": rt.now(),
                        "updated_at": rt.now(),
                    },
                )
                if moved.moved:
                    publish_batch_done(rt, moved.record)
                return moved.record
            # A crash here loses the provider's answer: reconciled by display name.
            crash_point("submit.after_create")
            recorded = record_created(rt, batch, made)
            pause.created_ok(rt, gate or pause.Gate(open=True))
            return recorded


def _nothing_to_submit(rt: Runtime, batch: BatchRecord) -> BatchRecord:
    """Every line of the batch was set apart: it ends with nothing created, announced for
    collection like any finished batch (which finds its items all apart)."""
    moved = rt.repo.move_batch(
        batch.batch_id,
        BatchState.SUCCEEDED,
        expect={BatchState.SUBMITTING},
        change=lambda _b: {
            "provider_state": claims.NOT_SUBMITTED,
            "submitting_since": None,
            "finished_at": rt.now(),
            "updated_at": rt.now(),
        },
    )
    if moved.moved:
        log.info("batch not submitted: every line is served by another job's request or the cache")
        publish_batch_done(rt, moved.record)
    return moved.record


def _model_gone(rt: Runtime, batch: BatchRecord, reason: str) -> BatchRecord:
    moved = model_gone.handle(rt, batch, reason)
    if moved.moved and moved.record.state is BatchState.FAILED:
        publish_batch_done(rt, moved.record)
    return moved.record


def _refused_for_quota(rt: Runtime, batch: BatchRecord, exc: ProviderQuotaExceeded) -> BatchRecord:
    """Nothing was created: the batch goes back to QUEUED, and what waits depends on which
    429 it was (field-2026-12 §1 row 6; README "When Gemini says 429")."""
    mark_items(rt, batch, ItemState.PENDING)
    kind = exc.kind
    if kind is QuotaKind.CREDITS_DEPLETED:
        # Billing, not a rate: no backoff loop. Every submission stops until a probe
        # succeeds or the owner runs `bananabatch resume`.
        pause.pause(rt, pause.PauseKind.CREDITS_DEPLETED, _answer(exc.message))
        return _requeue(rt, batch, None)
    if kind is QuotaKind.SPEND_WINDOW:
        wait = max(pause.SPEND_WINDOW, exc.retry_after or timedelta(0))
        pause.pause(
            rt,
            pause.PauseKind.SPEND_WINDOW,
            _answer(exc.message),
            until=rt.now() + wait,
            severity="WARNING",
            alert=False,
        )
        return _requeue(rt, batch, None)
    # A rate limit, or a 429 we cannot place (handled the same, alerted after N in a row):
    # the provider's own RetryInfo delay when it gave one, else capped jittered backoff.
    delay = exc.retry_after if exc.retry_after is not None else quota_backoff(batch.submit_attempts)
    log.warning(
        "provider refused the batch for quota (%s); retry in %s",
        kind.value,
        delay,
        extra={"error": str(exc), "quota_kind": kind.value},
    )
    if kind is QuotaKind.UNKNOWN:
        pause.count_unknown_quota(rt, _answer(exc.message))
    return _requeue(rt, batch, rt.now() + delay)


# Budget holds (pipeline/budget.HOLD_UNTIL) park batches in year 9999; not a backoff.
_HOLD_YEAR = 9999


def _quota_backoff(batch: BatchRecord) -> bool:
    after = batch.next_submit_after
    return after is not None and after.year < _HOLD_YEAR and batch.submit_attempts > 0


def _answer(message: str) -> str:
    """The provider's answer without the batch it was about ("creating batch X (...): 429
    ..."): a deployment-wide pause is not about one batch."""
    return message.split("): ", 1)[-1]


def _requeue(rt: Runtime, batch: BatchRecord, not_before: datetime | None) -> BatchRecord:
    return rt.repo.move_batch(
        batch.batch_id,
        BatchState.QUEUED,
        expect={BatchState.SUBMITTING},
        change=lambda _b: {
            "next_submit_after": not_before,
            "submitting_since": None,
            "updated_at": rt.now(),
        },
    ).record


def cancel_unsubmitted(rt: Runtime, batch: BatchRecord, reason: str) -> bool:
    """End a batch that never reached the provider (QUEUED, or SUBMITTING with nothing
    created) as CANCELLED and announce it, so its collection fails its items with the
    reason. True if this call moved it."""
    # Its items must exist before it turns terminal. PENDING and only where absent, so
    # a submitter that claimed the batch meanwhile (and so wins the move) keeps its
    # SUBMITTED items.
    materialize_items(rt, batch, ItemState.PENDING, only_absent=True)
    moved = rt.repo.move_batch(
        batch.batch_id,
        BatchState.CANCELLED,
        expect={BatchState.QUEUED, BatchState.SUBMITTING},
        change=lambda _b: {
            "finished_at": rt.now(),
            "updated_at": rt.now(),
            "submitting_since": None,
            "provider_error": reason,
        },
    )
    if moved.moved:
        with labels(batch_id=batch.batch_id, job_id=batch.job_id):
            log.warning("batch cancelled before submission", extra={"reason": reason})
        publish_batch_done(rt, moved.record)
    return moved.moved


def _stopped_reason(job: JobRecord | None) -> str:
    if job is not None and job.cancel_requested:
        return CANCELLED_BEFORE_SUBMISSION
    state = "gone" if job is None else job.state.value
    return f"not submitted: its job ended ({state}) before this batch was sent"


def mark_items(rt: Runtime, batch: BatchRecord, state: ItemState) -> None:
    """Move the batch's existing open items to state (terminal ones stay as they are)."""
    now = rt.now()
    rt.repo.put_items(
        item.model_copy(update={"state": state, "updated_at": now})
        for item in rt.repo.items_of_batch(batch).values()
        if item.state not in ITEM_TERMINAL
    )


def record_created(rt: Runtime, batch: BatchRecord, made: ProviderBatch) -> BatchRecord:
    """Persist the provider's batch name: the first write after a create returns."""
    target = made.state if made.state in BATCH_PROVIDER_TERMINAL else BatchState.RUNNING
    moved = rt.repo.move_batch(
        batch.batch_id,
        target,
        expect={BatchState.SUBMITTING},
        change=lambda _b: {
            "provider_name": made.name,
            "provider_state": made.provider_state,
            "submitted_at": rt.now(),
            "updated_at": rt.now(),
            **({"finished_at": rt.now()} if target is not BatchState.RUNNING else {}),
        },
    )
    log.info(
        "batch created",
        extra={"batch_name": made.name, "requests": batch.request_count, "model": batch.model},
    )
    if moved.moved and target is not BatchState.RUNNING:
        publish_batch_done(rt, moved.record)
    return moved.record


def reconcile_submitting(rt: Runtime, batch: BatchRecord) -> BatchRecord:
    """Resolve a batch whose create outcome is unknown, without ever creating it again."""
    with labels(batch_id=batch.batch_id, job_id=batch.job_id):
        found = rt.batch_provider(batch).find(batch.display_name)
        if found is not None:
            log.warning(
                "reconciled: the provider had created the batch", extra={"batch_name": found.name}
            )
            return record_created(rt, batch, found)
        since = batch.submitting_since or batch.updated_at
        if rt.now() - since < RECONCILE_GRACE:
            return batch
        job = None if batch.members else rt.repo.get_job(batch.job_id)
        over = (
            pack.all_stopped(rt, batch, {})
            if batch.members
            else job is None or job.cancel_requested or job.state in JOB_TERMINAL
        )
        if over:
            log.warning("reconciled: the provider never created the batch; its job is over")
            why = pack.STOPPED_REASON if batch.members else _stopped_reason(job)
            cancel_unsubmitted(rt, batch, why)
            return rt.repo.get_batch(batch.batch_id) or batch
        log.warning("reconciled: the provider never created the batch; queueing it again")
        return rt.repo.move_batch(
            batch.batch_id,
            BatchState.QUEUED,
            expect={BatchState.SUBMITTING},
            change=lambda _b: {"submitting_since": None, "updated_at": rt.now()},
        ).record


def publish_batch_done(rt: Runtime, batch: BatchRecord) -> None:
    message = {
        "schema_version": 1,
        "batch_id": batch.batch_id,
        "job_id": batch.job_id,
        "state": batch.state.value,
        "provider_name": batch.provider_name,
    }
    rt.bus.publish(
        rt.settings.topic_batch_done,
        json.dumps(message, separators=(",", ":")).encode(),
        {"job_id": batch.job_id, "batch_id": batch.batch_id, "state": batch.state.value},
    )


def is_overdue(batch: BatchRecord, now: datetime, *, stuck_after: timedelta) -> bool:
    started = batch.submitted_at or batch.created_at
    return now - started > stuck_after
