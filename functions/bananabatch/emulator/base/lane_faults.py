"""What can go wrong on purpose at a one-image provider (the OpenAI-compatible images
emulator, the Replicate emulator): plain data a test builds, or changes at runtime through
the state's `faults`; counted faults are consumed as they apply.

Which answer a fault gives is the emulator's own (each speaks its provider's error shape);
what the faults mean is the same for both:
- `down`: the provider is down: every call answered `down_status`, nothing made or billed;
- `server_errors`: the next N creates answered 500, nothing made;
- `rate_limited`: the next N creates answered 429 with `retry-after`, nothing made;
- `refuse`: prompts matching a pattern are refused under the content policy;
- `stall`: the next N creates are accepted (and billed) and their answer is held until
  `release_stalled()`: a client whose read times out meanwhile cannot know it was made;
- `slow`: the next N pieces of work call `on_slow(slow_seconds)` before answering (the
  hook is where a test moves its clock: slow on the test's clock, no wall-clock time).
Lost, duplicated and held callbacks are the webhook outbox's (base/outbox.py).
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# The longest a stalled answer waits for release, so a forgotten stall cannot hang a server.
MAX_STALL_SECONDS = 60.0


@dataclass
class LaneFaults:
    down: bool = False
    down_status: int = 503
    server_errors: int = 0
    rate_limited: int = 0
    retry_after_seconds: int = 7
    # fnmatch patterns over the prompt.
    refuse: list[str] = field(default_factory=list)
    stall: int = 0
    slow: int = 0
    slow_seconds: float = 30.0
    on_slow: Callable[[float], None] | None = None

    def refuses(self, prompt: str) -> bool:
        return any(fnmatch.fnmatchcase(prompt, pattern) for pattern in self.refuse)

    def take_server_error(self) -> bool:
        if self.server_errors <= 0:
            return False
        self.server_errors -= 1
        return True

    def take_rate_limit(self) -> bool:
        if self.rate_limited <= 0:
            return False
        self.rate_limited -= 1
        return True

    def take_stall(self) -> bool:
        if self.stall <= 0:
            return False
        self.stall -= 1
        return True

    def take_slow(self) -> bool:
        if self.slow <= 0:
            return False
        self.slow -= 1
        if self.on_slow is not None:
            self.on_slow(self.slow_seconds)
        return True


class StallGate:
    """Where stalled answers wait: each waits for release() (or MAX_STALL_SECONDS)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[threading.Event] = []
        self.waiting = 0

    def wait(self) -> None:
        event = threading.Event()
        with self._lock:
            self._events.append(event)
            self.waiting += 1
        try:
            event.wait(MAX_STALL_SECONDS)
        finally:
            with self._lock:
                self.waiting -= 1

    def release(self) -> int:
        """Let every stalled answer go; returns how many were waiting."""
        with self._lock:
            events, self._events = self._events, []
        for event in events:
            event.set()
        return len(events)
