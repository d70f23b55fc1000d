"""Fault-matrix scenarios of issue 13 (gemini area), on both stacks (the `stack` fixture),
each ending with the four invariants of tests/e2e/test_fault_matrix.py."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from bananabatch.core.catalog import CATALOG_AS_OF
from bananabatch.core.states import ItemState
from bananabatch.pipeline import files_store
from bananabatch.providers._references import BATCH_EXPIRY
from tests.support.logs import captured
from tests.support.stacks import Stack, StackKind, assert_invariants, held, open_stack

GOOD = [
    '{"key": "g1", "prompt": "a red apple"}',
    '{"key": "g2", "prompt": "a green pear"}',
]


def _native_with_reference(key: str, uri: str) -> str:
    request = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "a fox like this one"},
                    {"fileData": {"fileUri": uri, "mimeType": "image/png"}},
                ],
            }
        ],
        "generationConfig": {"responseModalities": ["IMAGE"]},
    }
    return json.dumps({"key": key, "request": request})


def test_an_unreadable_reference_image_fails_its_row_for_good_and_spares_the_rest(
    stack: Stack,
) -> None:
    # A Files API file that does not exist (expired, never uploaded, another project's):
    # the service answers 403 for it, so the row fails; it is never sent again.
    gone = "https://generativelanguage.googleapis.com/v1beta/files/gonefile123"
    job_id = stack.upload(stack.write([*GOOD, _native_with_reference("ref", gone)]))
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = {i.key: i for i in stack.repo.items(job_id)}
    assert items["ref"].state is ItemState.FAILED
    assert items["ref"].error_code == 7
    assert items["ref"].reason is not None
    assert "permission to access the File gonefile123" in items["ref"].reason
    assert items["ref"].attempt == 1
    assert stack.emulator.state.submitted_keys()["ref"] == 1  # never retried
    assert items["g1"].state is ItemState.SUCCEEDED
    assert items["g2"].state is ItemState.SUCCEEDED
    assert summary["counts"]["SUCCEEDED"] == 2
    assert summary["counts"]["FAILED"] == 1


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "orange").save(out, format="PNG")
    return out.getvalue()


def _with_gcs_reference(stack: Stack, key: str, name: str) -> str:
    uri = f"gs://{stack.settings.inbox_bucket}/{name}"
    return json.dumps({"key": key, "prompt": "a fox like this one", "reference_images": [uri]})


def test_a_gcs_reference_reaches_the_developer_api_as_a_signed_url_that_outlives_the_batch(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    # The emulator plays the bare Developer API: it reads no gs:// (nothing is registered
    # through files:register), so the row succeeds only on the signed URL the provider
    # made at create, and only if that URL is still valid when the row runs, 47 h later.
    with open_stack(request, kind, tmp_path, held()) as stack:
        stack.runtime.objects.write_bytes(
            stack.settings.inbox_bucket, "references/fox.png", _png(), content_type="image/png"
        )
        job_id = stack.upload(
            stack.write([*GOOD, _with_gcs_reference(stack, "ref", "references/fox.png")])
        )
        clock = stack.emulator.state.config.clock
        assert hasattr(clock, "advance")

        def late() -> None:
            clock.advance(BATCH_EXPIRY.total_seconds() - 3600)
            stack.emulator.state.complete_all()

        summary = assert_invariants(stack, job_id, stack.settle(job_id, between=late))
        items = {i.key: i for i in stack.repo.items(job_id)}
        assert items["ref"].state is ItemState.SUCCEEDED, items["ref"].reason
        assert summary["counts"]["SUCCEEDED"] == 3
        (read,) = stack.emulator.state.references_read
        assert not read.startswith("gs://")
        lifetime = int(parse_qs(urlsplit(read).query)["X-Goog-Expires"][0])
        assert lifetime == 72 * 3600 > BATCH_EXPIRY.total_seconds()
        # The signed URL is a credential: it is in no record of ours.
        assert "X-Goog" not in json.dumps(summary)
        assert all("X-Goog" not in (i.reason or "") for i in items.values())


def test_a_reference_gone_before_its_row_runs_fails_that_row_for_good(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    # Readable at intake, deleted before the service runs the row: the service cannot
    # read it, the row fails with the reason, it is not sent again, the rest succeed.
    with open_stack(request, kind, tmp_path, held()) as stack:
        bucket = stack.settings.inbox_bucket
        objects = stack.runtime.objects
        objects.write_bytes(bucket, "references/gone.png", _png(), content_type="image/png")
        job_id = stack.upload(
            stack.write([*GOOD, _with_gcs_reference(stack, "ref", "references/gone.png")])
        )

        def delete_then_run() -> None:
            objects.delete(bucket, "references/gone.png")
            stack.emulator.state.complete_all()

        summary = assert_invariants(stack, job_id, stack.settle(job_id, between=delete_then_run))
        items = {i.key: i for i in stack.repo.items(job_id)}
        assert items["ref"].state is ItemState.FAILED
        assert items["ref"].error_code == 3
        assert "Cannot fetch content from the provided URL" in (items["ref"].reason or "")
        assert "references/gone.png" in (items["ref"].reason or "")
        assert "X-Goog" not in (items["ref"].reason or "")
        assert items["ref"].attempt == 1
        assert stack.emulator.state.submitted_keys()["ref"] == 1
        assert summary["counts"]["SUCCEEDED"] == 2


# --- the model catalog at intake (issue 13 part 1) ----------------------------------------


def test_a_shut_down_model_is_rejected_naming_its_replacement_and_a_deprecated_one_warned(
    stack: Stack,
) -> None:
    # Lifecycles are read on the pipeline's own clock: the day the catalog was checked.
    stack.clock.now = datetime.combine(CATALOG_AS_OF, time(12), tzinfo=UTC)
    job_id = stack.upload(
        stack.write(
            [
                *GOOD,
                '{"key": "old", "prompt": "a banana", "model": "gemini-2.5-flash-image"}',
                '{"key": "dep", "prompt": "a kiwi", "model": "gemini-3.1-flash-image"}',
            ]
        )
    )
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = {i.key: i for i in stack.repo.items(job_id)}
    assert items["dep"].state is ItemState.SUCCEEDED
    assert summary["counts"]["REJECTED"] == 1
    body = stack.read_result(f"jobs/{job_id}/rejected.jsonl")
    (rejected,) = [json.loads(line) for line in body.splitlines()]
    assert rejected["key"] == "old"
    assert "shut down" in json.dumps(rejected)
    assert "gemini-3.1-flash-lite-image" in json.dumps(rejected)
    assert any(w.startswith("gemini-3.1-flash-image is deprecated") for w in summary["warnings"]), (
        summary["warnings"]
    )
    assert stack.emulator.state.submitted_keys().get("old") is None


# --- the Files store (issue 13 part 7) ------------------------------------------------------


def _uploaded(stack: Stack) -> list[int]:
    """Sizes of the request files the emulator's Files store holds."""
    state = stack.emulator.state
    return [e.size for e in state._live_files() if e.source == "UPLOADED"]


def test_request_files_leave_the_files_store_once_their_batch_is_collected(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    with open_stack(request, kind, tmp_path, held()) as stack:
        job_id = stack.upload(
            stack.write(
                [*GOOD, '{"key": "g3", "prompt": "a plum"}', '{"key": "g4", "prompt": "a fig"}']
            )
        )
        state = stack.emulator.state
        requests_before = _uploaded(stack)
        assert len(requests_before) == 2  # three requests per batch: two batches
        state.complete_all()
        before_collection = state.files_store_bytes()
        summary = assert_invariants(stack, job_id, stack.settle(job_id))
        assert summary["counts"]["SUCCEEDED"] == 4
        # Both request files are gone; only the result files, which cannot be deleted, stay.
        assert _uploaded(stack) == []
        assert state.files_store_bytes() == before_collection - sum(requests_before)
        assert state.files_store_bytes() > 0


@pytest.mark.parametrize("warn_bytes", [10 * 1024**3, 1])
def test_each_tick_logs_the_files_store_usage_and_warns_past_the_threshold(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path, warn_bytes: int
) -> None:
    with (
        captured(files_store.__name__) as records,
        open_stack(request, kind, tmp_path, files_store_warn_bytes=warn_bytes) as stack,
    ):
        job_id = stack.upload(stack.write(GOOD))
        assert_invariants(stack, job_id, stack.settle(job_id))
        records.lines.clear()
        stack.tick()
        used = stack.emulator.state.files_store_bytes()
    (line,) = records.with_message(files_store.USAGE_MESSAGE)
    assert used > 0
    assert line["files_store_bytes"] == used
    if used > warn_bytes:
        assert line["severity"] == "WARNING"
        assert line["alert"] == "files_store_high"
    else:
        assert line["severity"] == "INFO"
        assert "alert" not in line
