"""What the contract fixtures hand to the suites: an adapter under test plus the little
context each suite needs. Backends (local, gcp) build these; the suites see only ports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bananabatch.ports import EventBus, ObjectStore, StateStore


@dataclass
class ObjectsUnderTest:
    store: ObjectStore
    bucket: str  # exists and is empty


@dataclass
class StateUnderTest:
    store: StateStore  # empty


@dataclass
class ReceivedMessage:
    data: bytes
    attributes: dict[str, str]


@dataclass
class BusUnderTest:
    bus: EventBus
    topic: str  # exists, with a subscription behind `receive`
    # Blocks until it holds that many messages or a generous deadline passes; returns what
    # arrived, so a test can tell "too few" from "hung".
    receive: Callable[[int], list[ReceivedMessage]]
