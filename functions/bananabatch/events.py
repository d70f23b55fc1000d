"""The CloudEvent envelopes the functions receive, parsed (and, for local mode and tests, built).

Storage: `google.cloud.storage.object.v1.finalized` with the object resource as data.
Pub/Sub: `google.cloud.pubsub.topic.v1.messagePublished` with
`{"message": {"data": <base64>, "attributes": {...}, "messageId", "publishTime"},
"subscription": ...}` as data.
Uploads, as deployed, are Pub/Sub messages too: the inbox bucket's notification publishes
the object resource (`JSON_API_V1`) with `eventType` among the attributes, and a push
subscription with a dead-letter policy delivers it (infra/bananabatch_infra/pipeline.py).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bananabatch.core.records import SourceObject
from bananabatch.errors import PermanentError

STORAGE_FINALIZED: Final = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED: Final = "google.cloud.pubsub.topic.v1.messagePublished"
# The event type a Cloud Storage Pub/Sub notification names for a new object.
NOTIFICATION_FINALIZE: Final = "OBJECT_FINALIZE"


class StorageObjectData(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    bucket: str
    name: str
    generation: str
    size: str | None = None
    content_type: str | None = Field(default=None, alias="contentType")
    metadata: dict[str, str] = Field(default_factory=dict)

    def source(self) -> SourceObject:
        return SourceObject(bucket=self.bucket, name=self.name, generation=self.generation)


class PubSubMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    data: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    message_id: str | None = Field(default=None, alias="messageId")

    def payload(self) -> dict[str, Any]:
        raw = base64.b64decode(self.data) if self.data else b"{}"
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise PermanentError(
                f"Pub/Sub message data: expected a JSON object; found {raw[:80]!r}"
            )
        return doc


class PubSubEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: PubSubMessage
    subscription: str | None = None


def parse_storage_event(data: Any) -> StorageObjectData:
    try:
        return StorageObjectData.model_validate(_as_dict(data))
    except ValidationError as exc:
        raise PermanentError(f"storage event: expected an object resource; {exc}") from exc


def parse_upload_event(data: Any) -> StorageObjectData | None:
    """The object an upload event announces: a pushed inbox notification or Eventarc's
    storage event. None for a notification of anything but a finalized object."""
    doc = _as_dict(data)
    if "message" not in doc:
        return parse_storage_event(doc)
    message = parse_pubsub_event(doc).message
    if message.attributes.get("eventType", NOTIFICATION_FINALIZE) != NOTIFICATION_FINALIZE:
        return None
    return parse_storage_event(message.payload())


def parse_pubsub_event(data: Any) -> PubSubEnvelope:
    try:
        return PubSubEnvelope.model_validate(_as_dict(data))
    except ValidationError as exc:
        raise PermanentError(f"Pub/Sub event: expected a message envelope; {exc}") from exc


def _as_dict(data: Any) -> Mapping[str, Any]:
    if isinstance(data, bytes | str):
        data = json.loads(data)
    if not isinstance(data, Mapping):
        raise PermanentError(f"event data: expected a JSON object; found {type(data).__name__}")
    return data


# --- building envelopes (local mode and tests) ---------------------------------------------


def storage_finalized_event(
    *,
    bucket: str,
    name: str,
    generation: str,
    size: int,
    content_type: str,
    metadata: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """(CloudEvent attributes, data) exactly as Eventarc delivers an object finalization."""
    now = _rfc3339(datetime.now(UTC))
    attributes = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "type": STORAGE_FINALIZED,
        "subject": f"objects/{name}",
        "time": now,
        "datacontenttype": "application/json",
    }
    data = {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/{generation}",
        "selfLink": f"https://www.googleapis.com/storage/v1/b/{bucket}/o/{name}",
        "name": name,
        "bucket": bucket,
        "generation": generation,
        "metageneration": "1",
        "contentType": content_type,
        "timeCreated": now,
        "updated": now,
        "storageClass": "STANDARD",
        "size": str(size),
        "metadata": dict(metadata or {}),
    }
    return attributes, data


def storage_notification_message(
    obj: Mapping[str, Any], *, event_type: str = NOTIFICATION_FINALIZE
) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of the message a bucket's Pub/Sub notification publishes."""
    attributes = {
        "notificationConfig": f"projects/_/buckets/{obj['bucket']}/notificationConfigs/1",
        "eventType": event_type,
        "payloadFormat": "JSON_API_V1",
        "bucketId": str(obj["bucket"]),
        "objectId": str(obj["name"]),
        "objectGeneration": str(obj["generation"]),
        "eventTime": _rfc3339(datetime.now(UTC)),
    }
    return json.dumps(dict(obj)).encode(), attributes


def pubsub_published_event(
    *,
    project: str,
    topic: str,
    subscription: str,
    data: bytes,
    attributes: Mapping[str, str],
    message_id: str | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """(CloudEvent attributes, data) exactly as Eventarc delivers a Pub/Sub message."""
    now = _rfc3339(datetime.now(UTC))
    mid = message_id or str(uuid.uuid4().int)[:16]
    ce = {
        "specversion": "1.0",
        "id": mid,
        "source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "type": PUBSUB_PUBLISHED,
        "time": now,
        "datacontenttype": "application/json",
    }
    envelope = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": dict(attributes),
            "messageId": mid,
            "publishTime": now,
        },
        "subscription": f"projects/{project}/subscriptions/{subscription}",
    }
    return ce, envelope


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
