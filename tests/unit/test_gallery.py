from __future__ import annotations

import io
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
    GALLERY_CONTENT_TYPE,
    gallery_object_name,
    image_href,
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
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_gallery_is_one_self_contained_document() -> None:
    html = render_gallery(_job(), _items())

    assert html.startswith("<!doctype html>")
    assert html.count("<html") == 1
    assert "<style>" in html
    assert _tags(html, "script") == []
    assert _tags(html, "link") == []
    # No policy that would forbid the thumbnails' inline fallback handler.
    assert "content-security-policy" not in html.lower()
    # Nothing outside the results folder: no scheme, no protocol-relative, no absolute path.
    for tag, attribute in (("img", "src"), ("img", "data-full"), ("a", "href")):
        for attrs in _tags(html, tag):
            target = attrs[attribute] or ""
            assert not re.match(r"^([a-z][a-z0-9+.-]*:|/)", target), target
    assert "url(" not in html
    assert "@import" not in html


def test_succeeded_and_cached_items_show_thumbnails_linked_to_full_images() -> None:
    items = [*_items(), _item("sku-5", 5, ItemState.CACHED)]
    html = render_gallery(_job(), items)

    images = {attrs["data-key"]: attrs for attrs in _tags(html, "img")}
    assert set(images) == {"sku-1", "sku-2", "sku-5"}
    assert images["sku-1"]["src"] == "thumbs/sku-1.jpg"
    links = [attrs["href"] for attrs in _tags(html, "a")]
    assert links == ["images/sku-1.png", "images/sku-2.png", "images/sku-5.png"]


def test_a_thumbnail_that_fails_to_load_falls_back_once_to_its_full_image() -> None:
    html = render_gallery(_job(), [*_items(), _item("sku 5&<", 5, ItemState.CACHED)])

    links = [attrs["href"] for attrs in _tags(html, "a")]
    images = _tags(html, "img")
    # The fallback is the image the card links to, through an attribute (escaped like any
    # other) rather than a path spliced into script.
    assert [attrs["data-full"] for attrs in images] == links
    assert {attrs["onerror"] for attrs in images} == {
        "this.onerror=null;this.src=this.dataset.full"
    }


def test_cards_follow_input_line_order() -> None:
    html = render_gallery(_job(), _items())

    states = [attrs["data-state"] for attrs in _tags(html, "article")]
    assert states == ["SUCCEEDED", "SUCCEEDED", "BLOCKED", "REJECTED"]
    assert html.index("sku-1") < html.index("sku-2") < html.index("sku-3")


def test_image_extension_comes_from_the_uri_then_the_mime_type() -> None:
    from_uri = _item("a", 1, ItemState.SUCCEEDED, image_uri="gs://r/jobs/j/images/a.webp")
    from_mime = _item("b", 2, ItemState.SUCCEEDED, image_uri=None, mime_type="image/jpeg")
    from_nothing = _item("c", 3, ItemState.SUCCEEDED, image_uri=None, mime_type=None)

    assert image_href(from_uri) == "images/a.webp"
    assert image_href(from_mime) == "images/b.jpg"
    assert image_href(from_nothing) == "images/c.png"


def test_keys_with_url_characters_are_percent_encoded_in_paths() -> None:
    item = _item("spring #1?", 1, ItemState.SUCCEEDED)

    assert thumb_href(item.key) == "thumbs/spring%20%231%3F.jpg"
    html = render_gallery(_job(), [item])
    assert 'src="thumbs/spring%20%231%3F.jpg"' in html
    assert 'data-key="spring #1?"' in html


def test_everything_user_provided_is_escaped() -> None:
    hostile = '<script>alert("x")</script>'
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

    html = render_gallery(job, items)

    assert "<script" not in html
    assert "<marquee" not in html
    assert "<blink" not in html
    assert '"><img>' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert 'data-key="k&amp;&lt;marquee&gt;"' in html
    assert "j&lt;blink&gt;" in html
    assert 'data-key="q&quot;uote"' in html
    assert len(_tags(html, "img")) == 1


def test_totals_show_counts_and_every_cost_figure() -> None:
    html = render_gallery(_job(), _items())
    text = _text(html)

    assert "Succeeded 2" in text
    assert "Blocked 1" in text
    assert "Failed 0" in text
    assert "Rejected 1" in text
    assert "Lines 4" in text
    for label, value in (
        ("Estimate (batch price)", "$0.0780"),
        ("Actual (paid)", "$0.0390"),
        ("Estimate at standard price", "$0.0780"),
        ("Saved on delivered 50%", "$0.0390"),
        ("Per accepted image", "$0.0195"),
    ):
        assert f"{label} {value}" in text
    # Totals come before the first card.
    assert html.index("Per accepted image") < html.index('<article class="card"')


def test_a_job_that_saved_nothing_claims_no_saving_share() -> None:
    job = _job(costs=Costs(actual_usd=0.0, saved_usd=0.0, standard_equivalent_usd=2.0))
    text = _text(render_gallery(job, []))
    assert "Saved on delivered $0.00 " in text
    assert "%" not in text.split("Saved on delivered")[1].split("$")[0]


def test_large_amounts_use_thousands_separators_and_missing_per_image_cost_a_dash() -> None:
    job = _job(costs=Costs(actual_usd=1234.5, cost_per_accepted_image_usd=None, estimated_usd=2000))

    text = _text(render_gallery(job, []))

    assert "Actual (paid) $1,234.50" in text
    assert "Estimate (batch price) $2,000.00" in text
    assert "Per accepted image —" in text


def test_counts_fall_back_to_the_items_when_the_job_has_none_yet() -> None:
    text = _text(render_gallery(_job(counts={}), _items()))

    assert "Succeeded 2" in text
    assert "Rejected 1" in text


def test_problems_table_lists_blocked_failed_and_rejected_items_with_reasons() -> None:
    items = [
        *_items(),
        _item("sku-9", 9, ItemState.FAILED, reason=None, finish_reason=None, error_code=503),
    ]
    html = render_gallery(_job(), items)

    rows = [attrs["data-key"] for attrs in _tags(html, "tr") if "data-key" in attrs]
    assert rows == ["sku-3", "line-4", "sku-9"]
    table = html[html.index('id="problems"') :]
    assert "blocked: IMAGE_SAFETY" in table
    assert "line 4: field &#x27;prompt&#x27; is missing" in table
    assert "no reason recorded" in table
    assert "code 503" in table


def test_no_problems_table_when_every_item_succeeded() -> None:
    html = render_gallery(_job(), [_item("sku-1", 1, ItemState.SUCCEEDED)])

    assert 'id="problems"' not in html


def test_item_costs_show_actual_or_marked_estimates() -> None:
    pending = _item("p", 1, ItemState.PENDING)
    html = render_gallery(_job(), [pending, _item("s", 2, ItemState.SUCCEEDED)])

    assert "est. $0.0195" in html
    assert _text(html).count("$0.0195") >= 2


def test_header_names_the_job_state_source_and_error() -> None:
    job = _job(state=JobState.FAILED, error="every batch expired")

    text = _text(render_gallery(job, []))

    assert JOB_ID in text
    assert "FAILED" in text
    assert "gs://inbox/spring.jsonl" in text
    assert "every batch expired" in text
    assert "2025-06-01 09:00 UTC" in text
    assert "This job has no items." in text


def test_rendering_is_deterministic() -> None:
    assert render_gallery(_job(), _items()) == render_gallery(_job(), list(reversed(_items())))


def test_many_thousand_items_render_one_card_each() -> None:
    items = (
        _item(f"sku-{n:05d}", n, ItemState.SUCCEEDED if n % 7 else ItemState.FAILED, reason="x")
        for n in range(1, 20_001)
    )

    html = render_gallery(_job(line_count=20_000), items)

    assert html.count('<article class="card"') == 20_000
    assert html.count("<img ") == 20_000 - 20_000 // 7
    assert 'loading="lazy"' in html


def test_object_names_and_content_types() -> None:
    assert gallery_object_name(JOB_ID) == f"jobs/{JOB_ID}/index.html"
    assert thumb_object_name(JOB_ID, "sku-1") == f"jobs/{JOB_ID}/thumbs/sku-1.jpg"
    assert GALLERY_CONTENT_TYPE == "text/html; charset=utf-8"
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
