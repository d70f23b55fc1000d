"""The deployer account: listed roles that cover every resource the program manages, no
basic role, and project IAM only for the roles the program itself grants."""

from __future__ import annotations

from pathlib import Path

import pytest

from bananabatch_infra.deployer import (
    BILLING_ACCOUNT_ROLES,
    DEPLOYER_ROLES,
    PROJECT_ROLES_GRANTED,
    RESOURCE_ROLES,
    bootstrap_commands,
    project_iam_condition,
)
from tests.infra import spec
from tests.infra.checks import BASIC_ROLES, iam_grants

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = "bananabatch:index:Pipeline"


def test_the_deployer_holds_no_basic_role_and_nothing_admin_over_the_whole_project() -> None:
    assert set(DEPLOYER_ROLES).isdisjoint(BASIC_ROLES)
    assert "roles/resourcemanager.projectIamAdmin" in DEPLOYER_ROLES
    assert "roles/iam.securityAdmin" not in DEPLOYER_ROLES
    assert "roles/iam.serviceAccountTokenCreator" not in DEPLOYER_ROLES


@pytest.mark.parametrize("name", spec.IAM_SCENARIOS)
def test_every_resource_the_program_creates_is_managed_by_a_listed_deployer_role(
    name: str,
) -> None:
    unmanaged = []
    for resource in spec.deployed(name).resources:
        if resource.typ == COMPONENT:
            continue
        roles = [role for prefix, role in RESOURCE_ROLES.items() if resource.typ.startswith(prefix)]
        if len(roles) != 1 or roles[0] not in {**DEPLOYER_ROLES, **BILLING_ACCOUNT_ROLES}:
            unmanaged.append((resource.typ, roles))
    assert unmanaged == []


def test_project_iam_is_conditioned_to_exactly_the_project_roles_the_program_grants() -> None:
    granted = set()
    for name in spec.IAM_SCENARIOS:
        grants, _ = iam_grants(spec.deployed(name))
        granted |= {g.role for g in grants if g.scope.startswith("project:")}
    assert set(PROJECT_ROLES_GRANTED) == granted
    condition = project_iam_condition()
    assert condition.startswith('api.getAttribute("iam.googleapis.com/modifiedGrantsByRole"')
    for role in granted:
        assert f'"{role}"' in condition
    assert "roles/owner" not in condition


def test_deploy_md_and_the_readme_carry_the_bootstrap_commands_verbatim() -> None:
    commands = bootstrap_commands()
    assert len(commands) == 1 + len(DEPLOYER_ROLES)
    for doc in (ROOT / "infra" / "DEPLOY.md", ROOT / "README.md"):
        text = doc.read_text()
        missing = [c for c in commands if c not in text]
        assert missing == [], doc.name
