"""The Gemini Developer API routes google-genai uses (reference §2, checklist §9), served
under /v1 and /v1beta, on Starlette. State lives in EmulatorState; this module only speaks
HTTP: auth, JSON in and out, the resumable upload protocol, and streamed downloads.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bananabatch.emulator import vertex
from bananabatch.emulator.base.downloads import download
from bananabatch.emulator.errors import ApiError, invalid, not_found
from bananabatch.emulator.store import EmulatorState, page
from bananabatch.log import get_logger

VERSIONS = frozenset({"v1", "v1beta"})
CHUNK_GRANULARITY = str(8 * 1024 * 1024)

_log = get_logger("bananabatch.emulator")

Handler = Callable[[Request], Awaitable[Response]]


def _envelope(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.envelope(), status_code=error.http_status, headers=headers)


def _api(
    *, auth: bool = True
) -> Callable[[Callable[[EmulatorState, Request], Awaitable[Response]]], Handler]:
    """Wrap a handler: check the version segment and the key, turn ApiError into envelopes."""

    def wrap(fn: Callable[[EmulatorState, Request], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            state: EmulatorState = request.app.state.emulator
            try:
                if request.path_params.get("version", "v1beta") not in VERSIONS:
                    raise not_found(f"API version {request.path_params['version']!r} is unknown")
                if auth:
                    key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
                    state.check_key(key)
                return await fn(state, request)
            except ApiError as error:
                return _envelope(error)

        return endpoint

    return wrap


async def _json_body(request: Request, limit: int | None = None) -> dict[str, Any]:
    body = await request.body()
    if limit is not None and len(body) > limit:
        raise invalid(f"Request payload size exceeds the limit: {limit} bytes.")
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        raise invalid(f"Invalid JSON payload received. {exc.msg} at position {exc.pos}.") from exc
    if not isinstance(parsed, dict):
        raise invalid("Invalid JSON payload received: expected an object.")
    return parsed


def _base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _split_verb(rest: str) -> tuple[str, str | None]:
    name, _, verb = rest.partition(":")
    return name, verb or None


def _page_args(request: Request) -> tuple[int, str | None]:
    raw = request.query_params.get("pageSize") or request.query_params.get("page_size") or "0"
    token = request.query_params.get("pageToken") or request.query_params.get("page_token")
    try:
        return int(raw), token
    except ValueError as exc:
        raise invalid(f"pageSize must be an integer, found {raw!r}") from exc


# --- files ---------------------------------------------------------------------------------


@_api(auth=False)
async def upload(state: EmulatorState, request: Request) -> Response:
    upload_id = request.query_params.get("upload_id")
    if upload_id is None:
        state.check_key(request.headers.get("x-goog-api-key") or request.query_params.get("key"))
        return await _upload_start(state, request)
    command = request.headers.get("x-goog-upload-command", "")
    commands = {part.strip() for part in command.split(",")}
    if "query" in commands:
        return Response(status_code=200, headers={"X-Goog-Upload-Status": "active"})
    raw_offset = request.headers.get("x-goog-upload-offset")
    try:
        offset = int(raw_offset) if raw_offset is not None else None
    except ValueError as exc:
        raise invalid(f"X-Goog-Upload-Offset must be an integer, found {raw_offset!r}") from exc
    data = await request.body()
    session, entry = await run_in_threadpool(
        state.upload_chunk, upload_id, offset, data, "finalize" in commands
    )
    if entry is None:
        return Response(
            status_code=200,
            headers={
                "X-Goog-Upload-Status": "active",
                "X-Goog-Upload-Size-Received": str(session.received),
            },
        )
    return JSONResponse(
        {"file": state.file_json(entry, _base_url(request))},
        headers={"X-Goog-Upload-Status": "final"},
    )


async def _upload_start(state: EmulatorState, request: Request) -> Response:
    protocol = request.headers.get("x-goog-upload-protocol", "")
    if protocol != "resumable":
        raise invalid(f"X-Goog-Upload-Protocol: expected 'resumable', found {protocol!r}")
    raw_size = request.headers.get("x-goog-upload-header-content-length")
    size = int(raw_size) if raw_size and raw_size.isdigit() else None
    metadata = await _json_body(request)
    session = state.start_upload(
        metadata, request.headers.get("x-goog-upload-header-content-type"), size
    )
    # The SDK posts chunks to this URL exactly as given, so it must be absolute and ours.
    upload_url = request.url.replace(
        query=f"upload_id={session.upload_id}&upload_protocol=resumable"
    )
    return Response(
        status_code=200,
        headers={
            "X-Goog-Upload-URL": str(upload_url),
            "X-Goog-Upload-Status": "active",
            "X-Goog-Upload-Chunk-Granularity": CHUNK_GRANULARITY,
        },
    )


@_api()
async def files_list(state: EmulatorState, request: Request) -> Response:
    size, token = _page_args(request)
    entries, next_token = state.list_files(size, token)
    body: dict[str, Any] = {"files": [state.file_json(e, _base_url(request)) for e in entries]}
    if next_token:
        body["nextPageToken"] = next_token
    return JSONResponse(body)


@_api()
async def files_item(state: EmulatorState, request: Request) -> Response:
    name, verb = _split_verb(request.path_params["rest"])
    if verb == "download":
        return _download(state, name)
    if verb is not None:
        raise not_found(f"unknown method files/{name}:{verb}")
    if request.method == "DELETE":
        await run_in_threadpool(state.delete_file, name)
        return JSONResponse({})
    return JSONResponse(state.file_json(state.get_file(name), _base_url(request)))


def _download(state: EmulatorState, name: str) -> Response:
    return download(state.download_path(name).path, state.faults)


@_api()
async def download_alias(state: EmulatorState, request: Request) -> Response:
    name, verb = _split_verb(request.path_params["rest"])
    if verb != "download":
        raise not_found(f"unknown download path files/{request.path_params['rest']}")
    return _download(state, name)


# --- batches -------------------------------------------------------------------------------


@_api()
async def batches_list(state: EmulatorState, request: Request) -> Response:
    size, token = _page_args(request)
    batches, next_token = await run_in_threadpool(state.list_batches, size, token)
    body: dict[str, Any] = {"operations": [state.operation_json(b, for_list=True) for b in batches]}
    if next_token:
        body["nextPageToken"] = next_token
    return JSONResponse(body)


@_api()
async def batches_item(state: EmulatorState, request: Request) -> Response:
    name, verb = _split_verb(request.path_params["rest"])
    if request.method == "POST" and verb == "cancel":
        await run_in_threadpool(state.cancel_batch, name)
        return JSONResponse({})
    if (request.method == "POST" and verb == "delete") or (
        request.method == "DELETE" and verb is None
    ):
        await run_in_threadpool(state.delete_batch, name)
        return JSONResponse({})
    if request.method == "GET" and verb is None:
        batch = await run_in_threadpool(state.get_batch, name)
        return JSONResponse(state.operation_json(batch))
    raise not_found(f"unknown method {request.method} batches/{request.path_params['rest']}")


# --- models --------------------------------------------------------------------------------


@_api()
async def models_list(state: EmulatorState, request: Request) -> Response:
    """models.list: every served model with its supportedGenerationMethods, paged."""
    size, token = _page_args(request)
    models, next_token = page(list(state.models.all()), size, token)
    body: dict[str, Any] = {"models": [m.to_json() for m in models]}
    if next_token:
        body["nextPageToken"] = next_token
    return JSONResponse(body)


@_api()
async def models_item(state: EmulatorState, request: Request) -> Response:
    model, verb = _split_verb(request.path_params["rest"])
    if request.method == "GET":
        if verb is not None:
            raise not_found(f"unknown method GET models/{request.path_params['rest']}")
        served = state.models.get(model)
        if served is None:
            raise not_found(f"models/{model} is not found for API version v1beta.")
        return JSONResponse(served.to_json())
    body = await _json_body(request, limit=state.config.max_inline_bytes)
    if verb == "batchGenerateContent":
        batch = await run_in_threadpool(state.create_batch, f"models/{model}", body)
        return JSONResponse(state.operation_json(batch))
    if verb == "generateContent":
        response = await run_in_threadpool(state.generate_now, f"models/{model}", body)
        return JSONResponse(response)
    raise not_found(f"unknown method models/{model}:{verb}")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    canonical = {404: "NOT_FOUND", 405: "INVALID_ARGUMENT"}.get(status, "INTERNAL")
    return _envelope(ApiError(status, canonical, f"{request.method} {request.url.path}: no route"))


async def _crash(request: Request, exc: Exception) -> Response:
    _log.exception("emulator handler failed", extra={"path": request.url.path})
    return _envelope(ApiError(500, "INTERNAL", f"emulator error: {type(exc).__name__}: {exc}"))


@_api()
async def webhooks_create(state: EmulatorState, request: Request) -> Response:
    body = await _json_body(request)
    uri = body.get("uri")
    if not isinstance(uri, str) or not uri:
        raise invalid("webhook.uri is required")
    events = [str(e) for e in body.get("subscribed_events") or []]
    return JSONResponse(state.webhooks.register(uri, events, body.get("name")))


@_api()
async def webhooks_list(state: EmulatorState, request: Request) -> Response:
    """The project's registered webhooks, as `webhooks.list` answers (no secrets)."""
    hooks = [
        {
            "id": hook.webhook_id,
            "name": f"webhooks/{hook.webhook_id}",
            "uri": hook.uri,
            "subscribed_events": list(hook.events),
            "state": "enabled",
        }
        for hook in list(state.webhooks.registrations.values())
    ]
    return JSONResponse({"webhooks": hooks})


async def jwks(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    return JSONResponse(state.webhooks.jwks())


def create_app(state: EmulatorState) -> Starlette:
    routes = [
        Route("/{version}/webhooks", webhooks_create, methods=["POST"]),
        Route("/{version}/webhooks", webhooks_list, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/upload/{version}/files", upload, methods=["POST"]),
        Route("/download/{version}/files/{rest}", download_alias, methods=["GET"]),
        Route("/{version}/files", files_list, methods=["GET"]),
        Route("/{version}/files/{rest}", files_item, methods=["GET", "DELETE"]),
        Route("/{version}/batches", batches_list, methods=["GET"]),
        Route("/{version}/batches/{rest}", batches_item, methods=["GET", "POST", "DELETE"]),
        Route("/{version}/models", models_list, methods=["GET"]),
        Route("/{version}/models/{rest}", models_item, methods=["GET", "POST"]),
        # Vertex AI batch prediction (GCS in/out), beside the Developer API.
        *vertex.routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _crash},
    )
    app.state.emulator = state
    return app
