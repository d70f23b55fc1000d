"""IAM is exactly the least-privilege table in spec.py, each binding with the code path that
needs it, and nothing is public but the webhook.

The table, before and after a change:  .venv/bin/python -m tests.infra.iam_table
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bananabatch_infra.stack_config import PipelineArgs
from tests.infra import iam_table, spec
from tests.infra.checks import (
    Grant,
    Recorded,
    check_buckets_private,
    check_iam_exact,
    check_no_basic_roles,
    check_public_access,
    iam_grants,
)


@pytest.mark.parametrize("name", spec.IAM_SCENARIOS)
def test_iam_is_exactly_the_minimum_each_identity_needs(name: str) -> None:
    args = spec.scenario(name)
    assert check_iam_exact(spec.deployed(name), spec.expected_grants(args)) == []


@pytest.mark.parametrize("name", spec.IAM_SCENARIOS)
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


# --- every binding with the code path that needs it (tests/infra/iam_table.py prints them) ---


@pytest.mark.parametrize("name", spec.IAM_SCENARIOS)
def test_every_iam_binding_is_explained_by_the_code_path_that_needs_it(name: str) -> None:
    args = spec.scenario(name)
    table = iam_table.rows(spec.deployed(name), spec.explained_grants(args))
    unexplained = [r for r in table if r.code == iam_table.UNEXPLAINED]
    assert unexplained == [], iam_table.render(name, table)


def test_every_explanation_names_a_file_and_a_symbol_defined_there() -> None:
    root = Path(__file__).resolve().parents[2]
    codes = {
        need.code
        for name in spec.IAM_SCENARIOS
        for need in spec.explained_grants(spec.scenario(name)).values()
    }
    missing = []
    for code in sorted(codes):
        path, _, symbol = code.partition("::")
        source = root / path
        # Pipeline._build_identity: the class, then the method inside it
        if not source.is_file() or not all(
            re.search(rf"^\s*(def|class) {re.escape(part)}\b", source.read_text(), re.MULTILINE)
            for part in symbol.split(".")
        ):
            missing.append(code)
    assert missing == []
    assert len(codes) > 10


def test_a_binding_added_without_a_code_path_is_reported_unexplained() -> None:
    args = spec.scenario("gemini")
    dep = spec.deployed("gemini")
    extra = Recorded(
        "gcp:storage/bucketIAMMember:BucketIAMMember",
        "bb-bucket-tick-inbox",
        {
            "bucket": args.inbox_bucket,
            "role": "roles/storage.objectViewer",
            "member": spec.sa(args, "tick"),
        },
        "x",
        {},
    )
    table = iam_table.rows(dep.with_added(extra), spec.explained_grants(args))
    [row] = [r for r in table if r.code == iam_table.UNEXPLAINED]
    assert (row.member, row.role) == (f"{args.name_prefix}-tick", "storage.objectViewer")
    # and the exact check fails on it too
    assert check_iam_exact(dep.with_added(extra), spec.expected_grants(args)) != []


def test_the_table_printer_exits_non_zero_on_an_unexplained_binding(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert iam_table.main(["gemini"]) == 0
    assert "unexplained bindings: 0" in capsys.readouterr().out
    real = spec.explained_grants

    def fewer(args: PipelineArgs) -> dict[Grant, spec.Need]:
        return {g: n for g, n in real(args).items() if g.role != "roles/datastore.user"}

    monkeypatch.setattr(spec, "explained_grants", fewer)
    assert iam_table.main(["gemini"]) == 1
    assert "unexplained bindings: 3" in capsys.readouterr().out
