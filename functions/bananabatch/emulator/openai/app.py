"""The OpenAI API routes the `openai` SDK uses for Batch, under /v1, on Starlette: files
(multipart upload, list, retrieve, delete, content), batches (create, retrieve, list with
`after`/`limit`, cancel) and webhook endpoints. State lives in OpenAIEmulatorState; this
module only speaks HTTP: bearer auth, JSON in and out, streamed downloads and their faults.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bananabatch.emulator.base.downloads import download
from bananabatch.emulator.base.routes import authed, error_response, json_object
from bananabatch.emulator.openai.generate import error, invalid
from bananabatch.emulator.openai.store import ApiError, OpenAIEmulatorState
from bananabatch.log import get_logger

_log = get_logger("bananabatch.emulator.openai")

MAX_LIST_LIMIT = 100

_api = authed(OpenAIEmulatorState.check_key)


async def _json(request: Request) -> dict[str, Any]:
    return await json_object(
        request,
        unreadable=lambda why: ApiError(
            invalid(f"We could not parse the JSON body of your request: {why}")
        ),
        not_object=lambda: ApiError(invalid("The request body must be a JSON object.")),
    )


# --- files ---------------------------------------------------------------------------------


@_api
async def files_create(state: OpenAIEmulatorState, request: Request) -> Response:
    form = await request.form(max_part_size=256 * 1024 * 1024)
    try:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise ApiError(invalid("Missing required parameter: 'file'.", "file"))
        if not isinstance(purpose, str):
            raise ApiError(invalid("Missing required parameter: 'purpose'.", "purpose"))
        entry = await run_in_threadpool(
            state.add_file, upload.filename or "upload.jsonl", purpose, upload.file
        )
    finally:
        await form.close()
    return JSONResponse(entry.to_json())


@_api
async def files_list(state: OpenAIEmulatorState, request: Request) -> Response:
    entries = state.list_files()
    purpose = request.query_params.get("purpose")
    data = [e.to_json() for e in entries if purpose is None or e.purpose == purpose]
    return JSONResponse({"object": "list", "data": data, "has_more": False})


@_api
async def files_item(state: OpenAIEmulatorState, request: Request) -> Response:
    file_id = request.path_params["file_id"]
    if request.method == "DELETE":
        await run_in_threadpool(state.delete_file, file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})
    return JSONResponse(state.get_file(file_id).to_json())


@_api
async def files_content(state: OpenAIEmulatorState, request: Request) -> Response:
    return download(state.content_path(request.path_params["file_id"]), state.faults)


# --- batches -------------------------------------------------------------------------------


@_api
async def batches_create(state: OpenAIEmulatorState, request: Request) -> Response:
    body = await _json(request)
    batch = await run_in_threadpool(state.create_batch, body)
    return JSONResponse(state.batch_json(batch))


@_api
async def batches_list(state: OpenAIEmulatorState, request: Request) -> Response:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise ApiError(invalid(f"Invalid 'limit': {raw!r}; expected 1 to 100.", "limit"))
    after = request.query_params.get("after")
    batches, more = await run_in_threadpool(state.list_batches, after, int(raw))
    data = [state.batch_json(b) for b in batches]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


@_api
async def batches_item(state: OpenAIEmulatorState, request: Request) -> Response:
    batch = await run_in_threadpool(state.get_batch, request.path_params["batch_id"])
    return JSONResponse(state.batch_json(batch))


@_api
async def batches_cancel(state: OpenAIEmulatorState, request: Request) -> Response:
    batch = await run_in_threadpool(state.cancel_batch, request.path_params["batch_id"])
    return JSONResponse(state.batch_json(batch))


# --- webhook endpoints ---------------------------------------------------------------------


@_api
async def webhook_endpoints_create(state: OpenAIEmulatorState, request: Request) -> Response:
    body = await _json(request)
    url, name, events = body.get("url"), body.get("name"), body.get("event_types")
    if not isinstance(url, str) or not url:
        raise ApiError(invalid("Missing required parameter: 'url'.", "url"))
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ApiError(invalid("Missing required parameter: 'event_types'.", "event_types"))
    return JSONResponse(
        state.webhooks.register(url, events, name if isinstance(name, str) else None)
    )


async def _no_route(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(
        ApiError(
            error(
                status,
                f"Invalid URL ({request.method} {request.url.path})",
                None,
                "invalid_request_error",
            )
        )
    )


async def _crash(request: Request, exc: Exception) -> Response:
    _log.exception("openai emulator handler failed", extra={"path": request.url.path})
    return error_response(
        ApiError(error(500, f"emulator error: {type(exc).__name__}: {exc}", None, "server_error"))
    )


def create_app(state: OpenAIEmulatorState) -> Starlette:
    routes = [
        Route("/v1/files", files_create, methods=["POST"]),
        Route("/v1/files", files_list, methods=["GET"]),
        Route("/v1/files/{file_id}", files_item, methods=["GET", "DELETE"]),
        Route("/v1/files/{file_id}/content", files_content, methods=["GET"]),
        Route("/v1/batches", batches_create, methods=["POST"]),
        Route("/v1/batches", batches_list, methods=["GET"]),
        Route("/v1/batches/{batch_id}", batches_item, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", batches_cancel, methods=["POST"]),
        Route("/v1/webhook_endpoints", webhook_endpoints_create, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _no_route, Exception: _crash})
    app.state.emulator = state
    return app
