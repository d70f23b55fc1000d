"""Infra tests run the Pulumi program against in-memory mocks: no CLI, no cloud, no network.

The mocks are installed once per process (the Pulumi runtime is process-global) before any
program code runs; each test then builds its own Pipeline through `harness.deploy`.
"""

from __future__ import annotations

import sys
from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))

from tests.infra import harness  # noqa: E402  (needs infra/ on the path)

harness.install_mocks()
