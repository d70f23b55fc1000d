"""Pub/Sub behind the EventBus port."""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Mapping
from typing import Final

import google.cloud.pubsub_v1 as pubsub_v1  # type: ignore[import-untyped]  # the library ships no py.typed
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type

from bananabatch.config import Settings
from bananabatch.errors import ConfigError, NotFound, PermanentError, TransientError

_TOPIC_PATH: Final = re.compile(r"^projects/[^/]+/topics/[^/]+$")
# The codes the library itself treats as retryable for Publish.
_RETRYABLE: Final = (
    gexc.Aborted,
    gexc.Cancelled,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.ServiceUnavailable,
    gexc.Unknown,
)
DEFAULT_TIMEOUT_S: Final = 60.0


class PubSubEventBus:
    """EventBus on Pub/Sub. `publish` blocks until the broker acknowledges or `timeout_s`
    passes; the library's own default would keep retrying for ten minutes, longer than a
    Cloud Function may run."""

    def __init__(
        self,
        publisher: pubsub_v1.PublisherClient,
        project: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._publisher = publisher
        self._project = project
        self._timeout_s = timeout_s
        self._retry = Retry(
            predicate=if_exception_type(*_RETRYABLE),
            initial=0.1,
            maximum=5.0,
            multiplier=2.0,
            timeout=timeout_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PubSubEventBus:
        """With PUBSUB_EMULATOR_HOST set, the library connects there, unauthenticated."""
        if not settings.project:
            raise ConfigError("Pub/Sub needs a project: set GOOGLE_CLOUD_PROJECT")
        return cls(pubsub_v1.PublisherClient(), settings.project)

    def topic_path(self, topic: str) -> str:
        if topic.startswith("projects/"):
            if not _TOPIC_PATH.match(topic):
                raise PermanentError(
                    f"topic {topic!r}: expected a short name or projects/PROJECT/topics/TOPIC"
                )
            return topic
        if not topic or "/" in topic:
            raise PermanentError(
                f"topic {topic!r}: expected a short name or projects/PROJECT/topics/TOPIC"
            )
        return f"projects/{self._project}/topics/{topic}"

    def check_topic(self, topic: str) -> None:
        """Raise unless the topic exists and the caller may read it (`bananabatch doctor`)."""
        self._publisher.get_topic(topic=self.topic_path(topic), timeout=self._timeout_s)

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        path = self.topic_path(topic)
        if not isinstance(data, bytes):
            raise PermanentError(
                f"publish to {path}: data must be bytes, found {type(data).__name__}"
            )
        for key, value in attributes.items():
            if not isinstance(key, str) or not key or not isinstance(value, str):
                raise PermanentError(
                    f"publish to {path}: attributes must map non-empty strings to strings, "
                    f"found {key!r}: {type(value).__name__}"
                )
        try:
            future = self._publisher.publish(
                path, data, retry=self._retry, timeout=self._timeout_s, **dict(attributes)
            )
            # A little beyond the retry deadline, so the library's own error wins the race.
            message_id = future.result(timeout=self._timeout_s + 5.0)
        except gexc.NotFound as exc:
            raise NotFound(f"publish to {path}: expected an existing topic, found none") from exc
        except (*_RETRYABLE, gexc.RetryError, concurrent.futures.TimeoutError) as exc:
            raise TransientError(f"publish to {path}: not acknowledged: {exc!r}") from exc
        except gexc.GoogleAPICallError as exc:
            raise PermanentError(f"publish to {path}: Pub/Sub refused: {exc}") from exc
        return str(message_id)
