"""What every route needs: the app's engine, cache and settings, sessions, rows, JSON bodies.

``DemoState`` is built by the app's lifespan and reached through the ``State`` dependency.
Routes answer with ``json_body(model)`` bytes, which is also what the cache stores: a cache
hit is sent as it is, without a query, a model or a serializer in between.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from redline.demo._auth import token_hash
from redline.demo._caching import CacheLike
from redline.demo._settings import Settings

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
    reader: AsyncEngine = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def cached(
        self, key: str, loader: Callable[[], Awaitable[bytes]], *tags: str, ttl: float | None = None
    ) -> Response:
        """The JSON response cached under ``key`` with ``tags``, loading it on a miss."""
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
        async with state.reader.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT s.user_id, extract(epoch FROM s.expires_at), u.investor_id "
                        "FROM sessions s JOIN users u ON u.id = s.user_id "
                        "WHERE s.token_hash = :hash"
                    ),
                    {"hash": bytes.fromhex(digest)},
                )
            ).first()
        if row is None:
            # Raised, not returned: unknown tokens must not fill the cache.
            raise _UnknownSession
        return [row[0], float(row[1]), row[2]]

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
