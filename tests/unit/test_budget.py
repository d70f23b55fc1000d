"""Budget accounting on the state store: reserve-then-spend per UTC day, job caps, and the
urgent lane's token bucket."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bananabatch.config import DEFAULT_DAILY_BUDGET_USD, Settings
from bananabatch.core.records import JobRecord, SourceObject
from bananabatch.core.states import JobState
from bananabatch.errors import PermanentError
from bananabatch.pipeline import budget
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.urgent import TokenBucket
from bananabatch.wiring import build_runtime

DAY = "2026-11-21"
NOW = datetime(2026, 11, 21, 23, 59, tzinfo=UTC)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return build_runtime(Settings(local_root=tmp_path), with_provider=False)


def _job(options: dict[str, str] | None = None) -> JobRecord:
    return JobRecord(
        job_id="j",
        state=JobState.RECEIVED,
        source=SourceObject(bucket="inbox", name="j.jsonl", generation="1"),
        created_at=NOW,
        updated_at=NOW,
        default_model="gemini-3.1-flash-image",
        results_prefix="x/",
        options=options or {},
    )


def test_the_budget_day_is_the_utc_date() -> None:
    assert budget.budget_day(NOW) == DAY


def test_concurrent_reservations_never_exceed_the_daily_cap_together(rt: Runtime) -> None:
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def one(n: int) -> None:
        start.wait()
        ok, _ = budget.reserve(rt, f"job-{n}", 1.0, day=DAY, cap=7.5)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 7
    assert budget.day_totals(rt, DAY).committed_usd == pytest.approx(7.0)


def test_a_redelivered_reservation_is_counted_once(rt: Runtime) -> None:
    assert budget.reserve(rt, "j", 2.0, day=DAY, cap=3.0)[0]
    assert budget.reserve(rt, "j", 2.0, day=DAY, cap=3.0)[0]
    assert budget.day_totals(rt, DAY).reserved_usd == pytest.approx(2.0)


def test_settling_turns_the_reservation_into_the_actual_spend(rt: Runtime) -> None:
    budget.reserve(rt, "j", 2.0, day=DAY, cap=None)
    job = _job().model_copy(update={"budget_day": DAY})
    budget.settle(rt, job, 0.5)
    budget.settle(rt, job, 0.5)
    totals = budget.day_totals(rt, DAY)
    assert (totals.reserved_usd, totals.spent_usd) == (0.0, 0.5)


def test_object_metadata_can_lower_the_configured_job_cap_but_never_raise_it() -> None:
    # Anyone who may write the inbox sets metadata: a million must not beat the operator's 25.
    assert budget.job_cap(_job({"bananabatch-budget-usd": "1000000"}), 25.0)[0] == 25.0
    assert budget.job_cap(_job({"bananabatch-budget-usd": "1.5"}), 9.0)[0] == 1.5
    assert budget.job_cap(_job({"bananabatch-budget-usd": "9"}), 9.0)[0] == 9.0
    assert budget.job_cap(_job(), 9.0) == (9.0, "BANANABATCH_JOB_BUDGET_USD")
    assert budget.job_cap(_job(), None)[0] is None
    # Without a configured job cap, metadata is the only cap (and only lowers "none").
    assert budget.job_cap(_job({"bananabatch-budget-usd": "2"}), None)[0] == 2.0


def test_admit_holds_a_job_whose_metadata_tries_to_raise_the_operators_cap(
    tmp_path: Path,
) -> None:
    rt = build_runtime(Settings(local_root=tmp_path, job_budget_usd=25.0), with_provider=False)
    rt.clock = lambda: NOW
    reason, _ = budget.admit(rt, _job({"bananabatch-budget-usd": "1000000"}), 30.0)
    assert reason is not None
    assert "exceeds the job budget $25.0000 (BANANABATCH_JOB_BUDGET_USD" in reason


def test_the_reservation_carries_the_safety_margin_over_the_estimate(tmp_path: Path) -> None:
    rt = build_runtime(
        Settings(local_root=tmp_path, daily_budget_usd=1.0, budget_margin=0.1),
        with_provider=False,
    )
    rt.clock = lambda: NOW
    assert budget.admit(rt, _job(), 0.5) == (None, DAY)
    assert budget.day_totals(rt, DAY).reserved_usd == pytest.approx(0.55)
    # A cap set exactly at the estimate no longer admits it: the actual may run over it.
    exact = _job().model_copy(update={"job_id": "exact"})
    reason, _ = budget.admit(rt, exact, 0.45)
    assert reason is not None
    assert "$0.4950 with the 10% margin" in reason


def test_a_deployment_without_a_daily_budget_gets_the_default_and_unlimited_is_spelled_out() -> (
    None
):
    assert Settings().daily_budget_usd == DEFAULT_DAILY_BUDGET_USD
    assert Settings.from_env({}).daily_budget_usd == DEFAULT_DAILY_BUDGET_USD
    assert Settings.from_env({"BANANABATCH_DAILY_BUDGET_USD": ""}).daily_budget_usd == 10.0
    unlimited = Settings.from_env({"BANANABATCH_DAILY_BUDGET_USD": "unlimited"})
    assert unlimited.daily_budget_usd is None
    # Handing settings on keeps "no cap" as "no cap", not as "the default".
    assert Settings.from_env(unlimited.to_env()).daily_budget_usd is None


def test_an_unreadable_budget_in_object_metadata_names_the_key_and_the_value() -> None:
    with pytest.raises(PermanentError, match=r"job j: object metadata bananabatch-budget-usd.*'x'"):
        budget.job_cap(_job({"bananabatch-budget-usd": "x"}), None)


def test_admit_holds_a_job_over_its_own_cap_without_reserving(rt: Runtime) -> None:
    rt.clock = lambda: NOW
    reason, day = budget.admit(rt, _job({"bananabatch-budget-usd": "0.01"}), 0.02)
    assert reason is not None
    assert "exceeds the job budget $0.0100" in reason
    assert budget.day_totals(rt, day).committed_usd == 0.0


def test_admit_holds_a_job_that_would_take_the_day_over_the_daily_cap(tmp_path: Path) -> None:
    rt = build_runtime(Settings(local_root=tmp_path, daily_budget_usd=1.0), with_provider=False)
    rt.clock = lambda: NOW
    budget.reserve(rt, "earlier", 0.88, day=DAY, cap=None)
    reason, _ = budget.admit(rt, _job(), 0.2)
    assert reason is not None
    assert "over the daily budget $1.0000" in reason
    assert budget.admit(rt, _job(), 0.1) == (None, DAY)


def test_the_token_bucket_allows_a_burst_then_paces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(2.0, 3, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        bucket.acquire()
    assert slept == []
    bucket.acquire()
    assert slept == [pytest.approx(0.5)]
