"""The ObjectStore contract, run against every backend in conftest.BACKENDS."""

from __future__ import annotations

import hashlib
import random
import threading
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from urllib.request import url2pathname

import httpx
import pytest

from bananabatch.errors import NotFound
from tests.contract.harness import ObjectsUnderTest

CHUNK = 64 * 1024
STREAM_BYTES = 5 * 1024 * 1024 + 123  # not a multiple of the chunk size


class Boom(Exception):
    pass


def test_write_bytes_then_read_bytes_round_trips_the_content(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    data = bytes(range(256)) * 3
    assert store.write_bytes(bucket, "a/b.bin", data, content_type="application/octet-stream")
    assert store.read_bytes(bucket, "a/b.bin") == data


def test_an_empty_object_round_trips(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "empty.txt", b"", content_type="text/plain")
    assert store.read_bytes(bucket, "empty.txt") == b""
    info = store.stat(bucket, "empty.txt")
    assert info is not None
    assert info.size == 0


def test_stat_reports_size_content_type_and_metadata(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(
        bucket,
        "jobs/j1/images/k.png",
        b"\x89PNG....",
        content_type="image/png",
        metadata={"job_id": "j1", "note": "ünïcode ✓"},
    )
    info = store.stat(bucket, "jobs/j1/images/k.png")
    assert info is not None
    assert (info.bucket, info.name, info.size) == (bucket, "jobs/j1/images/k.png", 8)
    assert info.content_type == "image/png"
    assert dict(info.metadata) == {"job_id": "j1", "note": "ünïcode ✓"}
    assert info.generation


def test_stat_returns_none_for_an_absent_object(objects_under_test: ObjectsUnderTest) -> None:
    assert objects_under_test.store.stat(objects_under_test.bucket, "nope/none.txt") is None


def test_metadata_defaults_to_empty(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "plain.txt", b"x", content_type="text/plain")
    info = store.stat(bucket, "plain.txt")
    assert info is not None
    assert dict(info.metadata) == {}


def test_rewriting_an_object_changes_its_generation(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "inbox/prompts.jsonl", b"1", content_type="application/jsonl")
    first = store.stat(bucket, "inbox/prompts.jsonl")
    store.write_bytes(bucket, "inbox/prompts.jsonl", b"2", content_type="application/jsonl")
    second = store.stat(bucket, "inbox/prompts.jsonl")
    assert first is not None
    assert second is not None
    assert first.generation != second.generation


def test_read_bytes_raises_not_found_for_an_absent_object(
    objects_under_test: ObjectsUnderTest,
) -> None:
    with pytest.raises(NotFound):
        objects_under_test.store.read_bytes(objects_under_test.bucket, "missing.bin")


def test_open_read_raises_not_found_for_an_absent_object(
    objects_under_test: ObjectsUnderTest,
) -> None:
    with (
        pytest.raises(NotFound),
        objects_under_test.store.open_read(objects_under_test.bucket, "missing.bin") as stream,
    ):
        stream.read()


def test_a_multi_megabyte_object_streams_in_and_out_in_chunks(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    rng = random.Random(7)
    written = hashlib.sha256()
    with store.open_write(bucket, "big/results.jsonl", content_type="application/jsonl") as sink:
        left = STREAM_BYTES
        while left:
            chunk = rng.randbytes(min(CHUNK, left))
            sink.write(chunk)
            written.update(chunk)
            left -= len(chunk)

    read = hashlib.sha256()
    total = 0
    with store.open_read(bucket, "big/results.jsonl") as stream:
        while chunk := stream.read(CHUNK):
            assert len(chunk) <= CHUNK
            read.update(chunk)
            total += len(chunk)
    assert total == STREAM_BYTES
    assert read.hexdigest() == written.hexdigest()
    info = store.stat(bucket, "big/results.jsonl")
    assert info is not None
    assert info.size == STREAM_BYTES


def test_open_write_publishes_the_object_only_when_the_block_exits(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    with store.open_write(bucket, "partial.txt", content_type="text/plain") as sink:
        sink.write(b"first half, ")
        assert store.stat(bucket, "partial.txt") is None
        assert list(store.list(bucket)) == []
        sink.write(b"second half")
    assert store.read_bytes(bucket, "partial.txt") == b"first half, second half"


def test_open_write_that_raises_leaves_no_object(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket

    def write_then_fail() -> None:
        with store.open_write(bucket, "doomed.txt", content_type="text/plain") as sink:
            sink.write(b"some bytes")
            raise Boom

    with pytest.raises(Boom):
        write_then_fail()
    assert store.stat(bucket, "doomed.txt") is None
    assert list(store.list(bucket)) == []


def test_open_write_that_raises_leaves_the_previous_version_intact(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "keep.txt", b"old", content_type="text/plain")

    def write_then_fail() -> None:
        with store.open_write(bucket, "keep.txt", content_type="text/csv") as sink:
            sink.write(b"new")
            raise Boom

    with pytest.raises(Boom):
        write_then_fail()
    assert store.read_bytes(bucket, "keep.txt") == b"old"
    info = store.stat(bucket, "keep.txt")
    assert info is not None
    assert info.content_type == "text/plain"


def test_open_write_replaces_an_existing_object_with_its_type_and_metadata(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "r.json", b"{}", content_type="text/plain", metadata={"v": "1"})
    with store.open_write(
        bucket, "r.json", content_type="application/json", metadata={"v": "2"}
    ) as sink:
        sink.write(b'{"a": 1}')
    info = store.stat(bucket, "r.json")
    assert info is not None
    assert store.read_bytes(bucket, "r.json") == b'{"a": 1}'
    assert info.content_type == "application/json"
    assert dict(info.metadata) == {"v": "2"}


def test_write_bytes_if_absent_creates_a_missing_object_and_returns_true(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    assert store.write_bytes(
        bucket, "once.txt", b"first", content_type="text/plain", if_absent=True
    )
    assert store.read_bytes(bucket, "once.txt") == b"first"


def test_write_bytes_if_absent_leaves_an_existing_object_alone_and_returns_false(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "once.txt", b"first", content_type="text/plain", metadata={"n": "1"})
    created = store.write_bytes(
        bucket, "once.txt", b"second", content_type="image/png", metadata={"n": "2"}, if_absent=True
    )
    assert created is False
    assert store.read_bytes(bucket, "once.txt") == b"first"
    info = store.stat(bucket, "once.txt")
    assert info is not None
    assert info.content_type == "text/plain"
    assert dict(info.metadata) == {"n": "1"}


def test_write_bytes_without_if_absent_overwrites_and_returns_true(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "o.txt", b"first", content_type="text/plain")
    assert store.write_bytes(bucket, "o.txt", b"second", content_type="text/plain")
    assert store.read_bytes(bucket, "o.txt") == b"second"


def test_exactly_one_of_many_concurrent_if_absent_writers_wins(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    writers = 8
    start = threading.Barrier(writers)
    outcomes: dict[int, bool] = {}
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            start.wait()
            outcomes[i] = store.write_bytes(
                bucket,
                "race/lock",
                f"writer-{i}".encode(),
                content_type="text/plain",
                if_absent=True,
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    winners = [i for i, won in outcomes.items() if won]
    assert len(outcomes) == writers
    assert len(winners) == 1
    assert store.read_bytes(bucket, "race/lock") == f"writer-{winners[0]}".encode()


def test_list_yields_objects_under_a_prefix_in_name_order(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    names = ["a/2", "b/1", "a/sub/x", "a-b", "ab", "a/10", "a/1", "jobs/a"]
    for name in names:
        store.write_bytes(bucket, name, name.encode(), content_type="text/plain")

    listed = list(store.list(bucket, "a/"))
    assert [info.name for info in listed] == ["a/1", "a/10", "a/2", "a/sub/x"]
    assert all(info.bucket == bucket for info in listed)
    assert [info.size for info in listed] == [3, 4, 3, 7]


def test_list_orders_by_the_whole_name_across_folder_boundaries(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    # "-" sorts before "/" and "b" after it: a walk that lists each folder whole would
    # give a/1 before a-b.
    for name in ["ab", "a/1", "a-b", "b", "a/z/1"]:
        store.write_bytes(bucket, name, b".", content_type="text/plain")
    assert [info.name for info in store.list(bucket, "a")] == ["a-b", "a/1", "a/z/1", "ab"]
    assert [info.name for info in store.list(bucket)] == ["a-b", "a/1", "a/z/1", "ab", "b"]


def test_list_of_a_prefix_with_no_objects_is_empty(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "jobs/j1/summary.json", b"{}", content_type="application/json")
    assert list(store.list(bucket, "jobs/j2/")) == []
    assert list(store.list(bucket, "jobs/j1/summary.jsonx")) == []


def test_list_reports_content_type_of_each_object(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "t/a.png", b"p", content_type="image/png")
    store.write_bytes(bucket, "t/b.json", b"{}", content_type="application/json")
    listed = {info.name: info.content_type for info in store.list(bucket, "t/")}
    assert listed == {"t/a.png": "image/png", "t/b.json": "application/json"}


def test_names_with_spaces_and_unicode_round_trip(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    name = "images/café latte (1).png"
    store.write_bytes(bucket, name, b"img", content_type="image/png")
    assert store.read_bytes(bucket, name) == b"img"
    assert [info.name for info in store.list(bucket, "images/")] == [name]


def test_copy_duplicates_content_type_and_metadata_and_keeps_the_source(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(
        bucket,
        "src/in.jsonl",
        b'{"prompt": "x"}\n',
        content_type="application/jsonl",
        metadata={"origin": "test"},
    )
    store.copy(bucket, "src/in.jsonl", bucket, "dst/out.jsonl")
    assert store.read_bytes(bucket, "dst/out.jsonl") == b'{"prompt": "x"}\n'
    assert store.read_bytes(bucket, "src/in.jsonl") == b'{"prompt": "x"}\n'
    info = store.stat(bucket, "dst/out.jsonl")
    assert info is not None
    assert info.content_type == "application/jsonl"
    assert dict(info.metadata) == {"origin": "test"}


def test_copy_raises_not_found_when_the_source_is_absent(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    with pytest.raises(NotFound):
        store.copy(bucket, "ghost.bin", bucket, "copy.bin")
    assert store.stat(bucket, "copy.bin") is None


def test_delete_removes_the_object(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "d/x.txt", b"x", content_type="text/plain")
    store.write_bytes(bucket, "d/y.txt", b"y", content_type="text/plain")
    store.delete(bucket, "d/x.txt")
    assert store.stat(bucket, "d/x.txt") is None
    assert [info.name for info in store.list(bucket)] == ["d/y.txt"]
    with pytest.raises(NotFound):
        store.read_bytes(bucket, "d/x.txt")


def test_delete_of_an_absent_object_is_not_an_error(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "twice.txt", b"x", content_type="text/plain")
    store.delete(bucket, "twice.txt")
    store.delete(bucket, "twice.txt")
    store.delete(bucket, "never/was.txt")
    assert store.stat(bucket, "twice.txt") is None


def test_an_object_can_be_written_again_after_delete(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    store.write_bytes(bucket, "again.txt", b"1", content_type="text/plain")
    store.delete(bucket, "again.txt")
    assert store.write_bytes(bucket, "again.txt", b"2", content_type="text/plain", if_absent=True)
    assert store.read_bytes(bucket, "again.txt") == b"2"


def test_uri_names_the_bucket_and_object(objects_under_test: ObjectsUnderTest) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    uri = store.uri(bucket, "jobs/j1/images/k.png")
    assert uri.startswith(("gs://", "file:///"))
    assert bucket in uri
    assert uri.endswith("/jobs/j1/images/k.png")
    assert store.uri(bucket, "jobs/j1/images/other.png") != uri


def _follow(url: str) -> bytes:
    """What a reader holding only the URL gets: the local stand-in is a file:// URL, Cloud
    Storage's (the emulator's here) an http(s) one."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(url2pathname(unquote(parts.path))).read_bytes()
    response = httpx.get(url, timeout=10.0)
    response.raise_for_status()
    return response.content


def test_a_signed_url_reads_the_object_without_credentials_and_carries_its_lifetime(
    objects_under_test: ObjectsUnderTest,
) -> None:
    store, bucket = objects_under_test.store, objects_under_test.bucket
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    store.write_bytes(bucket, "references/a fox ü.png", data, content_type="image/png")
    url = store.signed_url(bucket, "references/a fox ü.png", expires_in=timedelta(hours=72))
    assert " " not in url
    assert parse_qs(urlsplit(url).query)["X-Goog-Expires"] == [str(72 * 3600)]
    assert _follow(url) == data
