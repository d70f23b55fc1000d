"""Thumbnails off the collector's path: the collector asks for them once per checkpoint on
the batch-done topic, on_batch_done routes the request, pipeline/thumbnails makes them."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bananabatch import entrypoints, events
from bananabatch.config import Settings
from bananabatch.core import records as rec
from bananabatch.core.records import BatchRecord, ItemRecord, JobRecord, SourceObject
from bananabatch.core.states import BatchState, ItemState, JobState
from bananabatch.errors import PermanentError, TransientError
from bananabatch.pipeline import collect, thumbnails
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import ProviderBatch, ResultRow
from bananabatch.report.thumbs import thumb_object_name
from bananabatch.wiring import build_runtime

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
JOB = "job-thumbs-0001"
BATCH = f"{JOB}-b0000"
MODEL = "gemini-2.5-flash-image"
SUB = "test-batch-done"


def _png(size: tuple[int, int] = (600, 400), colour: tuple[int, int, int] = (200, 90, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    runtime = build_runtime(Settings(local_root=tmp_path), with_provider=False)
    runtime.clock = lambda: NOW
    runtime.bus.create_subscription(SUB, runtime.settings.topic_batch_done)  # type: ignore[attr-defined]
    return runtime


def _messages(rt: Runtime) -> list[tuple[dict[str, Any], dict[str, str]]]:
    pulled = rt.bus.pull(SUB, max_messages=1000)  # type: ignore[attr-defined]
    return [(json.loads(m.data), dict(m.attributes)) for m in pulled]


def _store_image(rt: Runtime, key: str, image: bytes, mime: str = "image/png") -> None:
    rt.objects.write_bytes(
        rt.settings.results_bucket, rec.image_object_name(JOB, key, mime), image, content_type=mime
    )


def _thumb(rt: Runtime, key: str) -> bytes | None:
    name = thumb_object_name(JOB, key)
    if rt.objects.stat(rt.settings.results_bucket, name) is None:
        return None
    return rt.objects.read_bytes(rt.settings.results_bucket, name)


def _request(*keys: str, mime: str = "image/png") -> thumbnails.ThumbnailRequest:
    return thumbnails.ThumbnailRequest(JOB, BATCH, keys, (mime,) * len(keys))


# --- the thumbnail worker --------------------------------------------------------------


def test_the_worker_writes_a_small_jpeg_for_every_listed_image(rt: Runtime) -> None:
    _store_image(rt, "a", _png((600, 400)))
    _store_image(rt, "b", _png((300, 900)), mime="image/png")

    report = thumbnails.handle_thumbnails(rt, _request("a", "b"))

    assert report.made == 2
    for key, size in (("a", (256, 171)), ("b", (85, 256))):
        thumb = _thumb(rt, key)
        assert thumb is not None
        with Image.open(io.BytesIO(thumb)) as decoded:
            assert (decoded.format, decoded.size) == ("JPEG", size)


def test_the_image_name_follows_the_mime_type(rt: Runtime) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (500, 500), (10, 20, 30)).save(jpeg, format="JPEG")
    _store_image(rt, "j", jpeg.getvalue(), mime="image/jpeg")

    assert thumbnails.handle_thumbnails(rt, _request("j", mime="image/jpeg")).made == 1
    assert _thumb(rt, "j") is not None


def test_a_redelivered_request_rewrites_the_same_thumbnails(rt: Runtime) -> None:
    _store_image(rt, "a", _png())
    thumbnails.handle_thumbnails(rt, _request("a"))
    first = _thumb(rt, "a")

    report = thumbnails.handle_thumbnails(rt, _request("a"))

    assert report.made == 1
    assert _thumb(rt, "a") == first
    names = [o.name for o in rt.objects.list(rt.settings.results_bucket, f"jobs/{JOB}/thumbs/")]
    assert names == [thumb_object_name(JOB, "a")]


def test_an_undecodable_image_is_logged_and_skipped_and_the_rest_are_made(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    _store_image(rt, "bad", b"\x89PNG\r\n\x1a\n but not really")
    _store_image(rt, "good", _png())

    with caplog.at_level(logging.ERROR):
        report = thumbnails.handle_thumbnails(rt, _request("bad", "good"))

    assert (report.made, report.bad_images) == (1, ["bad"])
    assert _thumb(rt, "bad") is None
    assert _thumb(rt, "good") is not None
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (record.__dict__["job_id"], record.__dict__["key"]) == (JOB, "bad")


def test_a_missing_image_is_a_permanent_skip_naming_job_and_key(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    _store_image(rt, "here", _png())

    with caplog.at_level(logging.ERROR):
        report = thumbnails.handle_thumbnails(rt, _request("gone", "here"))

    assert (report.made, report.missing_images) == (1, ["gone"])
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (record.__dict__["job_id"], record.__dict__["key"]) == (JOB, "gone")
    assert record.__dict__["object"] == rec.image_object_name(JOB, "gone", "image/png")


def test_a_transient_store_error_is_raised_for_the_platform_to_retry(rt: Runtime) -> None:
    _store_image(rt, "a", _png())

    def unavailable(*_args: Any, **_kwargs: Any) -> bytes:
        raise TransientError("Cloud Storage: 503 backend unavailable")

    rt.objects.read_bytes = unavailable  # type: ignore[method-assign]

    with pytest.raises(TransientError):
        thumbnails.handle_thumbnails(rt, _request("a"))


def test_a_published_request_parses_back_to_the_same_keys_and_types(rt: Runtime) -> None:
    thumbnails.publish_request(rt, JOB, BATCH, [("k1", "image/png"), ("k2", "image/jpeg")])

    [(payload, attributes)] = _messages(rt)

    assert attributes == {"kind": "thumbnails", "job_id": JOB, "batch_id": BATCH}
    assert payload["schema_version"] == 1
    assert thumbnails.parse_request(payload) == thumbnails.ThumbnailRequest(
        JOB, BATCH, ("k1", "k2"), ("image/png", "image/jpeg")
    )


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        ({"batch_id": BATCH, "keys": ["a"], "mime_types": ["image/png"]}, "None"),
        ({"job_id": JOB, "keys": ["a"], "mime_types": ["image/png"]}, "None"),
        ({"job_id": JOB, "batch_id": BATCH, "keys": "a", "mime_types": ["image/png"]}, "'a'"),
        ({"job_id": JOB, "batch_id": BATCH, "keys": ["a", "b"], "mime_types": ["x"]}, "'b'"),
        ({"job_id": JOB, "batch_id": BATCH, "keys": [3], "mime_types": ["x"]}, "[3]"),
    ],
)
def test_a_malformed_request_is_a_permanent_error_saying_expected_and_found(
    payload: dict[str, Any], found: str
) -> None:
    with pytest.raises(PermanentError, match="expected") as caught:
        thumbnails.parse_request({"kind": "thumbnails", **payload})
    assert found in str(caught.value)


# --- routing in on_batch_done ----------------------------------------------------------


def _deliver(rt: Runtime, payload: Mapping[str, Any], attributes: Mapping[str, str]) -> None:
    ce, data = events.pubsub_published_event(
        project="p",
        topic=rt.settings.topic_batch_done,
        subscription=SUB,
        data=json.dumps(payload).encode(),
        attributes=attributes,
    )
    entrypoints.batch_done(rt, ce, data)


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    def collected(_rt: Runtime, batch_id: str, **_kw: Any) -> collect.CollectReport:
        calls.append(("collect", batch_id))
        return collect.CollectReport(batch_id=batch_id)

    def thumbed(_rt: Runtime, request: thumbnails.ThumbnailRequest) -> None:
        calls.append(("thumbnails", request))

    monkeypatch.setattr(collect, "handle_batch_done", collected)
    monkeypatch.setattr(thumbnails, "handle_thumbnails", thumbed)
    return calls


def test_a_thumbnails_message_goes_to_the_thumbnail_worker(
    rt: Runtime, routed: list[tuple[str, Any]]
) -> None:
    thumbnails.publish_request(rt, JOB, BATCH, [("k1", "image/png")])
    [(payload, attributes)] = _messages(rt)

    _deliver(rt, payload, attributes)

    assert routed == [("thumbnails", _request("k1"))]


@pytest.mark.parametrize(
    "payload",
    [
        # As published before thumbnails had their own kind, and by the tick and webhooks.
        {"schema_version": 1, "batch_id": BATCH, "job_id": JOB, "state": "SUCCEEDED"},
        {"schema_version": 1, "kind": "batch_done", "batch_id": BATCH, "job_id": JOB},
    ],
)
def test_a_batch_done_message_with_or_without_a_kind_is_collected(
    rt: Runtime, routed: list[tuple[str, Any]], payload: dict[str, Any]
) -> None:
    _deliver(rt, payload, {"batch_id": BATCH})

    assert routed == [("collect", BATCH)]


def test_an_unknown_kind_is_acknowledged_without_retry_and_routed_nowhere(
    rt: Runtime, routed: list[tuple[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        _deliver(rt, {"kind": "mystery", "batch_id": BATCH}, {})

    assert routed == []
    assert any("found 'mystery'" in r.__dict__.get("error", "") for r in caplog.records)


def test_a_malformed_thumbnails_message_is_acknowledged_without_retry(
    rt: Runtime, routed: list[tuple[str, Any]]
) -> None:
    _deliver(rt, {"kind": "thumbnails", "job_id": JOB, "keys": ["a"]}, {"kind": "thumbnails"})

    assert routed == []


# --- the collector asks for thumbnails once per checkpoint ------------------------------


class _Provider:
    """A finished batch whose result file is `rows`, one per line."""

    kind = "keyed"

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def get(self, name: str) -> ProviderBatch:
        return ProviderBatch(
            name=name,
            display_name=BATCH,
            state=BatchState.SUCCEEDED,
            provider_state="JOB_STATE_SUCCEEDED",
            output="files/results",
        )

    def iter_results(self, _seen: ProviderBatch, *, start_line: int = 0) -> Iterator[ResultRow]:
        for n, row in enumerate(self.rows[start_line:], start_line):
            yield ResultRow(line_no=n, row=row)

    def release_input(self, _batch: ProviderBatch) -> None:
        pass

    def files_store_bytes(self) -> int | None:
        return None


def _image_row(key: str, image: bytes) -> dict[str, Any]:
    part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(image).decode()}}
    return {
        "key": key,
        "response": {
            "candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}],
        },
    }


def _blocked_row(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "response": {"candidates": [{"finishReason": "IMAGE_SAFETY"}]},
    }


def _stage(rt: Runtime, keys: list[str]) -> None:
    rt.repo.create_job(
        JobRecord(
            job_id=JOB,
            state=JobState.RUNNING,
            source=SourceObject(bucket="inbox", name="p.jsonl", generation="1"),
            created_at=NOW,
            updated_at=NOW,
            default_model=MODEL,
            results_prefix=f"jobs/{JOB}/",
            line_count=len(keys),
            accepted_count=len(keys),
            batch_count=1,
        )
    )
    rt.repo.create_batch(
        BatchRecord(
            batch_id=BATCH,
            job_id=JOB,
            index=0,
            state=BatchState.RUNNING,
            model=MODEL,
            display_name=BATCH,
            request_object=f"jobs/{JOB}/requests/batch-0000.jsonl",
            request_count=len(keys),
            provider_name="batches/b0",
            created_at=NOW,
            updated_at=NOW,
            items_materialized=True,
        )
    )
    rt.repo.put_items(
        ItemRecord(
            job_id=JOB,
            key=key,
            line_no=n + 1,
            state=ItemState.SUBMITTED,
            model=MODEL,
            batch_id=BATCH,
            attempt=1,
        )
        for n, key in enumerate(keys)
    )


def test_each_checkpoint_publishes_one_request_listing_exactly_the_images_it_wrote(
    rt: Runtime,
) -> None:
    # 120 rows, checkpoints after rows 50 and 100 and at the end. Rows 50-99 have no
    # image (blocked), so their checkpoint asks for nothing.
    keys = [f"k{n:03d}" for n in range(120)]
    image = _png((64, 48))
    rows = [
        _blocked_row(key) if 50 <= n < 100 or n % 7 == 3 else _image_row(key, image)
        for n, key in enumerate(keys)
    ]
    _stage(rt, keys)
    rt.provider = _Provider(rows)  # type: ignore[assignment]

    report = collect.handle_batch_done(rt, BATCH)

    requests = [
        (payload, attributes)
        for payload, attributes in _messages(rt)
        if attributes.get("kind") == "thumbnails"
    ]
    with_images = [key for key, row in zip(keys, rows, strict=True) if "content" in str(row)]
    assert [payload["keys"] for payload, _ in requests] == [
        [k for k in with_images if int(k[1:]) < 50],
        [k for k in with_images if int(k[1:]) >= 100],
    ]
    assert report.images == len(with_images)
    for payload, attributes in requests:
        assert attributes == {"kind": "thumbnails", "job_id": JOB, "batch_id": BATCH}
        assert payload["mime_types"] == ["image/png"] * len(payload["keys"])
        # Published only once the checkpoint's images were stored.
        for key in payload["keys"]:
            name = rec.image_object_name(JOB, key, "image/png")
            assert rt.objects.stat(rt.settings.results_bucket, name) is not None
    # The collector itself makes no thumbnails any more.
    assert list(rt.objects.list(rt.settings.results_bucket, f"jobs/{JOB}/thumbs/")) == []


def test_a_batch_without_images_asks_for_no_thumbnails(rt: Runtime) -> None:
    keys = ["a", "b", "c"]
    _stage(rt, keys)
    rt.provider = _Provider([_blocked_row(k) for k in keys])  # type: ignore[assignment]

    collect.handle_batch_done(rt, BATCH)

    assert [a for _p, a in _messages(rt) if a.get("kind") == "thumbnails"] == []


def test_the_requested_thumbnails_are_made_when_the_requests_are_delivered(
    rt: Runtime,
) -> None:
    keys = [f"k{n:03d}" for n in range(60)]
    _stage(rt, keys)
    rt.provider = _Provider([_image_row(k, _png((80, 60))) for k in keys])  # type: ignore[assignment]
    collect.handle_batch_done(rt, BATCH)

    for payload, attributes in _messages(rt):
        _deliver(rt, payload, attributes)

    assert all(_thumb(rt, key) is not None for key in keys)
