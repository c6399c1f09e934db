"""``create_app(settings)``: the reference application, assembled from the layers chosen.

The app is built in two stages. ``create_app`` makes the FastAPI app, its routes, its
middleware (which Starlette fixes before the first request) and the cache, which the response
cache shares and which connects lazily. The lifespan then opens what needs the event loop:
the SQLAlchemy async engine (asyncpg), the dashboard refresher; it checks that the database
is at a revision the settings can run on, instruments the engine and the cache when
``metrics`` is on, and closes everything at shutdown.

Middleware, outermost first::

    MetricsMiddleware            (metrics=True; excludes /metrics and /_redline; with
                                  metrics_dir, /metrics merges every worker's metrics)
      ReadSources                (metrics=True; GETs served by the database or a cache,
                                  see ``_reads``)
      HTTPCacheMiddleware        (http_cache=True; policies, ETags and 304s, the response
                                  cache: inside the metrics, so that 304s and response-cache
                                  hits are counted and timed; see ``_http``)
        routes: /funds, /capital-calls, /dashboard, /workflows, /retries, /auth, /me, /health

Failures of a dependency degrade, they do not crash: Redis trouble is absorbed by the cache
(its breaker falls back to L1 and the database), and a database that is down, saturated or too
slow answers 503 with ``Retry-After`` instead of a stack trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from redline import monitor
from redline.demo import _calls, _dashboard, _users, _workflows
from redline.demo._caching import NoCache, build_cache, invalidate_dashboard
from redline.demo._dsn import asyncpg_url, redact
from redline.demo._errors import DemoError, SchemaError
from redline.demo._http import add_http_cache
from redline.demo._migrate import DASHBOARD_VIEW, REVISIONS, VERSION_TABLE, revision_at_least
from redline.demo._reads import EngineWatch, ReadSources
from redline.demo._refresher import DashboardRefresher
from redline.demo._settings import Settings
from redline.demo._state import SESSION_COOKIE, DemoState, State

_log = logging.getLogger("redline.demo")

METRICS_PATH = "/metrics"
SNAPSHOT_INTERVAL_S = 1.0  # how often each worker writes its metrics for the others
DASHBOARD_PATH = "/_redline"


async def _revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        exists = await connection.scalar(
            text("SELECT to_regclass(:table) IS NOT NULL"), {"table": f"public.{VERSION_TABLE}"}
        )
        if not exists:
            return None
        return await connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}"))


def _check_revision(settings: Settings, revision: str | None) -> str:
    where = redact(settings.dsn)
    if revision is None or revision not in REVISIONS:
        raise SchemaError(
            f"{where} is not migrated (revision {revision!r}); run redline.demo.upgrade(dsn)"
        )
    if settings.dashboard_source == "matview" and not revision_at_least(revision, DASHBOARD_VIEW):
        raise SchemaError(
            f"Settings.dashboard_source='matview' needs revision {DASHBOARD_VIEW!r}, but "
            f"{where} is at {revision!r}; run redline.demo.upgrade(dsn, {DASHBOARD_VIEW!r})"
        )
    return revision


def create_app(settings: Settings) -> FastAPI:
    """The demo API configured by ``settings``; see ``Settings`` for the layers it switches."""
    if not isinstance(settings, Settings):
        raise TypeError(f"create_app(settings): give a redline.demo.Settings, not {settings!r}")
    registry = settings.registry if settings.registry is not None else monitor.Registry()
    dashboard_app = monitor.DashboardApp(registry) if settings.metrics else None
    # Several workers: each writes its metrics to the shared directory, /metrics merges them.
    shared = (
        monitor.SnapshotDirectory(
            settings.metrics_dir, registry=registry, interval=SNAPSHOT_INTERVAL_S
        )
        if settings.metrics and settings.metrics_dir
        else None
    )
    cache = build_cache(
        settings.cache, redis_url=settings.redis_url, namespace=settings.cache_namespace
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        statement_ms = str(int(settings.statement_timeout * 1000))
        engine = create_async_engine(
            asyncpg_url(settings.dsn),
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            connect_args={
                "server_settings": {
                    "application_name": "redline-demo",
                    "statement_timeout": statement_ms,
                }
            },
        )
        refresher = None
        instruments = []
        try:
            try:
                found = await _revision(engine)
            except (OSError, sa_exc.SQLAlchemyError) as exc:
                raise DemoError(
                    f"Cannot reach the database at {redact(settings.dsn)}: {exc}"
                ) from exc
            revision = _check_revision(settings, found)
            db = None
            if settings.metrics:
                db = monitor.instrument_engine(engine, name="demo", registry=registry)
                instruments.append(db)
                instruments.append(EngineWatch(engine))
                if settings.cache != "none":
                    metrics = monitor.instrument_cache(cache, name="demo", registry=registry)
                    instruments.append(_Removal(metrics, "demo"))
            app.state.demo = DemoState(settings, engine, cache, revision, db=db)
            if shared is not None:
                shared.start()
                instruments.append(shared)
            if settings.dashboard_source == "matview" and settings.refresh_interval > 0:
                refresher = DashboardRefresher(
                    engine,
                    settings.refresh_interval,
                    on_refresh=lambda: invalidate_dashboard(cache),
                ).start()
            app.state.refresher = refresher
            yield
        finally:
            if refresher is not None:
                await refresher.stop()
            if dashboard_app is not None:
                dashboard_app.close()
            for instrument in reversed(instruments):
                instrument.close()
            await cache.aclose()
            await engine.dispose()

    app = FastAPI(
        title="redline demo",
        summary="Capital calls and workflow automation on FastAPI, PostgreSQL and Redis.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    # A server should call app.state.dashboard.close() when it begins to shut down, so open
    # dashboard streams do not hold the shutdown up (see DashboardApp in docs/monitoring.md).
    app.state.dashboard = dashboard_app
    app.include_router(_calls.router)
    app.include_router(_dashboard.router)
    app.include_router(_workflows.router)
    app.include_router(_users.router)
    app.add_api_route("/health", health, methods=["GET"], tags=["operations"])
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
    # Reads run on the driver's connection (``read_rows``): its errors are asyncpg's own.
    app.add_exception_handler(asyncpg.PostgresError, _database_error)
    for error in (sa_exc.TimeoutError, OSError, asyncpg.InterfaceError):
        app.add_exception_handler(error, _unavailable)
    if settings.http_cache:
        # Added before the metrics middleware, so it runs inside it.
        add_http_cache(
            app,
            None if isinstance(cache, NoCache) else cache,
            SESSION_COOKIE,
            settings.dashboard_source,
            settings.search_lag,
        )
    if settings.metrics:
        # Inside the metrics middleware, around the HTTP cache: its hits count as cache reads.
        app.add_middleware(
            ReadSources, registry=registry, exclude=(METRICS_PATH, DASHBOARD_PATH, "/health")
        )
        app.add_route(METRICS_PATH, monitor.MetricsApp(registry if shared is None else shared))
        app.mount(DASHBOARD_PATH, dashboard_app)
        app.add_middleware(
            monitor.MetricsMiddleware, registry=registry, exclude=(METRICS_PATH, DASHBOARD_PATH)
        )
    return app


class _Removal:
    """Stops exporting one cache's metrics at shutdown."""

    def __init__(self, metrics: monitor.CacheMetrics, name: str) -> None:
        self.metrics = metrics
        self.name = name

    def close(self) -> None:
        self.metrics.remove(self.name)


async def health(state: State) -> JSONResponse:
    """200 when the database answers; 503 (with what failed) when it does not."""
    body = {
        "status": "ok",
        "pid": os.getpid(),
        "revision": state.revision,
        "cache": state.settings.cache,
        "dashboard_source": state.settings.dashboard_source,
    }
    try:
        async with state.reader.connect() as connection:
            await connection.scalar(text("SELECT 1"))
    except (sa_exc.SQLAlchemyError, OSError) as exc:
        _log.warning("Health check: the database does not answer: %s", exc)
        return JSONResponse({**body, "status": "unavailable", "database": "down"}, 503)
    return JSONResponse({**body, "database": "ok"})


# SQLSTATE classes a client should retry: connection trouble (08), insufficient resources
# (53), an operator or a timeout cancelling the statement (57), and serialization failures
# and deadlocks (40001, 40P01).
_TRANSIENT_CLASSES = ("08", "53", "57")
_TRANSIENT_STATES = ("40001", "40P01")


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, sa_exc.DBAPIError):
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        if exc.connection_invalidated:
            return True
        exc = exc.orig  # type: ignore[assignment]
    state = getattr(exc, "sqlstate", None) or ""
    return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if _is_transient(exc):
        return await _unavailable(request, exc)
    _log.error("%s %s: database error", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": {"error": "internal", "message": "the request failed; it was logged"}},
        status_code=500,
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    reason = (str(exc).splitlines() or [""])[0]
    _log.warning("%s %s: database unavailable: %s", request.method, request.url.path, reason)
    return JSONResponse(
        {
            "detail": {
                "error": "database_unavailable",
                "message": "the database did not answer in time; retry shortly",
            }
        },
        status_code=503,
        headers={"retry-after": "1"},
    )
