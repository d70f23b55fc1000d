"""Limits every input line is held to: keys every store can hold, JSON nested no deeper than
the parsers can take, metadata the records can keep; and no line can fail the file."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from bananabatch.adapters.local.objects import FolderObjectStore
from bananabatch.core import limits
from bananabatch.core.intake import (
    AcceptedLine,
    FastLine,
    LineParser,
    ReferenceParser,
    RejectedLine,
    iter_line_chunks,
    key_problem,
)
from bananabatch.core.intake.limits import (
    MAX_JSON_DEPTH,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_MEMBERS,
    json_depth_problem,
)
from bananabatch.core.limits import (
    MAX_KEY_BYTES,
    folder_name_problem,
    gcs_object_name_problem,
    object_name_problem,
)
from bananabatch.core.records import extension_for, image_object_name
from bananabatch.errors import PermanentError
from bananabatch.report.thumbs import thumb_object_name

MODEL = "gemini-3.1-flash-image"
CJK = "香"  # 3 bytes of UTF-8
EMOJI = "🍌"  # 4 bytes of UTF-8
LONGEST_JOB_ID = "j" * 40 + "-" + "0" * 12


def parse_everywhere(raw: bytes, line_no: int = 2) -> list[Any]:
    """The line through the reference parser, parse, parse_fast and parse_chunk (after a plain
    first line, so the chunk's pattern path is live)."""
    plain = b'{"key": "first", "prompt": "x"}'
    got = [
        ReferenceParser(default_model=MODEL).parse(line_no, raw),
        LineParser(default_model=MODEL).parse(line_no, raw),
    ]
    fast = LineParser(default_model=MODEL)
    fast.parse_fast(1, plain)
    answer = fast.parse_fast(line_no, raw)
    got.append(answer.accepted() if isinstance(answer, FastLine) else answer)
    chunk = LineParser(default_model=MODEL).parse_chunk(1, [plain, raw])
    other = chunk.fast_line(1) if len(chunk.keys) == 2 else chunk.others[0][1]
    got.append(other.accepted() if isinstance(other, FastLine) else other)
    return got


def test_the_key_byte_limit_is_what_the_folder_store_holds_with_the_longest_suffix() -> None:
    # 255-byte file names, minus ".webp", minus the sidecar's "@<20 digits>.json".
    assert MAX_KEY_BYTES == 255 - 5 - 26 == 224


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        (CJK * 74, True),  # 222 bytes
        (CJK * 74 + "ab", True),  # 224: at the limit
        (CJK * 74 + "abc", False),  # 225: one over
        (CJK * 76, False),  # 228: the finding of issue 14
        (EMOJI * 56, True),  # 224: at the limit
        (EMOJI * 57, False),  # 228
        ("k" * 128, True),  # ASCII: the character limit binds first
    ],
)
def test_a_key_is_limited_in_bytes_on_every_path(key: str, ok: bool) -> None:
    raw = json.dumps({"key": key, "prompt": "a fox"}, ensure_ascii=False).encode()
    escaped = json.dumps({"key": key, "prompt": "a fox"}).encode()
    for got in parse_everywhere(raw) + parse_everywhere(escaped):
        if ok:
            assert isinstance(got, AcceptedLine), got
            assert got.key == key
        else:
            assert isinstance(got, RejectedLine), got
            assert got.field == "key"
            size = len(key.encode())
            assert got.reason == (
                f'line 2, field "key": expected at most {MAX_KEY_BYTES} bytes of UTF-8 (keys '
                f"become file and object names); found {size} bytes in key ({len(key)} "
                f"characters); found {json.dumps(key, ensure_ascii=False)[:77]}..."
                if len(json.dumps(key, ensure_ascii=False)) > 80
                else f'line 2, field "key": expected at most {MAX_KEY_BYTES} bytes of UTF-8 '
                f"(keys become file and object names); found {size} bytes in key "
                f"({len(key)} characters); found {json.dumps(key, ensure_ascii=False)}"
            )
    assert (key_problem(key) is None) is ok


@pytest.mark.parametrize("mime", ["image/png", "image/jpeg", "image/webp", "image/gif", "x/y"])
def test_every_name_the_product_builds_from_a_key_at_the_limit_fits_every_store(
    mime: str,
) -> None:
    key = EMOJI * (MAX_KEY_BYTES // 4)
    assert len(key.encode()) == MAX_KEY_BYTES
    assert key_problem(key) is None
    assert len("." + extension_for(mime)) <= len(limits.LONGEST_KEY_EXTENSION)
    for name in (
        image_object_name(LONGEST_JOB_ID, key, mime),
        thumb_object_name(LONGEST_JOB_ID, key),
        f"jobs/{LONGEST_JOB_ID}/items/{key}",
    ):
        assert object_name_problem(name) is None, name


def test_the_folder_store_writes_a_name_at_the_limit_with_its_sidecar(tmp_path: Path) -> None:
    store = FolderObjectStore(tmp_path)
    key = CJK * 74 + "ab"
    name = image_object_name(LONGEST_JOB_ID, key, "image/webp")
    # Metadata forces a sidecar, "<leaf>@<generation>.json", the longest file the store makes.
    store.write_bytes("results", name, b"RIFF", content_type="image/webp", metadata={"k": "v"})
    info = store.stat("results", name)
    assert info is not None
    assert info.metadata == {"k": "v"}


def test_a_store_refuses_a_name_it_cannot_hold_as_a_permanent_error(tmp_path: Path) -> None:
    store = FolderObjectStore(tmp_path)
    name = f"jobs/j/images/{CJK * 76}.png"
    with pytest.raises(PermanentError, match="at most 229 bytes of UTF-8; found 232 in part 4"):
        store.write_bytes("results", name, b"x", content_type="image/png")
    with (
        pytest.raises(PermanentError, match="not every store can hold it"),
        store.open_write("results", name, content_type="image/png") as sink,
    ):
        sink.write(b"x")
    assert list(store.list("results")) == []


def test_an_image_object_carries_its_key_in_metadata_as_ascii_any_store_can_send(
    tmp_path: Path,
) -> None:
    # Cloud Storage sends custom metadata as x-goog-meta-* headers, which carry ASCII only:
    # a key of CJK characters written raw made every read of its image fail on the
    # emulated stack (the emulator's server drops the connection on a non-Latin-1 header).
    from types import SimpleNamespace
    from urllib.parse import unquote

    from bananabatch.config import Settings
    from bananabatch.pipeline.outcomes import write_image

    store = FolderObjectStore(tmp_path)
    rt: Any = SimpleNamespace(objects=store, settings=Settings())
    for key in (CJK * 74 + "ab", "plain-key_1.x", "50%-off", EMOJI + " \u202e"):
        item: Any = SimpleNamespace(job_id="job-1", key=key)
        name = image_object_name("job-1", key, "image/png")
        write_image(rt, item, name, b"\x89PNG", "image/png")
        info = store.stat(rt.settings.results_bucket, name)
        assert info is not None
        shown = info.metadata["key"]
        assert shown.isascii(), shown
        assert shown.isprintable(), shown
        assert unquote(shown) == key
    assert limits.header_safe("plain-key_1.x") == "plain-key_1.x"


def test_cloud_storage_name_rules() -> None:
    assert gcs_object_name_problem("a" * 1024) is None
    assert "1024" in str(gcs_object_name_problem("a" * 1025))
    assert "line feed" in str(gcs_object_name_problem("a\nb"))
    assert gcs_object_name_problem(".") is not None
    assert gcs_object_name_problem(".well-known/acme-challenge/x") is not None
    assert folder_name_problem("a/" + "b" * 229) is None
    assert folder_name_problem("a/" + "b" * 230) is not None
    assert folder_name_problem("c" * 255 + "/b") is None


# --- depth --------------------------------------------------------------------------------


def nested(depth: int, *, field: str = "metadata") -> bytes:
    return b'{"key": "deep", "prompt": "x", "%s": {"a": %s%s}}' % (
        field.encode(),
        b"[" * (depth - 2),
        b"]" * (depth - 2),
    )


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 201, 990, 1_000, 100_000])
def test_json_nested_too_deep_is_a_rejection_of_that_line_on_every_path(depth: int) -> None:
    raw = nested(depth)
    assert json_depth_problem(raw) is not None
    for got in parse_everywhere(raw):
        assert isinstance(got, RejectedLine), got
        assert got.field in (None, "metadata")
        assert str(MAX_JSON_DEPTH) in got.reason or str(MAX_METADATA_DEPTH) in got.reason


def test_a_native_request_nested_990_deep_is_rejected_not_raised() -> None:
    deep = b'{"key": "n", "request": {"contents": ' + b"[" * 990 + b"]" * 990 + b"}}"
    for got in parse_everywhere(deep):
        assert isinstance(got, RejectedLine)
        assert got.reason == (
            f"line 2: nested deeper than the limit of {MAX_JSON_DEPTH} levels of arrays and objects"
        )


def test_the_depth_scan_ignores_brackets_in_strings_and_wide_shallow_lines() -> None:
    assert json_depth_problem(b'{"prompt": "' + b"[" * 5_000 + b'"}') is None
    assert json_depth_problem(b'{"prompt": "\\"' + b"[" * 5_000 + b'"}') is None
    assert json_depth_problem(b'{"m": [' + b"[1]," * 10_000 + b"[2]]}") is None
    assert json_depth_problem(b"[" * (MAX_JSON_DEPTH + 1)) is not None
    assert json_depth_problem(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is None


def test_a_file_with_a_deep_line_streams_every_other_line() -> None:
    body = b'{"prompt": "a"}\n' + nested(990) + b'\n{"prompt": "b"}\n'
    parser = LineParser(default_model=MODEL)
    verdicts = []
    for first, raws in iter_line_chunks(io.BytesIO(body), max_line_bytes=1_000_000):
        chunk = parser.parse_chunk(first, raws)
        verdicts += [type(line).__name__ for _, line in chunk.others]
        verdicts += ["FastLine"] * len(chunk.keys)
    assert sorted(verdicts) == ["FastLine", "FastLine", "RejectedLine"]


# --- metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ({"a": [[[[[[[[1]]]]]]]]}, f"at most {MAX_METADATA_DEPTH} levels"),
        ({f"k{i}": i for i in range(MAX_METADATA_MEMBERS + 1)}, f"at most {MAX_METADATA_MEMBERS}"),
        ({"blob": "x" * MAX_METADATA_BYTES}, f"at most {MAX_METADATA_BYTES} bytes"),
    ],
)
def test_metadata_is_bounded_in_depth_members_and_size(metadata: Any, fragment: str) -> None:
    for doc in (
        {"key": "m", "prompt": "x", "metadata": metadata},
        {"key": "m", "request": {"contents": [{"parts": [{"text": "x"}]}]}, "metadata": metadata},
    ):
        for got in parse_everywhere(json.dumps(doc).encode()):
            assert isinstance(got, RejectedLine), got
            assert got.field == "metadata"
            assert fragment in got.reason


def test_metadata_within_the_bounds_is_kept() -> None:
    metadata = {"a": [[[[[[1]]]]]], "tags": list(range(200)), "note": "x" * 1000}
    for got in parse_everywhere(json.dumps({"prompt": "x", "metadata": metadata}).encode()):
        assert isinstance(got, AcceptedLine)
        assert got.metadata == metadata


# --- no line can fail the file --------------------------------------------------------------


def test_a_parser_failure_on_one_line_is_that_lines_rejection(monkeypatch: Any) -> None:
    """Whatever a check raises about one line (a bound missed, a bug) rejects that line."""

    def broken(_request: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("bananabatch.core.intake.reference.check_request", broken)
    native = b'{"key": "n", "request": {"contents": [{"parts": [{"text": "x"}]}]}}'
    for got in parse_everywhere(native):
        assert isinstance(got, RejectedLine)
        assert got.reason == (
            "line 2: could not be parsed (RecursionError); the line is rejected, the file goes on"
        )
