"""Which read requests the database answered, and which a cache did: the demo's hit rate.

With two cache layers a lookup ratio counts some requests twice: a request the response
cache misses looks the data up in the data cache too, so one request makes two lookups, and
a hit in the data cache still leaves a miss in the response cache. What the layers are for is
taking reads off the database, so the demo also counts *requests*: every ``GET`` the app
answers is counted under ``served_by="database"`` if it ran at least one SQL statement, and
``served_by="cache"`` if it ran none (answered by the response cache, a 304 from a cached
validator, or a handler whose data was cached).

``ReadSources`` is the ASGI middleware that counts; ``watch_engine`` marks the request whose
task runs a statement, through a context variable that SQLAlchemy carries into the greenlet
that runs its events (``before_cursor_execute``). A request coalesced onto another's miss
(the caches' stampede protection) ran no statement of its own and counts as served by the
cache, as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from redline import monitor

_CURRENT: ContextVar[list[bool] | None] = ContextVar("redline_demo_read", default=None)
METRIC = "demo_read_requests_total"


def mark_database_read(*args: Any) -> None:
    """The current request ran a statement (also called for statements sent on the driver's
    own connection, which fire no SQLAlchemy event)."""
    flag = _CURRENT.get()
    if flag is not None:
        flag[0] = True


class EngineWatch:
    """Marks the current read as served by the database whenever ``engine`` runs a statement;
    ``close()`` stops."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        event.listen(self.engine, "before_cursor_execute", mark_database_read)

    def close(self) -> None:
        if event.contains(self.engine, "before_cursor_execute", mark_database_read):
            event.remove(self.engine, "before_cursor_execute", mark_database_read)


class ReadSources:
    """ASGI middleware counting ``GET`` requests by ``served_by``: ``database`` or ``cache``.

    ``exclude`` are path prefixes not counted (``/metrics``, the dashboard, ``/health``).
    """

    def __init__(
        self, app: Any, *, registry: monitor.Registry, exclude: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.exclude = tuple(exclude)
        counter = monitor.Counter(
            METRIC,
            "GET requests answered, by whether a SQL statement ran for them (database) or "
            "none did (cache).",
            ("served_by",),
            registry=registry,
        )
        self._database = counter.labels("database")
        self._cache = counter.labels("cache")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["path"].startswith(self.exclude)
        ):
            await self.app(scope, receive, send)
            return
        flag = [False]
        token = _CURRENT.set(flag)
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(token)
            (self._database if flag[0] else self._cache).inc()
