"""Batch manifests (core/manifest.py) and the item records made from them
(pipeline.materialize.materialize_items): a round trip, idempotence, terminal items left alone,
and the PENDING count of batches whose items are not records yet."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bananabatch.config import Settings
from bananabatch.core import records as rec
from bananabatch.core.manifest import (
    ManifestEntry,
    decode_entry,
    encode_entry,
    item_from_entry,
)
from bananabatch.core.records import BatchRecord, ItemRecord
from bananabatch.core.states import BatchState, ItemState
from bananabatch.errors import PermanentError
from bananabatch.pipeline.materialize import materialize_items
from bananabatch.pipeline.runtime import Runtime
from bananabatch.wiring import build_runtime

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
JOB = "job-1"

ENTRIES = [
    ManifestEntry("sku-1", 1, "a" * 64, "a red bicycle", "16:9", "2K", 0.0672),
    ManifestEntry('ünï ✓ "q"', 3, "b" * 64, "line\\nbreak … ✓", None, None, 0.0195),
    ManifestEntry("k3", 4, None, "", "1:1", None, 0.0),
]


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return build_runtime(Settings(local_root=tmp_path), with_provider=False)


def _batch(rt: Runtime, entries: list[ManifestEntry], *, index: int = 1) -> BatchRecord:
    name = rec.manifest_object_name(JOB, index)
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        name,
        "".join(encode_entry(e) for e in entries).encode(),
        content_type="application/jsonl",
    )
    batch_id = rec.batch_id_for(JOB, index)
    batch = BatchRecord(
        batch_id=batch_id,
        job_id=JOB,
        index=index,
        state=BatchState.QUEUED,
        model="gemini-3-pro-image",
        display_name=rec.display_name_for(batch_id),
        request_object=rec.request_object_name(JOB, index),
        manifest_object=name,
        request_count=len(entries),
        created_at=NOW,
        updated_at=NOW,
    )
    rt.repo.create_batch(batch)
    return batch


def test_an_entry_round_trips_through_its_line() -> None:
    for entry in ENTRIES:
        line = encode_entry(entry)
        assert line.endswith("\n")
        assert "\n" not in line[:-1]
        assert decode_entry(line.encode(), where="m, line 1") == entry


def test_an_entry_becomes_the_item_intake_used_to_write(rt: Runtime) -> None:
    batch = _batch(rt, ENTRIES)
    item = item_from_entry(ENTRIES[0], batch, ItemState.SUBMITTED, NOW)
    assert item == ItemRecord(
        job_id=JOB,
        key="sku-1",
        line_no=1,
        state=ItemState.SUBMITTED,
        model="gemini-3-pro-image",
        aspect_ratio="16:9",
        image_size="2K",
        prompt_preview="a red bicycle",
        request_hash="a" * 64,
        batch_id=batch.batch_id,
        attempt=1,
        estimated_usd=0.0672,
        lane="batch",
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"key": "k"}', "expected a JSON array of 7 values"),
        (b'["k", "1", null, "", null, null, 0.1]', "field line_no: expected int; found '1'"),
        (b'[null, 1, null, "", null, null, 0.1]', "field key: expected str; found None"),
        (b'["k", 1, null, "", null, null, true]', "field estimated_usd: expected a number"),
    ],
)
def test_a_bad_manifest_line_names_the_object_line_field_and_value(
    raw: bytes, expected: str
) -> None:
    where = "jobs/x/manifests/batch-0001.jsonl, line 4"
    with pytest.raises(PermanentError, match=re.escape(f"manifest {where}")):
        decode_entry(raw, where=where)
    with pytest.raises(PermanentError, match=expected):
        decode_entry(raw, where="m")


def test_materializing_creates_every_item_once_and_marks_the_batch(rt: Runtime) -> None:
    batch = _batch(rt, ENTRIES)
    assert rt.repo.count_items(JOB, ItemState.PENDING) == 3  # from the manifest
    assert materialize_items(rt, batch, ItemState.SUBMITTED) == 3
    items = rt.repo.items_of_batch(batch)
    assert sorted(items) == sorted(e.key for e in ENTRIES)
    assert {i.state for i in items.values()} == {ItemState.SUBMITTED}
    assert rt.repo.require_batch(batch.batch_id).items_materialized
    assert rt.repo.count_items(JOB, ItemState.PENDING) == 0
    assert rt.repo.count_items(JOB, ItemState.SUBMITTED) == 3
    # Again: nothing to write, nothing changes.
    again = rt.repo.require_batch(batch.batch_id)
    assert materialize_items(rt, again, ItemState.SUBMITTED) == 0
    assert rt.repo.items_of_batch(batch) == items


def test_materializing_again_never_touches_a_terminal_item(rt: Runtime) -> None:
    batch = _batch(rt, ENTRIES)
    materialize_items(rt, batch, ItemState.SUBMITTED)
    done = rt.repo.items_of_batch(batch)["sku-1"].model_copy(
        update={"state": ItemState.SUCCEEDED, "image_uri": "file:///x.png"}
    )
    rt.repo.put_items([done])
    # A quota refusal puts the batch's open items back; a reconcile claims them again.
    assert materialize_items(rt, batch, ItemState.PENDING) == 2
    items = rt.repo.items_of_batch(batch)
    assert items["sku-1"] == done
    assert {items[k].state for k in items if k != "sku-1"} == {ItemState.PENDING}


def test_only_absent_creates_missing_items_and_leaves_existing_ones(rt: Runtime) -> None:
    batch = _batch(rt, ENTRIES)
    first = item_from_entry(ENTRIES[0], batch, ItemState.SUBMITTED, NOW)
    rt.repo.put_items([first])
    assert materialize_items(rt, batch, ItemState.PENDING, only_absent=True) == 2
    items = rt.repo.items_of_batch(batch)
    assert items["sku-1"] == first
    assert items["k3"].state is ItemState.PENDING


def test_a_reason_goes_on_every_item_moved_or_created(rt: Runtime) -> None:
    batch = _batch(rt, ENTRIES)
    materialize_items(rt, batch, ItemState.FAILED, reason="rejected by user")
    assert {i.reason for i in rt.repo.items_of_batch(batch).values()} == {"rejected by user"}


def test_a_batch_without_a_manifest_only_moves_its_existing_items(rt: Runtime) -> None:
    batch = _batch(rt, ENTRIES).model_copy(update={"manifest_object": None})
    item = item_from_entry(ENTRIES[1], batch, ItemState.PENDING, NOW)
    rt.repo.put_items([item])
    assert materialize_items(rt, batch, ItemState.SUBMITTED) == 1
    assert [i.state for i in rt.repo.items_of_batch(batch).values()] == [ItemState.SUBMITTED]


def test_a_missing_manifest_is_a_permanent_error_naming_it(rt: Runtime) -> None:
    batch = _batch(rt, ENTRIES)
    rt.objects.delete(rt.settings.results_bucket, batch.manifest_object or "")
    with pytest.raises(PermanentError, match=r"manifest jobs/job-1/manifests/batch-0001\.jsonl"):
        materialize_items(rt, batch, ItemState.SUBMITTED)


def test_many_items_are_written_in_several_commits(rt: Runtime) -> None:
    entries = [ManifestEntry(f"k{n}", n, None, "p", None, None, 0.01) for n in range(1, 1202)]
    batch = _batch(rt, entries)
    assert materialize_items(rt, batch, ItemState.SUBMITTED) == 1201
    assert rt.repo.count_items(JOB, ItemState.SUBMITTED) == 1201
