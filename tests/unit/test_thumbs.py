"""The collector's thumbnail path: same sizes as Pillow's own thumbnail, close to a fair
Lanczos resize, every input mode and format, EXIF orientation, and the decode estimate the
write pool budgets with."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageStat

from bananabatch.report.thumbs import decode_bytes, make_thumbnail, thumbnail_size


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _pillow_thumbnail_size(size: tuple[int, int], max_edge: int) -> tuple[int, int]:
    reference = Image.new("1", size)  # a bit per pixel; Pillow resizes it NEAREST
    reference.thumbnail((max_edge, max_edge))
    return reference.size


def _scene(size: tuple[int, int]) -> Image.Image:
    """Smooth gradients with some structure: a fair test of resampling quality."""
    ramp = Image.linear_gradient("L")
    return Image.merge(
        "RGB",
        (
            ramp.rotate(90).resize(size),
            ramp.resize(size),
            Image.effect_mandelbrot(size, (-2.0, -1.5, 1.0, 1.5), 60),
        ),
    )


def _psnr(a: Image.Image, b: Image.Image) -> float:
    rms = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).rms
    mse = sum(value * value for value in rms) / len(rms)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize(
    "size",
    [(1024, 1024), (1376, 768), (768, 1376), (2048, 512), (512, 4096), (257, 256), (300, 200)],
)
def test_png_jpeg_and_webp_give_the_same_size_as_pillows_thumbnail(
    fmt: str, size: tuple[int, int]
) -> None:
    thumb = _decode(make_thumbnail(_encode(_scene(size), fmt)))

    assert thumb.format == "JPEG"
    assert thumb.mode == "RGB"
    assert thumb.size == _pillow_thumbnail_size(size, 256)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("size", [(1024, 1024), (1376, 768), (2048, 1152)])
def test_thumbnail_is_close_to_a_fair_lanczos_resize(fmt: str, size: tuple[int, int]) -> None:
    source = _scene(size)
    fair = source.copy()
    fair.thumbnail((256, 256), Image.Resampling.LANCZOS, reducing_gap=None)

    thumb = _decode(make_thumbnail(_encode(source, fmt, quality=95)))

    # JPEG quality 80 alone costs about 35-40 dB on such content.
    assert _psnr(thumb, fair) > 30


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"])
def test_every_png_mode_comes_out_rgb_at_the_thumbnail_size(mode: str) -> None:
    source = _scene((600, 400)).convert("RGBA" if mode in ("RGBA", "LA") else "RGB")
    image = source.convert(mode) if mode != "I;16" else source.convert("L").convert("I;16")

    thumb = _decode(make_thumbnail(_encode(image, "PNG")))

    assert thumb.mode == "RGB"
    assert thumb.size == (256, 171)


def test_cmyk_jpeg_comes_out_rgb() -> None:
    source = _scene((800, 600)).convert("CMYK")

    thumb = _decode(make_thumbnail(_encode(source, "JPEG")))

    assert thumb.mode == "RGB"
    assert thumb.size == (256, 192)


def test_transparent_pixels_do_not_darken_the_area_average() -> None:
    # One opaque red column in four, the rest transparent *black*: each thumbnail pixel
    # covers a quarter red. Averaged with alpha premultiplied, that is red at 25 % over the
    # white matte, R about 246; averaged naively, the black would drag R down to about 205.
    source = Image.new("RGBA", (1024, 1024), (0, 0, 0, 0))
    for x in range(0, 1024, 4):
        source.paste((220, 20, 20, 255), (x, 0, x + 1, 1024))

    thumb = _decode(make_thumbnail(_encode(source, "PNG")))

    pixel = thumb.getpixel((128, 128))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 235
    assert 180 < pixel[1] < 215


def test_exif_orientation_is_applied() -> None:
    landscape = _scene((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(landscape, "JPEG", exif=exif.tobytes())

    thumb = _decode(make_thumbnail(data))

    assert thumb.size == (128, 256)


def test_an_image_that_fits_is_not_resized() -> None:
    thumb = _decode(make_thumbnail(_encode(_scene((256, 100)), "PNG")))

    assert thumb.size == (256, 100)


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 3000), height=st.integers(1, 3000), max_edge=st.integers(1, 400))
def test_thumbnail_size_rounds_as_pillow_does(width: int, height: int, max_edge: int) -> None:
    fits = width <= max_edge and height <= max_edge
    expected = None if fits else _pillow_thumbnail_size((width, height), max_edge)

    assert thumbnail_size((width, height), max_edge) == expected


def test_decode_bytes_counts_four_bytes_per_pixel() -> None:
    assert decode_bytes(_encode(Image.new("RGB", (1000, 500)), "PNG")) == 1000 * 500 * 4


def test_decode_bytes_counts_a_large_jpeg_at_its_reduced_decode_scale() -> None:
    data = _encode(_scene((2048, 2048)), "JPEG")

    # draft decodes at 1/8 scale, 256x256, the scale make_thumbnail uses.
    assert decode_bytes(data) == 256 * 256 * 4


def test_decode_bytes_of_undecodable_bytes_is_zero() -> None:
    assert decode_bytes(b"definitely not an image") == 0


# --- PNGs decoded by libspng -------------------------------------------------------------


def _pillow_only(data: bytes, monkeypatch: pytest.MonkeyPatch) -> bytes:
    from bananabatch.report import thumbs

    with monkeypatch.context() as patched:
        patched.setattr(thumbs, "_libspng", lambda: None)
        return make_thumbnail(data)


def _noisy(mode: str, size: tuple[int, int]) -> Image.Image:
    image = _scene(size).convert(mode)
    noise = Image.effect_noise(size, 40).convert(mode)
    return ImageChops.add(image, noise, scale=1.3)


@pytest.mark.parametrize("interlace", [0, 1])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
@pytest.mark.parametrize("size", [(1024, 1024), (1376, 768), (300, 200), (200, 100)])
def test_a_plain_png_gets_the_very_thumbnail_pillow_makes_of_it(
    mode: str, size: tuple[int, int], interlace: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bananabatch.report import thumbs

    assert thumbs.png_decoder() == "libspng", "pyspng is a dependency: the fast path is there"
    data = _encode(_noisy(mode, size), "PNG", compress_level=1, interlace=interlace)
    taken: list[bool] = []
    real = thumbs._decode_png_fast

    def spy(source: Any, image: bytes) -> Any:
        decoded = real(source, image)
        taken.append(decoded is not None)
        return decoded

    monkeypatch.setattr(thumbs, "_decode_png_fast", spy)
    fast = make_thumbnail(data)
    assert taken == [True], "an 8-bit PNG without transparency or EXIF is decoded by libspng"
    assert fast == _pillow_only(data, monkeypatch)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: _encode(Image.new("I;16", (300, 200), 40000), "PNG"), id="16-bit"),
        pytest.param(lambda: _encode(Image.new("P", (300, 200), 3), "PNG"), id="palette"),
        pytest.param(
            lambda: _encode(Image.new("RGB", (300, 200), (9, 9, 9)), "PNG", transparency=(9, 9, 9)),
            id="tRNS",
        ),
        pytest.param(
            lambda: _encode(_noisy("RGB", (300, 200)), "PNG", exif=_exif(6)), id="EXIF rotated"
        ),
        pytest.param(lambda: _encode(_noisy("LA", (300, 200)), "PNG"), id="grey+alpha"),
    ],
)
def test_other_pngs_are_decoded_by_pillow_alone(make: object) -> None:
    from bananabatch.report import thumbs

    data = make()  # type: ignore[operator]
    with Image.open(io.BytesIO(data)) as source:
        assert thumbs._decode_png_fast(source, data) is None
    assert make_thumbnail(data)  # and Pillow makes its thumbnail


def test_an_exif_rotated_png_is_still_turned_upright() -> None:
    data = _encode(_noisy("RGB", (300, 200)), "PNG", exif=_exif(6))
    assert _decode(make_thumbnail(data)).size == (171, 256)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("cut", [40, 200, 2_000])
def test_a_truncated_png_fails_as_before_whichever_decoder_tried(cut: int) -> None:
    from bananabatch.errors import PermanentError

    data = _encode(_noisy("RGB", (300, 200)), "PNG", compress_level=1)
    with pytest.raises(PermanentError, match="not a decodable image"):
        make_thumbnail(data[:cut])


def test_a_corrupt_png_body_gives_pillows_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from bananabatch.errors import PermanentError

    data = bytearray(_encode(_noisy("RGB", (300, 200)), "PNG", compress_level=1))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 60] = bytes(50)  # zeroed compressed bytes
    try:
        expected: bytes | type[Exception] = _pillow_only(bytes(data), monkeypatch)
    except PermanentError:
        expected = PermanentError
    if expected is PermanentError:
        with pytest.raises(PermanentError):
            make_thumbnail(bytes(data))
    else:
        assert make_thumbnail(bytes(data)) == expected
