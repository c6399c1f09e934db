"""A real uvicorn for tests: an ASGI app served in a thread on a free loopback port.

Tests import it as ``from asgi_server import serve_url, serve`` (``tests/`` is on ``sys.path``
through its ``conftest.py``). The socket is bound before the server starts, so the port is
known and cannot be taken by another test in between.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn


@contextlib.contextmanager
def serve_url(app: Any, *, lifespan: str = "off", **config: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread; yields its base URL and stops it afterwards.

    ``config`` goes to ``uvicorn.Config`` (e.g. ``ws="websockets-sansio"``).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan=lifespan, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def serve(app: Any, *, lifespan: str = "off", **config: Any) -> Iterator[httpx.Client]:
    """``app`` under uvicorn in a thread; yields an httpx client for it."""
    with serve_url(app, lifespan=lifespan, **config) as url, httpx.Client(base_url=url) as client:
        yield client
