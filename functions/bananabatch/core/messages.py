"""The completion message: what subscribers of the public `completions` topic receive.

Pure: builds JSON-compatible dicts from records. The shape is a contract, written down in
`bananabatch/schemas/completion.v1.schema.json`; a unit test validates every message built
here against it, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Final

from bananabatch.core.records import SCHEMA_VERSION, JobRecord
from bananabatch.core.states import JOB_TERMINAL, ItemState, JobState
from bananabatch.errors import PermanentError

COMPLETION_SCHEMA_FILE: Final = "completion.v1.schema.json"
# HELD goes to the same topic: a subscriber waiting for its job must learn it is stuck.
PUBLISHABLE_STATES: Final = frozenset(JOB_TERMINAL | {JobState.HELD})

_REASON_LIMIT: Final = 300
_HELD_DEFAULT_REASON: Final = "the estimated cost is over the budget; approve or cancel the job"


def completion_message(
    job: JobRecord,
    *,
    results_prefix_uri: str,
    summary_uri: str | None = None,
    gallery_uri: str | None = None,
) -> dict[str, Any]:
    """The message announcing that `job` is terminal (or HELD over budget)."""
    if job.state not in PUBLISHABLE_STATES:
        raise PermanentError(
            f"no completion message for state {job.state}; expected one of "
            f"{', '.join(sorted(PUBLISHABLE_STATES))}",
            job_id=job.job_id,
        )
    costs = job.costs
    message: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "job_id": job.job_id,
        "state": job.state.value,
        "source": {
            "bucket": job.source.bucket,
            "name": job.source.name,
            "generation": job.source.generation,
            "uri": job.source.uri,
        },
        # Every state, zeros included, so consumers never special-case a missing key;
        # stray keys would break the schema's closed object, so only known states count.
        "counts": {state.value: int(job.counts.get(state.value, 0)) for state in ItemState},
        "line_count": job.line_count,
        "costs": {
            "estimated_usd": _usd(costs.estimated_usd),
            "actual_usd": _usd(costs.actual_usd),
            "standard_equivalent_usd": _usd(costs.standard_equivalent_usd),
            "saved_usd": _usd(costs.saved_usd),
            "cost_per_accepted_image_usd": (
                None
                if costs.cost_per_accepted_image_usd is None
                else _usd(costs.cost_per_accepted_image_usd)
            ),
        },
        "results_prefix": results_prefix_uri,
        "created_at": _timestamp(job.created_at),
        "finished_at": None if job.finished_at is None else _timestamp(job.finished_at),
    }
    if costs.by_provider:
        # Added in place (schema v1 allows it): a job's money split by provider.
        message["costs"]["by_provider"] = {
            name: {
                "items": share.items,
                "estimated_usd": _usd(share.estimated_usd),
                "actual_usd": _usd(share.actual_usd),
            }
            for name, share in sorted(costs.by_provider.items())
        }
    if costs.by_lane:
        # Added in place (schema v1 allows it): the actual split across the lanes.
        message["costs"]["by_lane"] = {
            name: {"items": share.items, "actual_usd": _usd(share.actual_usd)}
            for name, share in sorted(costs.by_lane.items())
        }
    if summary_uri is not None:
        message["summary_uri"] = summary_uri
    if gallery_uri is not None:
        message["gallery_uri"] = gallery_uri
    reason = _reason(job)
    if reason is not None:
        message["reason"] = reason
    return message


def message_attributes(message: Mapping[str, Any]) -> dict[str, str]:
    """Pub/Sub attributes: subscription filters can only see these, never the body."""
    return {
        # Alerts share the topic (core/alerts.py): `attributes.kind = "completion"` filters.
        "kind": "completion",
        "job_id": str(message["job_id"]),
        "state": str(message["state"]),
        "schema_version": str(message["schema_version"]),
    }


def encode_message(message: Mapping[str, Any]) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON and would break strict consumers.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def load_completion_schema() -> dict[str, Any]:
    """The completion message's JSON Schema; a fresh dict each call, so callers may mutate it."""
    loaded: dict[str, Any] = json.loads(_schema_text())
    return loaded


@cache
def _schema_text() -> str:
    return (
        resources.files("bananabatch.schemas")
        .joinpath(COMPLETION_SCHEMA_FILE)
        .read_text(encoding="utf-8")
    )


def _usd(value: float) -> float:
    # Sums of many per-item floats carry noise like 0.30000000000000004; a micro-dollar is
    # far below any price, so rounding loses nothing a reader cares about.
    return round(float(value), 6)


def _timestamp(value: datetime) -> str:
    # RFC 3339 needs an offset; a naive datetime in a record was written as UTC.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _reason(job: JobRecord) -> str | None:
    if job.error:
        lines = job.error.strip().splitlines()
        first_line = lines[0].strip() if lines else ""
        if first_line:
            if len(first_line) > _REASON_LIMIT:
                return first_line[: _REASON_LIMIT - 1] + "…"
            return first_line
    if job.state is JobState.HELD:
        return _HELD_DEFAULT_REASON
    return None
