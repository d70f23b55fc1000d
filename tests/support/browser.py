"""A real headless Chromium, driven over the Chrome DevTools Protocol, for page tests.

Only what the gallery tests need: load a page, wait until it, its script's work (no element
left `aria-busy="true"`) and its images are loaded, read the images' state and the page
text, save a full-page screenshot; and, for tests that use a page as a person would
(`open_page`), evaluate script in it and wait for a condition to hold.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")
_START_DEADLINE_S = 30.0
_LOAD_DEADLINE_S = 60.0
_POLL_S = 0.1
# Chromium refuses to paint a single surface much taller than this.
_MAX_SCREENSHOT_HEIGHT = 16_000

_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    # Without these, Chromium phones home at start and this closed network refuses it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
)

# [key, rendered, settled, the src attribute it ended with]. A broken image whose onerror
# handler is still set has not run it yet (the gallery's handler clears itself as it swaps
# in the full image), so it is not settled: waiting on that, not on time, makes the result
# of a fallback deterministic.
_IMAGES_JS = (
    "Array.from(document.querySelectorAll('img[data-key]'))"
    ".map(i => [i.dataset.key, i.complete && i.naturalWidth > 0,"
    " i.complete && (i.naturalWidth > 0 || i.onerror === null), i.getAttribute('src')])"
)
# Lazy images below the fold never load in a viewport nobody scrolls; the test wants them all.
_EAGER_JS = (
    "document.querySelectorAll('img[loading=\"lazy\"]').forEach(i => { i.loading = 'eager'; });"
    "[document.readyState, location.href, document.querySelector('[aria-busy=\"true\"]') === null]"
)
# Settled: loaded, and no element says its content is still being built.
_SETTLED_JS = (
    "document.readyState === 'complete' && document.querySelector('[aria-busy=\"true\"]') === null"
)


class BrowserMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class PageReport:
    images: dict[str, bool]  # data-key -> rendered (complete with a natural width)
    sources: dict[str, str]  # data-key -> the src it rendered (or failed) from
    text: str  # document.body.innerText
    screenshot: Path


def find_chromium() -> str:
    for candidate in _CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise BrowserMissing(
        "headless Chromium not found (looked for "
        + ", ".join(_CANDIDATES)
        + "); run `make test`, which installs Debian's `chromium` package when missing, "
        "or `apt-get install -y chromium`"
    )


def assert_gallery_renders(index_html: Path, expected_keys: set[str], screenshot: Path) -> None:
    """Load a gallery page and fail unless every expected thumbnail rendered.

    `expected_keys` are the keys of the items that have images (SUCCEEDED and CACHED).
    """
    assert_rendered(inspect_page(index_html, screenshot), expected_keys)


def assert_rendered(report: PageReport, expected_keys: set[str]) -> None:
    found = set(report.images)
    assert found == expected_keys, (
        f"thumbnails on the page differ from the expected keys: "
        f"missing {sorted(expected_keys - found)}, unexpected {sorted(found - expected_keys)}"
    )
    broken = sorted(key for key, rendered in report.images.items() if not rendered)
    assert not broken, f"thumbnails that did not render: {broken}"
    assert report.screenshot.stat().st_size > 0, f"empty screenshot at {report.screenshot}"


def inspect_page(page: Path, screenshot: Path) -> PageReport:
    """Open `page` from disk, wait for it and its `img[data-key]` images, screenshot it."""
    return inspect_url(page.resolve().as_uri(), screenshot)


def inspect_url(url: str, screenshot: Path) -> PageReport:
    """inspect_page for a page at `url` (a server's, such as `local serve`'s gallery)."""
    with _chromium() as websocket_url:
        # A private loop, never installed as the thread's current one: asyncio.run would leave
        # the thread without a loop, and Pulumi's mocks (tests/infra) bind to that loop.
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(_inspect(websocket_url, url, screenshot))
        finally:
            loop.close()


@contextmanager
def _chromium() -> Iterator[str]:
    """Start Chromium; yield the websocket URL of its first page target."""
    binary = find_chromium()
    profile = Path(tempfile.mkdtemp(prefix="bb-chromium-"))
    log_path = profile.parent / f"{profile.name}.log"
    try:
        with log_path.open("wb") as log:
            # Its own process group: Chromium's helpers (zygote, renderers, crash handler)
            # must end with it, or they keep writing into the profile being deleted.
            process = subprocess.Popen(
                [binary, *_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                yield _page_target(process, profile, log_path)
            finally:
                _stop(process)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
        log_path.unlink(missing_ok=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    group = process.pid  # start_new_session made it the group leader
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    # Helpers that ignored SIGTERM, by the same group id only; then give them a moment to go
    # (an unreaped zombie still answers, hence a deadline rather than a wait).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + 5
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(group, 0)
            time.sleep(_POLL_S)


def _page_target(process: subprocess.Popen[bytes], profile: Path, log_path: Path) -> str:
    active_port = profile / "DevToolsActivePort"
    # The loopback endpoint must not go through any proxy configured in the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + _START_DEADLINE_S
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Chromium exited with {process.returncode} before it was ready:\n"
                + log_path.read_text(errors="replace")[-4000:]
            )
        try:
            port = int(active_port.read_text().splitlines()[0])
            with opener.open(f"http://127.0.0.1:{port}/json", timeout=5) as response:
                targets = json.loads(response.read())
            for target in targets:
                if target.get("type") == "page" and target.get("webSocketDebuggerUrl"):
                    return str(target["webSocketDebuggerUrl"])
            last_error = f"no page target yet in {targets!r}"
        except (OSError, ValueError, IndexError) as exc:
            last_error = repr(exc)
        time.sleep(_POLL_S)
    raise RuntimeError(
        f"Chromium's DevTools endpoint did not come up within {_START_DEADLINE_S:.0f}s "
        f"({last_error}):\n" + log_path.read_text(errors="replace")[-4000:]
    )


class BrowserPage:
    """One Chromium tab, used synchronously: go to a page, run script, wait for conditions.

    Waits are on conditions the page reaches (with a generous deadline that only turns a
    hang into a failure), never on time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cdp: _Cdp) -> None:
        self._loop = loop
        self._cdp = cdp

    def goto(self, page: Path | str) -> None:
        """Open a file (or URL) afresh and wait until it has loaded and its script settled.
        (Through about:blank: from the same page with another #fragment, a navigation
        would only move within the page, not load it.)"""
        url = page.resolve().as_uri() if isinstance(page, Path) else page
        self._run(self._cdp.call("Page.navigate", url="about:blank"))
        self.wait_for("location.href === 'about:blank'", "about:blank")
        self._cdp.events.clear()
        navigation = self._run(self._cdp.call("Page.navigate", url=url))
        if navigation.get("errorText"):
            raise RuntimeError(f"could not open {url}: {navigation['errorText']}")
        self.wait_for(f"location.href === {json.dumps(url)} && ({_SETTLED_JS})", f"{url} loaded")

    def evaluate(self, expression: str) -> Any:
        return self._run(self._cdp.evaluate(expression))

    def wait_for(self, expression: str, what: str) -> Any:
        """The first truthy value of `expression`, polled until the deadline."""
        deadline = time.monotonic() + _LOAD_DEADLINE_S
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {_LOAD_DEADLINE_S:.0f}s: {what}")
            time.sleep(_POLL_S)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type `text` as a keyboard would (input events and all),
        replacing what it held."""
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.focus(); e.select(); return true; })()"
        )
        if not found:
            raise AssertionError(f"no element matches {selector!r}")
        if text:
            self._run(self._cdp.call("Input.insertText", text=text))
        else:  # what selecting all and pressing Delete does
            self.evaluate(
                f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                " e.value = ''; e.dispatchEvent(new Event('input', {bubbles: true})); })()"
            )

    def requests(self) -> list[str]:
        """The URLs the page requested since the last goto (file:// ones too, which the
        page's own Resource Timing leaves out), in order."""
        self.evaluate("0")  # read the events that arrived since the last call
        return [
            str(event["params"]["request"]["url"])
            for event in self._cdp.events
            if event["method"] == "Network.requestWillBeSent"
        ]

    def settle(self) -> None:
        """Wait until the page's script has finished what it started (no aria-busy)."""
        self.wait_for(_SETTLED_JS, "the page settled")

    def screenshot(self, path: Path) -> None:
        self._run(_screenshot(self._cdp, path))

    def _run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(awaitable)


@contextmanager
def open_page() -> Iterator[BrowserPage]:
    """A fresh Chromium with one tab, closed on exit."""
    with _chromium() as websocket_url:
        loop = asyncio.new_event_loop()
        try:
            socket = loop.run_until_complete(
                connect(websocket_url, max_size=None, proxy=None, open_timeout=20)
            )
            try:
                cdp = _Cdp(socket)
                loop.run_until_complete(cdp.call("Page.enable"))
                loop.run_until_complete(cdp.call("Network.enable"))
                yield BrowserPage(loop, cdp)
            finally:
                loop.run_until_complete(socket.close())
        finally:
            loop.close()


class _Cdp:
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        # Events read while waiting for replies, for BrowserPage.requests.
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self._socket.recv())
            if reply.get("id") != call_id:
                if "method" in reply:
                    self.events.append(reply)
                continue  # an event or a stale reply
            if "error" in reply:
                raise RuntimeError(f"CDP {method} failed: {reply['error']}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


async def _inspect(websocket_url: str, url: str, screenshot: Path) -> PageReport:
    async with connect(websocket_url, max_size=None, proxy=None, open_timeout=20) as socket:
        cdp = _Cdp(socket)
        await cdp.call("Page.enable")
        navigation = await cdp.call("Page.navigate", url=url)
        if navigation.get("errorText"):
            raise RuntimeError(f"could not open {url}: {navigation['errorText']}")

        deadline = time.monotonic() + _LOAD_DEADLINE_S
        images: list[list[Any]] = []
        while True:
            # Until the navigation commits, the old about:blank answers, already complete.
            state, href, idle = await cdp.evaluate(_EAGER_JS)
            images = await cdp.evaluate(_IMAGES_JS)
            loaded = href == url and state == "complete" and idle
            if loaded and all(done for _key, _ok, done, _src in images):
                break
            if time.monotonic() > deadline:
                pending = [key for key, _ok, done, _src in images if not done]
                raise AssertionError(
                    f"{url} not loaded within {_LOAD_DEADLINE_S:.0f}s: at {href}, "
                    f"readyState={state}, images still loading: {pending[:20]}"
                )
            await asyncio.sleep(_POLL_S)

        text = await cdp.evaluate("document.body ? document.body.innerText : ''")
        await _screenshot(cdp, screenshot)
    return PageReport(
        images={str(key): bool(ok) for key, ok, _done, _src in images},
        sources={str(key): str(src) for key, _ok, _done, src in images},
        text=str(text),
        screenshot=screenshot,
    )


async def _screenshot(cdp: _Cdp, path: Path) -> None:
    metrics = await cdp.call("Page.getLayoutMetrics")
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {
        "x": 0,
        "y": 0,
        "width": max(1, round(size["width"])),
        "height": max(1, min(round(size["height"]), _MAX_SCREENSHOT_HEIGHT)),
        "scale": 1,
    }
    shot = await cdp.call(
        "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
