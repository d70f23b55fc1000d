"""Thumbnail CPU per image, libspng against Pillow alone, on the emulator's own images.

`make_thumbnail` (report/thumbs.py) on 1024x1024 PNGs as the emulator renders them for the
benchmarks (emulator/render.py, padded_renderer): 48 KB images (the end-to-end benchmark's,
mostly flat colour: decoding is unfiltering, not inflating) and 1.5 MB ones (the collector
benchmark's, noisy: decoding is mostly zlib inflate, as for a real model output of that
size). The two decoders alternate in paired rounds in one process; each figure is the
median [range] of the rounds of CPU milliseconds per thumbnail, beside the load.

    python -m benchmarks.thumbs --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

SIZES = (48_000, 1_500_000)
IMAGES = 8


def _cpu_ms(make: Callable[[bytes], bytes], images: list[bytes], repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        for image in images:
            make(image)
    return 1000 * (time.process_time() - started) / (repeat * len(images))


def run(rounds: int = 7, repeat: int = 5) -> dict[int, dict[str, Any]]:
    from bananabatch.emulator.render import padded_renderer
    from bananabatch.report import thumbs

    fast = thumbs.make_thumbnail
    libspng = vars(thumbs)["_libspng"]

    def pillow(image: bytes) -> bytes:
        # libspng hidden for this call: every PNG decoded by Pillow, as before.
        setattr(thumbs, "_libspng", lambda: None)  # noqa: B010
        try:
            return thumbs.make_thumbnail(image)
        finally:
            setattr(thumbs, "_libspng", libspng)  # noqa: B010

    print(f"\n== thumbnails: CPU ms per 1024x1024 PNG, PNG decoder here: {thumbs.png_decoder()} ==")
    found: dict[int, dict[str, Any]] = {}
    for size in SIZES:
        render = padded_renderer(size)
        images = [render(f"thumb bench {n}", None, None) for n in range(IMAGES)]
        assert all(fast(i) == pillow(i) for i in images), "the two decoders must agree"
        rows: list[tuple[float, float, float]] = []
        for n in range(rounds):
            load = os.getloadavg()[0]
            if n % 2 == 0:
                a, b = _cpu_ms(fast, images, repeat), _cpu_ms(pillow, images, repeat)
            else:
                b, a = _cpu_ms(pillow, images, repeat), _cpu_ms(fast, images, repeat)
            rows.append((a, b, load))

        def spread(values: list[float]) -> str:
            return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"

        libspng_ms = [r[0] for r in rows]
        pillow_ms = [r[1] for r in rows]
        ratio = [r[1] / r[0] for r in rows]
        print(
            f"  {size / 1000:,.0f} KB images: libspng {spread(libspng_ms)} ms, Pillow alone "
            f"{spread(pillow_ms)} ms, Pillow / libspng {spread(ratio)}x "
            f"(load {spread([r[2] for r in rows])})"
        )
        found[size] = {"libspng_ms": libspng_ms, "pillow_ms": pillow_ms, "ratio": ratio}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.thumbs")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    run(rounds=args.rounds)


if __name__ == "__main__":
    main()
