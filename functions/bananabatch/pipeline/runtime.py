"""The wired-up world the pipeline runs in: settings plus one adapter per port."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bananabatch.config import GEMINI_STANDARD_LANE, Settings
from bananabatch.core.catalog import Provider, provider_of
from bananabatch.core.pricing import PriceBook
from bananabatch.core.records import BatchRecord
from bananabatch.errors import ConfigError
from bananabatch.pipeline.repo import Repo
from bananabatch.ports import (
    AsyncImageLane,
    BatchProvider,
    EventBus,
    ObjectStore,
    StateStore,
    SyncImageLane,
)


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
    # The adapters of the providers other than Gemini's (`provider`: the Developer API,
    # Vertex or its emulator), by catalog.Provider value; wiring's factory makes one the
    # first time a batch or a line needs it, so a deployment that never sees a gpt-image
    # line never loads the OpenAI SDK.
    other_providers: dict[str, BatchProvider] = field(default_factory=dict)
    provider_factory: Callable[[str], BatchProvider] | None = None
    # The synchronous image lanes by name (ports.SyncImageLane; pipeline/lanes.py):
    # "gemini-standard" is made from `provider` the first time; others come from the
    # factory wiring sets, or are set here directly (tests).
    sync_lanes: dict[str, SyncImageLane] = field(default_factory=dict)
    sync_lane_factory: Callable[[str], SyncImageLane] | None = None
    # The async-callback image lanes by name (ports.AsyncImageLane; pipeline/tasks.py),
    # made by wiring's factory the first time a task needs one, or set here (tests).
    async_lanes: dict[str, AsyncImageLane] = field(default_factory=dict)
    async_lane_factory: Callable[[str], AsyncImageLane] | None = None
    repo: Repo = field(init=False)

    def __post_init__(self) -> None:
        self.repo = Repo(self.state)

    def now(self) -> datetime:
        return self.clock()

    def provider_for(self, kind: str | None) -> BatchProvider:
        """The adapter of a provider (a catalog.Provider value; None is Gemini's, as on
        batch records written before there were others)."""
        if kind is None or kind == Provider.GEMINI:
            return self.provider
        found = self.other_providers.get(kind)
        if found is None:
            if self.provider_factory is None:
                raise ConfigError(f"no {kind} provider is configured on this deployment")
            found = self.other_providers.setdefault(kind, self.provider_factory(kind))
        return found

    def sync_lane(self, name: str) -> SyncImageLane:
        """The adapter of a synchronous lane, by its configured name."""
        found = self.sync_lanes.get(name)
        if found is not None:
            return found
        if name == GEMINI_STANDARD_LANE:
            from bananabatch.providers.gemini_standard import GeminiStandardLane

            return self.sync_lanes.setdefault(name, GeminiStandardLane(self.provider))
        if self.sync_lane_factory is None:
            raise ConfigError(f"no adapter for the sync lane {name!r} on this deployment")
        return self.sync_lanes.setdefault(name, self.sync_lane_factory(name))

    def async_lane(self, name: str) -> AsyncImageLane:
        """The adapter of an async-callback lane, by its configured name."""
        found = self.async_lanes.get(name)
        if found is not None:
            return found
        if self.async_lane_factory is None:
            raise ConfigError(f"no adapter for the async lane {name!r} on this deployment")
        return self.async_lanes.setdefault(name, self.async_lane_factory(name))

    def batch_provider(self, batch: BatchRecord) -> BatchProvider:
        """The adapter that runs this batch: the one its record names."""
        return self.provider_for(batch.provider)

    def model_provider(self, model: str) -> BatchProvider:
        """The adapter for lines naming this model (catalog.provider_of)."""
        return self.provider_for(provider_of(model))

    def results_uri(self, name: str) -> str:
        """URI of an object, or of a prefix when name ends with "/"."""
        if name.endswith("/"):
            return self.objects.uri(self.settings.results_bucket, name.rstrip("/")) + "/"
        return self.objects.uri(self.settings.results_bucket, name)
