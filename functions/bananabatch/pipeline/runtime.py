"""The wired-up world the pipeline runs in: settings plus one adapter per port."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bananabatch.config import Settings
from bananabatch.core.pricing import PriceBook
from bananabatch.pipeline.repo import Repo
from bananabatch.ports import BatchProvider, EventBus, ObjectStore, StateStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    objects: ObjectStore
    state: StateStore
    bus: EventBus
    provider: BatchProvider
    prices: PriceBook
    clock: Callable[[], datetime] = utcnow
    # Seconds for measuring how long an invocation has run (the collector's deadline);
    # tests swap it with `clock` so a deadline passes only when they move time.
    monotonic: Callable[[], float] = time.monotonic
    repo: Repo = field(init=False)

    def __post_init__(self) -> None:
        self.repo = Repo(self.state)

    def now(self) -> datetime:
        return self.clock()

    def results_uri(self, name: str) -> str:
        """URI of an object, or of a prefix when name ends with "/"."""
        if name.endswith("/"):
            return self.objects.uri(self.settings.results_bucket, name.rstrip("/")) + "/"
        return self.objects.uri(self.settings.results_bucket, name)
