"""Crash trials of `bananabatch local run`, from outside, as a user's Ctrl-C or kill -9 would.

    .venv/bin/python -m benchmarks.kill_trials [TRIALS] [SEED]

Each trial writes a 300-line file to a fresh root and runs `local run --provider gemini`
against an emulator living in this process (so what was paid survives the kills), kills
the run 1-3 times at random moments (SIGKILL twice as often as SIGINT), then runs it to its
end. It prints one line per trial and the totals: the final exit code, whether the re-run
said it resumed (owed when the file had reached the inbox before the kill), how many jobs
the file made, and every key the emulator accepted more than once (paid twice).
Not part of `make bench` or `make test`: it takes about a minute per trial.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from tempfile import mkdtemp

from bananabatch.cli import RESUMED_SAYS, demo_emulator_config
from bananabatch.emulator.server import EmulatorServer

LINES = 300
BIN = str(Path(sys.executable).with_name("bananabatch"))


def _run(
    root: Path, file: Path, base_url: str, kill_after: float | None, sig: int
) -> tuple[int, str]:
    env = {
        **os.environ,
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_API_KEY": "local-emulator-key",
        "BANANABATCH_BACKEND": "local",
    }
    command = [BIN, "local", "run", str(file), "--yes", "--root", str(root), "--provider", "gemini"]
    proc = subprocess.Popen(
        [*command, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=root.parent,
    )
    if kill_after is not None:
        try:
            _, err = proc.communicate(timeout=kill_after)
            return proc.returncode, err.decode()
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
            return -sig, err.decode()
    out, err = proc.communicate(timeout=900)
    return proc.returncode, err.decode() + out.decode()[-400:]


def said_resumed(output: str) -> bool:
    """Whether `local run` said it resumed an unfinished job (its words, from the CLI)."""
    return f"({RESUMED_SAYS}" in output


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rng = random.Random(seed)
    base = Path(mkdtemp(prefix="bananabatch-kill-trials-"))
    totals = {
        "trials": 0,
        "kills": 0,
        "ok": 0,
        "resumed_said": 0,
        "resume_owed": 0,
        "paid_twice": 0,
        "lines": 0,
        "extra_jobs": 0,
    }
    for trial in range(trials):
        with EmulatorServer(demo_emulator_config()) as emu:
            root = base / f"t{seed}-{trial}" / ".bananabatch"
            root.parent.mkdir(parents=True, exist_ok=True)
            file = root.parent / f"tiles{trial}.jsonl"
            file.write_text(
                "".join(
                    json.dumps({"key": f"k{n:03d}", "prompt": f"trial {seed}-{trial} tile {n}"})
                    + "\n"
                    for n in range(LINES)
                )
            )
            kills = []
            for _ in range(rng.randint(1, 3)):
                sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGINT])
                after = rng.uniform(0.5, 12.0)
                rc, _ = _run(root, file, emu.base_url, after, sig)
                kills.append((sig.name, round(after, 1), rc))
                totals["kills"] += rc < 0
            had_upload = (root / "buckets" / "inbox" / file.name).exists()
            rc, out = _run(root, file, emu.base_url, None, 0)
            said = said_resumed(out)
            jobs = sorted(p.name for p in (root / "buckets" / "results" / "jobs").glob("*"))
            counts = emu.state.submitted_keys("")
            twice = sorted(str(k) for k, n in counts.items() if n > 1)
            totals["trials"] += 1
            totals["ok"] += rc == 0
            totals["resumed_said"] += said
            totals["resume_owed"] += had_upload
            totals["paid_twice"] += len(twice)
            totals["lines"] += LINES
            totals["extra_jobs"] += max(0, len(jobs) - 1)
            line = {
                "trial": trial,
                "kills": kills,
                "final_rc": rc,
                "had_upload": had_upload,
                "resumed_said": said,
                "jobs": len(jobs),
                "accepted_keys": len(counts),
                "accepted_total": sum(counts.values()),
                "paid_twice": twice[:5],
            }
            print(json.dumps(line), flush=True)
            if rc != 0:
                print(out[-3000:], flush=True)
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
