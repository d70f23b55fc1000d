"""The emulator base every emulator builds on (emulator/base/): the webhook outbox's faults,
the clock-driven lifecycle of submitted work with its control API, and the ledger of
accepted requests the fault matrix reads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bananabatch.emulator.base.outbox import Pending, WebhookFaults, WebhookOutbox
from bananabatch.emulator.base.state import (
    FINISHED,
    PENDING,
    Accepted,
    EmulatorStateBase,
    ManualClock,
)
from bananabatch.emulator.faults import FaultPlan


@dataclass
class _Config:
    pending_seconds: float = 1.0
    running_seconds: float = 2.0
    faults: FaultPlan = field(default_factory=FaultPlan)
    clock: Callable[[], float] = field(default_factory=ManualClock)
    workdir: Path | None = None


@dataclass
class _Work:
    work_id: str
    seq: int
    created: float
    stuck: bool = False
    forced: int = PENDING
    status: str = "pending"
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def terminal(self) -> bool:
        return self.status == "done"


class _State(EmulatorStateBase[_Config, _Work]):
    def __init__(self, config: _Config) -> None:
        super().__init__(config, prefix="bananabatch-base-", subdirs=("things",))
        self.webhooks = WebhookOutbox()

    def submit(self, name: str, keys: list[str]) -> _Work:
        with self._lock:
            work = _Work(name, next(self._seq), self.now(), stuck=self.faults.is_stuck(name))
            self._works[name] = work
            self.accepted.extend(Accepted(name, name, key) for key in keys)
        return work

    def handle(self, work: _Work) -> str:
        return work.work_id

    def _work(self, handle: str) -> _Work:
        return self._works[handle]

    def get_work(self, handle: str) -> _Work:
        work = self._works[handle]
        stage = self._stage(work, self.now())
        work.status = ("pending", "running", "done")[stage]
        return work

    def status_of(self, work: _Work) -> str:
        return work.status


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def state(clock: ManualClock) -> Iterator[_State]:
    made = _State(_Config(clock=clock))
    yield made
    made.close()


def test_work_moves_by_the_clock_and_the_control_api_forces_it_one_stage_at_a_time(
    state: _State, clock: ManualClock
) -> None:
    state.submit("w1", ["a"])
    assert state.batch_state("w1") == "pending"
    clock.advance(1.0)
    assert state.batch_state("w1") == "running"
    state.submit("w2", ["b"])
    assert state.advance("w2") == "running"
    assert state.advance("w2") == "done"
    assert state.complete_all() == ["w1"]
    assert state.batch_names() == ["w1", "w2"]


def test_stuck_work_never_finishes_by_the_clock_only_by_the_control_api(
    state: _State, clock: ManualClock
) -> None:
    state.faults.stick("slow-*")
    state.submit("slow-1", [])
    clock.advance(10 * 365 * 24 * 3600)
    assert state.batch_state("slow-1") == "running"
    assert state.complete("slow-1") == "done"
    assert state._works["slow-1"].forced == FINISHED


def test_the_ledger_counts_each_accepted_key_per_prefix(state: _State) -> None:
    state.submit("job-a-1", ["k1", "k2"])
    state.submit("job-a-2", ["k2"])
    state.submit("job-b-1", ["k1"])
    assert state.submitted_keys("job-a-") == {"k1": 1, "k2": 2}
    assert state.duplicate_keys("job-a-") == ["k2"]
    assert state.duplicate_keys("job-b-") == []


def test_the_work_directory_is_made_and_removed_only_when_the_state_made_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    made = _State(_Config(clock=clock))
    assert (made.workdir / "things").is_dir()
    made.close()
    assert not made.workdir.exists()
    given = _State(_Config(clock=clock, workdir=tmp_path / "kept"))
    given.close()
    assert (tmp_path / "kept" / "things").is_dir()


def _outbox(sent: list[str]) -> WebhookOutbox:
    def sender(uri: str, headers: Mapping[str, str], body: bytes) -> int:
        sent.append(body.decode())
        return 204

    return WebhookOutbox(sender=sender)


def _pending(n: int) -> Pending:
    return Pending("http://127.0.0.1:9/hook", {"webhook-id": f"msg_{n}"}, str(n).encode())


def test_outbox_faults_drop_then_duplicate_then_hold_one_delivery_each_in_that_order() -> None:
    sent: list[str] = []
    outbox = _outbox(sent)
    outbox.faults = WebhookFaults(drop=1, duplicate=1, delay=1)
    outbox.enqueue(_pending(n) for n in range(4))
    assert outbox.pending_count() == 4  # "1" twice, "2" held, "3"
    assert outbox.flush() == [204, 204, 204]
    assert sent == ["1", "1", "3"]
    assert outbox.release() == 1
    assert outbox.flush() == [204]
    assert sent[-1] == "2"
    assert [status for _, status in outbox.delivered] == [204] * 4
    assert outbox.pending_count() == 0


def test_nothing_leaves_the_outbox_until_flush() -> None:
    sent: list[str] = []
    outbox = _outbox(sent)
    outbox.enqueue([_pending(1)])
    assert sent == []
    outbox.flush()
    assert sent == ["1"]
