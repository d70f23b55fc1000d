"""The gallery page in a real headless Chromium, loaded from a local results folder."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from bananabatch.core.records import Costs, ItemRecord, JobRecord, SourceObject, extension_for
from bananabatch.core.states import ItemState, JobState
from bananabatch.report.gallery import GalleryFile, gallery_object_name, render_gallery
from bananabatch.report.thumbs import make_thumbnail, thumb_object_name
from tests.support.browser import assert_gallery_renders, assert_rendered, inspect_page

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
JOB_ID = "catalog-spring-4f2a9c1d0b7e"
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)

# key, aspect ratio, pixel size, colour, prompt
SUCCEEDED = [
    ("sku-1001", "1:1", (512, 512), (231, 111, 81), "A terracotta teapot on a linen cloth"),
    ("sku-1002", "16:9", (768, 432), (42, 157, 143), "Wide shot of a teal armchair, soft light"),
    ("sku-1003", "9:16", (360, 640), (233, 196, 106), "Tall mustard vase with dried grass"),
    ("sku-1004", "4:3", (640, 480), (38, 70, 83), "Slate-blue ceramic bowls, stacked"),
    ("sku-1005", "3:2", (600, 400), (244, 162, 97), "Amber glass lamp at dusk"),
]
CACHED = ("sku-1006", "2:3", (400, 600), (131, 56, 236), "Violet throw pillow, studio light")
BLOCKED_REASON = "The response was blocked for safety (IMAGE_SAFETY)."
FAILED_REASON = "INTERNAL: the model returned no image after 2 attempts"


def _png(size: tuple[int, int], colour: tuple[int, int, int], label: str) -> bytes:
    # Alpha on purpose: the thumbnailer must flatten it for JPEG.
    image = Image.new("RGBA", size, (*colour, 255))
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.ellipse(
        (width * 0.25, height * 0.25, width * 0.75, height * 0.75), fill=(255, 255, 255, 160)
    )
    draw.text((12, 12), label, fill=(255, 255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _item(key: str, line_no: int, state: ItemState, **fields: object) -> ItemRecord:
    return ItemRecord.model_validate(
        {
            "job_id": JOB_ID,
            "key": key,
            "line_no": line_no,
            "state": state,
            "model": "gemini-2.5-flash-image",
            "estimated_usd": 0.0195,
            **fields,
        }
    )


def _build_results(root: Path) -> tuple[Path, set[str]]:
    """Write images, thumbnails and index.html as the collector lays them out."""
    items: list[ItemRecord] = []
    with_images: set[str] = set()
    for line_no, (key, ratio, size, colour, prompt) in enumerate([*SUCCEEDED, CACHED], 1):
        state = ItemState.CACHED if key == CACHED[0] else ItemState.SUCCEEDED
        image = _png(size, colour, key)
        image_name = f"jobs/{JOB_ID}/images/{key}.{extension_for('image/png')}"
        (root / image_name).parent.mkdir(parents=True, exist_ok=True)
        (root / image_name).write_bytes(image)
        thumb = root / thumb_object_name(JOB_ID, key)
        thumb.parent.mkdir(parents=True, exist_ok=True)
        thumb.write_bytes(make_thumbnail(image))
        items.append(
            _item(
                key,
                line_no,
                state,
                aspect_ratio=ratio,
                image_size="1K",
                prompt_preview=prompt,
                image_uri=f"file://{root / image_name}",
                mime_type="image/png",
                actual_usd=0.0 if state is ItemState.CACHED else 0.0195,
            )
        )
        with_images.add(key)
    items += [
        _item(
            "sku-1007",
            7,
            ItemState.BLOCKED,
            aspect_ratio="1:1",
            prompt_preview="<script>alert('x')</script> a knife block",
            reason=BLOCKED_REASON,
            finish_reason="IMAGE_SAFETY",
            actual_usd=0.0,
        ),
        _item(
            "sku-1008",
            8,
            ItemState.FAILED,
            aspect_ratio="21:9",
            prompt_preview="Panorama of a reading nook",
            reason=FAILED_REASON,
            error_code=500,
        ),
    ]
    job = JobRecord(
        job_id=JOB_ID,
        state=JobState.PARTIAL,
        source=SourceObject(bucket="inbox", name="drops/catalog-spring.jsonl", generation="42"),
        created_at=T0,
        updated_at=T0 + timedelta(minutes=41),
        finished_at=T0 + timedelta(minutes=41),
        default_model="gemini-2.5-flash-image",
        results_prefix=f"jobs/{JOB_ID}/",
        line_count=8,
        counts={"SUCCEEDED": 5, "CACHED": 1, "BLOCKED": 1, "FAILED": 1},
        costs=Costs(
            estimated_usd=0.156,
            standard_equivalent_usd=0.195,
            actual_usd=0.0975,
            saved_usd=0.0975,
            cost_per_accepted_image_usd=0.01625,
        ),
    )
    return write_gallery(root, render_gallery(job, items)), with_images


def write_gallery(root: Path, files: list[GalleryFile], job_id: str = JOB_ID) -> Path:
    """The gallery's files where finalize puts them; the path of its index.html."""
    index = root / gallery_object_name(job_id)
    for file in files:
        path = index.parent / file.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.data)
    return index


def test_every_thumbnail_renders_in_chromium_and_problems_show_their_reasons(
    tmp_path: Path,
) -> None:
    index, with_images = _build_results(tmp_path)
    screenshot = ARTIFACTS / "gallery.png"

    report = inspect_page(index, screenshot)

    assert_rendered(report, with_images)
    assert BLOCKED_REASON in report.text
    assert FAILED_REASON in report.text
    # The escaped prompt shows as text; it did not become a script element.
    assert "<script>alert('x')</script> a knife block" in report.text
    assert report.images == dict.fromkeys(with_images, True)
    with Image.open(screenshot) as shot:
        assert shot.format == "PNG"
        # Full page: the problems table lies well below a 900px viewport.
        assert shot.height > 900


def test_a_missing_thumbnail_falls_back_to_the_full_image(tmp_path: Path) -> None:
    index, with_images = _build_results(tmp_path)
    # Thumbnails are made after the page is written, by other invocations: one may be late.
    (tmp_path / thumb_object_name(JOB_ID, "sku-1003")).unlink()

    report = inspect_page(index, tmp_path / "fallback.png")

    assert_rendered(report, with_images)
    assert report.sources["sku-1003"] == "images/sku-1003.png"
    assert report.sources["sku-1001"] == "thumbs/sku-1001.jpg"


def test_an_item_with_neither_thumbnail_nor_image_is_reported_as_not_rendered(
    tmp_path: Path,
) -> None:
    index, with_images = _build_results(tmp_path)
    (tmp_path / thumb_object_name(JOB_ID, "sku-1003")).unlink()
    (tmp_path / f"jobs/{JOB_ID}/images/sku-1003.png").unlink()

    with pytest.raises(AssertionError, match="sku-1003"):
        assert_gallery_renders(index, with_images, tmp_path / "broken.png")


def test_a_missing_data_file_is_named_on_the_page(tmp_path: Path) -> None:
    index, _with_images = _build_results(tmp_path)
    (index.parent / "gallery" / "items-00000.js").unlink()

    report = inspect_page(index, tmp_path / "no-data.png")

    assert report.images == {}
    assert "Could not load gallery/items-00000.js" in report.text
