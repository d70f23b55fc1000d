"""Behaviour only the Google Cloud adapters have, checked against the emulators.

Where an emulator cannot give the answer production relies on (a 412 from a generation
precondition, a 503, an ABORTED commit), a proxy between the unmodified client library and
the emulator records what the library sends and answers chosen calls itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1  # type: ignore[import-untyped]  # no py.typed
import grpc  # type: ignore[import-untyped]  # grpcio ships no type information
import pytest
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import BeginTransactionRequest, CommitRequest

from bananabatch.adapters.gcp import firestore as firestore_adapter
from bananabatch.adapters.gcp.firestore import TRANSACTION_ATTEMPTS, FirestoreStateStore
from bananabatch.adapters.gcp.pubsub import PubSubEventBus
from bananabatch.adapters.gcp.storage import GcsObjectStore
from bananabatch.config import Settings
from bananabatch.errors import ConfigError, NotFound, PermanentError, TransientError
from bananabatch.ports import Doc, Where
from tests.support import emulators
from tests.support.emulators import (
    ENV_FIRESTORE,
    ENV_PUBSUB,
    ENV_STORAGE,
    GrpcFaultProxy,
    HttpFaultProxy,
    PubSubFake,
    RecordedRequest,
)
from tests.support.gcp_plugin import anonymous_storage_client, pull

pytestmark = pytest.mark.gcp

MIB = 1024 * 1024
DEADLINE_S = 30.0


# --- Cloud Storage ----------------------------------------------------------------------


@pytest.fixture
def gcs_proxy(storage_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpFaultProxy]:
    """A recording proxy in front of the storage emulator; clients built inside the test
    talk to the proxy."""
    with HttpFaultProxy(storage_emulator) as proxy:
        assert proxy.url is not None
        monkeypatch.setenv(ENV_STORAGE, proxy.url)
        yield proxy


@pytest.fixture
def bucket(storage_emulator: str, gcp_project: str) -> str:
    name = f"gcp-specific-{gcp_project}"
    anonymous_storage_client(gcp_project).create_bucket(name)
    return name


def _store(project: str, **kwargs: Any) -> GcsObjectStore:
    return GcsObjectStore(anonymous_storage_client(project), **kwargs)


def _uploads(proxy: HttpFaultProxy) -> list[RecordedRequest]:
    return [r for r in proxy.requests if r.path.startswith("/upload/")]


def test_an_if_absent_write_carries_a_generation_zero_precondition(
    gcs_proxy: HttpFaultProxy, bucket: str, gcp_project: str
) -> None:
    store = _store(gcp_project)
    assert store.write_bytes(bucket, "lock", b"1", content_type="text/plain", if_absent=True)
    store.write_bytes(bucket, "plain", b"2", content_type="text/plain")

    conditional, unconditional = _uploads(gcs_proxy)
    assert conditional.query.get("ifGenerationMatch") == ["0"]
    assert "ifGenerationMatch" not in unconditional.query


def test_an_if_absent_write_answered_412_returns_false_and_changes_nothing(
    gcs_proxy: HttpFaultProxy, bucket: str, gcp_project: str
) -> None:
    store = _store(gcp_project)
    store.write_bytes(bucket, "once.txt", b"first", content_type="text/plain")
    # What Cloud Storage answers when generation 0 is required and the object exists.
    gcs_proxy.answer(lambda r: r.query.get("ifGenerationMatch") == ["0"], 412)

    created = store.write_bytes(
        bucket, "once.txt", b"second", content_type="text/plain", if_absent=True
    )

    assert created is False
    assert store.read_bytes(bucket, "once.txt") == b"first"


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_overload_and_server_errors_surface_as_transient_errors(
    gcs_proxy: HttpFaultProxy, bucket: str, gcp_project: str, status: int
) -> None:
    # Without the library's retry, the first error reaches the adapter's mapping.
    store = _store(gcp_project, retry=None)
    store.write_bytes(bucket, "x.txt", b"x", content_type="text/plain")
    gcs_proxy.answer(lambda r: True, status, times=None)

    with pytest.raises(TransientError, match=f"gs://{bucket}/x.txt"):
        store.read_bytes(bucket, "x.txt")
    with pytest.raises(TransientError):
        store.write_bytes(bucket, "y.txt", b"y", content_type="text/plain")
    with pytest.raises(TransientError):
        store.stat(bucket, "x.txt")
    with pytest.raises(TransientError):
        list(store.list(bucket))


def test_a_refusal_surfaces_as_a_permanent_error_that_is_not_not_found(
    gcs_proxy: HttpFaultProxy, bucket: str, gcp_project: str
) -> None:
    store = _store(gcp_project, retry=None)
    gcs_proxy.answer(lambda r: True, 403, message="caller lacks storage.objects.get", times=None)

    with pytest.raises(PermanentError, match="refused") as caught:
        store.read_bytes(bucket, "x.txt")
    assert not isinstance(caught.value, NotFound | TransientError)


def test_open_read_fetches_a_large_object_in_bounded_ranges(
    gcs_proxy: HttpFaultProxy, bucket: str, gcp_project: str
) -> None:
    chunk = MIB
    size = 5 * MIB + 17
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    store = _store(gcp_project, chunk_size=chunk)
    store.write_bytes(bucket, "big.bin", data, content_type="application/octet-stream")
    del gcs_proxy.requests[:]

    got = bytearray()
    with store.open_read(bucket, "big.bin") as stream:
        while piece := stream.read(64 * 1024):
            got += piece

    assert bytes(got) == data
    downloads = [r for r in gcs_proxy.requests if "alt" in r.query]
    info = store.stat(bucket, "big.bin")
    assert info is not None
    # Every range comes from the generation seen at open, so an overwrite mid-read fails
    # instead of splicing two versions together.
    assert {tuple(r.query.get("generation", [])) for r in downloads} == {(info.generation,)}
    ranges = [r.headers.get("range", "") for r in downloads]
    assert len(ranges) >= size // chunk
    for header in ranges:
        first, last = header.removeprefix("bytes=").split("-")
        assert last, f"an open-ended download would fetch the rest whole: {header}"
        assert int(last) - int(first) + 1 <= chunk + 1


def test_open_write_uploads_a_large_object_in_resumable_chunks(
    gcs_proxy: HttpFaultProxy, bucket: str, gcp_project: str
) -> None:
    chunk = 256 * 1024
    store = _store(gcp_project, chunk_size=chunk)
    with store.open_write(bucket, "big.bin", content_type="application/octet-stream") as sink:
        for _ in range(5):
            sink.write(b"z" * 200_000)

    puts = [r for r in _uploads(gcs_proxy) if r.method == "PUT"]
    assert len(puts) >= 1_000_000 // chunk
    assert all(len(r.body) <= chunk for r in puts)
    info = store.stat(bucket, "big.bin")
    assert info is not None
    assert info.size == 1_000_000


def test_open_write_that_raises_after_a_chunk_went_out_cancels_the_upload(
    gcs_proxy: HttpFaultProxy, bucket: str, gcp_project: str
) -> None:
    chunk = 256 * 1024
    store = _store(gcp_project, chunk_size=chunk)

    def write_then_fail() -> None:
        with store.open_write(
            bucket, "doomed.bin", content_type="application/octet-stream"
        ) as sink:
            sink.write(b"z" * (chunk + 1))
            assert [r for r in _uploads(gcs_proxy) if r.method == "PUT"], "a chunk was sent"
            raise RuntimeError("caller failed")

    with pytest.raises(RuntimeError, match="caller failed"):
        write_then_fail()

    assert [r for r in _uploads(gcs_proxy) if r.method == "DELETE"], "session cancelled"
    assert store.stat(bucket, "doomed.bin") is None


# --- Firestore --------------------------------------------------------------------------


@pytest.fixture
def firestore_proxy(
    firestore_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GrpcFaultProxy]:
    with GrpcFaultProxy(firestore_emulator) as proxy:
        assert proxy.host is not None
        monkeypatch.setenv(ENV_FIRESTORE, proxy.host)
        yield proxy


@pytest.fixture
def state(firestore_emulator: str, gcp_project: str) -> FirestoreStateStore:
    return FirestoreStateStore.from_settings(Settings(project=gcp_project))


@pytest.fixture
def proxied_state(firestore_proxy: GrpcFaultProxy, gcp_project: str) -> FirestoreStateStore:
    return FirestoreStateStore.from_settings(Settings(project=gcp_project))


def test_integers_beyond_2_53_reach_firestore_as_exact_int64() -> None:
    # The emulator keeps JavaScript numbers and cannot store these; check the encoding the
    # library sends and decodes, through the adapter's own conversions.
    doc = {"big": 2**53 + 1, "max": 2**63 - 1, "min": -(2**63)}
    encoded = _helpers.encode_dict(firestore_adapter._to_firestore(doc, "jobs/j1"))
    assert encoded["big"].integer_value == 2**53 + 1
    decoded = firestore_adapter._from_firestore(_helpers.decode_dict(encoded, client=None))
    assert decoded == doc
    assert all(type(value) is int for value in decoded.values())


def test_nested_json_values_round_trip_on_the_emulator(state: FirestoreStateStore) -> None:
    # The contract's document, without the integer above 2^53 the emulator cannot hold.
    doc = {
        "text": 'ünïcode ✓ "quoted" \n newline',
        "int": 3,
        "negative": -17,
        "float": 0.1,
        "whole_float": 2.0,
        "tiny": 1e-300,
        "true": True,
        "none": None,
        "list": [1, "two", 3.5, None, False, {"k": ["v"]}],
        "map": {"inner": {"deeper": {"x": [1.25, "y"]}}, "empty_map": {}, "empty_list": []},
        "dotted.key": "kept",
    }
    state.set("jobs/j1/items/k1", doc)
    got = state.get("jobs/j1/items/k1")
    assert got == doc
    assert got is not None
    assert type(got["whole_float"]) is float


def test_update_reads_and_commits_inside_one_transaction(
    proxied_state: FirestoreStateStore, firestore_proxy: GrpcFaultProxy
) -> None:
    proxied_state.set("counters/c", {"n": 1})
    proxied_state.update("counters/c", lambda doc: {"n": (doc or {"n": 0})["n"] + 1})

    [begin] = firestore_proxy.requests("BeginTransaction")
    commits = [CommitRequest.deserialize(raw) for raw in firestore_proxy.requests("Commit")]
    transactional = [c for c in commits if c.transaction]
    assert len(transactional) == 1
    # A read-write transaction (no read-only option) whose read and write share its id.
    assert not BeginTransactionRequest.deserialize(begin).options.read_only
    assert transactional[0].writes[0].update.fields["n"].integer_value == 2
    assert not transactional[0].writes[0].update_mask.field_paths
    assert proxied_state.get("counters/c") == {"n": 2}


def test_update_reruns_fn_on_a_fresh_read_when_its_commit_is_aborted(
    proxied_state: FirestoreStateStore, firestore_proxy: GrpcFaultProxy
) -> None:
    proxied_state.set("counters/c", {"n": 1})
    firestore_proxy.fail_next("Commit", grpc.StatusCode.ABORTED)
    seen: list[Doc | None] = []

    def increment(doc: Doc | None) -> Doc:
        seen.append(doc)
        return {"n": (doc or {"n": 0})["n"] + 1}

    assert proxied_state.update("counters/c", increment) == {"n": 2}
    assert seen == [{"n": 1}, {"n": 1}]
    retried = BeginTransactionRequest.deserialize(firestore_proxy.requests("BeginTransaction")[1])
    assert retried.options.read_write.retry_transaction, "the retry keeps its place in line"
    assert proxied_state.get("counters/c") == {"n": 2}


def test_update_sees_a_write_that_landed_between_its_read_and_its_commit(
    state: FirestoreStateStore,
) -> None:
    # Real contention on the emulator (its transactions are made isolated by our launcher):
    # the first attempt's commit must be refused and fn rerun on the newer document.
    state.set("counters/c", {"n": 0})
    read_once = threading.Event()
    written = threading.Event()
    seen: list[Doc | None] = []

    def increment(doc: Doc | None) -> Doc:
        seen.append(doc)
        if not read_once.is_set():
            read_once.set()
            assert written.wait(DEADLINE_S)
        return {"n": (doc or {"n": 0})["n"] + 1}

    results: list[Doc | None] = []
    worker = threading.Thread(target=lambda: results.append(state.update("counters/c", increment)))
    worker.start()
    assert read_once.wait(DEADLINE_S)
    state.set("counters/c", {"n": 10})
    written.set()
    worker.join(DEADLINE_S)

    assert not worker.is_alive()
    assert seen == [{"n": 0}, {"n": 10}]
    assert results == [{"n": 11}]
    assert state.get("counters/c") == {"n": 11}


def test_update_aborted_on_every_attempt_raises_transient_error_and_writes_nothing(
    proxied_state: FirestoreStateStore, firestore_proxy: GrpcFaultProxy
) -> None:
    proxied_state.set("counters/c", {"n": 1})
    firestore_proxy.fail_next("Commit", grpc.StatusCode.ABORTED, times=TRANSACTION_ATTEMPTS)

    with pytest.raises(TransientError, match="counters/c"):
        proxied_state.update("counters/c", lambda doc: {"n": 99})

    assert proxied_state.get("counters/c") == {"n": 1}


def test_set_many_commits_at_most_500_writes_at_a_time(
    proxied_state: FirestoreStateStore, firestore_proxy: GrpcFaultProxy
) -> None:
    written = proxied_state.set_many((f"jobs/j/items/k{i:04d}", {"i": i}) for i in range(1201))

    commits = [CommitRequest.deserialize(raw) for raw in firestore_proxy.requests("Commit")]
    assert written == 1201
    assert [len(c.writes) for c in commits] == [500, 500, 201]
    assert all(not w.update_mask.field_paths for c in commits for w in c.writes)
    assert proxied_state.count("jobs/j/items") == 1201


def test_set_many_also_splits_commits_by_size(
    proxied_state: FirestoreStateStore,
    firestore_proxy: GrpcFaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Firestore refuses a request over 10 MiB; the adapter keeps each commit under a budget
    # (lowered here so the test stays small).
    monkeypatch.setattr(firestore_adapter, "MAX_BYTES_PER_COMMIT", 100_000)
    docs = [(f"blobs/b{i}", {"text": "x" * 30_000}) for i in range(10)]

    assert proxied_state.set_many(docs) == 10

    sizes = [
        len(CommitRequest.deserialize(raw).writes) for raw in firestore_proxy.requests("Commit")
    ]
    assert sum(sizes) == 10
    assert max(sizes) == 3


def test_a_brief_firestore_outage_is_absorbed_by_the_librarys_retry(
    proxied_state: FirestoreStateStore, firestore_proxy: GrpcFaultProxy
) -> None:
    firestore_proxy.fail_next("Commit", grpc.StatusCode.UNAVAILABLE)
    proxied_state.set("jobs/j1", {"state": "RUNNING"})
    assert proxied_state.get("jobs/j1") == {"state": "RUNNING"}


@pytest.mark.parametrize(
    ("method", "code", "expected"),
    [
        ("Commit", grpc.StatusCode.ABORTED, TransientError),
        ("BatchGetDocuments", grpc.StatusCode.PERMISSION_DENIED, PermanentError),
        ("RunQuery", grpc.StatusCode.FAILED_PRECONDITION, PermanentError),
        ("RunAggregationQuery", grpc.StatusCode.INVALID_ARGUMENT, PermanentError),
    ],
)
def test_firestore_errors_map_to_the_pipelines_error_family(
    proxied_state: FirestoreStateStore,
    firestore_proxy: GrpcFaultProxy,
    method: str,
    code: Any,
    expected: type[Exception],
) -> None:
    firestore_proxy.fail_next(method, code)
    call: Callable[[], object] = {
        "Commit": lambda: proxied_state.set("jobs/j1", {"x": 1}),
        "BatchGetDocuments": lambda: proxied_state.get("jobs/j1"),
        "RunQuery": lambda: list(proxied_state.query("jobs", [Where("x", ">", 0)], order_by="y")),
        "RunAggregationQuery": lambda: proxied_state.count("jobs"),
    }[method]
    with pytest.raises(expected) as caught:
        call()
    if expected is PermanentError:
        assert not isinstance(caught.value, TransientError)


def test_an_in_filter_with_more_values_than_firestore_allows_is_refused_up_front(
    state: FirestoreStateStore,
) -> None:
    with pytest.raises(PermanentError, match="1 to 30 values, found 31"):
        list(state.query("jobs", [Where("state", "in", [str(i) for i in range(31)])]))


def test_state_and_bus_factories_need_a_project() -> None:
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        FirestoreStateStore.from_settings(Settings())
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        PubSubEventBus.from_settings(Settings())


# --- Pub/Sub ----------------------------------------------------------------------------


@pytest.fixture
def fake(pubsub_fake: PubSubFake, monkeypatch: pytest.MonkeyPatch) -> Iterator[PubSubFake]:
    """The in-process fake (even when another emulator serves the contract suite), with
    no faults left over for the next test."""
    assert pubsub_fake.host is not None
    monkeypatch.setenv(ENV_PUBSUB, pubsub_fake.host)
    pubsub_fake.server.clear_faults()
    yield pubsub_fake
    pubsub_fake.server.clear_faults()


@pytest.fixture
def topic(fake: PubSubFake, gcp_project: str) -> Iterator[tuple[str, str]]:
    """(topic path, subscription path), both created."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(gcp_project, "events")
    subscription = subscriber.subscription_path(gcp_project, "events-sub")
    publisher.create_topic(name=topic_path)
    subscriber.create_subscription(name=subscription, topic=topic_path)
    yield topic_path, subscription
    publisher.stop()
    subscriber.close()


def test_publish_rides_out_a_brief_outage(
    fake: PubSubFake, topic: tuple[str, str], gcp_project: str
) -> None:
    fake.server.fail_next("Publish", grpc.StatusCode.UNAVAILABLE, times=2)
    bus = PubSubEventBus.from_settings(Settings(project=gcp_project))

    message_id = bus.publish("events", b"done", {"job_id": "j1"})

    subscriber = pubsub_v1.SubscriberClient()
    [message] = pull(subscriber, topic[1], 1, deadline_s=DEADLINE_S)
    subscriber.close()
    assert message_id
    assert (message.data, message.attributes) == (b"done", {"job_id": "j1"})


def test_publish_during_a_long_outage_raises_transient_error_within_its_timeout(
    fake: PubSubFake, topic: tuple[str, str], gcp_project: str
) -> None:
    fake.server.fail_always("Publish", grpc.StatusCode.UNAVAILABLE)
    bus = PubSubEventBus(pubsub_v1.PublisherClient(), gcp_project, timeout_s=1.0)

    with pytest.raises(TransientError, match=f"projects/{gcp_project}/topics/events"):
        bus.publish("events", b"done", {})


def test_publish_to_a_missing_topic_raises_not_found(fake: PubSubFake, gcp_project: str) -> None:
    bus = PubSubEventBus.from_settings(Settings(project=gcp_project))
    with pytest.raises(NotFound, match=f"projects/{gcp_project}/topics/absent-topic"):
        bus.publish("absent-topic", b"x", {})


def test_publish_takes_a_full_topic_path_and_refuses_a_malformed_one(
    fake: PubSubFake, topic: tuple[str, str], gcp_project: str
) -> None:
    bus = PubSubEventBus.from_settings(Settings(project="some-other-project"))
    assert bus.publish(topic[0], b"x", {})
    with pytest.raises(PermanentError, match="projects/PROJECT/topics/TOPIC"):
        bus.publish("projects/p/subscriptions/s", b"x", {})
    with pytest.raises(PermanentError, match="projects/PROJECT/topics/TOPIC"):
        bus.publish("a/b", b"x", {})


def test_a_streaming_pull_subscriber_receives_what_the_bus_publishes(
    fake: PubSubFake, topic: tuple[str, str], gcp_project: str
) -> None:
    bus = PubSubEventBus.from_settings(Settings(project=gcp_project))
    received: list[tuple[bytes, dict[str, str]]] = []
    all_in = threading.Event()

    def on_message(message: Any) -> None:
        received.append((message.data, dict(message.attributes)))
        message.ack()
        if len(received) >= 3:
            all_in.set()

    subscriber = pubsub_v1.SubscriberClient()
    streaming = subscriber.subscribe(topic[1], on_message)
    try:
        for i in range(3):
            bus.publish("events", f"m{i}".encode(), {"i": str(i)})
        assert all_in.wait(DEADLINE_S)
    finally:
        streaming.cancel()
        streaming.result(timeout=DEADLINE_S)
        subscriber.close()
    assert sorted(received) == [(f"m{i}".encode(), {"i": str(i)}) for i in range(3)]


def test_a_message_nacked_by_a_subscriber_is_delivered_again(
    fake: PubSubFake, topic: tuple[str, str], gcp_project: str
) -> None:
    bus = PubSubEventBus.from_settings(Settings(project=gcp_project))
    bus.publish("events", b"retry me", {})
    subscriber = pubsub_v1.SubscriberClient()
    first = subscriber.pull(subscription=topic[1], max_messages=1, timeout=DEADLINE_S)
    [lease] = first.received_messages
    subscriber.modify_ack_deadline(
        subscription=topic[1], ack_ids=[lease.ack_id], ack_deadline_seconds=0
    )

    [again] = pull(subscriber, topic[1], 1, deadline_s=DEADLINE_S)
    subscriber.close()
    assert again.data == b"retry me"


def test_a_subscription_filter_on_attributes_selects_messages(
    fake: PubSubFake, topic: tuple[str, str], gcp_project: str
) -> None:
    # Completion subscribers filter on the `state` attribute.
    subscriber = pubsub_v1.SubscriberClient()
    failures = subscriber.subscription_path(gcp_project, "failures-only")
    subscriber.create_subscription(
        request={"name": failures, "topic": topic[0], "filter": 'attributes.state = "FAILED"'}
    )
    bus = PubSubEventBus.from_settings(Settings(project=gcp_project))
    bus.publish("events", b"ok", {"state": "SUCCEEDED"})
    bus.publish("events", b"bad", {"state": "FAILED"})

    got = pull(subscriber, failures, 1, deadline_s=DEADLINE_S)
    everything = pull(subscriber, topic[1], 2, deadline_s=DEADLINE_S)
    subscriber.close()
    assert [m.data for m in got] == [b"bad"]
    assert sorted(m.data for m in everything) == [b"bad", b"ok"]


# --- the emulators themselves -----------------------------------------------------------


def test_the_firestore_emulator_refuses_to_start_without_npm_ci_and_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(emulators, "FIRESTORE_EMULATOR_PACKAGE", tmp_path / "absent")
    with pytest.raises(emulators.EmulatorError, match="make test"):
        emulators.FirestoreEmulator().start()


def test_an_emulator_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    emulator = emulators.StorageEmulator()
    emulator.start()
    process = emulator.process
    assert process is not None
    assert process.stdin is not None
    try:
        # Closing our end of its stdin is what the kernel does when the test run is killed.
        process.stdin.close()
        assert process.wait(timeout=DEADLINE_S) == 0
    finally:
        emulator.stop()
