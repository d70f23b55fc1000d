"""The routes the official `replicate` client uses for predictions, on Starlette:
`POST /v1/models/{owner}/{name}/predictions`, `POST /v1/predictions` (by version),
`GET /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel`,
`GET /v1/webhooks/default/secret`, and `GET /files/{name}` for outputs (no auth, as
Replicate's delivery host). State lives in ReplicateEmulatorState."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from bananabatch.emulator.base.routes import authed, json_object, origin
from bananabatch.emulator.replicate.store import ReplicateApiError, ReplicateEmulatorState

_api = authed(ReplicateEmulatorState.check_token)


async def _json(request: Request) -> dict[str, Any]:
    return await json_object(
        request,
        unreadable=lambda why: ReplicateApiError(400, "Invalid JSON", why),
        not_object=lambda: ReplicateApiError(400, "Invalid JSON", "expected an object"),
    )


async def _create(
    state: ReplicateEmulatorState, request: Request, model: str, body: dict[str, Any]
) -> Response:
    prediction, stall = await run_in_threadpool(state.create, model, body, origin(request))
    if stall:
        # Created (and billed) above; the answer is held, so a client that times out
        # never learns the prediction's id.
        await run_in_threadpool(state.gate.wait)
    return JSONResponse(state.prediction_json(prediction), status_code=201)


@_api
async def model_predictions(state: ReplicateEmulatorState, request: Request) -> Response:
    model = f"{request.path_params['owner']}/{request.path_params['name']}"
    return await _create(state, request, model, await _json(request))


@_api
async def version_predictions(state: ReplicateEmulatorState, request: Request) -> Response:
    body = await _json(request)
    version = body.get("version")
    # "owner/name:version" or a bare version id: the emulator hosts models, not versions.
    model = str(version).split(":", 1)[0] if isinstance(version, str) else ""
    if "/" not in model:
        raise ReplicateApiError(422, "Invalid version", "version: expected owner/name:version")
    return await _create(state, request, model, body)


@_api
async def prediction_get(state: ReplicateEmulatorState, request: Request) -> Response:
    prediction = await run_in_threadpool(state.get, request.path_params["prediction_id"])
    return JSONResponse(state.prediction_json(prediction))


@_api
async def prediction_cancel(state: ReplicateEmulatorState, request: Request) -> Response:
    prediction = await run_in_threadpool(state.cancel, request.path_params["prediction_id"])
    return JSONResponse(state.prediction_json(prediction))


@_api
async def default_secret(state: ReplicateEmulatorState, request: Request) -> Response:
    return JSONResponse({"key": state.signing_secret})


async def files(request: Request) -> Response:
    state: ReplicateEmulatorState = request.app.state.emulator
    path = state.output_path(request.path_params["name"])
    if path is None:
        return JSONResponse({"detail": "Not found"}, status_code=404)
    return FileResponse(path, media_type="image/png")


def create_app(state: ReplicateEmulatorState) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/models/{owner}/{name}/predictions", model_predictions, methods=["POST"]),
            Route("/v1/predictions", version_predictions, methods=["POST"]),
            Route("/v1/predictions/{prediction_id}", prediction_get, methods=["GET"]),
            Route("/v1/predictions/{prediction_id}/cancel", prediction_cancel, methods=["POST"]),
            Route("/v1/webhooks/default/secret", default_secret, methods=["GET"]),
            Route("/files/{name}", files, methods=["GET"]),
        ]
    )
    app.state.emulator = state
    return app
