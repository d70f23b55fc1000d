"""`make bench`: every benchmark at full size, each printing its figures and its ratio.

`python -m benchmarks collect intake overhead e2e_script thumbs` picks benchmarks by name.
Sizes are chosen to finish in a few minutes on 2 cores, except e2e_script's 50,000 prompts
(most of an hour, and about 9 GB of RAM for the user's script):
`python -m benchmarks.e2e_script --prompts 1000,10000` runs chosen sizes of that one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from benchmarks import collect, e2e_script, intake, overhead, thumbs

BENCHMARKS: dict[str, Callable[[], object]] = {
    "collect": lambda: collect.run(),
    "intake": lambda: intake.run(lines=1_000_000),
    "overhead": lambda: overhead.run(lines=200),
    "e2e_script": lambda: e2e_script.run(prompts=(1_000, 10_000, 50_000)),
    "thumbs": lambda: thumbs.run(),
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
