"""GeminiProvider against the emulator, on both API versions, with a folder object store."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

import httpx
import pytest
from google import genai
from google.genai import types
from PIL import Image

from bananabatch.adapters.local.objects import FolderObjectStore
from bananabatch.config import ProviderKind, Settings
from bananabatch.core.states import BatchState
from bananabatch.emulator import EmulatorServer, FaultPlan
from bananabatch.errors import (
    ConfigError,
    NotFound,
    PermanentError,
    ProviderOutcomeUnknown,
    ProviderQuotaExceeded,
    TransientError,
)
from bananabatch.ports import BatchProvider, ProviderBatch, ResultRow
from bananabatch.providers._common import batch_state, result_rows, split_lines
from bananabatch.providers.gemini import (
    INLINE_OUTPUT,
    Endpoint,
    GeminiProvider,
    batch_from_operation,
    from_settings,
)
from tests.support.emulator import API_VERSIONS, emulator, image_request, request_file

BUCKET = "results"
MODEL = "gemini-3.1-flash-image"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with emulator() as server:
        yield server


@pytest.fixture
def objects(tmp_path: Path) -> FolderObjectStore:
    return FolderObjectStore(tmp_path / "objects")


@pytest.fixture(params=API_VERSIONS)
def provider(
    request: pytest.FixtureRequest,
    emu: EmulatorServer,
    objects: FolderObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[GeminiProvider]:
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", request.param)
    settings = Settings(provider=ProviderKind.EMULATOR, gemini_base_url=emu.base_url)
    made = from_settings(settings, objects)
    assert made.endpoint.api_version == request.param
    yield made
    made.close()


def _stage(objects: FolderObjectStore, name: str, data: bytes) -> str:
    objects.write_bytes(BUCKET, name, data, content_type="application/jsonl")
    return name


def _create(
    provider: GeminiProvider,
    objects: FolderObjectStore,
    keys: list[str],
    display_name: str = "bananabatch-job-b0001-a1",
) -> ProviderBatch:
    name = _stage(objects, f"requests/{display_name}.jsonl", request_file(keys, "16:9", "512"))
    return provider.create(
        model=MODEL,
        display_name=display_name,
        request_bucket=BUCKET,
        request_object=name,
        request_count=len(keys),
    )


def test_the_provider_satisfies_the_port(provider: GeminiProvider) -> None:
    assert isinstance(provider, BatchProvider)
    assert provider.kind == "emulator"


def test_request_lines_round_trip(provider: GeminiProvider) -> None:
    request = image_request("A kite", "1:1")
    line = provider.encode_request("k1", request)
    assert line == {"key": "k1", "request": request}
    assert provider.decode_request(json.loads(json.dumps(line))) == ("k1", request)
    with pytest.raises(PermanentError, match="expected"):
        provider.decode_request({"request": request})


def test_a_batch_is_created_runs_completes_and_streams_its_results(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    made = _create(provider, objects, ["a", "b", "c"])
    assert made.name.startswith("batches/")
    assert (made.state, made.provider_state) == (BatchState.RUNNING, "JOB_STATE_PENDING")
    assert made.display_name == "bananabatch-job-b0001-a1"
    running = provider.get(made.name)
    assert (running.state, running.output, running.request_count) == (BatchState.RUNNING, None, 3)

    emu.state.complete(made.name)
    done = provider.get(made.name)
    assert (done.state, done.provider_state) == (BatchState.SUCCEEDED, "BATCH_STATE_SUCCEEDED")
    assert done.output == f"files/batch-{made.name.removeprefix('batches/')}"
    assert done.end_time is not None
    assert done.error is None

    rows = list(provider.iter_results(done))
    assert [(r.line_no, r.row and r.row["key"]) for r in rows] == [(0, "a"), (1, "b"), (2, "c")]
    assert rows[0].row is not None
    part = rows[0].row["response"]["candidates"][0]["content"]["parts"][-1]
    image = Image.open(io.BytesIO(base64.b64decode(part["inlineData"]["data"])))
    assert image.width / image.height == pytest.approx(16 / 9, rel=0.02)


def test_results_resume_from_a_start_line(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    made = _create(provider, objects, ["a", "b", "c", "d"])
    emu.state.complete(made.name)
    rows = list(provider.iter_results(provider.get(made.name), start_line=2))
    assert [(r.line_no, r.row and r.row["key"]) for r in rows] == [(2, "c"), (3, "d")]


def test_row_errors_come_through_as_rows(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    emu.state.faults = FaultPlan().row_error("b", code=13, message="boom")
    made = _create(provider, objects, ["a", "b"])
    emu.state.complete(made.name)
    rows = {r.row["key"]: r.row for r in provider.iter_results(provider.get(made.name)) if r.row}
    assert rows["b"]["error"] == {"code": 13, "message": "boom"}
    assert "response" in rows["a"]


def test_find_returns_the_batch_with_that_display_name(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    first = _create(provider, objects, ["a"], display_name="bananabatch-j-b0001-a1")
    for index in range(2, 5):
        _create(provider, objects, ["a"], display_name=f"bananabatch-j-b{index:04d}-a1")
    found = provider.find("bananabatch-j-b0001-a1")
    assert found is not None
    assert (found.name, found.request_count) == (first.name, 1)
    assert provider.find("bananabatch-j-b0009-a1") is None


def test_find_pages_through_the_whole_list(
    provider: GeminiProvider, objects: FolderObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bananabatch.providers.gemini.LIST_PAGE_SIZE", 2)
    oldest = _create(provider, objects, ["a"], display_name="oldest")
    for index in range(5):
        _create(provider, objects, ["a"], display_name=f"newer-{index}")
    found = provider.find("oldest")
    assert found is not None
    assert found.name == oldest.name


def test_a_quota_refusal_is_provider_quota_exceeded_and_creates_nothing(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    emu.state.faults = FaultPlan(create_429=1)
    with pytest.raises(ProviderQuotaExceeded, match="429"):
        _create(provider, objects, ["a"])
    assert emu.state.counters.batches_created == 0
    assert provider.find("bananabatch-job-b0001-a1") is None
    # Nothing reads the uploaded request file: it left the Files store at once.
    assert emu.state.files_store_bytes() == 0


def test_a_server_error_on_create_is_an_unknown_outcome(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    emu.state.faults = FaultPlan(create_500=1)
    with pytest.raises(ProviderOutcomeUnknown):
        _create(provider, objects, ["a"])
    # The batch may exist and read it: the request file stays.
    assert emu.state.files_store_bytes() > 0


def test_a_lost_create_answer_is_unknown_and_find_then_returns_the_batch(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    emu.state.faults = FaultPlan(lose_create_response=1)
    with pytest.raises(ProviderOutcomeUnknown, match="reconcile by display name"):
        _create(provider, objects, ["a", "b"], display_name="bananabatch-lost-b0001-a1")
    found = provider.find("bananabatch-lost-b0001-a1")
    assert found is not None
    assert found.state is BatchState.RUNNING
    assert found.request_count == 2
    assert emu.state.counters.batches_created == 1


def test_an_unknown_model_is_a_permanent_error(
    provider: GeminiProvider, objects: FolderObjectStore
) -> None:
    name = _stage(objects, "requests/x.jsonl", request_file(["a"]))
    with pytest.raises(PermanentError, match="404") as caught:
        provider.create(
            model="gemini-0-image",
            display_name="x",
            request_bucket=BUCKET,
            request_object=name,
            request_count=1,
        )
    assert not isinstance(caught.value, TransientError)


def test_a_malformed_model_name_is_refused_before_anything_is_uploaded(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    name = _stage(objects, "requests/x.jsonl", request_file(["a"]))
    with pytest.raises(PermanentError, match="not a valid model name"):
        provider.create(
            model="../models/x",
            display_name="x",
            request_bucket=BUCKET,
            request_object=name,
            request_count=1,
        )
    assert provider.client.files.list().page == []
    assert emu.state.counters.batches_created == 0


def test_a_missing_request_object_is_not_found(provider: GeminiProvider) -> None:
    with pytest.raises(NotFound):
        provider.create(
            model=MODEL,
            display_name="x",
            request_bucket=BUCKET,
            request_object="requests/absent.jsonl",
            request_count=1,
        )


def test_a_failed_job_reports_its_error(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    emu.state.faults = FaultPlan().job("FAILED")
    made = _create(provider, objects, ["a"])
    emu.state.complete(made.name)
    failed = provider.get(made.name)
    assert failed.state is BatchState.FAILED
    assert failed.output is None
    assert failed.error is not None
    assert "internal error" in failed.error


def test_an_expired_job_is_expired(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    emu.state.faults = FaultPlan().job("EXPIRED")
    made = _create(provider, objects, ["a"])
    emu.state.complete(made.name)
    assert provider.get(made.name).state is BatchState.EXPIRED


def test_cancel_cancels_and_is_harmless_on_a_finished_batch(
    provider: GeminiProvider, objects: FolderObjectStore
) -> None:
    made = _create(provider, objects, ["a"])
    provider.cancel(made.name)
    assert provider.get(made.name).state is BatchState.CANCELLED
    provider.cancel(made.name)
    assert provider.get(made.name).state is BatchState.CANCELLED


def test_getting_an_unknown_batch_is_not_found(provider: GeminiProvider) -> None:
    with pytest.raises(NotFound, match="404"):
        provider.get("batches/doesnotexist")


def test_inline_output_is_read_as_rows_keyed_by_metadata(
    provider: GeminiProvider, emu: EmulatorServer
) -> None:
    job = provider.client.batches.create(
        model=MODEL,
        src=[
            types.InlinedRequest(contents="A cat", metadata={"key": "cat"}),
            types.InlinedRequest(
                contents="A dog",
                config=types.GenerateContentConfig(
                    image_config=types.ImageConfig(aspect_ratio="7:3")
                ),
                metadata={"key": "dog"},
            ),
            types.InlinedRequest(contents="A cow", metadata={"key": "cow"}),
        ],
    )
    assert job.name is not None
    emu.state.complete(job.name)
    done = provider.get(job.name)
    assert done.output == INLINE_OUTPUT
    rows = list(provider.iter_results(done, start_line=1))
    assert [(r.line_no, r.row and r.row["key"]) for r in rows] == [(1, "dog"), (2, "cow")]
    assert rows[0].row is not None
    assert rows[0].row["error"]["code"] == 3
    assert "response" in (rows[1].row or {})


def test_generate_returns_the_response_json(provider: GeminiProvider, emu: EmulatorServer) -> None:
    response = provider.generate(model=MODEL, request=image_request("A boat", "4:1", "512"))
    parts = response["candidates"][0]["content"]["parts"]
    assert parts[-1]["inlineData"]["mimeType"] == "image/png"
    assert emu.state.counters.sync_requests == 1
    with pytest.raises(PermanentError, match="400"):
        provider.generate(model=MODEL, request=image_request("A boat", "9:7"))


# --- transport failures --------------------------------------------------------------------


class _CutTransport(httpx.HTTPTransport):
    """Passes requests through, except that the connection drops on the path given."""

    def __init__(self, cut: str) -> None:
        super().__init__()
        self.cut = cut

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut in request.url.path:
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return super().handle_request(request)


def _provider_with_cut(emu: EmulatorServer, objects: FolderObjectStore, cut: str) -> GeminiProvider:
    client = genai.Client(
        api_key="k",
        http_options=types.HttpOptions(
            base_url=emu.base_url,
            httpx_client=httpx.Client(transport=_CutTransport(cut)),
        ),
    )
    return GeminiProvider(client, objects)


def test_a_connection_lost_during_create_is_an_unknown_outcome(
    emu: EmulatorServer, objects: FolderObjectStore
) -> None:
    provider = _provider_with_cut(emu, objects, ":batchGenerateContent")
    with pytest.raises(ProviderOutcomeUnknown):
        _create(provider, objects, ["a"])


def test_a_connection_lost_during_upload_is_transient_and_creates_nothing(
    emu: EmulatorServer, objects: FolderObjectStore
) -> None:
    provider = _provider_with_cut(emu, objects, "/upload/")
    with pytest.raises(TransientError) as caught:
        _create(provider, objects, ["a"])
    assert not isinstance(caught.value, ProviderOutcomeUnknown)
    assert "nothing was created" in str(caught.value)
    assert emu.state.counters.batches_created == 0


class _UnseekableStore(FolderObjectStore):
    """A store whose reads cannot seek, like a plain network stream."""

    @contextmanager
    def open_read(self, bucket: str, name: str) -> Iterator[IO[bytes]]:
        with super().open_read(bucket, name) as source:
            yield cast(IO[bytes], _Unseekable(source.read()))


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_a_stream_that_cannot_seek_is_spooled_before_upload(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    store = _UnseekableStore(tmp_path / "unseekable")
    settings = Settings(provider=ProviderKind.EMULATOR, gemini_base_url=emu.base_url)
    provider = from_settings(settings, store)
    made = _create(provider, store, ["a", "b"])
    emu.state.complete(made.name)
    assert [r.row and r.row["key"] for r in provider.iter_results(provider.get(made.name))] == [
        "a",
        "b",
    ]


# --- settings ------------------------------------------------------------------------------


def test_the_emulator_provider_needs_a_base_url(objects: FolderObjectStore) -> None:
    with pytest.raises(ConfigError, match="GOOGLE_GEMINI_BASE_URL"):
        from_settings(Settings(provider=ProviderKind.EMULATOR), objects)


def test_the_gemini_provider_needs_an_api_key(objects: FolderObjectStore) -> None:
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        from_settings(Settings(provider=ProviderKind.GEMINI), objects)


def test_the_endpoint_follows_the_sdks_environment(
    emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.base_url + "/")
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "beta")
    endpoint = Endpoint.of(genai.Client(api_key="secret"))
    assert endpoint == Endpoint(emu.base_url, "v1beta", "secret")
    assert endpoint.url("batches/x") == f"{emu.base_url}/v1beta/batches/x"


# --- pure helpers --------------------------------------------------------------------------


def test_lines_split_across_chunks_are_rejoined() -> None:
    chunks = [b'{"a"', b": 1}\n", b"\n", b'{"b": 2}\n{"c"', b": 3}"]
    assert list(split_lines(chunks)) == [b'{"a": 1}', b"", b'{"b": 2}', b'{"c": 3}']


def test_a_long_line_arriving_in_many_chunks_is_one_line() -> None:
    line = b'{"key": "big", "data": "' + b"x" * 100_000 + b'"}'
    chunks = [line[i : i + 7] for i in range(0, len(line), 7)] + [b"\n"]
    assert list(split_lines(chunks)) == [line]


def test_a_malformed_line_is_a_row_with_a_reason_and_keeps_its_number() -> None:
    rows = list(result_rows([b'{"key": "a"}', b"", b"{oops", b"[1]", b'{"key": "d"}']))
    assert [r.line_no for r in rows] == [0, 1, 2, 3]
    assert rows[1].row is None
    assert rows[1].malformed is not None
    assert "result line 1" in rows[1].malformed
    assert rows[2].malformed is not None
    assert "expected a JSON object" in rows[2].malformed
    assert rows[3] == ResultRow(3, {"key": "d"})


def test_skipped_lines_still_count_toward_line_numbers() -> None:
    rows = list(result_rows([b'{"key": "a"}', b"garbage", b'{"key": "c"}'], start_line=2))
    assert rows == [ResultRow(2, {"key": "c"})]


@pytest.mark.parametrize(
    ("wire", "ours"),
    [
        ("BATCH_STATE_PENDING", BatchState.RUNNING),
        ("JOB_STATE_RUNNING", BatchState.RUNNING),
        ("BATCH_STATE_SUCCEEDED", BatchState.SUCCEEDED),
        ("JOB_STATE_FAILED", BatchState.FAILED),
        ("BATCH_STATE_CANCELLED", BatchState.CANCELLED),
        ("BATCH_STATE_EXPIRED", BatchState.EXPIRED),
        ("BATCH_STATE_SOMETHING_NEW", BatchState.RUNNING),
    ],
)
def test_provider_states_map_to_ours(wire: str, ours: BatchState) -> None:
    assert batch_state(wire) is ours


def test_an_operation_with_an_error_and_stats_is_read_whole() -> None:
    batch = batch_from_operation(
        {
            "name": "batches/abc",
            "metadata": {
                "displayName": "d",
                "state": "BATCH_STATE_FAILED",
                "batchStats": {"requestCount": "7"},
                "createTime": "2025-12-10T18:27:01.407650525Z",
            },
            "done": True,
            "error": {"code": 13, "message": "it broke"},
        }
    )
    assert (batch.name, batch.display_name, batch.state) == ("batches/abc", "d", BatchState.FAILED)
    assert (batch.request_count, batch.error, batch.output) == (7, "13: it broke", None)
    assert batch.create_time is not None
    assert batch.create_time.microsecond == 407650


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "teal").save(out, format="PNG")
    return out.getvalue()


def test_the_synchronous_lane_sends_gcs_references_as_signed_urls(
    provider: GeminiProvider, emu: EmulatorServer, objects: FolderObjectStore
) -> None:
    objects.write_bytes(BUCKET, "references/r.png", _png(), content_type="image/png")
    emu.state.config.local_files_root = objects.root
    request = image_request("A boat like this")
    reference = {
        "fileData": {"fileUri": f"gs://{BUCKET}/references/r.png", "mimeType": "image/png"}
    }
    request["contents"][0]["parts"].append(reference)
    provider.generate(model=MODEL, request=request)
    (read,) = emu.state.references_read
    assert read.startswith("file://")
    assert "X-Goog-Expires=259200" in read
    # The caller's request is left as it was.
    assert request["contents"][0]["parts"][1]["fileData"]["fileUri"].startswith("gs://")


def test_a_finished_batch_names_its_request_file_and_releasing_it_twice_is_harmless(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    made = _create(provider, objects, ["a", "b"])
    assert made.input_file is not None
    emu.state.complete(made.name)
    done = provider.get(made.name)
    assert done.input_file == made.input_file
    store = provider.files_store_bytes()
    assert store == emu.state.files_store_bytes() > 0
    provider.release_input(done)
    provider.release_input(done)  # already gone: a 403, taken as done
    assert provider.files_store_bytes() < store
    assert all(e.file_id != made.input_file.removeprefix("files/") for e in emu.state._live_files())


def test_a_row_error_echoing_a_signed_url_is_collected_without_its_credential(
    provider: GeminiProvider, objects: FolderObjectStore, emu: EmulatorServer
) -> None:
    echoed = (
        "Cannot fetch content from the provided URL https://storage.googleapis.com/b/r.png"
        "?X-Goog-Expires=259200&X-Goog-Signature=feedface"
    )
    emu.state.faults = FaultPlan().row_error("b", code=3, message=echoed)
    made = _create(provider, objects, ["a", "b"])
    emu.state.complete(made.name)
    rows = {r.row["key"]: r.row for r in provider.iter_results(provider.get(made.name)) if r.row}
    # Image data may come as a view of the line's ASCII bytes (ports.ResultRow).
    assert "feedface" not in json.dumps(rows, default=lambda view: str(view, "ascii"))
    assert "X-Goog-Signature=REDACTED" in rows["b"]["error"]["message"]
