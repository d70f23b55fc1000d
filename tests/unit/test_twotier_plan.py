"""What a two-tier job does next (core/twotier/plan.py)."""

from __future__ import annotations

from bananabatch.core.twotier.expand import TierLine
from bananabatch.core.twotier.plan import ItemView, plan_round
from bananabatch.core.twotier.spec import TwoTierSpec

SPEC = TwoTierSpec(final_model="gemini-3-pro-image", candidates=4, keep=1)
MANUAL = TwoTierSpec(final_model="gemini-3-pro-image", selection="manual")


def _line(key: str = "a", candidates: int = 4, keep: int = 1) -> TierLine:
    return TierLine(key=key, line_no=1, candidates=candidates, keep=keep, request={})


def _kept(key: str, score: float) -> ItemView:
    return ItemView(key, "SUCCEEDED", kept=True, score=score)


def _culled(key: str, reason: str = "blank or near-uniform") -> ItemView:
    return ItemView(key, "SUCCEEDED", kept=False, reason=reason)


def test_the_best_scoring_survivors_are_finished() -> None:
    items = [_kept("a~c1", 5.0), _culled("a~c2"), _kept("a~c3", 7.5), _kept("a~c4", 6.0)]
    plan = plan_round(SPEC, [_line(keep=2)], {"a": items}, {}, None)
    assert [(key, source) for _, key, source in plan.finals] == [
        ("a", "a~c3"),
        ("a~f2", "a~c4"),
    ]
    assert plan.outcomes["a"].state == "RUNNING"
    assert not plan.drafts
    assert not plan.failed_items


def test_a_line_with_its_finals_accepted_is_done() -> None:
    items = [_kept("a~c1", 5.0), _kept("a", 4.0)]
    plan = plan_round(SPEC, [_line()], {"a": items}, {"a": "a~c1"}, None)
    assert not plan.has_work
    assert plan.outcomes["a"].state == "SUCCEEDED"
    assert plan.outcomes["a"].accepted == ("a",)


def test_a_failed_final_is_retried_with_the_next_survivor() -> None:
    items = [_kept("a~c1", 5.0), _kept("a~c2", 4.0), ItemView("a", "FAILED")]
    plan = plan_round(SPEC, [_line()], {"a": items}, {"a": "a~c1"}, None)
    assert [(key, source) for _, key, source in plan.finals] == [("a~f2", "a~c2")]


def test_finals_stop_at_three_times_the_wanted_count() -> None:
    items = [
        _kept("a~c1", 5.0),
        ItemView("a", "FAILED"),
        _culled("a~f2"),
        ItemView("a~f3", "BLOCKED"),
    ]
    plan = plan_round(SPEC, [_line()], {"a": items}, {"a": "a~c1"}, None)
    assert not plan.has_work
    assert not plan.failed_items
    outcome = plan.outcomes["a"]
    assert outcome.state == "FAILED"
    assert (
        outcome.reason == "attempts exhausted: 0 of 1 finals accepted after 3 attempts (at most 3)"
    )


def test_a_line_whose_drafts_are_all_culled_is_drafted_again_then_fails_at_the_cap() -> None:
    line = _line(candidates=4)
    first = [_culled(f"a~c{n}") for n in range(1, 5)]
    plan = plan_round(SPEC, [line], {"a": first}, {}, None)
    assert [(ln.key, numbers) for ln, numbers in plan.drafts] == [("a", range(5, 9))]
    twelve = [_culled(f"a~c{n}", "too small: 64x64") for n in range(1, 13)]
    plan = plan_round(SPEC, [line], {"a": twelve}, {}, None)
    assert not plan.drafts
    [(_, key, reason)] = plan.failed_items
    assert key == "a"
    assert reason == (
        "attempts exhausted: none of 12 drafts (at most 12) survived the cull (too small: 64x64)"
    )
    assert plan.outcomes["a"].state == "FAILED"


def test_failed_and_blocked_drafts_do_not_survive() -> None:
    items = [ItemView("a~c1", "FAILED", reason="internal"), ItemView("a~c2", "BLOCKED")]
    plan = plan_round(SPEC, [_line(candidates=2)], {"a": items}, {}, None)
    assert [numbers for _, numbers in plan.drafts] == [range(3, 5)]


def test_nothing_is_decided_while_a_batch_still_holds_a_line() -> None:
    items = [_kept("a~c1", 5.0), ItemView("a~c2", "SUBMITTED")]
    plan = plan_round(SPEC, [_line(candidates=2)], {"a": items}, {}, None)
    assert not plan.has_work
    assert plan.outcomes["a"].state == "RUNNING"


def test_a_manual_job_waits_for_its_selection() -> None:
    items = [_kept("a~c1", 5.0), _kept("a~c2", 6.0)]
    plan = plan_round(MANUAL, [_line(candidates=2)], {"a": items}, {}, None)
    assert plan.awaiting_selection
    assert not plan.has_work


def test_a_manual_selection_finishes_exactly_the_selected_candidates_even_culled_ones() -> None:
    items = [_kept("a~c1", 5.0), _culled("a~c2"), _kept("b~c1", 1.0)]
    selection = frozenset({"a~c1", "a~c2"})
    plan = plan_round(
        MANUAL,
        [_line("a", candidates=2), _line("b", candidates=1)],
        {"a": items[:2], "b": items[2:]},
        {},
        selection,
    )
    assert sorted((key, source) for _, key, source in plan.finals) == [
        ("a", "a~c1"),
        ("a~f2", "a~c2"),
    ]
    [(_, key, reason)] = plan.failed_items
    assert (key, reason) == ("b", "no candidate of this line was selected")


def test_planning_again_after_the_finals_were_staged_adds_nothing() -> None:
    items = [_kept("a~c1", 5.0), ItemView("a", "PENDING")]
    plan = plan_round(SPEC, [_line()], {"a": items}, {"a": "a~c1"}, None)
    assert not plan.has_work
