"""A per-provider circuit breaker, as pure state transitions (issue 20 point 3). The state
lives in the state store (`breakers/{lane}`, pipeline/lanes.py), so every function
instance sees the same record of a provider's recent failures.

Closed: calls go through; the outcomes of the last WINDOW calls within RECENT are kept.
When at least MIN_CALLS of them are recorded and FAILURE_RATE or more failed, it opens.
Open: no call until `open_until`; then one caller takes the probe (half-open, a claim
with its own deadline, so a probe whose caller died is taken again later). The probe's
success closes the breaker with a clean record; its failure opens it again for twice as
long, up to MAX_OPEN.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

WINDOW: Final = 10
RECENT: Final = timedelta(minutes=5)
MIN_CALLS: Final = 3
FAILURE_RATE: Final = 0.5
FIRST_OPEN: Final = timedelta(seconds=60)
MAX_OPEN: Final = timedelta(minutes=15)
# How long a probe may take before another caller may probe instead.
PROBE_LEASE: Final = timedelta(minutes=2)


class Gate(StrEnum):
    GO = "go"  # closed: call
    PROBE = "probe"  # open, due: this caller may call once, as the probe
    SHUT = "shut"  # open: do not call


@dataclass(frozen=True)
class Breaker:
    lane: str
    # (when, ok) of the latest calls, oldest first, at most WINDOW.
    recent: tuple[tuple[datetime, bool], ...] = ()
    open_until: datetime | None = None
    open_for: timedelta = field(default=FIRST_OPEN)
    probe_until: datetime | None = None
    opened: int = 0  # how many times it opened: for logs and tests

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def gate(self, now: datetime) -> Gate:
        if self.open_until is None:
            return Gate.GO
        if now < self.open_until:
            return Gate.SHUT
        if self.probe_until is not None and now < self.probe_until:
            return Gate.SHUT  # another caller is probing
        return Gate.PROBE

    def take_probe(self, now: datetime) -> Breaker:
        return replace(self, probe_until=now + PROBE_LEASE)

    def record(self, ok: bool, now: datetime) -> Breaker:
        """The breaker after one call's outcome (`ok`: the provider answered; a content
        refusal counts as an answer)."""
        if self.open_until is not None:
            if ok:
                return Breaker(self.lane, ((now, True),), opened=self.opened)
            wait = min(self.open_for * 2, MAX_OPEN)
            return replace(self, open_until=now + wait, open_for=wait, probe_until=None)
        recent = tuple((at, good) for at, good in self.recent if now - at <= RECENT)
        recent = (*recent, (now, ok))[-WINDOW:]
        failures = sum(not good for _, good in recent)
        if len(recent) >= MIN_CALLS and failures / len(recent) >= FAILURE_RATE:
            return Breaker(
                self.lane,
                recent,
                open_until=now + FIRST_OPEN,
                open_for=FIRST_OPEN,
                opened=self.opened + 1,
            )
        return replace(self, recent=recent)

    def worth_writing(self, ok: bool) -> bool:
        """False when recording a success changes nothing worth a write: a closed breaker
        with a clean record (every success of a healthy provider would be a write to one
        document, which Firestore takes about once a second)."""
        return not ok or self.open_until is not None or any(not good for _, good in self.recent)

    # --- persistence ------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "recent": [[at.isoformat(), good] for at, good in self.recent],
            "open_until": None if self.open_until is None else self.open_until.isoformat(),
            "open_for_s": self.open_for.total_seconds(),
            "probe_until": None if self.probe_until is None else self.probe_until.isoformat(),
            "opened": self.opened,
        }

    @classmethod
    def from_doc(cls, lane: str, doc: dict[str, Any] | None) -> Breaker:
        if not doc:
            return cls(lane)
        return cls(
            lane,
            tuple((datetime.fromisoformat(at), bool(good)) for at, good in doc.get("recent", ())),
            open_until=_time(doc.get("open_until")),
            open_for=timedelta(seconds=float(doc.get("open_for_s", FIRST_OPEN.total_seconds()))),
            probe_until=_time(doc.get("probe_until")),
            opened=int(doc.get("opened", 0)),
        )


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
