"""The records of async-lane tasks (pipeline/tasks.py): one document per task an
AsyncImageLane accepted, `lane_tasks/{lane}:{task_id}`, pending until its image is written.
Apart from tasks.py so that finalize can ask whether a job still waits for one without
importing what settles them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Where

TASKS: Final = "lane_tasks"
# The receiver's sub-path for each provider's deliveries (one verification scheme each).
WEBHOOK_PATHS: Final[Mapping[str, str]] = {"replicate": "/replicate"}
PENDING: Final = "pending"
DONE: Final = "done"


@dataclass(frozen=True)
class TaskRecord:
    lane: str
    task_id: str
    job_id: str
    key: str
    attempt: int
    state: str
    submitted_at: datetime
    checked_at: datetime | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> TaskRecord:
        checked = doc.get("checked_at")
        return cls(
            lane=str(doc["lane"]),
            task_id=str(doc["task_id"]),
            job_id=str(doc["job_id"]),
            key=str(doc["key"]),
            attempt=int(doc.get("attempt", 1)),
            state=str(doc["state"]),
            submitted_at=datetime.fromisoformat(str(doc["submitted_at"])),
            checked_at=datetime.fromisoformat(str(checked)) if checked else None,
        )


def webhook_url(rt: Runtime, lane: str) -> str | None:
    """Where the provider sends this lane's callbacks: the receiver's URL and the lane's
    sub-path; None (poll only) where the deployment has no webhook URL."""
    base = rt.settings.webhook_url
    path = WEBHOOK_PATHS.get(lane)
    if not base or path is None:
        return None
    return base.rstrip("/") + path


def task_path(lane: str, task_id: str) -> str:
    return f"{TASKS}/{lane}:{task_id}"


def remember(rt: Runtime, lane: str, task_id: str, *, job_id: str, key: str, attempt: int) -> None:
    """Record a task the lane accepted; call it as soon as `submit` answered."""
    rt.state.create(
        task_path(lane, task_id),
        {
            "lane": lane,
            "task_id": task_id,
            "job_id": job_id,
            "key": key,
            "attempt": attempt,
            "state": PENDING,
            "submitted_at": rt.now().isoformat(),
        },
    )


def open_tasks(rt: Runtime, job_id: str | None = None) -> list[TaskRecord]:
    where = [Where("state", "==", PENDING)]
    if job_id is not None:
        where.append(Where("job_id", "==", job_id))
    return [TaskRecord.from_doc(doc) for doc in rt.state.query(TASKS, where)]
