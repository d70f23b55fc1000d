"""What the local adapters promise beyond the port contracts: file layout, SQLite details,
Firestore-like filter semantics, and the bus's subscriptions."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from datetime import UTC
from pathlib import Path
from typing import Any, cast

import pytest

from bananabatch.adapters.local import state as state_module
from bananabatch.adapters.local.bus import InProcessBus
from bananabatch.adapters.local.objects import FolderObjectStore
from bananabatch.adapters.local.state import SqliteStateStore
from bananabatch.errors import NotFound, PermanentError
from bananabatch.ports import EventBus, ObjectStore, StateStore, Where

REPO = Path(__file__).resolve().parents[2]


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


# --- FolderObjectStore --------------------------------------------------------------------


@pytest.fixture
def objects(tmp_path: Path) -> FolderObjectStore:
    return FolderObjectStore(tmp_path / "root")


def test_folder_store_satisfies_the_object_store_protocol(objects: FolderObjectStore) -> None:
    assert isinstance(objects, ObjectStore)


def test_an_object_is_a_plain_file_in_its_bucket_folder(
    objects: FolderObjectStore, tmp_path: Path
) -> None:
    objects.write_bytes("results", "jobs/j1/images/k.png", b"png", content_type="image/png")
    expected = tmp_path / "root" / "results" / "jobs" / "j1" / "images" / "k.png"
    assert expected.read_bytes() == b"png"
    assert objects.path("results", "jobs/j1/images/k.png") == expected
    assert objects.uri("results", "jobs/j1/images/k.png") == expected.as_uri()
    assert objects.uri("results", "jobs/j1/images/k.png").startswith("file:///")


def test_bucket_folders_hold_only_object_files(objects: FolderObjectStore) -> None:
    objects.write_bytes("results", "a.json", b"{}", content_type="application/json")
    objects.write_bytes("results", "a.json", b"{ }", content_type="application/json")
    with objects.open_write("results", "b/c.txt", content_type="text/plain", metadata={"k": "v"}):
        pass
    objects.copy("results", "a.json", "results", "b/d.json")
    bucket = objects.root / "results"
    assert [p.relative_to(bucket).as_posix() for p in _files_under(bucket)] == [
        "a.json",
        "b/c.txt",
        "b/d.json",
    ]


@pytest.fixture
def sidecars(tmp_path: Path) -> FolderObjectStore:
    """A folder store on a filesystem without extended attributes."""
    return FolderObjectStore(tmp_path / "root", xattrs=False)


def test_one_sidecar_per_object_outside_the_bucket_and_none_after_delete(
    sidecars: FolderObjectStore,
) -> None:
    objects = sidecars
    for i in range(3):
        objects.write_bytes("results", "x.txt", str(i).encode(), content_type="text/markdown")
    written = _files_under(objects.root / ".meta" / "results")
    assert len(written) == 1
    assert json.loads(written[0].read_text())["content_type"] == "text/markdown"
    objects.delete("results", "x.txt")
    assert _files_under(objects.root / ".meta" / "results") == []


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("a.png", "image/png"), ("b/c.jsonl", "application/jsonl"), ("d", "application/octet-stream")],
)
def test_an_object_typed_as_its_name_says_and_without_metadata_has_no_sidecar(
    objects: FolderObjectStore, name: str, content_type: str
) -> None:
    objects.write_bytes("results", name, b"x", content_type=content_type)
    with objects.open_write("results", "copy-" + name, content_type=content_type) as sink:
        sink.write(b"y")
    assert _files_under(objects.root / ".meta") == []
    for written in (name, "copy-" + name):
        info = objects.stat("results", written)
        assert info is not None
        assert (info.content_type, dict(info.metadata)) == (content_type, {})


def test_a_sidecar_is_written_for_metadata_or_an_unexpected_type_and_dropped_when_no_longer_needed(
    sidecars: FolderObjectStore,
) -> None:
    objects = sidecars
    objects.write_bytes("results", "a.png", b"1", content_type="image/png", metadata={"k": "v"})
    objects.write_bytes("results", "b.png", b"2", content_type="image/webp")
    assert len(_files_under(objects.root / ".meta" / "results")) == 2
    a, b = objects.stat("results", "a.png"), objects.stat("results", "b.png")
    assert a is not None
    assert b is not None
    assert (a.content_type, dict(a.metadata)) == ("image/png", {"k": "v"})
    assert b.content_type == "image/webp"
    objects.write_bytes("results", "a.png", b"3", content_type="image/png")
    assert len(_files_under(objects.root / ".meta" / "results")) == 1
    a = objects.stat("results", "a.png")
    assert a is not None
    assert (a.content_type, dict(a.metadata)) == ("image/png", {})


needs_xattrs = pytest.mark.skipif(
    not FolderObjectStore(Path(tempfile.gettempdir()) / "bananabatch-xattr-probe")._xattrs,
    reason="this filesystem keeps no user extended attributes; the sidecar tests cover it",
)


@needs_xattrs
def test_an_object_with_metadata_is_one_file_its_record_rides_on_the_file(
    objects: FolderObjectStore,
) -> None:
    objects.write_bytes("results", "a.png", b"1", content_type="image/png", metadata={"k": "v"})
    with objects.open_write("results", "b.txt", content_type="text/markdown") as sink:
        sink.write(b"22")
    assert _files_under(objects.root / ".meta") == []
    a, b = objects.stat("results", "a.png"), objects.stat("results", "b.txt")
    assert a is not None
    assert b is not None
    assert (a.content_type, dict(a.metadata)) == ("image/png", {"k": "v"})
    assert (b.content_type, dict(b.metadata)) == ("text/markdown", {})
    listed = {i.name: (i.content_type, dict(i.metadata)) for i in objects.list("results")}
    assert listed == {"a.png": ("image/png", {"k": "v"}), "b.txt": ("text/markdown", {})}
    # Rewritten without metadata, the object has none: the record went with the old file.
    objects.write_bytes("results", "a.png", b"3", content_type="image/png")
    a = objects.stat("results", "a.png")
    assert a is not None
    assert (a.content_type, dict(a.metadata)) == ("image/png", {})


@needs_xattrs
def test_a_store_written_with_sidecars_is_read_the_same_by_one_using_attributes(
    tmp_path: Path,
) -> None:
    before = FolderObjectStore(tmp_path / "root", xattrs=False)
    before.write_bytes("results", "a.png", b"1", content_type="image/png", metadata={"k": "v"})
    after = FolderObjectStore(tmp_path / "root")
    info = after.stat("results", "a.png")
    assert info is not None
    assert (info.content_type, dict(info.metadata)) == ("image/png", {"k": "v"})
    # Its next write moves the record onto the file and drops the sidecar.
    after.write_bytes("results", "a.png", b"2", content_type="image/png", metadata={"k": "w"})
    assert _files_under(tmp_path / "root" / ".meta") == []
    info = after.stat("results", "a.png")
    assert info is not None
    assert dict(info.metadata) == {"k": "w"}


@needs_xattrs
def test_a_file_edited_in_place_does_not_keep_metadata_written_for_other_bytes(
    objects: FolderObjectStore,
) -> None:
    objects.write_bytes("results", "a.txt", b"short", content_type="text/x-a", metadata={"k": "v"})
    path = objects.path("results", "a.txt")
    with path.open("ab") as edit:
        edit.write(b" and longer")
    info = objects.stat("results", "a.txt")
    assert info is not None
    assert (info.content_type, dict(info.metadata)) == ("text/plain", {})


def test_an_attribute_too_large_for_the_filesystem_falls_back_to_a_sidecar(
    objects: FolderObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any) -> None:
        raise OSError(errno.E2BIG, "Argument list too long")

    monkeypatch.setattr(os, "setxattr", refuse, raising=False)
    objects.write_bytes("results", "a.png", b"1", content_type="image/png", metadata={"k": "v"})
    assert len(_files_under(objects.root / ".meta" / "results")) == 1
    info = objects.stat("results", "a.png")
    assert info is not None
    assert dict(info.metadata) == {"k": "v"}


@pytest.mark.parametrize("xattrs", [True, False], ids=["attributes", "sidecars"])
def test_writing_an_object_creates_one_file_and_no_folder_once_its_folder_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xattrs: bool
) -> None:
    objects = FolderObjectStore(tmp_path / "root", xattrs=xattrs)
    if xattrs and not objects._xattrs:
        pytest.skip("this filesystem keeps no user extended attributes")
    meta = {"job_id": "j", "key": "k"}
    objects.write_bytes("results", "jobs/j/images/k0.png", b"0", content_type="image/png")
    objects.write_bytes(
        "results", "jobs/j/images/k1.png", b"1", content_type="image/png", metadata=meta
    )
    calls: list[str] = []
    real_open, real_mkdir, real_unlink = os.open, os.mkdir, os.unlink

    def counting_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            calls.append("create")
        return real_open(path, flags, *args, **kwargs)

    def counting_mkdir(*args: Any, **kwargs: Any) -> None:
        calls.append("mkdir")
        real_mkdir(*args, **kwargs)

    def counting_unlink(*args: Any, **kwargs: Any) -> None:
        calls.append("unlink")
        real_unlink(*args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "mkdir", counting_mkdir)
    monkeypatch.setattr(os, "unlink", counting_unlink)
    for n in range(2, 6):
        objects.write_bytes(
            "results", f"jobs/j/images/k{n}.png", b"x", content_type="image/png", metadata=meta
        )
    monkeypatch.undo()
    # One temp file per object, plus its sidecar where attributes are not kept; before,
    # every write also made both folders again and unlinked its (already renamed) temp.
    assert calls == ["create"] * (4 if xattrs else 8)
    for n in range(6):
        info = objects.stat("results", f"jobs/j/images/k{n}.png")
        assert info is not None
        assert dict(info.metadata) == ({} if n == 0 else meta)


def test_a_folder_removed_under_the_store_is_made_again(objects: FolderObjectStore) -> None:
    objects.write_bytes("results", "jobs/j/a.png", b"1", content_type="image/png")
    shutil.rmtree(objects.root / "results" / "jobs")
    shutil.rmtree(objects.root / ".tmp")
    objects.write_bytes("results", "jobs/j/b.png", b"2", content_type="image/png")
    assert objects.read_bytes("results", "jobs/j/b.png") == b"2"


_KILLED_WRITER = """
import os, signal, sys
from bananabatch.adapters.local.objects import FolderObjectStore

root, name, where, xattrs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
store = FolderObjectStore(root, xattrs=xattrs)
chunk = 64 * 1024
old = b"O" * (40 * chunk)
store.write_bytes("results", name, old, content_type="image/png", metadata={"v": "old"})
print("old written", flush=True)

def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if where == "mid-write":
    with store.open_write("results", name, content_type="image/png", metadata={"v": "new"}) as s:
        for n in range(40):
            s.write(b"N" * chunk)
            if n == 20:
                s.flush()
                die()
elif where == "before-rename":
    os.replace = die
    store.write_bytes("results", name, b"N" * (40 * chunk), content_type="image/png",
                      metadata={"v": "new"})
elif where == "after-stamp":
    real = store._stamp
    def stamp_then_die(*args, **kwargs):
        real(*args, **kwargs)
        die()
    store._stamp = stamp_then_die
    store.write_bytes("results", name, b"N" * (40 * chunk), content_type="image/png",
                      metadata={"v": "new"})
"""


@pytest.mark.parametrize("where", ["mid-write", "after-stamp", "before-rename"])
@pytest.mark.parametrize("xattrs", [True, False], ids=["attributes", "sidecars"])
def test_a_writer_killed_at_any_step_leaves_the_previous_version_whole_never_a_part(
    tmp_path: Path, where: str, xattrs: bool
) -> None:
    root = tmp_path / "root"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILLED_WRITER,
            str(root),
            "jobs/j/images/k.png",
            where,
            "1" if xattrs else "0",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "old written" in done.stdout
    store = FolderObjectStore(root, xattrs=xattrs)
    data = store.read_bytes("results", "jobs/j/images/k.png")
    assert data == b"O" * (40 * 64 * 1024)
    info = store.stat("results", "jobs/j/images/k.png")
    assert info is not None
    assert dict(info.metadata) == {"v": "old"}
    assert [i.name for i in store.list("results")] == ["jobs/j/images/k.png"]
    # What the killed write left is outside every bucket, in .tmp.
    assert all(
        ".tmp" in p.parts or ".meta" in p.parts
        for p in _files_under(root)
        if p != store.path("results", "jobs/j/images/k.png")
    )


def test_no_temp_file_survives_a_write_or_a_failed_write(objects: FolderObjectStore) -> None:
    objects.write_bytes("b1", "ok.txt", b"x", content_type="text/plain")
    with pytest.raises(ZeroDivisionError), objects.open_write("b1", "bad", content_type="t/p"):
        _ = 1 / 0
    objects.write_bytes("b1", "ok.txt", b"y", content_type="text/plain", if_absent=True)
    assert _files_under(objects.root / ".tmp") == []


@pytest.mark.parametrize(
    "name", ["../escape", "a/../../escape", "/etc/passwd", "a//b", "a/", "", ".", "a/./b", "a\\b"]
)
def test_names_that_could_escape_or_alias_the_bucket_are_rejected(
    objects: FolderObjectStore, name: str
) -> None:
    with pytest.raises(PermanentError, match="object name"):
        objects.write_bytes("b1", name, b"x", content_type="text/plain")
    with pytest.raises(PermanentError):
        objects.read_bytes("b1", name)
    with pytest.raises(PermanentError):
        objects.stat("b1", name)
    with pytest.raises(PermanentError):
        objects.path("b1", name)
    assert _files_under(objects.root.parent) == []


@pytest.mark.parametrize("bucket", [".meta", ".tmp", "..", "a/b", "", "-x"])
def test_bucket_names_that_clash_with_the_layout_are_rejected(
    objects: FolderObjectStore, bucket: str
) -> None:
    with pytest.raises(PermanentError, match="bucket name"):
        objects.write_bytes(bucket, "x", b"x", content_type="text/plain")


def test_a_file_dropped_into_a_bucket_folder_is_an_object(objects: FolderObjectStore) -> None:
    dropped = objects.ensure_bucket("inbox") / "prompts.jsonl"
    dropped.write_bytes(b'{"prompt": "a banana"}\n')
    info = objects.stat("inbox", "prompts.jsonl")
    assert info is not None
    assert info.size == dropped.stat().st_size
    assert info.generation == str(dropped.stat().st_mtime_ns)
    assert info.updated is not None
    assert info.updated.tzinfo is UTC
    assert dict(info.metadata) == {}
    assert [i.name for i in objects.list("inbox")] == ["prompts.jsonl"]
    assert objects.read_bytes("inbox", "prompts.jsonl") == b'{"prompt": "a banana"}\n'


def test_content_type_of_a_hand_made_file_is_guessed_from_its_extension(
    objects: FolderObjectStore,
) -> None:
    (objects.ensure_bucket("inbox") / "cat.png").write_bytes(b"png")
    (objects.root / "inbox" / "blob").write_bytes(b"?")
    png = objects.stat("inbox", "cat.png")
    blob = objects.stat("inbox", "blob")
    assert png is not None
    assert blob is not None
    assert png.content_type == "image/png"
    assert blob.content_type == "application/octet-stream"


def test_a_file_replaced_by_hand_does_not_keep_the_old_metadata(
    objects: FolderObjectStore,
) -> None:
    objects.write_bytes("b1", "f.bin", b"abc", content_type="x/custom", metadata={"m": "1"})
    path = objects.path("b1", "f.bin")
    path.write_bytes(b"a longer replacement")
    info = objects.stat("b1", "f.bin")
    assert info is not None
    assert info.content_type == "application/octet-stream"
    assert dict(info.metadata) == {}


def test_every_write_gets_a_new_generation(objects: FolderObjectStore) -> None:
    generations = set()
    for i in range(50):
        objects.write_bytes("b1", "g.txt", str(i).encode(), content_type="text/plain")
        info = objects.stat("b1", "g.txt")
        assert info is not None
        generations.add(info.generation)
    assert len(generations) == 50


def test_an_object_cannot_sit_where_another_objects_folder_is(
    objects: FolderObjectStore,
) -> None:
    objects.write_bytes("b1", "a", b"file a", content_type="text/plain")
    with pytest.raises(PermanentError, match="a/b"):
        objects.write_bytes("b1", "a/b", b"x", content_type="text/plain")
    objects.write_bytes("b1", "d/e", b"x", content_type="text/plain")
    with pytest.raises(PermanentError, match="b1/d"):
        objects.write_bytes("b1", "d", b"x", content_type="text/plain")
    assert objects.read_bytes("b1", "a") == b"file a"
    assert objects.stat("b1", "d") is None


def test_if_absent_returns_false_when_a_hand_made_file_is_there(
    objects: FolderObjectStore,
) -> None:
    (objects.ensure_bucket("b1") / "taken").write_bytes(b"mine")
    assert not objects.write_bytes("b1", "taken", b"yours", content_type="t/p", if_absent=True)
    assert objects.read_bytes("b1", "taken") == b"mine"


def test_metadata_values_must_be_strings(objects: FolderObjectStore) -> None:
    with pytest.raises(PermanentError, match="metadata of b1/m"):
        objects.write_bytes("b1", "m", b"x", content_type="t/p", metadata=cast(Any, {"n": 1}))
    assert objects.stat("b1", "m") is None


def test_reading_from_a_bucket_that_was_never_written_raises_not_found(
    objects: FolderObjectStore,
) -> None:
    with pytest.raises(NotFound, match="nobucket/x"):
        objects.read_bytes("nobucket", "x")
    assert list(objects.list("nobucket")) == []


def test_list_of_a_prefix_no_valid_name_can_have_is_empty(objects: FolderObjectStore) -> None:
    objects.write_bytes("b1", "abs/x", b"x", content_type="text/plain")
    assert list(objects.list("b1", "/abs")) == []
    assert list(objects.list("b1", "abs//")) == []
    assert list(objects.list("b1", "../b1/abs/")) == []
    assert [i.name for i in objects.list("b1", "abs/")] == ["abs/x"]


def test_a_folder_is_not_an_object(objects: FolderObjectStore) -> None:
    objects.write_bytes("b1", "dir/file", b"x", content_type="text/plain")
    assert objects.stat("b1", "dir") is None
    with pytest.raises(NotFound):
        objects.read_bytes("b1", "dir")
    objects.delete("b1", "dir")
    assert objects.read_bytes("b1", "dir/file") == b"x"


# --- SqliteStateStore ---------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "bananabatch.sqlite3"


@pytest.fixture
def state(db_path: Path) -> Any:
    store = SqliteStateStore(db_path)
    yield store
    store.close()


def test_sqlite_store_satisfies_the_state_store_protocol(state: SqliteStateStore) -> None:
    assert isinstance(state, StateStore)


def test_the_database_file_is_in_wal_mode_with_one_docs_table(
    state: SqliteStateStore, db_path: Path
) -> None:
    state.set("jobs/j1", {"x": 1})
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = raw.execute("SELECT collection, id, data FROM docs").fetchall()
    assert rows == [("jobs", "j1", '{"x":1}')]


def test_another_process_reads_what_this_one_wrote_while_it_stays_open(
    state: SqliteStateStore, db_path: Path
) -> None:
    state.set("jobs/j1", {"state": "RUNNING", "n": 1})
    code = (
        "import json, sys\n"
        "from bananabatch.adapters.local.state import SqliteStateStore\n"
        "store = SqliteStateStore(sys.argv[1])\n"
        "print(json.dumps([store.get('jobs/j1'), store.count('jobs')]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "functions")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(db_path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    assert json.loads(result.stdout) == [{"state": "RUNNING", "n": 1}, 1]
    state.set("jobs/j1", {"state": "SUCCEEDED"})  # still writable afterwards
    assert state.get("jobs/j1") == {"state": "SUCCEEDED"}


def test_a_reader_is_not_blocked_by_an_open_write_transaction(
    state: SqliteStateStore, db_path: Path
) -> None:
    state.set("jobs/j1", {"v": "committed"})
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute('UPDATE docs SET data = \'{"v":"uncommitted"}\'')
        reader = SqliteStateStore(db_path, busy_timeout_s=0.5)
        assert reader.get("jobs/j1") == {"v": "committed"}
        reader.close()
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert state.get("jobs/j1") == {"v": "uncommitted"}


def test_two_stores_on_one_file_lose_no_concurrent_update(db_path: Path) -> None:
    stores = [SqliteStateStore(db_path), SqliteStateStore(db_path)]
    stores[0].set("counters/c", {"n": 0})
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(store: SqliteStateStore) -> None:
        try:
            start.wait()
            for _ in range(25):
                store.update("counters/c", lambda d: {"n": (d or {"n": 0})["n"] + 1})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(stores[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stores[1].get("counters/c") == {"n": 200}
    for store in stores:
        store.close()


def test_an_in_memory_store_is_one_database_shared_by_all_threads() -> None:
    store = SqliteStateStore(":memory:")
    thread = threading.Thread(target=store.set, args=("jobs/j1", {"from": "thread"}))
    thread.start()
    thread.join()
    assert store.get("jobs/j1") == {"from": "thread"}


def test_64_bit_integers_round_trip_exactly(state: SqliteStateStore) -> None:
    doc = {"max": 2**63 - 1, "min": -(2**63), "past_double": 2**53 + 1}
    state.set("n/ints", doc)
    assert state.get("n/ints") == doc
    assert [d["max"] for d in state.query("n", [Where("past_double", "==", 2**53 + 1)])] == [
        2**63 - 1
    ]


def test_a_failing_update_leaves_no_transaction_open(state: SqliteStateStore) -> None:
    with pytest.raises(KeyError):
        state.update("jobs/j1", lambda d: cast(dict[str, Any], {})["missing"])
    state.set("jobs/j1", {"ok": True})
    assert state.update("jobs/j1", lambda d: {"ok": False}) == {"ok": False}


def test_filters_match_only_values_of_their_own_type(state: SqliteStateStore) -> None:
    state.set_many(
        [
            ("t/bool", {"id": "bool", "v": True}),
            ("t/one", {"id": "one", "v": 1}),
            ("t/text", {"id": "text", "v": "1"}),
            ("t/null", {"id": "null", "v": None}),
            ("t/missing", {"id": "missing"}),
        ]
    )

    def ids(*where: Where) -> list[str]:
        return sorted(d["id"] for d in state.query("t", list(where)))

    assert ids(Where("v", "==", True)) == ["bool"]
    assert ids(Where("v", "==", 1)) == ["one"]
    assert ids(Where("v", "==", 1.0)) == ["one"]
    assert ids(Where("v", "==", "1")) == ["text"]
    assert ids(Where("v", "==", None)) == ["null"]
    assert ids(Where("v", ">=", 0)) == ["one"]
    assert ids(Where("v", ">", "")) == ["text"]
    assert ids(Where("v", "in", [True, "1"])) == ["bool", "text"]


def test_order_by_leaves_out_documents_without_the_field(state: SqliteStateStore) -> None:
    state.set_many(
        [("t/a", {"id": "a", "k": 2}), ("t/b", {"id": "b"}), ("t/c", {"id": "c", "k": None})]
    )
    assert [d["id"] for d in state.query("t", order_by="k")] == ["c", "a"]


def test_streaming_pages_through_ties_and_nulls_without_loss_or_repeat(
    state: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_module, "PAGE_SIZE", 3)
    values: list[Any] = [None, None, 1, 1, 1, 1, 1, 2.5, "a", "a", "b", None, 1]
    state.set_many((f"t/d{i:02d}", {"id": f"d{i:02d}", "k": v}) for i, v in enumerate(values))
    ordered = list(state.query("t", order_by="k"))
    assert sorted(d["id"] for d in ordered) == [f"d{i:02d}" for i in range(len(values))]
    keys = [d["k"] for d in ordered]
    assert keys == [None, None, None, 1, 1, 1, 1, 1, 1, 2.5, "a", "a", "b"]
    assert len(list(state.query("t"))) == len(values)
    assert [d["id"] for d in state.query("t", order_by="k", limit=4)] == [
        "d00",
        "d01",
        "d11",
        "d02",
    ]


def test_filtering_on_state_uses_the_index(state: SqliteStateStore) -> None:
    clauses, params = state_module._compile("jobs/J/items", [Where("state", "==", "FAILED")])
    sql = "EXPLAIN QUERY PLAN SELECT data FROM docs WHERE " + " AND ".join(clauses)  # noqa: S608
    with sqlite3.connect(state.path) as raw:
        plan = raw.execute(sql, params).fetchall()
    assert "docs_by_state" in " ".join(str(row) for row in plan)


def _plans_of(state: SqliteStateStore, run: Any) -> list[str]:
    """The query plan of every SELECT on docs that `run` makes the store issue, as SQLite
    prints them (the statements traced with their parameters bound)."""
    statements: list[str] = []
    state._conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        state._conn.set_trace_callback(None)
    plans = []
    with sqlite3.connect(state.path) as raw:
        for sql in statements:
            if sql.lstrip().upper().startswith("SELECT") and "FROM docs" in sql:
                rows = raw.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                plans.append(" | ".join(str(row[-1]) for row in rows))
    return plans


def _job_of_batches(state: SqliteStateStore, batches: int, per_batch: int) -> None:
    state.set_many(
        (
            f"jobs/J/items/k{b:03d}-{n:04d}",
            {"key": f"k{b:03d}-{n:04d}", "batch_id": f"b{b:03d}", "state": "PENDING"},
        )
        for b in range(batches)
        for n in range(per_batch)
    )


@pytest.mark.parametrize("analyzed", [False, True], ids=["seeded-statistics", "after-analyze"])
def test_the_items_of_one_batch_are_found_through_the_batch_index_not_a_scan_of_the_job(
    db_path: Path, analyzed: bool
) -> None:
    # Quadratic before: every collected batch scanned all items of its job (68-113 ms per
    # batch at 50k items).
    store = SqliteStateStore(db_path)
    try:
        _job_of_batches(store, batches=40, per_batch=50)
        if analyzed:
            store._conn.execute("ANALYZE")
        where = [Where("batch_id", "==", "b007")]
        found: list[Any] = []
        plans = _plans_of(store, lambda: found.extend(store.query("jobs/J/items", where)))
        assert sorted(d["key"] for d in found) == [f"k007-{n:04d}" for n in range(50)]
        assert plans, "the query issued no SELECT"
        for plan in plans:
            assert "docs_by_batch" in plan, plan
            # Rows come in id order straight from the index, not sorted afterwards.
            assert "TEMP B-TREE" not in plan, plan
    finally:
        store.close()


def test_a_store_made_before_the_batch_index_gets_it_on_opening(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as old:
        old.executescript(
            "CREATE TABLE docs (collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,"
            " PRIMARY KEY (collection, id)) WITHOUT ROWID;"
            "CREATE INDEX docs_by_state ON docs (collection, json_extract(data, '$.state'));"
        )
    store = SqliteStateStore(db_path)
    try:
        _job_of_batches(store, batches=5, per_batch=10)
        plans = _plans_of(
            store, lambda: list(store.query("jobs/J/items", [Where("batch_id", "==", "b001")]))
        )
        assert plans
        assert all("docs_by_batch" in plan for plan in plans), plans
    finally:
        store.close()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (Where("v", "in", []), "1 to 30 values"),
        (Where("v", "in", list(range(31))), "1 to 30 values"),
        (Where("v", "in", "abc"), "expects a list"),
        (Where("v", "<", None), "expects a str, number or bool"),
        (Where("v", "==", {"a": 1}), "expects a str, number or bool"),
        (Where("v", cast(Any, "!="), 1), "not one of"),
        (Where("", "==", 1), "field path"),
    ],
)
def test_unsupported_filters_are_rejected(
    state: SqliteStateStore, where: Where, message: str
) -> None:
    with pytest.raises(PermanentError, match=message):
        list(state.query("t", [where]))


@pytest.mark.parametrize(
    "doc", [{"x": float("nan")}, {"x": {1, 2}}, {"x": b"bytes"}, cast(Any, ["not", "a", "map"])]
)
def test_documents_that_are_not_json_are_rejected_naming_the_path(
    state: SqliteStateStore, doc: Any
) -> None:
    with pytest.raises(PermanentError, match="jobs/j1"):
        state.set("jobs/j1", doc)
    assert state.get("jobs/j1") is None


@pytest.mark.parametrize("path", ["jobs/__id__", "jobs/..", "a//b/c", "/jobs/j1"])
def test_paths_with_empty_or_reserved_ids_are_rejected(state: SqliteStateStore, path: str) -> None:
    with pytest.raises(PermanentError, match="path"):
        state.get(path)


# --- InProcessBus ---------------------------------------------------------------------------


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


def test_in_process_bus_satisfies_the_event_bus_protocol(bus: InProcessBus) -> None:
    assert isinstance(bus, EventBus)


def test_a_message_to_a_topic_without_subscriptions_is_dropped(bus: InProcessBus) -> None:
    bus.publish("t", b"lost", {})
    bus.create_subscription("s", "t")
    assert bus.pending("s") == 0
    bus.publish("t", b"kept", {})
    assert [m.data for m in bus.pull("s")] == [b"kept"]


def test_every_subscription_of_a_topic_gets_its_own_copy(bus: InProcessBus) -> None:
    bus.create_subscription("s1", "t")
    bus.create_subscription("s2", "t")
    bus.create_subscription("other", "u")
    message_id = bus.publish("t", b"x", {"a": "1"})
    [m1] = bus.pull("s1")
    m1.attributes["a"] = "changed"
    [m2] = bus.pull("s2")
    assert (m2.message_id, m2.topic, m2.data, m2.attributes) == (message_id, "t", b"x", {"a": "1"})
    assert m2.publish_time.tzinfo is UTC
    assert bus.pending("other") == 0


def test_pull_takes_messages_oldest_first_up_to_max_and_removes_them(bus: InProcessBus) -> None:
    bus.create_subscription("s", "t")
    for i in range(5):
        bus.publish("t", str(i).encode(), {})
    assert [m.data for m in bus.pull("s", max_messages=2)] == [b"0", b"1"]
    assert bus.pending("s") == 3
    assert [m.data for m in bus.pull("s")] == [b"2", b"3", b"4"]
    assert bus.pull("s") == []


def test_pull_with_a_timeout_returns_once_a_message_is_published(bus: InProcessBus) -> None:
    bus.create_subscription("s", "t")
    publisher = threading.Thread(target=bus.publish, args=("t", b"late", {}))
    publisher.start()
    got = bus.pull("s", timeout=60)
    publisher.join()
    assert [m.data for m in got] == [b"late"]


def test_pull_from_an_unknown_subscription_raises_not_found(bus: InProcessBus) -> None:
    with pytest.raises(NotFound, match="nope"):
        bus.pull("nope")
    with pytest.raises(NotFound, match="nope"):
        bus.pending("nope")


def test_creating_a_subscription_again_keeps_its_messages(bus: InProcessBus) -> None:
    bus.create_subscription("s", "t")
    bus.publish("t", b"x", {})
    bus.create_subscription("s", "t")
    assert bus.pending("s") == 1
    with pytest.raises(PermanentError, match="already attached to topic t"):
        bus.create_subscription("s", "u")


@pytest.mark.parametrize(
    ("data", "attributes", "message"),
    [
        (b"x" * 10_000_001, {}, "at most 10000000 bytes"),
        (b"", {}, "needs data or an attribute"),
        (b"x", {"googthing": "v"}, "not start with 'goog'"),
        (b"x", {"k" * 257: "v"}, "1 to 256 bytes"),
        (b"x", {"k": "v" * 1025}, "at most 1024 bytes"),
        (b"x", {f"k{i}": "v" for i in range(101)}, "at most 100 attributes"),
        (bytearray(b"x"), {}, "data must be bytes"),
    ],
)
def test_messages_pub_sub_would_refuse_are_refused(
    bus: InProcessBus, data: Any, attributes: dict[str, str], message: str
) -> None:
    bus.create_subscription("s", "t")
    with pytest.raises(PermanentError, match=message):
        bus.publish("t", data, attributes)
    assert bus.pending("s") == 0


def test_concurrent_publishers_lose_nothing_and_share_no_id(bus: InProcessBus) -> None:
    bus.create_subscription("s", "t")
    start = threading.Barrier(8)
    ids: list[str] = []
    lock = threading.Lock()

    def publish_many(n: int) -> None:
        start.wait()
        for i in range(100):
            message_id = bus.publish("t", f"{n}-{i}".encode(), {})
            with lock:
                ids.append(message_id)

    threads = [threading.Thread(target=publish_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bus.pending("s") == 800
    assert len(set(ids)) == 800
    assert len({m.data for m in bus.pull("s", max_messages=1000)}) == 800


def test_a_jobs_items_in_line_order_page_through_the_line_index_from_the_last_line(
    state: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Quadratic before: every page of 500 sorted the whole job again (10.1 s of a 50k-item
    # job's closing in `local run`).
    monkeypatch.setattr(state_module, "PAGE_SIZE", 7)
    lines = [(n * 37) % 100 + 1 for n in range(100)]
    state.set_many(
        (f"jobs/J/items/k{n:03d}", {"key": f"k{n:03d}", "line_no": line})
        for n, line in enumerate(lines)
    )
    found: list[Any] = []
    plans = _plans_of(state, lambda: found.extend(state.query("jobs/J/items", order_by="line_no")))
    assert [d["line_no"] for d in found] == list(range(1, 101))
    assert len(plans) == 15  # 100 rows in pages of 7
    for plan in plans:
        assert "docs_by_line" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    # Every page after the first starts at the last line seen, not at the job's start.
    assert all("<expr>>?" in plan for plan in plans[1:]), plans
