"""IAM is exactly the least-privilege table in spec.py, and nothing is public but the webhook."""

from __future__ import annotations

import pytest

from tests.infra import spec
from tests.infra.checks import (
    check_buckets_private,
    check_iam_exact,
    check_no_basic_roles,
    check_public_access,
    iam_grants,
)


@pytest.mark.parametrize("name", spec.SCENARIOS)
def test_iam_is_exactly_the_minimum_each_identity_needs(name: str) -> None:
    args = spec.scenario(name)
    assert check_iam_exact(spec.deployed(name), spec.expected_grants(args)) == []


@pytest.mark.parametrize("name", spec.SCENARIOS)
def test_no_owner_editor_or_viewer_role_is_granted(name: str) -> None:
    assert check_no_basic_roles(spec.deployed(name)) == []


@pytest.mark.parametrize("name", ["gemini", "vertex"])
def test_nothing_is_public_when_webhooks_are_off(name: str) -> None:
    assert check_public_access(spec.deployed(name), webhook_service=None) == []


@pytest.mark.parametrize("name", ["gemini-static", "gemini-dynamic"])
def test_only_the_webhook_receiver_is_invokable_by_anyone(name: str) -> None:
    args = spec.scenario(name)
    service = spec.function_name(args, "on_gemini_webhook")
    assert check_public_access(spec.deployed(name), webhook_service=service) == []


@pytest.mark.parametrize("name", spec.SCENARIOS)
def test_buckets_enforce_uniform_access_and_public_access_prevention(name: str) -> None:
    assert check_buckets_private(spec.deployed(name)) == []


def test_project_level_grants_are_only_those_gcp_offers_no_narrower_binding_for() -> None:
    grants, _ = iam_grants(spec.deployed("vertex"))
    project_roles = {g.role for g in grants if g.scope.startswith("project:")}
    assert project_roles == {
        "roles/datastore.user",  # Firestore has no per-collection IAM
        "roles/aiplatform.user",  # Vertex AI has no per-job IAM
        "roles/eventarc.eventReceiver",  # granted on projects only
        "roles/pubsub.publisher",  # the storage agent publishes to Eventarc's own topic
        "roles/logging.logWriter",  # build logs
        "roles/storage.objectViewer",  # build identity, conditioned to the staging bucket
    }
    conditioned = [
        g
        for g in grants
        if g.role == "roles/storage.objectViewer" and g.scope.startswith("project:")
    ]
    assert all(g.condition for g in conditioned)


def test_the_webhook_identity_cannot_touch_buckets_or_completions() -> None:
    args = spec.scenario("gemini-static")
    grants, _ = iam_grants(spec.deployed("gemini-static"))
    webhook = spec.sa(args, "webhook")
    scopes = {g.scope for g in grants if g.member == webhook}
    # No project scope: the public receiver holds no Firestore (or any project) rights.
    assert scopes == {
        f"topic:{args.topic_name('batch-done')}",
        f"secret:{args.name_prefix}-webhook-signing-secret",
    }
