"""Pytest plugin: the Google Cloud emulators as session fixtures, and the GCP adapters
wired to them as the `gcp_*_under_test` fixtures the contract suites look up.

Emulators start only when a test asks for them. Each test gets its own bucket, Firestore
project and Pub/Sub project, so tests never see each other's data. Contract tests that
cannot pass on an emulator because the emulator lacks a feature are listed in
EMULATOR_GAPS with the reason; they are reported as XFAIL [NOTRUN] on the gcp backend and
a test in tests/contract/test_gcp_specific.py covers the production behaviour instead.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final

import google.cloud.pubsub_v1 as pubsub_v1  # type: ignore[import-untyped]  # no py.typed
import google.cloud.storage as storage  # type: ignore[import-untyped]  # no py.typed
import pytest
from google.api_core.exceptions import DeadlineExceeded
from google.auth.credentials import AnonymousCredentials

from bananabatch.adapters.gcp.firestore import FirestoreStateStore, firestore_client
from bananabatch.adapters.gcp.pubsub import PubSubEventBus
from bananabatch.adapters.gcp.storage import GcsObjectStore
from bananabatch.config import Settings
from tests.contract.harness import BusUnderTest, ObjectsUnderTest, ReceivedMessage, StateUnderTest
from tests.support.emulators import (
    ENV_FIRESTORE,
    ENV_PUBSUB,
    ENV_STORAGE,
    FirestoreEmulator,
    PubSubFake,
    StorageEmulator,
)

RECEIVE_DEADLINE_S: Final = 30.0
CONTRACT_TOPIC: Final = "contract-topic"

# Contract test name -> why it cannot pass on the emulator. Each has a counterpart in
# tests/contract/test_gcp_specific.py that checks what production relies on.
EMULATOR_GAPS: Final[dict[str, str]] = {
    "test_write_bytes_if_absent_leaves_an_existing_object_alone_and_returns_false": (
        "gcp-storage-emulator ignores ifGenerationMatch, so an if_absent write overwrites; "
        "test_gcp_specific checks the adapter sends ifGenerationMatch=0 and maps 412 to False"
    ),
    "test_nested_json_values_round_trip_exactly": (
        "@firestore-emulator/server stores integers as JavaScript numbers and rejects int64 "
        "values beyond 2^53; test_gcp_specific checks their exact encoding and the rest of "
        "the document on the emulator"
    ),
    "test_exactly_one_of_many_concurrent_if_absent_writers_wins": (
        "gcp-storage-emulator ignores ifGenerationMatch, so every concurrent writer wins; "
        "test_gcp_specific checks the precondition on the wire and the 412 mapping"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulator_gap(reason): cannot pass on the GCP emulators; not run on the gcp backend",
    )


@pytest.hookimpl(tryfirst=True)  # before -m selects on the gcp marker added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "gcp" not in callspec.params.values():
            continue
        item.add_marker(pytest.mark.gcp)
        name = getattr(item, "originalname", item.name)
        reason = EMULATOR_GAPS.get(name)
        marker = item.get_closest_marker("emulator_gap")
        if marker is not None:
            reason = str(marker.args[0] if marker.args else marker.kwargs.get("reason"))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=f"emulator gap: {reason}", run=False))


# --- emulators ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def storage_emulator() -> Iterator[str]:
    """STORAGE_EMULATOR_HOST for the session's Cloud Storage emulator (set in os.environ)."""
    with StorageEmulator() as emulator, pytest.MonkeyPatch.context() as env:
        assert emulator.host is not None
        env.setenv(ENV_STORAGE, emulator.host)
        yield emulator.host


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[str]:
    """FIRESTORE_EMULATOR_HOST for the session's Firestore emulator (set in os.environ)."""
    with FirestoreEmulator() as emulator, pytest.MonkeyPatch.context() as env:
        assert emulator.host is not None
        env.setenv(ENV_FIRESTORE, emulator.host)
        yield emulator.host


@pytest.fixture(scope="session")
def pubsub_fake() -> Iterator[PubSubFake]:
    """The in-process Pub/Sub fake, whatever PUBSUB_EMULATOR_HOST says; for tests that
    inject faults. It does not touch os.environ."""
    with PubSubFake() as fake:
        yield fake


@pytest.fixture(scope="session")
def pubsub_emulator(request: pytest.FixtureRequest) -> Iterator[str]:
    """PUBSUB_EMULATOR_HOST: the one already in the environment (say, the official
    emulator in Cloud Build), or else the in-process fake."""
    preset = os.environ.get(ENV_PUBSUB)
    if preset:
        yield preset
        return
    fake: PubSubFake = request.getfixturevalue("pubsub_fake")
    assert fake.host is not None
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ENV_PUBSUB, fake.host)
        yield fake.host


@pytest.fixture
def gcp_project() -> str:
    """A project id no other test uses, which isolates Firestore and Pub/Sub data."""
    return f"bb-test-{uuid.uuid4().hex[:12]}"


# --- adapters under test ----------------------------------------------------------------


def anonymous_storage_client(project: str) -> Any:
    credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return storage.Client(project=project, credentials=credentials)


@pytest.fixture
def gcp_objects_under_test(storage_emulator: str, gcp_project: str) -> ObjectsUnderTest:
    bucket = f"contract-{uuid.uuid4().hex[:20]}"
    anonymous_storage_client(gcp_project).create_bucket(bucket)
    store = GcsObjectStore.from_settings(Settings(project=gcp_project))
    return ObjectsUnderTest(store=store, bucket=bucket)


@pytest.fixture
def gcp_state_under_test(firestore_emulator: str, gcp_project: str) -> Iterator[StateUnderTest]:
    client = firestore_client(Settings(project=gcp_project))
    yield StateUnderTest(store=FirestoreStateStore(client))
    client.close()  # type: ignore[no-untyped-call]  # untyped in the library


@pytest.fixture
def gcp_bus_under_test(pubsub_emulator: str, gcp_project: str) -> Iterator[BusUnderTest]:
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(gcp_project, CONTRACT_TOPIC)
    subscription = subscriber.subscription_path(gcp_project, "contract-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)

    def receive(count: int) -> list[ReceivedMessage]:
        return pull(subscriber, subscription, count, deadline_s=RECEIVE_DEADLINE_S)

    bus = PubSubEventBus(publisher, gcp_project)
    yield BusUnderTest(bus=bus, topic=CONTRACT_TOPIC, receive=receive)
    publisher.stop()
    subscriber.close()


def pull(
    subscriber: Any, subscription: str, count: int, *, deadline_s: float
) -> list[ReceivedMessage]:
    """Pull and acknowledge until `count` messages arrived or the deadline passed."""
    got: list[ReceivedMessage] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < count and (left := deadline - time.monotonic()) > 0:
        try:
            response = subscriber.pull(
                subscription=subscription, max_messages=count - len(got), timeout=min(left, 10.0)
            )
        except DeadlineExceeded:
            # The official emulator may hold an empty pull until the call's own deadline.
            continue
        if not response.received_messages:
            continue
        subscriber.acknowledge(
            subscription=subscription,
            ack_ids=[received.ack_id for received in response.received_messages],
        )
        got.extend(
            ReceivedMessage(bytes(r.message.data), dict(r.message.attributes))
            for r in response.received_messages
        )
    return got
