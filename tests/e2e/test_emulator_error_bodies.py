"""Every error the Gemini emulator answers over HTTP has the service's envelope with
`details` (issue 13 parts 3 and 8): at least a google.rpc.ErrorInfo naming the service, so
code that reads `details` (providers/classify.py) meets what production sends, whatever
the route, the verb or the reason."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig

KEY = {"x-goog-api-key": "the-key"}
CREATE = "/v1beta/models/gemini-3-pro-image:batchGenerateContent"

CASES = [
    ("unknown batch", "GET", "/v1beta/batches/nope", KEY, None, 404),
    ("unknown API version", "GET", "/v9/batches", KEY, None, 404),
    ("wrong key", "GET", "/v1beta/batches", {"x-goog-api-key": "wrong"}, None, 400),
    ("no key", "GET", "/v1beta/batches", {}, None, 403),
    ("body not JSON", "POST", CREATE, KEY, b"{not json", 400),
    ("no such method", "PUT", "/v1beta/batches", KEY, None, 405),
    ("no such route", "GET", "/nowhere", {}, None, 404),
    ("unknown file", "GET", "/v1beta/files/abc", KEY, None, 403),
    ("unknown model", "POST", "/v1beta/models/nope:batchGenerateContent", KEY, b"{}", 404),
    ("bad page size", "GET", "/v1beta/batches?pageSize=x", KEY, None, 400),
    ("create without input", "POST", CREATE, KEY, b'{"batch": {}}', 400),
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key="the-key")) as server:
        yield server


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_every_http_error_of_the_emulator_carries_details_like_the_service(
    emulator: EmulatorServer,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
) -> None:
    answer = httpx.request(method, emulator.base_url + path, headers=headers, content=body)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == status
    assert error["status"]
    assert error["message"]
    info = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert len(info) == 1
    assert info[0]["reason"]
    assert info[0]["domain"] == "googleapis.com"
    assert info[0]["metadata"]["service"] == "generativelanguage.googleapis.com"
