"""The StateStore contract, run against every backend in conftest.BACKENDS."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bananabatch.errors import PermanentError
from bananabatch.ports import Doc, StateStore, Where
from tests.contract.harness import StateUnderTest

THREADS = 8
INCREMENTS = 25


class Boom(Exception):
    pass


def _run_in_threads(count: int, target: Any) -> list[BaseException]:
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def _ids(docs: Iterator[Doc] | list[Doc]) -> list[str]:
    return [doc["id"] for doc in docs]


@pytest.fixture
def widgets(state_under_test: StateUnderTest) -> StateStore:
    """Ten documents in `widgets`: n 0..9, colour by n % 3, a flag on even n."""
    store = state_under_test.store
    colours = ["red", "green", "blue"]
    store.set_many(
        (
            f"widgets/w{n}",
            {"id": f"w{n}", "n": n, "colour": colours[n % 3], "even": n % 2 == 0, "half": n / 2},
        )
        for n in range(10)
    )
    return store


def test_get_returns_none_for_an_absent_document(state_under_test: StateUnderTest) -> None:
    assert state_under_test.store.get("jobs/nope") is None


def test_create_returns_true_when_it_creates_the_document(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    assert store.create("jobs/j1", {"state": "RECEIVED"}) is True
    assert store.get("jobs/j1") == {"state": "RECEIVED"}


def test_create_returns_false_when_the_document_already_exists(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.create("jobs/j1", {"state": "RECEIVED"})
    assert store.create("jobs/j1", {"state": "RUNNING"}) is False
    assert store.get("jobs/j1") == {"state": "RECEIVED"}


def test_exactly_one_of_many_concurrent_creates_wins(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    results: dict[int, bool] = {}

    def create(i: int) -> None:
        results[i] = store.create("locks/once", {"owner": i})

    assert _run_in_threads(THREADS, create) == []
    winners = [i for i, won in results.items() if won]
    assert len(winners) == 1
    assert store.get("locks/once") == {"owner": winners[0]}


def test_create_many_creates_only_the_absent_documents_and_names_them(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.create("claims/b", {"owner": "earlier"})
    docs = {f"{c}": {"owner": "me"} for c in "abc"}
    assert store.create_many("claims", docs) == {"a", "c"}
    assert store.get("claims/b") == {"owner": "earlier"}
    assert store.get("claims/a") == {"owner": "me"}
    assert store.create_many("claims", docs) == set()
    assert store.create_many("claims", {}) == set()


def test_create_many_of_more_than_one_commit_worth_creates_every_document(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    docs = {f"c{n:04d}": {"n": n} for n in range(1203)}
    assert store.create_many("claims", docs) == set(docs)
    assert store.count("claims") == 1203


def test_concurrent_create_many_calls_create_each_document_exactly_once(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    ids = [f"h{n}" for n in range(40)]
    won: dict[int, set[str]] = {}

    def create(i: int) -> None:
        # Each caller asks for the ids in its own order, all overlapping.
        mine = ids[i:] + ids[:i]
        won[i] = store.create_many("claims", {doc_id: {"owner": i} for doc_id in mine})

    assert _run_in_threads(THREADS, create) == []
    every = [doc_id for got in won.values() for doc_id in got]
    assert sorted(every) == sorted(ids)
    for i, got in won.items():
        for doc_id in got:
            assert store.get(f"claims/{doc_id}") == {"owner": i}


def test_set_creates_and_then_replaces_the_whole_document(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set("jobs/j1", {"a": 1, "b": 2})
    store.set("jobs/j1", {"b": 3})
    assert store.get("jobs/j1") == {"b": 3}


def test_nested_json_values_round_trip_exactly(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    doc = {
        "text": 'ünïcode ✓ "quoted" \n newline',
        "int": 3,
        # The Node Firestore emulator stores numbers as JS doubles; production keeps int64.
        "big": 2**53 - 1,
        "negative": -17,
        "float": 0.1,
        "whole_float": 2.0,
        "tiny": 1e-300,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "two", 3.5, None, False, {"k": ["v"]}],
        "map": {"inner": {"deeper": {"x": [1.25, "y"]}}, "empty_map": {}, "empty_list": []},
        "dotted.key": "kept",
    }
    store.set("jobs/j1/items/k1", doc)
    got = store.get("jobs/j1/items/k1")
    assert got == doc
    assert got is not None
    assert type(got["whole_float"]) is float
    assert type(got["int"]) is int
    assert type(got["big"]) is int
    assert type(got["true"]) is bool


def test_get_returns_a_copy_that_does_not_change_the_store(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set("jobs/j1", {"counts": {"a": 1}})
    got = store.get("jobs/j1")
    assert got is not None
    got["counts"]["a"] = 99
    assert store.get("jobs/j1") == {"counts": {"a": 1}}


def test_update_of_an_absent_document_gets_none_and_creates_what_fn_returns(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    seen: list[Doc | None] = []

    def fn(doc: Doc | None) -> Doc | None:
        seen.append(doc)
        return {"n": 1}

    assert store.update("counters/c", fn) == {"n": 1}
    assert seen[-1] is None
    assert store.get("counters/c") == {"n": 1}


def test_update_passes_the_current_document_and_returns_the_new_one(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set("counters/c", {"n": 1, "keep": "me"})
    after = store.update("counters/c", lambda doc: {**(doc or {}), "n": (doc or {})["n"] + 1})
    assert after == {"n": 2, "keep": "me"}
    assert store.get("counters/c") == {"n": 2, "keep": "me"}


def test_update_where_fn_returns_none_writes_nothing(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    store.set("counters/c", {"n": 5})

    def mutate_then_decline(doc: Doc | None) -> Doc | None:
        assert doc is not None
        doc["n"] = 100  # mutating the argument must not leak into the store
        return None

    assert store.update("counters/c", mutate_then_decline) == {"n": 5}
    assert store.get("counters/c") == {"n": 5}
    assert store.update("counters/absent", lambda doc: None) is None
    assert store.get("counters/absent") is None


def test_update_where_fn_raises_propagates_and_writes_nothing(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set("counters/c", {"n": 5})

    def fail(doc: Doc | None) -> Doc | None:
        raise Boom

    with pytest.raises(Boom):
        store.update("counters/c", fail)
    with pytest.raises(Boom):
        store.update("counters/absent", fail)
    assert store.get("counters/c") == {"n": 5}
    assert store.get("counters/absent") is None


def test_concurrent_updates_lose_no_increment(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    store.set("counters/c", {"n": 0})

    def increment(doc: Doc | None) -> Doc | None:
        return {"n": (doc or {"n": 0})["n"] + 1}

    def worker(_: int) -> None:
        for _ in range(INCREMENTS):
            store.update("counters/c", increment)

    assert _run_in_threads(THREADS, worker) == []
    assert store.get("counters/c") == {"n": THREADS * INCREMENTS}


def test_set_many_writes_more_than_one_commit_worth_of_documents(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    total = 600
    written = store.set_many((f"jobs/j1/items/k{i:04d}", {"i": i}) for i in range(total))
    assert written == total
    assert store.count("jobs/j1/items") == total
    assert store.get("jobs/j1/items/k0000") == {"i": 0}
    assert store.get("jobs/j1/items/k0599") == {"i": 599}


def test_set_many_replaces_existing_documents(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    store.set("batches/b1", {"state": "QUEUED", "old": True})
    assert store.set_many([("batches/b1", {"state": "RUNNING"}), ("jobs/j1", {"x": 1})]) == 2
    assert store.get("batches/b1") == {"state": "RUNNING"}
    assert store.get("jobs/j1") == {"x": 1}


def test_set_many_of_nothing_returns_zero(state_under_test: StateUnderTest) -> None:
    assert state_under_test.store.set_many([]) == 0


def test_get_many_returns_the_documents_that_exist_keyed_by_id(
    widgets: StateStore,
) -> None:
    got = widgets.get_many("widgets", ["w1", "absent", "w7"])
    assert got == {
        "w1": {"id": "w1", "n": 1, "colour": "green", "even": False, "half": 0.5},
        "w7": {"id": "w7", "n": 7, "colour": "green", "even": False, "half": 3.5},
    }


def test_get_many_of_nothing_or_only_absent_ids_is_empty(widgets: StateStore) -> None:
    assert widgets.get_many("widgets", []) == {}
    assert widgets.get_many("widgets", ["nope", "none"]) == {}
    assert widgets.get_many("gadgets", ["w1"]) == {}


def test_get_many_reads_more_than_one_page_and_repeated_ids_once(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set_many((f"cache/h{i:04d}", {"i": i}) for i in range(0, 1200, 2))
    ids = [f"h{i:04d}" for i in range(1200)] + ["h0000", "h0002"]
    got = store.get_many("cache", ids)
    assert len(got) == 600
    assert got["h0000"] == {"i": 0}
    assert got["h1198"] == {"i": 1198}
    assert "h0001" not in got


def test_get_many_in_a_subcollection_sees_only_that_collection(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set("jobs/j1/items/k1", {"job": "j1"})
    store.set("jobs/j2/items/k1", {"job": "j2"})
    assert store.get_many("jobs/j2/items", ["k1", "k2"]) == {"k1": {"job": "j2"}}


def test_get_many_returns_copies(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    store.set("cache/h", {"nested": {"a": 1}})
    store.get_many("cache", ["h"])["h"]["nested"]["a"] = 2
    assert store.get("cache/h") == {"nested": {"a": 1}}


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_get_many_refuses_an_id_that_is_not_one_path_segment(
    state_under_test: StateUnderTest, bad: str
) -> None:
    with pytest.raises(PermanentError, match="get_many in cache"):
        state_under_test.store.get_many("cache", ["fine", bad])


def test_get_many_refuses_a_document_path_as_collection(state_under_test: StateUnderTest) -> None:
    with pytest.raises(PermanentError):
        state_under_test.store.get_many("jobs/j1", ["x"])


def test_query_without_filters_returns_every_document_of_the_collection(
    widgets: StateStore,
) -> None:
    assert sorted(_ids(widgets.query("widgets"))) == sorted(f"w{n}" for n in range(10))


def test_query_returns_an_iterator(widgets: StateStore) -> None:
    result = widgets.query("widgets")
    assert iter(result) is result
    assert next(result)["id"].startswith("w")


def test_query_filters_with_equals(widgets: StateStore) -> None:
    assert sorted(_ids(widgets.query("widgets", [Where("colour", "==", "red")]))) == [
        "w0",
        "w3",
        "w6",
        "w9",
    ]
    assert sorted(_ids(widgets.query("widgets", [Where("n", "==", 4)]))) == ["w4"]


def test_query_filters_with_equals_on_a_bool(widgets: StateStore) -> None:
    found = sorted(_ids(widgets.query("widgets", [Where("even", "==", True)])))
    assert found == ["w0", "w2", "w4", "w6", "w8"]


def test_query_filters_with_in(widgets: StateStore) -> None:
    found = widgets.query("widgets", [Where("colour", "in", ["green", "blue"])])
    assert sorted(_ids(found)) == ["w1", "w2", "w4", "w5", "w7", "w8"]


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("<", 3, ["w0", "w1", "w2"]),
        ("<=", 3, ["w0", "w1", "w2", "w3"]),
        (">", 7, ["w8", "w9"]),
        (">=", 7, ["w7", "w8", "w9"]),
        ("<", 1.5, ["w0", "w1"]),
    ],
)
def test_query_filters_with_a_range_on_numbers(
    widgets: StateStore, op: Any, value: Any, expected: list[str]
) -> None:
    assert sorted(_ids(widgets.query("widgets", [Where("n", op, value)]))) == expected


def test_query_filters_with_a_range_on_strings(widgets: StateStore) -> None:
    found = widgets.query("widgets", [Where("colour", ">=", "green")])
    assert sorted(_ids(found)) == ["w0", "w1", "w3", "w4", "w6", "w7", "w9"]


def test_query_combines_filters_with_and(widgets: StateStore) -> None:
    found = widgets.query("widgets", [Where("colour", "==", "red"), Where("n", ">", 3)])
    assert sorted(_ids(found)) == ["w6", "w9"]


def test_query_filters_on_a_nested_field(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    store.set("jobs/a", {"id": "a", "source": {"bucket": "inbox"}})
    store.set("jobs/b", {"id": "b", "source": {"bucket": "other"}})
    assert _ids(store.query("jobs", [Where("source.bucket", "==", "inbox")])) == ["a"]


def test_query_orders_by_a_field(widgets: StateStore) -> None:
    assert _ids(widgets.query("widgets", order_by="half")) == [f"w{n}" for n in range(10)]
    by_colour = [doc["colour"] for doc in widgets.query("widgets", order_by="colour")]
    assert by_colour == sorted(by_colour)


def test_query_limit_caps_the_results(widgets: StateStore) -> None:
    assert _ids(widgets.query("widgets", order_by="n", limit=3)) == ["w0", "w1", "w2"]
    assert len(list(widgets.query("widgets", limit=4))) == 4
    filtered = widgets.query("widgets", [Where("colour", "==", "blue")], order_by="n", limit=2)
    assert _ids(filtered) == ["w2", "w5"]


def test_query_streams_past_one_page_while_another_thread_writes(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set_many((f"many/d{i:04d}", {"id": f"d{i:04d}", "i": i}) for i in range(600))
    results = store.query("many", order_by="i")
    first = next(results)
    # A half-consumed query must not hold anything that blocks writers.
    writer = threading.Thread(target=store.set, args=("other/x", {"written": True}))
    writer.start()
    writer.join(timeout=60)
    assert not writer.is_alive()
    rest = list(results)
    assert [first["i"], *(doc["i"] for doc in rest)] == list(range(600))
    assert store.get("other/x") == {"written": True}


def test_subcollections_are_kept_apart_from_their_parent_collection(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set("jobs/J", {"id": "J", "kind": "job"})
    store.set("jobs/K", {"id": "K", "kind": "job"})
    store.set("jobs/J/items/a", {"id": "a", "kind": "item"})
    store.set("jobs/J/items/b", {"id": "b", "kind": "item"})
    store.set("jobs/K/items/c", {"id": "c", "kind": "item"})

    assert sorted(_ids(store.query("jobs"))) == ["J", "K"]
    assert sorted(_ids(store.query("jobs/J/items"))) == ["a", "b"]
    assert _ids(store.query("jobs/K/items")) == ["c"]
    assert store.count("jobs") == 2
    assert store.count("jobs/J/items") == 2


def test_count_counts_matching_documents(widgets: StateStore) -> None:
    assert widgets.count("widgets") == 10
    assert widgets.count("widgets", [Where("colour", "==", "green")]) == 3
    assert widgets.count("widgets", [Where("n", ">=", 5), Where("even", "==", False)]) == 3
    assert widgets.count("empty") == 0


def test_delete_removes_a_document(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    store.set("jobs/j1", {"x": 1})
    store.set("jobs/j2", {"x": 2})
    store.delete("jobs/j1")
    assert store.get("jobs/j1") is None
    assert store.count("jobs") == 1
    assert store.create("jobs/j1", {"x": 3}) is True


def test_delete_of_an_absent_document_is_not_an_error(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    store.delete("jobs/never")
    assert store.get("jobs/never") is None


def test_delete_of_a_document_leaves_its_subcollection_alone(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    store.set("jobs/J", {"id": "J"})
    store.set("jobs/J/items/a", {"id": "a"})
    store.delete("jobs/J")
    assert store.get("jobs/J/items/a") == {"id": "a"}


@pytest.mark.parametrize("path", ["jobs", "jobs/J/items", ""])
def test_document_operations_reject_a_collection_path(
    state_under_test: StateUnderTest, path: str
) -> None:
    store = state_under_test.store
    with pytest.raises(PermanentError):
        store.get(path)
    with pytest.raises(PermanentError):
        store.set(path, {"x": 1})
    with pytest.raises(PermanentError):
        store.create(path, {"x": 1})


@pytest.mark.parametrize("path", ["jobs/J", "jobs/J/items/k"])
def test_collection_operations_reject_a_document_path(
    state_under_test: StateUnderTest, path: str
) -> None:
    store = state_under_test.store
    with pytest.raises(PermanentError):
        list(store.query(path))
    with pytest.raises(PermanentError):
        store.count(path)


# --- TTL fields (core/ttl.py): an aware ISO time in, the same instant out, on every store -----


def test_a_ttl_field_reads_back_as_the_same_instant_in_utc_through_every_write_path(
    state_under_test: StateUnderTest,
) -> None:
    store = state_under_test.store
    # Written in another zone; read back normalised to UTC, the form Firestore returns.
    doc = {"n": 1, "expire_at": "2027-01-02T05:04:05+02:00"}
    store.create("ttl/a", doc)
    store.set("ttl/b", doc)
    store.set_many([("ttl/c", doc)])
    store.update("ttl/d", lambda _old: dict(doc))
    for name in "abcd":
        assert store.get(f"ttl/{name}") == {"n": 1, "expire_at": "2027-01-02T03:04:05+00:00"}
    assert store.update("ttl/d", lambda old: old) == {
        "n": 1,
        "expire_at": "2027-01-02T03:04:05+00:00",
    }


def test_a_null_ttl_field_means_no_expiry_and_is_kept(state_under_test: StateUnderTest) -> None:
    store = state_under_test.store
    store.set("ttl/none", {"expire_at": None})
    assert store.get("ttl/none") == {"expire_at": None}


@pytest.mark.parametrize("bad", ["2027-01-02T03:04:05", "in two days", 1798858800, True])
def test_a_ttl_field_that_is_not_an_aware_time_is_refused_by_every_write_path(
    state_under_test: StateUnderTest, bad: Any
) -> None:
    store = state_under_test.store
    writes: list[Callable[[], object]] = [
        lambda: store.create("ttl/bad", {"expire_at": bad}),
        lambda: store.set("ttl/bad", {"expire_at": bad}),
        lambda: store.set_many([("ttl/bad", {"expire_at": bad})]),
        lambda: store.update("ttl/bad", lambda _old: {"expire_at": bad}),
    ]
    for write in writes:
        with pytest.raises(PermanentError, match="TTL field 'expire_at'"):
            write()
    assert store.get("ttl/bad") is None
