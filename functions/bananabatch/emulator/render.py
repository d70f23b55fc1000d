"""Placeholder images: a gradient with the prompt written on it, at the catalog's pixel size.

Cheap on purpose (a demo renders a dozen images, benchmarks thousands): the gradient is a
256-step ramp resized, PNG is written at compression level 1. Deterministic for a given
(prompt, ratio, size), so tests can compare bytes. Benchmarks ask for images of a given
byte size (padded_renderer): those get noise in their pixels, so they are as slow to
decode as real images of that size.
"""

from __future__ import annotations

import io
import random
import textwrap
import zlib
from collections.abc import Callable
from functools import lru_cache

from PIL import Image, ImageChops, ImageDraw, ImageFont

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


# How many distinct noisy images a padded renderer makes per (ratio, size): each costs a
# PNG encode of realistic size (about 0.1 s at 1K), too slow to repeat for each of the
# thousands of rows of a benchmark file, while 16 already defeat any cache between one
# decode and the next.
_VARIANTS = 16
# Noise strength, 0 (the bare gradient) to _MAX_STRENGTH: up to _SPARSE a channel value is
# raised by 1 with probability strength/256 (up to 1 bit of entropy per byte: even 1-bit
# noise makes a small image's PNG bigger than many targets), beyond it the noise is
# uniform over strength - _SPARSE + 2 levels (3 to 255).
_SPARSE = 128
_MAX_STRENGTH = _SPARSE + 253


def _noise_table(strength: int) -> tuple[bytes, int]:
    """The byte translation turning uniform random bytes into noise of this strength, and
    the offset that centres it."""
    if strength <= _SPARSE:
        return bytes(1 if v < strength else 0 for v in range(256)), 0
    levels = strength - _SPARSE + 2
    # A byte maps to [0, levels) by its high bits: uniform.
    return bytes((v * levels) >> 8 for v in range(256)), -(levels // 2)


def noisy_png(base: bytes, strength: int, seed: int) -> bytes:
    """base's pixels with seeded noise of `strength` added to every channel, as a PNG at
    render_png's compression. Noise is what makes a real image's pixel data large and slow
    to decode (an ancillary chunk of padding is skipped by decoders); the gradient
    underneath still shows through."""
    with Image.open(io.BytesIO(base)) as opened:
        image = opened.convert("RGB")
    if strength > 0:
        table, offset = _noise_table(strength)
        noise = random.Random(seed).randbytes(image.width * image.height * 3).translate(table)
        image = ImageChops.add(image, Image.frombytes("RGB", image.size, noise), offset=offset)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _strength_for(base: bytes, target_bytes: int) -> int:
    """The strongest noise whose PNG is at most target_bytes (the PNG grows with the
    strength), found by bisection; 0 when even the bare image is too big."""
    low, high = 0, _MAX_STRENGTH
    while low < high:
        middle = (low + high + 1) // 2
        if len(noisy_png(base, middle, seed=0)) <= target_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def padded_renderer(target_bytes: int) -> Callable[[str, str | None, str | None], bytes]:
    """A renderer of images of target_bytes whose pixel data is most of that size, so they
    cost what a real image of that size costs to decode: render_png's image with seeded
    noise mixed in (its strength found once per ratio and size), then padded to the exact
    size with pad_png. Deterministic per request: the prompt, ratio and size pick one of a
    few variants per ratio and size, each rendered once, so a 1 GB result file is written
    at about disk speed instead of being dominated by PNG encoding."""

    @lru_cache(maxsize=8)
    def strength(aspect_ratio: str | None, image_size: str | None) -> int:
        return _strength_for(render_png("padded", aspect_ratio, image_size), target_bytes)

    @lru_cache(maxsize=4 * _VARIANTS)
    def variant(number: int, aspect_ratio: str | None, image_size: str | None) -> bytes:
        base = render_png("padded", aspect_ratio, image_size)
        seed = zlib.crc32(f"{number}|{aspect_ratio}|{image_size}".encode())
        noisy = noisy_png(base, strength(aspect_ratio, image_size), seed)
        return pad_png(noisy, target_bytes)

    def render(prompt: str, aspect_ratio: str | None, image_size: str | None) -> bytes:
        number = zlib.crc32(f"{prompt}|{aspect_ratio}|{image_size}".encode()) % _VARIANTS
        return variant(number, aspect_ratio, image_size)

    return render


# --- candidates and broken images (two-tier jobs, issue 21) ------------------------------


@lru_cache(maxsize=64)
def vary_png(png: bytes, seed: int) -> bytes:
    """png with a few seed-placed shapes drawn over it: what a request with
    `generationConfig.seed` gets, so the candidates of one prompt differ as a real model's
    do (in structure, not only colour: the cull's difference hash must tell them apart).
    Deterministic per (image, seed)."""
    rng = random.Random(seed * 7919 + 17)
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        w = rng.randrange(width // 6, width // 2 + 1)
        h = rng.randrange(height // 6, height // 2 + 1)
        shade = rng.randrange(256)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape(
            (x0 - w // 2, y0 - h // 2, x0 + w // 2, y0 + h // 2),
            fill=(shade, 255 - shade, shade // 2),
        )
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


BROKEN_KINDS = ("blank_image", "uniform_image", "copy_image", "small_image")


def broken_png(
    kind: str,
    prompt: str,
    aspect_ratio: str | None,
    image_size: str | None,
    render: Callable[[str, str | None, str | None], bytes] = render_png,
) -> bytes:
    """The broken image a row fault asks for (faults.RowFaultKind)."""
    width, height = image_dimensions(aspect_ratio, image_size)
    out = io.BytesIO()
    if kind == "blank_image":
        Image.new("RGB", (width, height), (255, 255, 255)).save(out, format="PNG")
    elif kind == "uniform_image":
        _, green, _ = _palette(prompt)
        base = Image.new("RGB", (width, height), (128, green, 96))
        noise = Image.frombytes(
            "RGB",
            (width, height),
            random.Random(width)
            .randbytes(width * height * 3)
            .translate(bytes(1 if v < 64 else 0 for v in range(256))),
        )
        ImageChops.add(base, noise).save(out, format="PNG", compress_level=1)
    elif kind == "copy_image":
        return vary_png(render(prompt, aspect_ratio, image_size), 1)
    elif kind == "small_image":
        with Image.open(io.BytesIO(render(prompt, aspect_ratio, image_size))) as opened:
            opened.convert("RGB").resize((64, 64)).save(out, format="PNG")
    else:
        raise ValueError(f"not a broken-image fault: {kind!r}")
    return out.getvalue()
