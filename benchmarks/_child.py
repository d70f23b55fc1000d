"""Run one benchmark variant in its own process, so its peak RSS is its own.

`python -m benchmarks._child module:function '{"kwarg": ...}'` calls the function and prints
one JSON line: what the function returned plus `peak_rss_mb` (VmHWM, the resident high-water
mark of this process alone).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MARK = "BENCH-RESULT "
_ROOT = str(Path(__file__).resolve().parent.parent)


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    # Not Linux: ru_maxrss is in kilobytes on Linux, bytes on macOS; close enough to fall
    # back on.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(target: str, **kwargs: Any) -> dict[str, Any]:
    """Run `module:function(**kwargs)` in a fresh interpreter; its result plus peak RSS."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._child", target, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        check=False,
        # The benchmarks package must import whatever the caller's working directory.
        env=os.environ
        | {"PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{target} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK) :])
            result.setdefault("process_seconds", time.perf_counter() - started)
            return result
    raise RuntimeError(f"{target} printed no result:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def main(argv: list[str]) -> None:
    target, raw = argv
    # Per-step JSON logs would only cost time here; the result line is what counts.
    logging.disable(logging.WARNING)
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = dict(function(**json.loads(raw)))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["minor_faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
