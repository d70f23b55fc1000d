"""`bananabatch fetch JOB --to FOLDER | --zip FILE`: a job's images into a folder, or the
job's results as one zip. A plain function; cli.py registers it with `app.command()(...)`.

The zip is what a person hands on: one folder named after the job holding the images, the
reports (results.jsonl, costs.csv, summary.json, rejected.jsonl, failed.jsonl) and the
gallery (index.html, its data files and the thumbnails), so that, unpacked anywhere,
index.html opens with every image and no server. On the local stack, whose runs leave
thumbnails to the gallery server (config.LocalThumbnails), the missing ones are made and
stored first; in the cloud the zip holds those made so far (the page shows the full image
for any other). The pipeline's own files
(requests/, manifests/) stay out. Objects are streamed into the archive a megabyte at a
time, so a job of any size zips in a bounded memory; images are stored as they are (PNG,
JPEG and WebP are compressed already), text is deflated. The archive is written under a
`.part` name and renamed when complete: a FILE that exists is a finished zip.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bananabatch.config import Backend
from bananabatch.core.states import JOB_TERMINAL
from bananabatch.errors import PermanentError
from bananabatch.ports import ObjectInfo

_CHUNK: Final = 1024 * 1024
# The job's objects that belong in the zip, by folder; everything at the top level (the
# reports and index.html) goes in too.
_FOLDERS: Final = ("images/", "thumbs/", "gallery/")
# Already compressed: deflating them again costs time and saves nothing.
_STORED: Final = frozenset({"png", "jpg", "jpeg", "webp", "gif", "zip"})
# zipfile needs to know up front whether a member may pass 2 GiB (ZIP64 headers).
_ZIP64_FROM: Final = 2**31 - 1


def _complete_job(incomplete: str) -> list[tuple[str, str]]:
    from bananabatch.cli import complete_job_id  # the CLI registers this command

    return complete_job_id(incomplete)


def fetch(
    job: Annotated[
        str,
        typer.Argument(help="The job id (see `bananabatch ls`).", autocompletion=_complete_job),
    ],
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Folder to download the images into (rerun to resume)."),
    ] = None,
    zip_to: Annotated[
        Path | None,
        typer.Option(
            "--zip",
            help="Write the job's images, reports and gallery into this zip file instead.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Download a job's images with a progress bar (--to), or all its results as one zip (--zip).

    Example: bananabatch fetch prompts-3f2a9c1d7e44 --to ./images   (or --zip spring.zip)
    """
    from bananabatch import cli

    if (to is None) == (zip_to is None):
        raise typer.BadParameter(
            "give --to FOLDER (the images) or --zip FILE (images, reports and gallery), "
            "one of the two",
            param_hint="'--to' / '--zip'",
        )
    with cli.errors_as_one_line():
        if to is not None:
            result = _fetch_images(job, to, as_json=as_json)
            if not as_json:
                cli.console.print(
                    f"{result['fetched']} fetched, {result['skipped']} already there, in {to}"
                )
        else:
            assert zip_to is not None
            result = _fetch_zip(job, zip_to, as_json=as_json)
            if not as_json:
                cli.console.print(
                    f"{result['files']} files ({result['images']} images) in {zip_to}, "
                    f"{result['bytes']:,} bytes",
                    soft_wrap=True,
                )
        if as_json:
            cli.print_json(result)


def _fetch_images(job: str, to: Path, *, as_json: bool) -> dict[str, Any]:
    from bananabatch import cli

    if to.exists() and not to.is_dir():
        raise PermanentError(
            f"--to {to} is a file, not a folder: name a folder (it is created if missing)"
        )
    cli.require_job(job)
    rt = cli.open_runtime()
    bucket = rt.settings.results_bucket
    objects = list(rt.objects.list(bucket, f"jobs/{job}/images/"))
    to.mkdir(parents=True, exist_ok=True)
    fetched = skipped = 0
    with _progress(as_json) as progress:
        task = progress.add_task(
            f"fetching {len(objects)} images", total=sum(o.size for o in objects)
        )
        for info in objects:
            target = to / info.name.rsplit("/", 1)[-1]
            if target.is_file() and target.stat().st_size == info.size:
                skipped += 1
                progress.advance(task, info.size)
                continue
            partial = target.with_name(target.name + ".part")
            with rt.objects.open_read(bucket, info.name) as source, partial.open("wb") as sink:
                while chunk := source.read(_CHUNK):
                    sink.write(chunk)
                    progress.advance(task, len(chunk))
            partial.replace(target)
            fetched += 1
    return {
        "job_id": job,
        "to": str(to),
        "fetched": fetched,
        "skipped": skipped,
        "images": len(objects),
    }


def _fetch_zip(job: str, target: Path, *, as_json: bool) -> dict[str, Any]:
    from bananabatch import cli

    if target.exists():
        raise PermanentError(
            f"--zip {target} already exists: name another file, or remove it first"
        )
    record = cli.require_job(job)
    rt = cli.open_runtime()
    bucket = rt.settings.results_bucket
    prefix = f"jobs/{job}/"
    if rt.settings.backend is Backend.LOCAL:
        _make_missing_thumbnails(rt, job, as_json=as_json)
    objects = [info for info in rt.objects.list(bucket, prefix) if _belongs(info, prefix)]
    objects.sort(key=lambda info: (_order(info.name[len(prefix) :]), info.name))
    if record.state not in JOB_TERMINAL:
        cli.err.print(
            f"job {job} is {record.state.value}: the zip holds what is made so far; "
            "the reports are written when it ends",
            soft_wrap=True,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    images = 0
    try:
        with (
            _progress(as_json) as progress,
            zipfile.ZipFile(partial, "w", allowZip64=True) as archive,
        ):
            task = progress.add_task(
                f"zipping {len(objects)} files", total=sum(o.size for o in objects)
            )
            for info in objects:
                inner = info.name[len(prefix) :]
                member = zipfile.ZipInfo(f"{job}/{inner}", date_time=_date_time(info))
                member.compress_type = _compression(inner)
                member.external_attr = 0o644 << 16
                with (
                    rt.objects.open_read(bucket, info.name) as source,
                    archive.open(member, "w", force_zip64=info.size >= _ZIP64_FROM) as sink,
                ):
                    while chunk := source.read(_CHUNK):
                        sink.write(chunk)
                        progress.advance(task, len(chunk))
                images += inner.startswith("images/")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return {
        "job_id": job,
        "zip": str(target),
        "files": len(objects),
        "images": images,
        "bytes": target.stat().st_size,
    }


def _make_missing_thumbnails(rt: Any, job: str, *, as_json: bool) -> None:
    """The thumbnails of the job's images that have none yet (the zip has no server to make
    them when its gallery is opened); an image that does not decode keeps none."""
    from bananabatch.pipeline.thumbnails import store_thumbnail

    bucket = rt.settings.results_bucket
    made = {
        info.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        for info in rt.objects.list(bucket, f"jobs/{job}/thumbs/")
    }
    missing = [
        info
        for info in rt.objects.list(bucket, f"jobs/{job}/images/")
        if info.name.rsplit("/", 1)[-1].rsplit(".", 1)[0] not in made
    ]
    if not missing:
        return
    with _progress(as_json) as progress:
        task = progress.add_task(f"making {len(missing)} thumbnails", total=len(missing))
        for info in missing:
            key = info.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            store_thumbnail(rt, job, key, rt.objects.read_bytes(bucket, info.name))
            progress.advance(task)


def _belongs(info: ObjectInfo, prefix: str) -> bool:
    inner = info.name[len(prefix) :]
    return "/" not in inner or inner.startswith(_FOLDERS)


def _order(inner: str) -> int:
    # The reports first (a reader of a half-copied zip finds them), then the gallery's
    # files, then the images.
    if "/" not in inner:
        return 0
    return 1 if inner.startswith(("gallery/", "thumbs/")) else 2


def _compression(inner: str) -> int:
    extension = inner.rsplit(".", 1)[-1].lower() if "." in inner else ""
    return zipfile.ZIP_STORED if extension in _STORED else zipfile.ZIP_DEFLATED


def _date_time(info: ObjectInfo) -> tuple[int, int, int, int, int, int]:
    updated = info.updated
    if updated is None:
        return (1980, 1, 1, 0, 0, 0)
    return (
        max(updated.year, 1980),
        updated.month,
        updated.day,
        updated.hour,
        updated.minute,
        updated.second,
    )


@contextmanager
def _progress(as_json: bool) -> Iterator[Progress]:
    from bananabatch import cli

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=cli.err,
        disable=as_json,
    ) as progress:
        yield progress
