"""The whole flow on emulated Google Cloud, for the Developer API (Gemini emulator) and for
Vertex AI batch prediction: the JSONL lands in the inbox bucket on the Cloud Storage
emulator, the storage-finalized CloudEvent Eventarc would deliver drives on_upload through
functions-framework, Pub/Sub push envelopes drive on_tick and on_batch_done (batch-done
messages are pulled from a subscription on the Pub/Sub fake), images land in the results
bucket, item and job state in the Firestore emulator, and the completion message is pulled
from a subscription on the completions topic.

Nothing waits on a clock: the emulators' batches finish on the first poll (a ManualClock
with zero delays), and empty pulls return at once.
"""

from __future__ import annotations

import io
import json
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import functions_framework
import google.cloud.pubsub_v1 as pubsub_v1  # type: ignore[import-untyped]  # no py.typed
import jsonschema
import pytest
from flask.testing import FlaskClient
from PIL import Image

from bananabatch import events, wiring
from bananabatch.adapters.gcp.firestore import FirestoreStateStore
from bananabatch.adapters.gcp.pubsub import PubSubEventBus
from bananabatch.adapters.gcp.storage import GcsObjectStore
from bananabatch.config import Backend, ProviderKind, Settings
from bananabatch.core.messages import load_completion_schema
from bananabatch.core.pricing import PriceBook
from bananabatch.core.records import JobRecord, job_id_for
from bananabatch.core.states import JOB_TERMINAL, ItemState, JobState
from bananabatch.deployed import Stores, job_status, submit_file
from bananabatch.emulator import EmulatorConfig, EmulatorServer, ManualClock
from bananabatch.emulator.vertex import jobs_for
from bananabatch.errors import NotFound, PermanentError
from bananabatch.local.runner import MAIN_PY
from bananabatch.pipeline.runtime import Runtime
from bananabatch.wiring import build_provider
from tests.support.gcp_plugin import anonymous_storage_client

# Starts the Cloud Storage (and, end to end, Firestore and Pub/Sub) emulators.
pytestmark = pytest.mark.gcp

EXAMPLES: Final = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"
BATCH_DONE_SUB: Final = "on-batch-done"
COMPLETIONS_SUB: Final = "completions-check"
MAX_ROUNDS: Final = 20
MAX_DELIVERIES: Final = 5


@dataclass
class GcpPipeline:
    """The three event-driven functions on the GCP adapters; this test plays Eventarc."""

    runtime: Runtime
    emulator: EmulatorServer
    subscriber: Any
    clients: dict[str, FlaskClient] = field(default_factory=dict)
    failed_deliveries: int = 0

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def subscription(self, name: str) -> str:
        return str(self.subscriber.subscription_path(self.settings.project, name))

    def deliver(self, function: str, attributes: Mapping[str, str], data: Any) -> None:
        """POST one binary-mode CloudEvent; a failed delivery is redelivered, as the
        platform's retry policy would (without its backoff: nothing here needs time)."""
        headers = {f"ce-{k}": v for k, v in attributes.items() if k != "datacontenttype"}
        headers["Content-Type"] = "application/json"
        for _ in range(MAX_DELIVERIES):
            response = self.clients[function].post("/", data=json.dumps(data), headers=headers)
            if response.status_code < 300:
                return
            self.failed_deliveries += 1
        raise AssertionError(f"{function} refused {MAX_DELIVERIES} deliveries: {response.text}")

    def finalized(self, name: str) -> str:
        """Deliver the finalization of an inbox object; returns the job id it starts."""
        info = self.runtime.objects.stat(self.settings.inbox_bucket, name)
        assert info is not None
        assert info.generation is not None
        attributes, data = events.storage_finalized_event(
            bucket=self.settings.inbox_bucket,
            name=name,
            generation=info.generation,
            size=info.size,
            content_type="application/jsonl",
        )
        self.deliver("on_upload", attributes, data)
        return job_id_for(events.StorageObjectData.model_validate(data).source())

    def tick(self) -> None:
        attributes, data = events.pubsub_published_event(
            project=str(self.settings.project),
            topic=self.settings.topic_tick,
            subscription="on-tick",
            data=b'{"source":"cloud-scheduler"}',
            attributes={},
        )
        self.deliver("on_tick", attributes, data)

    def pull(self, subscription: str) -> list[Any]:
        """Every message waiting now, acknowledged. An empty pull answers at once."""
        path = self.subscription(subscription)
        got: list[Any] = []
        while True:
            with warnings.catch_warnings():
                # Deprecated for production (it can return nothing while messages wait), but
                # both the fake and the official emulator honour it, and it is what lets a
                # test ask "anything now?" without waiting out a pull deadline.
                warnings.simplefilter("ignore", DeprecationWarning)
                response = self.subscriber.pull(
                    request={"subscription": path, "max_messages": 100, "return_immediately": True}
                )
            if not response.received_messages:
                return got
            self.subscriber.acknowledge(
                subscription=path, ack_ids=[r.ack_id for r in response.received_messages]
            )
            got.extend(r.message for r in response.received_messages)

    def drain(self) -> int:
        delivered = 0
        while messages := self.pull(BATCH_DONE_SUB):
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
                delivered += 1
        return delivered

    def completions(self) -> list[tuple[dict[str, Any], dict[str, str]]]:
        return [(json.loads(bytes(m.data)), dict(m.attributes)) for m in self.pull(COMPLETIONS_SUB)]

    def run(self, job_id: str) -> tuple[JobRecord, list[tuple[dict[str, Any], dict[str, str]]]]:
        """Tick and deliver batch-done messages until the job is terminal and announced."""
        completions: list[tuple[dict[str, Any], dict[str, str]]] = []
        for _ in range(MAX_ROUNDS):
            self.drain()
            completions += [c for c in self.completions() if c[0].get("job_id") == job_id]
            job = self.runtime.repo.get_job(job_id)
            if job is not None and job.state in JOB_TERMINAL and completions:
                return job, completions
            self.tick()
        raise AssertionError(f"job {job_id} not finished after {MAX_ROUNDS} ticks")

    def upload(self, path: Path) -> str:
        """Write the file to the inbox bucket (as `bananabatch submit` does), deliver its
        finalization, return the job id."""
        job_id = submit_file(self.settings, str(path), stores=self.stores)
        assert self.finalized(path.name) == job_id
        return job_id

    @property
    def stores(self) -> Stores:
        return Stores(objects=self.runtime.objects, state=self.runtime.state)


@pytest.fixture(params=[ProviderKind.EMULATOR, ProviderKind.VERTEX], ids=["gemini", "vertex"])
def gcp(
    request: pytest.FixtureRequest,
    storage_emulator: str,
    firestore_emulator: str,
    pubsub_emulator: str,
    gcp_project: str,
) -> Iterator[GcpPipeline]:
    suffix = uuid.uuid4().hex[:12]
    storage_client = anonymous_storage_client(gcp_project)
    inbox, results = f"inbox-{suffix}", f"results-{suffix}"
    for bucket in (inbox, results):
        storage_client.create_bucket(bucket)
    config = EmulatorConfig(
        pending_seconds=0.0,
        running_seconds=0.0,
        clock=ManualClock(),
        storage_emulator_host=storage_emulator,
    )
    with EmulatorServer(config) as emu:
        provider_kind: ProviderKind = request.param
        settings = Settings(
            backend=Backend.GCP,
            provider=provider_kind,
            project=gcp_project,
            inbox_bucket=inbox,
            results_bucket=results,
            gemini_base_url=emu.base_url,
            gemini_api_key="test-key",
            vertex_location="us-central1",
            vertex_base_url=emu.base_url,
            max_requests_per_batch=5,
        )
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        for topic in (settings.topic_tick, settings.topic_batch_done, settings.topic_completions):
            publisher.create_topic(name=publisher.topic_path(gcp_project, topic))
        for sub, topic in (
            (BATCH_DONE_SUB, settings.topic_batch_done),
            (COMPLETIONS_SUB, settings.topic_completions),
        ):
            subscriber.create_subscription(
                name=subscriber.subscription_path(gcp_project, sub),
                topic=publisher.topic_path(gcp_project, topic),
            )
        objects = GcsObjectStore.from_settings(settings)
        state = FirestoreStateStore.from_settings(settings)
        bus = PubSubEventBus.from_settings(settings)
        runtime = Runtime(
            settings=settings,
            objects=objects,
            state=state,
            bus=bus,
            provider=build_provider(settings, objects),
            prices=PriceBook(overrides=settings.price_overrides),
        )
        wiring.install(runtime)
        pipeline = GcpPipeline(runtime=runtime, emulator=emu, subscriber=subscriber)
        pipeline.clients = {
            name: functions_framework.create_app(  # type: ignore[no-untyped-call]
                target=name, source=str(MAIN_PY), signature_type="cloudevent"
            ).test_client()
            for name in ("on_upload", "on_tick", "on_batch_done")
        }
        try:
            yield pipeline
        finally:
            wiring.uninstall()
            bus._publisher.stop()
            publisher.stop()
            subscriber.close()
            state._client.close()  # type: ignore[no-untyped-call]  # untyped in the library


def _expected_ratio(line: Mapping[str, Any]) -> float:
    ratio = line.get("aspect_ratio") or line.get("request", {}).get("generationConfig", {}).get(
        "imageConfig", {}
    ).get("aspectRatio", "1:1")
    w, h = (int(x) for x in str(ratio).split(":"))
    return w / h


def _provider_batches(gcp: GcpPipeline) -> int:
    if gcp.settings.provider is ProviderKind.VERTEX:
        return len(jobs_for(gcp.emulator.state).names())
    return gcp.emulator.state.counters.batches_created


def test_the_example_file_goes_from_the_inbox_bucket_to_images_firestore_and_one_completion(
    gcp: GcpPipeline,
) -> None:
    job_id = gcp.upload(EXAMPLES)
    job, completions = gcp.run(job_id)
    lines = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    results, objects = gcp.settings.results_bucket, gcp.runtime.objects

    assert job.state is JobState.PARTIAL  # two lines are deliberately bad
    summary = json.loads(objects.read_bytes(results, f"jobs/{job_id}/summary.json"))
    counts = summary["counts"]
    assert sum(counts.values()) == len(lines) == summary["line_count"]
    assert counts[ItemState.REJECTED] == 2
    assert counts[ItemState.SUCCEEDED] == len(lines) - 2

    # Every good line has its image in the results bucket and its item in Firestore.
    for line in lines:
        if line.get("key") in {"bad-ratio", "bad/key"}:
            continue
        key = line.get("key") or "line-000014"
        item = gcp.runtime.repo.get_item(job_id, key)
        assert item is not None
        assert item.state is ItemState.SUCCEEDED, (key, item.reason)
        assert item.image_uri == f"gs://{results}/jobs/{job_id}/images/{key}.png"
        data = objects.read_bytes(results, f"jobs/{job_id}/images/{key}.png")
        with Image.open(io.BytesIO(data)) as image:
            assert image.width / image.height == pytest.approx(_expected_ratio(line), rel=0.03)

    rejected = [
        json.loads(x)
        for x in objects.read_bytes(results, f"jobs/{job_id}/rejected.jsonl").splitlines()
    ]
    assert [r["line"] for r in rejected] == [15, 16]
    result_lines = objects.read_bytes(results, f"jobs/{job_id}/results.jsonl").splitlines()
    assert [json.loads(x)["line"] for x in result_lines] == list(range(1, len(lines) + 1))

    # Exactly one completion message, valid against the published schema.
    assert len(completions) == 1
    message, attributes = completions[0]
    jsonschema.validate(message, load_completion_schema())
    assert message["job_id"] == job_id
    assert message["counts"] == counts
    assert message["costs"]["actual_usd"] > 0
    assert attributes["job_id"] == job_id
    assert attributes["state"] == JobState.PARTIAL.value
    # Nothing was paid for twice.
    assert _provider_batches(gcp) == job.batch_count


def test_a_redelivered_upload_event_creates_one_job_and_pays_once(
    gcp: GcpPipeline, tmp_path: Path
) -> None:
    source = tmp_path / "two.jsonl"
    source.write_text('{"key": "a", "prompt": "one"}\n{"key": "B.2", "prompt": "two"}\n')
    job_id = gcp.upload(source)
    job, _ = gcp.run(job_id)
    assert job.state is JobState.SUCCEEDED
    gcp.finalized("two.jsonl")
    gcp.tick()
    gcp.drain()
    assert _provider_batches(gcp) == 1
    assert gcp.runtime.repo.require_job(job_id).state is JobState.SUCCEEDED
    assert gcp.completions() == []


def test_the_cli_submits_a_gs_uri_from_another_bucket_and_reads_status_without_a_provider(
    gcp: GcpPipeline, gcp_project: str
) -> None:
    elsewhere = f"elsewhere-{uuid.uuid4().hex[:12]}"
    anonymous_storage_client(gcp_project).create_bucket(elsewhere)
    body = b'{"key": "k1", "prompt": "a lighthouse"}\n'
    gcp.runtime.objects.write_bytes(
        elsewhere, "drafts/lights.jsonl", body, content_type="application/jsonl"
    )
    # Status needs only the project: no Gemini key, no provider URL.
    status_settings = Settings(
        backend=Backend.GCP,
        provider=ProviderKind.GEMINI,
        project=gcp_project,
        inbox_bucket=gcp.settings.inbox_bucket,
    )

    job_id = submit_file(gcp.settings, f"gs://{elsewhere}/drafts/lights.jsonl")
    assert gcp.runtime.objects.read_bytes(gcp.settings.inbox_bucket, "lights.jsonl") == body
    with pytest.raises(NotFound, match=job_id):
        job_status(status_settings, job_id)

    # The job the event starts is the one submit_file announced.
    assert gcp.finalized("lights.jsonl") == job_id
    running = job_status(status_settings, job_id)
    assert running["job_id"] == job_id
    assert running["source"] == f"gs://{gcp.settings.inbox_bucket}/lights.jsonl"

    gcp.run(job_id)
    done = job_status(status_settings, job_id)
    assert done["state"] == JobState.SUCCEEDED.value
    assert done["counts"][ItemState.SUCCEEDED] == 1
    assert done["results_prefix"].startswith(f"gs://{gcp.settings.results_bucket}/jobs/{job_id}")

    # A gs:// URI already in the inbox is used where it lies: the same object, the same job.
    again = submit_file(gcp.settings, f"gs://{gcp.settings.inbox_bucket}/lights.jsonl")
    assert again == job_id


def test_the_cli_refuses_what_would_never_start_a_job(gcp: GcpPipeline, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("{}\n")
    with pytest.raises(PermanentError, match=r"\*\.jsonl"):
        submit_file(gcp.settings, str(notes), stores=gcp.stores)
    with pytest.raises(PermanentError, match="no such file"):
        submit_file(gcp.settings, str(tmp_path / "absent.jsonl"), stores=gcp.stores)
    with pytest.raises(NotFound, match="existing object"):
        submit_file(gcp.settings, "gs://nowhere-bucket/x.jsonl", stores=gcp.stores)
