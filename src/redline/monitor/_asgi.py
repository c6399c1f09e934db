"""``MetricsApp``: the ASGI app that serves ``/metrics``, and ``metrics_route`` to put it in a
Starlette or FastAPI app.

It answers GET and HEAD on whatever path reaches it, so it can be served alone
(``uvicorn redline.monitor:metrics_app``) or routed to. In Starlette and FastAPI, add it with
``app.routes.append(metrics_route())``, which answers ``/metrics`` and ``/metrics/`` alike.
``app.mount("/metrics", metrics_app)`` cannot: a ``Mount`` matches only paths below its
prefix, so the router answers a bare ``/metrics``, the path Prometheus scrapes by default,
with a 307 redirect to ``/metrics/`` (some scrapers do not follow it), and the mounted app
never sees the request. A plain ``Route`` would redirect ``/metrics/`` the other way.

Collecting reads and merges snapshot files in multi-process
mode and flushes every histogram, tens of milliseconds with many series, so it runs in a
worker thread (``asyncio.to_thread``) rather than stalling the event loop's requests. The
body is gzipped when the scraper accepts it, as Prometheus does.
"""

from __future__ import annotations

import asyncio
import gzip
import re
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
        if _accepts_gzip(accept):
            body = gzip.compress(body, compresslevel=6)
            headers.append((b"content-encoding", b"gzip"))
        await _respond(send, 200, b"" if method == "HEAD" else body, headers, len(body))


def _accepts_gzip(accept: bytes) -> bool:
    """Whether an Accept-Encoding value admits gzip: named or ``*``, and not at ``q=0``."""
    for part in accept.lower().split(b","):
        coding, _, params = part.partition(b";")
        if coding.strip() not in (b"gzip", b"*"):
            continue
        quality = params.strip()
        if not quality.startswith(b"q="):
            return True
        try:
            return float(quality[2:]) > 0
        except ValueError:
            return False
    return False


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


def metrics_route(
    path: str = "/metrics", source: Collector | MetricsApp | None = None, *, name: str = "metrics"
) -> Any:
    """A Starlette route serving ``MetricsApp(source)`` (``source`` may also be a
    ``MetricsApp``) at ``path`` and ``path + "/"``, without redirects:
    ``app.routes.append(monitor.metrics_route())``. It is left out of FastAPI's OpenAPI
    schema; ``app.url_path_for("metrics")`` gives ``path``."""
    from starlette.routing import Route

    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise ValueError(f"metrics_route: path must start with '/' and name a path, not {path!r}")
    path = path.rstrip("/")
    app = source if isinstance(source, MetricsApp) else MetricsApp(source)
    route = Route(path, app, name=name, include_in_schema=False)
    # One pattern for both spellings: the router then never redirects between them.
    route.path_regex = re.compile("^" + re.escape(path) + "/?$")
    return route


metrics_app = MetricsApp()
