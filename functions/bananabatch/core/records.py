"""The persisted records: jobs/{job_id}, jobs/{job_id}/items/{key}, batches/{batch_id},
cache/{content_hash}. Pure data; the state store keeps them as JSON-compatible documents.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from bananabatch.core.states import BatchState, ItemState, JobState

SCHEMA_VERSION: Final = 1


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class SourceObject(Record):
    bucket: str
    name: str
    generation: str

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


class ProviderCosts(Record):
    """One provider's share of a job's money: its items (lines naming its models), their
    estimates and what they actually cost."""

    items: int = 0
    estimated_usd: float = 0.0
    actual_usd: float = 0.0


class LaneCosts(Record):
    """One lane's share of a job: items it served and what they actually cost."""

    items: int = 0
    actual_usd: float = 0.0


class Costs(Record):
    """Money in USD. Estimated before spending, actual from usageMetadata afterwards."""

    estimated_usd: float = 0.0
    standard_equivalent_usd: float = 0.0
    actual_usd: float = 0.0
    saved_usd: float = 0.0
    cost_per_accepted_image_usd: float | None = None
    # What cache hits and in-file duplicates would have cost at their lane's price.
    cache_saved_usd: float = 0.0
    # The actual cost split by lane: batch items, and urgent items at the standard price.
    batch_actual_usd: float = 0.0
    urgent_actual_usd: float = 0.0
    # The same money split by provider (catalog.Provider value: "gemini", "openai"), for
    # the providers the job's lines used; set when the job ends.
    by_provider: dict[str, ProviderCosts] = Field(default_factory=dict)
    # The actual split by lane (batch, cache, duplicate, and each sync provider such as
    # gemini-standard or compat:<label>); set when the job ends.
    by_lane: dict[str, LaneCosts] = Field(default_factory=dict)


# JobRecord.options key set by a cancel request.
CANCEL_OPTION: Final = "cancel_requested"
# `bananabatch retry JOB`: the job it made of JOB's failed items, and who is making it.
RETRY_JOB_OPTION: Final = "retry_job_id"
RETRY_CLAIM_OPTION: Final = "retry_claim"


class JobRecord(Record):
    job_id: str
    state: JobState
    source: SourceObject
    created_at: datetime
    updated_at: datetime
    default_model: str
    results_prefix: str
    line_count: int = 0
    accepted_count: int = 0
    rejected_count: int = 0
    batch_count: int = 0
    # Lines for the synchronous lane: only jobs with some need urgent-item queries.
    urgent_count: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    costs: Costs = Field(default_factory=Costs)
    # Set by the collector that wins the move to a terminal state, cleared once the
    # completion message is out; a redelivery finding it unset publishes nothing.
    completion_pending: bool = False
    completion_published: bool = False
    finished_at: datetime | None = None
    error: str | None = None
    options: dict[str, str] = Field(default_factory=dict)
    # UTC day (budget/{day}) holding this job's reservation, once it has one.
    budget_day: str | None = None
    # Said at intake about the models the lines use (deprecated, restricted, batch support
    # undocumented); repeated in summary.json.
    warnings: list[str] = Field(default_factory=list)
    # Why submission is paused deployment-wide while this job waits (pipeline/pause.py),
    # and every pause it waited through ({reason, since, until}), for status and summary.
    paused: str | None = None
    pauses: list[dict[str, str]] = Field(default_factory=list)
    # The steps after the terminal move (pipeline/finalize.py), each marked once done so a
    # redelivery or the tick redoes exactly the ones a crash left undone.
    cache_populated: bool = False
    budget_settled: bool = False
    # True once every step of closing the job is done (terminal, reports, cache, budget,
    # completion published): the tick looks for terminal jobs where it is still False.
    finalized: bool = False
    # The last failure of a periodic or fan-out step on this job, shown by `status`; it
    # never stops the work on other jobs.
    last_error: str | None = None
    # Set once the tick has reported this job running past its expected completion, so the
    # alert fires once per job, not once per tick.
    overdue_reported: bool = False
    # The batch window this job's batches wait for (pipeline/window.py); None: they went
    # (or go) at once.
    window_at: datetime | None = None

    @property
    def cancel_requested(self) -> bool:
        """The user asked to stop spending on this job (`bananabatch cancel`)."""
        return self.options.get(CANCEL_OPTION) == "1"

    @property
    def may_spend(self) -> bool:
        """Whether new paid requests may be made for this job now: it runs and nobody
        asked to stop it. RECEIVED and HELD jobs wait; ended or cancelled ones never spend."""
        return self.state is JobState.RUNNING and not self.cancel_requested


class ItemRecord(Record):
    job_id: str
    key: str
    line_no: int
    state: ItemState
    model: str
    aspect_ratio: str | None = None
    image_size: str | None = None
    prompt_preview: str = ""
    request_hash: str | None = None
    batch_id: str | None = None
    attempt: int = 0
    image_uri: str | None = None
    mime_type: str | None = None
    reason: str | None = None
    finish_reason: str | None = None
    error_code: int | None = None
    estimated_usd: float = 0.0
    actual_usd: float | None = None
    usage: dict[str, Any] | None = None
    updated_at: datetime | None = None
    # How the item is served: "batch", "urgent" (an urgent line on a synchronous lane),
    # "sync" (a bulk line on a synchronous lane), "cache" (copied from an
    # earlier image), "duplicate" (copies duplicate_of's image when the job ends) or
    # "joined" (waits for joined_job's identical request in flight).
    lane: str | None = None
    # Which provider of a sync lane served it, or last failed it ("gemini-standard",
    # "compat:<label>"; pipeline/lanes.py): the actual split in the summary.
    provider_lane: str | None = None
    duplicate_of: str | None = None
    # For cache hits and duplicates: what the item would have cost had it been generated.
    saved_usd: float | None = None
    # Lane "joined": the job whose identical request, in flight when this line's batch was
    # submitted, this item waits for and is served from (pipeline/claims.py, inflight.py).
    joined_job: str | None = None


class BatchRecord(Record):
    batch_id: str
    job_id: str
    index: int
    attempt: int = 1
    state: BatchState
    model: str
    # Which provider runs it (catalog.Provider: "gemini" for the Developer API, Vertex or
    # its emulator, "openai"): one model per batch, so one provider. Records written before
    # there were two providers have none and are Gemini's.
    provider: str | None = None
    display_name: str
    request_object: str
    request_count: int
    request_bytes: int = 0
    expected_output_bytes: int = 0
    provider_name: str | None = None
    provider_state: str | None = None
    provider_error: str | None = None
    created_at: datetime
    updated_at: datetime
    submitting_since: datetime | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    # Collector checkpoint: result lines already applied.
    cursor: int = 0
    submit_attempts: int = 0
    next_submit_after: datetime | None = None
    # The batch's items before they are item records (core/manifest.py): intake writes
    # this object instead of one document per line, and the records are created from it
    # when the batch is first claimed for submission, cancelled or rejected. None for
    # batches whose items already exist (retry batches).
    manifest_object: str | None = None
    # Set once the item records of manifest_object exist; until then the batch's
    # request_count items count as PENDING without documents (Repo.count_items).
    items_materialized: bool = False
    # The last failure of polling, cancelling or collecting this batch (shown by
    # `status`), and how many polls in a row the provider refused for good.
    last_error: str | None = None
    poll_failures: int = 0
    # Collection lease: the collector that holds it until lease_until downloads the
    # results; any other delivery of the batch-done signal leaves it alone.
    lease_owner: str | None = None
    lease_until: datetime | None = None
    # The batch window's packing (pipeline/pack.py). On a shared batch: the jobs whose
    # lines it carries (its job_id is then the pack's id, which no job record has), each
    # line keyed `<job_id>/<key>` in its request file. On a job's own planned batch: the
    # pack that took its lines (set while still QUEUED, which keeps every other submitter
    # off it; it then ends COLLECTED with provider_state PACKED).
    members: list[str] = Field(default_factory=list)
    packed_into: str | None = None

    @property
    def job_ids(self) -> list[str]:
        """The jobs whose items this batch carries."""
        return list(self.members) if self.members else [self.job_id]

    def request_key(self, job_id: str, key: str) -> str:
        """An item's key as this batch's request and result files have it."""
        return pack_key(job_id, key) if self.members else key


_UNSAFE = re.compile(r"[^a-z0-9-]+")
# What an input file's name ends with, in any case (`.jsonl`, `.JSONL`, `.Jsonl`): one rule
# for the upload trigger, `submit`, `local run` and the job id.
JSONL_SUFFIX: Final = ".jsonl"


def is_jsonl_name(name: str) -> bool:
    """Whether an object or file name is an input file, whatever the case of its suffix."""
    return name.lower().endswith(JSONL_SUFFIX)


def jsonl_stem(name: str) -> str:
    """The base name without its .jsonl suffix (any case)."""
    base = name.rsplit("/", 1)[-1]
    return base[: -len(JSONL_SUFFIX)] if is_jsonl_name(base) else base


def job_id_for(source: SourceObject) -> str:
    """A readable, stable job id: the file's stem plus a hash of bucket, name and generation.

    The same upload event always yields the same id, so a redelivered event finds its job.
    """
    stem = jsonl_stem(source.name).lower()
    slug = _UNSAFE.sub("-", stem).strip("-")[:40] or "job"
    digest = hashlib.sha256(
        f"{source.bucket}\n{source.name}\n{source.generation}".encode()
    ).hexdigest()[:12]
    return f"{slug}-{digest}"


def batch_id_for(job_id: str, index: int, attempt: int = 1) -> str:
    return f"{job_id}-b{index:04d}-a{attempt}"


PACK_PREFIX: Final = "pack-"


def pack_id_for(window_at: datetime, provider: str, model: str, sources: Iterable[str]) -> str:
    """A pack's id: its window and a digest of what it packs, so a repeat names it again."""
    digest = hashlib.sha256("\n".join([provider, model, *sorted(sources)]).encode()).hexdigest()[
        :10
    ]
    return f"{PACK_PREFIX}{window_at.strftime('%Y%m%dt%H%M')}-{digest}"


def pack_key(job_id: str, key: str) -> str:
    """A line's key in a shared batch's request file: job ids never contain "/"."""
    return f"{job_id}/{key}"


def split_pack_key(packed: str) -> tuple[str, str]:
    job_id, _, key = packed.partition("/")
    return job_id, key


def display_name_for(batch_id: str) -> str:
    """Unique per planned batch and attempt: the key for reconciling an unknown create."""
    return f"bananabatch-{batch_id}"


def job_path(job_id: str) -> str:
    return f"jobs/{job_id}"


def items_collection(job_id: str) -> str:
    return f"jobs/{job_id}/items"


def item_path(job_id: str, key: str) -> str:
    return f"jobs/{job_id}/items/{key}"


def batch_path(batch_id: str) -> str:
    return f"batches/{batch_id}"


def cache_path(content_hash: str) -> str:
    return f"cache/{content_hash}"


def claim_path(content_hash: str) -> str:
    """A request's in-flight claim, taken at its batch's submission (pipeline/claims.py)."""
    return f"inflight/{content_hash}"


def budget_path(day: str) -> str:
    return f"budget/{day}"


def results_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def joined_request_object(job_id: str, line_no: int) -> str:
    """Where a line that joined another job's request in flight keeps its own request, in
    case it must be paid after all (pipeline/inflight.py) or listed in failed.jsonl."""
    return f"{results_prefix(job_id)}joined/{line_no:09d}.json"


def request_object_name(job_id: str, index: int, attempt: int = 1) -> str:
    suffix = "" if attempt == 1 else f"-a{attempt}"
    return f"jobs/{job_id}/requests/batch-{index:04d}{suffix}.jsonl"


def manifest_object_name(job_id: str, index: int) -> str:
    # Apart from requests/, which holds exactly what was submitted (the storage contract).
    return f"jobs/{job_id}/manifests/batch-{index:04d}.jsonl"


def image_object_name(job_id: str, key: str, mime_type: str) -> str:
    return f"jobs/{job_id}/images/{key}.{extension_for(mime_type)}"


def extension_for(mime_type: str) -> str:
    return {
        "image/png": "png",
        "image/jpeg": "jpg",
        "image/webp": "webp",
        "image/gif": "gif",
    }.get(mime_type.lower(), "bin")
