"""The whole flow on emulated Google Cloud, for the Developer API (Gemini emulator) and for
Vertex AI batch prediction: the JSONL lands in the inbox bucket on the Cloud Storage
emulator, the storage-finalized CloudEvent Eventarc would deliver drives on_upload through
functions-framework, Pub/Sub push envelopes drive on_tick and on_batch_done (batch-done
messages are pulled from a subscription on the Pub/Sub fake), images land in the results
bucket, item and job state in the Firestore emulator, and the completion message is pulled
from a subscription on the completions topic. The driver is `GcpStack`
(tests/support/stacks.py), which the fault matrix runs on too.

Nothing waits on a clock: the emulators' batches finish on the first poll (a ManualClock
with zero delays), and empty pulls return at once.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jsonschema
import pytest
from PIL import Image

from bananabatch.config import Backend, ProviderKind, Settings
from bananabatch.core.catalog import CATALOG_AS_OF
from bananabatch.core.messages import load_completion_schema
from bananabatch.core.states import ItemState, JobState
from bananabatch.deployed import job_status, submit_file
from bananabatch.emulator.vertex import jobs_for
from bananabatch.errors import NotFound, PermanentError
from bananabatch.report.thumbs import thumb_object_name
from tests.support.gcp_plugin import anonymous_storage_client
from tests.support.stacks import GcpStack, open_stack

# Starts the Cloud Storage (and, end to end, Firestore and Pub/Sub) emulators.
pytestmark = pytest.mark.gcp

EXAMPLES: Final = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"


@pytest.fixture(params=[ProviderKind.EMULATOR, ProviderKind.VERTEX], ids=["gemini", "vertex"])
def gcp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GcpStack]:
    with open_stack(
        request, "gcp", tmp_path, provider=request.param, max_requests_per_batch=5
    ) as stack:
        assert isinstance(stack, GcpStack)
        yield stack


def _expected_ratio(line: Mapping[str, Any]) -> float:
    ratio = line.get("aspect_ratio") or line.get("request", {}).get("generationConfig", {}).get(
        "imageConfig", {}
    ).get("aspectRatio", "1:1")
    w, h = (int(x) for x in str(ratio).split(":"))
    return w / h


def _provider_batches(gcp: GcpStack) -> int:
    if gcp.settings.provider is ProviderKind.VERTEX:
        return len(jobs_for(gcp.emulator.state).names())
    return gcp.emulator.state.counters.batches_created


def test_the_example_file_goes_from_the_inbox_bucket_to_images_firestore_and_one_completion(
    gcp: GcpStack,
) -> None:
    # The day the demo's shut-down model is rejected (the catalog's lifecycles are dated).
    gcp.clock.now = datetime.combine(CATALOG_AS_OF, datetime.min.time(), UTC)
    job_id = gcp.submit(EXAMPLES)
    job, completions = gcp.run(job_id)
    lines = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    results, objects = gcp.settings.results_bucket, gcp.runtime.objects
    bad = {"old-nano-banana", "bad-ratio", "bad/key"}
    if gcp.settings.provider is ProviderKind.VERTEX:
        # Vertex batch makes 1K only: the 512 and 2K lines are rejected with that reason.
        bad |= {"poster-tall", "thumb-small", "pro-packshot"}

    assert job.state is JobState.PARTIAL  # three lines are deliberately bad
    summary = json.loads(objects.read_bytes(results, f"jobs/{job_id}/summary.json"))
    counts = summary["counts"]
    assert sum(counts.values()) == len(lines) == summary["line_count"]
    assert counts[ItemState.REJECTED] == len(bad)
    assert counts[ItemState.SUCCEEDED] == len(lines) - len(bad)

    # Every good line has its image in the results bucket and its item in Firestore.
    for line in lines:
        if line.get("key") in bad:
            continue
        key = line.get("key") or "line-000014"
        item = gcp.runtime.repo.get_item(job_id, key)
        assert item is not None
        assert item.state is ItemState.SUCCEEDED, (key, item.reason)
        assert item.image_uri == f"gs://{results}/jobs/{job_id}/images/{key}.png"
        data = objects.read_bytes(results, f"jobs/{job_id}/images/{key}.png")
        with Image.open(io.BytesIO(data)) as image:
            assert image.width / image.height == pytest.approx(_expected_ratio(line), rel=0.03)
        # Made by a separate on_batch_done invocation the collector asked for; the job has
        # settled (every batch-done message delivered), so it is there.
        thumb = objects.read_bytes(results, thumb_object_name(job_id, key))
        with Image.open(io.BytesIO(thumb)) as image:
            assert image.format == "JPEG", key
            assert max(image.size) <= 256, key

    rejected = [
        json.loads(x)
        for x in objects.read_bytes(results, f"jobs/{job_id}/rejected.jsonl").splitlines()
    ]
    assert [r["line"] for r in rejected] == [
        n for n, line in enumerate(lines, start=1) if line.get("key") in bad
    ]
    if gcp.settings.provider is ProviderKind.VERTEX:
        assert "Vertex batch produces 1K images only" in rejected[0]["reason"]
    result_lines = objects.read_bytes(results, f"jobs/{job_id}/results.jsonl").splitlines()
    assert [json.loads(x)["line"] for x in result_lines] == list(range(1, len(lines) + 1))

    # Exactly one completion message, valid against the published schema.
    assert len(completions) == 1
    message, attributes = completions[0].message, completions[0].attributes
    jsonschema.validate(message, load_completion_schema())
    assert message["job_id"] == job_id
    assert message["counts"] == counts
    assert message["costs"]["actual_usd"] > 0
    assert attributes["job_id"] == job_id
    assert attributes["state"] == JobState.PARTIAL.value
    # Nothing was paid for twice.
    assert _provider_batches(gcp) == job.batch_count


def test_a_redelivered_upload_event_creates_one_job_and_pays_once(
    gcp: GcpStack, tmp_path: Path
) -> None:
    source = tmp_path / "two.jsonl"
    source.write_text('{"key": "a", "prompt": "one"}\n{"key": "B.2", "prompt": "two"}\n')
    job_id = gcp.submit(source)
    job, _ = gcp.run(job_id)
    assert job.state is JobState.SUCCEEDED
    gcp.finalized("two.jsonl")
    gcp.tick()
    gcp.drain()
    assert _provider_batches(gcp) == 1
    assert gcp.runtime.repo.require_job(job_id).state is JobState.SUCCEEDED
    assert gcp.completions() == []


def test_the_cli_submits_a_gs_uri_from_another_bucket_and_reads_status_without_a_provider(
    gcp: GcpStack, gcp_project: str
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


def test_the_cli_refuses_what_would_never_start_a_job(gcp: GcpStack, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("{}\n")
    with pytest.raises(PermanentError, match=r"\*\.jsonl"):
        submit_file(gcp.settings, str(notes), stores=gcp.stores)
    with pytest.raises(PermanentError, match="no such file"):
        submit_file(gcp.settings, str(tmp_path / "absent.jsonl"), stores=gcp.stores)
    with pytest.raises(NotFound, match="existing object"):
        submit_file(gcp.settings, "gs://nowhere-bucket/x.jsonl", stores=gcp.stores)
