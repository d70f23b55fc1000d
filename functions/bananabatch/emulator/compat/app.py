"""The route the `openai` SDK's `images.generate` calls, `POST /v1/images/generations`, as an
OpenAI-compatible gateway serves it, plus `GET /files/{id}` for answers given as URLs."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bananabatch.emulator.compat.store import CompatEmulatorState, CompatError


def _error(exc: CompatError) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


async def generations(request: Request) -> Response:
    state: CompatEmulatorState = request.app.state.emulator
    try:
        state.check_key(request.headers.get("authorization"))
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as exc:
            raise CompatError(400, f"We could not parse the JSON body: {exc.msg}") from exc
        if not isinstance(body, dict):
            raise CompatError(400, "The request body must be a JSON object.")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        answer, stall = await run_in_threadpool(state.generate, body, origin)
    except CompatError as exc:
        return _error(exc)
    # Made and billed above; a stalled answer is held here, so a client that times out
    # never learns it was made.
    await run_in_threadpool(state.wait_if_stalled, stall)
    return JSONResponse(answer)


async def files(request: Request) -> Response:
    state: CompatEmulatorState = request.app.state.emulator
    image = state.file(request.path_params["file_id"])
    if image is None:
        return _error(CompatError(404, "No such file."))
    return Response(image, media_type="image/png")


def create_app(state: CompatEmulatorState) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/images/generations", generations, methods=["POST"]),
            Route("/files/{file_id}", files, methods=["GET"]),
        ]
    )
    app.state.emulator = state
    return app
