"""Fault-matrix scenarios of issue 13 (gemini area), on both stacks (the `stack` fixture),
each ending with the four invariants of tests/e2e/test_fault_matrix.py."""

from __future__ import annotations

import json

from bananabatch.core.states import ItemState
from tests.support.stacks import Stack, assert_invariants

GOOD = [
    '{"key": "g1", "prompt": "a red apple"}',
    '{"key": "g2", "prompt": "a green pear"}',
]


def _native_with_reference(key: str, uri: str) -> str:
    request = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "a fox like this one"},
                    {"fileData": {"fileUri": uri, "mimeType": "image/png"}},
                ],
            }
        ],
        "generationConfig": {"responseModalities": ["IMAGE"]},
    }
    return json.dumps({"key": key, "request": request})


def test_an_unreadable_reference_image_fails_its_row_for_good_and_spares_the_rest(
    stack: Stack,
) -> None:
    # A Files API file that does not exist (expired, never uploaded, another project's):
    # the service answers 403 for it, so the row fails; it is never sent again.
    gone = "https://generativelanguage.googleapis.com/v1beta/files/gonefile123"
    job_id = stack.upload(stack.write([*GOOD, _native_with_reference("ref", gone)]))
    summary = assert_invariants(stack, job_id, stack.settle(job_id))
    items = {i.key: i for i in stack.repo.items(job_id)}
    assert items["ref"].state is ItemState.FAILED
    assert items["ref"].error_code == 7
    assert items["ref"].reason is not None
    assert "permission to access the File gonefile123" in items["ref"].reason
    assert items["ref"].attempt == 1
    assert stack.emulator.state.submitted_keys()["ref"] == 1  # never retried
    assert items["g1"].state is ItemState.SUCCEEDED
    assert items["g2"].state is ItemState.SUCCEEDED
    assert summary["counts"]["SUCCEEDED"] == 2
    assert summary["counts"]["FAILED"] == 1
