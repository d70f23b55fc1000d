"""The provider's error answers, classified from the Google error body as the unmodified
google-genai SDK hands it over (`APIError.details` is the whole body): three kinds of 429,
the refused key, and the model that is gone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from google.genai import errors as genai_errors

from bananabatch.emulator.errors import (
    CreateFaultKind,
    create_fault_error,
    invalid_key,
    not_found,
)
from bananabatch.errors import (
    ModelUnavailable,
    PermanentError,
    ProviderAuthError,
    ProviderQuotaExceeded,
    QuotaKind,
    TransientError,
)
from bananabatch.providers import classify
from bananabatch.providers.gemini import create_errors

MODEL = "gemini-3.1-flash-image"


def _sdk_error(kind: CreateFaultKind) -> genai_errors.APIError:
    """What the SDK raises for the emulator's answer (the same class, built the same way)."""
    error = create_fault_error(kind, f"models/{MODEL}")
    body = error.envelope()
    cls = genai_errors.ClientError if error.http_status < 500 else genai_errors.ServerError
    return cls(error.http_status, body)


def _create_refusal(exc: genai_errors.APIError) -> Exception:
    with (
        pytest.raises(Exception, match="creating batch b") as caught,
        create_errors("creating batch b", "batch", model=MODEL),
    ):
        raise exc
    return caught.value


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("credits_depleted", QuotaKind.CREDITS_DEPLETED),
        ("spend_window", QuotaKind.SPEND_WINDOW),
        ("rate_limit", QuotaKind.RATE_LIMIT),
        ("rate_limit_no_retry_info", QuotaKind.RATE_LIMIT),
        ("unknown_429", QuotaKind.UNKNOWN),
    ],
)
def test_each_429_is_classified_by_its_body_as_the_sdk_gives_it(
    kind: CreateFaultKind, expected: QuotaKind
) -> None:
    exc = _sdk_error(kind)
    assert exc.code == 429
    assert isinstance(exc.details, dict)
    assert exc.details["error"]["details"], "the service's errors carry details"
    refusal = _create_refusal(exc)
    assert isinstance(refusal, ProviderQuotaExceeded)
    assert refusal.kind is expected


def test_a_rate_limit_carries_the_retry_delay_from_retry_info_and_others_do_not() -> None:
    with_info = _create_refusal(_sdk_error("rate_limit"))
    without = _create_refusal(_sdk_error("rate_limit_no_retry_info"))
    assert isinstance(with_info, ProviderQuotaExceeded)
    assert isinstance(without, ProviderQuotaExceeded)
    assert with_info.retry_after == timedelta(seconds=26)
    assert without.retry_after is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("26s", 26.0), ("1.5s", 1.5), ({"seconds": "3", "nanos": 500000000}, 3.5), ("soon", None)],
)
def test_retry_delay_reads_proto_duration_json(value: Any, seconds: float | None) -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "x",
            "details": [{"@type": classify.RETRY_INFO, "retryDelay": value}],
        }
    }
    delay = classify.retry_delay(classify.error_body(429, body))
    assert delay == (None if seconds is None else timedelta(seconds=seconds))


def test_the_credits_text_is_credits_depleted_whatever_else_the_body_says() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "Your prepayment credits are depleted. Please go to AI Studio.",
            "details": [{"@type": classify.RETRY_INFO, "retryDelay": "10s"}],
        }
    }
    assert classify.quota_kind(classify.error_body(429, body)) is QuotaKind.CREDITS_DEPLETED


@pytest.mark.parametrize("kind", ["unauthenticated", "invalid_key"])
def test_a_refused_key_is_a_fatal_configuration_error_never_retried(
    kind: CreateFaultKind,
) -> None:
    refusal = _create_refusal(_sdk_error(kind))
    assert isinstance(refusal, ProviderAuthError)
    assert isinstance(refusal, PermanentError)
    assert not isinstance(refusal, TransientError)
    assert "bananabatch resume" in str(refusal)


def test_the_invalid_key_answer_has_the_services_captured_shape() -> None:
    body = invalid_key().envelope()["error"]
    assert (body["code"], body["status"]) == (400, "INVALID_ARGUMENT")
    assert body["details"][0]["reason"] == "API_KEY_INVALID"
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert body["details"][1]["@type"] == "type.googleapis.com/google.rpc.LocalizedMessage"


def test_a_model_the_service_does_not_serve_is_a_permanent_model_error() -> None:
    refusal = _create_refusal(_sdk_error("model_not_found"))
    assert isinstance(refusal, ModelUnavailable)
    assert refusal.model == MODEL


def test_other_404s_and_400s_are_plain_permanent_errors() -> None:
    exc = genai_errors.ClientError(404, not_found("File files/abc was not found.").envelope())
    refusal = _create_refusal(exc)
    assert type(refusal) is PermanentError


def test_every_emulator_error_carries_details() -> None:
    for error in (not_found("x"), invalid_key(), create_fault_error("unknown_429", "m")):
        details = error.envelope()["error"]["details"]
        assert details
        assert all(d["@type"].startswith("type.googleapis.com/google.rpc.") for d in details)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            404,
            "models/gemini-3.1-flash-image is not found for API version v1beta, or is not "
            "supported for batchGenerateContent. Call ListModels to see the list of available "
            "models and their supported methods.",
        ),
        (400, "models/x is not supported for batchGenerateContent."),
        (
            404,
            "Publisher model `projects/p/locations/us-central1/publishers/google/models/x` "
            "not found or your project does not have access to it.",
        ),
        (404, "Model gemini-2.5-flash-image has been shut down."),
    ],
)
def test_a_model_the_service_does_not_serve_is_recognised(code: int, message: str) -> None:
    assert classify.is_model_gone(classify.error_body(code, {"error": {"message": message}}))


@pytest.mark.parametrize(
    ("code", "message"),
    [
        # A bad request about one line is not a model gone for the whole deployment.
        (400, "The model gemini-3.1-flash-lite-image is not supported for image size 2K."),
        (400, "Model parameter imageSize is not supported with this model."),
        (404, "Batch batches/abc not found."),
        (403, "models/x is not found for API version v1beta"),
    ],
)
def test_other_refusals_that_name_a_model_do_not_mark_it_gone(code: int, message: str) -> None:
    assert not classify.is_model_gone(classify.error_body(code, {"error": {"message": message}}))
