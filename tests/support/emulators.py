"""Start and stop the Google Cloud emulators on loopback, for contract and end-to-end tests.

Each emulator has `.start()` (returns what its *_EMULATOR_HOST variable should hold) and
`.stop()`, and works as a context manager. Readiness is polled against a deadline; nothing
waits a fixed time.
"""

from __future__ import annotations

import abc
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import grpc  # type: ignore[import-untyped]  # grpcio ships no type information

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
NODE_MODULES: Final = REPO_ROOT / "node_modules"
FIRESTORE_EMULATOR_PACKAGE: Final = NODE_MODULES / "@firestore-emulator" / "server"
START_DEADLINE_S: Final = 30.0

ENV_STORAGE: Final = "STORAGE_EMULATOR_HOST"
ENV_FIRESTORE: Final = "FIRESTORE_EMULATOR_HOST"
ENV_PUBSUB: Final = "PUBSUB_EMULATOR_HOST"


class EmulatorError(RuntimeError):
    """An emulator could not be started; the message says why and what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    *,
    deadline_s: float = START_DEADLINE_S,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll until something accepts connections on 127.0.0.1:port, or fail with the log."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmulatorError(
                f"emulator exited with {process.returncode} before listening on {port}" + _tail(log)
            )
        if port_open(port):
            return
        time.sleep(0.05)
    raise EmulatorError(f"nothing listened on 127.0.0.1:{port} within {deadline_s}s" + _tail(log))


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- emulator log ---\n" + "\n".join(text)


class _Service(abc.ABC):
    """Something a test starts on loopback and must stop: usable as a context manager."""

    @abc.abstractmethod
    def start(self) -> str:
        """Start it and return where clients should connect."""

    @abc.abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Process(_Service):
    """A child in its own process group, stopped by signalling the whole group."""

    name = "emulator"

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.host: str | None = None
        self._logdir = Path(tempfile.mkdtemp(prefix=f"bananabatch-{self.name}-"))
        self.log = self._logdir / "emulator.log"
        self._log_file: IO[bytes] | None = None

    def _spawn(self, argv: list[str], *, stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        self._logdir.mkdir(parents=True, exist_ok=True)  # stop() removes it; start() may follow
        self._log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            # The child exits when this pipe closes, so a test run killed outright leaves
            # no emulator behind.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if stdout_pipe else self._log_file,
            stderr=self._log_file,
            start_new_session=True,
        )
        return self.process

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            except ProcessLookupError:
                pass
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.host = None
        shutil.rmtree(self._logdir, ignore_errors=True)


# gcp-storage-emulator's own entry point, plus an exit when stdin closes (see _spawn).
_STORAGE_LAUNCHER: Final = """
import os, sys, threading
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
from gcp_storage_emulator.__main__ import main
main(sys.argv[1:])
"""


class StorageEmulator(_Process):
    """gcp-storage-emulator, in memory, in a subprocess. `start()` returns the URL for
    STORAGE_EMULATOR_HOST."""

    name = "storage"

    def start(self) -> str:
        last: EmulatorError | None = None
        # The port is picked before the child binds it; if another process grabs it in
        # between, the child exits and we try a fresh port.
        for _ in range(3):
            port = free_port()
            process = self._spawn(
                [
                    sys.executable,
                    "-c",
                    _STORAGE_LAUNCHER,
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--in-memory",
                    "--quiet",
                ]
            )
            try:
                wait_for_port(port, process=process, log=self.log)
            except EmulatorError as exc:
                last = exc
                self._kill_child()
                continue
            self.host = f"http://127.0.0.1:{port}"
            return self.host
        raise EmulatorError(f"the Cloud Storage emulator did not start: {last}")

    def _kill_child(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process is not None and process.stdin is not None:
            process.stdin.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# Binds to loopback and closes some gaps between that emulator and Firestore; see the file.
FIRESTORE_LAUNCHER: Final = Path(__file__).with_name("firestore_emulator.js")


class FirestoreEmulator(_Process):
    """@firestore-emulator/server under Node.js, through firestore_emulator.js. `start()`
    returns host:port for FIRESTORE_EMULATOR_HOST. Needs `npm ci` (`make test` runs it)."""

    name = "firestore"

    def start(self) -> str:
        node = shutil.which("node")
        if node is None:
            raise EmulatorError("Node.js (`node`) is not on PATH; the Firestore emulator needs it")
        if not FIRESTORE_EMULATOR_PACKAGE.is_dir():
            raise EmulatorError(
                f"{FIRESTORE_EMULATOR_PACKAGE} is missing: run `make test` (it runs `npm ci`) "
                "or `npm ci` in the repository root before the GCP tests"
            )
        process = self._spawn([node, str(FIRESTORE_LAUNCHER)], stdout_pipe=True)
        assert process.stdout is not None
        line = _read_line(process, deadline_s=START_DEADLINE_S)
        if not line.startswith("READY "):
            message = f"the Firestore emulator did not start: {line!r}" + _tail(self.log)
            self.stop()
            raise EmulatorError(message)
        port = int(line.split()[1])
        wait_for_port(port, process=process, log=self.log)
        self.host = f"127.0.0.1:{port}"
        return self.host


def _read_line(process: subprocess.Popen[bytes], *, deadline_s: float) -> str:
    """The child's first stdout line, or "" if it exits or stays silent past the deadline."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + deadline_s
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ""
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if not ready:
            if process.poll() is not None:
                return ""
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return buf.decode(errors="replace")
        buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace")


class PubSubFake(_Service):
    """The in-process Pub/Sub gRPC fake (see pubsub_fake.py). `start()` returns host:port
    for PUBSUB_EMULATOR_HOST."""

    def __init__(self) -> None:
        from tests.support.pubsub_fake import PubSubFakeServer

        self.server = PubSubFakeServer()
        self.host: str | None = None

    def start(self) -> str:
        port = self.server.start()
        self.host = f"127.0.0.1:{port}"
        return self.host

    def stop(self) -> None:
        self.server.stop()
        self.host = None


# --- proxies that record and inject faults ---------------------------------------------
# The emulators lack some of the service's answers (a 412 from a generation precondition,
# a 503, an ABORTED commit). A proxy between the unmodified client library and the
# emulator records every request and can answer a chosen one itself, so the GCP-specific
# tests check exactly what production sends and how the adapters react.

_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class _HttpRule:
    matches: Callable[[RecordedRequest], bool]
    status: int
    body: bytes
    times: int | None  # None: for ever


class HttpFaultProxy(_Service):
    """An HTTP reverse proxy on loopback in front of an emulator URL."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.requests: list[RecordedRequest] = []
        self._rules: list[_HttpRule] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def answer(
        self,
        matches: Callable[[RecordedRequest], bool],
        status: int,
        *,
        message: str = "injected by the test",
        times: int | None = 1,
    ) -> None:
        """Answer matching requests with `status` (and a Google-style JSON error) instead of
        forwarding them."""
        body = json.dumps({"error": {"code": status, "message": message, "errors": []}})
        with self._lock:
            self._rules.append(_HttpRule(matches, status, body.encode(), times))

    def _rule_for(self, request: RecordedRequest) -> _HttpRule | None:
        with self._lock:
            self.requests.append(request)
            for rule in self._rules:
                if rule.matches(request):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times == 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def start(self) -> str:
        handler = type("Handler", (_ProxyHandler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="http-fault-proxy",
            daemon=True,
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


class _ProxyHandler(BaseHTTPRequestHandler):
    """Relays one request to the upstream, unless a fault rule answers it."""

    proxy: HttpFaultProxy  # set per server by HttpFaultProxy.start
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        split = urllib.parse.urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=urllib.parse.unquote(split.path),
            query=urllib.parse.parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        rule = self.proxy._rule_for(request)
        if rule is not None:
            self._reply(rule.status, [("Content-Type", "application/json")], rule.body)
            return
        upstream = http.client.HTTPConnection(*self.proxy._upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            self._reply(response.status, kept, payload)
        finally:
            upstream.close()

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # BaseHTTPRequestHandler dispatches on these exact names.
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle  # noqa: N815


# Firestore methods by streaming shape; the proxy must know it to relay raw bytes.
_FIRESTORE_UNARY_STREAM: Final = frozenset(
    {"BatchGetDocuments", "RunQuery", "RunAggregationQuery", "PartitionQuery"}
)
_FIRESTORE_STREAM_STREAM: Final = frozenset({"Listen", "Write"})


class GrpcFaultProxy(_Service):
    """A gRPC proxy on loopback that relays raw messages to `upstream` (host:port), records
    (method, request bytes), and fails chosen calls with a status code."""

    def __init__(
        self,
        upstream: str,
        *,
        unary_stream: frozenset[str] = _FIRESTORE_UNARY_STREAM,
        stream_stream: frozenset[str] = _FIRESTORE_STREAM_STREAM,
    ) -> None:
        self._channel = grpc.insecure_channel(upstream)
        self._unary_stream = unary_stream
        self._stream_stream = stream_stream
        self._lock = threading.Lock()
        self._faults: dict[str, list[Any]] = {}
        self.calls: list[tuple[str, bytes]] = []
        self._server: Any = None
        self.host: str | None = None

    def fail_next(self, method: str, code: Any, times: int = 1) -> None:
        """Fail the next `times` calls of `method` (short name, e.g. "Commit") with `code`."""
        with self._lock:
            self._faults.setdefault(method, []).extend([code] * times)

    def requests(self, method: str) -> list[bytes]:
        with self._lock:
            return [body for name, body in self.calls if name == method]

    def _before(self, full_method: str, request: bytes | None, context: Any) -> None:
        method = full_method.rsplit("/", 1)[-1]
        with self._lock:
            if request is not None:
                self.calls.append((method, request))
            queued = self._faults.get(method)
            code = queued.pop(0) if queued else None
        if code is not None:
            context.abort(code, f"{method} failed on purpose (injected by the test)")

    def start(self) -> str:
        proxy = self

        def metadata(context: Any) -> list[tuple[str, str]]:
            return [(k, v) for k, v in context.invocation_metadata() if not k.startswith(":")]

        class Relay(grpc.GenericRpcHandler):  # type: ignore[misc]
            def service(self, details: Any) -> Any:
                full = details.method
                short = full.rsplit("/", 1)[-1]
                if short in proxy._stream_stream:
                    upstream = proxy._channel.stream_stream(full)

                    def relay_streams(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
                        proxy._before(full, None, context)
                        yield from upstream(requests, metadata=metadata(context))

                    return grpc.stream_stream_rpc_method_handler(relay_streams)
                if short in proxy._unary_stream:
                    upstream_us = proxy._channel.unary_stream(full)

                    def relay_stream(request: bytes, context: Any) -> Iterator[bytes]:
                        proxy._before(full, request, context)
                        try:
                            yield from upstream_us(request, metadata=metadata(context))
                        except grpc.RpcError as exc:
                            context.abort(exc.code(), exc.details())

                    return grpc.unary_stream_rpc_method_handler(relay_stream)
                upstream_uu = proxy._channel.unary_unary(full)

                def relay(request: bytes, context: Any) -> bytes:
                    proxy._before(full, request, context)
                    try:
                        response: bytes = upstream_uu(request, metadata=metadata(context))
                    except grpc.RpcError as exc:
                        context.abort(exc.code(), exc.details())
                    return response

                return grpc.unary_unary_rpc_method_handler(relay)

        server = grpc.server(ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpc-proxy"))
        server.add_generic_rpc_handlers((Relay(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.host = f"127.0.0.1:{port}"
        return self.host

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(timeout=10)
            self._server = None
        self._channel.close()
