"""The cheap automatic cull of draft candidates (issue 21, two-tier jobs). Pure: bytes in,
verdicts out, over Pillow; no I/O.

Each candidate is held to four checks, cheapest first, and the first that fails is its
reason: it decodes; it meets the minimum size; it is not blank or near-uniform (the
standard deviation of its grey levels, on a small copy, is above a floor); it is not a
near-duplicate of an earlier surviving sibling (difference hash, Hamming distance). A
survivor's score is the entropy of its grey-level histogram (bits, 0 to 8): a flat or
washed-out image scores low, a detailed one high; selection takes the best scores.

The checks are pluggable: `Cull` is the Protocol the pipeline calls, `StandardCull` the
default built from `CullThresholds`; a deployment may name another by import path
(`load_cull`).
"""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Final, Protocol

from PIL import Image, ImageStat, UnidentifiedImageError

# Decoding a 4K PNG fully costs tens of milliseconds; the statistics need far less.
_STATS_EDGE: Final = 64
_HASH_SIDE: Final = 8  # a 64-bit difference hash
# The largest image decoded at all: beyond this it is not an image the models produce.
_MAX_PIXELS: Final = 64_000_000


@dataclass(frozen=True, slots=True)
class CullThresholds:
    """What a candidate must meet. Every figure can be set in the job's header line
    (`"cull": {...}`) or the deployment's settings."""

    # Smaller than this on either edge is culled (the Lite model's smallest 1K image,
    # 8:1, is 2048x256 or so; a thumbnail-sized answer is broken).
    min_width: int = 256
    min_height: int = 256
    # Standard deviation of grey levels (0-255) on a 64-pixel copy: blank or near-uniform
    # below it. A photograph is above 20; a flat fill with faint noise is below 2.
    min_stddev: float = 6.0
    # Difference hashes within this many bits (of 64) are near-duplicates.
    duplicate_distance: int = 6

    def __post_init__(self) -> None:
        for name in ("min_width", "min_height", "duplicate_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"cull threshold {name}: expected an integer >= 0; found {value!r}"
                )
        stddev = self.min_stddev
        if isinstance(stddev, bool) or not isinstance(stddev, int | float) or not stddev >= 0:
            raise ValueError(f"cull threshold min_stddev: expected a number >= 0; found {stddev!r}")
        if self.duplicate_distance > _HASH_SIDE * _HASH_SIDE:
            raise ValueError(
                "cull threshold duplicate_distance: expected at most 64; "
                f"found {self.duplicate_distance}"
            )

    @classmethod
    def from_mapping(cls, given: object, *, base: CullThresholds | None = None) -> CullThresholds:
        """Thresholds from a JSON object (unknown names refused, naming the known ones)."""
        base = base or cls()
        if given is None:
            return base
        if not isinstance(given, dict):
            raise ValueError(f'"cull": expected an object; found {given!r}')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(
                f'"cull": unknown threshold {unknown[0]!r}; '
                f"expected one of {', '.join(sorted(known))}"
            )
        values = dict(given)
        if isinstance(values.get("min_stddev"), int) and not isinstance(values["min_stddev"], bool):
            values["min_stddev"] = float(values["min_stddev"])
        return replace(base, **values)

    def to_doc(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Inspection:
    """What one image is: its size, grey-level spread, difference hash and score; or why it
    could not be read (`reason` set, the rest zero)."""

    width: int = 0
    height: int = 0
    stddev: float = 0.0
    dhash: int = 0
    score: float = 0.0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    key: str
    kept: bool
    score: float
    # Why it was culled ("blank or near-uniform: ...", "near-duplicate of K ..."); None if kept.
    reason: str | None = None
    width: int = 0
    height: int = 0

    def to_doc(self) -> dict[str, object]:
        return {
            "key": self.key,
            "kept": self.kept,
            "score": round(self.score, 4),
            "reason": self.reason,
            "width": self.width,
            "height": self.height,
        }


def inspect_image(data: bytes) -> Inspection:
    """Decode and measure one image; never raises for bad bytes."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > _MAX_PIXELS:
                return Inspection(
                    width, height, reason=f"too large to be an answer: {width}x{height}"
                )
            # JPEG decodes at a fraction of its size for free; others are reduced after.
            opened.draft("L", (_STATS_EDGE * 4, _STATS_EDGE * 4))
            grey = opened.convert("L")
            grey.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return Inspection(reason=f"does not decode as an image: {type(exc).__name__}")
    small = grey.resize((_STATS_EDGE, _STATS_EDGE), Image.Resampling.BILINEAR)
    stddev = ImageStat.Stat(small).stddev[0]
    return Inspection(width, height, stddev, difference_hash(grey), _entropy(small))


def difference_hash(grey: Image.Image) -> int:
    """A 64-bit difference hash: each bit says whether a pixel of a 9x8 copy is brighter
    than its right neighbour. Robust to scaling and small changes; cheap."""
    tiny = grey.resize((_HASH_SIDE + 1, _HASH_SIDE), Image.Resampling.BILINEAR)
    pixels = tiny.tobytes()
    bits = 0
    for row in range(_HASH_SIDE):
        base = row * (_HASH_SIDE + 1)
        for col in range(_HASH_SIDE):
            bits = (bits << 1) | (pixels[base + col] > pixels[base + col + 1])
    return bits


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _entropy(grey: Image.Image) -> float:
    histogram = grey.histogram()
    total = sum(histogram)
    return -sum((n / total) * math.log2(n / total) for n in histogram if n)


class Cull(Protocol):
    """Verdicts on one line's candidates, in the order given (earlier siblings win ties)."""

    def __call__(self, candidates: Sequence[tuple[str, bytes]]) -> list[Verdict]: ...


@dataclass(frozen=True, slots=True)
class StandardCull:
    thresholds: CullThresholds = CullThresholds()

    def __call__(self, candidates: Sequence[tuple[str, bytes]]) -> list[Verdict]:
        return cull_siblings(
            ((key, inspect_image(data)) for key, data in candidates), self.thresholds
        )


def cull_siblings(
    inspected: Iterable[tuple[str, Inspection]], thresholds: CullThresholds
) -> list[Verdict]:
    """The verdicts on one line's inspected candidates. A near-duplicate is judged against
    the survivors before it, so of two copies the first is kept."""
    verdicts: list[Verdict] = []
    kept: list[tuple[str, int]] = []
    t = thresholds
    for key, seen in inspected:
        reason = seen.reason
        if reason is None and (seen.width < t.min_width or seen.height < t.min_height):
            reason = f"too small: {seen.width}x{seen.height}, minimum {t.min_width}x{t.min_height}"
        if reason is None and seen.stddev < t.min_stddev:
            reason = (
                f"blank or near-uniform: grey-level spread {seen.stddev:.2f}, "
                f"minimum {t.min_stddev:g}"
            )
        if reason is None:
            for other, other_hash in kept:
                distance = hamming(seen.dhash, other_hash)
                if distance <= t.duplicate_distance:
                    reason = (
                        f"near-duplicate of {other} (hash distance {distance}, "
                        f"at most {t.duplicate_distance} counts as a copy)"
                    )
                    break
        if reason is None:
            kept.append((key, seen.dhash))
        verdicts.append(
            Verdict(
                key,
                kept=reason is None,
                score=seen.score if reason is None else 0.0,
                reason=reason,
                width=seen.width,
                height=seen.height,
            )
        )
    return verdicts


def load_cull(path: str | None, thresholds: CullThresholds) -> Cull:
    """The cull a deployment names (`package.module:factory`, the factory called with the
    thresholds), or the standard one."""
    if not path:
        return StandardCull(thresholds)
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"cull plug-in: expected 'package.module:factory'; found {path!r}")
    factory = getattr(importlib.import_module(module_name), attr)
    cull: Cull = factory(thresholds)
    return cull
