"""The unmodified google-genai SDK against the Gemini Batch emulator, on both API versions."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from bananabatch.core.catalog import image_dimensions, model_spec
from bananabatch.emulator import EmulatorServer, FaultPlan, ManualClock
from bananabatch.emulator.store import MAX_INLINE_BYTES
from tests.support.emulator import (
    API_VERSIONS,
    emulator,
    image_request,
    jsonl,
    request_file,
    sdk_client,
)

MODEL = "gemini-3-pro-image"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with emulator() as server:
        yield server


@pytest.fixture(params=API_VERSIONS)
def client(request: pytest.FixtureRequest, emu: EmulatorServer) -> genai.Client:
    return sdk_client(emu, request.param)


def _upload(client: genai.Client, data: bytes, display_name: str = "input") -> types.File:
    return client.files.upload(
        file=io.BytesIO(data), config={"mime_type": "jsonl", "display_name": display_name}
    )


def _file_batch(
    client: genai.Client, data: bytes, display_name: str = "batch", model: str = MODEL
) -> types.BatchJob:
    uploaded = _upload(client, data)
    assert uploaded.name is not None
    return client.batches.create(
        model=model, src=uploaded.name, config={"display_name": display_name}
    )


def _results(
    client: genai.Client, emu: EmulatorServer, job: types.BatchJob
) -> list[dict[str, Any]]:
    assert job.name is not None
    emu.state.complete(job.name)
    done = client.batches.get(name=job.name)
    assert done.dest is not None
    assert done.dest.file_name is not None
    raw = client.files.download(file=done.dest.file_name)
    return [json.loads(line) for line in raw.splitlines()]


def _png(part: dict[str, Any]) -> Image.Image:
    assert part["inlineData"]["mimeType"] == "image/png"
    return Image.open(io.BytesIO(base64.b64decode(part["inlineData"]["data"])))


# --- files ---------------------------------------------------------------------------------


def test_an_uploaded_file_can_be_got_listed_and_deleted(client: genai.Client) -> None:
    data = request_file(["a", "b"])
    uploaded = _upload(client, data, display_name="my input")
    assert uploaded.name is not None
    assert uploaded.name.startswith("files/")
    assert (uploaded.size_bytes, uploaded.mime_type, uploaded.display_name) == (
        len(data),
        "jsonl",
        "my input",
    )
    assert uploaded.sha256_hash == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert client.files.get(name=uploaded.name).size_bytes == len(data)
    assert uploaded.name in [f.name for f in client.files.list()]
    client.files.delete(name=uploaded.name)
    assert uploaded.name not in [f.name for f in client.files.list()]
    with pytest.raises(errors.ClientError):
        client.files.get(name=uploaded.name)


def test_an_upload_larger_than_one_8_mib_chunk_arrives_whole(client: genai.Client) -> None:
    data = os.urandom(8 * 1024 * 1024 + 4321)
    uploaded = _upload(client, data)
    assert uploaded.size_bytes == len(data)
    assert uploaded.sha256_hash == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_files_list_pages(client: genai.Client) -> None:
    names = {_upload(client, request_file([str(i)])).name for i in range(3)}
    pager = client.files.list(config={"page_size": 2})
    assert len(pager.page) == 2
    assert names <= {f.name for f in pager}


def test_a_chunk_at_the_wrong_offset_is_refused(emu: EmulatorServer) -> None:
    start = httpx.post(
        f"{emu.base_url}/upload/v1beta/files",
        json={"file": {"mime_type": "jsonl", "size_bytes": 10}},
        headers={
            "x-goog-api-key": "k",
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "10",
        },
    )
    url = start.headers["x-goog-upload-url"]
    assert url.startswith(emu.base_url)
    wrong = httpx.post(
        url,
        content=b"12345",
        headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "3"},
    )
    assert wrong.status_code == 400
    assert "expected 0, found 3" in wrong.json()["error"]["message"]


# --- batches -------------------------------------------------------------------------------


def test_a_file_batch_moves_pending_running_succeeded_with_the_clock(api_version: str) -> None:
    clock = ManualClock()
    with emulator(clock=clock, pending_seconds=30, running_seconds=60) as emu:
        client = sdk_client(emu, api_version)
        job = _file_batch(client, request_file(["a"]))
        assert job.name is not None
        assert job.state == types.JobState.JOB_STATE_PENDING
        clock.advance(29)
        assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_PENDING
        clock.advance(1)
        assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
        clock.advance(60)
        done = client.batches.get(name=job.name)
        assert done.state == types.JobState.JOB_STATE_SUCCEEDED
        assert done.dest is not None
        assert done.dest.file_name == f"files/batch-{job.name[8:]}"
        assert done.end_time is not None
        assert done.create_time is not None


@pytest.fixture(params=API_VERSIONS)
def api_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize(
    ("model", "ratio", "size"),
    [
        ("gemini-3-pro-image", "16:9", "2K"),
        ("gemini-3.1-flash-image", "1:4", "512"),
        ("gemini-2.5-flash-image", "3:2", None),
    ],
)
def test_result_lines_hold_pngs_of_the_requested_ratio_and_catalog_image_tokens(
    client: genai.Client, emu: EmulatorServer, model: str, ratio: str, size: str | None
) -> None:
    job = _file_batch(client, request_file(["k1", "k2"], ratio, size), model=model)
    rows = _results(client, emu, job)
    assert [row["key"] for row in rows] == ["k1", "k2"]
    spec = model_spec(model)
    assert spec is not None
    tier = size or spec.default_size
    for row in rows:
        parts = row["response"]["candidates"][0]["content"]["parts"]
        image = _png(parts[-1])
        assert image.size == image_dimensions(ratio, tier)
        want_w, want_h = (int(x) for x in ratio.split(":"))
        assert abs(image.width / image.height - want_w / want_h) < 0.02
        usage = row["response"]["usageMetadata"]
        image_detail = [d for d in usage["candidatesTokensDetails"] if d["modality"] == "IMAGE"]
        assert image_detail == [{"modality": "IMAGE", "tokenCount": spec.image_tokens[tier]}]
        assert ("thoughtsTokenCount" in usage) == model.startswith("gemini-3")


def test_an_inline_batch_answers_in_request_order_with_metadata(
    client: genai.Client, emu: EmulatorServer
) -> None:
    job = client.batches.create(
        model="gemini-3.1-flash-image",
        src=[
            types.InlinedRequest(
                contents="A cat",
                config=types.GenerateContentConfig(
                    response_modalities=["IMAGE"],
                    image_config=types.ImageConfig(aspect_ratio="9:16", image_size="1K"),
                ),
                metadata={"key": "cat"},
            ),
            types.InlinedRequest(
                contents="A dog",
                config=types.GenerateContentConfig(
                    image_config=types.ImageConfig(aspect_ratio="7:3")
                ),
                metadata={"key": "dog"},
            ),
        ],
        config={"display_name": "inline"},
    )
    assert job.name is not None
    emu.state.complete(job.name)
    done = client.batches.get(name=job.name)
    assert done.dest is not None
    assert done.dest.inlined_responses is not None
    cat, dog = done.dest.inlined_responses
    assert cat.metadata == {"key": "cat"}
    assert dog.metadata == {"key": "dog"}
    assert cat.response is not None
    assert cat.response.candidates
    content = cat.response.candidates[0].content
    assert content is not None
    assert content.parts
    blob = content.parts[0].inline_data
    assert blob is not None
    assert blob.data is not None
    assert Image.open(io.BytesIO(blob.data)).size == image_dimensions("9:16", "1K")
    assert dog.response is None
    assert dog.error is not None
    assert dog.error.code == 3


def test_list_pages_newest_first_and_shows_display_names(client: genai.Client) -> None:
    for index in range(3):
        _file_batch(client, request_file(["a"]), display_name=f"batch-{index}")
    pager = client.batches.list(config={"page_size": 2})
    assert [job.display_name for job in pager.page] == ["batch-2", "batch-1"]
    assert [job.display_name for job in pager] == ["batch-2", "batch-1", "batch-0"]


def test_cancel_ends_a_batch_and_delete_removes_it(
    client: genai.Client, emu: EmulatorServer
) -> None:
    job = _file_batch(client, request_file(["a", "b"]))
    assert job.name is not None
    emu.state.advance(job.name)
    assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_RUNNING
    client.batches.cancel(name=job.name)
    assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_CANCELLED
    client.batches.cancel(name=job.name)  # a finished batch stays as it is
    client.batches.delete(name=job.name)
    with pytest.raises(errors.ClientError) as caught:
        client.batches.get(name=job.name)
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")


def test_a_cancelled_running_batch_keeps_the_rows_already_done(api_version: str) -> None:
    clock = ManualClock()
    with emulator(clock=clock, pending_seconds=0, running_seconds=100) as emu:
        client = sdk_client(emu, api_version)
        job = _file_batch(client, request_file(["a", "b", "c", "d"]))
        assert job.name is not None
        clock.advance(50)
        client.batches.cancel(name=job.name)
        done = client.batches.get(name=job.name)
        assert done.state == types.JobState.JOB_STATE_CANCELLED
        assert done.dest is not None
        assert done.dest.file_name is not None
        rows = client.files.download(file=done.dest.file_name).splitlines()
        assert [json.loads(r)["key"] for r in rows] == ["a", "b"]


def test_an_unknown_model_is_404_not_found(client: genai.Client) -> None:
    uploaded = _upload(client, request_file(["a"]))
    assert uploaded.name is not None
    with pytest.raises(errors.ClientError) as caught:
        client.batches.create(model="gemini-9-ultra-image", src=uploaded.name)
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")


def test_an_unsupported_ratio_fails_only_its_row_with_code_3(
    client: genai.Client, emu: EmulatorServer
) -> None:
    data = jsonl(
        [
            {"key": "ok", "request": image_request("fine", "1:1")},
            {"key": "bad", "request": image_request("too tall", "1:8")},
        ]
    )
    rows = {row["key"]: row for row in _results(client, emu, _file_batch(client, data))}
    assert "response" in rows["ok"]
    assert rows["bad"]["error"]["code"] == 3
    assert "1:8" in rows["bad"]["error"]["message"]


def test_a_file_that_is_not_jsonl_is_refused_at_create(client: genai.Client) -> None:
    uploaded = _upload(client, b'{"key": "a", "request": {}}\nnot json\n')
    assert uploaded.name is not None
    with pytest.raises(errors.ClientError) as caught:
        client.batches.create(model=MODEL, src=uploaded.name)
    assert caught.value.code == 400
    assert "line 2" in str(caught.value.message)


def test_generate_content_answers_synchronously_with_an_image(client: genai.Client) -> None:
    response = client.models.generate_content(
        model=MODEL,
        contents="A teapot",
        config=types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio="4:3", image_size="1K"),
        ),
    )
    assert response.candidates
    assert response.candidates[0].content
    images = [p.inline_data for p in response.candidates[0].content.parts or [] if p.inline_data]
    assert images
    assert images[0].data is not None
    assert Image.open(io.BytesIO(images[0].data)).size == image_dimensions("4:3", "1K")
    assert response.usage_metadata is not None
    assert response.usage_metadata.thoughts_token_count


def test_the_sdk_finds_the_emulator_through_its_environment_variables(
    emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.base_url)
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1beta")
    client = genai.Client(api_key="env-key")
    job = _file_batch(client, request_file(["a"]))
    assert job.name is not None
    assert client.batches.get(name=job.name).name == job.name


# --- raw protocol details ------------------------------------------------------------------


def test_downloads_work_on_the_download_alias_with_a_query_key_and_ranges(
    client: genai.Client, emu: EmulatorServer
) -> None:
    job = _file_batch(client, request_file(["a"]))
    assert job.name is not None
    emu.state.complete(job.name)
    file_id = f"batch-{job.name.removeprefix('batches/')}"
    whole = httpx.get(
        f"{emu.base_url}/download/v1beta/files/{file_id}:download",
        params={"alt": "media", "key": "k"},
    )
    assert whole.status_code == 200
    assert json.loads(whole.content)["key"] == "a"
    part = httpx.get(
        f"{emu.base_url}/v1/files/{file_id}:download",
        params={"alt": "media"},
        headers={"x-goog-api-key": "k", "Range": "bytes=2-6"},
    )
    assert part.status_code == 206
    assert part.content == whole.content[2:7]


def test_a_request_without_a_key_is_refused(emu: EmulatorServer) -> None:
    response = httpx.get(f"{emu.base_url}/v1beta/batches")
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


def test_a_configured_api_key_must_match(api_version: str) -> None:
    with emulator(api_key="right") as emu:
        # Keep each client referenced: the SDK closes its HTTP client when it is collected.
        wrong = sdk_client(emu, api_version, api_key="wrong")
        with pytest.raises(errors.ClientError) as caught:
            list(wrong.batches.list())
        assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
        right = sdk_client(emu, api_version, api_key="right")
        assert list(right.batches.list()) == []


def test_a_standard_aiza_key_is_refused_as_the_service_refuses_it_even_when_configured(
    api_version: str,
) -> None:
    standard = "AIzaSyA-standard-key-0000000000000000"
    with emulator(api_key=standard) as emu:
        client = sdk_client(emu, api_version, api_key=standard)
        with pytest.raises(errors.ClientError) as caught:
            list(client.batches.list())
        assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
        details = caught.value.details["error"]["details"]
        assert any(d.get("reason") == "API_KEY_INVALID" for d in details)


def test_snake_case_create_bodies_are_accepted(client: genai.Client, emu: EmulatorServer) -> None:
    uploaded = _upload(client, request_file(["a"]))
    response = httpx.post(
        f"{emu.base_url}/v1beta/models/{MODEL}:batchGenerateContent",
        json={"batch": {"display_name": "snake", "input_config": {"file_name": uploaded.name}}},
        headers={"x-goog-api-key": "k"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["metadata"]["displayName"] == "snake"
    assert body["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert body["metadata"]["batchStats"] == {"requestCount": "1", "pendingRequestCount": "1"}


def test_an_inline_body_over_the_cap_is_refused(emu: EmulatorServer) -> None:
    assert MAX_INLINE_BYTES == 20 * 1024 * 1024
    emu.state.config.max_inline_bytes = 2_000
    body = {
        "batch": {
            "inputConfig": {"requests": {"requests": [{"request": image_request("x" * 3_000)}]}}
        }
    }
    response = httpx.post(
        f"{emu.base_url}/v1/models/{MODEL}:batchGenerateContent",
        json=body,
        headers={"x-goog-api-key": "k"},
    )
    assert response.status_code == 400
    assert "exceeds the limit" in response.json()["error"]["message"]


def test_a_failed_job_reports_its_error_in_the_raw_operation(emu: EmulatorServer) -> None:
    emu.state.faults = FaultPlan().job("FAILED", display_name="doomed-*")
    client = sdk_client(emu, "v1")
    job = _file_batch(client, request_file(["a"]), display_name="doomed-1")
    ok = _file_batch(client, request_file(["a"]), display_name="fine-1")
    assert job.name is not None
    assert ok.name is not None
    emu.state.complete_all()
    assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_FAILED
    assert client.batches.get(name=ok.name).state == types.JobState.JOB_STATE_SUCCEEDED
    raw = httpx.get(f"{emu.base_url}/v1/{job.name}", headers={"x-goog-api-key": "k"}).json()
    assert raw["done"] is True
    assert raw["error"]["code"] == 13
    assert "output" not in raw["metadata"]


# --- faults and counters -------------------------------------------------------------------


def test_row_faults_show_up_in_the_result_file(client: genai.Client, emu: EmulatorServer) -> None:
    emu.state.faults = (
        FaultPlan()
        .row_error("err", code=13, message="boom")
        .row("safety", "image_safety")
        .row("blocked", "prompt_blocked")
        .row("noimg", "no_image")
        .row("twice", "duplicate")
        .row("gone", "missing")
    )
    keys = ["ok", "err", "safety", "blocked", "noimg", "twice", "gone"]
    rows = _results(client, emu, _file_batch(client, request_file(keys)))
    assert [row["key"] for row in rows] == [
        "ok",
        "err",
        "safety",
        "blocked",
        "noimg",
        "twice",
        "twice",
    ]
    by_key = {row["key"]: row for row in rows}
    assert by_key["err"]["error"] == {"code": 13, "message": "boom"}
    assert by_key["safety"]["response"]["candidates"][0]["finishReason"] == "IMAGE_SAFETY"
    assert by_key["blocked"]["response"]["promptFeedback"]["blockReason"] == "PROHIBITED_CONTENT"
    assert by_key["noimg"]["response"]["candidates"][0]["finishReason"] == "NO_IMAGE"


def test_create_faults_refuse_fail_or_lose_the_answer(
    client: genai.Client, emu: EmulatorServer
) -> None:
    emu.state.faults = FaultPlan(create_429=1, create_500=1, lose_create_response=1)
    uploaded = _upload(client, request_file(["a"]))
    assert uploaded.name is not None

    def create() -> types.BatchJob:
        assert uploaded.name is not None
        return client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "d"})

    with pytest.raises(errors.ClientError) as quota:
        create()
    assert (quota.value.code, quota.value.status) == (429, "RESOURCE_EXHAUSTED")
    with pytest.raises(errors.ServerError):
        create()
    assert emu.state.counters.batches_created == 0
    with pytest.raises(errors.ServerError):
        create()
    assert emu.state.counters.batches_created == 1  # created, though the answer was lost
    assert [job.display_name for job in client.batches.list()] == ["d"]
    assert create().name is not None
    assert emu.state.counters.rows_by_display_name["d"] == 2


def test_the_counters_expose_keys_submitted_twice_within_a_job(
    client: genai.Client, emu: EmulatorServer
) -> None:
    _file_batch(client, request_file(["a", "b"]), display_name="bananabatch-job1-b0001-a1")
    _file_batch(client, request_file(["b", "c"]), display_name="bananabatch-job1-b0002-a1")
    _file_batch(client, request_file(["a"]), display_name="bananabatch-job2-b0001-a1")
    assert emu.state.duplicate_keys("bananabatch-job1-") == ["b"]
    assert emu.state.duplicate_keys("bananabatch-job2-") == []
    assert emu.state.submitted_keys("bananabatch-job1-")["a"] == 1
