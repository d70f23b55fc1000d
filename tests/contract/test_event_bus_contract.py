"""The EventBus contract, run against every backend in conftest.BACKENDS."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import pytest

from bananabatch.errors import PermanentError
from tests.contract.harness import BusUnderTest


def test_publish_returns_a_message_id(bus_under_test: BusUnderTest) -> None:
    bus, topic = bus_under_test.bus, bus_under_test.topic
    first = bus.publish(topic, b"one", {"n": "1"})
    second = bus.publish(topic, b"two", {"n": "2"})
    assert isinstance(first, str)
    assert first
    assert first != second
    assert len(bus_under_test.receive(2)) == 2


def test_data_and_attributes_arrive_intact(bus_under_test: BusUnderTest) -> None:
    data = b'{"schema_version": 1, "job_id": "j1"}\x00\xff\xfe binary tail'
    attributes = {"job_id": "j1", "state": "SUCCEEDED", "note": "ünïcode ✓"}
    bus_under_test.bus.publish(bus_under_test.topic, data, attributes)
    [message] = bus_under_test.receive(1)
    assert message.data == data
    assert message.attributes == attributes


def test_a_message_without_attributes_arrives_with_none(bus_under_test: BusUnderTest) -> None:
    bus_under_test.bus.publish(bus_under_test.topic, b"bare", {})
    [message] = bus_under_test.receive(1)
    assert message.data == b"bare"
    assert message.attributes == {}


def test_every_one_of_several_messages_arrives(bus_under_test: BusUnderTest) -> None:
    count = 20
    for i in range(count):
        bus_under_test.bus.publish(bus_under_test.topic, f"m{i}".encode(), {"i": str(i)})
    received = bus_under_test.receive(count)
    # Delivery order is not part of the contract; compare as multisets.
    assert Counter((m.data, m.attributes["i"]) for m in received) == Counter(
        (f"m{i}".encode(), str(i)) for i in range(count)
    )


def test_a_non_string_attribute_value_is_rejected(bus_under_test: BusUnderTest) -> None:
    attributes = cast(Any, {"job_id": "j1", "attempt": 3})
    with pytest.raises(PermanentError):
        bus_under_test.bus.publish(bus_under_test.topic, b"x", attributes)


def test_data_that_is_not_bytes_is_rejected(bus_under_test: BusUnderTest) -> None:
    with pytest.raises(PermanentError):
        bus_under_test.bus.publish(bus_under_test.topic, cast(Any, "text, not bytes"), {})
