"""`make bench`: every benchmark at full size, each printing its figures and its ratio.

`python -m benchmarks collect intake overhead` picks benchmarks by name. Sizes are chosen
to finish in a few minutes on 2 cores.
"""

from __future__ import annotations

import logging
import sys
import time

from benchmarks import collect, intake, overhead

BENCHMARKS = {
    "collect": lambda: collect.run(lines=500, image_bytes=1_500_000),
    "intake": lambda: intake.run(lines=1_000_000),
    "overhead": lambda: overhead.run(lines=200),
}


def main(argv: list[str]) -> None:
    # The pipeline logs one JSON line per step; at benchmark sizes that drowns the figures.
    logging.disable(logging.WARNING)
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    for name in names:
        started = time.perf_counter()
        BENCHMARKS[name]()
        print(f"  ({name}: {time.perf_counter() - started:.0f} s wall)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
