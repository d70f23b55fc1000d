"""Only what runs is deployed, and everything that runs is deployed (issue 16, part 4).

The function archive holds exactly the import closure of functions/main.py (plus package
data and requirements.txt); every third-party package that closure imports is in the
hash-locked functions/requirements.txt; the CLI, the emulator and the local runner stay out,
so changing them leaves the archive, and so the deployed functions, untouched.
"""

from __future__ import annotations

import importlib.machinery
import shutil
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bananabatch_infra import FUNCTIONS_DIR, REPO_ROOT
from bananabatch_infra.source import build_archive, source_files
from tests.infra.closure import Closure, import_closure

ENTRY = "main"
# Workstation-only surfaces: none of them may be deployed.
LOCAL_ONLY_PREFIXES = ("bananabatch/emulator/", "bananabatch/local/")
LOCAL_ONLY_NAMES = ("bananabatch/cli.py", "bananabatch/doctor.py", "bananabatch/deployed.py")


@cache
def _closure() -> Closure:
    return import_closure(FUNCTIONS_DIR, ENTRY)


def _third_party() -> list[str]:
    return sorted(name for name in _closure().third_party if not _is_namespace(name))


def _archived_modules(files: tuple[str, ...]) -> set[str]:
    modules = set()
    for name in files:
        if name.endswith(".py"):
            parts = name.removesuffix(".py").split("/")
            modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def _locked(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        if line[:1].isalnum():
            names.add(str(canonicalize_name(Requirement(line.split(" ")[0]).name)))
    return names


@cache
def _owners_of_top_level() -> dict[str, list[str]]:
    """Top-level import name -> the distributions that install something under it."""
    return {name: list(dists) for name, dists in metadata.packages_distributions().items()}


@cache
def _files_of(dist: str) -> frozenset[str]:
    """A distribution's installed files, as posix paths relative to its site directory."""
    return frozenset(PurePosixPath(str(f)).as_posix() for f in metadata.files(dist) or ())


def _is_namespace(dotted: str) -> bool:
    """A bare namespace package (`google`, `google.cloud`): a folder shared by several
    distributions, owned by none; importing it alone installs nothing."""
    folder = "/".join(dotted.split("."))
    candidates = _owners_of_top_level().get(dotted.split(".")[0], [])
    return not any(f"{folder}/__init__.py" in _files_of(d) for d in candidates) and any(
        f.startswith(folder + "/") for d in candidates for f in _files_of(d)
    )


def _distribution(dotted: str) -> str:
    """The distribution providing an imported name: the one owning its longest installed
    module prefix (read from the distributions' file lists; nothing is imported or walked)."""
    parts = dotted.split(".")
    candidates = _owners_of_top_level().get(parts[0], [])
    for end in range(len(parts), 0, -1):
        base = "/".join(parts[:end])
        files = {f"{base}/__init__.py", *(base + s for s in importlib.machinery.all_suffixes())}
        owners = {str(canonicalize_name(d)) for d in candidates if files & _files_of(d)}
        if len(owners) == 1:
            return owners.pop()
        assert not owners, f"{dotted} is installed by several distributions: {sorted(owners)}"
    pytest.fail(f"{dotted} is imported by the deployed closure but no installed package has it")


def test_the_closure_is_found_by_walking_main_py() -> None:
    closure = _closure()
    # Reached only through wiring's lazy imports, the schema data and the SDK packages.
    assert {
        "main",
        "bananabatch.entrypoints",
        "bananabatch.adapters.gcp.firestore",
        "bananabatch.providers.gemini",
        "bananabatch.schemas",
    } <= set(closure.modules)
    assert {"functions_framework", "google.cloud.storage", "google.genai"} <= closure.third_party


def test_every_module_the_deployed_function_imports_is_in_the_archive() -> None:
    missing = set(_closure().modules) - _archived_modules(source_files(FUNCTIONS_DIR))
    assert not missing, f"reachable from main.py but not deployed: {sorted(missing)}"


def test_every_deployed_module_is_imported_by_the_deployed_function() -> None:
    # A module nothing in production imports belongs with the workstation code: add it to
    # LOCAL_ONLY_FILES / EXCLUDED_DIRS in infra/bananabatch_infra/source.py.
    unused = _archived_modules(source_files(FUNCTIONS_DIR)) - set(_closure().modules)
    assert not unused, f"deployed but not reachable from main.py: {sorted(unused)}"


def test_the_package_data_the_closure_reads_is_in_the_archive() -> None:
    files = set(source_files(FUNCTIONS_DIR))
    schemas = sorted((FUNCTIONS_DIR / "bananabatch" / "schemas").glob("*.json"))
    assert schemas
    assert {f.relative_to(FUNCTIONS_DIR).as_posix() for f in schemas} <= files
    assert "requirements.txt" in files


def test_nothing_of_the_cli_the_emulator_or_the_local_runner_is_deployed() -> None:
    files = source_files(FUNCTIONS_DIR)
    local_only = [
        f
        for f in files
        if f.startswith(LOCAL_ONLY_PREFIXES) or f in LOCAL_ONLY_NAMES or f.endswith("_cli.py")
    ]
    assert local_only == []
    # The check looks at real files: each surface exists in the source tree.
    for name in LOCAL_ONLY_NAMES:
        assert (FUNCTIONS_DIR / name).is_file(), name
    for prefix in LOCAL_ONLY_PREFIXES:
        assert (FUNCTIONS_DIR / prefix / "__init__.py").is_file(), prefix


def test_every_third_party_import_of_the_closure_is_hash_locked() -> None:
    locked = _locked(FUNCTIONS_DIR / "requirements.txt")
    needed = {name: _distribution(name) for name in _third_party()}
    unlocked = {name: dist for name, dist in needed.items() if dist not in locked}
    assert not unlocked, f"imported by the deployed code but not in requirements.txt: {unlocked}"
    assert {"functions-framework", "google-cloud-firestore", "pillow"} <= set(needed.values())


def test_every_runtime_dependency_is_imported_by_the_deployed_function() -> None:
    # A top-level runtime dependency the functions never import (a CLI or emulator library)
    # belongs in the `local` extra: it would be installed in every function for nothing.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = {str(canonicalize_name(Requirement(r).name)) for r in project["dependencies"]}
    imported = {_distribution(name) for name in _third_party()}
    assert runtime - imported == set()


def test_the_workstation_dependencies_are_not_deployed() -> None:
    locked = _locked(FUNCTIONS_DIR / "requirements.txt")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    local = {
        str(canonicalize_name(Requirement(r).name))
        for r in project["optional-dependencies"]["local"]
    }
    assert {"typer", "rich"} <= local
    assert {"typer", "rich"}.isdisjoint(locked)


def _copy_source(tmp_path: Path) -> Path:
    root = tmp_path / "functions"
    shutil.copytree(
        FUNCTIONS_DIR,
        root,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".*"),
    )
    return root


@pytest.mark.parametrize(
    "changed",
    [
        "bananabatch/cli.py",
        "bananabatch/cost_cli.py",
        "bananabatch/doctor.py",
        "bananabatch/emulator/app.py",
        "bananabatch/local/runner.py",
    ],
)
def test_a_workstation_change_keeps_the_archive_hash(tmp_path: Path, changed: str) -> None:
    root = _copy_source(tmp_path)
    before = build_archive(root)
    path = root / changed
    path.write_text(path.read_text().replace("bananabatch", "bananabatch (edited)", 1))
    assert path.read_bytes() != (FUNCTIONS_DIR / changed).read_bytes()
    assert build_archive(root).sha256 == before.sha256


def test_a_deployed_change_changes_the_archive_hash(tmp_path: Path) -> None:
    # The counterpart: the comparison above can fail.
    root = _copy_source(tmp_path)
    before = build_archive(root)
    path = root / "bananabatch" / "errors.py"
    path.write_text(path.read_text() + "\n# edited\n")
    assert build_archive(root).sha256 != before.sha256
