"""Serving a result file through the FaultPlan's download faults: a download cut off
mid-body, or a slow one whose slowness is on the test's clock, not the wall's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from starlette.responses import FileResponse, Response, StreamingResponse

from bananabatch.emulator.faults import FaultPlan


def download(path: Path, faults: FaultPlan) -> Response:
    """The file, unless a counted download fault takes this download."""
    if faults.take_truncated_download():
        return truncated(path)
    if faults.take_slow_download():
        return slow(path, faults.slow_chunk_bytes, faults.slow_chunk_seconds, faults.on_slow_chunk)
    # FileResponse streams from disk and answers Range requests.
    return FileResponse(path, media_type="application/octet-stream")


def truncated(path: Path) -> Response:
    """Half the file under a Content-Length for all of it: the server drops the connection
    when the body runs short, as a download cut off mid-transfer does."""
    size = path.stat().st_size

    async def half() -> AsyncIterator[bytes]:
        with path.open("rb") as source:
            yield source.read(size // 2)

    return StreamingResponse(
        half(), media_type="application/octet-stream", headers={"Content-Length": str(size)}
    )


def slow(
    path: Path, chunk_bytes: int, seconds: float, on_chunk: Callable[[float], None] | None
) -> Response:
    """The whole file in small chunks, calling on_chunk(seconds) before each: a transfer that
    takes `seconds` per chunk on the clock the hook moves, and no time on any other."""

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as source:
            while chunk := source.read(chunk_bytes):
                if on_chunk is not None:
                    on_chunk(seconds)
                yield chunk

    # A plain iterator: Starlette runs it in its thread pool, so the hook may block.
    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"Content-Length": str(path.stat().st_size)},
    )
