"""The OpenAI-compatible images emulator's state: what a third-party gateway in front of
Nano Banana models does when the official `openai` SDK calls `images.generate` on it. One
call, one image, now; what it made is in the ledger (base/state.py) whether or not the
caller read the answer, because that is what it billed.

Faults are LaneFaults (base/lane_faults.py) in OpenAI's error shape: down (503), 500, 429
with retry-after, a content-policy refusal (400 `content_policy_violation`), a stalled
answer (made and billed, held until released), a slow one (on the test's clock).
"""

from __future__ import annotations

import base64
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from bananabatch.emulator.base.lane_faults import LaneFaults, StallGate
from bananabatch.emulator.base.routes import HttpError
from bananabatch.emulator.base.state import Accepted, Ledger
from bananabatch.emulator.render import render_png

Json = dict[str, Any]
# The answers a gateway gives as Nano Banana's sizes; "WxH" sizes map to the nearest ratio.
_RATIO_BY_SIZE: Final = {"1024x1024": "1:1", "1536x1024": "3:2", "1024x1536": "2:3"}
_ALPHABET: Final = string.ascii_letters + string.digits


class CompatError(HttpError):
    """An HTTP error answer in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Json = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        self.headers = dict(headers or {})


@dataclass
class CompatEmulatorConfig:
    # None accepts any non-empty key; a value requires exactly that key.
    api_key: str | None = None
    # The gateway's model names; None serves any name.
    models: frozenset[str] | None = None
    # How images come back when the caller does not ask: inline base64 or a URL to fetch.
    default_response_format: Literal["b64_json", "url"] = "b64_json"
    # A gateway that answers with URLs whatever was asked (some do).
    url_answers: bool = False
    faults: LaneFaults = field(default_factory=LaneFaults)
    clock: Callable[[], float] = time.time


@dataclass
class Counters:
    calls: int = 0
    refused: int = 0
    images: int = 0


class CompatEmulatorState(Ledger):
    def __init__(self, config: CompatEmulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or CompatEmulatorConfig()
        self.counters = Counters()
        self.gate = StallGate()
        self._files: dict[str, bytes] = {}

    @property
    def faults(self) -> LaneFaults:
        return self.config.faults

    @faults.setter
    def faults(self, plan: LaneFaults) -> None:
        with self._lock:
            self.config.faults = plan

    def close(self) -> None:
        self.gate.release()

    def release_stalled(self) -> int:
        return self.gate.release()

    def check_key(self, authorization: str | None) -> None:
        key = (authorization or "").removeprefix("Bearer ").strip()
        if not key:
            raise CompatError(401, "You didn't provide an API key.")
        if self.config.api_key is not None and key != self.config.api_key:
            raise CompatError(
                401, f"Incorrect API key provided: {key[:3]}***.", code="invalid_api_key"
            )

    def refusals(self) -> None:
        """The answers a broken provider gives before looking at the request."""
        with self._lock:
            faults = self.faults
            self.counters.calls += 1
            if faults.down:
                raise CompatError(
                    faults.down_status,
                    "The service is unavailable (emulated).",
                    kind="server_error",
                )
            if faults.take_server_error():
                raise CompatError(500, "The server had an error (emulated).", kind="server_error")
            if faults.take_rate_limit():
                raise CompatError(
                    429,
                    "Rate limit reached for requests (emulated).",
                    code="rate_limit_exceeded",
                    kind="requests",
                    headers={"retry-after": str(faults.retry_after_seconds)},
                )

    def generate(self, body: Mapping[str, Any], base_url: str) -> tuple[Json, bool]:
        """The answer to one images.generate call, and whether it must stall first."""
        self.refusals()
        model, prompt = body.get("model"), body.get("prompt")
        if not isinstance(model, str) or not model:
            raise CompatError(
                400, "Missing required parameter: 'model'.", code="missing_required_parameter"
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise CompatError(
                400, "Missing required parameter: 'prompt'.", code="missing_required_parameter"
            )
        if self.config.models is not None and model not in self.config.models:
            raise CompatError(404, f"The model `{model}` does not exist.", code="model_not_found")
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 4:
            raise CompatError(
                400, f"Invalid 'n': expected 1 to 4; found {n!r}.", code="invalid_value"
            )
        with self._lock:
            if self.faults.refuses(prompt):
                self.counters.refused += 1
                raise CompatError(
                    400,
                    "Your request was rejected as a result of our safety system. Your prompt "
                    "may contain text that is not allowed by our safety system.",
                    code="content_policy_violation",
                )
            stall = self.faults.take_stall()
            self.faults.take_slow()
            user = body.get("user")
            generation = "gen_" + "".join(secrets.choice(_ALPHABET) for _ in range(20))
            # Keyed by the caller's `user` (the lane sends its attempt id there), or by the
            # prompt when it sends none.
            key = user if isinstance(user, str) and user else prompt
            self.accepted.extend(Accepted(generation, key, key) for _ in range(n))
            self.counters.images += n
        ratio, size = _ratio_and_size(body)
        image = render_png(prompt, ratio, size)
        form = body.get("response_format") or self.config.default_response_format
        if self.config.url_answers:
            form = "url"
        data: list[Json] = []
        for index in range(n):
            if form == "url":
                file_id = f"{generation}-{index}.png"
                with self._lock:
                    self._files[file_id] = image
                data.append({"url": f"{base_url}/files/{file_id}"})
            else:
                data.append({"b64_json": base64.b64encode(image).decode("ascii")})
        answer: Json = {"created": int(self.config.clock()), "data": data}
        return answer, stall

    def file(self, file_id: str) -> bytes | None:
        with self._lock:
            return self._files.get(file_id)

    def wait_if_stalled(self, stall: bool) -> None:
        if stall:
            self.gate.wait()


def _ratio_and_size(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Nano Banana's ratio and tier from the extra fields gateways take, or from `size`."""
    ratio = body.get("aspect_ratio")
    size = body.get("image_size")
    if not isinstance(ratio, str):
        ratio = _RATIO_BY_SIZE.get(str(body.get("size")), None)
    return ratio, size if isinstance(size, str) else None
