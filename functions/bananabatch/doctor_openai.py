"""`bananabatch doctor`'s checks of the OpenAI provider (gpt-image lines): whether it is
enabled, its key present and accepted (one `batches.list` call, which needs nothing but
the key), and its webhook secret. The judging is pure; the one call is the probe, which
tests replace.
"""

from __future__ import annotations

from collections.abc import Callable

from bananabatch.config import (
    ENV_OPENAI_API_KEY,
    ENV_OPENAI_ENABLED,
    ENV_OPENAI_WEBHOOK_SECRET,
    Settings,
)
from bananabatch.doctor import Check

#: How OpenAI's project webhook endpoints' signing secrets start (the SDK's own form).
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def openai_checks(settings: Settings, probe: Callable[[Settings], int]) -> list[Check]:
    """The OpenAI provider's checks; `probe` lists the project's batches (their count)."""
    if not settings.openai_enabled:
        return [
            Check(
                "openai",
                "skip",
                f"not enabled ({ENV_OPENAI_ENABLED}): lines for gpt-image models are "
                "rejected at intake, saying so",
            )
        ]
    if not settings.openai_api_key:
        return [
            Check(
                "openai key",
                "fail",
                f"{ENV_OPENAI_ENABLED} is on but {ENV_OPENAI_API_KEY} is empty: set it to a "
                "project API key (deployed: pulumi config set --secret "
                "bananabatch:openaiApiKey sk-...)",
            )
        ]
    checks: list[Check] = []
    where = settings.openai_base_url or "api.openai.com"
    try:
        seen = probe(settings)
    except Exception as exc:  # noqa: BLE001  # every failure is reported, none raised
        checks.append(Check("openai auth", "fail", _failure(exc, where)))
    else:
        checks.append(
            Check("openai auth", "ok", f"batches.list at {where} answered ({seen} listed)")
        )
    checks.append(_webhook(settings))
    return checks


def _failure(exc: BaseException, where: str) -> str:
    status = getattr(exc, "status_code", None)
    if status == 401:
        return (
            f"401 from {where}: OpenAI does not accept this key. Copy a project API key "
            f"from the OpenAI dashboard into {ENV_OPENAI_API_KEY}."
        )
    if status == 403:
        return f"403 from {where}: the key's project may not use the Batch API ({exc})"
    return f"could not list batches at {where}: {type(exc).__name__}: {exc}"


def _webhook(settings: Settings) -> Check:
    secret = settings.openai_webhook_secret
    if not secret:
        return Check(
            "openai webhook",
            "skip",
            f"no {ENV_OPENAI_WEBHOOK_SECRET}: the tick polls OpenAI batches every minute "
            "(webhooks only make it sooner)",
        )
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return Check(
            "openai webhook",
            "fail",
            f"{ENV_OPENAI_WEBHOOK_SECRET} does not start with {WEBHOOK_SECRET_PREFIX}: it "
            "must be the signing secret OpenAI showed when the webhook endpoint was made",
        )
    return Check("openai webhook", "ok", "signing secret set; deliveries are verified with it")


def count_batches(settings: Settings) -> int:
    """The default probe: one `batches.list` page through the openai SDK."""
    import openai

    client = openai.OpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url or None,
        max_retries=0,
        timeout=30.0,
    )
    try:
        return len(client.batches.list(limit=10).data)
    finally:
        client.close()
