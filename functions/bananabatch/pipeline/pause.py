"""The deployment-wide submission pause: one document that every submitter reads before it
spends, set by the provider's own refusals and by the billing kill switch, lifted by a
successful probe, by time (a spend window) or by `bananabatch resume`.

`deployment/submission` holds one entry per active reason, so two causes (credits depleted
and the billing budget) never overwrite each other, and lifting one leaves the other:

    {"reasons": {kind: {"reason", "since", "until"?, "probe_after"?, "probing_since"?}},
     "unknown_429_streak": n, "unknown_429_alerted": bool,
     "billing_markers": [...], "history": [...]}

While any reason is active, no batch is created: items stay queued, batches stay QUEUED,
jobs stay RUNNING and carry `paused` (the reason) so `status`, `ls` and, once the job
ends, `summary.json` (its `pauses`) say why nothing moved. Only credits-depleted allows a
probe: one create at a time, every `credits_probe_minutes`; the provider's answer to a real
create is the only test of credits that costs nothing when it fails.

Alerts go on the public completions topic as their own message kind (core/alerts.py), one
per pause: the transaction that starts a pause decides who publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from bananabatch.core import alerts
from bananabatch.core.records import JobRecord
from bananabatch.core.states import JobState
from bananabatch.log import get_logger
from bananabatch.pipeline import lifecycle
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Doc, Where

log = get_logger(__name__)

PAUSE_PATH: Final = "deployment/submission"
# The spend-based limit is per rolling 10-minute window (field-2026-12 §1 row 6).
SPEND_WINDOW: Final = timedelta(minutes=10)
# A probe claimed this long ago and never answered lost its worker: another may probe.
PROBE_LEASE: Final = timedelta(minutes=10)
# The Cloud Billing budget's threshold rules (infra/killswitch.py): below the kill threshold
# a crossing only alerts; at it, submission pauses.
BILLING_THRESHOLDS: Final = (0.5, 0.9, 1.0)
BILLING_KILL_THRESHOLD: Final = 1.0
_HISTORY: Final = 20
_MARKERS: Final = 24


class PauseKind(StrEnum):
    """Why submission stopped. The values appear in alerts, logs, `status` and summaries."""

    #: "Your prepayment credits are depleted": until a probe succeeds or `resume`.
    CREDITS_DEPLETED = "credits_depleted"
    #: The spend-based rate limit per 10-minute window: until the window has passed.
    SPEND_WINDOW = "spend_window"
    #: The Cloud Billing budget crossed its kill threshold: until `resume`.
    BILLING_BUDGET = "billing_budget"
    #: The provider refused our credentials (401 / invalid key): until `resume`.
    AUTH = "auth"


@dataclass(frozen=True)
class Reason:
    kind: PauseKind
    reason: str
    since: datetime
    until: datetime | None = None
    probe_after: datetime | None = None
    probing_since: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until

    def describe(self) -> str:
        return f"{self.kind.value}: {self.reason}"

    def to_doc(self) -> Doc:
        doc: Doc = {"reason": self.reason, "since": self.since.isoformat()}
        for name in ("until", "probe_after", "probing_since"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value.isoformat()
        return doc

    @classmethod
    def from_doc(cls, kind: str, doc: Mapping[str, Any]) -> Reason:
        return cls(
            kind=PauseKind(kind),
            reason=str(doc.get("reason") or kind),
            since=_time(doc.get("since")) or datetime.fromtimestamp(0).astimezone(),
            until=_time(doc.get("until")),
            probe_after=_time(doc.get("probe_after")),
            probing_since=_time(doc.get("probing_since")),
        )


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None


def reasons(doc: Mapping[str, Any] | None) -> dict[PauseKind, Reason]:
    out: dict[PauseKind, Reason] = {}
    for kind, entry in ((doc or {}).get("reasons") or {}).items():
        if kind in PauseKind.__members__.values() and isinstance(entry, Mapping):
            out[PauseKind(kind)] = Reason.from_doc(kind, entry)
    return out


def active_reasons(rt: Runtime) -> list[Reason]:
    """The reasons that stop submission now, oldest first."""
    now = rt.now()
    found = [r for r in reasons(rt.state.get(PAUSE_PATH)).values() if r.active(now)]
    return sorted(found, key=lambda r: r.since)


@dataclass(frozen=True)
class Gate:
    """What the submitter may do this round: create freely, create exactly one batch as
    the credits probe, or nothing (with the reason why)."""

    open: bool
    probe: bool = False
    blocking: Reason | None = None

    @property
    def why(self) -> str:
        return self.blocking.describe() if self.blocking else ""


def gate(rt: Runtime) -> Gate:
    """Read the pause once per submission round. A due credits probe is claimed here, in a
    transaction, so that only one worker probes."""
    active = active_reasons(rt)
    if not active:
        return Gate(open=True)
    others = [r for r in active if r.kind is not PauseKind.CREDITS_DEPLETED]
    if others:
        return Gate(open=False, blocking=others[0])
    credits = active[0]
    if claim_probe(rt):
        return Gate(open=True, probe=True, blocking=credits)
    return Gate(open=False, blocking=credits)


def claim_probe(rt: Runtime) -> bool:
    now = rt.now()
    won: dict[str, bool] = {"won": False}

    def fn(doc: Doc | None) -> Doc | None:
        won["won"] = False
        current = reasons(doc).get(PauseKind.CREDITS_DEPLETED)
        if current is None:
            return None
        due = current.probe_after is None or current.probe_after <= now
        in_flight = current.probing_since is not None and now - current.probing_since < PROBE_LEASE
        if not due or in_flight:
            return None
        won["won"] = True
        return _with_reason(doc, replace(current, probing_since=now))

    rt.state.update(PAUSE_PATH, fn)
    return won["won"]


def pause(
    rt: Runtime,
    kind: PauseKind,
    reason: str,
    *,
    until: datetime | None = None,
    severity: str = "ERROR",
    alert: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> bool:
    """Stop submission for `kind`. True if this call started the pause (it then logs and,
    with `alert`, publishes the one alert). An existing pause of the same kind is extended
    to the later `until`, never shortened, and not announced again."""
    now = rt.now()
    started: dict[str, bool] = {"started": False}
    probe_after = (
        now + timedelta(minutes=rt.settings.credits_probe_minutes)
        if kind is PauseKind.CREDITS_DEPLETED
        else None
    )

    def fn(doc: Doc | None) -> Doc | None:
        started["started"] = False
        current = reasons(doc).get(kind)
        if current is not None and current.active(now):
            if until is None or current.until is None or until <= current.until:
                if kind is PauseKind.CREDITS_DEPLETED and current.probing_since is not None:
                    # The probe itself came back refused.
                    return _with_reason(
                        doc, replace(current, probe_after=probe_after, probing_since=None)
                    )
                return None
            return _with_reason(doc, replace(current, until=until))
        started["started"] = True
        return _with_reason(
            doc, Reason(kind, reason, since=now, until=until, probe_after=probe_after)
        )

    rt.state.update(PAUSE_PATH, fn)
    if not started["started"]:
        return False
    affected = mark_paused_jobs(rt, f"{kind.value}: {reason}")
    log.log(
        _level(severity),
        "submission paused for the whole deployment",
        extra={"pause": kind.value, "reason": reason, "until": until, "jobs": affected},
    )
    if alert:
        publish_alert(
            rt,
            alerts.alert_message(
                alert=kind.value,
                severity=severity,
                reason=reason,
                at=now,
                paused=True,
                until=until,
                jobs=affected,
                action=_action(kind, until),
                extra=extra,
            ),
        )
    return True


def _action(kind: PauseKind, until: datetime | None) -> str:
    if kind is PauseKind.CREDITS_DEPLETED:
        return (
            "top up the prepaid credits; submission resumes by itself when a probe create "
            "succeeds, or at once with `bananabatch resume`"
        )
    if kind is PauseKind.SPEND_WINDOW:
        return f"nothing: submission resumes after {until.isoformat() if until else 'the window'}"
    if kind is PauseKind.AUTH:
        return "fix the API key (GEMINI_API_KEY), then run `bananabatch resume`"
    return "check the billing account, then run `bananabatch resume`"


def lift(
    rt: Runtime, kinds: Iterable[PauseKind] | None = None, *, by: str = "user"
) -> list[Reason]:
    """End the pause for `kinds` (all, by default); returns the reasons lifted. Items stay
    queued, so the next submission round (a tick) sends them."""
    wanted = set(kinds) if kinds is not None else set(PauseKind)
    now = rt.now()
    lifted: list[Reason] = []

    def fn(doc: Doc | None) -> Doc | None:
        lifted.clear()
        current = reasons(doc)
        gone = [r for k, r in current.items() if k in wanted]
        if not gone:
            return None
        lifted.extend(gone)
        out = dict(doc or {})
        out["reasons"] = {k.value: r.to_doc() for k, r in current.items() if k not in wanted}
        history = list(out.get("history") or [])
        for r in gone:
            history.append(r.to_doc() | {"kind": r.kind.value, "lifted": now.isoformat(), "by": by})
        out["history"] = history[-_HISTORY:]
        return out

    rt.state.update(PAUSE_PATH, fn)
    if lifted:
        remaining = active_reasons(rt)
        unmark_jobs(rt, lifted, still=remaining[0].describe() if remaining else None)
        log.warning(
            "submission pause lifted",
            extra={"lifted": [r.kind.value for r in lifted], "by": by},
        )
    return lifted


def lapse_expired(rt: Runtime) -> list[Reason]:
    """Lift pauses whose time has passed (a spend window), so jobs stop showing them."""
    now = rt.now()
    expired = [r.kind for r in reasons(rt.state.get(PAUSE_PATH)).values() if not r.active(now)]
    return lift(rt, expired, by="time") if expired else []


# --- jobs show the pause -------------------------------------------------------------------


def mark_paused_jobs(rt: Runtime, why: str, job_ids: Iterable[str] | None = None) -> list[str]:
    """Set `paused` on running jobs (the given ones, or all); returns the ids marked."""
    ids = list(job_ids) if job_ids is not None else [j.job_id for j in _running(rt)]
    since = rt.now().isoformat()
    return [job_id for job_id in ids if lifecycle.show_pause(rt, job_id, why, since)]


def unmark_jobs(rt: Runtime, lifted: list[Reason], *, still: str | None) -> None:
    until = rt.now().isoformat()
    for job in _running(rt):
        if job.paused is not None:
            lifecycle.clear_pause(rt, job.job_id, still=still, until=until)


def _running(rt: Runtime) -> list[JobRecord]:
    return [
        JobRecord.model_validate(doc)
        for doc in rt.state.query("jobs", [Where("state", "==", JobState.RUNNING.value)])
    ]


# --- 429s we do not recognise ----------------------------------------------------------------


def count_unknown_quota(rt: Runtime, message: str) -> None:
    """One more unrecognised 429 in a row; past `quota_alert_after`, one alert."""
    limit = rt.settings.quota_alert_after
    state: dict[str, Any] = {}

    def fn(doc: Doc | None) -> Doc | None:
        out = dict(doc or {})
        streak = int(out.get("unknown_429_streak") or 0) + 1
        out["unknown_429_streak"] = streak
        state["alert"] = streak >= limit and not out.get("unknown_429_alerted")
        state["streak"] = streak
        if state["alert"]:
            out["unknown_429_alerted"] = True
        return out

    rt.state.update(PAUSE_PATH, fn)
    if state.get("alert"):
        log.error(
            "the provider keeps refusing creates with a 429 we do not recognise",
            extra={"streak": state["streak"], "error": message},
        )
        publish_alert(
            rt,
            alerts.alert_message(
                alert="unknown_quota",
                severity="WARNING",
                reason=(
                    f"{state['streak']} batch creates in a row refused with an unrecognised "
                    f"429; backing off as for a rate limit. Last answer: {message}"
                ),
                at=rt.now(),
                paused=False,
                action="check the project's quotas and billing in AI Studio",
            ),
        )


def created_ok(rt: Runtime, gate_used: Gate) -> None:
    """A create succeeded: a probe lifts the credits pause; an unknown-429 streak ends."""
    if gate_used.probe:
        lift(rt, [PauseKind.CREDITS_DEPLETED], by="probe")
        log.warning("credits probe succeeded; submission resumes")
    doc = rt.state.get(PAUSE_PATH)
    if doc and doc.get("unknown_429_streak"):

        def reset(current: Doc | None) -> Doc | None:
            if not current or not current.get("unknown_429_streak"):
                return None
            return dict(current) | {"unknown_429_streak": 0, "unknown_429_alerted": False}

        rt.state.update(PAUSE_PATH, reset)


# --- the billing kill switch -------------------------------------------------------------------


def seen_marker(rt: Runtime, marker: str) -> bool:
    """Record `marker` (a budget period and threshold); False the first time. A Cloud
    Billing budget repeats its notification several times a day with the same threshold:
    acting once per threshold and period means `resume` is not undone half an hour later."""
    state = {"seen": True}

    def fn(doc: Doc | None) -> Doc | None:
        markers = list((doc or {}).get("billing_markers") or [])
        state["seen"] = marker in markers
        if state["seen"]:
            return None
        return dict(doc or {}) | {"billing_markers": [*markers, marker][-_MARKERS:]}

    rt.state.update(PAUSE_PATH, fn)
    return state["seen"]


def handle_budget_notification(
    rt: Runtime, attributes: Mapping[str, str], payload: Mapping[str, Any]
) -> str:
    """A Cloud Billing budget notification (schema 1.0): pause at the kill threshold, alert
    below it, once per threshold and budget period. Returns what was done, for logs/tests."""
    try:
        cost = float(payload.get("costAmount", 0.0))
        amount = float(payload.get("budgetAmount", 0.0))
        exceeded = float(payload.get("alertThresholdExceeded", 0.0) or 0.0)
    except (TypeError, ValueError):
        log.error("budget notification with unreadable amounts", extra={"payload": dict(payload)})
        return "unreadable"
    if amount > 0 and cost >= amount * BILLING_KILL_THRESHOLD:
        exceeded = max(exceeded, BILLING_KILL_THRESHOLD)
    if exceeded <= 0:
        return "below every threshold"
    budget_id = attributes.get("budgetId") or str(payload.get("budgetDisplayName") or "budget")
    period = str(payload.get("costIntervalStart") or "")
    level = BILLING_KILL_THRESHOLD if exceeded >= BILLING_KILL_THRESHOLD else exceeded
    if seen_marker(rt, f"{budget_id}|{period}|{level:g}"):
        return "already handled"
    currency = str(payload.get("currencyCode") or "USD")
    name = str(payload.get("budgetDisplayName") or budget_id)
    reason = (
        f"billing budget {name!r}: {cost:.2f} {currency} spent of {amount:.2f} {currency} "
        f"since {period or 'the start of the period'} ({exceeded:.0%} threshold crossed)"
    )
    details = {"cost": cost, "budget": amount, "threshold": exceeded, "currency": currency}
    if level >= BILLING_KILL_THRESHOLD:
        pause(rt, PauseKind.BILLING_BUDGET, reason, severity="CRITICAL", extra=details)
        return "paused"
    log.warning("billing budget threshold crossed", extra={"reason": reason})
    publish_alert(
        rt,
        alerts.alert_message(
            alert=PauseKind.BILLING_BUDGET.value,
            severity="WARNING",
            reason=reason,
            at=rt.now(),
            paused=False,
            action=f"submission pauses at {BILLING_KILL_THRESHOLD:.0%} of the budget",
            extra=details,
        ),
    )
    return "alerted"


# --- helpers ----------------------------------------------------------------------------------


def publish_alert(rt: Runtime, message: Mapping[str, Any]) -> None:
    rt.bus.publish(
        rt.settings.topic_completions,
        alerts.encode(message),
        alerts.attributes(message),
    )


def _with_reason(doc: Doc | None, reason: Reason) -> Doc:
    out = dict(doc or {})
    entries = dict(out.get("reasons") or {})
    entries[reason.kind.value] = reason.to_doc()
    out["reasons"] = entries
    return out


def _level(severity: str) -> int:
    return logging.getLevelNamesMapping().get(severity, logging.ERROR)
