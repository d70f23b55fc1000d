"""The pipeline end to end on either stack, behind one interface, for the end-to-end tests.

- `local`: the folder object store, SQLite and the in-process bus (`LocalPipeline`).
- `gcp`: the GCP adapters against the Cloud Storage emulator, the Firestore emulator and
  the Pub/Sub fake (or the emulator named by PUBSUB_EMULATOR_HOST). The test plays Eventarc
  and the push subscriptions: it delivers the storage-finalized CloudEvent to on_upload and
  every message it pulls from the batch-done subscription to on_batch_done, as push
  envelopes, through functions-framework.

Both run the same entry points (functions/main.py) through functions-framework, against
the Gemini Batch emulator, and both answer the same questions: what a job's completions
were, what its summary says, what an object in the results bucket holds (always read
through the ObjectStore port, never from a folder).

Time never passes by itself: the runtime's clock is a FakeClock the test moves, and the
collector measures its deadline on the same clock, so a slow download is slow only when a
test says so (FaultPlan.slow_download advances it per chunk served).
"""

from __future__ import annotations

import abc
import json
import math
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import functions_framework
import google.cloud.pubsub_v1 as pubsub_v1  # type: ignore[import-untyped]  # no py.typed
import pytest
from flask.testing import FlaskClient

from bananabatch import events, faults, wiring
from bananabatch.adapters.local.bus import InProcessBus
from bananabatch.config import Backend, ProviderKind, Settings, WebhookMode
from bananabatch.core.records import (
    PACK_PREFIX,
    JobRecord,
    display_name_for,
    job_id_for,
    split_pack_key,
)
from bananabatch.core.states import ITEM_TERMINAL, JOB_TERMINAL, ItemState
from bananabatch.deployed import Stores, submit_file
from bananabatch.emulator.faults import FaultPlan
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from bananabatch.emulator.webhooks import DynamicScheme
from bananabatch.errors import NotFound
from bananabatch.local.runner import COMPLETIONS_SUBSCRIPTION, MAIN_PY, LocalPipeline
from bananabatch.pipeline import thumbnails
from bananabatch.pipeline.repo import Repo
from bananabatch.pipeline.runtime import Runtime
from bananabatch.wiring import build_runtime
from tests.support.gcp_plugin import anonymous_storage_client

StackKind = Literal["local", "gcp"]
WebhookScheme = Literal["off", "static", "dynamic"]

# For @pytest.fixture(params=STACKS): test ids read test_x[local] and test_x[gcp].
STACKS: Final = (
    pytest.param("local", id="local"),
    pytest.param("gcp", id="gcp", marks=pytest.mark.gcp),
)
# How far the clock moves between two ticks while a test settles a job.
STEP: Final = timedelta(minutes=15)
EVENT_FUNCTIONS: Final = ("on_upload", "on_tick", "on_batch_done", "on_billing_alert")
WEBHOOK_FUNCTION: Final = "on_gemini_webhook"
WEBHOOK_URL: Final = "http://functions.test/on_gemini_webhook"
BATCH_DONE_SUB: Final = "on-batch-done"
COMPLETIONS_SUB: Final = "completions-check"
MAX_DELIVERIES: Final = 5
JSONL: Final = "application/jsonl"

# Five lines of the simple form, two ratios: the fault matrix's usual job.
PROMPTS: Final = [
    '{"key": "k1", "prompt": "a red apple"}',
    '{"key": "k2", "prompt": "a green pear", "aspect_ratio": "16:9"}',
    '{"key": "k3", "prompt": "a yellow banana"}',
    '{"key": "k4", "prompt": "a purple plum"}',
    '{"key": "k5", "prompt": "an orange orange"}',
]


class FakeClock:
    """The runtime's clock; it moves only when a test (or a fault hook) advances it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def advance_seconds(self, seconds: float) -> None:
        self.advance(timedelta(seconds=seconds))

    def monotonic(self) -> float:
        """The same time as seconds, for the collector's deadline."""
        return self.now.timestamp()


@dataclass(frozen=True)
class Completion:
    """One message on the completions topic: its JSON body and its attributes."""

    message: dict[str, Any]
    attributes: dict[str, str]

    @property
    def job_id(self) -> str | None:
        value = self.message.get("job_id")
        return value if isinstance(value, str) else None

    @property
    def state(self) -> str | None:
        value = self.message.get("state")
        return value if isinstance(value, str) else None


def zero_delays() -> EmulatorConfig:
    """Batches finish the first time anyone looks at them."""
    return EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())


def held() -> EmulatorConfig:
    """Batches never finish on their own: only emulator.state.complete() moves them."""
    return EmulatorConfig(pending_seconds=math.inf, running_seconds=math.inf, clock=ManualClock())


class Stack(abc.ABC):
    """The three event-driven functions and the webhook receiver on one stack."""

    kind: ClassVar[StackKind]

    def __init__(self, runtime: Runtime, emulator: EmulatorServer, clock: FakeClock, tmp: Path):
        self.runtime = runtime
        self.emulator = emulator
        self.clock = clock
        self.tmp = tmp
        self._webhook_client: FlaskClient | None = None

    # --- what the tests read ----------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def repo(self) -> Repo:
        return self.runtime.repo

    @property
    def faults(self) -> FaultPlan:
        return self.emulator.state.faults

    @property
    def stores(self) -> Stores:
        return Stores(objects=self.runtime.objects, state=self.runtime.state)

    @property
    @abc.abstractmethod
    def failed_deliveries(self) -> int:
        """Deliveries a function answered with an error (each was redelivered)."""

    @property
    @abc.abstractmethod
    def deliveries(self) -> Mapping[str, int]:
        """Deliveries per function, failed ones included."""

    def read_result(self, name: str) -> bytes:
        """An object of the results bucket, through the ObjectStore port."""
        return self.runtime.objects.read_bytes(self.settings.results_bucket, name)

    def result_exists(self, name: str) -> bool:
        return self.runtime.objects.stat(self.settings.results_bucket, name) is not None

    def summary(self, job_id: str) -> dict[str, Any]:
        """The job's summary.json; {} while there is none."""
        try:
            doc = json.loads(self.read_result(f"jobs/{job_id}/summary.json"))
        except NotFound:
            return {}
        return doc if isinstance(doc, dict) else {}

    def completions(self, job_id: str | None = None) -> list[Completion]:
        """Completion messages published since the last call (of this job, if given)."""
        return [c for c in self._pull_completions() if job_id is None or c.job_id == job_id]

    # --- what the platform does ---------------------------------------------------------

    def write(self, lines: list[str], name: str = "prompts.jsonl") -> Path:
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def put_inbox(
        self, path: Path, *, name: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Copy a file into the inbox bucket without announcing it; returns the object name."""
        name = name or path.name
        with (
            path.open("rb") as source,
            self.runtime.objects.open_write(
                self.settings.inbox_bucket, name, content_type=JSONL, metadata=metadata
            ) as sink,
        ):
            sink.write(source.read())
        return name

    def finalized_event(
        self, name: str, metadata: Mapping[str, str] | None = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """The storage-finalized CloudEvent Eventarc sends for an inbox object."""
        info = self.runtime.objects.stat(self.settings.inbox_bucket, name)
        assert info is not None, name
        assert info.generation is not None, name
        return events.storage_finalized_event(
            bucket=self.settings.inbox_bucket,
            name=name,
            generation=info.generation,
            size=info.size,
            content_type=JSONL,
            metadata=metadata,
        )

    def finalized(self, name: str, metadata: Mapping[str, str] | None = None) -> str:
        """Deliver the finalization of an inbox object; returns the job id it starts."""
        attributes, data = self.finalized_event(name, metadata)
        self.deliver("on_upload", attributes, data)
        return job_id_for(events.StorageObjectData.model_validate(data).source())

    def upload(
        self, path: Path, *, name: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Put a file in the inbox and deliver its finalization; returns the job id."""
        return self.finalized(self.put_inbox(path, name=name, metadata=metadata), metadata)

    @abc.abstractmethod
    def deliver(self, function: str, attributes: Mapping[str, str], data: Any) -> None:
        """POST one binary-mode CloudEvent to a function; redeliver it while it fails."""

    @abc.abstractmethod
    def tick(self) -> None:
        """Cloud Scheduler's tick, through the tick topic's push subscription."""

    @abc.abstractmethod
    def drain(self, limit: int | None = None) -> int:
        """Deliver batch-done messages (continuations included) until none is left, or
        `limit` were delivered; returns how many were delivered. The collector's thumbnails
        requests share the topic: they are delivered too, but not counted, so the count is
        of batch signals."""

    @abc.abstractmethod
    def _pull_completions(self) -> list[Completion]: ...

    def webhook(self, headers: Mapping[str, str], body: bytes, *, path: str = "/") -> int:
        """POST one webhook delivery to on_gemini_webhook (at a provider's sub-path, e.g.
        "/openai", "/replicate"); returns the HTTP status."""
        if self._webhook_client is None:
            self._webhook_client = _client(WEBHOOK_FUNCTION, "http")
        return self._webhook_client.post(path, data=body, headers=dict(headers)).status_code

    def settle(
        self, job_id: str, *, rounds: int = 12, between: Callable[[], object] | None = None
    ) -> list[Completion]:
        """Drain, tick and move the clock until the job is terminal and announced, then one
        more round (late signals must not produce anything new). Returns its completions."""
        completions: list[Completion] = []
        for _ in range(rounds):
            self.drain()
            completions += self.completions(job_id)
            job = self.repo.get_job(job_id)
            if job is not None and job.state in JOB_TERMINAL and completions:
                break
            if between is not None:
                between()
            self.clock.advance(STEP)
            self.tick()
        self.tick()
        self.drain()
        completions += self.completions(job_id)
        return completions

    def run(self, job_id: str, *, rounds: int = 20) -> tuple[JobRecord, list[Completion]]:
        """settle, insisting that the job finished and was announced."""
        completions = self.settle(job_id, rounds=rounds)
        job = self.repo.require_job(job_id)
        if job.state not in JOB_TERMINAL or not completions:
            raise AssertionError(f"job {job_id} is {job.state} after {rounds} rounds")
        return job, completions

    @abc.abstractmethod
    def close(self) -> None:
        """Release the stack's clients (the emulator belongs to open_stack)."""


class LocalStack(Stack):
    kind = "local"

    def __init__(
        self, pipeline: LocalPipeline, emulator: EmulatorServer, clock: FakeClock, tmp: Path
    ):
        super().__init__(pipeline.runtime, emulator, clock, tmp)
        self.pipeline = pipeline

    @property
    def failed_deliveries(self) -> int:
        return self.pipeline.failed_deliveries

    @property
    def deliveries(self) -> Mapping[str, int]:
        return self.pipeline.deliveries

    def deliver(self, function: str, attributes: Mapping[str, str], data: Any) -> None:
        self.pipeline.deliver(function, attributes, data)

    def tick(self) -> None:
        self.pipeline.tick()

    def drain(self, limit: int | None = None) -> int:
        return self.pipeline.drain(limit)

    def _pull_completions(self) -> list[Completion]:
        bus: InProcessBus = self.pipeline.bus
        return [
            Completion(json.loads(m.data), dict(m.attributes))
            for m in bus.pull(COMPLETIONS_SUBSCRIPTION, max_messages=1000)
        ]

    def close(self) -> None:
        self.pipeline.close()


class GcpStack(Stack):
    """The three functions on the GCP adapters; the test plays Eventarc and push."""

    kind = "gcp"

    def __init__(
        self,
        runtime: Runtime,
        emulator: EmulatorServer,
        clock: FakeClock,
        tmp: Path,
        subscriber: Any,
    ):
        super().__init__(runtime, emulator, clock, tmp)
        self.subscriber = subscriber
        self.clients = {name: _client(name, "cloudevent") for name in EVENT_FUNCTIONS}
        self._deliveries: Counter[str] = Counter()
        self._failed = 0
        wiring.install(runtime)

    @property
    def failed_deliveries(self) -> int:
        return self._failed

    @property
    def deliveries(self) -> Mapping[str, int]:
        return dict(self._deliveries)

    def subscription(self, name: str) -> str:
        return str(self.subscriber.subscription_path(self.settings.project, name))

    def deliver(self, function: str, attributes: Mapping[str, str], data: Any) -> None:
        """A failed delivery is redelivered at once, as the platform's retry policy would
        (without its backoff: nothing here depends on the time between attempts)."""
        headers = {f"ce-{k}": v for k, v in attributes.items() if k != "datacontenttype"}
        headers["Content-Type"] = "application/json"
        body = json.dumps(data)
        for _ in range(MAX_DELIVERIES):
            self._deliveries[function] += 1
            response = self.clients[function].post("/", data=body, headers=headers)
            if response.status_code < 300:
                return
            self._failed += 1
        raise AssertionError(
            f"{function} refused {MAX_DELIVERIES} deliveries: {response.get_data(as_text=True)}"
        )

    def submit(self, path: Path) -> str:
        """`bananabatch submit FILE` on the deployed stack, then the finalization it causes."""
        job_id = submit_file(self.settings, str(path), stores=self.stores)
        assert self.finalized(path.name) == job_id
        return job_id

    def tick(self) -> None:
        attributes, data = events.pubsub_published_event(
            project=str(self.settings.project),
            topic=self.settings.topic_tick,
            subscription="on-tick",
            data=b'{"source":"cloud-scheduler"}',
            attributes={},
        )
        self.deliver("on_tick", attributes, data)

    def pull(self, subscription: str, limit: int = 100) -> list[Any]:
        """Messages waiting now (at most `limit`), acknowledged. An empty pull answers at once."""
        path = self.subscription(subscription)
        got: list[Any] = []
        while len(got) < limit:
            with warnings.catch_warnings():
                # Deprecated for production (it can return nothing while messages wait), but
                # both the fake and the official emulator honour it, and it is what lets a
                # test ask "anything now?" without waiting out a pull deadline.
                warnings.simplefilter("ignore", DeprecationWarning)
                response = self.subscriber.pull(
                    request={
                        "subscription": path,
                        "max_messages": min(100, limit - len(got)),
                        "return_immediately": True,
                    }
                )
            if not response.received_messages:
                break
            self.subscriber.acknowledge(
                subscription=path, ack_ids=[r.ack_id for r in response.received_messages]
            )
            got.extend(r.message for r in response.received_messages)
        return got

    def drain(self, limit: int | None = None) -> int:
        delivered = 0
        while limit is None or delivered < limit:
            messages = self.pull(BATCH_DONE_SUB, 100 if limit is None else limit - delivered)
            if not messages:
                break
            for message in messages:
                attributes, data = events.pubsub_published_event(
                    project=str(self.settings.project),
                    topic=self.settings.topic_batch_done,
                    subscription=BATCH_DONE_SUB,
                    data=bytes(message.data),
                    attributes=dict(message.attributes),
                    message_id=message.message_id,
                )
                self.deliver("on_batch_done", attributes, data)
                if message.attributes.get("kind") != thumbnails.KIND:
                    delivered += 1
        return delivered

    def _pull_completions(self) -> list[Completion]:
        return [
            Completion(json.loads(bytes(m.data)), dict(m.attributes))
            for m in self.pull(COMPLETIONS_SUB, limit=1000)
        ]

    def close(self) -> None:
        wiring.uninstall()
        self.runtime.bus._publisher.stop()  # type: ignore[attr-defined]
        self.runtime.state._client.close()  # type: ignore[attr-defined]
        self.subscriber.close()


def _client(target: str, signature: str) -> FlaskClient:
    app = functions_framework.create_app(  # type: ignore[no-untyped-call]
        target=target, source=str(MAIN_PY), signature_type=signature
    )
    client: FlaskClient = app.test_client()
    return client


# --- building a stack -------------------------------------------------------------------


@contextmanager
def open_stack(
    request: pytest.FixtureRequest,
    kind: StackKind,
    tmp: Path,
    config: EmulatorConfig | None = None,
    *,
    webhooks: WebhookScheme = "off",
    webhook_signature: DynamicScheme = "v1a",
    **settings: Any,
) -> Iterator[Stack]:
    """A stack of `kind` against a fresh Gemini Batch emulator (zero delays by default).

    Settings default to three requests per batch; `settings` override any field. With
    `webhooks`, the emulator sends its deliveries to this stack's on_gemini_webhook:
    "static" registers a project webhook and configures its signing secret, "dynamic" has
    every batch name the receiver and verifies against the emulator's JWKS, signed
    `webhook_signature` ("v1a" as delivered, or the documented "jwt").
    """
    config = config or zero_delays()
    clock = FakeClock()
    with ExitStack() as exits:
        if kind == "gcp":
            config.storage_emulator_host = request.getfixturevalue("storage_emulator")
        else:
            # The folder store's file:// stand-ins for signed reference URLs.
            config.local_files_root = tmp / "state"
        emulator = exits.enter_context(EmulatorServer(config))
        fields: dict[str, Any] = {
            "gemini_base_url": emulator.base_url,
            "gemini_api_key": "test-key",
            "max_requests_per_batch": 3,
        }
        if webhooks == "static":
            registration = emulator.state.webhooks.register(
                WEBHOOK_URL,
                ["batch.succeeded", "batch.failed", "batch.expired", "batch.cancelled"],
            )
            fields |= {
                "webhook_mode": WebhookMode.STATIC,
                "webhook_secret": registration["new_signing_secret"],
            }
        elif webhooks == "dynamic":
            emulator.state.webhooks.dynamic_scheme = webhook_signature
            fields |= {
                "webhook_mode": WebhookMode.DYNAMIC,
                "webhook_url": WEBHOOK_URL,
                "webhook_jwks_url": emulator.base_url + "/.well-known/jwks.json",
            }
        fields |= settings
        stack: Stack
        if kind == "local":
            runtime = build_runtime(
                Settings(backend=Backend.LOCAL, local_root=tmp / "state", **fields)
            )
            runtime.clock = clock
            stack = LocalStack(LocalPipeline(runtime, sleep=lambda _s: None), emulator, clock, tmp)
        else:
            stack = _gcp_stack(request, emulator, clock, tmp, fields)
        exits.callback(stack.close)
        exits.callback(faults.reset)
        # The collector's deadline runs on the stack's clock: it passes only when a test
        # (or a slow-download fault) moves the clock during a collection.
        stack.runtime.monotonic = clock.monotonic
        if webhooks != "off":
            emulator.state.webhooks.sender = lambda _uri, headers, body: stack.webhook(
                headers, body
            )
        yield stack


def _gcp_stack(
    request: pytest.FixtureRequest,
    emulator: EmulatorServer,
    clock: FakeClock,
    tmp: Path,
    fields: dict[str, Any],
) -> GcpStack:
    for name in ("firestore_emulator", "pubsub_emulator"):
        request.getfixturevalue(name)
    project: str = request.getfixturevalue("gcp_project")
    suffix = uuid.uuid4().hex[:12]
    inbox, results = f"inbox-{suffix}", f"results-{suffix}"
    storage = anonymous_storage_client(project)
    for bucket in (inbox, results):
        storage.create_bucket(bucket)
    settings = Settings(
        **{
            "backend": Backend.GCP,
            "provider": ProviderKind.EMULATOR,
            "project": project,
            "inbox_bucket": inbox,
            "results_bucket": results,
            "vertex_location": "us-central1",
            "vertex_base_url": emulator.base_url,
        }
        | fields
    )
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        for topic in (settings.topic_tick, settings.topic_batch_done, settings.topic_completions):
            publisher.create_topic(name=publisher.topic_path(project, topic))
        for sub, topic in (
            (BATCH_DONE_SUB, settings.topic_batch_done),
            (COMPLETIONS_SUB, settings.topic_completions),
        ):
            subscriber.create_subscription(
                name=subscriber.subscription_path(project, sub),
                topic=publisher.topic_path(project, topic),
            )
    finally:
        publisher.stop()
    runtime = build_runtime(settings)
    runtime.clock = clock
    return GcpStack(runtime, emulator, clock, tmp, subscriber)


# --- the invariants -----------------------------------------------------------------

PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"


def paid_keys(stack: Stack, job_id: str) -> Counter[str | None]:
    """How many times the provider accepted each of the job's keys: in its own batches,
    and in shared batches of the batch window, where its lines are keyed `<job>/<key>`."""
    paid = Counter(stack.emulator.state.submitted_keys(display_name_for(f"{job_id}-")))
    shared = stack.emulator.state.submitted_keys(display_name_for(PACK_PREFIX))
    for packed, count in shared.items():
        owner, key = split_pack_key(packed or "")
        if owner == job_id:
            paid[key] += count
    return paid


def assert_invariants(stack: Stack, job_id: str, completions: list[Completion]) -> dict[str, Any]:
    """The four checks every fault-matrix scenario ends with (see tests/e2e/test_fault_matrix.py):
    one terminal state per input line, an image for every success, nothing paid for twice,
    exactly one completion. Returns the job's summary."""
    repo = stack.repo
    job = repo.require_job(job_id)
    assert job.state in JOB_TERMINAL, job.state
    items = list(repo.items(job_id))
    # 1. one terminal state per input line
    assert all(item.state in ITEM_TERMINAL for item in items), [
        (i.key, i.state) for i in items if i.state not in ITEM_TERMINAL
    ]
    summary = stack.summary(job_id)
    assert sum(summary["counts"].values()) == job.line_count == summary["line_count"]
    assert len(items) + job.rejected_count == job.line_count
    # 2. every success has its image, in the results bucket
    for item in items:
        if item.state is ItemState.SUCCEEDED:
            name = f"jobs/{job_id}/images/{item.key}.png"
            assert item.image_uri == stack.runtime.results_uri(name), item.key
            assert stack.read_result(name).startswith(PNG_MAGIC), item.key
    # 3. nothing paid twice: one accepted row per (key, attempt), the job's own batches
    # and the batch window's shared batches (`<job>/<key>`) together
    accepted = paid_keys(stack, job_id)
    submitted = {i.key: i.attempt for i in items if i.state is not ItemState.CACHED}
    assert {k: n for k, n in accepted.items() if n} == {
        k: a for k, a in submitted.items() if k in accepted
    }
    retried = sorted(k for k, a in submitted.items() if a > 1)
    assert sorted((k for k, n in accepted.items() if n > 1), key=str) == retried
    # 4. exactly one completion, whose attributes allow subscription filters
    assert len(completions) == 1, completions
    assert completions[0].state == job.state.value
    assert completions[0].attributes["job_id"] == job_id
    assert completions[0].attributes["state"] == job.state.value
    return summary
