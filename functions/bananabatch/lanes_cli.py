"""The third-party lanes of a local run (issue 20 point 6): `bananabatch local run` and
`local serve` start the OpenAI-compatible images emulator and the Replicate emulator beside
Gemini's and OpenAI's, and configure them as the gateway lane `compat:local` (after Gemini's
standard API, so urgent lines still go there first) and the async lane `replicate`.

Nothing routes a line to them unless the owner allows third parties
(BANANABATCH_ALLOW_THIRD_PARTY=true, and `allow_third_party: true` on the line), as
everywhere. Lanes the owner configured in the environment are left as they are."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any, Final

from bananabatch import config
from bananabatch.core import catalog

LOCAL_KEY: Final = "local-emulator-key"
#: The settings emulated_lanes sets that are not plain addresses.
LANE_SETTINGS: Final = frozenset({"compat_lanes", "sync_lanes", "async_lanes"})


@contextmanager
def emulated_lanes() -> Iterator[dict[str, Any]]:
    """Run the lane emulators for the duration; yields the settings that point at them."""
    from bananabatch.emulator.compat import CompatEmulatorConfig, CompatEmulatorServer
    from bananabatch.emulator.replicate import ReplicateEmulatorServer

    with (
        CompatEmulatorServer(CompatEmulatorConfig()) as compat,
        ReplicateEmulatorServer() as replicate,
    ):
        found: dict[str, Any] = {}
        if not os.environ.get(config.ENV_COMPAT_LANES) and not os.environ.get(
            config.ENV_SYNC_LANES
        ):
            # The gateway serves each catalog model under its own id.
            models = {m: m for m in _served_models()}
            lane = config.CompatLaneConfig(
                base_url=compat.base_url, api_key=LOCAL_KEY, models=models
            )
            found["compat_lanes"] = {"local": lane}
            found["sync_lanes"] = (config.GEMINI_STANDARD_LANE, f"{config.COMPAT_PREFIX}local")
        if not os.environ.get(config.ENV_REPLICATE_BASE_URL):
            found["replicate_base_url"] = replicate.base_url
            found["replicate_api_token"] = LOCAL_KEY
            found["replicate_webhook_secret"] = replicate.state.signing_secret
            if not os.environ.get(config.ENV_ASYNC_LANES):
                found["async_lanes"] = ("replicate",)
        yield found


def _served_models() -> list[str]:
    today = date.today()
    return [
        s.model_id for s in catalog.MODELS if catalog.lifecycle_problem(s.model_id, today) is None
    ]
