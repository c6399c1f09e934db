"""Headless Chromium for tests that need a real browser: find it, load a page, read its DOM,
or drive it over the DevTools protocol (navigate, click, evaluate).

Tests import it as ``from browser import dump_dom`` (``tests/`` is on ``sys.path`` through
its ``conftest.py``). Without a Chromium the test is skipped, unless ``REDLINE_REQUIRE_BROWSER=1``
(set it in CI), which turns the skip into a failure. ``CHROMIUM=/path/to/chromium`` picks one.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "REDLINE_REQUIRE_BROWSER"
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# Any host name fails to resolve, and anything else goes to a proxy on a closed port:
# a page that fetches from the network gets nothing. Loopback still works.
_OFFLINE_FLAGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
)


@dataclass(frozen=True)
class Rendered:
    """What Chromium made of a page: the DOM after scripts ran, and how long it took."""

    dom: str
    seconds: float


def chromium() -> str:
    """The Chromium to use; skips the test when there is none (fails if one is required)."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        if not shutil.which(explicit):
            pytest.fail(f"CHROMIUM={explicit} is not an executable; fix or unset it")
        return explicit
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    reason = (
        f"no Chromium found (looked for {', '.join(_NAMES)} on PATH); "
        "install one (apt-get install chromium) or set CHROMIUM=/path/to/chromium"
    )
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires a browser")
    pytest.skip(reason)


def dump_dom(
    page: Path | str, *, offline: bool = True, budget_ms: int = 5000, timeout: float = 120.0
) -> Rendered:
    """Load ``page`` (a file or a URL) in headless Chromium and return the DOM it ends with.

    ``budget_ms`` of virtual time lets scripts and timers run (virtual time skips idle
    waits, so it is usually much faster in real time); ``offline`` cuts the network off.
    """
    url = page.resolve().as_uri() if isinstance(page, Path) else page
    with tempfile.TemporaryDirectory(prefix="redline-chromium-") as profile:
        command = [
            chromium(),
            *_FLAGS,
            *(_OFFLINE_FLAGS if offline else ()),
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - started
    if done.returncode != 0 or not done.stdout.strip():
        raise AssertionError(
            f"chromium exited with {done.returncode} on {url} and printed no DOM; "
            f"its stderr ends with:\n{done.stderr[-3000:]}"
        )
    return Rendered(done.stdout, seconds)


class DevTools:
    """A minimal Chrome DevTools protocol client attached to one page (see ``devtools()``).

    ``send`` waits for a command's result; the events that arrive meanwhile are kept for
    ``wait_for``. Only what the tests need: no sessions, no concurrency.
    """

    def __init__(self, websocket: Any, timeout: float) -> None:
        self._ws = websocket
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        self.timeout = timeout

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run a protocol command (``Page.navigate``, ...) and return its result."""
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline, method)
            if message.get("id") != ident:
                self._events.append(message)
            elif "error" in message:
                raise AssertionError(f"DevTools {method}({params}) failed: {message['error']}")
            else:
                return message.get("result", {})

    def wait_for(self, event: str) -> dict[str, Any]:
        """The parameters of the first ``event`` (``Page.loadEventFired``) not yet consumed,
        waiting for it if need be; events before it are dropped."""
        deadline = time.monotonic() + self.timeout
        while True:
            while self._events:
                message = self._events.pop(0)
                if message.get("method") == event:
                    return message.get("params", {})
            self._events.append(self._receive(deadline, event))

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event (the previous page is hidden on the way)."""
        self.send("Page.enable")
        self._events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise AssertionError(f"Chromium could not load {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A real (trusted) left click at viewport coordinates, as input events see it."""
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        try:
            return json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0)))
        except TimeoutError:
            raise AssertionError(
                f"DevTools: no answer to {waiting_for} in {self.timeout} s"
            ) from None


@contextmanager
def devtools(*, offline: bool = True, timeout: float = 30.0) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile and a 1280x800 window, driven over the DevTools
    protocol through the page it opens on (``about:blank``); closed on exit. ``offline`` as
    in ``dump_dom``."""
    from websockets.sync.client import connect

    # Chromium's helper processes may still be writing to the profile as it is removed.
    with (
        tempfile.TemporaryDirectory(
            prefix="redline-chromium-", ignore_cleanup_errors=True
        ) as profile,
        tempfile.TemporaryFile("w+") as stderr,
    ):
        command = [
            chromium(),
            *_FLAGS,
            *(_OFFLINE_FLAGS if offline else ()),
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1280,800",
            "about:blank",
        ]
        # stderr goes to a file: a pipe nobody reads would stall a chatty Chromium.
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            port = _devtools_port(Path(profile), process, stderr, timeout)
            # Loopback, so around any proxy the environment names.
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            listing = f"http://127.0.0.1:{port}/json/list"
            with direct.open(listing, timeout=timeout) as response:
                targets = json.load(response)
            page = next(t for t in targets if t["type"] == "page")
            url = page["webSocketDebuggerUrl"]
            with connect(url, max_size=None, proxy=None, open_timeout=timeout) as websocket:
                yield DevTools(websocket, timeout)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _devtools_port(profile: Path, process: subprocess.Popen, stderr: Any, timeout: float) -> int:
    """The port Chromium chose, from the ``DevToolsActivePort`` file it writes when ready
    (the port, then the browser's WebSocket path)."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr.seek(0)
            raise AssertionError(
                f"chromium exited with {process.returncode} before DevTools was up; its "
                f"stderr ends with:\n{stderr.read()[-3000:]}"
            )
        lines = marker.read_text().split() if marker.exists() else []
        if len(lines) >= 2:
            return int(lines[0])
        time.sleep(0.05)
    raise AssertionError(f"chromium wrote no {marker} in {timeout} s")
