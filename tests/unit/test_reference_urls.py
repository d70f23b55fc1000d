"""Reference images on the Gemini Developer API: every gs:// fileData URI of a staged request
becomes the URL the provider signs for it, wherever it sits; nothing else changes."""

from __future__ import annotations

import io
import json

import pytest

from bananabatch.errors import PermanentError
from bananabatch.ports import ResultRow
from bananabatch.providers._references import (
    mentions_gcs,
    redact_signed_urls,
    rewrite_request_lines,
    split_gcs_uri,
    with_readable_references,
    without_signed_urls,
)


def _signed(uri: str) -> str:
    bucket, name = split_gcs_uri(uri)
    return f"https://storage.example/{bucket}/{name}?X-Goog-Expires=259200"


def test_every_gcs_file_uri_in_any_part_is_replaced_and_text_is_kept() -> None:
    request = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "like gs://refs/not-a-reference.png"},
                    {"fileData": {"fileUri": "gs://refs/a.png", "mimeType": "image/png"}},
                    {"file_data": {"file_uri": "gs://refs/b.jpg", "mime_type": "image/jpeg"}},
                    {"fileData": {"fileUri": "https://example.com/c.png"}},
                ],
            }
        ],
        "systemInstruction": {"parts": [{"fileData": {"fileUri": "gs://refs/d.png"}}]},
    }
    new, count = with_readable_references(request, _signed)
    assert count == 3
    parts = new["contents"][0]["parts"]
    assert parts[0] == {"text": "like gs://refs/not-a-reference.png"}
    assert parts[1]["fileData"] == {
        "fileUri": "https://storage.example/refs/a.png?X-Goog-Expires=259200",
        "mimeType": "image/png",
    }
    assert parts[2]["file_data"]["file_uri"].startswith("https://storage.example/refs/b.jpg")
    assert parts[3]["fileData"]["fileUri"] == "https://example.com/c.png"
    assert new["systemInstruction"]["parts"][0]["fileData"]["fileUri"].startswith("https://")
    # The input is left as it was.
    assert request["contents"][0]["parts"][1]["fileData"]["fileUri"] == "gs://refs/a.png"  # type: ignore[index]


def test_a_request_file_is_rewritten_line_by_line_and_untouched_lines_keep_their_bytes() -> None:
    plain = b'{"key": "p",  "request": {"contents": [{"parts": [{"text": "gs is not gs:/"}]}]}}\n'
    text_only = b'{"key":"t","request":{"contents":[{"parts":[{"text":"see gs://x/y"}]}]}}\n'
    ref = {
        "key": "r",
        "request": {"contents": [{"parts": [{"fileData": {"fileUri": "gs://refs/ü.png"}}]}]},
    }
    source = io.BytesIO(plain + text_only + (json.dumps(ref) + "\n").encode())
    sink = io.BytesIO()
    assert rewrite_request_lines(source, sink, _signed) == 1
    lines = sink.getvalue().splitlines(keepends=True)
    assert lines[0] == plain
    assert lines[1] == text_only
    rewritten = json.loads(lines[2])
    part = rewritten["request"]["contents"][0]["parts"][0]
    assert part["fileData"]["fileUri"] == "https://storage.example/refs/ü.png?X-Goog-Expires=259200"
    assert rewritten["key"] == "r"


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"", False),
        (b'{"fileUri": "https://x/y.png"}', False),
        (b'{"fileUri": "gs://b/o.png"}', True),
        # Split across the scanner's 1 MiB chunks.
        (b"x" * (1024 * 1024 - 2) + b"gs://b/o.png", True),
    ],
)
def test_a_request_file_mentions_gcs_only_when_it_holds_gs(data: bytes, found: bool) -> None:
    assert mentions_gcs(io.BytesIO(data)) is found


@pytest.mark.parametrize("uri", ["gs://", "gs://bucket", "gs://bucket/", "https://b/o"])
def test_a_malformed_gcs_uri_is_refused(uri: str) -> None:
    with pytest.raises(PermanentError, match="gs://BUCKET/OBJECT"):
        split_gcs_uri(uri)


def test_a_signed_urls_signature_and_credential_never_reach_a_record() -> None:
    url = (
        "https://storage.googleapis.com/b/ref.png?X-Goog-Algorithm=GOOG4-RSA-SHA256"
        "&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20261207%2Fauto%2Fstorage"
        "&X-Goog-Date=20261207T120000Z&X-Goog-Expires=259200&X-Goog-SignedHeaders=host"
        "&X-Goog-Signature=0123abcd"
    )
    text = redact_signed_urls(f'Cannot fetch content from the provided URL "{url}"')
    assert "0123abcd" not in text
    assert "iam.gserviceaccount" not in text
    assert "X-Goog-Signature=REDACTED" in text
    assert "X-Goog-Expires=259200" in text
    assert redact_signed_urls("no url here") == "no url here"
    rows = [
        ResultRow(0, {"key": "a", "error": {"code": 3, "message": url}}),
        ResultRow(1, {"key": "b", "response": {}}),
        ResultRow(2, None, malformed="not JSON"),
    ]
    out = list(without_signed_urls(iter(rows)))
    assert out[0].row is not None
    assert "0123abcd" not in out[0].row["error"]["message"]
    assert out[1:] == rows[1:]
