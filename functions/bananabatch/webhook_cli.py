"""`bananabatch webhook-register URL`: register the static (project) webhook for batch
events and print the signing secret to store as the stack's `webhookSigningSecret`.
A plain function; cli.py registers it with `app.command()(...)`."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from bananabatch.config import Settings
from bananabatch.errors import BananaError
from bananabatch.webhooks import register_static_webhook

err = Console(stderr=True)


def webhook_register(
    uri: Annotated[str, typer.Argument(help="The receiver's URL (the stack's webhookUrl).")],
    name: Annotated[str | None, typer.Option(help="A label for the webhook.")] = None,
) -> None:
    """Register a project webhook for batch events (API version from
    BANANABATCH_WEBHOOK_API_VERSION, default v1beta); prints its signing secret once.

    Example: bananabatch webhook-register
    https://us-central1-my-project.cloudfunctions.net/bananabatch-on-gemini-webhook
    """
    try:
        registration = register_static_webhook(Settings.from_env(os.environ), uri, name=name)
    except BananaError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None
    err.print(f"registered webhook {registration.webhook_id}; its signing secret (shown once):")
    # Alone on stdout, so it can be piped into `pulumi config set --secret`.
    print(registration.signing_secret)
