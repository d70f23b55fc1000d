"""Issue 17 part 7: shell completion that offers job ids, through the installed command as a
shell asks it (typer's completion protocol: the `_BANANABATCH_COMPLETE` variable), and the
completion function itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bananabatch import cli, config
from tests.e2e.test_cli_tables import env, job_id  # noqa: F401 - fixtures
from tests.support import terminal


def _complete(
    tmp_path: Path, values: dict[str, str], shell: str, line: str
) -> subprocess.CompletedProcess[str]:
    words = line.split(" ")
    return subprocess.run(
        [terminal.BIN],
        cwd=tmp_path,
        env={
            **terminal.session_free_environ(),
            **values,
            "_BANANABATCH_COMPLETE": f"complete_{shell}",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
            "_TYPER_COMPLETE_ARGS": line,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["status", "watch", "cancel", "fetch", "retry"])
def test_bash_completes_a_job_id_from_what_was_typed(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    job_id: str,  # noqa: F811
    command: str,
) -> None:
    done = _complete(tmp_path, env, "bash", f"bananabatch {command} {job_id[:5]}")
    assert done.returncode == 0, done
    assert done.stdout.split() == [job_id]
    assert done.stderr == ""
    none = _complete(tmp_path, env, "bash", f"bananabatch {command} zzz")
    assert none.stdout.split() == []


def test_zsh_completion_shows_each_jobs_state_beside_its_id(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811
    job_id: str,  # noqa: F811
) -> None:
    done = _complete(tmp_path, env, "zsh", "bananabatch watch ")
    assert done.returncode == 0, done
    assert f'"{job_id}":"PARTIAL, 4 lines"' in done.stdout


def test_the_completion_function_offers_ids_newest_first_and_never_fails(
    env: dict[str, str],  # noqa: F811
    job_id: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli.complete_job_id("") == [(job_id, "PARTIAL, 4 lines")]
    assert cli.complete_job_id(job_id[:3]) == [(job_id, "PARTIAL, 4 lines")]
    assert cli.complete_job_id("nothing-like-it") == []
    monkeypatch.setenv(config.ENV_BACKEND, "aws")
    assert cli.complete_job_id("") == []


def test_help_offers_to_install_completion(tmp_path: Path) -> None:
    shown = subprocess.run(
        [terminal.BIN, "--help"],
        cwd=tmp_path,
        env={**terminal.session_free_environ(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown
    assert "--install-completion" in shown.stdout
    assert "--show-completion" in shown.stdout
