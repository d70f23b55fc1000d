"""The function source archive: what goes in, what stays out, and a name that follows content."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from bananabatch_infra import FUNCTIONS_DIR
from bananabatch_infra.source import build_archive, is_excluded, source_files


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return _tree(
        tmp_path / "functions",
        {
            "main.py": "def on_upload(e): ...\n",
            "requirements.txt": "functions-framework==3.10.2\n",
            "bananabatch/__init__.py": "",
            "bananabatch/config.py": "X = 1\n",
            "bananabatch/schemas/completion.v1.schema.json": "{}\n",
            "bananabatch/__pycache__/config.cpython-312.pyc": "bytecode",
            "bananabatch/stale.pyc": "bytecode",
            "bananabatch/.mypy_cache/3.11/cache.json": "{}",
            "bananabatch/tests/test_config.py": "def test(): ...\n",
            "bananabatch/emulator/__init__.py": "",
            "bananabatch/emulator/testdata/capture.json": "{}",
            "bananabatch/cli.py": "import typer\n",
            "bananabatch/pause_cli.py": "import typer\n",
            "bananabatch/local/runner.py": "",
            "bananabatch/test_helpers.py": "",
            "bananabatch.egg-info/PKG-INFO": "Name: bananabatch\n",
            "notes.md": "local notes\n",
            ".env": "GEMINI_API_KEY=leak\n",
        },
    )


def test_archive_holds_the_entry_points_requirements_and_package_only(source: Path) -> None:
    assert source_files(source) == (
        "bananabatch/__init__.py",
        "bananabatch/config.py",
        "bananabatch/schemas/completion.v1.schema.json",
        "main.py",
        "requirements.txt",
    )


@pytest.mark.parametrize(
    "path",
    [
        "bananabatch/__pycache__/x.cpython-312.pyc",
        "bananabatch/x.pyc",
        "bananabatch/.mypy_cache/x.json",
        "bananabatch/tests/test_x.py",
        "bananabatch/emulator/testdata/capture.json",
        "bananabatch/test_x.py",
        "bananabatch/conftest.py",
        ".env",
        "bananabatch/emulator/app.py",
        "bananabatch/local/runner.py",
        "bananabatch/cli.py",
        "bananabatch/cost_cli.py",
        "bananabatch/doctor.py",
    ],
)
def test_caches_tests_and_workstation_code_are_excluded(path: str) -> None:
    assert is_excluded(path)


def test_archive_entries_are_exactly_the_listed_files_with_their_bytes(source: Path) -> None:
    archive = build_archive(source)
    with zipfile.ZipFile(io.BytesIO(archive.data)) as z:
        assert tuple(z.namelist()) == archive.files
        assert z.read("main.py") == (source / "main.py").read_bytes()


def test_same_content_gives_the_same_bytes_and_name_whatever_the_timestamps(source: Path) -> None:
    first = build_archive(source)
    os.utime(source / "main.py", (1_000_000_000, 1_000_000_000))
    second = build_archive(source)
    assert second.data == first.data
    assert second.object_name == first.object_name


def test_a_changed_file_gives_a_new_object_name(source: Path) -> None:
    first = build_archive(source)
    (source / "bananabatch" / "config.py").write_text("X = 2\n")
    assert build_archive(source).object_name != first.object_name


@pytest.mark.parametrize(
    "path", ["bananabatch/cli_helpers.py", "bananabatch/emulator_api.py", "bananabatch/core/cli.py"]
)
def test_names_that_only_resemble_workstation_code_are_kept(path: str) -> None:
    assert not is_excluded(path)


def test_a_changed_excluded_file_keeps_the_object_name(source: Path) -> None:
    first = build_archive(source)
    (source / "bananabatch" / "tests" / "test_config.py").write_text("def test(): assert 0\n")
    assert build_archive(source).object_name == first.object_name


def test_object_name_is_derived_from_the_archive_hash(source: Path) -> None:
    archive = build_archive(source)
    assert archive.object_name == f"functions-{archive.sha256[:16]}.zip"


def test_the_real_source_tree_ships_its_entry_points_and_no_test_material() -> None:
    files = source_files(FUNCTIONS_DIR)
    assert {
        "main.py",
        "requirements.txt",
        "bananabatch/__init__.py",
        "bananabatch/config.py",
    } <= set(files)
    assert not [f for f in files if is_excluded(f)]
    assert not [f for f in files if "egg-info" in f or "__pycache__" in f or f.endswith(".pyc")]


def test_written_archive_is_content_addressed(source: Path, tmp_path: Path) -> None:
    archive = build_archive(source)
    path = archive.write(tmp_path / "out")
    assert path.name == archive.object_name
    assert path.read_bytes() == archive.data
