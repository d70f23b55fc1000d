"""Placeholder images: a gradient with the prompt written on it, at the catalog's pixel size.

Cheap on purpose (a demo renders a dozen images, benchmarks thousands): the gradient is a
256-step ramp resized, PNG is written at compression level 1. Deterministic for a given
(prompt, ratio, size), so tests can compare bytes.
"""

from __future__ import annotations

import io
import random
import textwrap
import zlib
from collections.abc import Callable
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from bananabatch.core.catalog import image_dimensions


def _palette(prompt: str) -> tuple[int, int, int]:
    seed = zlib.crc32(prompt.encode("utf-8"))
    return (seed & 0xFF, (seed >> 8) & 0xFF, (seed >> 16) & 0xFF)


def _wrap(prompt: str, width_px: int, font_px: int) -> str:
    # The default font's glyphs average a little over half the font size in width.
    columns = max(8, int(width_px * 0.9 / (font_px * 0.55)))
    lines = textwrap.wrap(prompt, width=columns, max_lines=8, placeholder=" …") or [""]
    return "\n".join(lines)


# Small cache: a job that repeats a prompt renders it once; 4K images are a few hundred KB.
@lru_cache(maxsize=16)
def render_png(prompt: str, aspect_ratio: str | None, image_size: str | None) -> bytes:
    """A PNG of the catalog's size for this ratio and tier, with the prompt on it."""
    width, height = image_dimensions(aspect_ratio, image_size)
    ramp = Image.linear_gradient("L")
    horizontal = ramp.rotate(90).resize((width, height))
    vertical = ramp.resize((width, height))
    red, green, blue = _palette(prompt)
    image = Image.merge(
        "RGB",
        (
            horizontal.point(lambda v: (v + red) // 2),
            vertical.point(lambda v: (v + green) // 2),
            Image.new("L", (width, height), blue // 2 + 64),
        ),
    )
    font_px = max(10, min(width, height) // 18)
    font = ImageFont.load_default(size=font_px)
    draw = ImageDraw.Draw(image)
    margin = max(4, min(width, height) // 24)
    caption = f"{aspect_ratio or '1:1'} · {image_size or '1K'} · {width}x{height}"
    draw.multiline_text(
        (margin, margin),
        _wrap(prompt, width - 2 * margin, font_px) + "\n" + caption,
        font=font,
        fill=(255, 255, 255),
        stroke_width=max(1, font_px // 16),
        stroke_fill=(0, 0, 0),
    )
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


# A private ancillary chunk type (lowercase first letter: decoders skip it), so a padded
# image still decodes to the same pixels.
_PAD_CHUNK = b"paDd"


def pad_png(png: bytes, target_bytes: int) -> bytes:
    """The PNG grown to about target_bytes with one chunk of random (incompressible) bytes
    inserted before IEND; unchanged when it is already that big. Benchmarks use this to
    produce result files of realistic size without rendering large images."""
    overhead = 12  # length, type and CRC of the inserted chunk
    missing = target_bytes - len(png) - overhead
    if missing <= 0:
        return png
    iend = png.rindex(b"IEND") - 4  # the IEND chunk starts at its length field
    payload = _noise(missing)
    chunk = (
        len(payload).to_bytes(4, "big")
        + _PAD_CHUNK
        + payload
        + zlib.crc32(_PAD_CHUNK + payload).to_bytes(4, "big")
    )
    return png[:iend] + chunk + png[iend:]


def _noise(size: int) -> bytes:
    # Seeded, so a padded image is as deterministic as an unpadded one.
    return random.Random(size).randbytes(size)


def padded_renderer(target_bytes: int) -> Callable[[str, str | None, str | None], bytes]:
    """A renderer whose images are padded to target_bytes. One image per (ratio, size) is
    rendered and padded, then reused for every prompt: a 1 GB result file is then written at
    disk speed instead of being dominated by rendering."""

    @lru_cache(maxsize=8)
    def render(_prompt: str, aspect_ratio: str | None, image_size: str | None) -> bytes:
        return pad_png(render_png("padded", aspect_ratio, image_size), target_bytes)

    return render
