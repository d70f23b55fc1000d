"""cloudbuild.yaml: tests before deploy, commands that exist here, secrets from Secret Manager."""

from __future__ import annotations

import itertools
import re
import shlex
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLOUDBUILD = ROOT / "cloudbuild.yaml"


def _build() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CLOUDBUILD.read_text())
    return document


def _steps() -> list[dict[str, Any]]:
    return list(_build()["steps"])


def _step(step_id: str) -> dict[str, Any]:
    [step] = [s for s in _steps() if s.get("id") == step_id]
    return step


def _commands(step: dict[str, Any]) -> list[list[str]]:
    """Each shell command line of a step, split into words (comments and shebang dropped)."""
    text = step.get("script") or " ".join(step.get("args", []))
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            if part:
                out.append(shlex.split(part, posix=True, comments=True))
    return [c for c in out if c]


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile, flags=re.MULTILINE))


def test_tests_run_before_the_deploy_and_the_deploy_waits_for_them() -> None:
    ids = [str(s["id"]) for s in _steps()]
    assert ids.index("test") < ids.index("deploy")
    # each step after the tests waits for the one before it
    for before, after in itertools.pairwise(ids):
        assert _step(after).get("waitFor") == [before]


def test_every_make_target_the_build_runs_exists_in_the_makefile() -> None:
    targets = _make_targets()
    used = [c[1] for s in _steps() for c in _commands(s) if c[0] == "make" and len(c) > 1]
    assert "test" in used
    assert set(used) <= targets, set(used) - targets


def test_every_directory_and_script_the_build_refers_to_exists() -> None:
    for step in _steps():
        workdir = ROOT / step.get("dir", "")
        assert workdir.is_dir(), step.get("dir")
        created: set[str] = set()
        for command in _commands(step):
            if command[:2] == ["mkdir", "-p"]:
                created.update(command[2:])
            if command[0] == "cd" and command[1] not in created:
                assert (workdir / command[1]).is_dir(), command
            if command[0].startswith(("./", "scripts/", "infra/")):
                assert (workdir / command[0]).is_file(), command


def test_deploy_runs_pulumi_up_on_the_stack_chosen_by_substitution() -> None:
    build = _build()
    step = _step("deploy")
    assert "_STACK" in build["substitutions"]
    assert build["options"]["automapSubstitutions"] is True
    ups = [c for c in _commands(step) if c[:2] == ["pulumi", "up"]]
    assert len(ups) == 1
    assert "--yes" in ups[0]
    assert ups[0][ups[0].index("--stack") + 1] == "$_STACK"
    assert (ROOT / step["dir"] / "Pulumi.yaml").is_file()
    assert (ROOT / step["dir"] / "requirements.txt").is_file()


def test_every_builder_image_is_pinned_by_digest() -> None:
    build = _build()
    for step in _steps():
        image = step["name"]
        if image.startswith("${"):
            image = build["substitutions"][image[2:-1]]
        assert re.fullmatch(r"[a-z0-9./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}", image), step["id"]


def test_the_pulumi_cli_is_the_tested_sdk_version_checked_against_its_release_sums() -> None:
    assert _build()["substitutions"]["_PULUMI_VERSION"] == version("pulumi")
    commands = _commands(_step("pulumi-cli"))
    assert ["sha256sum", "-c", "-"] in commands
    # the checksum is checked before the archive is unpacked
    words = [c[0] for c in commands]
    assert words.index("sha256sum") < words.index("tar")


def test_infra_requirements_pin_the_versions_the_tests_ran_with() -> None:
    # The full hash-locked closure is checked in tests/unit/test_packaging.py.
    text = (ROOT / "infra" / "requirements.txt").read_text()
    assert "--require-hashes" in text.splitlines()
    pins = dict(re.findall(r"(?m)^([a-z0-9-]+)==(\S+)", text))
    for name in ("pulumi", "pulumi-gcp", "pydantic"):
        assert pins[name] == version(name)


def test_the_build_runs_as_the_dedicated_deployer_account_never_a_default_one() -> None:
    from bananabatch_infra.deployer import DEPLOYER_ACCOUNT_ID

    account = _build()["serviceAccount"]
    assert account == (
        f"projects/$PROJECT_ID/serviceAccounts/{DEPLOYER_ACCOUNT_ID}"
        "@$PROJECT_ID.iam.gserviceaccount.com"
    )
    # A user-specified build account cannot write to the default logs bucket.
    assert _build()["options"]["logging"] == "CLOUD_LOGGING_ONLY"


def test_preview_runs_before_up_and_no_test_step_sees_a_secret() -> None:
    ids = [s.get("id") for s in _steps()]
    assert ids.index("test") < ids.index("preview") < ids.index("deploy")
    assert _step("preview").get("waitFor") == ["pulumi-cli"]
    assert _step("pulumi-cli").get("waitFor") == ["test"]
    assert _step("deploy").get("waitFor") == ["preview"]
    previews = [c for c in _commands(_step("preview")) if c[:2] == ["pulumi", "preview"]]
    assert len(previews) == 1
    assert "--diff" in previews[0]
    assert [c for c in _commands(_step("preview")) if c[:2] == ["pulumi", "up"]] == []
    for step_id in ("test", "pulumi-cli"):
        assert "secretEnv" not in _step(step_id)
    # the deploy step needs the state backend's token only; the stack secrets were set by
    # the preview step in the shared workspace
    assert _step("deploy")["secretEnv"] == ["PULUMI_ACCESS_TOKEN"]


def test_pulumi_token_and_stack_secrets_come_from_secret_manager_only() -> None:
    build = _build()
    declared = {s["env"]: s["versionName"] for s in build["availableSecrets"]["secretManager"]}
    assert set(_step("preview")["secretEnv"]) == {"PULUMI_ACCESS_TOKEN", "STACK_SECRETS"}
    assert set(declared) == {"PULUMI_ACCESS_TOKEN", "STACK_SECRETS"}
    for name in declared.values():
        assert re.fullmatch(r"projects/\$PROJECT_ID/secrets/\$\{_[A-Z_]+\}/versions/latest", name)
    for step in _steps():
        for entry in step.get("env", []):
            assert not entry.startswith(("PULUMI_ACCESS_TOKEN", "GEMINI", "STACK_SECRETS")), entry


@pytest.mark.parametrize("step_id", ["test", "pulumi-cli", "preview", "deploy"])
def test_scripts_stop_at_the_first_failure(step_id: str) -> None:
    assert "set -euo pipefail" in _step(step_id)["script"]


def test_secret_values_never_appear_as_command_arguments() -> None:
    for step in _steps():
        assert "set -x" not in step["script"]
    config_sets = [c for c in _commands(_step("preview")) if c[:3] == ["pulumi", "config", "set"]]
    assert config_sets
    for command in config_sets:
        assert "--secret" in command
        # the key is the last word; the value arrives on stdin
        assert command[-1] == "${line%%=*}"
