"""Placeholder images at an exact pixel size, in PNG, JPEG or WebP: the gradient-and-caption
picture of the Gemini emulator (emulator/render.py), drawn at OpenAI's `WxH` instead of a
ratio and tier. Deterministic for a given (prompt, size, format), so tests compare bytes."""

from __future__ import annotations

import io
import zlib
from functools import lru_cache
from typing import Final

from PIL import Image, ImageDraw, ImageFont

FORMATS: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MIME_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@lru_cache(maxsize=16)
def render(prompt: str, width: int, height: int, output_format: str = "png") -> bytes:
    seed = zlib.crc32(prompt.encode("utf-8"))
    ramp = Image.linear_gradient("L")
    image = Image.merge(
        "RGB",
        (
            ramp.rotate(90).resize((width, height)).point(lambda v: (v + (seed & 0xFF)) // 2),
            ramp.resize((width, height)).point(lambda v: (v + ((seed >> 8) & 0xFF)) // 2),
            Image.new("L", (width, height), ((seed >> 16) & 0xFF) // 2 + 64),
        ),
    )
    font_px = max(10, min(width, height) // 18)
    margin = max(4, min(width, height) // 24)
    caption = f"{prompt[:60]}\n{width}x{height} {output_format}"
    ImageDraw.Draw(image).multiline_text(
        (margin, margin),
        caption,
        font=ImageFont.load_default(size=font_px),
        fill=(255, 255, 255),
        stroke_width=max(1, font_px // 16),
        stroke_fill=(0, 0, 0),
    )
    out = io.BytesIO()
    kind = FORMATS[output_format]
    if kind == "PNG":
        image.save(out, format=kind, compress_level=1)
    else:
        image.save(out, format=kind, quality=80)
    return out.getvalue()
