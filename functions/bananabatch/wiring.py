"""Settings in, a Runtime out: the one place that picks adapters.

Cloud adapters are imported only when selected, so local runs and cold starts do not pay
for client libraries they will not use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, cast

from bananabatch.config import (
    COMPAT_PREFIX,
    ENV_OPENAI_API_KEY,
    ENV_OPENAI_ENABLED,
    ENV_SYNC_LANES,
    Backend,
    ProviderKind,
    Settings,
)
from bananabatch.core.catalog import Provider
from bananabatch.core.pricing import PriceBook
from bananabatch.errors import ConfigError
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import (
    AsyncImageLane,
    BatchProvider,
    EventBus,
    ObjectStore,
    StateStore,
    SyncImageLane,
)

_lock = threading.Lock()
_current: Runtime | None = None


def build_runtime(settings: Settings, *, with_provider: bool = True) -> Runtime:
    """with_provider=False is for commands that only read and write state (status, fetch):
    they must work without a Gemini key."""
    objects, state, bus = _stores(settings)
    return Runtime(
        settings=settings,
        objects=objects,
        state=state,
        bus=bus,
        provider=build_provider(settings, objects)
        if with_provider
        else cast(BatchProvider, NoProvider()),
        prices=PriceBook(overrides=settings.price_overrides),
        provider_factory=other_providers(settings, objects),
        sync_lane_factory=sync_lane_factory(settings),
        async_lane_factory=async_lane_factory(settings),
    )


def sync_lane_factory(settings: Settings) -> Callable[[str], SyncImageLane]:
    """Makes a configured synchronous lane's adapter the first time a line needs it
    ("gemini-standard" is the runtime's own, over the batch provider)."""

    def make(name: str) -> SyncImageLane:
        label = name.removeprefix(COMPAT_PREFIX)
        if not name.startswith(COMPAT_PREFIX) or label not in settings.compat_lanes:
            raise ConfigError(f"no sync lane {name!r} is configured ({ENV_SYNC_LANES})")
        from bananabatch.providers.compat_images import OpenAICompatLane

        return OpenAICompatLane(label, settings.compat_lanes[label])

    return make


def async_lane_factory(settings: Settings) -> Callable[[str], AsyncImageLane]:
    """Makes an async-callback lane's adapter the first time a task needs it."""

    def make(name: str) -> AsyncImageLane:
        if name == "replicate":
            from bananabatch.providers.replicate_lane import from_settings

            return from_settings(settings)
        raise ConfigError(f"no async lane {name!r}: expected one of replicate")

    return make


class NoProvider:
    """Stands in where no provider is configured; any use says what to configure."""

    kind = "none"

    def __getattr__(self, name: str) -> Any:
        raise ConfigError(
            f"this command needs a batch provider ({name}): set GEMINI_API_KEY for gemini, or"
            " run `bananabatch emulator` and set GOOGLE_GEMINI_BASE_URL to its address"
        )


def _stores(settings: Settings) -> tuple[ObjectStore, StateStore, EventBus]:
    if settings.backend is Backend.LOCAL:
        from bananabatch.adapters.local.bus import InProcessBus
        from bananabatch.adapters.local.objects import FolderObjectStore
        from bananabatch.adapters.local.state import SqliteStateStore

        root = settings.local_root
        root.mkdir(parents=True, exist_ok=True)
        return (
            FolderObjectStore(root / "buckets"),
            SqliteStateStore(root / "state.db"),
            InProcessBus(),
        )
    if not settings.project:
        raise ConfigError("the gcp backend needs a project: set GOOGLE_CLOUD_PROJECT")
    from bananabatch.adapters.gcp.firestore import FirestoreStateStore
    from bananabatch.adapters.gcp.pubsub import PubSubEventBus
    from bananabatch.adapters.gcp.storage import GcsObjectStore

    return (
        GcsObjectStore.from_settings(settings),
        FirestoreStateStore.from_settings(settings),
        PubSubEventBus.from_settings(settings),
    )


def build_provider(settings: Settings, objects: ObjectStore) -> BatchProvider:
    if settings.provider is ProviderKind.VERTEX:
        from bananabatch.providers import vertex

        return vertex.from_settings(settings, objects)
    from bananabatch.providers import gemini

    if settings.provider is ProviderKind.GEMINI and not settings.gemini_api_key:
        raise ConfigError("the gemini provider needs an API key: set GEMINI_API_KEY")
    return gemini.from_settings(settings, objects)


def build_openai_provider(settings: Settings, objects: ObjectStore) -> BatchProvider:
    """The OpenAI Batch adapter (providers/openai_batch.py: the real API, or the emulator
    at OPENAI_BASE_URL). Which batches go to it, rather than to build_provider's Gemini
    adapter, is decided per batch by the model's provider in the catalog."""
    from bananabatch.providers import openai_batch

    return openai_batch.from_settings(settings, objects)


def other_providers(settings: Settings, objects: ObjectStore) -> Callable[[str], BatchProvider]:
    """Runtime.provider_factory: the adapter of a provider other than Gemini's, by
    catalog.Provider value, built when a batch or a line first needs it."""

    def build(kind: str) -> BatchProvider:
        if kind != Provider.OPENAI:
            raise ConfigError(f"unknown provider {kind!r}; expected one of {', '.join(Provider)}")
        if not settings.openai_enabled:
            raise ConfigError(
                f"the OpenAI provider is not enabled: set {ENV_OPENAI_ENABLED}=true and "
                f"{ENV_OPENAI_API_KEY}"
            )
        return build_openai_provider(settings, objects)

    return build


def install(runtime: Runtime) -> None:
    """Make this runtime the one the entry points use (local mode and tests)."""
    global _current
    with _lock:
        _current = runtime


def uninstall() -> None:
    global _current
    with _lock:
        _current = None


def current(*, with_provider: bool = True) -> Runtime:
    """The process's runtime: installed explicitly, or built once from the environment
    (without a provider for entry points that never call one, like the webhook receiver)."""
    global _current
    with _lock:
        if _current is None:
            _current = build_runtime(Settings.from_env(os.environ), with_provider=with_provider)
        return _current
