"""The deployed functions install exactly what the project declares."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _normalised(lines: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        pins[requirement.name.lower().replace("_", "-")] = str(requirement.specifier) + (
            "[" + ",".join(sorted(requirement.extras)) + "]" if requirement.extras else ""
        )
    return pins


def test_requirements_txt_pins_exactly_the_runtime_dependencies_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from_pyproject = _normalised(project["dependencies"])
    from_requirements = _normalised(
        (ROOT / "functions" / "requirements.txt").read_text().splitlines()
    )
    assert from_requirements == from_pyproject


def test_every_runtime_dependency_is_pinned_to_one_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        specifier = Requirement(line).specifier
        assert len(specifier) == 1, line
        assert next(iter(specifier)).operator == "==", line


def test_the_functions_source_root_has_the_entry_points_cloud_functions_loads() -> None:
    source = (ROOT / "functions" / "main.py").read_text()
    for entry in ("on_upload", "on_tick", "on_batch_done"):
        assert f"def {entry}(" in source
