"""Bad input never hurts good input: a hostile file mixed with good lines, end to end on
the local stack and on the emulated Google Cloud stack. Every bad line gets a precise reason
in rejected.jsonl; every good line gets its image; whole-file problems fail the job with a
reason and pay for nothing."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from bananabatch.core.states import ItemState, JobState
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from tests.support.stacks import Stack, StackKind, assert_invariants, open_stack

GOOD = [b'{"key": "good-1", "prompt": "a lighthouse"}', b'{"key": "good-2", "prompt": "a fox"}']
HOSTILE: list[tuple[bytes, str]] = [
    (b"{not json", "JSON"),
    (b'{"key": "t", "prompt": 42}', "prompt"),
    (b'{"key": "u", "prompt": "x", "colour": "red"}', "colour"),
    (b'{"key": "e", "prompt": ""}', "prompt"),
    (b'{"key": "long", "prompt": "' + b"x" * 200_000 + b'"}', "prompt"),
    (b'{"key": "../etc/passwd", "prompt": "x"}', "key"),
    (b'{"key": "good-1", "prompt": "again"}', "duplicate"),
    (b'{"key": "u8", "prompt": "\xff\xfe"}', "UTF-8"),
    (b"[1, 2, 3]", "object"),
    (b'{"key": "r", "prompt": "x", "reference_images": 7}', "reference_images"),
    (
        b'{"key": "many", "prompt": "x", "reference_images": ['
        + b",".join(b'"gs://refs-bucket/r%d.png"' % i for i in range(15))
        + b"]}",
        "expected at most 14",
    ),
    # Reference images in the inbox's references/ folder (written by the test): one absent,
    # one that is text under an image name, then the same in a native request. Both read
    # alike: a rejection says nothing of what the bucket holds.
    (
        b'{"key": "gone", "prompt": "x", "reference_images": ["gs://INBOX/references/gone.png"]}',
        "gs://INBOX/references/gone.png: unreadable or not an image of an accepted type",
    ),
    (
        b'{"key": "text", "prompt": "x", "reference_images": ["gs://INBOX/references/notes.png"]}',
        "gs://INBOX/references/notes.png: unreadable or not an image of an accepted type",
    ),
    (
        b'{"key": "native-gone", "request": {"contents": [{"parts": [{"text": "x"}, '
        b'{"fileData": {"fileUri": "gs://INBOX/references/gone.png", "mimeType": "image/png"}}'
        b"]}]}}",
        "gs://INBOX/references/gone.png: unreadable or not an image of an accepted type",
    ),
    # Outside the reference locations, whatever the object holds.
    (
        b'{"key": "results", "prompt": "x", "reference_images": ["gs://RESULTS/refs/fox.png"]}',
        "expected a URI under gs://INBOX/references/",
    ),
    (
        b'{"key": "other-bucket", "prompt": "x", "reference_images": ["gs://elsewhere/x.png"]}',
        "expected a URI under",
    ),
    (
        b'{"key": "imds", "request": {"contents": [{"parts": [{"text": "x"}, {"fileData": '
        b'{"fileUri": "http://169.254.169.254/computeMetadata/v1/token"}}]}]}}',
        "found a http: URI",
    ),
    (
        b'{"key": "loop", "prompt": "x", "reference_images": ["https://[::1]/x.png"]}',
        "IP address",
    ),
    (
        b'{"key": "json-api", "prompt": "x", "reference_images": '
        b'["https://www.googleapis.com/storage/v1/b/RESULTS/o/x.png"]}',
        "Google API host",
    ),
    # Parsers bounded: deep nesting, numbers past every range, NUL and bidi in keys.
    (b'{"key": "deep", "prompt": "x", "metadata": ' + b"[" * 990 + b"]" * 990 + b"}", "nested"),
    (b'{"key": "big", "prompt": "x", "metadata": {"n": ' + b"9" * 5000 + b"}}", "JSON"),
    (b'{"key": "inf", "prompt": "x", "metadata": {"n": 1e999}}', "Infinity"),
    (
        b'{"key": "seed", "request": {"contents": [{"parts": [{"text": "x"}]}], '
        b'"generationConfig": {"seed": ' + b"9" * 40 + b"}}}",
        "between -2147483648 and 2147483647",
    ),
    (b'{"key": "nul\\u0000", "prompt": "x"}', "U+0000"),
    ('{"key": "invoice\u202egnp.exe", "prompt": "x"}'.encode(), "bidi control character U+202E"),
    (('{"key": "' + "香" * 76 + '", "prompt": "x"}').encode(), "224 bytes of UTF-8"),
    # Native lines off the allowlist.
    (
        b'{"key": "tools", "request": {"contents": [{"parts": [{"text": "x"}]}], '
        b'"tools": [{"googleSearch": {}}]}}',
        "not allowed (tools are not priced",
    ),
    (
        b'{"key": "cached", "request": {"contents": [{"parts": [{"text": "x"}]}], '
        b'"cachedContent": "cachedContents/x"}}',
        "not allowed (cached contents",
    ),
]
# A line whose reference image is readable: it is generated like any other.
WITH_REFERENCE = (
    b'{"key": "good-3", "prompt": "a fox like this", '
    b'"reference_images": ["gs://INBOX/references/fox.png"]}'
)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "orange").save(out, format="PNG")
    return out.getvalue()


def _rejected(stack: Stack, job_id: str) -> list[dict[str, object]]:
    body = stack.read_result(f"jobs/{job_id}/rejected.jsonl")
    return [json.loads(line) for line in body.splitlines()]


def test_hostile_lines_are_rejected_with_a_precise_reason_and_good_lines_still_succeed(
    stack: Stack,
) -> None:
    results, inbox = stack.settings.results_bucket, stack.settings.inbox_bucket
    objects = stack.runtime.objects
    objects.write_bytes(results, "refs/fox.png", _png(), content_type="image/png")
    objects.write_bytes(inbox, "references/fox.png", _png(), content_type="image/png")
    objects.write_bytes(inbox, "references/notes.png", b"notes", content_type="image/png")

    def placed(line: bytes) -> bytes:
        return line.replace(b"RESULTS", results.encode()).replace(b"INBOX", inbox.encode())

    hostile = [(placed(line), placed(why.encode()).decode()) for line, why in HOSTILE]
    # A BOM, CRLF line ends and blank lines around the hostile ones.
    body = b"\xef\xbb\xbf" + GOOD[0] + b"\r\n\r\n"
    body += b"\n".join(line for line, _ in hostile) + b"\n\n" + GOOD[1] + b"\r\n"
    body += placed(WITH_REFERENCE) + b"\n"
    path = stack.tmp / "hostile.jsonl"
    path.write_bytes(body)
    job_id = stack.upload(path)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    assert summary["counts"][ItemState.SUCCEEDED] == 3
    assert summary["counts"][ItemState.REJECTED] == len(HOSTILE)
    rejected = _rejected(stack, job_id)
    assert len(rejected) == len(HOSTILE)
    for doc, (_, why) in zip(rejected, hostile, strict=True):
        reason = str(doc["reason"])
        assert f"line {doc['line']}" in reason, reason
        assert why.lower() in reason.lower(), (why, reason)
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.jsonl", b"", "empty"),
        ("image.jsonl", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, None),
    ],
)
def test_a_file_that_is_not_jsonl_fails_or_rejects_without_paying(
    stack: Stack, name: str, content: bytes, expected: str | None
) -> None:
    path = stack.tmp / name
    path.write_bytes(content)
    job_id = stack.upload(path)
    completions = stack.settle(job_id)
    job = stack.repo.require_job(job_id)
    assert job.state is JobState.FAILED
    if expected is not None:
        assert expected in (job.error or "")
    assert stack.emulator.state.counters.batches_created == 0
    assert len(completions) == 1


def test_an_object_not_named_jsonl_is_ignored(stack: Stack) -> None:
    path = stack.tmp / "x.json"
    path.write_text('{"prompt": "a"}\n')
    assert stack.repo.get_job(stack.upload(path)) is None
    assert stack.emulator.state.counters.batches_created == 0


def test_a_file_over_the_size_limit_fails_the_job_with_the_limit_named(
    request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path
) -> None:
    config = EmulatorConfig(pending_seconds=0.0, running_seconds=math.inf, clock=ManualClock())
    with open_stack(request, kind, tmp_path, config, max_input_bytes=64) as stack:
        path = stack.tmp / "big.jsonl"
        path.write_bytes(b"\n".join(GOOD * 4))
        job_id = stack.upload(path)
        completions = stack.settle(job_id)
        job = stack.repo.require_job(job_id)
        assert job.state is JobState.FAILED
        assert "limit is 64 bytes" in (job.error or "")
        assert stack.emulator.state.counters.batches_created == 0
        assert len(completions) == 1
