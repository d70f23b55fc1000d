"""VertexProvider against the emulator's batchPredictionJobs routes, through the unmodified
google-genai SDK, with request and output files on the Cloud Storage emulator."""

from __future__ import annotations

import base64
import io
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials
from PIL import Image

from bananabatch.adapters.gcp.storage import GcsObjectStore
from bananabatch.config import ProviderKind, Settings
from bananabatch.core.results import classify_row
from bananabatch.core.states import BatchState
from bananabatch.emulator import EmulatorConfig, EmulatorServer, FaultPlan, ManualClock
from bananabatch.emulator.vertex import VertexJobs, jobs_for
from bananabatch.errors import (
    ConfigError,
    NotFound,
    PermanentError,
    ProviderOutcomeUnknown,
    ProviderQuotaExceeded,
)
from bananabatch.ports import BatchProvider, ProviderBatch, ResultRow
from bananabatch.providers.vertex import (
    KEY_SUM_LABEL,
    VertexProvider,
    destination_for,
    from_settings,
    key_from_labels,
    key_labels,
)
from bananabatch.wiring import build_provider
from tests.support.emulator import image_request, jsonl
from tests.support.gcp_plugin import anonymous_storage_client

# Starts the Cloud Storage (and, end to end, Firestore and Pub/Sub) emulators.
pytestmark = pytest.mark.gcp

MODEL = "gemini-3.1-flash-image"
PROJECT = "bb-vertex"
LOCATION = "us-central1"


@pytest.fixture
def bucket(storage_emulator: str) -> str:
    name = f"vertex-{uuid.uuid4().hex[:20]}"
    anonymous_storage_client(PROJECT).create_bucket(name)
    return name


@pytest.fixture
def objects(storage_emulator: str) -> GcsObjectStore:
    return GcsObjectStore.from_settings(Settings(project=PROJECT))


@pytest.fixture
def emu(storage_emulator: str) -> Iterator[EmulatorServer]:
    # Jobs move only when a test says so.
    config = EmulatorConfig(
        pending_seconds=math.inf,
        running_seconds=math.inf,
        clock=ManualClock(),
        storage_emulator_host=storage_emulator,
    )
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def jobs(emu: EmulatorServer) -> VertexJobs:
    return jobs_for(emu.state)


def _settings(emu: EmulatorServer) -> Settings:
    return Settings(
        provider=ProviderKind.VERTEX,
        project=PROJECT,
        vertex_location=LOCATION,
        vertex_base_url=emu.base_url,
    )


@pytest.fixture
def provider(emu: EmulatorServer, objects: GcsObjectStore) -> Iterator[VertexProvider]:
    made = from_settings(_settings(emu), objects)
    yield made
    made.close()


def _stage(
    provider: VertexProvider,
    objects: GcsObjectStore,
    bucket: str,
    keys: list[str],
    name: str = "jobs/j1/requests/batch-0000.jsonl",
) -> str:
    lines = [
        provider.encode_request(key, image_request(f"Prompt for {key}", "16:9", "512"))
        for key in keys
    ]
    objects.write_bytes(bucket, name, jsonl(lines), content_type="application/jsonl")
    return name


def _create(
    provider: VertexProvider,
    objects: GcsObjectStore,
    bucket: str,
    keys: list[str],
    display_name: str = "bananabatch-j1-b0000-a1",
) -> ProviderBatch:
    name = _stage(provider, objects, bucket, keys)
    return provider.create(
        model=MODEL,
        display_name=display_name,
        request_bucket=bucket,
        request_object=name,
        request_count=len(keys),
    )


def _rows(provider: VertexProvider, batch: ProviderBatch, start: int = 0) -> list[ResultRow]:
    return list(provider.iter_results(batch, start_line=start))


# --- keys in labels ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["sku-1", "Line.000014", "UPPER_and.dots-" * 8, "ünïcødé-ключ-鍵", "x" * 128],
)
def test_a_key_survives_the_label_rules_of_vertex(key: str) -> None:
    labels = key_labels(key)
    for name, value in labels.items():
        assert len(value) <= 63
        assert set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-"), (name, value)
        assert name.islower()
    assert key_from_labels(labels) == key


def test_a_truncated_or_altered_key_label_is_not_trusted() -> None:
    labels = key_labels("sku-" + "9" * 60)
    assert key_from_labels({k: v for k, v in labels.items() if k != "bb_key_1"}) is None
    altered = dict(labels, bb_key_0="a" + labels["bb_key_0"][1:])
    assert key_from_labels(altered) is None
    assert key_from_labels({k: v for k, v in labels.items() if k != KEY_SUM_LABEL}) is None


def test_request_lines_carry_the_key_in_labels_and_keep_the_callers_labels(
    provider: VertexProvider,
) -> None:
    request = image_request("A kite", "1:1") | {"labels": {"team": "catalog"}}
    line = provider.encode_request("Kite.01", request)
    assert set(line) == {"request"}
    assert line["request"]["labels"]["team"] == "catalog"
    assert provider.decode_request(json.loads(json.dumps(line))) == ("Kite.01", request)
    bare = image_request("A kite")
    assert provider.decode_request(provider.encode_request("k", bare)) == ("k", bare)
    with pytest.raises(PermanentError, match="labels"):
        provider.decode_request({"request": bare})
    with pytest.raises(PermanentError, match="expected"):
        provider.decode_request({"key": "k"})


# --- the job lifecycle -----------------------------------------------------------------------


def test_the_provider_satisfies_the_port_and_wiring_builds_it(
    provider: VertexProvider, emu: EmulatorServer, objects: GcsObjectStore
) -> None:
    assert isinstance(provider, BatchProvider)
    assert provider.kind == "vertex"
    assert isinstance(build_provider(_settings(emu), objects), VertexProvider)


def test_a_job_is_created_from_the_gcs_file_runs_and_streams_its_predictions(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str, jobs: VertexJobs
) -> None:
    keys = ["a", "B.2", "c-3", "d", "e"]
    made = _create(provider, objects, bucket, keys)
    assert made.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/")
    assert (made.state, made.provider_state) == (BatchState.RUNNING, "JOB_STATE_PENDING")
    assert made.display_name == "bananabatch-j1-b0000-a1"
    assert made.output is None
    assert jobs.submitted_keys() == {key: 1 for key in keys}

    jobs.complete(made.name)
    done = provider.get(made.name)
    assert (done.state, done.provider_state) == (BatchState.SUCCEEDED, "JOB_STATE_SUCCEEDED")
    prefix = destination_for(bucket, "jobs/j1/requests/batch-0000.jsonl")
    assert prefix == f"gs://{bucket}/jobs/j1/requests/batch-0000/output/"
    assert done.output is not None
    assert done.output.startswith(prefix + "prediction-model-")
    assert done.request_count == len(keys)

    rows = _rows(provider, done)
    assert [r.line_no for r in rows] == list(range(len(keys)))
    by_key = {r.row["key"]: r.row for r in rows if r.row is not None}
    assert sorted(by_key) == sorted(keys)
    # The service does not keep input order; the emulator scrambles it on purpose.
    assert [r.row["key"] for r in rows if r.row is not None] != keys
    for key, row in by_key.items():
        outcome = classify_row(row)
        assert outcome.key == key
        assert set(row) == {"key", "response"}
        part = row["response"]["candidates"][0]["content"]["parts"][-1]
        with Image.open(io.BytesIO(base64.b64decode(part["inlineData"]["data"]))) as image:
            assert image.width / image.height == pytest.approx(16 / 9, rel=0.03)

    assert _rows(provider, done, start=3) == rows[3:]


def test_row_errors_become_status_rows_the_classifier_reads_as_failures(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str, jobs: VertexJobs
) -> None:
    jobs.state.faults = FaultPlan().row_error("bad", code=3, message="no such thing")
    made = _create(provider, objects, bucket, ["ok", "bad"])
    jobs.complete(made.name)
    rows = {r.row["key"]: r.row for r in _rows(provider, provider.get(made.name)) if r.row}
    assert set(rows["bad"]) == {"key", "status"}
    assert "400 INVALID_ARGUMENT" in rows["bad"]["status"]
    outcome = classify_row(rows["bad"])
    assert outcome.error_status == "INVALID_ARGUMENT"
    assert "response" in rows["ok"]
    assert provider.get(made.name).request_count == 2


def test_an_echo_without_labels_is_matched_to_its_key_by_the_request_itself(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str
) -> None:
    name = _stage(provider, objects, bucket, ["first", "second"])
    output = destination_for(bucket, name) + "prediction-model-x/"
    staged = [json.loads(x) for x in objects.read_bytes(bucket, name).splitlines()]
    echoed = [
        {"status": "", "request": {k: v for k, v in line["request"].items() if k != "labels"}}
        | {"response": {"candidates": []}}
        for line in reversed(staged)
    ]
    objects.write_bytes(
        bucket,
        output.removeprefix(f"gs://{bucket}/") + "predictions.jsonl",
        jsonl(echoed),
        content_type="application/jsonl",
    )
    batch = ProviderBatch(
        name="n", display_name="d", state=BatchState.SUCCEEDED, provider_state="x", output=output
    )
    assert [r.row["key"] for r in _rows(provider, batch) if r.row] == ["second", "first"]


def test_find_returns_the_job_with_that_display_name(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str
) -> None:
    first = _create(provider, objects, bucket, ["a"], display_name="bananabatch-j-b1-a1")
    _create(provider, objects, bucket, ["b"], display_name="bananabatch-j-b2-a1")
    found = provider.find("bananabatch-j-b1-a1")
    assert found is not None
    assert found.name == first.name
    assert provider.find("bananabatch-nothing") is None


def test_a_quota_refusal_is_provider_quota_exceeded_and_creates_nothing(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str, jobs: VertexJobs
) -> None:
    jobs.state.faults = FaultPlan(create_429=1)
    with pytest.raises(ProviderQuotaExceeded, match="429"):
        _create(provider, objects, bucket, ["a"])
    assert jobs.names() == []


def test_a_lost_create_answer_is_unknown_and_find_then_returns_the_job(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str, jobs: VertexJobs
) -> None:
    jobs.state.faults = FaultPlan(lose_create_response=1)
    with pytest.raises(ProviderOutcomeUnknown, match="reconcile"):
        _create(provider, objects, bucket, ["a"], display_name="bananabatch-lost")
    found = provider.find("bananabatch-lost")
    assert found is not None
    assert found.name == jobs.names()[0]


def test_an_unknown_model_or_a_missing_request_file_is_a_permanent_error(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str
) -> None:
    name = _stage(provider, objects, bucket, ["a"])
    with pytest.raises(PermanentError, match="404"):
        provider.create(
            model="gemini-0-nope",
            display_name="d",
            request_bucket=bucket,
            request_object=name,
            request_count=1,
        )
    with pytest.raises(PermanentError, match="does not exist"):
        provider.create(
            model=MODEL,
            display_name="d",
            request_bucket=bucket,
            request_object="jobs/none.jsonl",
            request_count=1,
        )


def test_a_failed_job_reports_its_error_and_has_no_predictions(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str, jobs: VertexJobs
) -> None:
    jobs.state.faults = FaultPlan().job("FAILED")
    made = _create(provider, objects, bucket, ["a"])
    jobs.complete(made.name)
    failed = provider.get(made.name)
    assert failed.state is BatchState.FAILED
    assert failed.error is not None
    assert "internal error" in failed.error


def test_cancel_cancels_and_is_harmless_on_a_finished_job(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str, jobs: VertexJobs
) -> None:
    made = _create(provider, objects, bucket, ["a"])
    provider.cancel(made.name)
    assert provider.get(made.name).state is BatchState.CANCELLED
    provider.cancel(made.name)
    assert provider.get(made.name).state is BatchState.CANCELLED


def test_getting_an_unknown_job_is_not_found(provider: VertexProvider) -> None:
    with pytest.raises(NotFound, match="404"):
        provider.get(f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/42")


def test_generate_returns_the_response_json(provider: VertexProvider) -> None:
    response = provider.generate(model=MODEL, request=image_request("A fox", "1:1", "512"))
    parts = response["candidates"][0]["content"]["parts"]
    assert any("inlineData" in part for part in parts)


def test_the_emulator_answers_the_unmodified_sdk_on_every_batch_method(
    emu: EmulatorServer, objects: GcsObjectStore, bucket: str, provider: VertexProvider
) -> None:
    client = genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=Credentials(token="tok"),  # type: ignore[no-untyped-call]
        http_options=types.HttpOptions(base_url=emu.base_url),
    )
    name = _stage(provider, objects, bucket, ["a"])
    job = client.batches.create(
        model=MODEL,
        src=f"gs://{bucket}/{name}",
        config={"display_name": "sdk", "dest": f"gs://{bucket}/out/"},
    )
    assert job.name is not None
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert job.src is not None
    assert job.src.gcs_uri == [f"gs://{bucket}/{name}"]
    listed = list(client.batches.list(config={"page_size": 1}))
    assert [j.name for j in listed] == [job.name]
    bare_id = job.name.rsplit("/", 1)[-1]
    jobs_for(emu.state).complete(bare_id)
    done = client.batches.get(name=bare_id)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.completion_stats is not None
    assert done.completion_stats.successful_count == 1
    assert done.output_info is not None
    assert (done.output_info.gcs_output_directory or "").startswith(f"gs://{bucket}/out/")
    deleted: Any = client.batches.delete(name=job.name)
    assert deleted.done is True
    with pytest.raises(genai.errors.ClientError) as caught:
        client.batches.get(name=job.name)
    assert caught.value.code == 404


def test_the_emulator_requires_a_bearer_token(emu: EmulatorServer) -> None:
    import httpx

    url = f"{emu.base_url}/v1beta1/projects/p/locations/l/batchPredictionJobs"
    answer = httpx.get(url)
    assert answer.status_code == 401
    assert answer.json()["error"]["status"] == "UNAUTHENTICATED"


def test_vertex_needs_a_project(objects: GcsObjectStore) -> None:
    with pytest.raises(ConfigError, match="project"):
        from_settings(Settings(provider=ProviderKind.VERTEX), objects)


def test_rows_done_before_a_cancel_are_kept_and_collected(
    provider: VertexProvider, objects: GcsObjectStore, bucket: str, emu: EmulatorServer
) -> None:
    # Vertex keeps completed work when a job is cancelled (field sheet §1 row 7): the
    # watchdog's cancel must not lose what was already made and paid for.
    emu.state.config.pending_seconds = 0.0
    emu.state.config.running_seconds = 100.0
    made = _create(provider, objects, bucket, ["a", "b", "c", "d"])
    assert provider.get(made.name).state is BatchState.RUNNING
    clock = emu.state.config.clock
    assert isinstance(clock, ManualClock)
    clock.advance(50.0)
    provider.cancel(made.name)
    cancelled = provider.get(made.name)
    assert cancelled.state is BatchState.CANCELLED
    rows = _rows(provider, cancelled)
    assert len(rows) == 2
    assert all(r.row is not None and "response" in r.row for r in rows)
    assert {r.row["key"] for r in rows if r.row is not None} <= {"a", "b", "c", "d"}
