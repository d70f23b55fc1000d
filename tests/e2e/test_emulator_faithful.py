"""Where the emulator used to differ from the service (issue 13 item 8), checked with the
unmodified google-genai SDK: inline jobs carry no inputConfig, text models batch, the Files
API refuses types it does not take, a file's uri is the service's so the SDK can turn it
back into a name, and every fileData URI of every row is read before anything is made."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from bananabatch.emulator.server import EmulatorServer
from bananabatch.emulator.store import EmulatorConfig, ManualClock
from tests.support.emulator import image_request

MODEL = "gemini-3-pro-image"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, clock=ManualClock())
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def client(emu: EmulatorServer) -> genai.Client:
    return genai.Client(api_key="k", http_options={"base_url": emu.base_url})


def _raw_batch(emu: EmulatorServer, name: str) -> dict[str, Any]:
    response = httpx.get(f"{emu.base_url}/v1beta/{name}", headers={"x-goog-api-key": "k"})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _upload(client: genai.Client, data: bytes, mime: str = "jsonl") -> types.File:
    return client.files.upload(file=io.BytesIO(data), config={"mime_type": mime})


def _inline(text: str) -> list[types.InlinedRequestDict]:
    content: types.ContentDict = {"parts": [{"text": text}], "role": "user"}
    return [{"contents": [content]}]


def test_only_file_jobs_carry_an_input_config(client: genai.Client, emu: EmulatorServer) -> None:
    inline = client.batches.create(
        model=MODEL,
        src=_inline("a cat"),
    )
    assert inline.name is not None
    assert "inputConfig" not in _raw_batch(emu, inline.name)["metadata"]
    line = {"key": "a", "request": image_request("a dog")}
    uploaded = _upload(client, (json.dumps(line) + "\n").encode())
    assert uploaded.name is not None
    by_file = client.batches.create(model=MODEL, src=uploaded.name)
    assert by_file.name is not None
    meta = _raw_batch(emu, by_file.name)["metadata"]
    assert meta["inputConfig"] == {"fileName": uploaded.name}


def test_a_text_model_runs_batches_too(client: genai.Client, emu: EmulatorServer) -> None:
    job = client.batches.create(
        model="gemini-2.5-flash",
        src=_inline("say hello"),
    )
    assert job.name is not None
    emu.state.complete(job.name)
    done = client.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.dest is not None
    assert done.dest.inlined_responses is not None
    response = done.dest.inlined_responses[0].response
    assert response is not None
    assert response.text is not None
    assert "say hello" in response.text
    # An embedding model does not take batchGenerateContent: refused as the service does.
    with pytest.raises(genai_errors.ClientError) as caught:
        client.batches.create(
            model="gemini-embedding-001",
            src=_inline("x"),
        )
    assert caught.value.code == 404
    assert "not supported for batchGenerateContent" in str(caught.value)


@pytest.mark.parametrize("mime", ["application/zip", "application/octet-stream"])
def test_an_unsupported_upload_type_is_refused(client: genai.Client, mime: str) -> None:
    with pytest.raises(genai_errors.ClientError) as caught:
        _upload(client, b"PK\x03\x04", mime)
    assert caught.value.code == 400
    assert "Unsupported MIME type" in str(caught.value)


@pytest.mark.parametrize("mime", ["jsonl", "application/jsonl", "application/json", "image/png"])
def test_the_types_batch_inputs_and_references_use_are_taken(
    client: genai.Client, mime: str
) -> None:
    assert _upload(client, b"{}\n", mime).state == types.FileState.ACTIVE


def test_a_files_uri_is_the_services_and_the_sdk_turns_it_back_into_a_name(
    client: genai.Client,
) -> None:
    uploaded = _upload(client, b"{}\n")
    assert uploaded.uri is not None
    assert uploaded.uri.startswith("https://generativelanguage.googleapis.com/v1beta/files/")
    again = client.files.get(name=uploaded.uri)
    assert again.name == uploaded.name


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the stdlib's name
        if self.path.split("?", 1)[0] == "/fox.png":
            body = b"\x89PNG\r\n\x1a\n" + b"0" * 64
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
        else:
            body = b"not here"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def images() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _with_reference(prompt: str, uri: str) -> dict[str, Any]:
    request = image_request(prompt)
    request["contents"][0]["parts"].append({"fileData": {"fileUri": uri, "mimeType": "image/png"}})
    return request


def test_every_reference_of_every_row_is_read_and_a_row_never_succeeds_on_a_missing_one(
    client: genai.Client, emu: EmulatorServer, images: str
) -> None:
    uploaded = _upload(client, b"\x89PNG\r\n\x1a\n0000", "image/png")
    assert uploaded.uri is not None
    rows = {
        "url-ok": _with_reference("a", f"{images}/fox.png"),
        "url-404": _with_reference("b", f"{images}/gone.png"),
        "file-ok": _with_reference("c", uploaded.uri),
        "file-unknown": _with_reference("d", "files/nosuchfile"),
        "plain": image_request("e"),
    }
    data = "".join(json.dumps({"key": k, "request": r}) + "\n" for k, r in rows.items())
    source = _upload(client, data.encode())
    assert source.name is not None
    job = client.batches.create(model=MODEL, src=source.name)
    assert job.name is not None
    emu.state.complete(job.name)
    done = client.batches.get(name=job.name)
    assert done.dest is not None
    assert done.dest.file_name is not None
    lines = [json.loads(x) for x in client.files.download(file=done.dest.file_name).splitlines()]
    by_key = {line["key"]: line for line in lines}
    assert "response" in by_key["url-ok"]
    assert "response" in by_key["file-ok"]
    assert "response" in by_key["plain"]
    assert by_key["url-404"]["error"]["code"] == 3
    assert "HTTP 404" in by_key["url-404"]["error"]["message"]
    assert by_key["file-unknown"]["error"]["code"] == 7


def test_a_gs_reference_is_read_only_when_the_project_registered_it() -> None:
    request = _with_reference("a", "gs://refs/fox.png")
    for mode, succeeds in (("registered", True), ("refused", False)):
        config = EmulatorConfig(clock=ManualClock(), gcs_references=mode)  # type: ignore[arg-type]
        with EmulatorServer(config) as server:
            client = genai.Client(api_key="k", http_options={"base_url": server.base_url})
            if succeeds:
                client.models.generate_content(model=MODEL, contents=request["contents"])
            else:
                with pytest.raises(genai_errors.ClientError) as caught:
                    client.models.generate_content(model=MODEL, contents=request["contents"])
                assert "files:register" in str(caught.value)


def test_a_signed_url_that_expires_before_its_row_runs_fails_the_row(
    emu: EmulatorServer, images: str
) -> None:
    short = _with_reference("a", f"{images}/fox.png?X-Goog-Expires=3600")
    long = _with_reference("b", f"{images}/fox.png?X-Goog-Expires=259200")
    assert (
        emu.state.reference_problem(short["contents"][0]["parts"][1]["fileData"]["fileUri"]) is None
    )
    problem = emu.state.reference_problem(
        short["contents"][0]["parts"][1]["fileData"]["fileUri"], age_seconds=2 * 3600
    )
    assert problem is not None
    assert problem[0] == 3
    assert "ExpiredToken" in problem[1]
    assert "X-Goog" not in problem[1]
    uri = long["contents"][0]["parts"][1]["fileData"]["fileUri"]
    assert emu.state.reference_problem(uri, age_seconds=47 * 3600) is None


def test_file_uris_are_refused_alike_unless_under_the_local_stacks_folder(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    # The service takes no file:// URI; the emulator reads the local folder store's
    # stand-ins only, and answers the same for a file outside it whether or not it exists.
    inside = tmp_path / "state" / "buckets" / "results" / "fox.png"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 16)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 16)
    check = emu.state.reference_problem
    assert check(inside.as_uri()) == (3, f"Unsupported file uri: {inside.as_uri()}")
    emu.state.config.local_files_root = tmp_path / "state"
    assert check(inside.as_uri()) is None
    escape = (tmp_path / "state" / ".." / "secret.png").as_posix()
    for uri in (secret.as_uri(), "file://" + escape, (tmp_path / "absent.png").as_uri()):
        problem = check(uri)
        assert problem is not None
        assert problem[1].startswith("Unsupported file uri:")
