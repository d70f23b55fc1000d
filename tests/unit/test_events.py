from __future__ import annotations

import base64
import json

import pytest

from bananabatch import events
from bananabatch.errors import PermanentError


def test_a_storage_event_built_for_local_mode_parses_into_its_source_object() -> None:
    attributes, data = events.storage_finalized_event(
        bucket="inbox",
        name="a/b.jsonl",
        generation="1700000000123",
        size=42,
        content_type="application/jsonl",
        metadata={"model": "gemini-3-pro-image"},
    )
    assert attributes["type"] == events.STORAGE_FINALIZED
    assert attributes["subject"] == "objects/a/b.jsonl"
    parsed = events.parse_storage_event(data)
    assert parsed.source().uri == "gs://inbox/a/b.jsonl"
    assert parsed.source().generation == "1700000000123"
    assert parsed.metadata == {"model": "gemini-3-pro-image"}


def test_a_real_eventarc_storage_payload_parses() -> None:
    # Field set as Eventarc delivers it for google.cloud.storage.object.v1.finalized.
    payload = {
        "kind": "storage#object",
        "id": "inbox/x.jsonl/1",
        "name": "x.jsonl",
        "bucket": "inbox",
        "generation": "1",
        "metageneration": "1",
        "contentType": "application/octet-stream",
        "timeCreated": "2026-11-21T10:00:00.000Z",
        "updated": "2026-11-21T10:00:00.000Z",
        "storageClass": "STANDARD",
        "size": "10",
        "md5Hash": "abc==",
        "crc32c": "x==",
        "etag": "CAE=",
        "mediaLink": "https://example.invalid",
    }
    assert events.parse_storage_event(json.dumps(payload)).name == "x.jsonl"


def test_a_pubsub_envelope_round_trips_data_and_attributes() -> None:
    _, data = events.pubsub_published_event(
        project="p",
        topic="t",
        subscription="s",
        data=b'{"batch_id": "b1"}',
        attributes={"job_id": "j1"},
    )
    envelope = events.parse_pubsub_event(data)
    assert envelope.message.payload() == {"batch_id": "b1"}
    assert envelope.message.attributes == {"job_id": "j1"}
    assert envelope.subscription == "projects/p/subscriptions/s"


def test_a_pubsub_message_whose_data_is_not_a_json_object_is_a_permanent_error() -> None:
    envelope = {"message": {"data": base64.b64encode(b"[1, 2]").decode()}}
    with pytest.raises(PermanentError, match="expected a JSON object"):
        events.parse_pubsub_event(envelope).message.payload()


def test_a_storage_event_without_a_generation_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="storage event"):
        events.parse_storage_event({"bucket": "b", "name": "n"})


# --- uploads as deployed: the inbox's Pub/Sub notification, pushed to on_upload ----------------


def _notified(event_type: str = "OBJECT_FINALIZE") -> dict[str, object]:
    obj = {
        "kind": "storage#object",
        "name": "jobs/x.jsonl",
        "bucket": "inbox",
        "generation": "1700000000123",
        "size": "42",
        "contentType": "application/jsonl",
        "metadata": {"bananabatch-budget-usd": "3"},
    }
    data, attributes = events.storage_notification_message(obj, event_type=event_type)
    return events.pubsub_published_event(
        project="p",
        topic="bb-uploads",
        subscription="bb-uploads-push",
        data=data,
        attributes=attributes,
    )[1]


def test_an_upload_pushed_from_the_inbox_notification_parses_into_its_source_object() -> None:
    parsed = events.parse_upload_event(_notified())
    assert parsed is not None
    assert parsed.source().uri == "gs://inbox/jobs/x.jsonl"
    assert parsed.source().generation == "1700000000123"
    assert parsed.metadata == {"bananabatch-budget-usd": "3"}


def test_the_eventarc_shape_still_parses_the_same_way() -> None:
    _, data = events.storage_finalized_event(
        bucket="inbox", name="jobs/x.jsonl", generation="7", size=1, content_type="x"
    )
    parsed = events.parse_upload_event(data)
    assert parsed is not None
    assert parsed.source().generation == "7"


def test_a_notification_of_anything_but_a_finalized_object_is_ignored() -> None:
    assert events.parse_upload_event(_notified("OBJECT_DELETE")) is None


def test_a_notification_whose_payload_is_not_an_object_is_a_permanent_error() -> None:
    envelope = events.pubsub_published_event(
        project="p",
        topic="t",
        subscription="s",
        data=b'{"bucket": "inbox"}',
        attributes={"eventType": "OBJECT_FINALIZE", "payloadFormat": "JSON_API_V1"},
    )[1]
    with pytest.raises(PermanentError, match="storage event"):
        events.parse_upload_event(envelope)
