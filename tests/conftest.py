import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redline._servers import (
    PostgresServer,
    RedisServer,
    VarnishServer,
    VarnishServerError,
    find_varnishd,
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real Redis for the whole session; fails loudly if no redis-server can be found."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied before the test so tests cannot see each other's keys."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private Redis for tests that pause, kill or restart it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session, started by the first test that asks for it."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh database on the shared server for each test, dropped after it."""
    name = f"test_{uuid.uuid4().hex}"
    yield pg_server.create_database(name)
    pg_server.drop_database(name)


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A private PostgreSQL for tests that pause, kill or restart it."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def varnishd() -> str:
    """The varnishd path; skipped without one, unless REDLINE_REQUIRE_VARNISH is set, as in CI."""
    try:
        return find_varnishd()
    except VarnishServerError as exc:
        if os.environ.get("REDLINE_REQUIRE_VARNISH"):
            raise
        pytest.skip(str(exc))


@pytest.fixture
def varnish(varnishd: str) -> Iterator[Callable[..., VarnishServer]]:
    """Start a Varnish in front of a HOST:PORT backend, with any other options; stopped after."""
    servers: list[VarnishServer] = []

    def start(backend: str, **kwargs: Any) -> VarnishServer:
        server = VarnishServer(backend, binary=varnishd, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
