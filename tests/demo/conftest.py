"""Fixtures for the reference application: migrated, seeded databases and running apps.

Migrating and seeding once per session and then copying the database per test (PostgreSQL's
``CREATE DATABASE ... TEMPLATE``, a file copy) keeps each test on fresh data for a fraction
of a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from redline._servers import PostgresServer
from redline.demo import DEMO_PASSWORD, Settings, create_app, seed, upgrade

# Tiny, yet two funds, five users and ten workflows, so filters have something to tell apart.
SCALE = 0.05


@pytest.fixture(scope="session")
def seeded_template(pg_server: PostgresServer) -> str:
    """A database at the newest revision with seed data at ``SCALE``, used as a template."""
    name = f"demo_template_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    upgrade(url)
    seed(url, SCALE)
    return name


@pytest.fixture
def demo_url(pg_server: PostgresServer, seeded_template: str) -> Iterator[str]:
    """A fresh copy of the seeded database for one test."""
    name = f"demo_{uuid.uuid4().hex}"
    yield pg_server.create_database(name, template=seeded_template)
    pg_server.drop_database(name)


# "l1+l2+http" is the full configuration: the data cache plus HTTPCacheMiddleware, whose
# response cache shares it, so every read-after-write test also covers cached responses.
@pytest.fixture(params=["none", "l1", "l1+l2", "l1+l2+http"])
def cache_mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., TestClient]]:
    """Start the app with the given settings (lifespan included); stopped after the test."""
    clients: list[TestClient] = []

    def start(dsn: str, **options: Any) -> TestClient:
        if options.get("cache") == "l1+l2+http":
            options.update(cache="l1+l2", http_cache=True)
        if options.get("cache") == "l1+l2" and "redis_url" not in options:
            options["redis_url"] = request.getfixturevalue("redis_url")
        options.setdefault("secure_cookies", False)
        client = TestClient(create_app(Settings(dsn=dsn, **options)))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def _login(client: TestClient, user_id: int) -> dict[str, str]:
    response = client.post(
        "/auth/login", json={"email": f"user{user_id}@example.com", "password": DEMO_PASSWORD}
    )
    assert response.status_code == 200, response.text
    # Tests choose how each request authenticates; the login cookie must not do it for them.
    client.cookies.clear()
    return {"authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
def login() -> Callable[[TestClient, int], dict[str, str]]:
    """``login(client, user_id)``: log a seed user in; the headers that authenticate as them."""
    return _login
