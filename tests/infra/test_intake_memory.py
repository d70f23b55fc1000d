"""The upload function's memory holds intake's dedup budget with margin."""

from __future__ import annotations

import bananabatch.config as cfg
from bananabatch_infra.pipeline import UPLOAD

MIB = 1024 * 1024
# Intake's peak RSS apart from its dedup tables, measured (benchmarks/intake.py at 5M lines
# and 1M lines, peak RSS less the tables' bytes): ~110 MB of interpreter, libraries and
# buffers; read as 192 MiB to leave room for a line of a megabyte and the store's clients.
INTAKE_WITHOUT_TABLES = 192 * MIB


def _bytes(memory: str) -> int:
    units = {"Mi": MIB, "Gi": 1024 * MIB}
    return int(memory[:-2]) * units[memory[-2:]]


def test_the_upload_function_holds_the_default_dedup_budget_with_margin() -> None:
    memory = _bytes(UPLOAD.memory)
    # Every phase of intake (in-memory tables, or the spill's counting pass and its read
    # pass) keeps its tables within the budget (tests/unit/test_intake_dedup.py).
    needed = INTAKE_WITHOUT_TABLES + cfg.DEFAULT_INTAKE_DEDUP_BYTES
    assert needed <= 0.6 * memory, (needed / MIB, memory / MIB)
