"""What can go wrong, on purpose. A FaultPlan is plain data: tests build one per run and may
change it at runtime through `EmulatorState.faults`; the emulator consumes counted faults as
it applies them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from bananabatch.emulator.errors import CreateFaultKind

RowFaultKind = Literal[
    # The row fails: {"key", "error": {code, message}}.
    "error",
    # A candidate with finishReason IMAGE_SAFETY and no content.
    "image_safety",
    # No candidates, promptFeedback.blockReason set.
    "prompt_blocked",
    # A text-only candidate with finishReason NO_IMAGE.
    "no_image",
    # The row's output line is written twice.
    "duplicate",
    # The row has no output line at all.
    "missing",
    # The row succeeds with a broken image (render.broken_png), for the two-tier cull: a
    # blank white image; a near-uniform one (one colour, faint noise); a copy of the image
    # candidate 1 of the same request gets (seed 1); a 64x64 thumbnail.
    "blank_image",
    "uniform_image",
    "copy_image",
    "small_image",
]

JobFaultState = Literal["FAILED", "EXPIRED"]

# gRPC code 13 and the service's own wording (reference §4.4).
INTERNAL_MESSAGE = (
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)


@dataclass
class RowFault:
    kind: RowFaultKind
    code: int = 13
    message: str = INTERNAL_MESSAGE
    block_reason: str = "PROHIBITED_CONTENT"
    # How many more rows this fault applies to; None means every time the key appears.
    times: int | None = None


@dataclass
class JobFault:
    state: JobFaultState
    # fnmatch pattern over the batch display name, matched when the batch is created.
    display_name: str = "*"
    code: int = 13
    message: str = "Batch failed: an internal error has occurred."
    times: int | None = None


@dataclass
class CreateFault:
    """Batch creates of models matching `model` (fnmatch over the bare id) are refused with
    the service's answer for `kind` (emulator/errors.py); nothing is created."""

    kind: CreateFaultKind
    # How many more creates it refuses; None: every one until the test removes it.
    times: int | None = 1
    model: str = "*"
    retry_delay: str = "26s"
    # Synchronous generateContent calls are refused too (depleted credits, a refused key
    # and the spend window refuse every paid call, not only batch creates).
    generate: bool = False


@dataclass
class FaultPlan:
    """Per-key row faults, per-batch terminal and stuck faults, counted create faults and
    download faults."""

    rows: dict[str, RowFault] = field(default_factory=dict)
    jobs: list[JobFault] = field(default_factory=list)
    # The next N batch creates are refused with 429 RESOURCE_EXHAUSTED (nothing created).
    create_429: int = 0
    # Refusals of a kind (the 429s, 401, invalid key, model not found), taken in order.
    create_faults: list[CreateFault] = field(default_factory=list)
    # The next N batch creates fail with 500 INTERNAL (nothing created).
    create_500: int = 0
    # The next N batch creates succeed, but the caller gets a 500 instead of the answer.
    lose_create_response: int = 0
    # The next N result downloads stop halfway through while promising the whole file
    # (Content-Length of the full size): the client sees the connection drop mid-body.
    truncate_downloads: int = 0
    # fnmatch patterns over batch display names, matched when a batch is created: such a
    # batch never finishes by itself, whatever the timing config. It reaches RUNNING and
    # stays there, doing no work; only a cancel (or an explicit advance/complete from the
    # control API) ends it.
    stuck: list[str] = field(default_factory=list)
    # The next N result downloads are slow: the file goes out in chunks of
    # slow_chunk_bytes, and on_slow_chunk(slow_chunk_seconds) is called before each one.
    # Nothing sleeps: the hook is where a test moves its own clocks forward, so a slow
    # download is slow on the test's clock and takes no wall-clock time.
    slow_downloads: int = 0
    slow_chunk_bytes: int = 64 * 1024
    slow_chunk_seconds: float = 60.0
    on_slow_chunk: Callable[[float], None] | None = None

    def row_error(self, key: str, code: int = 13, message: str = INTERNAL_MESSAGE) -> FaultPlan:
        self.rows[key] = RowFault("error", code=code, message=message)
        return self

    def row(self, key: str, kind: RowFaultKind, *, times: int | None = None) -> FaultPlan:
        self.rows[key] = RowFault(kind, times=times)
        return self

    def job(self, state: JobFaultState, display_name: str = "*") -> FaultPlan:
        self.jobs.append(JobFault(state, display_name=display_name))
        return self

    def stick(self, display_name: str = "*") -> FaultPlan:
        """Batches whose display name matches never finish on their own."""
        self.stuck.append(display_name)
        return self

    def is_stuck(self, display_name: str) -> bool:
        return any(fnmatch.fnmatchcase(display_name, pattern) for pattern in self.stuck)

    def slow_download(
        self,
        on_chunk: Callable[[float], None],
        *,
        times: int = 1,
        chunk_bytes: int = 64 * 1024,
        seconds_per_chunk: float = 60.0,
    ) -> FaultPlan:
        """The next `times` downloads call on_chunk(seconds_per_chunk) per chunk served."""
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, found {chunk_bytes}")
        self.slow_downloads = times
        self.slow_chunk_bytes = chunk_bytes
        self.slow_chunk_seconds = seconds_per_chunk
        self.on_slow_chunk = on_chunk
        return self

    def refuse_creates(
        self,
        kind: CreateFaultKind,
        *,
        times: int | None = 1,
        model: str = "*",
        retry_delay: str = "26s",
        generate: bool = False,
    ) -> CreateFault:
        """Refuse creates with the service's answer for `kind` (and, with `generate`,
        synchronous generateContent calls); returns the fault, which a test may remove from
        `create_faults` (or whose `times` it may set) to end it."""
        fault = CreateFault(
            kind, times=times, model=model, retry_delay=retry_delay, generate=generate
        )
        self.create_faults.append(fault)
        return fault

    def take_create_fault(self, model: str, *, generate: bool = False) -> CreateFault | None:
        """The fault refusing this batch create (or, with `generate`, this synchronous
        call), consuming one use of a counted fault."""
        for fault in self.create_faults:
            if fault.times is not None and fault.times <= 0:
                continue
            if generate and not fault.generate:
                continue
            if fnmatch.fnmatchcase(model, fault.model):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def take_row_fault(self, key: str | None) -> RowFault | None:
        """The fault for this key, consuming one use of a counted fault."""
        if key is None:
            return None
        fault = self.rows.get(key)
        if fault is None:
            return None
        if fault.times is not None:
            if fault.times <= 0:
                return None
            fault.times -= 1
        return fault

    def take_truncated_download(self) -> bool:
        if self.truncate_downloads <= 0:
            return False
        self.truncate_downloads -= 1
        return True

    def take_slow_download(self) -> bool:
        if self.slow_downloads <= 0:
            return False
        self.slow_downloads -= 1
        return True

    def take_job_fault(self, display_name: str) -> JobFault | None:
        for fault in self.jobs:
            if fault.times is not None and fault.times <= 0:
                continue
            if fnmatch.fnmatchcase(display_name, fault.display_name):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None
