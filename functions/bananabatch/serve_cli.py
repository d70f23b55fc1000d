"""`bananabatch local serve`: the local stack's scheduler as a service (issue 17 part 4).

While it runs, every submitted local job moves without a `watch`: it ticks (polls, submits
what is queued, repairs what a crash left), collects finished batches, finishes intakes a
killed `submit` cut off, and says when each job ends. With the emulator as provider and no
GOOGLE_GEMINI_BASE_URL set it runs the emulators itself and tells the other commands where
they are (local/drivers.py), so `bananabatch submit` in another terminal needs no set-up.

It also serves the jobs' galleries on loopback (local/gallery_server.py), making each
thumbnail the first time a gallery page shows it: `local run` makes none, so its time is
the images' and the records' alone.

It is safe to stop (Ctrl-C or kill -9: every step is a conditional write; the next service
goes on where this one stopped) and to start twice (the second finds the first and stops).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console

from bananabatch import config, lanes_cli
from bananabatch.config import Backend, ProviderKind, Settings
from bananabatch.core.records import JobRecord
from bananabatch.core.states import JOB_TERMINAL, JobState
from bananabatch.errors import PermanentError
from bananabatch.local import drivers

err = Console(stderr=True)
# How often jobs cut off in intake are looked for (a `submit` that is still reading its
# file holds its own driver's file, so it is never raced).
RECEIVED_EVERY_SECONDS: Final = 5.0


def nothing_drives(root: Path, job: JobRecord) -> str | None:
    """What `status` and `watch` say about a local job that no process moves now, or None
    when it needs none (ended, held for a person) or one drives it."""
    if job.state in JOB_TERMINAL or job.state is JobState.HELD:
        return None
    if drivers.drivers_of(root, job.job_id):
        return None
    return (
        f"nothing is driving job {job.job_id} now: on the local stack a job moves only while"
        " `bananabatch local serve` (every job) or `bananabatch watch JOB` runs; start one"
    )


def gallery_hint(root: Path, job_id: str) -> str:
    """Where a local job's gallery shows its thumbnails: a local run makes none, and the
    service's gallery server makes each as a page shows it."""
    found = drivers.service(root)
    if found is not None and found.gallery:
        return f"gallery with thumbnails: {found.gallery}/jobs/{job_id}/index.html"
    return (
        "thumbnails: made as `bananabatch local serve` shows the gallery (opened from the"
        " folder, the gallery shows the full images)"
    )


def service_emulators(settings: Settings) -> dict[str, Any]:
    """The settings that point a local command at the emulators a running service serves,
    when the provider is the emulator and no address was given; {} otherwise."""
    if settings.backend is not Backend.LOCAL or settings.provider is not ProviderKind.EMULATOR:
        return {}
    if settings.gemini_base_url:
        return {}
    found = drivers.service(settings.local_root)
    if found is None or not found.emulators:
        return {}
    return dict(found.emulators)


@contextmanager
def _providers(settings: Settings, root: Path) -> Iterator[dict[str, Any]]:
    """The emulators this service runs, or none when an address or a real provider is set."""
    from bananabatch.cli import _provider_for

    if settings.provider is not ProviderKind.EMULATOR or settings.gemini_base_url:
        yield {}
        return
    with _provider_for(ProviderKind.EMULATOR, root) as found:
        yield found


def serve(
    root: Annotated[
        Path,
        typer.Option(help="Where the local buckets and state live.", envvar=config.ENV_LOCAL_ROOT),
    ] = Path(".bananabatch"),
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between the scheduler's ticks.")
    ] = 2.0,
    gallery_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Loopback port of the galleries (thumbnails made as pages show them);"
            " 0: any free one, printed at start.",
        ),
    ] = 0,
) -> None:
    """Drive every submitted local job until Ctrl-C: tick, collect, finish; no `watch` needed.

    Runs the emulators itself unless GOOGLE_GEMINI_BASE_URL (or a real provider) is set;
    `submit`, `status`, `watch` and `cancel` in other terminals find them. Serves every
    job's gallery at the printed address, making thumbnails as its pages show them. Safe
    to stop at any moment and to start twice (the second says where the first runs and
    stops).

    Example: bananabatch local serve
    """
    from bananabatch.cli import errors_as_one_line, settings_from_env

    with errors_as_one_line():
        settings = settings_from_env(backend=Backend.LOCAL, local_root=root)
        try:
            with drivers.driving(root, drivers.SERVICE) as held:
                _refuse_beside_a_private_emulator(root)
                with _providers(settings, root) as overrides:
                    # The lanes' settings are objects, not addresses: a run that uses this
                    # service's emulators does not get them (lanes_cli.py).
                    held.announce(
                        emulators={
                            k: v for k, v in overrides.items() if k not in lanes_cli.LANE_SETTINGS
                        }
                    )
                    with _gallery(settings, gallery_port) as gallery:
                        held.announce(gallery=gallery.base_url)
                        _serve(settings.model_copy(update=overrides), root, interval, overrides)
        except drivers.AlreadyDriven as exc:
            pid = exc.holder.pid if exc.holder else "?"
            raise PermanentError(
                f"a local service (pid {pid}) already drives the jobs in {root}: one is"
                " enough (stop it with Ctrl-C to start another)"
            ) from None


@contextmanager
def _gallery(settings: Settings, port: int) -> Iterator[Any]:
    from bananabatch.local.gallery_server import GalleryServer
    from bananabatch.wiring import build_runtime

    try:
        server = GalleryServer(build_runtime(settings, with_provider=False), port).start()
    except OSError as exc:
        raise PermanentError(
            f"the gallery cannot listen on 127.0.0.1:{port} ({exc.strerror}): pass another"
            " --gallery-port, or 0 for any free one"
        ) from None
    err.print(
        f"galleries at {server.base_url}/ (thumbnails are made as pages show them)",
        soft_wrap=True,
        highlight=False,
    )
    try:
        yield server
    finally:
        server.stop()


def _refuse_beside_a_private_emulator(root: Path) -> None:
    """A `local run` with its own emulator: this service's tick would poll its batches at
    another emulator, which does not know them, and end them."""
    for other in drivers.live(root):
        if other.role == drivers.RUN and other.emulators:
            raise PermanentError(
                f"`bananabatch local run` (pid {other.pid}) runs job {other.job_id} on an"
                f" emulator of its own in {root}: start the service once it ends (a run"
                " started while the service runs uses the service's emulators)"
            )


def _serve(settings: Settings, root: Path, interval: float, overrides: dict[str, Any]) -> None:
    from bananabatch.cli import _quiet_pipeline_logs
    from bananabatch.local.runner import LocalPipeline
    from bananabatch.wiring import build_runtime

    _quiet_pipeline_logs(settings)
    pipeline = LocalPipeline(build_runtime(settings))
    where = overrides.get("gemini_base_url") or settings.gemini_base_url or "the real provider"
    err.print(
        f"local service for {root} (pid {os.getpid()}): drives every submitted job;"
        f" Gemini Batch at {where}. Ctrl-C stops it; jobs are kept.",
        soft_wrap=True,
        highlight=False,
    )
    try:
        with pipeline.ticking(interval) as ticker:
            next_look = 0.0
            while True:
                ticker.check()
                if time.monotonic() >= next_look:
                    _finish_cut_off_intakes(pipeline, root)
                    next_look = time.monotonic() + RECEIVED_EVERY_SECONDS
                delivered = pipeline.drain()
                for done in pipeline.completions():
                    _say_ended(done)
                if not delivered:
                    ticker.wait(0.5)
    except KeyboardInterrupt:
        left = [j for j in pipeline.runtime.repo.list_jobs() if j.state not in JOB_TERMINAL]
        err.print(
            f"local service stopped; {len(left)} job(s) not ended wait for the next"
            " `bananabatch local serve` (nothing is lost; batches the emulator held are sent"
            " again, free)",
            soft_wrap=True,
            highlight=False,
        )
    finally:
        pipeline.close()


def _finish_cut_off_intakes(pipeline: Any, root: Path) -> None:
    """Jobs left RECEIVED by a `submit` that died while reading its file (one still reading
    holds its driver's file and is left alone)."""
    busy = {d.job_id for d in drivers.live(root) if d.role != drivers.SERVICE}
    for job in pipeline.runtime.repo.list_jobs():
        if job.state is JobState.RECEIVED and job.job_id not in busy:
            pipeline.finish_intake(job.job_id)


def _say_ended(done: dict[str, Any]) -> None:
    counts = done.get("counts") or {}
    costs = done.get("costs") or {}
    shown = ", ".join(f"{k.lower()} {v:,}" for k, v in counts.items() if v)
    err.print(
        f"job {done.get('job_id')} ended {done.get('state')}: {shown};"
        f" spent ${float(costs.get('actual_usd') or 0):,.2f}",
        soft_wrap=True,
        highlight=False,
    )
