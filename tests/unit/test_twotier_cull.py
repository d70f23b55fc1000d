"""The two-tier cull (core/twotier/cull.py) on the emulator's own images and its broken ones."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bananabatch.core.twotier.cull import (
    CullThresholds,
    StandardCull,
    cull_siblings,
    inspect_image,
    load_cull,
)
from bananabatch.emulator.render import broken_png, render_png, vary_png

PROMPT = "A yellow sneaker on a marble table, studio light"


def _candidate(n: int) -> bytes:
    return vary_png(render_png(PROMPT, "1:1", "1K"), n)


def test_a_rendered_candidate_is_kept_and_scored() -> None:
    [verdict] = StandardCull()([("sku-1~c1", _candidate(1))])
    assert verdict.kept
    assert verdict.reason is None
    assert verdict.score > 3.0
    assert (verdict.width, verdict.height) == (1024, 1024)


def test_candidates_of_one_prompt_with_different_seeds_are_not_near_duplicates() -> None:
    verdicts = StandardCull()([(f"k~c{n}", _candidate(n)) for n in range(1, 9)])
    assert [v.kept for v in verdicts] == [True] * 8, [v.reason for v in verdicts]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("blank_image", "blank or near-uniform"),
        ("uniform_image", "blank or near-uniform"),
        ("small_image", "too small: 64x64"),
    ],
)
def test_broken_emulator_images_are_culled_with_the_reason(kind: str, reason: str) -> None:
    verdicts = StandardCull()(
        [("k~c1", _candidate(1)), ("k~c2", broken_png(kind, PROMPT, "1:1", "1K"))]
    )
    assert verdicts[0].kept
    assert not verdicts[1].kept
    assert verdicts[1].reason is not None
    assert verdicts[1].reason.startswith(reason)
    assert verdicts[1].score == 0.0


def test_a_copy_of_a_sibling_is_culled_as_its_near_duplicate_and_the_first_is_kept() -> None:
    copy = broken_png("copy_image", PROMPT, "1:1", "1K")
    verdicts = StandardCull()([("k~c1", _candidate(1)), ("k~c2", _candidate(2)), ("k~c3", copy)])
    assert [v.kept for v in verdicts] == [True, True, False]
    assert verdicts[2].reason is not None
    assert "near-duplicate of k~c1" in verdicts[2].reason


def test_a_slightly_changed_copy_is_still_a_near_duplicate() -> None:
    with Image.open(io.BytesIO(_candidate(1))) as opened:
        image = opened.convert("RGB").resize((900, 900))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=70)
    verdicts = StandardCull()([("a", _candidate(1)), ("b", out.getvalue())])
    assert [v.kept for v in verdicts] == [True, False]


def test_bytes_that_are_not_an_image_are_culled_without_raising() -> None:
    [truncated, garbage] = StandardCull()(
        [("a", _candidate(1)[:300]), ("b", b"<html>quota exceeded</html>")]
    )
    assert not truncated.kept
    assert not garbage.kept
    assert garbage.reason is not None
    assert garbage.reason.startswith("does not decode")
    assert truncated.reason is not None


def test_thresholds_decide_what_passes() -> None:
    small = broken_png("small_image", PROMPT, "1:1", "1K")
    loose = CullThresholds(min_width=32, min_height=32)
    assert StandardCull(loose)([("a", small)])[0].kept
    strict = CullThresholds(min_stddev=200.0)
    assert not StandardCull(strict)([("a", _candidate(1))])[0].kept
    # duplicate_distance 0: only an identical hash is a copy
    inspected = [("a", inspect_image(_candidate(1))), ("b", inspect_image(_candidate(1)))]
    assert [v.kept for v in cull_siblings(inspected, CullThresholds(duplicate_distance=0))] == [
        True,
        False,
    ]


def test_thresholds_from_a_header_refuse_unknown_names_and_bad_values() -> None:
    assert CullThresholds.from_mapping({"min_stddev": 3}).min_stddev == 3.0
    assert CullThresholds.from_mapping(None) == CullThresholds()
    with pytest.raises(ValueError, match="unknown threshold 'min_size'"):
        CullThresholds.from_mapping({"min_size": 3})
    with pytest.raises(ValueError, match="min_width"):
        CullThresholds.from_mapping({"min_width": -1})
    with pytest.raises(ValueError, match="min_stddev"):
        CullThresholds.from_mapping({"min_stddev": "high"})
    with pytest.raises(ValueError, match="expected an object"):
        CullThresholds.from_mapping([1])


def test_a_plugged_in_cull_is_loaded_by_import_path() -> None:
    cull = load_cull("bananabatch.core.twotier.cull:StandardCull", CullThresholds(min_width=9))
    assert isinstance(cull, StandardCull)
    assert cull.thresholds.min_width == 9
    assert isinstance(load_cull(None, CullThresholds()), StandardCull)
    with pytest.raises(ValueError, match=r"package\.module:factory"):
        load_cull("no-colon", CullThresholds())
