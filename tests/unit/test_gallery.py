from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from PIL import Image

from bananabatch.core.records import Costs, ItemRecord, JobRecord, SourceObject
from bananabatch.core.states import ItemState, JobState
from bananabatch.errors import PermanentError
from bananabatch.report.gallery import (
    CHUNK_CALLBACK,
    CHUNK_CONTENT_TYPE,
    CHUNK_ITEMS,
    GALLERY_CONTENT_TYPE,
    PAGE_ITEMS,
    ROW_FIELDS,
    GalleryBuilder,
    GalleryFile,
    chunk_name,
    gallery_object_name,
    image_href,
    rejected_line_item,
    render_gallery,
    thumb_href,
)
from bananabatch.report.thumbs import THUMB_CONTENT_TYPE, make_thumbnail, thumb_object_name

JOB_ID = "spring-0123456789ab"
T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


def _job(**overrides: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "job_id": JOB_ID,
        "state": JobState.PARTIAL,
        "source": SourceObject(bucket="inbox", name="spring.jsonl", generation="3"),
        "created_at": T0,
        "updated_at": T0,
        "finished_at": T0,
        "default_model": "gemini-2.5-flash-image",
        "results_prefix": f"jobs/{JOB_ID}/",
        "line_count": 4,
        "counts": {"SUCCEEDED": 2, "BLOCKED": 1, "REJECTED": 1},
        "costs": Costs(
            estimated_usd=0.078,
            standard_equivalent_usd=0.078,
            actual_usd=0.039,
            saved_usd=0.039,
            cost_per_accepted_image_usd=0.0195,
        ),
    }
    fields.update(overrides)
    return JobRecord(**fields)


def _item(key: str, line_no: int, state: ItemState, **fields: Any) -> ItemRecord:
    base: dict[str, Any] = {
        "job_id": JOB_ID,
        "key": key,
        "line_no": line_no,
        "state": state,
        "model": "gemini-2.5-flash-image",
        "aspect_ratio": "16:9",
        "image_size": "1K",
        "prompt_preview": f"prompt for {key}",
        "estimated_usd": 0.0195,
    }
    if state in (ItemState.SUCCEEDED, ItemState.CACHED):
        base |= {
            "image_uri": f"gs://results/jobs/{JOB_ID}/images/{key}.png",
            "mime_type": "image/png",
            "actual_usd": 0.0195,
        }
    base |= fields
    return ItemRecord.model_validate(base)


def _items() -> list[ItemRecord]:
    return [
        _item("sku-2", 2, ItemState.SUCCEEDED),
        _item("sku-1", 1, ItemState.SUCCEEDED),
        _item("sku-3", 3, ItemState.BLOCKED, reason="blocked: IMAGE_SAFETY", actual_usd=0.0),
        _item("line-4", 4, ItemState.REJECTED, reason="line 4: field 'prompt' is missing"),
    ]


class _Tags(HTMLParser):
    """Collects start tags with their attributes, so tests look at structure, not text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str, name: str) -> list[dict[str, str | None]]:
    parser = _Tags()
    parser.feed(html)
    return [attrs for tag, attrs in parser.tags if tag == name]


def _text(html: str) -> str:
    without_code = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", without_code))


def _index(files: list[GalleryFile]) -> str:
    assert files[-1].name == "index.html"
    return files[-1].data.decode()


def _chunks(files: list[GalleryFile]) -> list[GalleryFile]:
    return [file for file in files if file.name != "index.html"]


def _rows(files: list[GalleryFile]) -> list[dict[str, Any]]:
    """Every item row of every chunk, in order, as {field: value}."""
    rows: list[dict[str, Any]] = []
    for index, file in enumerate(_chunks(files)):
        assert file.name == chunk_name(index)
        match = re.fullmatch(
            rf"{CHUNK_CALLBACK}\((\d+),(.*)\);\n", file.data.decode("ascii"), flags=re.S
        )
        assert match is not None, file.data[:200]
        assert int(match.group(1)) == index
        rows += [dict(zip(ROW_FIELDS, row, strict=True)) for row in json.loads(match.group(2))]
    return rows


def _config(html: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="gallery-config">(.*?)</script>', html, re.S
    )
    assert match is not None
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def test_the_page_is_one_document_whose_data_files_sit_beside_it() -> None:
    files = render_gallery(_job(), _items())
    html = _index(files)

    assert html.startswith("<!doctype html>")
    assert html.count("<html") == 1
    assert "<style>" in html
    assert _tags(html, "link") == []
    # Its script is inline; the data files are loaded by it, by relative path.
    assert all(attrs.get("src") is None for attrs in _tags(html, "script"))
    assert [file.name for file in files] == [chunk_name(0), "index.html"]
    assert chunk_name(0) == "gallery/items-00000.js"
    assert {file.content_type for file in _chunks(files)} == {CHUNK_CONTENT_TYPE}
    assert files[-1].content_type == GALLERY_CONTENT_TYPE
    # Nothing outside the results folder: no scheme, no protocol-relative, no absolute path.
    for attrs in _tags(html, "a"):
        target = attrs["href"] or ""
        assert not re.match(r"^([a-z][a-z0-9+.-]*:|/)", target), target
    assert "url(" not in html
    assert "@import" not in html
    assert "content-security-policy" not in html.lower()


def test_items_are_listed_in_input_line_order_in_chunks_of_a_fixed_size() -> None:
    items = [
        _item(f"sku-{n:04d}", n, ItemState.SUCCEEDED) for n in range(CHUNK_ITEMS * 2 + 7, 0, -1)
    ]

    files = render_gallery(_job(line_count=len(items)), items)

    chunks = _chunks(files)
    assert len(chunks) == 3
    rows = _rows(files)
    assert [row["line"] for row in rows] == list(range(1, CHUNK_ITEMS * 2 + 8))
    assert CHUNK_ITEMS % PAGE_ITEMS == 0  # a page never straddles two chunks
    config = _config(_index(files))
    assert config["items"] == len(items)
    assert config["chunks"] == 3
    assert config["fields"] == list(ROW_FIELDS)


def test_a_row_carries_the_full_key_prompt_metadata_state_cost_and_reason() -> None:
    key = "spring26-catalog-outdoor-furniture-teak-bench-150cm-natural-finish"
    items = [
        _item(key, 1, ItemState.SUCCEEDED, image_uri=f"gs://r/jobs/j/images/{key}.webp"),
        _item(
            "sku-2",
            2,
            ItemState.FAILED,
            reason="INTERNAL",
            finish_reason="OTHER",
            error_code=500,
            lane="urgent",
        ),
    ]
    metadata = {1: {"sku": "TB-150", "campaign": "spring26"}}

    rows = _rows(render_gallery(_job(), items, metadata))

    assert rows[0] == {
        "line": 1,
        "key": key,
        "state": "SUCCEEDED",
        "prompt": f"prompt for {key}",
        "model": "gemini-2.5-flash-image",
        "shape": "16:9 · 1K",
        "ext": "webp",
        "paid": 0.0195,
        "estimate": 0.0195,
        "reason": None,
        "metadata": {"sku": "TB-150", "campaign": "spring26"},
        "lane": None,
    }
    assert rows[1]["ext"] is None
    assert rows[1]["paid"] is None
    assert rows[1]["reason"] == "INTERNAL · OTHER · code 500"
    assert rows[1]["metadata"] is None
    assert rows[1]["lane"] == "urgent"


def test_a_longer_prompt_than_the_preview_is_listed_when_known() -> None:
    long = "A teak bench, " + "natural finish, " * 20 + "heliotrope cushion"
    items = [
        _item("a", 1, ItemState.SUCCEEDED, prompt_preview=long[:119] + "…"),
        _item("b", 2, ItemState.SUCCEEDED, prompt_preview="short"),
    ]

    rows = _rows(render_gallery(_job(), items, prompts={1: long, 2: "sho"}))

    assert rows[0]["prompt"] == long
    assert rows[1]["prompt"] == "short"  # never shorter than the preview


def test_a_rejected_line_is_listed_under_the_key_the_user_wrote() -> None:
    job = _job()
    doc = {
        "line": 15,
        "key": "spring26-chair-15",
        "field": "aspect_ratio",
        "reason": "aspect_ratio: expected one of 1:1, 16:9; found '7:5'",
        "input": json.dumps(
            {"key": "spring26-chair-15", "prompt": "A chair", "aspect_ratio": "7:5"}
        ),
    }
    keyless = {"line": 16, "key": None, "field": None, "reason": "not JSON", "input": "{oops"}

    rows = _rows(
        render_gallery(job, [rejected_line_item(job, doc), rejected_line_item(job, keyless)])
    )

    assert rows[0]["key"] == "spring26-chair-15"
    assert rows[0]["state"] == "REJECTED"
    assert rows[0]["prompt"] == "A chair"
    assert rows[0]["reason"] == doc["reason"]
    assert "__line" not in json.dumps(rows)
    # No key at all: the page says so (and shows the line as written).
    assert rows[1]["key"] is None
    assert rows[1]["prompt"] == "{oops"


def test_hostile_text_cannot_leave_its_string_in_the_data_or_the_page() -> None:
    hostile = '</script><script>alert("x")</script><!--'
    items = [
        _item("k&<marquee>", 1, ItemState.SUCCEEDED, prompt_preview=hostile),
        _item("k2", 2, ItemState.FAILED, reason=f"boom {hostile}", finish_reason='"><img>'),
        _item('q"uote', 3, ItemState.BLOCKED, reason="r", model=hostile),
    ]
    job = _job(
        job_id="j<blink>",
        error=hostile,
        source=SourceObject(bucket="b", name=hostile, generation="1"),
    )

    files = render_gallery(job, items, {1: {"note": hostile, hostile: [hostile]}})

    for file in _chunks(files):
        text = file.data.decode("ascii")  # ensure_ascii: no U+2028 either
        assert "<" not in text
        assert ">" not in text
        assert "&" not in text
    rows = _rows(files)
    assert rows[0]["key"] == "k&<marquee>"
    assert rows[0]["prompt"] == hostile
    assert rows[0]["metadata"] == {"note": hostile, hostile: [hostile]}
    html = _index(files)
    assert html.count("<script") == 2  # the config and the page's own script
    assert "<marquee" not in html
    assert "<blink" not in html
    assert "j&lt;blink&gt;" in html
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;x&quot;)" in html


def test_keys_with_url_characters_are_percent_encoded_in_paths() -> None:
    item = _item("spring #1?", 1, ItemState.SUCCEEDED)

    assert thumb_href(item.key) == "thumbs/spring%20%231%3F.jpg"
    assert image_href(item) == "images/spring%20%231%3F.png"


def test_image_extension_comes_from_the_uri_then_the_mime_type() -> None:
    from_uri = _item("a", 1, ItemState.SUCCEEDED, image_uri="gs://r/jobs/j/images/a.webp")
    from_mime = _item("b", 2, ItemState.SUCCEEDED, image_uri=None, mime_type="image/jpeg")
    from_nothing = _item("c", 3, ItemState.SUCCEEDED, image_uri=None, mime_type=None)

    assert image_href(from_uri) == "images/a.webp"
    assert image_href(from_mime) == "images/b.jpg"
    assert image_href(from_nothing) == "images/c.png"
    rows = _rows(render_gallery(_job(), [from_uri, from_mime, from_nothing]))
    assert [row["ext"] for row in rows] == ["webp", "jpg", "png"]


def _money(html: str) -> dict[str, str]:
    """{summary.json cost field: the figure its tile shows}."""
    found = re.findall(r'data-field="([a-z_]+)"><dt>.*?</dt><dd>(.*?)</dd>', html)
    return {field: _text(value).strip() for field, value in found}


def test_money_tiles_show_summary_json_figures_each_labelled() -> None:
    costs = Costs(
        estimated_usd=0.078,
        standard_equivalent_usd=0.156,
        actual_usd=0.039,
        saved_usd=0.039,
        cost_per_accepted_image_usd=0.0195,
        cache_saved_usd=0.0195,
        batch_actual_usd=0.0195,
        urgent_actual_usd=0.0195,
    )
    html = _index(render_gallery(_job(costs=costs), _items()))
    text = _text(html)

    assert _money(html) == {
        "estimated_usd": "$0.0780",
        "standard_equivalent_usd": "$0.1560",
        "actual_usd": "$0.0390",
        "saved_usd": "$0.0390",
        "cache_saved_usd": "$0.0195",
        "batch_actual_usd": "$0.0195",
        "urgent_actual_usd": "$0.0195",
        "cost_per_accepted_image_usd": "$0.0195",
    }
    for label, value in (
        ("Estimate at batch price", "$0.0780"),
        ("Estimate at standard price", "$0.1560"),
        ("Actual (paid)", "$0.0390"),
        ("Saved against standard price, on delivered images 50%", "$0.0390"),
        ("Saved by the cache", "$0.0195"),
        ("Actual per delivered image", "$0.0195"),
    ):
        assert f"{label} {value}" in text
    # Totals come before the items.
    assert html.index("Actual per delivered image") < html.index('id="grid"')


def test_a_job_that_delivered_nothing_claims_no_saving() -> None:
    # A cancelled job: the estimate stands for the whole file, but nothing was made.
    job = _job(
        state=JobState.CANCELLED,
        counts={"FAILED": 4},
        costs=Costs(estimated_usd=1.0, standard_equivalent_usd=2.0, actual_usd=0.0),
    )
    html = _index(render_gallery(job, []))
    text = _text(html)

    assert _money(html)["saved_usd"] == "$0.00"
    assert "%" not in text.split("on delivered images")[1].split("$")[0]
    assert "No image was delivered: nothing was saved." in text
    assert "cache_saved_usd" not in html  # no tile for a saving that did not happen


def test_large_amounts_use_thousands_separators_and_missing_per_image_cost_a_dash() -> None:
    job = _job(costs=Costs(actual_usd=1234.5, cost_per_accepted_image_usd=None, estimated_usd=2000))

    money = _money(_index(render_gallery(job, [])))

    assert money["actual_usd"] == "$1,234.50"
    assert money["estimated_usd"] == "$2,000.00"
    assert money["cost_per_accepted_image_usd"] == "—"


def test_counts_link_to_their_state_and_the_filter_offers_each_state() -> None:
    html = _index(render_gallery(_job(), _items()))
    text = _text(html)

    assert "Succeeded 2" in text
    assert "Blocked 1" in text
    assert "Failed 0" in text
    assert "Rejected 1" in text
    assert "Lines 4" in text
    links = [attrs["href"] for attrs in _tags(html, "a")]
    assert "#state=SUCCEEDED" in links
    assert "#state=REJECTED" in links
    options = [attrs["value"] for attrs in _tags(html, "option")]
    assert options == ["", "problems", "SUCCEEDED", "BLOCKED", "REJECTED"]
    assert [attrs["id"] for attrs in _tags(html, "input")] == ["q"]


def test_counts_fall_back_to_the_items_when_the_job_has_none_yet() -> None:
    text = _text(_index(render_gallery(_job(counts={}), _items())))

    assert "Succeeded 2" in text
    assert "Rejected 1" in text
    # The items delivered images: no note says otherwise.
    assert "No image was delivered" not in text


def test_header_names_the_job_state_source_and_error() -> None:
    job = _job(state=JobState.FAILED, error="every batch expired")

    files = render_gallery(job, [])
    text = _text(_index(files))

    assert JOB_ID in text
    assert "FAILED" in text
    assert "gs://inbox/spring.jsonl" in text
    assert "every batch expired" in text
    assert "2025-06-01 09:00 UTC" in text
    assert _chunks(files) == []
    assert _config(_index(files))["items"] == 0


def test_past_the_limit_the_page_lists_the_first_lines_and_says_so() -> None:
    builder = GalleryBuilder(limit=3)
    for n in range(1, 6):
        builder.add(_item(f"sku-{n}", n, ItemState.SUCCEEDED))

    files = builder.files(_job(line_count=5, counts={"SUCCEEDED": 5}))

    assert builder.truncated
    assert [row["key"] for row in _rows(files)] == ["sku-1", "sku-2", "sku-3"]
    text = _text(_index(files))
    assert "This gallery lists the first 3 of 5 lines." in text
    assert "results.jsonl" in text


def test_the_page_stays_small_whatever_the_number_of_items() -> None:
    def page_bytes(count: int) -> tuple[int, int]:
        items = (
            _item(
                f"spring26-catalog-{n:05d}",
                n,
                ItemState.SUCCEEDED if n % 7 else ItemState.FAILED,
                reason="x",
            )
            for n in range(1, count + 1)
        )
        files = render_gallery(_job(line_count=count, counts={}), items)
        return len(files[-1].data), max(len(file.data) for file in files)

    small, small_largest = page_bytes(10)
    large, large_largest = page_bytes(20_000)

    # index.html grows by the digits of its counts only; no file grows with the job.
    assert large - small < 200
    assert large < 40_000
    assert large_largest < 100_000
    assert small_largest == small


def test_rendering_is_deterministic() -> None:
    assert render_gallery(_job(), _items()) == render_gallery(_job(), list(reversed(_items())))


def test_object_names_and_content_types() -> None:
    assert gallery_object_name(JOB_ID) == f"jobs/{JOB_ID}/index.html"
    assert thumb_object_name(JOB_ID, "sku-1") == f"jobs/{JOB_ID}/thumbs/sku-1.jpg"
    assert GALLERY_CONTENT_TYPE == "text/html; charset=utf-8"
    assert CHUNK_CONTENT_TYPE == "text/javascript; charset=utf-8"
    assert THUMB_CONTENT_TYPE == "image/jpeg"


# Thumbnails


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1024, 1024), (256, 256)), ((1344, 768), (256, 146)), ((768, 1344), (146, 256))],
)
def test_thumbnail_fits_the_max_edge_and_keeps_the_aspect_ratio(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    thumb = _decode(make_thumbnail(_encode(Image.new("RGB", size, (10, 120, 200)), "PNG")))

    assert thumb.format == "JPEG"
    assert thumb.mode == "RGB"
    assert thumb.size == expected


def test_png_transparency_becomes_white_not_black() -> None:
    source = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    source.paste((200, 30, 30, 255), (100, 100, 300, 300))

    thumb = _decode(make_thumbnail(_encode(source, "PNG"), max_edge=100))

    corner = thumb.getpixel((2, 2))
    centre = thumb.getpixel((50, 50))
    assert isinstance(corner, tuple)
    assert isinstance(centre, tuple)
    assert min(corner) > 240
    assert centre[0] > 170
    assert centre[1] < 70


def test_palette_png_with_transparency_is_flattened() -> None:
    source = Image.new("RGBA", (64, 32), (0, 0, 0, 0)).convert("P")
    source.info["transparency"] = 0

    thumb = _decode(make_thumbnail(_encode(source, "PNG")))

    assert thumb.size == (64, 32)
    pixel = thumb.getpixel((5, 5))
    assert isinstance(pixel, tuple)
    assert min(pixel) > 240


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
def test_jpeg_webp_and_png_inputs_all_work(fmt: str) -> None:
    source = Image.new("RGB", (2048, 1152), (40, 160, 90))

    thumb = _decode(make_thumbnail(_encode(source, fmt)))

    assert thumb.size == (256, 144)
    pixel = thumb.getpixel((128, 72))
    assert isinstance(pixel, tuple)
    assert abs(pixel[1] - 160) < 12


def test_grayscale_input_comes_out_rgb() -> None:
    thumb = _decode(make_thumbnail(_encode(Image.new("L", (300, 200), 128), "PNG")))

    assert thumb.mode == "RGB"
    assert thumb.size == (256, 171)


def test_small_images_are_not_upscaled() -> None:
    thumb = _decode(make_thumbnail(_encode(Image.new("RGB", (120, 80)), "PNG")))

    assert thumb.size == (120, 80)


def test_thumbnail_is_much_smaller_than_the_source() -> None:
    noisy = Image.effect_noise((1024, 1024), 64).convert("RGB")
    source = _encode(noisy, "PNG")

    assert len(make_thumbnail(source)) * 10 < len(source)


def test_undecodable_bytes_are_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="not a decodable image"):
        make_thumbnail(b"definitely not an image")


def test_max_edge_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_edge"):
        make_thumbnail(_encode(Image.new("RGB", (8, 8)), "PNG"), max_edge=0)
