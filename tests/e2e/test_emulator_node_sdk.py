"""The unmodified Node SDK (`@google/genai`, pinned in package.json) against the Gemini Batch
emulator: the emulator is only useful while both official clients see the service they see in
production. tests/e2e/node_sdk/walk.mjs runs one SDK step per call and prints what the SDK
returned; the emulator's clock stays still, so each test decides every transition."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bananabatch.emulator import EmulatorServer
from tests.support.emulator import API_VERSIONS, emulator, image_request, jsonl

ROOT = Path(__file__).resolve().parents[2]
WALK = Path(__file__).with_name("node_sdk") / "walk.mjs"
MODEL = "gemini-3-pro-image"


@pytest.fixture(scope="module", autouse=True)
def _node_sdk_installed() -> None:
    # `make test` installs package.json's tools; a missing SDK is a broken checkout, not a skip.
    assert shutil.which("node"), "node is required (make test installs the test tools)"
    assert (ROOT / "node_modules" / "@google" / "genai" / "package.json").is_file(), (
        "@google/genai missing from node_modules: run `make test` (npm ci)"
    )


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with emulator() as server:
        yield server


@pytest.fixture(params=API_VERSIONS)
def node(request: pytest.FixtureRequest, emu: EmulatorServer, tmp_path: Path) -> Any:
    env = {
        **os.environ,
        "EMULATOR_URL": emu.base_url,
        "GEMINI_API_KEY": "AQ.test-key",
        "API_VERSION": str(request.param),
        "TMPDIR": str(tmp_path),
    }

    def run(step: str, *args: str) -> Any:
        done = subprocess.run(
            ["node", str(WALK), step, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"node step {step} failed:\n{done.stderr}"
        return json.loads(done.stdout)

    return run


def _request_file(tmp_path: Path, keys: list[str]) -> str:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl({"key": key, "request": image_request(f"a {key}")} for key in keys))
    return str(path)


def test_the_node_sdk_lists_and_gets_models_with_their_batch_support(node: Any) -> None:
    seen = node("models", MODEL)
    actions = {m["name"]: m["actions"] for m in seen["names"]}
    assert "batchGenerateContent" in actions[f"models/{MODEL}"]
    assert "batchGenerateContent" in actions["models/gemini-2.5-flash"]
    assert seen["got"] == {"name": f"models/{MODEL}", "actions": actions[f"models/{MODEL}"]}


def test_a_file_batch_from_the_node_sdk_runs_and_its_results_download_keyed(
    node: Any, emu: EmulatorServer, tmp_path: Path
) -> None:
    uploaded = node("upload", _request_file(tmp_path, ["a", "b", "c"]))
    assert uploaded["name"].startswith("files/")
    assert uploaded["state"] == "ACTIVE"
    job = node("createFile", MODEL, uploaded["name"])
    assert job["state"] == "JOB_STATE_PENDING"
    pending = node("get", job["name"])["ok"]
    assert (pending["state"], pending["destFile"]) == ("JOB_STATE_PENDING", None)

    emu.state.complete(job["name"])
    done = node("get", job["name"])["ok"]
    assert done["state"] == "JOB_STATE_SUCCEEDED"
    assert done["destFile"] == f"files/batch-{job['name'].removeprefix('batches/')}"
    assert done["endTime"] is not None
    lines = node("download", done["destFile"])["lines"]
    assert [(line["key"], line["hasImage"], line["error"]) for line in lines] == [
        ("a", True, None),
        ("b", True, None),
        ("c", True, None),
    ]


def test_an_inline_batch_from_the_node_sdk_answers_in_request_order(
    node: Any, emu: EmulatorServer
) -> None:
    job = node("createInline", "gemini-3.1-flash-lite-image")
    emu.state.complete(job["name"])
    done = node("get", job["name"])["ok"]
    assert done["state"] == "JOB_STATE_SUCCEEDED"
    assert done["destFile"] is None
    assert done["inlined"] == [
        {"mime": "image/png", "error": None},
        {"mime": "image/png", "error": None},
    ]


def test_the_node_sdk_pages_through_batches_one_at_a_time(node: Any) -> None:
    names = {node("createInline", MODEL)["name"] for _ in range(3)}
    assert set(node("list")["names"]) == names


def test_cancel_and_delete_from_the_node_sdk_and_an_unknown_batch_is_a_404_api_error(
    node: Any,
) -> None:
    job = node("createInline", MODEL)
    assert node("cancel", job["name"]) == {"ok": "JOB_STATE_CANCELLED"}
    assert node("del", job["name"]) == {"ok": True}
    gone = node("get", job["name"])["error"]
    assert (gone["name"], gone["status"]) == ("ApiError", 404)
    assert gone["body"]["error"]["status"] == "NOT_FOUND"
    assert job["name"] in gone["body"]["error"]["message"]
