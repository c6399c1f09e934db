"""What every route needs: the app's engine, cache and settings, sessions, rows, JSON bodies.

``DemoState`` is built by the app's lifespan and reached through the ``State`` dependency.
Routes answer with ``json_body(model)`` bytes, which is also what the cache stores: a cache
hit is sent as it is, without a query, a model or a serializer in between.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Annotated, Any, NamedTuple

import asyncpg
from fastapi import Depends, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from redline.demo._auth import token_hash
from redline.demo._caching import CacheLike
from redline.demo._reads import mark_database_read
from redline.demo._settings import Settings
from redline.http import filling_response_cache

SESSION_COOKIE = "redline_session"


@dataclasses.dataclass
class DemoState:
    """The app's resources, made at startup and closed at shutdown.

    ``engine`` runs the write paths, each in a transaction (``engine.begin()``). ``reader``
    is the same engine and pool in autocommit mode, for the read paths: a read under READ
    COMMITTED sees a snapshot per statement either way, so the ``BEGIN`` and ``ROLLBACK``
    round trips a transaction would add to every cache miss buy nothing.
    """

    settings: Settings
    engine: AsyncEngine
    cache: CacheLike
    revision: str
    db: Any = None  # the engine's EngineMonitor, when metrics are on
    reader: AsyncEngine = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def read(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows of the read ``sql``, on a connection of their own (``read_rows``)."""
        async with self.reader.connect() as connection:
            return await read_rows(connection, sql, params, self.db)

    # A write that is one statement runs the same way: in autocommit it is atomic by itself.
    write = read

    async def cached(
        self, key: str, loader: Callable[[], Awaitable[bytes]], *tags: str, ttl: float | None = None
    ) -> Response:
        """The JSON response cached under ``key`` with ``tags``, loading it on a miss.

        When the response cache is filling with this very body (an anonymous read it missed),
        the body is loaded without a second copy in the data cache: the response cache keeps
        it under the same tags, and the copy would cost a Redis lookup and write per miss.
        """
        if filling_response_cache():
            return json_response(await loader())
        body = await self.cache.get_or_set(
            key, loader, ttl=self.settings.cache_ttl if ttl is None else ttl, tags=tags
        )
        return json_response(body)


async def get_state(request: Request) -> DemoState:
    # async: FastAPI runs a plain-def dependency in a thread pool, on every request.
    return request.app.state.demo


State = Annotated[DemoState, Depends(get_state)]


def json_body(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json")


def problem(status_code: int, error: str, message: str, **extra: Any) -> HTTPException:
    """An error answered as ``{"detail": {"error": ..., "message": ..., ...}}``."""
    return HTTPException(status_code, detail={"error": error, "message": message, **extra})


# Reads go to the driver's own connection: SQLAlchemy's Core layer (statement compilation
# and caching, result processing, the greenlet hop, events) costs the app about as much CPU
# again as the round trip itself, per statement, for text it adds nothing to. The pool, its
# metrics and the transaction rules stay SQLAlchemy's; the statement is timed into the
# engine's metrics by hand (``EngineMonitor.record``) and marks the request as served by the
# database. ``:name`` parameters become asyncpg's ``$n`` by text()'s own rule for a bind.
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
# Driver errors after which the connection cannot be trusted: the pool must drop it.
_BROKEN = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)


@functools.lru_cache(maxsize=1024)
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with its ``:name`` parameters as ``$1``, ``$2``, ..., and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _BIND.sub(number, sql), tuple(names)


async def read_rows(
    connection: AsyncConnection, sql: str, params: Mapping[str, Any], db: Any = None
) -> list[dict[str, Any]]:
    """Every row of the read ``sql`` as a dict, sent on the driver's connection; ``db`` is the
    engine's ``EngineMonitor`` (None when metrics are off)."""
    query, names = positional(sql)
    try:
        args = [params[name] for name in names]
    except KeyError as missing:
        raise ValueError(f"statement parameter {missing} has no value: {sql!r}") from None
    driver = (await connection.get_raw_connection()).driver_connection
    mark_database_read()
    started = perf_counter()
    try:
        records = await driver.fetch(query, *args)
    except BaseException as exc:
        if db is not None:
            db.record(sql, perf_counter() - started, exc)
        if isinstance(exc, _BROKEN):
            await connection.invalidate(exc)
        raise
    if db is not None:
        db.record(sql, perf_counter() - started)
    return [dict(record) for record in records]


# ``text()`` parses its bind parameters with a regular expression; the demo's statements are a
# bounded set (a route's filters combine into at most a few dozen), so each is parsed once.
statement = functools.lru_cache(maxsize=1024)(text)


async def fetch_rows(connection: AsyncConnection, sql: str, params: dict[str, Any]) -> list[Any]:
    """Every row of ``sql`` (with bound ``params``) as a mapping of column name to value."""
    return list((await connection.execute(statement(sql), params)).mappings())


def session_token(request: Request) -> str | None:
    """The session token from ``Authorization: Bearer`` or else the session cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    return request.cookies.get(SESSION_COOKIE) or None


class _UnknownSession(Exception):
    pass


class SessionUser(NamedTuple):
    """Who a valid session belongs to."""

    id: int
    investor_id: int | None


async def current_user(request: Request, state: State) -> SessionUser:
    """The user whose valid session the request carries; 401 otherwise.

    The session is cached under the token's hash and tagged with it, so a logout (which
    invalidates the tag) ends it at once in every process sharing the cache.
    """
    token = session_token(request)
    if token is None:
        raise problem(401, "unauthenticated", "log in first: POST /auth/login")
    digest = token_hash(token).hex()

    async def load() -> list[Any]:
        rows = await state.read(
            "SELECT s.user_id, extract(epoch FROM s.expires_at) AS expires, u.investor_id "
            "FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = :hash",
            {"hash": bytes.fromhex(digest)},
        )
        if not rows:
            # Raised, not returned: unknown tokens must not fill the cache.
            raise _UnknownSession
        row = rows[0]
        return [row["user_id"], float(row["expires"]), row["investor_id"]]

    try:
        session = await state.cache.get_or_set(
            f"session:{digest}", load, ttl=state.settings.cache_ttl, tags=(f"session:{digest}",)
        )
    except _UnknownSession:
        session = None
    if session is None or session[1] <= time.time():
        raise problem(401, "unauthenticated", "the session is unknown or expired; log in again")
    return SessionUser(session[0], session[2])


CurrentUser = Annotated[SessionUser, Depends(current_user)]
