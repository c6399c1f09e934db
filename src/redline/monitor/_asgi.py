"""``MetricsApp``: the ASGI app that serves ``/metrics``.

Mount it where Prometheus scrapes (``app.mount("/metrics", metrics_app)`` in Starlette or
FastAPI) or serve it alone (``uvicorn redline.monitor:metrics_app``); it answers GET and HEAD
on whatever path reaches it. Collecting reads and merges snapshot files in multi-process
mode and flushes every histogram, tens of milliseconds with many series, so it runs in a
worker thread (``asyncio.to_thread``) rather than stalling the event loop's requests. The
body is gzipped when the scraper accepts it, as Prometheus does.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from redline.monitor._exposition import CONTENT_TYPE_LATEST, generate_latest
from redline.monitor._registry import REGISTRY, Collector

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class MetricsApp:
    """Serves the exposition of ``source``: a ``Registry`` (default ``REGISTRY``) or a
    ``SnapshotDirectory`` for the merged view of all workers."""

    def __init__(self, source: Collector | None = None) -> None:
        self.source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"MetricsApp serves HTTP, not {scope['type']!r}")
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        source = REGISTRY if self.source is None else self.source
        body = await asyncio.to_thread(generate_latest, source)
        headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        accept = b",".join(
            v for k, v in scope.get("headers", ()) if k.lower() == b"accept-encoding"
        )
        if b"gzip" in accept.lower():
            body = gzip.compress(body, compresslevel=6)
            headers.append((b"content-encoding", b"gzip"))
        await _respond(send, 200, b"" if method == "HEAD" else body, headers, len(body))


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    length: int | None = None,
) -> None:
    size = len(body) if length is None else length
    headers = [*headers, (b"content-length", str(size).encode())]
    if status != 200:
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


metrics_app = MetricsApp()
