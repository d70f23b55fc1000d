from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped, unused-ignore]  # no stubs installed
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.core.messages import (
    completion_message,
    encode_message,
    load_completion_schema,
    message_attributes,
)
from bananabatch.core.records import SCHEMA_VERSION, Costs, JobRecord, SourceObject
from bananabatch.core.states import ItemState, JobState
from bananabatch.errors import PermanentError

# jsonschema checks "date-time" and "uri" only when optional packages are installed; these
# stand-ins make the format checks real here without adding a dependency.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
FORMATS = jsonschema.FormatChecker()


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    return True


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc or parts.path)


FORMATS.checks("date-time", raises=ValueError)(_is_datetime)
FORMATS.checks("uri")(_is_uri)

SCHEMA = load_completion_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=FORMATS)

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PUBLISHABLE = [JobState.HELD, JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED]


def _job(**overrides: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "job_id": "prompts-0123456789ab",
        "state": JobState.PARTIAL,
        "source": SourceObject(bucket="inbox", name="drops/prompts.jsonl", generation="17"),
        "created_at": T0,
        "updated_at": T0 + timedelta(minutes=30),
        "finished_at": T0 + timedelta(minutes=30),
        "default_model": "gemini-2.5-flash-image",
        "results_prefix": "jobs/prompts-0123456789ab/",
        "line_count": 10,
        "counts": {"SUCCEEDED": 6, "CACHED": 1, "BLOCKED": 1, "FAILED": 1, "REJECTED": 1},
        "costs": Costs(
            estimated_usd=0.39,
            standard_equivalent_usd=0.546,
            actual_usd=0.273,
            saved_usd=0.273,
            cost_per_accepted_image_usd=0.039,
        ),
    }
    fields.update(overrides)
    return JobRecord(**fields)


def _message(job: JobRecord | None = None, **kwargs: Any) -> dict[str, Any]:
    return completion_message(
        job or _job(),
        results_prefix_uri="gs://results/jobs/prompts-0123456789ab/",
        **kwargs,
    )


def _errors(message: dict[str, Any]) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(message)]


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_counts_require_exactly_the_item_states() -> None:
    counts = SCHEMA["properties"]["counts"]
    assert set(counts["required"]) == {state.value for state in ItemState}
    assert set(counts["properties"]) == {state.value for state in ItemState}


def test_schema_state_enum_is_held_plus_the_terminal_job_states() -> None:
    assert set(SCHEMA["properties"]["state"]["enum"]) == {
        "HELD",
        "SUCCEEDED",
        "PARTIAL",
        "FAILED",
        "CANCELLED",
    }


def test_loaded_schema_is_a_fresh_copy_each_time() -> None:
    first = load_completion_schema()
    first["required"].clear()
    assert load_completion_schema()["required"]


def test_message_carries_the_contract_fields() -> None:
    message = _message(
        summary_uri="gs://results/jobs/prompts-0123456789ab/summary.json",
        gallery_uri="gs://results/jobs/prompts-0123456789ab/index.html",
    )

    assert message["schema_version"] == SCHEMA_VERSION == 1
    assert message["job_id"] == "prompts-0123456789ab"
    assert message["state"] == "PARTIAL"
    assert message["source"] == {
        "bucket": "inbox",
        "name": "drops/prompts.jsonl",
        "generation": "17",
        "uri": "gs://inbox/drops/prompts.jsonl",
    }
    assert message["results_prefix"] == "gs://results/jobs/prompts-0123456789ab/"
    assert message["line_count"] == 10
    assert message["costs"] == {
        "estimated_usd": 0.39,
        "actual_usd": 0.273,
        "standard_equivalent_usd": 0.546,
        "saved_usd": 0.273,
        "cost_per_accepted_image_usd": 0.039,
    }
    assert message["created_at"] == "2025-06-01T12:00:00Z"
    assert message["finished_at"] == "2025-06-01T12:30:00Z"
    assert message["summary_uri"].endswith("/summary.json")
    assert message["gallery_uri"].endswith("/index.html")
    assert _errors(message) == []


def test_counts_list_every_item_state_with_zeros_and_drop_unknown_names() -> None:
    job = _job(counts={"SUCCEEDED": 3, "bogus": 9})

    counts = _message(job)["counts"]

    assert counts == {
        "PENDING": 0,
        "SUBMITTED": 0,
        "SUCCEEDED": 3,
        "BLOCKED": 0,
        "FAILED": 0,
        "REJECTED": 0,
        "CACHED": 0,
    }


def test_optional_uris_and_reason_are_absent_when_not_known() -> None:
    message = _message(_job(state=JobState.SUCCEEDED))

    assert "summary_uri" not in message
    assert "gallery_uri" not in message
    assert "reason" not in message


def test_failed_job_reason_is_the_first_line_of_its_error_shortened() -> None:
    error = "every batch expired: provider said EXPIRED\n" + "trace " * 200
    message = _message(_job(state=JobState.FAILED, error=error))

    assert message["reason"] == "every batch expired: provider said EXPIRED"
    assert _errors(message) == []


def test_overlong_reason_is_cut_with_an_ellipsis() -> None:
    message = _message(_job(state=JobState.FAILED, error="x" * 1000))

    assert len(message["reason"]) == 300
    assert message["reason"].endswith("…")


def test_held_message_has_no_finish_time_and_explains_itself() -> None:
    held = _job(state=JobState.HELD, finished_at=None, counts={"PENDING": 10})

    message = _message(held)

    assert message["state"] == "HELD"
    assert message["finished_at"] is None
    assert "budget" in message["reason"]
    assert message["counts"]["PENDING"] == 10
    assert _errors(message) == []


def test_held_message_prefers_the_recorded_error_as_reason() -> None:
    held = _job(state=JobState.HELD, finished_at=None, error="estimate $120.00 > budget $50.00")

    assert _message(held)["reason"] == "estimate $120.00 > budget $50.00"


@pytest.mark.parametrize("state", [JobState.RECEIVED, JobState.RUNNING])
def test_non_terminal_jobs_other_than_held_have_no_completion_message(state: JobState) -> None:
    with pytest.raises(PermanentError, match=state.value):
        _message(_job(state=state, finished_at=None))


def test_timestamps_are_utc_with_z_even_from_other_offsets_and_naive_values() -> None:
    plus_two = timezone(timedelta(hours=2))
    job = _job(
        created_at=datetime(2025, 6, 1, 14, 0, tzinfo=plus_two),
        finished_at=datetime(2025, 6, 1, 12, 30, 15, 250000),
    )

    message = _message(job)

    assert message["created_at"] == "2025-06-01T12:00:00Z"
    assert message["finished_at"] == "2025-06-01T12:30:15.250000Z"
    assert _errors(message) == []


def test_costs_are_rounded_to_micro_dollars() -> None:
    job = _job(costs=Costs(actual_usd=0.1 + 0.2, cost_per_accepted_image_usd=None))

    costs = _message(job)["costs"]

    assert costs["actual_usd"] == 0.3
    assert costs["cost_per_accepted_image_usd"] is None


def test_attributes_are_strings_for_subscription_filters() -> None:
    attributes = message_attributes(_message())

    assert attributes == {
        "kind": "completion",
        "job_id": "prompts-0123456789ab",
        "state": "PARTIAL",
        "schema_version": "1",
    }


def test_encoding_is_compact_utf8_json_that_round_trips() -> None:
    message = _message(_job(state=JobState.FAILED, error="modèle indisponible ☂"))

    data = encode_message(message)

    assert json.loads(data.decode("utf-8")) == message
    assert b": " not in data
    assert b", " not in data
    assert "☂".encode() in data


def test_encoding_refuses_nan() -> None:
    message = _message()
    message["costs"]["actual_usd"] = float("nan")

    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_message(message)


def _mutations() -> list[tuple[str, Any]]:
    def drop(*path: str) -> Any:
        def apply(message: dict[str, Any]) -> None:
            target = message
            for part in path[:-1]:
                target = target[part]
            del target[path[-1]]

        return apply

    def put(value: Any, *path: str) -> Any:
        def apply(message: dict[str, Any]) -> None:
            target = message
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = value

        return apply

    return [
        ("missing job_id", drop("job_id")),
        ("missing schema_version", drop("schema_version")),
        ("missing results_prefix", drop("results_prefix")),
        ("missing source generation", drop("source", "generation")),
        ("missing a count", drop("counts", "BLOCKED")),
        ("missing cost per image", drop("costs", "cost_per_accepted_image_usd")),
        ("missing finished_at", drop("finished_at")),
        ("wrong schema version", put(2, "schema_version")),
        ("non-terminal state", put("RUNNING", "state")),
        ("lowercase state", put("succeeded", "state")),
        ("negative count", put(-1, "counts", "FAILED")),
        ("fractional count", put(1.5, "counts", "FAILED")),
        ("negative line count", put(-3, "line_count")),
        ("negative cost", put(-0.5, "costs", "actual_usd")),
        ("string cost", put("0.5", "costs", "actual_usd")),
        ("extra top-level field", put("x", "extra")),
        ("extra count", put(1, "counts", "LOST")),
        ("extra source field", put("x", "source", "md5")),
        ("extra cost field", put(0.0, "costs", "tax_usd")),
        ("bad created_at", put("yesterday", "created_at")),
        ("date without time", put("2025-06-01", "finished_at")),
        ("timestamp without offset", put("2025-06-01T12:00:00", "created_at")),
        ("relative results prefix", put("jobs/x/", "results_prefix")),
        ("empty reason", put("", "reason")),
    ]


@pytest.mark.parametrize(("label", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_schema_rejects_a_broken_message(label: str, mutate: Any) -> None:
    message = copy.deepcopy(_message())
    assert _errors(message) == []

    mutate(message)

    assert _errors(message), f"{label} was accepted"


_states = st.sampled_from(
    [JobState.HELD, JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED, JobState.CANCELLED]
)
_money = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
_when = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.one_of(st.none(), st.timezones()),
)
_text = st.text(min_size=1, max_size=40)


@st.composite
def _jobs(draw: st.DrawFn) -> JobRecord:
    counts = draw(
        st.dictionaries(st.sampled_from([s.value for s in ItemState]), st.integers(0, 10**6))
    )
    return JobRecord(
        job_id=draw(st.from_regex(r"[a-z0-9-]{1,60}", fullmatch=True)),
        state=draw(_states),
        source=SourceObject(
            bucket=draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{2,30}", fullmatch=True)),
            name=draw(_text),
            generation=draw(st.from_regex(r"[0-9]{1,19}", fullmatch=True)),
        ),
        created_at=draw(_when),
        updated_at=draw(_when),
        finished_at=draw(st.one_of(st.none(), _when)),
        default_model="gemini-2.5-flash-image",
        results_prefix="jobs/x/",
        line_count=sum(counts.values()),
        counts=counts,
        costs=Costs(
            estimated_usd=draw(_money),
            standard_equivalent_usd=draw(_money),
            actual_usd=draw(_money),
            saved_usd=draw(st.floats(-1e6, 1e6)),
            cost_per_accepted_image_usd=draw(st.one_of(st.none(), _money)),
        ),
        error=draw(st.one_of(st.none(), st.text(max_size=400))),
    )


@settings(max_examples=300, deadline=None)
@given(
    job=_jobs(),
    summary=st.sampled_from([None, "gs://r/jobs/x/summary.json"]),
    gallery=st.sampled_from([None, "gs://r/jobs/x/index.html"]),
)
def test_every_message_from_valid_records_validates(
    job: JobRecord, summary: str | None, gallery: str | None
) -> None:
    message = completion_message(
        job,
        results_prefix_uri="gs://results/jobs/x/",
        summary_uri=summary,
        gallery_uri=gallery,
    )

    assert _errors(message) == []
    assert json.loads(encode_message(message)) == message
    attributes = message_attributes(message)
    assert attributes["state"] == job.state.value
    assert all(isinstance(value, str) for value in attributes.values())


def test_the_format_checker_really_checks_formats() -> None:
    # Guards the stand-ins above: if they stopped running, the mutation tests on formats
    # would pass for the wrong reason or not at all.
    assert not FORMATS.conforms("yesterday", "date-time")
    assert FORMATS.conforms("2025-06-01T12:00:00.5+02:00", "date-time")
    assert not FORMATS.conforms("2025-13-01T12:00:00Z", "date-time")
    assert not FORMATS.conforms("jobs/x/", "uri")
