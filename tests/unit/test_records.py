from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bananabatch.core.records import (
    BatchRecord,
    ItemRecord,
    JobRecord,
    SourceObject,
    batch_id_for,
    batch_path,
    cache_path,
    display_name_for,
    extension_for,
    image_object_name,
    item_path,
    items_collection,
    job_id_for,
    job_path,
    request_object_name,
    results_prefix,
)
from bananabatch.core.states import BatchState, ItemState, JobState

SRC = SourceObject(bucket="inbox", name="drops/Spring Catalog 2026.jsonl", generation="1712")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_the_same_upload_always_gets_the_same_job_id() -> None:
    again = SourceObject(bucket="inbox", name="drops/Spring Catalog 2026.jsonl", generation="1712")
    assert job_id_for(SRC) == job_id_for(again)


def test_the_job_id_is_the_readable_stem_plus_a_hash() -> None:
    assert re.fullmatch(r"spring-catalog-2026-[0-9a-f]{12}", job_id_for(SRC))


@pytest.mark.parametrize(
    "other",
    [
        SourceObject(bucket="inbox", name="drops/Spring Catalog 2026.jsonl", generation="1713"),
        SourceObject(bucket="inbox2", name="drops/Spring Catalog 2026.jsonl", generation="1712"),
        SourceObject(bucket="inbox", name="other/Spring Catalog 2026.jsonl", generation="1712"),
    ],
)
def test_a_new_generation_bucket_or_path_gets_a_new_job_id(other: SourceObject) -> None:
    assert job_id_for(other) != job_id_for(SRC)


def test_a_name_without_usable_characters_still_gets_a_job_id() -> None:
    job_id = job_id_for(SourceObject(bucket="b", name="🍌🍌.jsonl", generation="1"))
    assert re.fullmatch(r"job-[0-9a-f]{12}", job_id)


@settings(deadline=None)
@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=20))
def test_every_job_id_is_safe_in_paths_and_document_ids(name: str, generation: str) -> None:
    job_id = job_id_for(SourceObject(bucket="b", name=name, generation=generation))
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[0-9a-f]{12}", job_id)
    assert len(job_id) <= 40 + 1 + 12


def test_paths_follow_the_storage_contract() -> None:
    assert job_path("j") == "jobs/j"
    assert items_collection("j") == "jobs/j/items"
    assert item_path("j", "sku-1") == "jobs/j/items/sku-1"
    assert batch_path("j-b0001-a1") == "batches/j-b0001-a1"
    assert cache_path("ab12") == "cache/ab12"
    assert results_prefix("j") == "jobs/j/"
    assert request_object_name("j", 3) == "jobs/j/requests/batch-0003.jsonl"
    assert request_object_name("j", 3, attempt=2) == "jobs/j/requests/batch-0003-a2.jsonl"
    assert image_object_name("j", "sku-1", "image/png") == "jobs/j/images/sku-1.png"


def test_batch_ids_and_display_names_are_unique_per_index_and_attempt() -> None:
    ids = {batch_id_for("j", i, a) for i in range(1, 4) for a in range(1, 3)}
    assert len(ids) == 6
    assert batch_id_for("j", 12) == "j-b0012-a1"
    assert display_name_for("j-b0012-a1") == "bananabatch-j-b0012-a1"


@pytest.mark.parametrize(
    ("mime", "ext"),
    [("image/png", "png"), ("image/JPEG", "jpg"), ("image/webp", "webp"), ("x/y", "bin")],
)
def test_image_extensions_follow_the_mime_type(mime: str, ext: str) -> None:
    assert extension_for(mime) == ext


def test_a_record_round_trips_through_its_document() -> None:
    job = JobRecord(
        job_id="j",
        state=JobState.RUNNING,
        source=SRC,
        created_at=NOW,
        updated_at=NOW,
        default_model="gemini-3-pro-image",
        results_prefix="gs://results/jobs/j/",
        counts={"PENDING": 2},
    )
    doc = job.to_doc()
    assert doc["state"] == "RUNNING"
    assert doc["source"] == {"bucket": "inbox", "name": SRC.name, "generation": "1712"}
    assert JobRecord.model_validate(doc) == job


def test_records_are_immutable_and_ignore_unknown_document_fields() -> None:
    item = ItemRecord(
        job_id="j", key="k", line_no=1, state=ItemState.PENDING, model="gemini-3-pro-image"
    )
    with pytest.raises(ValidationError):
        item.key = "other"  # type: ignore[misc]
    assert ItemRecord.model_validate({**item.to_doc(), "future_field": 1}) == item


def test_a_batch_record_requires_its_state_and_times() -> None:
    with pytest.raises(ValidationError):
        BatchRecord.model_validate({"batch_id": "b", "job_id": "j", "index": 1})


def test_the_source_uri_is_a_gs_uri() -> None:
    assert SRC.uri == "gs://inbox/drops/Spring Catalog 2026.jsonl"


def test_batch_states_in_records_are_enum_values() -> None:
    batch = BatchRecord(
        batch_id="b",
        job_id="j",
        index=1,
        state=BatchState.QUEUED,
        model="m",
        display_name="d",
        request_object="o",
        request_count=1,
        created_at=NOW,
        updated_at=NOW,
    )
    assert batch.to_doc()["state"] == "QUEUED"
    assert BatchRecord.model_validate(batch.to_doc()).state is BatchState.QUEUED
