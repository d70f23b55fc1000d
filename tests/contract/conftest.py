"""One fixture per port, parametrised over BACKENDS.

"local" is built here. Any other backend name `x` is looked up as the fixtures
`x_objects_under_test`, `x_state_under_test` and `x_bus_under_test`, defined by a plugin
that knows how to start that backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bananabatch.adapters.local.bus import InProcessBus
from bananabatch.adapters.local.objects import FolderObjectStore
from bananabatch.adapters.local.state import SqliteStateStore
from tests.contract.harness import (
    BusUnderTest,
    ObjectsUnderTest,
    ReceivedMessage,
    StateUnderTest,
)

BACKENDS = ["local", "gcp"]

RECEIVE_DEADLINE_S = 30.0


@pytest.fixture(params=BACKENDS)
def objects_under_test(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectsUnderTest:
    if request.param == "local":
        store = FolderObjectStore(tmp_path / "objects")
        store.ensure_bucket("contract-bucket")
        return ObjectsUnderTest(store=store, bucket="contract-bucket")
    fixture: ObjectsUnderTest = request.getfixturevalue(f"{request.param}_objects_under_test")
    return fixture


@pytest.fixture(params=BACKENDS)
def state_under_test(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateUnderTest]:
    if request.param == "local":
        store = SqliteStateStore(tmp_path / "state.sqlite3")
        yield StateUnderTest(store=store)
        store.close()
        return
    fixture: StateUnderTest = request.getfixturevalue(f"{request.param}_state_under_test")
    yield fixture


@pytest.fixture(params=BACKENDS)
def bus_under_test(request: pytest.FixtureRequest) -> BusUnderTest:
    if request.param == "local":
        bus = InProcessBus()
        bus.create_subscription("contract-sub", "contract-topic")

        def receive(count: int) -> list[ReceivedMessage]:
            got: list[ReceivedMessage] = []
            deadline = time.monotonic() + RECEIVE_DEADLINE_S
            while len(got) < count and (left := deadline - time.monotonic()) > 0:
                for message in bus.pull("contract-sub", count - len(got), timeout=left):
                    got.append(ReceivedMessage(message.data, message.attributes))
            return got

        return BusUnderTest(bus=bus, topic="contract-topic", receive=receive)
    fixture: BusUnderTest = request.getfixturevalue(f"{request.param}_bus_under_test")
    return fixture
