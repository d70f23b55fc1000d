"""TTL fields reach Firestore as timestamps (a TTL policy ignores any other type, so a string
`expire_at` never expires anything), checked on the Firestore emulator through every write
path of the adapter, and for the cache entries the pipeline writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bananabatch.adapters.gcp.firestore import FirestoreStateStore
from bananabatch.config import Settings
from bananabatch.core.states import ItemState
from bananabatch.core.ttl import TTL_FIELDS
from bananabatch.errors import PermanentError
from tests.support.stacks import open_stack

pytestmark = pytest.mark.gcp

WHEN = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def state(firestore_emulator: str, gcp_project: str) -> FirestoreStateStore:
    return FirestoreStateStore.from_settings(Settings(project=gcp_project))


def _raw(state: FirestoreStateStore, path: str) -> object:
    snapshot = state._client.document(*path.split("/")).get()
    return (snapshot.to_dict() or {}).get("expire_at")


def test_the_ttl_field_is_expire_at() -> None:
    assert frozenset({"expire_at"}) == TTL_FIELDS


def test_every_write_path_stores_expire_at_as_a_timestamp(state: FirestoreStateStore) -> None:
    doc = {"n": 1, "expire_at": WHEN.isoformat()}
    state.create("cache/a", doc)
    state.set("cache/b", doc)
    state.set_many([("cache/c", doc)])
    state.update("cache/d", lambda _old: dict(doc))
    for name in "abcd":
        raw = _raw(state, f"cache/{name}")
        assert isinstance(raw, datetime), (name, type(raw))
        assert raw == WHEN
        # Through the port it reads back as the same instant, in ISO form.
        got = state.get(f"cache/{name}")
        assert got is not None
        assert datetime.fromisoformat(got["expire_at"]) == WHEN


def test_a_zone_less_or_unparseable_expiry_is_refused_not_stored_as_text(
    state: FirestoreStateStore,
) -> None:
    for bad in ("2027-01-02T03:04:05", "in two days", 1767322800):
        with pytest.raises(PermanentError, match="TTL field 'expire_at'"):
            state.set("cache/bad", {"expire_at": bad})
    assert state.get("cache/bad") is None


def test_cache_entries_expire_with_the_images_they_point_at(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with open_stack(request, "gcp", tmp_path, result_retention_days=30) as stack:
        job_id = stack.upload(stack.write(['{"key": "k1", "prompt": "a red apple"}']))
        stack.run(job_id)
        [item] = list(stack.repo.items(job_id))
        assert item.state is ItemState.SUCCEEDED
        assert item.request_hash
        raw = _raw(stack.runtime.state, f"cache/{item.request_hash}")  # type: ignore[arg-type]
        assert isinstance(raw, datetime), type(raw)
        expected = stack.runtime.now() + timedelta(days=30)
        assert abs(raw - expected) < timedelta(minutes=5)


def test_without_an_image_retention_cache_entries_do_not_expire(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with open_stack(request, "gcp", tmp_path) as stack:
        job_id = stack.upload(stack.write(['{"key": "k1", "prompt": "a red apple"}']))
        stack.run(job_id)
        [item] = list(stack.repo.items(job_id))
        doc = stack.runtime.state.get(f"cache/{item.request_hash}")
        assert doc is not None
        assert "expire_at" not in doc
