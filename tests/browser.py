"""Headless Chromium for tests that need a real browser: find it, load a page, read its DOM.

Tests import it as ``from browser import dump_dom`` (``tests/`` is on ``sys.path`` through
its ``conftest.py``). Without a Chromium the test is skipped, unless ``REDLINE_REQUIRE_BROWSER=1``
(set it in CI), which turns the skip into a failure. ``CHROMIUM=/path/to/chromium`` picks one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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
_OFFLINE_FLAGS = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")


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
