"""Helpers for tests that drive the Gemini Batch emulator.

with emulator() as emu:          # a ManualClock; batches move only when told to
    client = sdk_client(emu, "v1beta")
    emu.state.complete_all()
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from google import genai
from google.genai import types

from bananabatch.emulator import EmulatorConfig, EmulatorServer, FaultPlan, ManualClock

API_VERSIONS = ("v1", "v1beta")


@contextmanager
def emulator(
    *,
    faults: FaultPlan | None = None,
    api_key: str | None = None,
    pending_seconds: float = math.inf,
    running_seconds: float = math.inf,
    clock: ManualClock | None = None,
) -> Iterator[EmulatorServer]:
    """An emulator on a free loopback port. By default batches never move on their own, so
    a test decides every transition (emu.state.advance/complete, or clock.advance)."""
    config = EmulatorConfig(
        pending_seconds=pending_seconds,
        running_seconds=running_seconds,
        api_key=api_key,
        faults=faults or FaultPlan(),
        clock=clock or ManualClock(),
    )
    with EmulatorServer(config) as server:
        yield server


def sdk_client(emu: EmulatorServer, api_version: str, api_key: str = "test-key") -> genai.Client:
    return genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(base_url=emu.base_url, api_version=api_version),
    )


def image_request(
    prompt: str, aspect_ratio: str | None = None, image_size: str | None = None
) -> dict[str, Any]:
    image_config: dict[str, str] = {}
    if aspect_ratio:
        image_config["aspectRatio"] = aspect_ratio
    if image_size:
        image_config["imageSize"] = image_size
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": image_config},
    }


def jsonl(lines: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def request_file(
    keys: Iterable[str], aspect_ratio: str = "1:1", image_size: str | None = None
) -> bytes:
    """A batch input file: one image request per key, the prompt naming the key."""
    return jsonl(
        {"key": key, "request": image_request(f"Prompt for {key}", aspect_ratio, image_size)}
        for key in keys
    )
