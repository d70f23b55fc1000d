"""Small JPEG thumbnails for the gallery. Pure: bytes in, bytes out.

A 4K PNG from the model is tens of megabytes; a contact sheet of thousands of them must
load thumbnails of a few kilobytes instead.

The collector makes one per image, so the path is kept cheap (profiled, see README; for
a 1024x1024 PNG it went from about 12 ms to 4.5 ms, most of what is left being the decode):
- JPEG is decoded straight at a reduced scale (`draft`, DCT scaling), at the thumbnail's
  size or up to twice it; PNG and WebP have no such shortcut and are decoded whole;
- the image is oriented in place (no copy of the full-size pixels when, as usual, there is
  no EXIF orientation);
- the shrink is an area average over the largest whole factor (`reduce`, alpha
  premultiplied), then Lanczos over the remaining factor below 2, on the already small
  image. A Lanczos over the full-size pixels (the previous path) cost 8 ms at 1024 px; the
  result differs from it by about as much as JPEG quality 80 itself changes the thumbnail
  (34-37 dB PSNR against 35-38 dB), which no one sees on a contact sheet;
- transparency is flattened on the small image, not the full-size one.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Callable
from typing import Any, Final

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from bananabatch.errors import PermanentError

THUMB_CONTENT_TYPE: Final = "image/jpeg"
THUMB_EXTENSION: Final = "jpg"
DEFAULT_MAX_EDGE: Final = 256
_QUALITY: Final = 80
# What transparent areas become: JPEG has no alpha, and the gallery's cards are light.
_MATTE: Final = (255, 255, 255)
# Modes resized as they are (Pillow premultiplies alpha for RGBA and LA); anything else
# (palette, 1-bit, CMYK, 16-bit...) is converted first.
_RESIZABLE: Final = frozenset({"RGB", "RGBA", "L", "LA"})


def thumb_object_name(job_id: str, key: str) -> str:
    return f"jobs/{job_id}/thumbs/{key}.{THUMB_EXTENSION}"


def make_thumbnail(image: bytes, *, max_edge: int = DEFAULT_MAX_EDGE) -> bytes:
    """A JPEG whose longer edge is at most `max_edge`, same aspect ratio, never upscaled."""
    if max_edge < 1:
        raise ValueError(f"max_edge must be at least 1, got {max_edge}")
    out = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # A bomb-sized image should fail like any undecodable one, not just warn.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as source:
                # JPEG only: decode at a reduced scale straight away, the big win for
                # large JPEG outputs; other formats ignore it.
                source.draft("RGB", (max_edge, max_edge))
                fast = _decode_png_fast(source, image)
                if fast is not None:
                    small = _shrink(fast, max_edge)
                else:
                    ImageOps.exif_transpose(source, in_place=True)
                    small = _shrink(_resizable(source), max_edge)
                # Inside the `with`: closing the source releases its pixels, which `small`
                # may share.
                _flatten(small).save(out, format="JPEG", quality=_QUALITY, optimize=True)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PermanentError(f"cannot make a thumbnail: not a decodable image ({exc})") from exc
    except Image.DecompressionBombWarning as exc:
        raise PermanentError(f"cannot make a thumbnail: image too large ({exc})") from exc
    return out.getvalue()


# IHDR colour types libspng decodes to a Pillow mode as they are (8 bits a sample); it
# has no grey-with-alpha output.
_SPNG_MODES: Final = {0: "L", 2: "RGB", 6: "RGBA"}
_EXIF_CHUNK: Final = b"eXIf"


@functools.cache
def _libspng() -> Any:
    """pyspng, imported on the first PNG (it brings numpy: 0.1-0.3 s that the CLI and a
    function's cold start need not pay before any thumbnail), or None without it."""
    try:
        import pyspng  # type: ignore[import-untyped]
    except ImportError:  # a dependency; without it Pillow decodes every PNG
        return None
    return pyspng


def _decode_png_fast(source: ImageFile.ImageFile, image: bytes) -> Image.Image | None:
    """The pixels of a plain 8-bit PNG decoded by libspng (pyspng), or None to let Pillow
    decode it. Pillow's PNG decode is most of a thumbnail's cost (4.4 ms of 6.4 for the
    benchmark's 1024x1024 images, and as much with no compression at all: its unfiltering
    and unpacking, not zlib); libspng's takes 1.2 ms. Only what needs nothing Pillow does
    on the way is taken: 8 bits a sample, grey, RGB or RGBA, no tRNS
    transparency, no EXIF. Anything libspng refuses (a truncated or corrupt file) goes to
    Pillow, whose error is the one reported. Pillow has already read the header, so the
    decompression-bomb check has passed."""
    if source.format != "PNG" or len(image) < 33 or (spng := _libspng()) is None:
        return None
    # IHDR is the first chunk: width, height, bit depth (byte 24), colour type (25),
    # interlace (28).
    mode = _SPNG_MODES.get(image[25])
    if mode is None or mode != source.mode or image[24] != 8 or "transparency" in source.info:
        return None
    if _EXIF_CHUNK in image:
        # Maybe an orientation to apply; Pillow reads it (a false match, the four bytes
        # inside compressed data, only costs the slower decode). Not getexif() here: for a
        # PNG it decodes the whole image first, looking for an eXIf chunk after the data.
        return None
    try:
        pixels = spng.load(image, format=mode)
    except Exception:  # noqa: BLE001 - whatever libspng refuses, Pillow decides
        return None
    if pixels.shape[:2] != (source.height, source.width):
        return None
    return Image.frombuffer(mode, source.size, pixels, "raw", mode, 0, 1)


def png_decoder() -> str:
    """Which library decodes plain PNGs for thumbnails here."""
    return "Pillow" if _libspng() is None else "libspng"


def decode_bytes(image: bytes, *, max_edge: int = DEFAULT_MAX_EDGE) -> int:
    """About how many bytes of pixels make_thumbnail decodes for this image (Pillow keeps 4
    bytes per pixel for RGB and RGBA), read from the header alone; 0 when the header is not
    an image's, since make_thumbnail then fails before decoding anything."""
    try:
        with warnings.catch_warnings():
            # The same filter as make_thumbnail's: catch_warnings swaps process-wide state,
            # so threads doing both at once must not disagree about it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as source:
                # The same scale as make_thumbnail picks for a JPEG; a no-op otherwise.
                source.draft("RGB", (max_edge, max_edge))
                width, height = source.size
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        return 0
    return width * height * 4


def thumbnail_size(size: tuple[int, int], max_edge: int) -> tuple[int, int] | None:
    """The size Image.thumbnail((max_edge, max_edge)) gives an image of `size` (its
    aspect-preserving rounding, at least 1 pixel), or None when it already fits."""
    width, height = size
    if max_edge >= width and max_edge >= height:
        return None
    # Pillow's own rounding (Image.thumbnail), so sizes match what it would make.
    aspect = width / height
    if aspect <= 1:
        return _round_aspect(max_edge * aspect, lambda n: abs(aspect - n / max_edge)), max_edge
    return max_edge, _round_aspect(
        max_edge / aspect, lambda n: 0 if n == 0 else abs(aspect - max_edge / n)
    )


def _round_aspect(number: float, error: Callable[[int], float]) -> int:
    return max(min(math.floor(number), math.ceil(number), key=error), 1)


def _shrink(image: Image.Image, max_edge: int) -> Image.Image:
    """The image fitted into max_edge: first an area average over the largest whole factor
    (`reduce`, a few times cheaper than any filter over the full-size pixels), then Lanczos
    over what remains, less than a factor of 2, on the already small image."""
    target = thumbnail_size(image.size, max_edge)
    if target is None:
        return image
    factor = min(image.width // target[0], image.height // target[1])
    small = image.reduce(factor) if factor > 1 else image
    if small.size != target:
        small = small.resize(target, Image.Resampling.LANCZOS)
    return small


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )


def _resizable(image: Image.Image) -> Image.Image:
    if image.mode in _RESIZABLE:
        return image
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _flatten(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto the matte."""
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _MATTE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")
