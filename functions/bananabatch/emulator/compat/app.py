"""The route the `openai` SDK's `images.generate` calls, `POST /v1/images/generations`, as an
OpenAI-compatible gateway serves it, plus `GET /files/{id}` for answers given as URLs."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bananabatch.emulator.base.routes import authed, error_response, json_object, origin
from bananabatch.emulator.compat.store import CompatEmulatorState, CompatError


@authed(CompatEmulatorState.check_key)
async def generations(state: CompatEmulatorState, request: Request) -> Response:
    body = await json_object(
        request,
        unreadable=lambda why: CompatError(400, f"We could not parse the JSON body: {why}"),
        not_object=lambda: CompatError(400, "The request body must be a JSON object."),
    )
    answer, stall = await run_in_threadpool(state.generate, body, origin(request))
    # Made and billed above; a stalled answer is held here, so a client that times out
    # never learns it was made.
    await run_in_threadpool(state.wait_if_stalled, stall)
    return JSONResponse(answer)


async def files(request: Request) -> Response:
    state: CompatEmulatorState = request.app.state.emulator
    image = state.file(request.path_params["file_id"])
    if image is None:
        return error_response(CompatError(404, "No such file."))
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
