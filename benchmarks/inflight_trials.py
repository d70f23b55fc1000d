"""The same file submitted 3 times at once, from outside, with and without kill -9.

    .venv/bin/python -m benchmarks.inflight_trials [TRIALS] [SEED]

Each trial writes one 100-line file three times under three names (the same requests)
to a fresh root and starts three `local run --provider gemini` at once against an
emulator living in this process (so what was paid survives the kills). Trial 0 lets them
run; every later trial kills all three with SIGKILL at a random moment, then runs the
three again to their end. It prints per trial the exit codes, the rows the emulator
accepted over all jobs (what the owner pays: 100 when each line is paid once), and every
key accepted more than once (the same request paid twice). Run by hand; not part of
`make bench` or `make test`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from tempfile import mkdtemp

from bananabatch.cli import demo_emulator_config
from bananabatch.emulator.server import EmulatorServer

LINES = 100
COPIES = 3
BIN = str(Path(sys.executable).with_name("bananabatch"))


def _start(root: Path, file: Path, base_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_API_KEY": "local-emulator-key",
        "BANANABATCH_BACKEND": "local",
    }
    command = [BIN, "local", "run", str(file), "--yes", "--root", str(root), "--provider", "gemini"]
    return subprocess.Popen(
        [*command, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=root.parent,
    )


def _trial(base: Path, seed: int, trial: int, kill_after: float | None) -> dict[str, object]:
    with EmulatorServer(demo_emulator_config()) as emu:
        root = base / f"t{seed}-{trial}" / ".bananabatch"
        root.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(
            json.dumps({"key": f"k{n:03d}", "prompt": f"trial {seed}-{trial} tile {n}"}) + "\n"
            for n in range(LINES)
        )
        files = []
        for copy in range(COPIES):
            file = root.parent / f"same-{copy}.jsonl"
            file.write_text(text)
            files.append(file)
        killed = 0
        if kill_after is not None:
            procs = [_start(root, file, emu.base_url) for file in files]
            time.sleep(kill_after)
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed += 1
                proc.communicate(timeout=120)
        procs = [_start(root, file, emu.base_url) for file in files]
        codes = []
        tails = []
        for proc in procs:
            out, err = proc.communicate(timeout=1200)
            codes.append(proc.returncode)
            tails.append((err.decode() + out.decode())[-1500:])
        counts = emu.state.submitted_keys("")
        twice = sorted(str(k) for k, n in counts.items() if n > 1)
        line: dict[str, object] = {
            "trial": trial,
            "killed_after_s": kill_after,
            "killed": killed,
            "exit_codes": codes,
            "paid_rows": sum(counts.values()),
            "distinct_keys_paid": len(counts),
            "paid_twice": twice[:10],
        }
        if any(codes):
            line["tails"] = tails
        return line


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rng = random.Random(seed)
    base = Path(mkdtemp(prefix="bananabatch-inflight-trials-"))
    paid = twice = 0
    for trial in range(trials):
        kill_after = None if trial == 0 else round(rng.uniform(1.0, 10.0), 1)
        line = _trial(base, seed, trial, kill_after)
        paid += int(str(line["paid_rows"]))
        twice += len(line["paid_twice"])  # type: ignore[arg-type]
        print(json.dumps(line), flush=True)
    totals = {"trials": trials, "lines": trials * LINES, "paid_rows": paid, "twice": twice}
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
