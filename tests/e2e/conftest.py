"""The two stacks every end-to-end scenario that takes `stack` runs on: local stand-ins and
emulated Google Cloud (the `gcp` param carries the `gcp` mark)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stacks import STACKS, Stack, StackKind, open_stack


@pytest.fixture(params=STACKS)
def kind(request: pytest.FixtureRequest) -> StackKind:
    kind: StackKind = request.param
    return kind


@pytest.fixture
def stack(request: pytest.FixtureRequest, kind: StackKind, tmp_path: Path) -> Iterator[Stack]:
    with open_stack(request, kind, tmp_path) as opened:
        yield opened
