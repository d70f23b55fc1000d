"""Issue 17 part 7: one line on every error, with what to do next, from the installed
`bananabatch` command (its entry point turns any exception into that line); `--debug`
anywhere on the line; `--version`; flags shown as flags; negative counts refused."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from bananabatch import config
from tests.support.terminal import BIN

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + bytes(64)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path


def _env(home: Path, **extra: str) -> dict[str, str]:
    # Nothing of the test session's own set-up (emulator hosts, credentials) leaks in.
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BANANABATCH_", "GOOGLE_", "CLOUDSDK_", "GCE_"))
        and not k.endswith("_EMULATOR_HOST")
    }
    keep.pop("GEMINI_API_KEY", None)
    return {
        **keep,
        "HOME": str(home / "home"),
        "COLUMNS": "200",
        config.ENV_LOCAL_ROOT: str(home / "state"),
        **extra,
    }


def bananabatch(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN, *args], cwd=home, env=_env(home, **env), capture_output=True, text=True, timeout=120
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["local run", "submit", "estimate"])
def test_a_png_named_jsonl_is_refused_as_one_error(home: Path, command: str) -> None:
    (home / "logo.jsonl").write_bytes(PNG)
    result = bananabatch(home, *command.split(), "logo.jsonl")
    _one_line_error(result, "logo.jsonl is a PNG image, not a text file", "JSON Lines")
    assert not (home / "state" / "buckets" / "inbox").exists() or not any(
        (home / "state" / "buckets" / "inbox").iterdir()
    )


def test_the_emulator_on_a_busy_port_says_so_in_one_line_and_never_announces_itself(
    home: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = bananabatch(home, "emulator", "--port", str(port))
    _one_line_error(result, f"port {port}", "already in use", "--port")
    assert "emulator on" not in result.stdout


def test_fetch_to_an_existing_file_is_one_error_naming_the_option(home: Path) -> None:
    (home / "images").write_text("not a folder")
    result = bananabatch(home, "fetch", "some-job", "--to", "images")
    _one_line_error(result, "--to images is a file, not a folder")


def test_the_gcp_backend_without_credentials_says_how_to_log_in(home: Path) -> None:
    result = bananabatch(
        home,
        "ls",
        **{
            config.ENV_BACKEND: "gcp",
            "GOOGLE_CLOUD_PROJECT": "demo-nocreds",
            "BANANABATCH_INBOX_BUCKET": "inbox",
            "BANANABATCH_RESULTS_BUCKET": "results",
            # No metadata server either: the check fails at once instead of probing.
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
        },
    )
    _one_line_error(result, "no Google Cloud credentials", "gcloud auth application-default login")


def test_an_unknown_backend_names_the_variable_and_the_choices(home: Path) -> None:
    result = bananabatch(home, "ls", **{config.ENV_BACKEND: "aws"})
    _one_line_error(result, "BANANABATCH_BACKEND", "'local' or 'gcp'")


@pytest.mark.parametrize(
    "command", ["status", "watch", "cancel", "approve", "reject", "retry", "fetch --to out"]
)
def test_a_missing_job_is_said_before_any_provider_is_set_up(home: Path, command: str) -> None:
    verb, *rest = command.split()
    # No emulator URL and no key: a command that set up the provider first would ask for them.
    result = bananabatch(home, verb, "no-such-job", *rest)
    line = _one_line_error(result, "no job no-such-job", "bananabatch ls")
    assert "GOOGLE_GEMINI_BASE_URL" not in line


@pytest.mark.parametrize("where", ["first", "after the command", "last"])
def test_debug_anywhere_on_the_line_shows_the_traceback(home: Path, where: str) -> None:
    args = {
        "first": ["--debug", "watch", "no-such-job"],
        "after the command": ["watch", "--debug", "no-such-job"],
        "last": ["watch", "no-such-job", "--debug"],
    }[where]
    result = bananabatch(home, *args)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "no job no-such-job" in result.stderr


def test_version_prints_the_installed_version(home: Path) -> None:
    from importlib.metadata import version

    result = bananabatch(home, "--version")
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"bananabatch {version('bananabatch')}"


def _commands() -> list[str]:
    from bananabatch import cli

    names = [info.name or info.callback.__name__ for info in cli.app.registered_commands]  # type: ignore[union-attr]
    groups = [
        f"{group.name} {info.name}"
        for group in cli.app.registered_groups
        for info in group.typer_instance.registered_commands  # type: ignore[union-attr]
    ]
    return [name.replace("_", "-") for name in names] + groups


@pytest.mark.parametrize("command", _commands())
def test_help_shows_bool_options_as_flags_without_a_type(home: Path, command: str) -> None:
    result = bananabatch(home, *command.split(), "--help")
    assert result.returncode == 0, result
    assert "<bool>" not in result.stdout
    assert "BOOLEAN" not in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--limit", "-3"],
        ["ls", "--limit", "0"],
        ["watch", "j", "--interval", "-1"],
        ["watch", "j", "--timeout", "-5"],
        ["submit", "prompts.jsonl", "--budget", "-1"],
    ],
)
def test_negative_counts_are_refused_as_usage_errors(home: Path, args: list[str]) -> None:
    result = bananabatch(home, *args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
