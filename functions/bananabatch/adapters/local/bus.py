"""EventBus in one process, with Pub/Sub-like pull subscriptions for the local runner.

A message goes to every subscription of its topic at publish time; a topic without
subscriptions drops it, as Pub/Sub does. Pulling removes the messages (an implicit ack).
Publish enforces Pub/Sub's limits, so a message the cloud would refuse fails here too.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from bananabatch.errors import NotFound, PermanentError

MAX_DATA_BYTES: Final = 10_000_000
MAX_ATTRIBUTES: Final = 100
MAX_ATTRIBUTE_KEY_BYTES: Final = 256
MAX_ATTRIBUTE_VALUE_BYTES: Final = 1024


@dataclass(frozen=True)
class BusMessage:
    message_id: str
    topic: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime


class InProcessBus:
    """Thread-safe topics and pull subscriptions, all in memory."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._topic_of: dict[str, str] = {}
        self._queues: dict[str, deque[BusMessage]] = {}
        self._ids = itertools.count(1)

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        attrs = _check(topic, data, attributes)
        with self._changed:
            message = BusMessage(
                message_id=str(next(self._ids)),
                topic=topic,
                data=data,
                attributes=attrs,
                publish_time=datetime.now(UTC),
            )
            for name, subscribed in self._topic_of.items():
                if subscribed == topic:
                    # Each subscription gets its own copy, so one consumer mutating the
                    # attributes cannot change what another sees.
                    self._queues[name].append(
                        BusMessage(
                            message.message_id,
                            topic,
                            data,
                            dict(attrs),
                            message.publish_time,
                        )
                    )
            self._changed.notify_all()
        return message.message_id

    def create_subscription(self, name: str, topic: str) -> None:
        """Subscribe `name` to `topic`; messages published from now on are kept for it.
        Creating the same subscription again is a no-op."""
        with self._changed:
            existing = self._topic_of.get(name)
            if existing is not None and existing != topic:
                raise PermanentError(
                    f"subscription {name}: already attached to topic {existing}, not {topic}"
                )
            if existing is None:
                self._topic_of[name] = topic
                self._queues[name] = deque()

    def pull(
        self, subscription: str, max_messages: int = 100, *, timeout: float = 0.0
    ) -> list[BusMessage]:
        """Take up to max_messages, oldest first. With a timeout, wait up to that many
        seconds for the first message instead of returning an empty list at once."""
        if max_messages < 1:
            raise PermanentError(
                f"pull from {subscription}: max_messages must be >= 1, found {max_messages}"
            )
        with self._changed:
            queue = self._queue(subscription)
            if not queue and timeout > 0:
                self._changed.wait_for(lambda: bool(queue), timeout)
            taken: list[BusMessage] = []
            while queue and len(taken) < max_messages:
                taken.append(queue.popleft())
            return taken

    def pending(self, subscription: str) -> int:
        with self._changed:
            return len(self._queue(subscription))

    def _queue(self, subscription: str) -> deque[BusMessage]:
        try:
            return self._queues[subscription]
        except KeyError:
            raise NotFound(
                f"subscription {subscription}: expected one created with create_subscription, "
                f"found none (have: {sorted(self._queues) or 'none'})"
            ) from None


def _check(topic: str, data: bytes, attributes: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(data, bytes):
        raise PermanentError(f"publish to {topic}: data must be bytes, found {type(data).__name__}")
    if len(data) > MAX_DATA_BYTES:
        raise PermanentError(
            f"publish to {topic}: data must be at most {MAX_DATA_BYTES} bytes, found {len(data)}"
        )
    if len(attributes) > MAX_ATTRIBUTES:
        raise PermanentError(
            f"publish to {topic}: at most {MAX_ATTRIBUTES} attributes, found {len(attributes)}"
        )
    checked: dict[str, str] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise PermanentError(
                f"publish to {topic}: attribute {key!r} must be a str key with a str value, "
                f"found {type(key).__name__} = {type(value).__name__}"
            )
        if not key or len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES or key.startswith("goog"):
            raise PermanentError(
                f"publish to {topic}: attribute key {key!r} must be 1 to "
                f"{MAX_ATTRIBUTE_KEY_BYTES} bytes and not start with 'goog'"
            )
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
            raise PermanentError(
                f"publish to {topic}: attribute {key} must be at most "
                f"{MAX_ATTRIBUTE_VALUE_BYTES} bytes, found {len(value.encode())}"
            )
        checked[key] = value
    if not data and not checked:
        raise PermanentError(f"publish to {topic}: a message needs data or an attribute")
    return checked
