"""Retry batches: the retryable failures of a collected batch go out again, in a new batch.

A row that failed for a reason that may not recur (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED,
or no output at all because the row went missing or the batch failed, expired or was
cancelled) is staged into a new batch record for the same planned index with attempt + 1,
until Settings.max_attempts. Everything is deterministic, so a redelivered batch-done
repeats it harmlessly:

- the retry batch's id, display name and request file follow from (job, index, attempt);
- the request file is written first and, once it exists, is the list of keys to retry;
- items are moved back to PENDING only while they still point at the source batch;
- the batch record is created last, create-if-absent, as QUEUED.

Until the source batch is marked COLLECTED (after this runs) the job cannot finalize, and
afterwards the QUEUED retry batch keeps it open, so no job closes with a retry in flight.

A retry is a new paid request, deliberately: the provider did not produce a result for
the first one. "Paid twice" means the same (key, attempt) accepted twice, which the
ledger prevents; different attempts of one key are distinct requests.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Final

from bananabatch.core import records as rec
from bananabatch.core.records import RETRY_JOB_OPTION, BatchRecord, ItemRecord
from bananabatch.core.row_errors import RETRYABLE_GRPC_CODES, RETRYABLE_HTTP_CODES
from bananabatch.core.states import JOB_TERMINAL, BatchState, ItemState
from bananabatch.errors import NotFound, PermanentError
from bananabatch.log import get_logger, labels
from bananabatch.pipeline import lifecycle, pack
from bananabatch.pipeline.runtime import Runtime

log = get_logger(__name__)

# Reasons the collector gives rows that never came back; both are worth another attempt.
MISSING_SUCCEEDED: Final = "missing from the provider's output although the batch succeeded"
NO_OUTPUT_PREFIX: Final = "no output: the batch ended "


@dataclass
class RetryPlan:
    source_batch_id: str
    retry_batch_id: str | None = None
    keys: list[str] = field(default_factory=list)


def is_retryable(item: ItemRecord) -> bool:
    """A FAILED item whose failure may not recur. BLOCKED and invalid requests never are."""
    if item.state is not ItemState.FAILED:
        return False
    if item.error_code is not None:
        code = item.error_code
        return code in (RETRYABLE_HTTP_CODES if code >= 100 else RETRYABLE_GRPC_CODES)
    reason = item.reason or ""
    return reason == MISSING_SUCCEEDED or reason.startswith(NO_OUTPUT_PREFIX)


def stage_retries(rt: Runtime, batch: BatchRecord) -> RetryPlan:
    """Put the batch's retryable failures into batch (index, attempt + 1); idempotent."""
    plan = RetryPlan(source_batch_id=batch.batch_id)
    attempt = batch.attempt + 1
    if attempt > rt.settings.max_attempts:
        return plan
    job = rt.repo.get_job(batch.job_id)
    if job is not None and job.cancel_requested:
        # The user stopped spending on this job: a cancelled batch's rows end FAILED.
        return plan
    retry_id = rec.batch_id_for(batch.job_id, batch.index, attempt)
    request_object = rec.request_object_name(batch.job_id, batch.index, attempt)
    results = rt.settings.results_bucket
    with labels(job_id=batch.job_id, batch_id=batch.batch_id, retry_batch_id=retry_id):
        items = rt.repo.items_of_batch(batch)
        existing = rt.objects.stat(results, request_object)
        if existing is not None:
            keys = _keys_in(rt, results, request_object, batch)
        else:
            # A shared batch (pipeline/pack.py) retries only the lines of members that
            # may still spend: one member's cancel stops its own retries, not the others'.
            stopped = pack.stopped_members(rt, batch, {}) if batch.members else set()
            keys = sorted(
                key
                for key, item in items.items()
                if is_retryable(item) and item.job_id not in stopped
            )
            if not keys:
                return plan
            _write_requests(rt, batch, set(keys), request_object)
        plan.retry_batch_id, plan.keys = retry_id, keys
        now = rt.now()
        moved = [
            item.model_copy(
                update={
                    "state": ItemState.PENDING,
                    "batch_id": retry_id,
                    "attempt": attempt,
                    # The failure that earned the retry stays readable until the retry ends.
                    "reason": f"attempt {item.attempt} failed ({item.reason}); retrying",
                    "error_code": None,
                    "updated_at": now,
                }
            )
            for key in keys
            if (item := items.get(key)) is not None and item.state is ItemState.FAILED
        ]
        rt.repo.put_items(moved)
        info = rt.objects.stat(results, request_object)
        created = rt.repo.create_batch(
            BatchRecord(
                batch_id=retry_id,
                job_id=batch.job_id,
                index=batch.index,
                attempt=attempt,
                state=BatchState.QUEUED,
                model=batch.model,
                # The retry goes to the provider the first attempt went to.
                provider=batch.provider,
                display_name=rec.display_name_for(retry_id),
                request_object=request_object,
                request_count=len(keys),
                request_bytes=info.size if info is not None else 0,
                # From the keys, which a repeat after a crash reads back from the file.
                members=(
                    list(dict.fromkeys(rec.split_pack_key(key)[0] for key in keys))
                    if batch.members
                    else []
                ),
                created_at=now,
                updated_at=now,
            )
        )
        if created:
            log.warning(
                "retrying %d failed rows in a new batch", len(keys), extra={"attempt": attempt}
            )
        return plan


def _write_requests(rt: Runtime, batch: BatchRecord, keys: set[str], name: str) -> None:
    """Copy the chosen lines from the source batch's staged file, exactly as submitted."""
    results = rt.settings.results_bucket
    try:
        with (
            rt.objects.open_read(results, batch.request_object) as source,
            rt.objects.open_write(results, name, content_type="application/jsonl") as sink,
        ):
            for raw in source:
                if not raw.strip():
                    continue
                key, request = rt.batch_provider(batch).decode_request(json.loads(raw))
                if key in keys:
                    line = rt.batch_provider(batch).encode_request(key, request)
                    sink.write((json.dumps(line, separators=(",", ":")) + "\n").encode())
    except NotFound as exc:
        raise PermanentError(
            f"staged request file {batch.request_object} is gone; expected it to retry"
            f" {len(keys)} rows",
            job_id=batch.job_id,
            batch_id=batch.batch_id,
        ) from exc


def _keys_in(rt: Runtime, bucket: str, name: str, batch: BatchRecord) -> list[str]:
    with rt.objects.open_read(bucket, name) as source:
        decode = rt.batch_provider(batch).decode_request
        return [decode(json.loads(raw))[0] for raw in source if raw.strip()]


# --- `bananabatch retry JOB`: the failed items of a finished job as one new job ------------

# How long a `retry` that claimed a job may take to upload its retry file before another
# `retry` of the same job may take over (it died): longer than any upload and intake.
RETRY_CLAIM: Final = timedelta(minutes=10)
# How often a concurrent `retry` looks whether the claimant has named its new job yet.
RETRY_POLL_SECONDS: Final = 0.5


@dataclass(frozen=True)
class RetryJob:
    job_id: str
    retry_job_id: str
    items: int
    # False when another `retry` of the same job made it (now or earlier): this call only
    # reports it, so the failed items are paid once.
    created: bool


def retry_failed_items(
    rt: Runtime,
    job_id: str,
    upload: Callable[[Path], str],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> RetryJob:
    """Resubmit a finished job's failed.jsonl as one new job, once: the first `retry` claims
    the job (a conditional write with an expiry) and uploads; any concurrent or later one
    returns the job the first one made. A claim left by a `retry` that died expires."""
    with labels(job_id=job_id):
        job = rt.repo.require_job(job_id)
        if job.state not in JOB_TERMINAL:
            raise PermanentError(
                f"job {job_id} is still {job.state.value}; retry once it has ended", job_id=job_id
            )
        failed = rt.objects.read_bytes(rt.settings.results_bucket, f"jobs/{job_id}/failed.jsonl")
        if not failed.strip():
            raise PermanentError(f"job {job_id} has no failed items to retry", job_id=job_id)
        items = failed.count(b"\n")
        token = uuid.uuid4().hex
        while True:
            after = lifecycle.claim_retry(rt, job_id, token, lasting=RETRY_CLAIM)
            made = after.options.get(RETRY_JOB_OPTION)
            if made:
                log.info("failed items already resubmitted", extra={"retry_job_id": made})
                return RetryJob(job_id, made, items, created=False)
            if lifecycle.holds_retry_claim(after, token):
                break
            sleep(RETRY_POLL_SECONDS)
        stem = rec.jsonl_stem(job.source.name)
        try:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{stem}-retry-of-{job_id}.jsonl"
                path.write_bytes(failed)
                new_job = upload(path)
        except BaseException:
            # Hand the claim back at once, so another `retry` need not wait for it to expire.
            lifecycle.release_retry_claim(rt, job_id, token)
            raise
        lifecycle.record_retry_job(rt, job_id, new_job)
        log.warning("failed items resubmitted as a new job", extra={"retry_job_id": new_job})
        return RetryJob(job_id, new_job, items, created=True)
