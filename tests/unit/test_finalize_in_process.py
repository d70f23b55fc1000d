"""Two threads of one process closing the same job (the local runner's ticker beside its
drain, a function instance serving both): the tick leaves the job to a live collector, a
collector runs after a live tick, and neither ever waits for itself.

The closing itself (_finalize_job_if_done) is replaced by a recorder that can be held open,
so these run without a store; the stores' own behaviour is in the fault-matrix suites.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from bananabatch.pipeline import finalize, live_closing
from bananabatch.pipeline.live_closing import WhenLive


@dataclass
class Recorder:
    """Stands in for the closing: records who entered and left, and holds a caller open
    until released."""

    events: list[str] = field(default_factory=list)
    hold: dict[str, threading.Event] = field(default_factory=dict)
    entered: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self, rt: Any, job_id: str) -> str:
        name = threading.current_thread().name
        with self.lock:
            self.events.append(f"{name} in")
        self.entered.setdefault(name, threading.Event()).set()
        if name in self.hold:
            self.hold[name].wait()
        with self.lock:
            self.events.append(f"{name} out")
        return f"closed by {name}"


def _runtime() -> Any:
    return SimpleNamespace(state=object(), repo=SimpleNamespace(require_job=lambda j: "as is"))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    monkeypatch.setattr(finalize, "_finalize_job_if_done", rec.close)
    yield rec
    for event in rec.hold.values():
        event.set()


def _close(rt: Any, job_id: str, when: WhenLive) -> object:
    return finalize.finalize_job_if_done(rt, job_id, when_live=when)


def _start(name: str, rt: Any, when: WhenLive, out: dict[str, object]) -> threading.Thread:
    def run() -> None:
        out[name] = _close(rt, "job-1", when)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _held_open(
    recorder: Recorder, name: str, rt: Any, when: WhenLive, out: dict[str, object]
) -> threading.Thread:
    """A thread inside its closing of job-1, held there until recorder.hold[name] is set."""
    recorder.hold[name] = threading.Event()
    recorder.entered[name] = threading.Event()
    thread = _start(name, rt, when, out)
    recorder.entered[name].wait()
    return thread


def test_the_tick_leaves_a_job_to_a_collector_closing_it_in_this_process(
    recorder: Recorder,
) -> None:
    rt, out = _runtime(), dict[str, object]()
    collector = _held_open(recorder, "collector", rt, WhenLive.WAIT, out)

    # The tick's repair meets the live closing: it returns the job as stored, untouched.
    assert _close(rt, "job-1", WhenLive.SKIP) == "as is"

    recorder.hold["collector"].set()
    collector.join()
    assert recorder.events == ["collector in", "collector out"]
    assert out["collector"] == "closed by collector"


def test_a_collector_closes_the_job_only_after_a_live_tick_is_done(recorder: Recorder) -> None:
    rt, out = _runtime(), dict[str, object]()
    tick = _held_open(recorder, "tick", rt, WhenLive.SKIP, out)

    collector = _start("collector", rt, WhenLive.WAIT, out)
    collector.join(timeout=0.2)
    # Still waiting for the tick (a collector that did not wait would have closed by now,
    # as nothing holds it): it never skips, its batch may be the one that ends the job.
    assert collector.is_alive()
    assert recorder.events == ["tick in"]

    recorder.hold["tick"].set()
    tick.join()
    collector.join()
    assert recorder.events == ["tick in", "tick out", "collector in", "collector out"]
    assert out == {"tick": "closed by tick", "collector": "closed by collector"}


def test_a_closing_never_waits_for_its_own_thread_further_up_the_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, depth = _runtime(), []

    def close(rt: Any, job_id: str) -> str:
        depth.append(job_id)
        if len(depth) == 1:
            # A closing that, on its way, collects and closes the same job again.
            return str(_close(rt, job_id, WhenLive.WAIT))
        return "inner"

    monkeypatch.setattr(finalize, "_finalize_job_if_done", close)
    assert _close(rt, "job-1", WhenLive.WAIT) == "inner"
    assert depth == ["job-1", "job-1"]


def test_closings_of_other_jobs_or_other_stores_do_not_meet(recorder: Recorder) -> None:
    rt, out = _runtime(), dict[str, object]()
    collector = _held_open(recorder, "collector", rt, WhenLive.WAIT, out)

    # Another job of the same store, and the same job id in another store (a second stack
    # in one test process), each close at once.
    assert _close(rt, "job-2", WhenLive.SKIP) == "closed by MainThread"
    assert _close(_runtime(), "job-1", WhenLive.SKIP) == "closed by MainThread"

    recorder.hold["collector"].set()
    collector.join()
    assert not live_closing._live, "every closing leaves the registry"


def test_a_failed_closing_leaves_the_job_to_the_next_finalizer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt = _runtime()

    def fail(rt: Any, job_id: str) -> str:
        raise RuntimeError("store down")

    monkeypatch.setattr(finalize, "_finalize_job_if_done", fail)
    with pytest.raises(RuntimeError):
        _close(rt, "job-1", WhenLive.WAIT)
    # Nothing is left registered, so the tick's next repair is not skipped.
    assert not live_closing._live
    monkeypatch.setattr(finalize, "_finalize_job_if_done", lambda rt, job_id: "repaired")
    assert _close(rt, "job-1", WhenLive.SKIP) == "repaired"
