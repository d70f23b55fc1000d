"""Fault-matrix scenarios of intake (issue 14 findings 4, 5 and 6; issue 15 parts 3 and 8),
on both stacks, each ending with the four invariants (tests/e2e/test_fault_matrix.py):

- a key within 128 characters but past what every store can hold in bytes is rejected at
  intake, naming the line, the limit and what was found, and the job ends (it used to be
  paid, then unrecordable: the job never ended);
- a line nested ~990 deep is that line's rejection, not a failed file (it used to raise
  RecursionError on every delivery and leave the job RECEIVED with 0 lines), and `estimate`
  reads the same file without a traceback;
- reference images are confined to the reference locations: another job's results, other
  schemes, credentials in a URL, IP literals and internal hosts are refused, in every part
  of a native request; an unusable reference says nothing of what the bucket holds;
- a native line off the allowlist is rejected naming the field.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from PIL import Image
from typer.testing import CliRunner

from bananabatch import cli
from bananabatch.core.intake.limits import MAX_JSON_DEPTH
from bananabatch.core.limits import MAX_KEY_BYTES
from bananabatch.core.states import ItemState, JobState
from bananabatch.cost_cli import estimate_file
from tests.support.stacks import LocalStack, Stack, assert_invariants

GOOD = [
    {"key": "good-1", "prompt": "a lighthouse"},
    {"key": "good-2", "prompt": "a fox"},
]


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "orange").save(out, format="PNG")
    return out.getvalue()


def _run(stack: Stack, lines: list[bytes], name: str = "prompts.jsonl") -> tuple[str, Any]:
    path = stack.tmp / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    job_id = stack.upload(path)
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    return job_id, summary


def _rejected(stack: Stack, job_id: str) -> dict[int, dict[str, Any]]:
    body = stack.read_result(f"jobs/{job_id}/rejected.jsonl")
    docs = [json.loads(line) for line in body.splitlines()]
    return {int(doc["line"]): doc for doc in docs}


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


# --- finding 4: keys every store can hold ---------------------------------------------------


def test_a_key_too_long_in_bytes_is_rejected_at_intake_and_the_job_ends(stack: Stack) -> None:
    at_limit = "香" * 74 + "ab"  # 224 bytes: the longest key every store holds
    assert len(at_limit.encode()) == MAX_KEY_BYTES
    lines = [
        _line(GOOD[0]),
        _line({"key": "香" * 76, "prompt": "a crane"}),  # 76 characters, 228 bytes
        _line({"key": "🍌" * 57, "prompt": "a banana"}),  # 57 characters, 228 bytes
        json.dumps({"key": "香" * 75, "prompt": "escaped"}).encode(),  # \u escapes, 225 bytes
        _line({"key": at_limit, "prompt": "a heron"}),
        _line(GOOD[1]),
    ]
    job_id, summary = _run(stack, lines)
    assert summary["counts"][ItemState.SUCCEEDED] == 3
    assert summary["counts"][ItemState.REJECTED] == 3
    rejected = _rejected(stack, job_id)
    assert sorted(rejected) == [2, 3, 4]
    for line_no, found in ((2, 228), (3, 228), (4, 225)):
        reason = str(rejected[line_no]["reason"])
        assert reason.startswith(f'line {line_no}, field "key": ')
        assert f"expected at most {MAX_KEY_BYTES} bytes of UTF-8" in reason
        assert f"found {found} bytes in key" in reason
    # The key at the limit was generated and recorded under its own name.
    assert stack.read_result(f"jobs/{job_id}/images/{at_limit}.png").startswith(b"\x89PNG")
    assert stack.repo.require_job(job_id).state is JobState.PARTIAL


# --- finding 5: every parser bounded ---------------------------------------------------------


def test_a_line_nested_990_deep_is_rejected_and_the_file_goes_on(stack: Stack) -> None:
    deep_metadata = b'{"key": "deep", "prompt": "x", "metadata": ' + b"[" * 990 + b"]" * 990 + b"}"
    assert len(deep_metadata) < 2_100
    deep_native = b'{"key": "n", "request": {"contents": ' + b"[" * 5_000 + b"]" * 5_000 + b"}}"
    wide_metadata = _line({"key": "wide", "prompt": "x", "metadata": {"a": [[[[[[[[[1]]]]]]]]]}})
    lines = [_line(GOOD[0]), deep_metadata, deep_native, wide_metadata, _line(GOOD[1])]
    job_id, summary = _run(stack, lines)
    assert summary["counts"][ItemState.SUCCEEDED] == 2
    assert summary["counts"][ItemState.REJECTED] == 3
    rejected = _rejected(stack, job_id)
    for line_no in (2, 3):
        assert rejected[line_no]["reason"] == (
            f"line {line_no}: nested deeper than the limit of {MAX_JSON_DEPTH} levels of "
            "arrays and objects"
        )
    assert str(rejected[4]["reason"]).startswith('line 4, field "metadata": expected at most')

    # `estimate` reads the same file: the same verdicts, no traceback.
    path = stack.tmp / "prompts.jsonl"
    estimated = estimate_file(stack.runtime, path)
    assert (estimated.accepted, estimated.rejected) == (2, 3)
    if isinstance(stack, LocalStack):
        result = CliRunner().invoke(
            cli.app, ["estimate", "--json", str(path)], env=stack.settings.to_env()
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["rejected"] == 3


# --- finding 6: references confined ----------------------------------------------------------


def test_references_reach_only_the_reference_locations_and_reveal_nothing(stack: Stack) -> None:
    inbox, results = stack.settings.inbox_bucket, stack.settings.results_bucket
    objects = stack.runtime.objects
    objects.write_bytes(inbox, "references/fox.png", _png(), content_type="image/png")
    objects.write_bytes(inbox, "references/notes.png", b"secret notes", content_type="image/png")
    # A first job, whose result a second job will try to name as its reference.
    first, _ = _run(stack, [_line(GOOD[0])], name="first.jsonl")
    other_result = f"gs://{results}/jobs/{first}/images/good-1.png"
    assert stack.result_exists(f"jobs/{first}/images/good-1.png")

    def native(key: str, uri: str, *, system: bool = False) -> bytes:
        part = {"fileData": {"fileUri": uri, "mimeType": "image/png"}}
        request: dict[str, Any] = {"contents": [{"parts": [{"text": "like this"}]}]}
        if system:
            request["systemInstruction"] = {"parts": [part]}
        else:
            request["contents"][0]["parts"].append(part)
        return _line({"key": key, "request": request})

    def simple(key: str, uri: str) -> bytes:
        return _line({"key": key, "prompt": "like this", "reference_images": [uri]})

    lines = [
        simple("ok", f"gs://{inbox}/references/fox.png"),  # 1: accepted
        simple("other-job", other_result),  # 2
        native("n3", other_result),  # 3
        native("n4", other_result, system=True),  # 4
        simple("outside", f"gs://{inbox}/fox.png"),  # 5: the inbox, outside references/
        native("n6", "file:///etc/passwd"),  # 6
        native("n7", "http://169.254.169.254/computeMetadata/v1/x.png"),  # 7
        native("n8", "https://127.0.0.1/x.png"),  # 8
        native("n9", "https://metadata.google.internal/x.png", system=True),  # 9
        simple("creds", "https://user:secret@example.com/x.png"),  # 10
        simple("missing", f"gs://{inbox}/references/missing.png"),  # 11
        simple("text", f"gs://{inbox}/references/notes.png"),  # 12
        native("n13", f"gs://{inbox}/references/fox.png"),  # 13: accepted
    ]
    job_id, summary = _run(stack, lines, name="second.jsonl")
    assert summary["counts"][ItemState.SUCCEEDED] == 2
    assert summary["counts"][ItemState.REJECTED] == 11
    rejected = _rejected(stack, job_id)
    assert sorted(rejected) == list(range(2, 13))
    reasons = {n: str(doc["reason"]) for n, doc in rejected.items()}
    for n in (2, 3, 4):
        assert "pipeline's own results" in reasons[n], reasons[n]
    assert reasons[4].startswith(
        'line 4, field "request.systemInstruction.parts[0].fileData.fileUri": reference image'
    )
    assert "expected a URI under" in reasons[5]
    assert "found a file: URI" in reasons[6]
    assert "found a http: URI" in reasons[7]
    assert "IP address" in reasons[8]
    assert "public DNS host" in reasons[9]
    assert "user name or password" in reasons[10]
    # Missing and not-an-image read alike, and nothing of the object is shown.
    for n in (11, 12):
        assert reasons[n].endswith(
            "unreadable or not an image of an accepted type (PNG, JPEG, WebP, HEIC/HEIF)"
        )
    # Only the line number and the object's name differ (a bare "11" -> "N" would also
    # rewrite a random bucket name that happens to hold "11").
    assert re.sub(r"^line 11,", "line N,", reasons[11]).replace("missing", "X") == re.sub(
        r"^line 12,", "line N,", reasons[12]
    ).replace("notes", "X")
    assert "secret" not in reasons[12]
    assert "b'" not in reasons[12]
    assert "found none" not in reasons[11]


# --- issue 15 part 3: native lines on an allowlist ------------------------------------------


def test_a_native_line_off_the_allowlist_is_rejected_naming_the_field(stack: Stack) -> None:
    text = {"contents": [{"parts": [{"text": "a kite"}]}]}
    lines = [
        _line({"key": "plain", "request": text}),
        _line({"key": "tools", "request": text | {"tools": [{"googleSearch": {}}]}}),
        _line({"key": "cached", "request": text | {"cachedContent": "cachedContents/x"}}),
        _line({"key": "four", "request": text | {"generationConfig": {"candidateCount": 4}}}),
        _line(
            {
                "key": "think",
                "request": text | {"generationConfig": {"thinkingConfig": {"thinkingBudget": 1}}},
            }
        ),
        _line(
            {"key": "styled", "request": text | {"systemInstruction": {"parts": [{"text": "ink"}]}}}
        ),
    ]
    job_id, summary = _run(stack, lines)
    assert summary["counts"][ItemState.SUCCEEDED] == 2
    rejected = _rejected(stack, job_id)
    assert {n: doc["field"] for n, doc in rejected.items()} == {
        2: "request.tools",
        3: "request.cachedContent",
        4: "request.generationConfig.candidateCount",
        5: "request.generationConfig.thinkingConfig",
    }
    for doc in rejected.values():
        assert "not allowed" in str(doc["reason"])
