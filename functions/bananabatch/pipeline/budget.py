"""Budget caps: a per-job cap and a rolling daily cap, with reserve-then-spend accounting.

A job's estimate is reserved in `budget/{UTC day}` inside one StateStore.update
transaction that also checks the daily cap, so concurrent uploads cannot exceed it
together: the second transaction sees the first one's reservation. A job that would
exceed a cap is HELD (no reservation) until `approve` (reserves without the cap, since a
person decided) or `reject` (CANCELLED, its items FAILED "rejected by user"); both are in
pipeline/control.py.

The reservation becomes actual spend when the job ends (finalize calls `settle`): the
whole reservation is released and the job's actual cost recorded, so items that ended
without cost (blocked, failed, cached) give their share back at that moment. Settling per
job rather than per item keeps the collector (not ours) untouched; the daily total is
therefore conservative while a job runs.

The day document keeps one entry per job, which makes reserve and settle idempotent under
event redelivery: {"day": ..., "jobs": {job_id: {"reserved": usd, "spent": usd}}}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bananabatch.config import env_name_for
from bananabatch.core import records as rec
from bananabatch.core.records import JobRecord
from bananabatch.core.states import BatchState
from bananabatch.errors import PermanentError
from bananabatch.faults import crash_point
from bananabatch.pipeline import window
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Doc

JOB_BUDGET_KEY: Final = "bananabatch-budget-usd"
# Batches are staged with this "not before" time so that no tick submits them while the
# job is still RECEIVED or HELD; it is cleared when the job moves to RUNNING.
HOLD_UNTIL: Final = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DayTotals:
    day: str
    reserved_usd: float
    spent_usd: float

    @property
    def committed_usd(self) -> float:
        return self.reserved_usd + self.spent_usd


def budget_day(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def job_cap(job: JobRecord, configured: float | None) -> tuple[float | None, str]:
    """The job's cap and where it came from. The operator's configured cap is the ceiling:
    object metadata (which `submit --budget` writes) can only lower it, never raise it, since
    anyone who may write the inbox may set metadata."""
    source = env_name_for("job_budget_usd")
    raw = job.options.get(JOB_BUDGET_KEY)
    if raw is None:
        return configured, source
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise PermanentError(
            f"object metadata {JOB_BUDGET_KEY}: expected a number of USD >= 0; found {raw!r}",
            job_id=job.job_id,
        )
    if configured is not None and configured <= value:
        return configured, f"{source}, the lower of it and object metadata {JOB_BUDGET_KEY}"
    return value, f"object metadata {JOB_BUDGET_KEY}"


def with_margin(estimate_usd: float, margin: float) -> float:
    """What a job reserves: its estimate plus the safety margin (config.DEFAULT_BUDGET_MARGIN
    says why), so a cap holds against the actual cost, not only against the estimate."""
    return round(estimate_usd * (1.0 + margin), 6)


def totals(doc: Mapping[str, Any] | None, day: str) -> DayTotals:
    jobs = (doc or {}).get("jobs") or {}
    return DayTotals(
        day=day,
        reserved_usd=sum(float(v.get("reserved", 0.0)) for v in jobs.values()),
        spent_usd=sum(float(v.get("spent", 0.0)) for v in jobs.values()),
    )


def day_totals(rt: Runtime, day: str | None = None) -> DayTotals:
    day = day or budget_day(rt.now())
    return totals(rt.state.get(rec.budget_path(day)), day)


def reserve(
    rt: Runtime, job_id: str, amount: float, *, day: str, cap: float | None
) -> tuple[bool, DayTotals]:
    """Reserve amount for job_id on day unless it would take the day over cap. Returns
    whether the job holds a reservation now, and the day's totals as this call saw them."""
    seen: dict[str, Any] = {}

    def fn(doc: Doc | None) -> Doc | None:
        current = totals(doc, day)
        jobs = dict((doc or {}).get("jobs") or {})
        seen["totals"], seen["ok"] = current, True
        if job_id in jobs:
            return None  # a redelivery: the first reservation stands
        if cap is not None and current.committed_usd + amount > cap + 1e-9:
            seen["ok"] = False
            return None
        jobs[job_id] = {"reserved": round(amount, 6), "spent": 0.0}
        return {"day": day, "jobs": jobs}

    rt.state.update(rec.budget_path(day), fn)
    return bool(seen["ok"]), seen["totals"]


def settle(rt: Runtime, job: JobRecord, actual_usd: float) -> None:
    """Turn the job's reservation into its actual spend (idempotent)."""
    if job.budget_day is None:
        return

    def fn(doc: Doc | None) -> Doc | None:
        jobs = dict((doc or {}).get("jobs") or {})
        entry = {"reserved": 0.0, "spent": round(actual_usd, 6)}
        if jobs.get(job.job_id) == entry:
            return None
        jobs[job.job_id] = entry
        return {"day": job.budget_day, "jobs": jobs}

    rt.state.update(rec.budget_path(job.budget_day), fn)


def admit(rt: Runtime, job: JobRecord, estimate_usd: float) -> tuple[str | None, str]:
    """Check both caps; reserve on the daily budget when they allow. Returns the reason to
    hold the job (None to go ahead) and the budget day."""
    day = budget_day(rt.now())
    try:
        cap, source = job_cap(job, rt.settings.job_budget_usd)
    except PermanentError as exc:
        return exc.message, day
    margin = rt.settings.budget_margin
    amount = with_margin(estimate_usd, margin)
    with_pct = f"estimated ${estimate_usd:.4f} (${amount:.4f} with the {margin:.0%} margin)"
    if cap is not None and amount > cap + 1e-9:
        return (
            f"{with_pct} exceeds the job budget ${cap:.4f} ({source}); approve or reject the job",
            day,
        )
    daily = rt.settings.daily_budget_usd
    ok, seen = reserve(rt, job.job_id, amount, day=day, cap=daily)
    if not ok:
        return (
            f"{with_pct} would take {day}'s committed spend to "
            f"${seen.committed_usd + amount:.4f}, over the daily budget ${daily:.4f} "
            f"({env_name_for('daily_budget_usd')}); approve or reject the job",
            day,
        )
    return None, day


def release_hold(rt: Runtime, job_id: str) -> None:
    """Let a running job's batches go: at once, or at the batch window where one is
    configured (a single write per batch, so no crash can let one out early)."""
    until = window.hold_until(rt, job_id)
    # A crash here leaves the batches held; the tick releases them to the recorded window.
    crash_point("window.after_mark")
    for batch in rt.repo.batches(job_id=job_id, states=[BatchState.QUEUED]):
        rt.repo.patch_batch(
            batch.batch_id,
            lambda b: {"next_submit_after": until} if b.next_submit_after == HOLD_UNTIL else None,
        )


def reserve_fallback(rt: Runtime, job: JobRecord, batch_id: str, extra_usd: float) -> str | None:
    """Reserve what moving a batch to a dearer fallback model adds (with the margin), under
    the job cap and the daily cap, once per batch. None when reserved, else why not."""
    margin = rt.settings.budget_margin
    amount = with_margin(extra_usd, margin)
    try:
        cap, source = job_cap(job, rt.settings.job_budget_usd)
    except PermanentError as exc:
        return exc.message
    total = with_margin(job.costs.estimated_usd, margin) + amount
    if cap is not None and total > cap + 1e-9:
        return (
            f"would take the job's estimate to ${total:.4f} (with the {margin:.0%} margin), "
            f"over the job budget ${cap:.4f} ({source})"
        )
    day = job.budget_day or budget_day(rt.now())
    daily = rt.settings.daily_budget_usd
    seen: dict[str, Any] = {"ok": True}

    def fn(doc: Doc | None) -> Doc | None:
        jobs = dict((doc or {}).get("jobs") or {})
        entry = dict(jobs.get(job.job_id) or {"reserved": 0.0, "spent": 0.0})
        done = list(entry.get("fallbacks") or [])
        seen["ok"], seen["totals"] = True, totals(doc, day)
        if batch_id in done:
            return None  # a redelivery: reserved already
        if daily is not None and seen["totals"].committed_usd + amount > daily + 1e-9:
            seen["ok"] = False
            return None
        entry["reserved"] = round(float(entry.get("reserved", 0.0)) + amount, 6)
        entry["fallbacks"] = [*done, batch_id]
        jobs[job.job_id] = entry
        return {"day": day, "jobs": jobs}

    rt.state.update(rec.budget_path(day), fn)
    if seen["ok"]:
        return None
    return (
        f"would take {day}'s committed spend to "
        f"${seen['totals'].committed_usd + amount:.4f}, over the daily budget ${daily:.4f} "
        f"({env_name_for('daily_budget_usd')})"
    )
