"""The local jobs' galleries over HTTP, with thumbnails made when they are first asked for.

`bananabatch local serve` runs this beside its scheduler, on loopback. A run on the local
stack makes no thumbnails (config.LocalThumbnails.ON_DEMAND): they tripled its wall time
(README, issue 18), while a gallery shows a page of 100 cards at a time. So a request for
`jobs/<job>/thumbs/<key>.jpg` that is not stored yet makes it from the image, stores it where
the cloud's thumbnail workers put theirs (pipeline/thumbnails.ensure_thumbnail) and answers
with it; later requests, and the gallery opened from the folder, read the stored one.

Everything else is read through the object store port: a job's index.html, its reports and
the gallery/, images/ and thumbs/ folders (what `fetch --zip` hands on); never the
pipeline's own requests/ or manifests/. Requests whose Host is not a loopback name are
refused, so a web page cannot reach it through a DNS name rebound to 127.0.0.1.
"""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Iterator
from html import escape
from typing import Final, Self

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from bananabatch.core.intake.rules import key_problem
from bananabatch.emulator.base.server import listen, uvicorn_config
from bananabatch.pipeline import thumbnails
from bananabatch.pipeline.runtime import Runtime
from bananabatch.report.thumbs import THUMB_CONTENT_TYPE, THUMB_EXTENSION

LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost")
# The folders of a job a gallery reads (as fetch_cli's zip); files at its top level too.
_SERVED_FOLDERS: Final = ("images/", "thumbs/", "gallery/")
_CHUNK: Final = 1024 * 1024
_HEADERS: Final = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


class _PerName:
    """One lock per thumbnail being made, so concurrent requests for it make it once."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def make(self, rt: Runtime, job_id: str, key: str) -> bytes | None:
        name = f"{job_id}/{key}"
        with self._guard:
            lock, users = self._locks.get(name, (threading.Lock(), 0))
            self._locks[name] = (lock, users + 1)
        try:
            with lock:
                return thumbnails.ensure_thumbnail(rt, job_id, key)
        finally:
            with self._guard:
                lock, users = self._locks[name]
                if users == 1:
                    del self._locks[name]
                else:
                    self._locks[name] = (lock, users - 1)


def gallery_app(rt: Runtime) -> Starlette:
    """The app: `/` lists the jobs, `/jobs/<job>/index.html` is a job's gallery."""
    bucket = rt.settings.results_bucket
    once = _PerName()

    async def jobs(_request: Request) -> Response:
        records = await run_in_threadpool(rt.repo.list_jobs)
        rows = "".join(
            f'<li><a href="jobs/{escape(j.job_id)}/index.html">{escape(j.job_id)}</a>'
            f" {escape(j.state.value)}</li>"
            for j in sorted(records, key=lambda j: j.job_id)
        )
        return HTMLResponse(
            f"<!doctype html><meta charset=utf-8><title>bananabatch jobs</title>"
            f"<h1>Jobs</h1><ul>{rows}</ul>",
            headers=_HEADERS,
        )

    async def thumb(request: Request) -> Response:
        job_id, name = request.path_params["job_id"], request.path_params["name"]
        key = name.removesuffix(f".{THUMB_EXTENSION}")
        if key == name or key_problem(key) or key_problem(job_id):
            return _not_found()
        made = await run_in_threadpool(once.make, rt, job_id, key)
        if made is None:
            return _not_found()
        return Response(made, media_type=THUMB_CONTENT_TYPE, headers=_HEADERS)

    async def job_file(request: Request) -> Response:
        job_id, inner = request.path_params["job_id"], request.path_params["path"]
        if key_problem(job_id) or not _servable(inner):
            return _not_found()
        name = f"jobs/{job_id}/{inner}"
        info = await run_in_threadpool(rt.objects.stat, bucket, name)
        if info is None:
            return _not_found()
        media = info.content_type or mimetypes.guess_type(inner)[0] or "application/octet-stream"
        return StreamingResponse(
            _chunks(rt, bucket, name),
            media_type=media,
            headers={**_HEADERS, "Content-Length": str(info.size)},
        )

    return Starlette(
        routes=[
            Route("/", jobs, methods=["GET"]),
            Route("/jobs/{job_id}/thumbs/{name}", thumb, methods=["GET"]),
            Route("/jobs/{job_id}/{path:path}", job_file, methods=["GET"]),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES))],
    )


def _servable(inner: str) -> bool:
    """A job's file a gallery may read: a report at its top level or one in a served folder,
    each part of its name a plain one (no dot-names, no empty parts)."""
    parts = inner.split("/")
    if any(not p or p.startswith(".") or "\\" in p for p in parts):
        return False
    return len(parts) == 1 or (len(parts) == 2 and f"{parts[0]}/" in _SERVED_FOLDERS)


def _chunks(rt: Runtime, bucket: str, name: str) -> Iterator[bytes]:
    with rt.objects.open_read(bucket, name) as source:
        while chunk := source.read(_CHUNK):
            yield chunk


def _not_found() -> Response:
    return PlainTextResponse("not found", status_code=404, headers=_HEADERS)


class GalleryServer:
    """`with GalleryServer(rt, port) as g:` serves the galleries at `g.base_url` on a thread."""

    def __init__(self, rt: Runtime, port: int = 0, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._app = gallery_app(rt)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def job_url(self, job_id: str) -> str:
        return f"{self.base_url}/jobs/{job_id}/index.html"

    def start(self) -> Self:
        # Listening before the thread starts: a port in use fails here, in the caller.
        sock = listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self._app))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"gallery-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
