"""cloudbuild.yaml: tests before deploy, commands that exist here, secrets from Secret Manager."""

from __future__ import annotations

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
    ids = [s.get("id") for s in _steps()]
    assert ids.index("test") < ids.index("deploy")
    assert _step("deploy").get("waitFor") == ["test"]


def test_every_make_target_the_build_runs_exists_in_the_makefile() -> None:
    targets = _make_targets()
    used = [c[1] for s in _steps() for c in _commands(s) if c[0] == "make" and len(c) > 1]
    assert "test" in used
    assert set(used) <= targets, set(used) - targets


def test_every_directory_and_script_the_build_refers_to_exists() -> None:
    for step in _steps():
        workdir = ROOT / step.get("dir", "")
        assert workdir.is_dir(), step.get("dir")
        for command in _commands(step):
            if command[0] == "cd":
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


def test_deploy_uses_pulumis_image_for_the_pinned_cli_version() -> None:
    image = _step("deploy")["name"]
    name, tag = image.split(":")
    assert name.startswith("pulumi/pulumi-python")
    assert tag == version("pulumi")


def test_infra_requirements_pin_the_versions_the_tests_ran_with() -> None:
    pins = dict(
        line.split("==")
        for line in (ROOT / "infra" / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins == {name: version(name) for name in ("pulumi", "pulumi-gcp", "pydantic")}


def test_pulumi_token_and_stack_secrets_come_from_secret_manager_only() -> None:
    build = _build()
    declared = {s["env"]: s["versionName"] for s in build["availableSecrets"]["secretManager"]}
    assert set(_step("deploy")["secretEnv"]) == {"PULUMI_ACCESS_TOKEN", "STACK_SECRETS"}
    assert set(declared) == {"PULUMI_ACCESS_TOKEN", "STACK_SECRETS"}
    for name in declared.values():
        assert re.fullmatch(r"projects/\$PROJECT_ID/secrets/\$\{_[A-Z_]+\}/versions/latest", name)
    for step in _steps():
        for entry in step.get("env", []):
            assert not entry.startswith(("PULUMI_ACCESS_TOKEN", "GEMINI", "STACK_SECRETS")), entry


@pytest.mark.parametrize("step_id", ["test", "deploy"])
def test_scripts_stop_at_the_first_failure(step_id: str) -> None:
    assert "set -euo pipefail" in _step(step_id)["script"]


def test_secret_values_never_appear_as_command_arguments() -> None:
    script = _step("deploy")["script"]
    assert "set -x" not in script
    config_sets = [c for c in _commands(_step("deploy")) if c[:3] == ["pulumi", "config", "set"]]
    assert config_sets
    for command in config_sets:
        assert "--secret" in command
        # the key is the last word; the value arrives on stdin
        assert command[-1] == "${line%%=*}"
