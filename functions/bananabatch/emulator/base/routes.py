"""What the one-provider emulators' HTTP routes share (OpenAI Batch, the OpenAI-compatible
images gateway, Replicate): an error answer in the provider's own shape, bearer auth checked
before a route runs, a JSON object body, and the origin the server answers on. Each
emulator keeps its own error bodies and messages; only the plumbing is here."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

S = TypeVar("S")
Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """An HTTP error answer of an emulated API: its status, the provider's error body, and
    extra headers (retry-after). Each emulator's error class fills them its own way."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def error_response(exc: HttpError) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


def authed(
    check: Callable[[S, str | None], None],
) -> Callable[[Callable[[S, Request], Awaitable[Response]]], Handler]:
    """A route of an emulated API that takes the emulator's state: the Authorization header
    is checked by `check` first, and an HttpError becomes its answer."""

    def route(fn: Callable[[S, Request], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            state: S = request.app.state.emulator
            try:
                check(state, request.headers.get("authorization"))
                return await fn(state, request)
            except HttpError as exc:
                return error_response(exc)

        return endpoint

    return route


async def json_object(
    request: Request,
    *,
    unreadable: Callable[[str], HttpError],
    not_object: Callable[[], HttpError],
) -> dict[str, Any]:
    """The request's JSON object body ({} when empty); otherwise the provider's error:
    `unreadable` given the parser's message, or `not_object`."""
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise unreadable(exc.msg) from exc
    if not isinstance(body, dict):
        raise not_object()
    return body


def origin(request: Request) -> str:
    """Where the server answers, for URLs it hands out (files, outputs)."""
    return f"{request.url.scheme}://{request.url.netloc}"
