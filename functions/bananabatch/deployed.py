"""The CLI's side of a deployed stack: put a file in the inbox bucket (Eventarc then starts
the job) and read a job's status from Firestore.

Neither needs a batch provider or a Gemini key: only Cloud Storage and Firestore, reached
with the caller's Application Default Credentials (or the emulators named by
STORAGE_EMULATOR_HOST / FIRESTORE_EMULATOR_HOST).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bananabatch.config import Settings
from bananabatch.core.records import JobRecord, SourceObject, is_jsonl_name, job_id_for
from bananabatch.core.states import JOB_TERMINAL, ItemState
from bananabatch.errors import ConfigError, NotFound, PermanentError
from bananabatch.pipeline.repo import Repo
from bananabatch.ports import ObjectStore, StateStore

JSONL_CONTENT_TYPE: Final = "application/jsonl"
_COPY_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True)
class Stores:
    objects: ObjectStore
    state: StateStore


def build_stores(settings: Settings) -> Stores:
    """Cloud Storage and Firestore for settings.project; no provider, no Pub/Sub."""
    if not settings.project:
        raise ConfigError("a deployed stack needs a project: set GOOGLE_CLOUD_PROJECT")
    from bananabatch.adapters.gcp.firestore import FirestoreStateStore
    from bananabatch.adapters.gcp.storage import GcsObjectStore

    return Stores(
        objects=GcsObjectStore.from_settings(settings),
        state=FirestoreStateStore.from_settings(settings),
    )


def submit_file(
    settings: Settings,
    source: str,
    *,
    stores: Stores | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Put `source` (a local path or a gs:// URI) in the inbox bucket; returns the job id
    the upload starts. An object already in the inbox is used where it is; one elsewhere
    is copied in under its base name, since only the inbox triggers on_upload."""
    base = source.rstrip("/").rsplit("/", 1)[-1]
    if not is_jsonl_name(base):
        # The upload trigger only acts on *.jsonl (any case); say so before uploading
        # rather than leave the caller waiting for a job that never starts.
        raise PermanentError(
            f"submit {source}: the inbox only starts jobs for *.jsonl objects (any case);"
            f" found {base!r}"
        )
    stores = stores or build_stores(settings)
    inbox = settings.inbox_bucket
    if source.startswith("gs://"):
        if metadata:
            # A copy keeps the source's metadata; rewriting another's object is not ours.
            raise PermanentError(
                f"submit {source}: --budget needs a local file; for an object already in a "
                "bucket, set its bananabatch-budget-usd metadata when uploading it"
            )
        bucket, _, name = source.removeprefix("gs://").partition("/")
        if not bucket or not name or name.endswith("/"):
            raise PermanentError(f"submit {source}: expected gs://bucket/object.jsonl")
        if bucket == inbox:
            target = name
        else:
            if stores.objects.stat(bucket, name) is None:
                raise NotFound(f"submit {source}: expected an existing object, found none")
            target = name.rsplit("/", 1)[-1]
            stores.objects.copy(bucket, name, inbox, target)
    else:
        path = Path(source)
        if not path.is_file():
            raise PermanentError(f"submit {source}: no such file")
        target = path.name
        with (
            path.open("rb") as reader,
            stores.objects.open_write(
                inbox, target, content_type=JSONL_CONTENT_TYPE, metadata=metadata
            ) as sink,
        ):
            while chunk := reader.read(_COPY_CHUNK):
                sink.write(chunk)
    info = stores.objects.stat(inbox, target)
    if info is None or info.generation is None:
        raise NotFound(f"submit {source}: gs://{inbox}/{target} is not there after the upload")
    return job_id_for(SourceObject(bucket=inbox, name=target, generation=info.generation))


def job_status(settings: Settings, job_id: str, *, stores: Stores | None = None) -> dict[str, Any]:
    """A job as the CLI shows it: state, counts per item state, costs, where results are.
    Raises NotFound when Firestore has no such job (yet: on_upload may still be running)."""
    stores = stores or build_stores(settings)
    repo = Repo(stores.state)
    job = repo.get_job(job_id)
    if job is None:
        raise NotFound(
            f"job {job_id}: not in Firestore database {settings.firestore_database} of "
            f"project {settings.project} (an upload takes a few seconds to register)"
        )
    return view(repo, job)


def view(repo: Repo, job: JobRecord) -> dict[str, Any]:
    if job.state in JOB_TERMINAL:
        counts = dict(job.counts)
    else:
        counts = {state.value: repo.count_items(job.job_id, state) for state in ItemState}
        counts[ItemState.REJECTED.value] = job.rejected_count
    return {
        "job_id": job.job_id,
        "state": job.state.value,
        "source": job.source.uri,
        "line_count": job.line_count,
        "batch_count": job.batch_count,
        "counts": counts,
        "costs": job.costs.to_doc(),
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "results_prefix": job.results_prefix,
        "error": job.error,
    }


__all__ = ["Stores", "build_stores", "job_status", "submit_file", "view"]
