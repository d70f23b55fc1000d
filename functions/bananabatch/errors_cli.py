"""One line on every error, with what to do next (issue 17 part 7), and the command-line
conventions typer does not give: `--debug` anywhere on the line, bool options shown as
flags. Only words and argument handling; no pipeline logic.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Final

import typer.core

DEBUG_FLAG: Final = "--debug"
# Enough of a file to tell text from an image or an archive named .jsonl.
_SNIFF_BYTES: Final = 64 * 1024
_MAGIC: Final = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
    b"RIFF": "a RIFF file (WebP, WAV, ...)",
}


def split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """`--debug` may stand anywhere on the line (before `--`); it is taken out here."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != DEBUG_FLAG]
    return head + argv[end:], len(head) != end


def not_text(path: Path) -> str | None:
    """Why FILE cannot be JSON Lines at all (a binary file under a .jsonl name), or None.
    One reason for the whole file, instead of a rejection for every 'line' of an image."""
    with path.open("rb") as source:
        head = source.read(_SNIFF_BYTES)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return f"{path} is {what}, not a text file: expected JSON Lines (one object per line)"
    if b"\x00" in head:
        at = head.index(b"\x00")
        return (
            f"{path} is not a text file (a NUL byte at offset {at}): expected JSON Lines"
            " (one object per line, UTF-8)"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the sniff window is not a fault of the file.
        if exc.start < len(head) - 4:
            return (
                f"{path} is not UTF-8 text (byte {exc.start}: {head[exc.start]:#04x}): expected"
                " JSON Lines in UTF-8"
            )
    return None


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one line that says what to do next."""
    google = type(exc).__module__.startswith("google.auth")
    if google and type(exc).__name__ == "DefaultCredentialsError":
        return (
            "no Google Cloud credentials: run `gcloud auth application-default login` (or set"
            " GOOGLE_APPLICATION_CREDENTIALS to a key file), or use the local stack"
            " (unset BANANABATCH_BACKEND)"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"the address is already in use ({exc.strerror}): choose another --port"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"unexpected {type(exc).__name__}{': ' + text if text else ''}"
        f" (run again with {DEBUG_FLAG} for the traceback)"
    )


def show_flags_as_flags() -> None:
    """typer prints the type of every option in help, so `--json <bool>` reads as if it took
    a value (`--json true` then parses `true` as a job id). A flag is shown bare."""
    original = typer.core.TyperOption.display_type_rich
    if getattr(original, "_flags_bare", False):
        return

    def display_type_rich(self: typer.core.TyperOption, ctx: typer.Context) -> str | None:
        if self.is_flag:
            return None
        return original(self, ctx)

    display_type_rich._flags_bare = True  # type: ignore[attr-defined]
    typer.core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]
