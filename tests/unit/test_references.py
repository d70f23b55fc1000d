"""Reference images are checked for existence and image content before a line is paid for."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bananabatch.adapters.local.objects import FolderObjectStore
from bananabatch.core.intake import AcceptedLine, LineParser, RejectedLine
from bananabatch.core.references import UNREADABLE, ReferencePolicy
from bananabatch.errors import PermanentError, TransientError
from bananabatch.pipeline.references import ReferenceChecker, sniff_image_mime
from bananabatch.ports import ObjectInfo


def _encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_sniffing_recognises_the_image_types_pillow_writes(fmt: str, mime: str) -> None:
    assert sniff_image_mime(_encoded(fmt)[:16]) == mime


def test_sniffing_recognises_heic_by_its_brand_and_refuses_other_iso_media() -> None:
    assert sniff_image_mime(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "image/heic"
    assert sniff_image_mime(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00") == "image/heif"
    assert sniff_image_mime(b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00") is None


@pytest.mark.parametrize("head", [b"", b"GIF89a", b"%PDF-1.7", b"<html>", b"RIFF\0\0\0\0WAVE"])
def test_sniffing_refuses_what_the_models_do_not_take(head: bytes) -> None:
    assert sniff_image_mime(head) is None


class CountingStore(FolderObjectStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.stats = 0

    def stat(self, bucket: str, name: str) -> ObjectInfo | None:
        self.stats += 1
        return super().stat(bucket, name)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(tmp_path)
    store.write_bytes("refs", "ok.png", _encoded("PNG"), content_type="image/png")
    store.write_bytes("refs", "text.png", b"not an image at all", content_type="image/png")
    store.write_bytes("refs", "empty.jpg", b"", content_type="image/jpeg")
    return store


def test_readable_images_and_https_references_pass(store: CountingStore) -> None:
    checker = ReferenceChecker(store)
    assert checker.first_unusable(["gs://refs/ok.png", "https://example.com/x.png"]) is None


@pytest.mark.parametrize(
    "uri",
    ["gs://refs/missing.png", "gs://refs/text.png", "gs://refs/empty.jpg", "gs://nobucket/a.png"],
)
def test_an_unusable_reference_is_named_by_its_index_only(store: CountingStore, uri: str) -> None:
    assert ReferenceChecker(store).first_unusable(["gs://refs/ok.png", uri]) == 1


def test_each_reference_is_looked_up_once_per_intake(store: CountingStore) -> None:
    checker = ReferenceChecker(store)
    for _ in range(50):
        checker.first_unusable(["gs://refs/ok.png", "gs://refs/missing.png"])
    assert store.stats == 2


def test_a_reference_the_service_account_may_not_read_is_reported_not_raised(
    store: CountingStore, monkeypatch: Any
) -> None:
    def forbidden(bucket: str, name: str) -> ObjectInfo | None:
        raise PermanentError(f"stat gs://{bucket}/{name}: Cloud Storage refused: 403")

    monkeypatch.setattr(store, "stat", forbidden)
    assert ReferenceChecker(store).first_unusable(["gs://private/p.png"]) == 0


def test_a_transient_store_error_is_raised_not_turned_into_a_rejection(
    store: CountingStore, monkeypatch: Any
) -> None:
    def flaky(bucket: str, name: str) -> ObjectInfo | None:
        raise TransientError("stat: 503")

    monkeypatch.setattr(store, "stat", flaky)
    with pytest.raises(TransientError):
        ReferenceChecker(store).first_unusable(["gs://refs/ok.png"])


POLICY = ReferencePolicy.for_buckets("refs", "results", ["gs://refs/"])


def _line(uri: str) -> bytes:
    return b'{"key": "a", "prompt": "x", "reference_images": ["%s"]}' % uri.encode()


def test_every_unusable_reference_gets_the_same_reason_that_reveals_nothing(
    store: CountingStore,
) -> None:
    """Absent, unreadable, empty and text-under-an-image-name read alike: the reason tells
    neither whether the object exists nor a byte of it."""
    parser = LineParser(
        default_model="gemini-3.1-flash-image",
        check_references=ReferenceChecker(store).first_unusable,
        references=POLICY,
    )
    reasons = []
    for line_no, uri in enumerate(
        ["gs://refs/missing.png", "gs://refs/text.png", "gs://refs/empty.jpg"], start=1
    ):
        got = parser.parse(line_no, _line(uri))
        assert isinstance(got, RejectedLine)
        reasons.append(got.reason.replace(uri, "URI").replace(f"line {line_no}", "line N"))
        assert "b'" not in got.reason
        assert "found none" not in got.reason
        assert "empty" not in got.reason.replace(uri, "URI")
    assert len(set(reasons)) == 1, reasons
    assert reasons[0] == (
        'line N, field "reference_images": item 1: URI: unreadable or not an image of an '
        "accepted type (PNG, JPEG, WebP, HEIC/HEIF)"
    )


def test_the_parser_rejects_an_unreadable_reference_without_claiming_the_key() -> None:
    def check(uris: Any) -> int | None:
        return None if uris == ["gs://refs/ok.png"] else 0

    parser = LineParser(
        default_model="gemini-3.1-flash-image", check_references=check, references=POLICY
    )
    bad = parser.parse(1, _line("gs://refs/no.png"))
    assert isinstance(bad, RejectedLine)
    assert bad.reason.startswith('line 1, field "reference_images": item 1: gs://refs/no.png: ')
    fixed = parser.parse(2, _line("gs://refs/ok.png"))
    assert isinstance(fixed, AcceptedLine)
    native = parser.parse(
        3,
        b'{"key": "n", "request": {"contents": [{"parts": [{"text": "x"}, {"fileData": '
        b'{"fileUri": "gs://refs/no.png", "mimeType": "image/png"}}]}]}}',
    )
    assert isinstance(native, RejectedLine)
    assert native.field == "request.contents[0].parts[1].fileData.fileUri"
    assert UNREADABLE in native.reason
