"""The Cloud Functions source archive: an explicit file list, zipped reproducibly.

Only what the functions run is deployed: the CLI, the Gemini Batch emulator and the local
runner (and what only they import) stay out, so a CLI or emulator change neither redeploys
the functions nor ships code, or a dependency, that production never imports.
tests/infra/test_deployed_closure.py holds the list to the import closure of main.py.

The object name carries the archive's hash, so an unchanged source keeps its name and the
functions are not rebuilt, while any change to a deployed file produces a new name and a
redeploy. For that, identical files must give identical bytes on every machine: entries are
sorted, timestamps and permissions fixed, and entries stored uncompressed (deflate output
can differ between zlib builds; the source is a few hundred kilobytes either way).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

# Only these top-level entries of functions/ are deployed; anything else (egg-info, local
# state, editor files) stays behind without needing its own exclusion rule.
TOP_LEVEL: Final = ("main.py", "requirements.txt", "bananabatch")
EXCLUDED_DIR_NAMES: Final = frozenset(
    {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", "tests", "test"}
)
# Workstation-only code, never imported by main.py: the Gemini Batch emulator and the local
# runner (directories), the CLI (cli.py and its *_cli.py commands), and the modules only the
# CLI uses (doctor, doctor_openai, doctor_lanes: set-up checks; deployed: the CLI's side
# of a deployed stack; status: the status view; model_table: the models listing;
# variations: the templates `expand` reads). Their third-party
# dependencies are in pyproject's `local` extra, not in requirements.txt. When the deployed
# code starts importing one of these, tests/infra/test_deployed_closure.py fails: take it off
# this list.
EXCLUDED_DIRS: Final = frozenset({"bananabatch/emulator", "bananabatch/local"})
LOCAL_ONLY_FILES: Final = (
    "bananabatch/cli.py",
    "bananabatch/*_cli.py",
    "bananabatch/doctor.py",
    "bananabatch/doctor_openai.py",
    "bananabatch/doctor_lanes.py",
    "bananabatch/deployed.py",
    "bananabatch/pipeline/status.py",
    "bananabatch/core/model_table.py",
    "bananabatch/core/variations.py",
    # `bananabatch select` (two-tier jobs): the CLI records a selection; the tick acts on it.
    "bananabatch/core/twotier/selection.py",
    "bananabatch/pipeline/twotier/select.py",
)
EXCLUDED_SUFFIXES: Final = (".pyc", ".pyo")
_FIXED_TIME: Final = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class SourceArchive:
    files: tuple[str, ...]
    data: bytes
    sha256: str

    @property
    def object_name(self) -> str:
        return f"functions-{self.sha256[:16]}.zip"

    def write(self, directory: Path | None = None) -> Path:
        """Write the archive under a content-addressed path and return it (idempotent)."""
        folder = directory or Path(tempfile.gettempdir()) / "bananabatch-infra"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.object_name
        if not path.exists() or path.read_bytes() != self.data:
            path.write_bytes(self.data)
        return path


def is_excluded(relative: str) -> bool:
    """Whether a path (posix, relative to the source root) stays out of the archive."""
    path = PurePosixPath(relative)
    if any(part in EXCLUDED_DIR_NAMES or part.startswith(".") for part in path.parts):
        return True
    if any(relative == d or relative.startswith(d + "/") for d in EXCLUDED_DIRS):
        return True
    if any(fnmatch.fnmatchcase(relative, pattern) for pattern in LOCAL_ONLY_FILES):
        return True
    name = path.name
    if name.endswith(EXCLUDED_SUFFIXES):
        return True
    return name == "conftest.py" or (name.startswith("test_") and name.endswith(".py"))


def source_files(root: Path) -> tuple[str, ...]:
    """The sorted posix paths, relative to root, that make up the deployed source."""
    found: list[str] = []
    for top in TOP_LEVEL:
        entry = root / top
        if entry.is_file():
            found.append(top)
        elif entry.is_dir():
            found.extend(p.relative_to(root).as_posix() for p in entry.rglob("*") if p.is_file())
    return tuple(sorted(f for f in found if not is_excluded(f)))


def build_archive(root: Path, files: tuple[str, ...] | None = None) -> SourceArchive:
    listed = tuple(sorted(files if files is not None else source_files(root)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for relative in listed:
            info = zipfile.ZipInfo(relative, date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, (root / relative).read_bytes())
    data = buffer.getvalue()
    return SourceArchive(files=listed, data=data, sha256=hashlib.sha256(data).hexdigest())
