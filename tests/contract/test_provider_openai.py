"""OpenAIBatchProvider against the OpenAI Batch emulator, through the unmodified `openai` SDK,
with a folder object store: the BatchProvider port's contract, as the Gemini and Vertex
adapters meet it, plus what is OpenAI's own (two result files, metadata lookup, expiry with
partial output, the service's undocumented choices played both ways)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bananabatch.adapters.local.objects import FolderObjectStore
from bananabatch.config import Settings
from bananabatch.core.results import OutcomeKind, classify_row
from bananabatch.core.states import BatchState
from bananabatch.emulator.faults import FaultPlan, RowFault
from bananabatch.emulator.openai import (
    ManualClock,
    OpenAIEmulatorConfig,
    OpenAIEmulatorServer,
)
from bananabatch.errors import (
    ConfigError,
    NotFound,
    PermanentError,
    ProviderAuthError,
    ProviderOutcomeUnknown,
    ProviderQuotaExceeded,
    QuotaKind,
    TransientError,
)
from bananabatch.ports import BatchProvider, ProviderBatch
from bananabatch.providers import openai_rows
from bananabatch.providers.openai_batch import (
    METADATA_KEY,
    OpenAIBatchProvider,
    batch_state,
    from_settings,
    result_files,
)

BUCKET = "results"
MODEL = "gpt-image-2"


def body(prompt: str, size: str = "1024x1024", output_format: str = "png") -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": prompt,
        "size": size,
        "quality": "low",
        "output_format": output_format,
    }


def request_file(keys: list[str], size: str = "1024x1024", output_format: str = "png") -> bytes:
    return b"".join(
        json.dumps(openai_rows.encode(k, body(f"Prompt for {k}", size, output_format))).encode()
        + b"\n"
        for k in keys
    )


def emulator(**config: Any) -> OpenAIEmulatorServer:
    """Batches never move on their own unless timings are given: the test moves them."""
    defaults: dict[str, Any] = {
        "pending_seconds": float("inf"),
        "running_seconds": float("inf"),
        "clock": ManualClock(),
    }
    return OpenAIEmulatorServer(OpenAIEmulatorConfig(**(defaults | config)))


@pytest.fixture
def emu() -> Iterator[OpenAIEmulatorServer]:
    with emulator() as server:
        yield server


@pytest.fixture
def objects(tmp_path: Path) -> FolderObjectStore:
    return FolderObjectStore(tmp_path / "objects")


def make_provider(emu: OpenAIEmulatorServer, objects: FolderObjectStore) -> OpenAIBatchProvider:
    settings = Settings(openai_api_key="test-key", openai_base_url=emu.base_url)
    return from_settings(settings, objects)


@pytest.fixture
def provider(
    emu: OpenAIEmulatorServer, objects: FolderObjectStore
) -> Iterator[OpenAIBatchProvider]:
    made = make_provider(emu, objects)
    yield made
    made.close()


def _create(
    provider: OpenAIBatchProvider,
    objects: FolderObjectStore,
    keys: list[str],
    display_name: str = "bananabatch-job-b0001-a1",
    data: bytes | None = None,
) -> ProviderBatch:
    name = f"requests/{display_name}.jsonl"
    objects.write_bytes(
        BUCKET,
        name,
        data if data is not None else request_file(keys),
        content_type="application/jsonl",
    )
    return provider.create(
        model=MODEL,
        display_name=display_name,
        request_bucket=BUCKET,
        request_object=name,
        request_count=len(keys),
    )


def _rows(provider: OpenAIBatchProvider, batch: ProviderBatch, start: int = 0) -> dict[str, Any]:
    return {
        r.row["key"]: r.row
        for r in provider.iter_results(provider.get(batch.name), start_line=start)
        if r.row
    }


# --- the port --------------------------------------------------------------------------


def test_the_provider_satisfies_the_port(provider: OpenAIBatchProvider) -> None:
    assert isinstance(provider, BatchProvider)
    assert provider.kind == "openai"


def test_request_lines_round_trip_and_name_their_endpoint(provider: OpenAIBatchProvider) -> None:
    request = body("A kite")
    line = provider.encode_request("k1", request)
    assert line == {
        "custom_id": "k1",
        "method": "POST",
        "url": "/v1/images/generations",
        "body": request,
    }
    assert provider.decode_request(json.loads(json.dumps(line))) == ("k1", request)
    edit = request | {"images": [{"image_url": "https://example.com/a.png"}]}
    assert provider.encode_request("k2", edit)["url"] == "/v1/images/edits"
    with pytest.raises(PermanentError, match="custom_id"):
        provider.decode_request({"body": request})


def test_a_batch_is_created_runs_completes_and_streams_its_results_by_custom_id(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    made = _create(provider, objects, ["a", "b", "c"])
    assert made.name.startswith("batch_")
    assert (made.state, made.provider_state) == (BatchState.RUNNING, "validating")
    assert made.display_name == "bananabatch-job-b0001-a1"
    assert emu.state.get_batch(made.name).metadata == {METADATA_KEY: made.display_name}
    emu.state.advance(made.name)
    running = provider.get(made.name)
    assert (running.state, running.provider_state, running.output) == (
        BatchState.RUNNING,
        "in_progress",
        None,
    )
    assert running.request_count == 3

    emu.state.complete(made.name)
    done = provider.get(made.name)
    assert (done.state, done.provider_state) == (BatchState.SUCCEEDED, "completed")
    assert done.end_time is not None
    assert done.error is None
    assert done.input_file is not None
    assert len(result_files(done.output)) == 1

    rows = list(provider.iter_results(done))
    assert sorted(r.row["key"] for r in rows if r.row) == ["a", "b", "c"]
    outcome = classify_row(rows[0].row or {})
    assert outcome.kind is OutcomeKind.IMAGE
    assert outcome.mime_type == "image/png"
    assert outcome.usage is not None
    assert outcome.usage.image_output_tokens == 200
    assert Image.open(io.BytesIO(outcome.image or b"")).size == (1024, 1024)


@pytest.mark.parametrize(
    ("size", "output_format", "pil_format"),
    [("1536x1024", "jpeg", "JPEG"), ("1024x1536", "webp", "WEBP"), ("1024x1024", "png", "PNG")],
)
def test_images_come_back_at_the_requested_size_and_format(
    provider: OpenAIBatchProvider,
    objects: FolderObjectStore,
    emu: OpenAIEmulatorServer,
    size: str,
    output_format: str,
    pil_format: str,
) -> None:
    made = _create(provider, objects, ["a"], data=request_file(["a"], size, output_format))
    emu.state.complete(made.name)
    outcome = classify_row(_rows(provider, made)["a"])
    assert outcome.kind is OutcomeKind.IMAGE
    assert outcome.mime_type == f"image/{output_format}"
    image = Image.open(io.BytesIO(outcome.image or b""))
    assert (f"{image.width}x{image.height}", image.format) == (size, pil_format)


def test_results_resume_from_a_start_line_counted_across_both_files(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    emu.state.faults = FaultPlan().row_error("b")
    made = _create(provider, objects, ["a", "b", "c", "d"])
    emu.state.complete(made.name)
    done = provider.get(made.name)
    assert len(result_files(done.output)) == 2  # successes, then the failed line
    everything = [(r.line_no, r.row and r.row["key"]) for r in provider.iter_results(done)]
    assert [n for n, _ in everything] == [0, 1, 2, 3]
    assert everything[-1] == (3, "b")
    tail = [(r.line_no, r.row and r.row["key"]) for r in provider.iter_results(done, start_line=2)]
    assert tail == everything[2:]


# --- per-line outcomes ---------------------------------------------------------------------


@pytest.mark.parametrize("errors_in_output", [False, True])
def test_line_outcomes_follow_the_gemini_rules(
    objects: FolderObjectStore, errors_in_output: bool
) -> None:
    with emulator(errors_in_output=errors_in_output) as emu:
        provider = make_provider(emu, objects)
        plan = FaultPlan()
        plan.rows["err"] = RowFault("error")  # INTERNAL: a 500 for the line
        plan.row_error("bad", code=3, message="Invalid prompt")  # a 400
        plan.row("policy", "image_safety")
        plan.row("empty", "no_image")
        plan.row("twice", "duplicate")
        plan.row("gone", "missing")
        emu.state.faults = plan
        keys = ["ok", "err", "bad", "policy", "empty", "twice", "gone"]
        made = _create(provider, objects, keys)
        emu.state.complete(made.name)
        rows = list(provider.iter_results(provider.get(made.name)))
        by_key: dict[str, list[Any]] = {}
        for row in rows:
            assert row.row is not None
            by_key.setdefault(row.row["key"], []).append(classify_row(row.row))
        assert "gone" not in by_key
        assert len(by_key["twice"]) == 2
        kinds = {k: (v[0].kind, v[0].retryable) for k, v in by_key.items()}
        assert kinds == {
            "ok": (OutcomeKind.IMAGE, False),
            "err": (OutcomeKind.ERROR, True),
            "bad": (OutcomeKind.ERROR, False),
            "policy": (OutcomeKind.BLOCKED, False),
            "empty": (OutcomeKind.NO_IMAGE, True),
            "twice": (OutcomeKind.IMAGE, False),
        }
        assert by_key["bad"][0].error_code == 400
        assert "Invalid prompt" in (by_key["bad"][0].error_message or "")
        assert "safety system" in (by_key["policy"][0].reason() or "")
        provider.close()


def test_an_unserved_model_fails_its_lines_for_good(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    line = openai_rows.encode("old", body("x") | {"model": "gpt-image-1"})
    made = _create(provider, objects, ["old"], data=json.dumps(line).encode() + b"\n")
    emu.state.complete(made.name)
    outcome = classify_row(_rows(provider, made)["old"])
    assert (outcome.kind, outcome.error_code, outcome.retryable) == (OutcomeKind.ERROR, 404, False)
    assert "shut down" in (outcome.error_message or "")


# --- find ----------------------------------------------------------------------------------


def test_find_returns_the_batch_whose_metadata_names_it(
    provider: OpenAIBatchProvider, objects: FolderObjectStore
) -> None:
    first = _create(provider, objects, ["a"], display_name="bananabatch-j-b0001-a1")
    for index in range(2, 5):
        _create(provider, objects, ["a"], display_name=f"bananabatch-j-b{index:04d}-a1")
    found = provider.find("bananabatch-j-b0001-a1")
    assert found is not None
    assert (found.name, found.request_count) == (first.name, 1)
    assert provider.find("bananabatch-j-b0009-a1") is None


def test_find_pages_through_the_whole_list(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bananabatch.providers.openai_batch.LIST_PAGE_SIZE", 2)
    oldest = _create(provider, objects, ["a"], display_name="oldest")
    for index in range(5):
        _create(provider, objects, ["a"], display_name=f"newer-{index}")
    found = provider.find("oldest")
    assert found is not None
    assert found.name == oldest.name


# --- create: refusals and unknown outcomes -------------------------------------------------


def test_a_rate_limit_is_provider_quota_exceeded_with_its_wait_and_creates_nothing(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    emu.state.faults = FaultPlan(create_429=1)
    with pytest.raises(ProviderQuotaExceeded, match="429") as caught:
        _create(provider, objects, ["a"])
    assert caught.value.kind is QuotaKind.RATE_LIMIT
    assert caught.value.retry_after == timedelta(seconds=26)
    assert emu.state.counters.batches_created == 0
    assert provider.find("bananabatch-job-b0001-a1") is None
    # Nothing reads the uploaded request file: it was deleted at once.
    assert emu.state.list_files() == []


def test_insufficient_quota_is_the_billing_kind(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    emu.state.faults.refuse_creates("credits_depleted")
    with pytest.raises(ProviderQuotaExceeded) as caught:
        _create(provider, objects, ["a"])
    assert caught.value.kind is QuotaKind.CREDITS_DEPLETED


def test_a_refused_key_is_a_provider_auth_error(objects: FolderObjectStore) -> None:
    with emulator(api_key="the-right-key") as emu:
        provider = make_provider(emu, objects)
        with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
            _create(provider, objects, ["a"])
        assert emu.state.counters.batches_created == 0
        provider.close()


def test_a_server_error_on_create_is_an_unknown_outcome_sent_once(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    emu.state.faults = FaultPlan(create_500=2)
    with pytest.raises(ProviderOutcomeUnknown, match="reconcile"):
        _create(provider, objects, ["a"])
    # The SDK did not resend the create (max_retries=0): one of the two faults is left.
    assert emu.state.faults.create_500 == 1
    # The batch may exist and read it: the request file stays.
    assert len(emu.state.list_files()) == 1


def test_a_lost_create_answer_is_unknown_and_find_then_returns_the_batch(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    emu.state.faults = FaultPlan(lose_create_response=1)
    with pytest.raises(ProviderOutcomeUnknown):
        _create(provider, objects, ["a", "b"], display_name="bananabatch-lost-b0001-a1")
    found = provider.find("bananabatch-lost-b0001-a1")
    assert found is not None
    assert (found.state, found.request_count) == (BatchState.RUNNING, 2)
    assert emu.state.counters.batches_created == 1


def test_a_file_mixing_endpoints_is_refused_before_anything_is_uploaded(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    edit = openai_rows.encode("e", body("x") | {"images": [{"image_url": "https://x/a.png"}]})
    data = request_file(["g"]) + json.dumps(edit).encode() + b"\n"
    with pytest.raises(PermanentError, match="one endpoint"):
        _create(provider, objects, ["g", "e"], data=data)
    assert emu.state.list_files() == []


def test_a_missing_request_object_is_not_found(provider: OpenAIBatchProvider) -> None:
    with pytest.raises(NotFound):
        provider.create(
            model=MODEL,
            display_name="x",
            request_bucket=BUCKET,
            request_object="requests/absent.jsonl",
            request_count=1,
        )


# --- terminal states -----------------------------------------------------------------------


def test_a_batch_failing_validation_is_failed_with_the_reason_and_no_output(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    data = request_file(["a"]) + request_file(["a"])  # custom_id twice
    made = _create(provider, objects, ["a", "a"], data=data)
    emu.state.advance(made.name)
    failed = provider.get(made.name)
    assert (failed.state, failed.output) == (BatchState.FAILED, None)
    assert failed.error is not None
    assert "duplicate_custom_id" in failed.error


@pytest.mark.parametrize("list_unrun", [True, False])
def test_an_expired_batch_keeps_its_finished_work_and_its_unrun_lines_go_missing(
    objects: FolderObjectStore, list_unrun: bool
) -> None:
    with emulator(list_unrun=list_unrun) as emu:
        provider = make_provider(emu, objects)
        emu.state.faults = FaultPlan().job("EXPIRED")
        made = _create(provider, objects, ["a", "b", "c", "d"])
        emu.state.complete(made.name)
        expired = provider.get(made.name)
        assert (expired.state, expired.provider_state) == (BatchState.EXPIRED, "expired")
        rows = _rows(provider, made)
        assert sorted(rows) == ["a", "b"]
        assert all(classify_row(r).kind is OutcomeKind.IMAGE for r in rows.values())
        provider.close()


def test_cancel_keeps_finished_work_and_is_harmless_on_a_finished_batch(
    objects: FolderObjectStore,
) -> None:
    clock = ManualClock()
    with emulator(pending_seconds=0.0, running_seconds=100.0, clock=clock) as emu:
        provider = make_provider(emu, objects)
        made = _create(provider, objects, ["a", "b", "c", "d"])
        assert provider.get(made.name).provider_state == "in_progress"
        clock.advance(50)
        provider.cancel(made.name)
        cancelled = provider.get(made.name)
        assert (cancelled.state, cancelled.provider_state) == (BatchState.CANCELLED, "cancelled")
        assert sorted(_rows(provider, made)) == ["a", "b"]
        provider.cancel(made.name)  # already cancelled: refused by the service, harmless
        provider.close()


def test_cancelling_is_still_running(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    made = _create(provider, objects, ["a"])
    emu.state.cancel_batch(made.name)
    seen = emu.state.batch_json(emu.state._work(made.name))
    assert seen["status"] == "cancelling"
    assert batch_state("cancelling") is BatchState.RUNNING


def test_getting_an_unknown_batch_is_not_found(provider: OpenAIBatchProvider) -> None:
    with pytest.raises(NotFound):
        provider.get("batch_nothere")


@pytest.mark.parametrize(
    ("status", "ours"),
    [
        ("validating", BatchState.RUNNING),
        ("in_progress", BatchState.RUNNING),
        ("finalizing", BatchState.RUNNING),
        ("cancelling", BatchState.RUNNING),
        ("completed", BatchState.SUCCEEDED),
        ("failed", BatchState.FAILED),
        ("expired", BatchState.EXPIRED),
        ("cancelled", BatchState.CANCELLED),
        ("something_new", BatchState.RUNNING),
    ],
)
def test_statuses_map_to_ours(status: str, ours: BatchState) -> None:
    assert batch_state(status) is ours


# --- downloads -----------------------------------------------------------------------------


def test_a_truncated_download_is_transient(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    made = _create(provider, objects, ["a", "b", "c"])
    emu.state.complete(made.name)
    emu.state.faults.truncate_downloads = 1
    with pytest.raises(TransientError):
        list(provider.iter_results(provider.get(made.name)))
    assert sorted(_rows(provider, made)) == ["a", "b", "c"]


def test_a_download_is_read_one_chunk_at_a_time_never_whole(
    provider: OpenAIBatchProvider,
    objects: FolderObjectStore,
    emu: OpenAIEmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = _create(provider, objects, ["a", "b", "c"])
    emu.state.complete(made.name)
    done = provider.get(made.name)
    (file_id,) = result_files(done.output)
    data = emu.state.get_file(file_id).path.read_bytes()
    first_line = data.index(b"\n") + 1
    pulled: list[int] = []

    class Streamed:
        def __enter__(self) -> Streamed:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def iter_bytes(self, size: int) -> Iterator[bytes]:
            for start in range(0, len(data), 4096):
                pulled.append(start)
                yield data[start : start + 4096]

    monkeypatch.setattr(
        provider.client.files.with_streaming_response, "content", lambda _id: Streamed()
    )
    rows = provider.iter_results(done)
    first = next(rows)
    assert first.row is not None
    # Only the chunks holding the first line were read for the first row.
    assert len(pulled) == -(-first_line // 4096)
    assert len(list(rows)) == 2
    assert len(pulled) == -(-len(data) // 4096)


def test_a_result_file_gone_within_its_lifetime_is_retried_and_past_it_counts_as_missing(
    objects: FolderObjectStore,
) -> None:
    clock = ManualClock()
    with emulator(clock=clock) as emu:
        provider = make_provider(emu, objects)
        made = _create(provider, objects, ["a"])
        emu.state.complete(made.name)
        done = provider.get(made.name)
        assert done.end_time is not None
        ended = done.end_time
        provider.clock = lambda: ended + timedelta(hours=1)
        (file_id,) = result_files(done.output)
        emu.state.delete_file(file_id)  # answers 404 from now on
        with pytest.raises(TransientError, match="not found yet"):
            list(provider.iter_results(done))
        # Past output_expires_after the file is gone for good: no rows, no error; the
        # collector then fails the batch's lines as missing and retries them.
        provider.clock = lambda: ended + provider.output_expires_after + timedelta(seconds=1)
        assert list(provider.iter_results(done)) == []
        provider.close()


def test_output_expiry_is_what_the_settings_ask_for(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    made = _create(provider, objects, ["a"])
    assert emu.state.get_batch(made.name).output_expires_seconds == 7 * 24 * 3600


# --- input file, configuration -------------------------------------------------------------


def test_releasing_the_input_deletes_the_request_file_and_twice_is_harmless(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    made = _create(provider, objects, ["a"])
    emu.state.complete(made.name)
    done = provider.get(made.name)
    assert done.input_file in {e.file_id for e in emu.state.list_files()}
    provider.release_input(done)
    provider.release_input(done)
    assert done.input_file not in {e.file_id for e in emu.state.list_files()}


def test_the_openai_provider_needs_an_api_key(objects: FolderObjectStore) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        from_settings(Settings(), objects)


def test_a_result_line_that_is_not_json_is_a_malformed_row_with_its_number() -> None:
    from bananabatch.providers.openai_batch import parse_result_line

    row = parse_result_line(7, b'{"custom_id": "a", "resp')
    assert row is not None
    assert row.row is None
    assert row.line_no == 7
    assert "not JSON" in (row.malformed or "")
    unrun = b'{"custom_id": "a", "response": null, "error": {"code": "batch_expired"}}'
    assert parse_result_line(8, unrun) is None


def test_usage_carries_the_openai_object_for_pricing(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    made = _create(provider, objects, ["a"])
    emu.state.complete(made.name)
    response = _rows(provider, made)["a"]["response"]
    usage = response["openaiUsage"]
    assert usage["output_tokens"] == 200
    assert response["usageMetadata"]["candidatesTokenCount"] == 200
    assert base64.b64decode(response["candidates"][0]["content"]["parts"][0]["inlineData"]["data"])


def test_the_wiring_builds_the_openai_adapter_from_settings(
    emu: OpenAIEmulatorServer, objects: FolderObjectStore
) -> None:
    from bananabatch import wiring

    settings = Settings.from_env({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": emu.base_url})
    built = wiring.build_openai_provider(settings, objects)
    assert isinstance(built, OpenAIBatchProvider)
    assert str(built.client.base_url).rstrip("/") == emu.base_url
    assert built.client.max_retries == 0


def test_gcs_input_images_of_edit_lines_are_sent_as_signed_urls(
    provider: OpenAIBatchProvider, objects: FolderObjectStore, emu: OpenAIEmulatorServer
) -> None:
    objects.write_bytes(
        "inbox", "references/fox.png", b"\x89PNG\r\n\x1a\n", content_type="image/png"
    )
    images = [{"image_url": "gs://inbox/references/fox.png"}, {"image_url": "https://x/y.png"}]
    line = openai_rows.encode("e1", body("a fox like this") | {"images": images})
    made = _create(provider, objects, ["e1"], data=json.dumps(line).encode() + b"\n")
    assert emu.state.get_batch(made.name).endpoint == "/v1/images/edits"
    sent = json.loads(emu.state.get_file(made.input_file or "").path.read_bytes())
    urls = [entry["image_url"] for entry in sent["body"]["images"]]
    assert urls[1] == "https://x/y.png"
    assert not urls[0].startswith("gs://")
    assert urls[0] == objects.signed_url(
        "inbox", "references/fox.png", expires_in=provider.reference_url_ttl
    )
    emu.state.complete(made.name)
    assert classify_row(_rows(provider, made)["e1"]).kind is OutcomeKind.IMAGE


def test_a_result_line_s_image_is_lifted_out_of_the_json_scan_and_reads_the_same() -> None:
    from bananabatch.providers._common import parse_row
    from bananabatch.providers.openai_batch import parse_result_line

    png = io.BytesIO()
    Image.effect_noise((128, 128), 64).save(png, format="PNG")
    b64 = base64.b64encode(png.getvalue()).decode()
    assert len(b64) > 16 * 1024  # long enough to be lifted
    answer = {"created": 1, "data": [{"b64_json": b64}], "output_format": "png"}
    raw = json.dumps(
        {"custom_id": "k", "response": {"status_code": 200, "body": answer}, "error": None}
    ).encode()
    fast = parse_result_line(3, raw)
    assert fast is not None
    assert fast.row is not None
    lifted = fast.row["response"]["candidates"][0]["content"]["parts"][0]["inlineData"]["data"]
    assert isinstance(lifted, memoryview)  # no 2 MB str copy per line
    slow = parse_row(3, raw).row
    assert slow is not None
    expected = classify_row(openai_rows.to_row(slow) or {})
    outcome = classify_row(fast.row)
    assert (outcome.kind, outcome.image, outcome.mime_type) == (
        expected.kind,
        expected.image,
        expected.mime_type,
    )
    assert outcome.image == png.getvalue()
