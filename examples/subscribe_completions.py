"""Print one line per finished bananabatch job, read from the completions topic.

    python examples/subscribe_completions.py --project my-project --subscription my-sub

Create the subscription once, optionally filtered on the message attributes, e.g.
    gcloud pubsub subscriptions create my-sub --topic completions \\
        --message-filter='attributes.state != "SUCCEEDED"'

Works against the Pub/Sub emulator too: set PUBSUB_EMULATOR_HOST=localhost:8085.
Messages are validated against bananabatch's published JSON Schema when `jsonschema` is
installed; a message that fails validation is printed and acknowledged anyway, since
redelivering it would not change it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from google.cloud import pubsub_v1

from bananabatch.core.messages import load_completion_schema

try:
    import jsonschema
except ImportError:  # validation is optional for a subscriber
    jsonschema = None


def describe(message: dict[str, Any]) -> str:
    counts = ", ".join(f"{state.lower()} {n}" for state, n in message["counts"].items() if n)
    costs = message["costs"]
    line = (
        f"{message['job_id']}: {message['state']} ({counts or 'no items'}); "
        f"actual ${costs['actual_usd']:.4f}, saved ${costs['saved_usd']:.4f}; "
        f"results {message['results_prefix']}"
    )
    if "reason" in message:
        line += f"; reason: {message['reason']}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, help="Google Cloud project id")
    parser.add_argument("--subscription", required=True, help="subscription to the topic")
    args = parser.parse_args()

    validator = None
    if jsonschema is not None:
        validator = jsonschema.Draft202012Validator(load_completion_schema())

    def callback(received: pubsub_v1.subscriber.message.Message) -> None:
        try:
            message = json.loads(received.data)
        except ValueError as exc:
            print(f"not JSON, skipped: {exc}", file=sys.stderr)
            received.ack()
            return
        if received.attributes.get("kind") == "alert":
            # Alerts share the topic (schemas/alert.v1.schema.json): the owner must act.
            print(f"ALERT {message.get('alert')}: {message.get('reason')}", flush=True)
            received.ack()
            return
        problems = [e.message for e in validator.iter_errors(message)] if validator else []
        if problems:
            print(f"invalid message {received.message_id}: {problems}", file=sys.stderr)
        else:
            print(describe(message), flush=True)
        received.ack()

    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(args.project, args.subscription)
    print(f"listening on {path}; Ctrl-C to stop", file=sys.stderr)
    with subscriber:
        future = subscriber.subscribe(path, callback=callback)
        try:
            future.result()
        except KeyboardInterrupt:
            future.cancel()
            future.result()


if __name__ == "__main__":
    main()
