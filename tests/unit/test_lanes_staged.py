"""What the lanes' runner reads of a staged line (pipeline/lanes.py StagedSync): which kind
of lane serves it."""

from __future__ import annotations

from bananabatch.pipeline.lanes import ASYNC_KIND, StagedSync


def test_a_staged_line_says_when_its_lanes_are_async_callback_ones() -> None:
    doc = {"key": "b1", "model": "gemini-3-pro-image", "request": {}, "lanes": ["replicate"]}
    assert StagedSync.from_doc({**doc, "kind": ASYNC_KIND}).kind == ASYNC_KIND
    # Files staged before the async runner carry no kind: their lanes are synchronous.
    assert StagedSync.from_doc(doc).kind == "sync"
