"""What a two-tier job does next, from what its items say. Pure.

Called whenever the job has no batch open (pipeline/twotier.py): the drafts of a round are
all collected, or the finals are. For each line it decides one of:
- done: `keep` finals accepted (delivered and not culled), or the line ended FAILED;
- more drafts: no candidate survived the cull and the line's drafts are under their cap;
- finals: the best-scoring unused survivors (or the person's selection) on the final model;
- FAILED: its attempts are exhausted (at most ATTEMPT_FACTOR x the wanted count per loop:
  drafts against `candidates`, finals against `keep`), with the reason.
A job in manual selection waits after its drafts until a selection exists.

Every decision is a function of the items (and the selection), so planning again after a
crash decides the same; new keys are numbered after the line's existing ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from bananabatch.core.twotier.expand import TierLine
from bananabatch.core.twotier.spec import (
    ATTEMPT_FACTOR,
    TwoTierSpec,
    candidate_number,
    final_key,
    final_number,
)

DELIVERED: Final = frozenset({"SUCCEEDED", "CACHED"})
ENDED: Final = frozenset({"SUCCEEDED", "CACHED", "FAILED", "BLOCKED", "REJECTED"})


@dataclass(frozen=True, slots=True)
class ItemView:
    """What planning needs of one item: its state, and for a delivered image the cull's
    verdict on it (kept, score, reason)."""

    key: str
    state: str
    kept: bool | None = None
    score: float = 0.0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LineOutcome:
    key: str
    state: str  # "SUCCEEDED", "FAILED", or "RUNNING" (more work planned or awaited)
    accepted: tuple[str, ...] = ()
    reason: str | None = None
    drafts: int = 0
    survivors: int = 0
    finals: int = 0


@dataclass
class RoundPlan:
    # (line, candidate numbers) to draft now
    drafts: list[tuple[TierLine, range]] = field(default_factory=list)
    # (line, final key, candidate key) to finish now
    finals: list[tuple[TierLine, str, str]] = field(default_factory=list)
    # (line, key, reason): lines that end FAILED without any final item: one is made
    failed_items: list[tuple[TierLine, str, str]] = field(default_factory=list)
    outcomes: dict[str, LineOutcome] = field(default_factory=dict)
    awaiting_selection: bool = False

    @property
    def has_work(self) -> bool:
        return bool(self.drafts or self.finals)

    @property
    def done(self) -> bool:
        return not self.has_work and not self.awaiting_selection and not self.failed_items


@dataclass(frozen=True, slots=True)
class _Line:
    candidates: list[tuple[int, ItemView]]
    finals: list[tuple[int, ItemView]]


def _split(line: TierLine, items: Iterable[ItemView]) -> _Line:
    candidates: list[tuple[int, ItemView]] = []
    finals: list[tuple[int, ItemView]] = []
    for item in items:
        n = candidate_number(item.key, line.key)
        if n is not None:
            candidates.append((n, item))
            continue
        n = final_number(item.key, line.key)
        if n is not None:
            finals.append((n, item))
    candidates.sort(key=lambda pair: pair[0])
    finals.sort(key=lambda pair: pair[0])
    return _Line(candidates, finals)


def plan_round(
    spec: TwoTierSpec,
    lines: Iterable[TierLine],
    items_by_line: Mapping[str, list[ItemView]],
    final_sources: Mapping[str, str],
    selection: frozenset[str] | None,
) -> RoundPlan:
    """The next round: items_by_line maps each line key to its items (candidates and
    finals); final_sources maps each final key to the candidate it finished."""
    plan = RoundPlan()
    for line in lines:
        parts = _split(line, items_by_line.get(line.key, []))
        _plan_line(spec, line, parts, final_sources, selection, plan)
    return plan


def _accepted(item: ItemView) -> bool:
    return item.state in DELIVERED and item.kept is not False


def _plan_line(  # noqa: C901 - one decision per branch, in the order of the docstring
    spec: TwoTierSpec,
    line: TierLine,
    parts: _Line,
    final_sources: Mapping[str, str],
    selection: frozenset[str] | None,
    plan: RoundPlan,
) -> None:
    drafts = len(parts.candidates)
    survivors = sorted(
        (item for _, item in parts.candidates if _accepted(item) and item.kept is True),
        key=lambda item: (-item.score, candidate_number(item.key, line.key) or 0),
    )
    accepted = tuple(item.key for _, item in parts.finals if _accepted(item))
    finals_made = len(parts.finals)

    def outcome(state: str, reason: str | None = None) -> None:
        plan.outcomes[line.key] = LineOutcome(
            line.key,
            state,
            accepted,
            reason,
            drafts=drafts,
            survivors=len(survivors),
            finals=finals_made,
        )

    if any(item.state not in ENDED for _, item in parts.candidates + parts.finals):
        outcome("RUNNING")  # a batch still holds some of it: nothing to decide yet
        return
    if spec.selection == "manual":
        if selection is None:
            plan.awaiting_selection = True
            outcome("RUNNING", "waiting for a selection (bananabatch select)")
            return
        pool = [
            item.key
            for _, item in parts.candidates
            if item.key in selection and item.state in DELIVERED
        ]
        wanted = len(pool)
        if not pool:
            _fail(plan, line, parts, "no candidate of this line was selected", outcome)
            return
    else:
        wanted = line.keep
        pool = [item.key for item in survivors]
    if len(accepted) >= wanted:
        outcome("SUCCEEDED")
        return
    cap_finals = ATTEMPT_FACTOR * wanted
    if not pool:
        cap_drafts = ATTEMPT_FACTOR * line.candidates
        if drafts < cap_drafts:
            more = min(line.candidates, cap_drafts - drafts)
            plan.drafts.append((line, range(drafts + 1, drafts + 1 + more)))
            outcome("RUNNING", "no candidate survived the cull: drafting again")
            return
        reasons = sorted({item.reason for _, item in parts.candidates if item.reason})
        _fail(
            plan,
            line,
            parts,
            f"attempts exhausted: none of {drafts} drafts (at most {cap_drafts}) survived the cull"
            + (f" ({'; '.join(reasons[:3])})" if reasons else ""),
            outcome,
        )
        return
    if finals_made >= cap_finals:
        _fail(
            plan,
            line,
            parts,
            f"attempts exhausted: {len(accepted)} of {wanted} finals accepted after "
            f"{finals_made} attempts (at most {cap_finals})",
            outcome,
        )
        return
    used = {final_sources.get(key) for _, key in ((n, i.key) for n, i in parts.finals)}
    # Unused candidates first (best first); then the best again, for a final that failed.
    order = [key for key in pool if key not in used] + list(pool)
    # A selected candidate already finished and accepted is not finished twice.
    done_sources = {final_sources.get(key) for key in accepted}
    order = [key for key in order if key not in done_sources] or order
    needed = min(wanted - len(accepted), cap_finals - finals_made)
    for slot in range(needed):
        n = finals_made + slot + 1
        plan.finals.append((line, final_key(line.key, n), order[slot % len(order)]))
    finals_made += needed
    outcome("RUNNING")


def _fail(plan: RoundPlan, line: TierLine, parts: _Line, reason: str, outcome: object) -> None:
    if not parts.finals:
        plan.failed_items.append((line, final_key(line.key, 1), reason))
    assert callable(outcome)
    outcome("FAILED", reason)
