"""The local stack a CLI test runs against: a zero-delay Gemini emulator on a manual clock and
the environment that points the CLI at it (and at a state folder of the test's own)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from bananabatch import config
from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock


@contextmanager
def local_cli_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: Mapping[str, str] | None = None
) -> Iterator[Path]:
    """The state folder of a local stack whose emulator runs for the block; the working
    directory is tmp_path."""
    emulator_config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(emulator_config) as emulator:
        root = point_cli_at(tmp_path, monkeypatch, emulator.base_url)
        for name, value in (extra or {}).items():
            monkeypatch.setenv(name, value)
        yield root


def point_cli_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_url: str) -> Path:
    """The environment a CLI test runs in: the local backend, a state folder under tmp_path
    (returned), the emulator at emulator_url; the working directory is tmp_path."""
    root = tmp_path / "state"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(config.ENV_BACKEND, "local")
    monkeypatch.setenv(config.ENV_LOCAL_ROOT, str(root))
    monkeypatch.setenv(config.ENV_GEMINI_BASE_URL, emulator_url)
    monkeypatch.setenv(config.ENV_GEMINI_API_KEY, "test-key")
    return root
