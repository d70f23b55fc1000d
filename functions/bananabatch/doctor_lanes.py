"""`bananabatch doctor`'s checks of the lanes besides batch (issue 20): every lane named in
the sync and async lists is configured, each gateway in use has its key, and a third-party
lane configured while third parties are off (it will never be used) is a warning.

The judging is pure. A gateway is called only when asked (`doctor --probe-lanes`): the one
faithful probe is an image, which a gateway bills, so doctor never makes it on its own. The
probe is the lane the pipeline uses (providers/compat_images.py), so it checks the base
URL, the key and the gateway's model name together; tests replace it.
"""

from __future__ import annotations

from collections.abc import Callable

from bananabatch.config import (
    COMPAT_PREFIX,
    ENV_ALLOW_THIRD_PARTY,
    ENV_ASYNC_LANES,
    ENV_COMPAT_LANES,
    ENV_REPLICATE_API_TOKEN,
    ENV_REPLICATE_USD_PER_IMAGE,
    ENV_SYNC_LANES,
    GEMINI_STANDARD_LANE,
    CompatLaneConfig,
    Settings,
    compat_key_env,
)
from bananabatch.core.pricing import PriceBook
from bananabatch.core.routing import price_source, router_for
from bananabatch.doctor import Check

#: A probe makes one image on a gateway and returns a sentence about it; raises on failure.
GatewayProbe = Callable[[str, CompatLaneConfig], str]

PROBE_FLAG = "--probe-lanes"
# The smallest, plainest request every gateway serving a Nano Banana model can express.
PROBE_PROMPT = "a single yellow banana on a plain white background"


def lane_checks(
    settings: Settings, *, probe: GatewayProbe | None = None, probe_lanes: bool = False
) -> list[Check]:
    """The lanes' checks; `probe` (default: one image through the lane) runs only with
    `probe_lanes`, and only on gateways in use that have a key."""
    checks = [_summary(settings)]
    checks += _sync_lane_checks(settings)
    for label, gateway in sorted(settings.compat_lanes.items()):
        checks += _gateway_checks(settings, label, gateway)
        if _in_use(settings, label) and gateway.api_key:
            checks.append(_probe(label, gateway, probe or make_image, asked=probe_lanes))
    checks += _async_lane_checks(settings)
    return checks


def _summary(settings: Settings) -> Check:
    sync = " -> ".join(settings.sync_lanes) or "none"
    asynchronous = " -> ".join(settings.async_lanes) or "none"
    third = "allowed" if settings.allow_third_party else "off"
    return Check("lanes", "ok", f"sync {sync}; async {asynchronous}; third parties {third}")


def _sync_lane_checks(settings: Settings) -> list[Check]:
    """Config load refuses these already; said here too, with the fix, for a hand-made
    Settings and so the check cannot silently disappear."""
    out: list[Check] = []
    for name in settings.sync_lanes:
        if name == GEMINI_STANDARD_LANE:
            continue
        label = name.removeprefix(COMPAT_PREFIX)
        if not name.startswith(COMPAT_PREFIX) or label not in settings.compat_lanes:
            out.append(
                Check(
                    f"lane {name}",
                    "fail",
                    f"{ENV_SYNC_LANES} names {name}, which is not configured: expected "
                    f"{GEMINI_STANDARD_LANE} or compat:<label> with its entry in "
                    f"{ENV_COMPAT_LANES}",
                )
            )
    return out


def _in_use(settings: Settings, label: str) -> bool:
    return COMPAT_PREFIX + label in settings.sync_lanes


def _gateway_checks(settings: Settings, label: str, gateway: CompatLaneConfig) -> list[Check]:
    name = f"lane {COMPAT_PREFIX}{label}"
    if not _in_use(settings, label):
        return [
            Check(
                name,
                "warn",
                f"configured in {ENV_COMPAT_LANES} but not in {ENV_SYNC_LANES}: never used",
            )
        ]
    out: list[Check] = []
    if not gateway.api_key:
        out.append(
            Check(
                name,
                "fail",
                f"no key: set {compat_key_env(label)} (deployed: pulumi config set --secret "
                f"bananabatch:compatKey-{label} <key>)",
            )
        )
    if gateway.third_party and not settings.allow_third_party:
        out.append(
            Check(
                name,
                "warn",
                f"a third party while {ENV_ALLOW_THIRD_PARTY} is off: no line will ever be "
                "routed to it",
            )
        )
    if not out:
        served = ", ".join(f"{m} as {n}" for m, n in sorted(gateway.models.items()))
        out.append(
            Check(
                name,
                "ok",
                f"{gateway.base_url}, key set; serves {served}; price: "
                f"{price_source(settings, COMPAT_PREFIX + label)}",
            )
        )
    return out


def _async_lane_checks(settings: Settings) -> list[Check]:
    out: list[Check] = []
    for name in settings.async_lanes:
        if name == "replicate" and not settings.replicate_api_token:
            out.append(
                Check(
                    f"lane {name}",
                    "fail",
                    f"no token: set {ENV_REPLICATE_API_TOKEN} (deployed: pulumi config set "
                    "--secret bananabatch:replicateApiToken r8_...)",
                )
            )
        if not settings.allow_third_party:
            out.append(
                Check(
                    f"lane {name}",
                    "warn",
                    f"an async-callback provider hosts someone else's model (a third party) "
                    f"while {ENV_ALLOW_THIRD_PARTY} is off: it will never be used",
                )
            )
        elif not _undercuts_batch(settings, name):
            fix = (
                f"; set {ENV_REPLICATE_USD_PER_IMAGE} if you pay less"
                if name == "replicate" and settings.replicate_usd_per_image is None
                else ""
            )
            out.append(
                Check(
                    f"lane {name}",
                    "warn",
                    f"named in {ENV_ASYNC_LANES}, but its per-image price is above batch for "
                    f"every model and size it serves: no line is routed to it (price: "
                    f"{price_source(settings, name)}{fix})",
                )
            )
        else:
            out.append(
                Check(
                    f"lane {name}",
                    "ok",
                    "bulk lines that allow third parties go to it where it is their cheapest "
                    f"lane (price: {price_source(settings, name)})",
                )
            )
    return out


def _undercuts_batch(settings: Settings, name: str) -> bool:
    """Whether routing can send a line to the async lane: its price below batch's for
    some model and size it serves (core/routing.py)."""
    router = router_for(settings, PriceBook())
    lane = next((o for o in router.lanes if o.name == name), None)
    batch = router.lanes[0]
    if lane is None or lane.models is None:
        return False
    for model in lane.models:
        for size in ("1K", "2K", "4K"):
            price, batch_price = (
                router.price(lane, model, size, None),
                router.price(batch, model, size, None),
            )
            if price is not None and batch_price is not None and price < batch_price:
                return True
    return False


def _probe(label: str, gateway: CompatLaneConfig, probe: GatewayProbe, *, asked: bool) -> Check:
    name = f"probe {COMPAT_PREFIX}{label}"
    if not asked:
        return Check(
            name,
            "skip",
            f"not called: a probe makes one image, which the gateway bills; run "
            f"bananabatch doctor {PROBE_FLAG} to make it",
        )
    try:
        return Check(name, "ok", probe(label, gateway))
    except Exception as exc:  # noqa: BLE001  # every failure is reported, none raised
        from bananabatch.errors import ProviderAuthError

        # The lane turns the SDK's 401 into ProviderAuthError (providers/lane_errors.py).
        if isinstance(exc, ProviderAuthError) or getattr(exc, "status_code", None) == 401:
            return Check(
                name,
                "fail",
                f"401 from {gateway.base_url}: the gateway does not accept the key in "
                f"{compat_key_env(label)}",
            )
        return Check(name, "fail", f"{gateway.base_url}: {type(exc).__name__}: {exc}")


def make_image(label: str, gateway: CompatLaneConfig) -> str:
    """The default probe: one image of the first model the gateway serves, through the lane
    the pipeline calls."""
    from bananabatch.ports import ImageRequest
    from bananabatch.providers.compat_images import OpenAICompatLane

    model = sorted(gateway.models)[0]
    lane = OpenAICompatLane(label, gateway)
    try:
        result = lane.generate(
            ImageRequest(
                job_id="doctor",
                key="probe",
                attempt_id="doctor-probe",
                model=model,
                prompt=PROBE_PROMPT,
                aspect_ratio="1:1",
                image_size="1K",
            ),
            timeout_s=gateway.timeout_s,
        )
    finally:
        lane.close()
    price = (
        f"${gateway.usd_per_image:.4f} per image (usd_per_image)"
        if gateway.usd_per_image is not None
        else "the gateway's price per image"
    )
    return (
        f"made one {model} image as {gateway.models[model]} ({len(result.image)} bytes, "
        f"{result.mime_type}), billed at {price}"
    )
