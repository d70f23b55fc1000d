"""Small JPEG thumbnails for the gallery. Pure: bytes in, bytes out.

A 4K PNG from the model is tens of megabytes; a contact sheet of thousands of them must
load thumbnails of a few kilobytes instead.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError

from bananabatch.errors import PermanentError

THUMB_CONTENT_TYPE: Final = "image/jpeg"
THUMB_EXTENSION: Final = "jpg"
DEFAULT_MAX_EDGE: Final = 256
_QUALITY: Final = 80
# What transparent areas become: JPEG has no alpha, and the gallery's cards are light.
_MATTE: Final = (255, 255, 255)


def thumb_object_name(job_id: str, key: str) -> str:
    return f"jobs/{job_id}/thumbs/{key}.{THUMB_EXTENSION}"


def make_thumbnail(image: bytes, *, max_edge: int = DEFAULT_MAX_EDGE) -> bytes:
    """A JPEG whose longer edge is at most `max_edge`, same aspect ratio, never upscaled."""
    if max_edge < 1:
        raise ValueError(f"max_edge must be at least 1, got {max_edge}")
    try:
        with warnings.catch_warnings():
            # A bomb-sized image should fail like any undecodable one, not just warn.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as source:
                # JPEG only: decode at a reduced scale straight away, the big win for
                # large JPEG outputs; other formats ignore it.
                source.draft("RGB", (max_edge, max_edge))
                oriented = ImageOps.exif_transpose(source)
                rgb = _flatten(oriented)
                rgb.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS, reducing_gap=3.0)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PermanentError(f"cannot make a thumbnail: not a decodable image ({exc})") from exc
    except Image.DecompressionBombWarning as exc:
        raise PermanentError(f"cannot make a thumbnail: image too large ({exc})") from exc
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=_QUALITY, optimize=True)
    return out.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto the matte."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _MATTE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    # exif_transpose already returned a loaded copy, so this outlives the closed source.
    return image if image.mode == "RGB" else image.convert("RGB")
