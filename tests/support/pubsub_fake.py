"""A small Pub/Sub server on loopback that speaks the real gRPC protocol.

Google ships no installable Pub/Sub emulator outside the gcloud SDK, so this fake serves
the Publisher and Subscriber methods the pipeline and its tests use, with the message
types google-cloud-pubsub itself ships (proto-plus `serialize`/`deserialize`). The
unmodified client library talks to it through PUBSUB_EMULATOR_HOST.

Semantics kept from the service: topics and subscriptions must exist (NOT_FOUND /
ALREADY_EXISTS), a message goes to every subscription that existed when it was published,
delivery is at least once (an unacknowledged message comes back after its ack deadline,
or at once after a ModifyAckDeadline of 0), and subscription filters of the form
`attributes.KEY = "VALUE"` joined by AND are honoured. Tests can make any method fail with
a chosen status code (`fail_next`, `fail_always`).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Final

import grpc  # type: ignore[import-untyped]  # grpcio ships no type information
from google.protobuf import empty_pb2, timestamp_pb2  # type: ignore[import-untyped]  # no stubs
from google.pubsub_v1 import types

PUBLISHER: Final = "google.pubsub.v1.Publisher"
SUBSCRIBER: Final = "google.pubsub.v1.Subscriber"
DEFAULT_ACK_DEADLINE_S: Final = 10
# How long Pull waits for a message before answering with none, as the service does.
PULL_WAIT_S: Final = 5.0
# How often a waiting Pull or StreamingPull re-checks for expired leases.
LEASE_CHECK_S: Final = 0.1
_FILTER_TERM: Final = re.compile(r'^\s*attributes\.([A-Za-z0-9_\-.]+)\s*=\s*"([^"]*)"\s*$')


@dataclass
class _Lease:
    message: types.PubsubMessage
    deadline: float
    attempt: int


@dataclass
class _Subscription:
    name: str
    topic: str
    ack_deadline_s: int
    filter_terms: dict[str, str]
    resource: types.Subscription
    ready: deque[tuple[types.PubsubMessage, int]] = field(default_factory=deque)
    leased: dict[str, _Lease] = field(default_factory=dict)


class _Abort(Exception):
    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PubSubFakeServer:
    """The fake's state and its gRPC server. `start()` binds 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._topics: dict[str, types.Topic] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._ids = itertools.count(1)
        self._fail_next: dict[str, deque[Any]] = {}
        self._fail_always: dict[str, Any] = {}
        self._server: Any = None
        self._stopping = threading.Event()
        #: Every accepted message as (topic, message), for tests to inspect.
        self.published: list[tuple[str, types.PubsubMessage]] = []

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> int:
        self._stopping.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="pubsub")
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(PUBLISHER, self._publisher_handlers()),
                grpc.method_handlers_generic_handler(SUBSCRIBER, self._subscriber_handlers()),
            )
        )
        port: int = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return port

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        if self._server is not None:
            self._server.stop(grace=None).wait(timeout=10)
            self._server = None

    # --- fault injection ----------------------------------------------------------------

    def fail_next(self, method: str, code: Any, times: int = 1) -> None:
        """Make the next `times` calls of `method` (e.g. "Publish") fail with `code`."""
        with self._lock:
            self._fail_next.setdefault(method, deque()).extend([code] * times)

    def fail_always(self, method: str, code: Any) -> None:
        with self._lock:
            self._fail_always[method] = code

    def clear_faults(self) -> None:
        with self._lock:
            self._fail_next.clear()
            self._fail_always.clear()

    def _injected(self, method: str) -> None:
        with self._lock:
            queued = self._fail_next.get(method)
            code = queued.popleft() if queued else self._fail_always.get(method)
        if code is not None:
            raise _Abort(code, f"{method} failed on purpose (injected by the test)")

    # --- handlers -----------------------------------------------------------------------

    def _unary(self, method: str, fn: Callable[[Any], Any], req: Any, resp: Any) -> Any:
        def handle(request: Any, context: Any) -> Any:
            try:
                self._injected(method)
                return fn(request)
            except _Abort as exc:
                context.abort(exc.code, exc.message)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=req.deserialize, response_serializer=resp
        )

    def _publisher_handlers(self) -> dict[str, Any]:
        empty = empty_pb2.Empty.SerializeToString
        return {
            "CreateTopic": self._unary(
                "CreateTopic", self._create_topic, types.Topic, types.Topic.serialize
            ),
            "GetTopic": self._unary(
                "GetTopic", self._get_topic, types.GetTopicRequest, types.Topic.serialize
            ),
            "DeleteTopic": self._unary(
                "DeleteTopic",
                self._delete_topic,
                types.DeleteTopicRequest,
                lambda _: empty(empty_pb2.Empty()),
            ),
            "Publish": self._unary(
                "Publish", self._publish, types.PublishRequest, types.PublishResponse.serialize
            ),
        }

    def _subscriber_handlers(self) -> dict[str, Any]:
        empty = empty_pb2.Empty()
        return {
            "CreateSubscription": self._unary(
                "CreateSubscription",
                self._create_subscription,
                types.Subscription,
                types.Subscription.serialize,
            ),
            "GetSubscription": self._unary(
                "GetSubscription",
                self._get_subscription,
                types.GetSubscriptionRequest,
                types.Subscription.serialize,
            ),
            "DeleteSubscription": self._unary(
                "DeleteSubscription",
                self._delete_subscription,
                types.DeleteSubscriptionRequest,
                lambda _: empty.SerializeToString(),
            ),
            "Pull": grpc.unary_unary_rpc_method_handler(
                self._pull,
                request_deserializer=types.PullRequest.deserialize,
                response_serializer=types.PullResponse.serialize,
            ),
            "Acknowledge": self._unary(
                "Acknowledge",
                self._acknowledge,
                types.AcknowledgeRequest,
                lambda _: empty.SerializeToString(),
            ),
            "ModifyAckDeadline": self._unary(
                "ModifyAckDeadline",
                self._modify_ack_deadline,
                types.ModifyAckDeadlineRequest,
                lambda _: empty.SerializeToString(),
            ),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                self._streaming_pull,
                request_deserializer=types.StreamingPullRequest.deserialize,
                response_serializer=types.StreamingPullResponse.serialize,
            ),
        }

    # --- publisher ----------------------------------------------------------------------

    def _create_topic(self, topic: types.Topic) -> types.Topic:
        _check_name(topic.name, "topics")
        with self._lock:
            if topic.name in self._topics:
                raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"Topic already exists: {topic.name}")
            self._topics[topic.name] = topic
        return topic

    def _get_topic(self, request: types.GetTopicRequest) -> types.Topic:
        with self._lock:
            topic = self._topics.get(request.topic)
        if topic is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
        return topic

    def _delete_topic(self, request: types.DeleteTopicRequest) -> None:
        with self._lock:
            if self._topics.pop(request.topic, None) is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            # As on the service, subscriptions survive with their topic shown as deleted.
            for sub in self._subscriptions.values():
                if sub.topic == request.topic:
                    sub.topic = "_deleted-topic_"

    def _publish(self, request: types.PublishRequest) -> types.PublishResponse:
        if not request.messages:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Publish needs at least one message")
        now = time.time()
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int(now * 1e9))
        ids: list[str] = []
        with self._lock:
            if request.topic not in self._topics:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            for incoming in request.messages:
                if not incoming.data and not incoming.attributes:
                    raise _Abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "A message needs data or at least one attribute",
                    )
            for incoming in request.messages:
                message = types.PubsubMessage(
                    data=incoming.data,
                    attributes=dict(incoming.attributes),
                    message_id=str(next(self._ids)),
                    publish_time=stamp,
                    ordering_key=incoming.ordering_key,
                )
                ids.append(message.message_id)
                self.published.append((request.topic, message))
                for sub in self._subscriptions.values():
                    if sub.topic == request.topic and _matches(sub.filter_terms, message):
                        sub.ready.append((message, 0))
            self._lock.notify_all()
        return types.PublishResponse(message_ids=ids)

    # --- subscriber ---------------------------------------------------------------------

    def _create_subscription(self, request: types.Subscription) -> types.Subscription:
        _check_name(request.name, "subscriptions")
        terms = _parse_filter(request.filter)
        with self._lock:
            if request.name in self._subscriptions:
                raise _Abort(
                    grpc.StatusCode.ALREADY_EXISTS, f"Subscription already exists: {request.name}"
                )
            if request.topic not in self._topics:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            resource = types.Subscription(request)
            if not resource.ack_deadline_seconds:
                resource.ack_deadline_seconds = DEFAULT_ACK_DEADLINE_S
            self._subscriptions[request.name] = _Subscription(
                name=request.name,
                topic=request.topic,
                ack_deadline_s=resource.ack_deadline_seconds,
                filter_terms=terms,
                resource=resource,
            )
        return resource

    def _subscription(self, name: str) -> _Subscription:
        sub = self._subscriptions.get(name)
        if sub is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Subscription does not exist: {name}")
        return sub

    def _get_subscription(self, request: types.GetSubscriptionRequest) -> types.Subscription:
        with self._lock:
            return self._subscription(request.subscription).resource

    def _delete_subscription(self, request: types.DeleteSubscriptionRequest) -> None:
        with self._lock:
            self._subscription(request.subscription)
            del self._subscriptions[request.subscription]

    def _acknowledge(self, request: types.AcknowledgeRequest) -> None:
        with self._lock:
            sub = self._subscription(request.subscription)
            for ack_id in request.ack_ids:
                sub.leased.pop(ack_id, None)

    def _modify_ack_deadline(self, request: types.ModifyAckDeadlineRequest) -> None:
        with self._lock:
            sub = self._subscription(request.subscription)
            self._modify(sub, list(request.ack_ids), request.ack_deadline_seconds)

    def _modify(self, sub: _Subscription, ack_ids: list[str], seconds: int) -> None:
        now = time.monotonic()
        for ack_id in ack_ids:
            lease = sub.leased.get(ack_id)
            if lease is None:
                continue
            if seconds <= 0:
                del sub.leased[ack_id]
                sub.ready.appendleft((lease.message, lease.attempt))
            else:
                lease.deadline = now + seconds
        self._lock.notify_all()

    def _reclaim(self, sub: _Subscription) -> None:
        now = time.monotonic()
        expired = [ack_id for ack_id, lease in sub.leased.items() if lease.deadline <= now]
        for ack_id in expired:
            lease = sub.leased.pop(ack_id)
            sub.ready.append((lease.message, lease.attempt))

    def _lease(self, sub: _Subscription, limit: int, deadline_s: int) -> list[Any]:
        out: list[types.ReceivedMessage] = []
        now = time.monotonic()
        while sub.ready and len(out) < limit:
            message, attempt = sub.ready.popleft()
            ack_id = f"{sub.name}#{uuid.uuid4().hex}"
            sub.leased[ack_id] = _Lease(message, now + deadline_s, attempt + 1)
            out.append(
                types.ReceivedMessage(ack_id=ack_id, message=message, delivery_attempt=attempt + 1)
            )
        return out

    def _pull(self, request: types.PullRequest, context: Any) -> types.PullResponse:
        try:
            self._injected("Pull")
            remaining = context.time_remaining()
            wait_s = (
                PULL_WAIT_S if remaining is None else max(0.0, min(PULL_WAIT_S, remaining - 0.5))
            )
            give_up = time.monotonic() + wait_s
            limit = request.max_messages or 1
            with self._lock:
                while True:
                    sub = self._subscription(request.subscription)
                    self._reclaim(sub)
                    if sub.ready or request.return_immediately:
                        break
                    left = give_up - time.monotonic()
                    if left <= 0 or self._stopping.is_set() or not context.is_active():
                        break
                    self._lock.wait(min(left, LEASE_CHECK_S))
                received = self._lease(sub, limit, sub.ack_deadline_s)
            return types.PullResponse(received_messages=received)
        except _Abort as exc:
            context.abort(exc.code, exc.message)
            raise AssertionError("context.abort raises") from exc

    def _streaming_pull(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        try:
            self._injected("StreamingPull")
            first = next(requests)
            with self._lock:
                sub = self._subscription(first.subscription)
        except _Abort as exc:
            context.abort(exc.code, exc.message)
            return
        except StopIteration:
            return
        state = {"deadline_s": first.stream_ack_deadline_seconds or sub.ack_deadline_s}
        closed = threading.Event()

        self._apply_stream_request(sub, first, state)
        reader = threading.Thread(
            target=self._consume_stream,
            args=(requests, sub, state, closed),
            name="pubsub-stream-reader",
            daemon=True,
        )
        reader.start()
        limit = first.max_outstanding_messages or 1000
        while not closed.is_set() and not self._stopping.is_set() and context.is_active():
            with self._lock:
                if sub.name not in self._subscriptions:
                    break
                self._reclaim(sub)
                received = self._lease(sub, limit, state["deadline_s"])
                if not received:
                    self._lock.wait(LEASE_CHECK_S)
                    continue
            yield types.StreamingPullResponse(received_messages=received)

    def _apply_stream_request(
        self, sub: _Subscription, request: Any, state: dict[str, int]
    ) -> None:
        """Acks, deadline changes and a new stream deadline, from one client message."""
        with self._lock:
            for ack_id in request.ack_ids:
                sub.leased.pop(ack_id, None)
            for ack_id, seconds in zip(
                request.modify_deadline_ack_ids, request.modify_deadline_seconds, strict=False
            ):
                self._modify(sub, [ack_id], seconds)
            if request.stream_ack_deadline_seconds:
                state["deadline_s"] = request.stream_ack_deadline_seconds

    def _consume_stream(
        self,
        requests: Iterator[Any],
        sub: _Subscription,
        state: dict[str, int],
        closed: threading.Event,
    ) -> None:
        """Apply the client's messages until it closes the stream, then wake the sender."""
        try:
            for request in requests:
                self._apply_stream_request(sub, request, state)
        except grpc.RpcError:
            pass
        finally:
            closed.set()
            with self._lock:
                self._lock.notify_all()


def _check_name(name: str, kind: str) -> None:
    if not re.fullmatch(rf"projects/[^/]+/{kind}/[A-Za-z][A-Za-z0-9\-_.~+%]{{2,254}}", name):
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource name: {name!r}")


def _parse_filter(text: str) -> dict[str, str]:
    if not text.strip():
        return {}
    terms: dict[str, str] = {}
    for part in re.split(r"\s+AND\s+", text.strip()):
        match = _FILTER_TERM.match(part)
        if match is None:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'this fake supports only filters like attributes.k = "v" AND ...: {text!r}',
            )
        terms[match.group(1)] = match.group(2)
    return terms


def _matches(terms: dict[str, str], message: types.PubsubMessage) -> bool:
    return all(message.attributes.get(key) == value for key, value in terms.items())
