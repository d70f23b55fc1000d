"""Alert messages: what the deployment publishes on the public completions topic when its
owner must act (a pause, a fatal credential error, a model gone). Pure.

A new message kind beside the completion message, with its own schema
(`bananabatch/schemas/alert.v1.schema.json`) and `schema_version`. Attributes let
subscribers filter without reading bodies: `kind` is "alert" (completions carry
"completion"), `alert` names the event, `severity` its level.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Final

ALERT_SCHEMA_FILE: Final = "alert.v1.schema.json"
ALERT_SCHEMA_VERSION: Final = 1
KIND_ALERT: Final = "alert"
_REASON_LIMIT: Final = 1000


def alert_message(
    *,
    alert: str,
    severity: str,
    reason: str,
    at: datetime,
    paused: bool,
    action: str,
    until: datetime | None = None,
    jobs: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "schema_version": ALERT_SCHEMA_VERSION,
        "kind": KIND_ALERT,
        "alert": alert,
        "severity": severity,
        "reason": reason[:_REASON_LIMIT] or alert,
        "at": at.isoformat(),
        "paused": paused,
        "action": action,
    }
    if paused:
        message["until"] = until.isoformat() if until is not None else None
    if jobs:
        message["jobs"] = list(jobs)
    if extra:
        message["details"] = dict(extra)
    return message


def attributes(message: Mapping[str, Any]) -> dict[str, str]:
    return {
        "kind": KIND_ALERT,
        "alert": str(message["alert"]),
        "severity": str(message["severity"]),
        "schema_version": str(message["schema_version"]),
    }


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def load_alert_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_schema_text())
    return loaded


@cache
def _schema_text() -> str:
    return resources.files("bananabatch.schemas").joinpath(ALERT_SCHEMA_FILE).read_text("utf-8")
