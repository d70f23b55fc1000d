"""Thumbnails made on demand (issue 18): the local stack's runs make none; the gallery
server makes one the first time it is asked for, stores it where the cloud's thumbnail
workers put theirs, byte for byte what they would write, and serves the stored one after."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image
from starlette.testclient import TestClient

from bananabatch.config import ENV_LOCAL_THUMBNAILS, LocalThumbnails, Settings
from bananabatch.core import records as rec
from bananabatch.local import gallery_server
from bananabatch.local.thumbpool import on_demand
from bananabatch.pipeline import thumbnails
from bananabatch.pipeline.runtime import Runtime
from bananabatch.report import thumbs
from bananabatch.report.gallery import thumb_href
from bananabatch.report.thumbs import make_thumbnail, thumb_object_name
from bananabatch.wiring import build_runtime

JOB = "job-ondemand-0001"


def _png(size: tuple[int, int] = (600, 400), colour: tuple[int, int, int] = (200, 90, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, (*colour, 180)).save(out, format="PNG")
    return out.getvalue()


def _jpeg(colour: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 320), colour).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return build_runtime(Settings(local_root=tmp_path), with_provider=False)


def _store_image(rt: Runtime, key: str, image: bytes, mime: str = "image/png") -> None:
    rt.objects.write_bytes(
        rt.settings.results_bucket, rec.image_object_name(JOB, key, mime), image, content_type=mime
    )


def _stored_thumb(rt: Runtime, key: str, job: str = JOB) -> bytes | None:
    name = thumb_object_name(job, key)
    if rt.objects.stat(rt.settings.results_bucket, name) is None:
        return None
    return rt.objects.read_bytes(rt.settings.results_bucket, name)


# --- the setting --------------------------------------------------------------------------


def test_local_thumbnails_are_on_demand_by_default_and_during_run_by_choice() -> None:
    assert on_demand(Settings())
    during = Settings.from_env({ENV_LOCAL_THUMBNAILS: "during-run"})
    assert during.local_thumbnails is LocalThumbnails.DURING_RUN
    assert not on_demand(during)
    assert during.to_env()[ENV_LOCAL_THUMBNAILS] == "during-run"


# --- ensure_thumbnail -----------------------------------------------------------------------


def test_the_first_request_makes_and_stores_the_same_bytes_the_thumbnail_workers_write(
    rt: Runtime,
) -> None:
    image = _png()
    _store_image(rt, "made-here", image)
    _store_image(rt, "made-there", image)
    # The old path: a thumbnails request handled as the collector's message is.
    request = thumbnails.ThumbnailRequest(JOB, "b0", ("made-there",), ("image/png",))
    assert thumbnails.handle_thumbnails(rt, request).made == 1

    made = thumbnails.ensure_thumbnail(rt, JOB, "made-here")

    assert made is not None
    assert made == _stored_thumb(rt, "made-here") == _stored_thumb(rt, "made-there")
    assert made == make_thumbnail(image)
    info = rt.objects.stat(rt.settings.results_bucket, thumb_object_name(JOB, "made-here"))
    assert info is not None
    assert info.content_type == thumbs.THUMB_CONTENT_TYPE
    with Image.open(io.BytesIO(made)) as decoded:
        assert (decoded.format, decoded.size) == ("JPEG", (256, 171))


def test_a_later_request_reads_the_stored_thumbnail_without_decoding_the_image(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_image(rt, "k", _png())
    assert thumbnails.ensure_thumbnail(rt, JOB, "k") is not None
    stored = _jpeg((1, 2, 3))
    rt.objects.write_bytes(
        rt.settings.results_bucket, thumb_object_name(JOB, "k"), stored, content_type="image/jpeg"
    )

    def no_decoding(_image: bytes, **_kw: object) -> bytes:
        raise AssertionError("the stored thumbnail should have been read")

    monkeypatch.setattr(thumbnails, "make_thumbnail", no_decoding)

    assert thumbnails.ensure_thumbnail(rt, JOB, "k") == stored


def test_an_image_is_found_under_the_name_its_mime_type_gives_it(rt: Runtime) -> None:
    image = _jpeg()
    _store_image(rt, "photo.v2", image, mime="image/jpeg")

    assert thumbnails.ensure_thumbnail(rt, JOB, "photo.v2") == make_thumbnail(image)
    # A key that only starts like another's is not that one.
    assert thumbnails.ensure_thumbnail(rt, JOB, "photo") is None


def test_no_image_gives_no_thumbnail_and_stores_nothing(rt: Runtime) -> None:
    assert thumbnails.ensure_thumbnail(rt, JOB, "never-made") is None
    assert _stored_thumb(rt, "never-made") is None


def test_an_image_that_does_not_decode_gives_no_thumbnail_says_why_and_stores_nothing(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    _store_image(rt, "broken", b"\x89PNG\r\n\x1a\nnot really")

    with caplog.at_level(logging.WARNING):
        assert thumbnails.ensure_thumbnail(rt, JOB, "broken") is None

    assert _stored_thumb(rt, "broken") is None
    [record] = [r for r in caplog.records if "does not decode" in r.getMessage()]
    assert record.__dict__["key"] == "broken"
    assert record.__dict__["job_id"] == JOB


def test_many_threads_asking_at_once_all_get_the_thumbnail_and_the_stored_one_is_whole(
    rt: Runtime, tmp_path: Path
) -> None:
    image = _png((1024, 1024))
    _store_image(rt, "popular", image)
    expected = make_thumbnail(image)
    got: list[bytes | None] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        got.append(thumbnails.ensure_thumbnail(rt, JOB, "popular"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert got == [expected] * 8
    assert _stored_thumb(rt, "popular") == expected
    # Every writer published by a rename: no temp file is left behind.
    assert not [p for p in (tmp_path / ".tmp").rglob("*") if p.is_file()]


# --- the gallery server's app ----------------------------------------------------------------


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return TestClient(gallery_server.gallery_app(rt), base_url="http://127.0.0.1:8000")


@pytest.mark.parametrize("key", ["sku-1", "sku 1?", "100%#ü(1)+x", "a.b.c"])
def test_the_server_makes_a_missing_thumbnail_on_the_first_request_and_reads_it_after(
    rt: Runtime, client: TestClient, key: str
) -> None:
    image = _png()
    _store_image(rt, key, image)
    url = "/" + thumb_object_name(JOB, quote(key, safe=""))  # as the page encodes the key
    assert url.endswith(thumb_href(key))

    first = client.get(url)

    assert first.status_code == 200
    assert first.headers["content-type"] == "image/jpeg"
    assert first.content == make_thumbnail(image) == _stored_thumb(rt, key)
    replaced = _jpeg((9, 9, 9))
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        thumb_object_name(JOB, key),
        replaced,
        content_type="image/jpeg",
    )
    assert client.get(url).content == replaced


def test_concurrent_requests_for_one_thumbnail_make_it_once(
    rt: Runtime, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_image(rt, "k", _png())
    made: list[int] = []
    real = make_thumbnail

    def counted(image: bytes, **kw: int) -> bytes:
        made.append(1)
        return real(image, **kw)

    monkeypatch.setattr(thumbnails, "make_thumbnail", counted)
    once = gallery_server._PerName()
    start = threading.Barrier(6)
    got: list[bytes | None] = []

    def ask() -> None:
        start.wait()
        got.append(once.make(rt, JOB, "k"))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(made) == 1
    assert len(set(got)) == 1
    assert got[0] is not None
    assert once._locks == {}


def test_a_thumbnail_that_cannot_be_made_is_a_404_so_the_page_shows_the_image(
    rt: Runtime, client: TestClient
) -> None:
    _store_image(rt, "broken", b"not an image at all")

    assert client.get(f"/jobs/{JOB}/thumbs/broken.jpg").status_code == 404
    assert client.get(f"/jobs/{JOB}/thumbs/absent.jpg").status_code == 404
    assert client.get(f"/jobs/{JOB}/thumbs/absent.png").status_code == 404


def test_the_server_serves_the_gallery_and_images_with_their_types(
    rt: Runtime, client: TestClient
) -> None:
    image = _png()
    _store_image(rt, "a", image)
    bucket = rt.settings.results_bucket
    rt.objects.write_bytes(
        bucket, f"jobs/{JOB}/index.html", b"<!doctype html>", content_type="text/html"
    )
    rt.objects.write_bytes(
        bucket, f"jobs/{JOB}/gallery/items-00000.js", b"x();", content_type="text/javascript"
    )

    page = client.get(f"/jobs/{JOB}/index.html")
    got = client.get(f"/jobs/{JOB}/images/a.png")
    chunk = client.get(f"/jobs/{JOB}/gallery/items-00000.js")

    assert (page.status_code, page.text) == (200, "<!doctype html>")
    assert page.headers["content-type"].startswith("text/html")
    assert (got.status_code, got.content) == (200, image)
    assert got.headers["content-type"] == "image/png"
    assert chunk.status_code == 200
    assert "javascript" in chunk.headers["content-type"]
    listing = client.get("/")
    assert listing.status_code == 200
    assert "<h1>Jobs</h1>" in listing.text


@pytest.mark.parametrize(
    "path",
    [
        f"/jobs/{JOB}/requests/b0000.jsonl",  # the pipeline's own files stay out
        f"/jobs/{JOB}/manifests/m.json",
        f"/jobs/{JOB}/images/../../../../etc/passwd",
        f"/jobs/{JOB}/images/%2e%2e%2f%2e%2e%2fsecret",
        f"/jobs/{JOB}/.hidden",
        "/jobs/../.tmp/x",
        "/jobs/%2e%2e/thumbs/x.jpg",
        f"/jobs/{JOB}/thumbs/..%2F..%2Fimages%2Fa.jpg",
        f"/jobs/{JOB}/nothing-here.txt",
    ],
)
def test_anything_outside_a_jobs_gallery_files_is_not_found(
    rt: Runtime, client: TestClient, tmp_path: Path, path: str
) -> None:
    bucket = rt.settings.results_bucket
    rt.objects.write_bytes(
        bucket, f"jobs/{JOB}/requests/b0000.jsonl", b"{}", content_type="application/json"
    )
    rt.objects.write_bytes(
        bucket, f"jobs/{JOB}/manifests/m.json", b"{}", content_type="application/json"
    )
    (tmp_path / "secret").write_text("no")

    assert client.get(path).status_code == 404


def test_a_request_naming_another_host_is_refused(rt: Runtime, client: TestClient) -> None:
    _store_image(rt, "a", _png())

    refused = client.get(f"/jobs/{JOB}/images/a.png", headers={"Host": "rebound.example:8000"})

    assert refused.status_code == 400
    assert client.get(f"/jobs/{JOB}/images/a.png", headers={"Host": "localhost:8000"}).is_success


# --- where `local run` says the thumbnails are ------------------------------------------------


def test_local_run_points_to_the_services_gallery_or_says_the_service_makes_thumbnails(
    tmp_path: Path,
) -> None:
    from bananabatch import serve_cli
    from bananabatch.local import drivers

    without = serve_cli.gallery_hint(tmp_path, JOB)
    assert "bananabatch local serve" in without
    assert "full images" in without
    with drivers.driving(tmp_path, drivers.SERVICE) as held:
        assert serve_cli.gallery_hint(tmp_path, JOB) == without  # no gallery announced yet
        held.announce(gallery="http://127.0.0.1:4321")
        assert serve_cli.gallery_hint(tmp_path, JOB) == (
            f"gallery with thumbnails: http://127.0.0.1:4321/jobs/{JOB}/index.html"
        )
