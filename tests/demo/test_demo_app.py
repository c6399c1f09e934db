"""The app's assembly: settings, startup checks, metrics and dashboard, degraded service."""

from __future__ import annotations

import os

import psycopg
import pytest
from fastapi.testclient import TestClient

from redline import monitor
from redline._servers import PostgresServer
from redline.demo import (
    BASELINE,
    INDEXES,
    DemoConfigError,
    DemoError,
    SchemaError,
    Settings,
    create_app,
    seed,
    upgrade,
)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"dsn": "mysql://h/db"}, "mysql"),
        ({"dsn": "postgresql://h:5432"}, "names no database"),
        ({"cache": "redis"}, "Settings.cache"),
        ({"cache": "l1+l2"}, "Settings.redis_url"),
        ({"dashboard_source": "cube"}, "Settings.dashboard_source"),
        ({"pool_size": 0}, "Settings.pool_size"),
        ({"statement_timeout": 0}, "Settings.statement_timeout"),
        ({"refresh_interval": -1}, "Settings.refresh_interval"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(options, field):
    with pytest.raises(DemoConfigError, match=field):
        Settings(**{"dsn": "postgresql://127.0.0.1/app", **options})


def test_settings_from_the_environment():
    env = {
        "DATABASE_URL": "postgres://u@h/db",
        "REDIS_URL": "redis://h:6379/0",
        "REDLINE_DEMO_CACHE": "l1+l2",
        "REDLINE_DEMO_DASHBOARD": "matview",
        "REDLINE_DEMO_METRICS": "1",
        "REDLINE_DEMO_POOL_SIZE": "20",
    }
    settings = Settings.from_env(env, pool_size=4)
    assert (settings.dsn, settings.redis_url, settings.cache) == (
        "postgres://u@h/db",
        "redis://h:6379/0",
        "l1+l2",
    )
    assert (settings.dashboard_source, settings.metrics, settings.pool_size) == ("matview", True, 4)
    with pytest.raises(DemoConfigError, match="DATABASE_URL"):
        Settings.from_env({})
    with pytest.raises(DemoConfigError, match="REDLINE_DEMO_POOL_SIZE"):
        Settings.from_env({"DATABASE_URL": "postgresql://h/db", "REDLINE_DEMO_POOL_SIZE": "x"})


def test_an_unmigrated_database_stops_the_startup_with_what_to_do(pg_url):
    app = create_app(Settings(dsn=pg_url))
    with pytest.raises(SchemaError, match=r"not migrated.*upgrade\(dsn\)"), TestClient(app):
        pass


def test_the_matview_source_needs_the_view_revision(pg_url):
    upgrade(pg_url, INDEXES)
    app = create_app(Settings(dsn=pg_url, dashboard_source="matview"))
    with pytest.raises(SchemaError, match="dashboard_view"), TestClient(app):
        pass
    # The live source runs on any revision, the baseline included.
    with TestClient(create_app(Settings(dsn=pg_url))) as client:
        assert client.get("/health").json()["revision"] == INDEXES


def test_health_reports_the_layers(demo_url, make_client):
    body = make_client(demo_url, cache="l1").get("/health").json()
    assert body == {
        "pid": os.getpid(),  # the worker that answered (TestClient: this process)
        "status": "ok",
        "database": "ok",
        "revision": "dashboard_view",
        "cache": "l1",
        "dashboard_source": "live",
    }


def test_metrics_cover_requests_queries_and_the_cache(demo_url, make_client, cache_mode):
    registry = monitor.Registry()
    client = make_client(demo_url, cache=cache_mode, metrics=True, registry=registry)
    for _ in range(3):
        assert client.get("/funds/1").status_code == 200
    text = client.get("/metrics").text
    assert 'http_requests_total{route="/funds/{fund_id}",method="GET",status="200"} 3.0' in text
    assert 'db_queries_total{engine="demo",operation="SELECT"}' in text
    if cache_mode == "none":
        assert "redline_cache_gets_total" not in text
    else:
        # With +http the first request misses the response cache and the handler, filling
        # it, loads without a second copy in the data cache; the next two are response-cache
        # hits that never reach the handler. Without it, each is one data-cache lookup.
        assert 'redline_cache_gets_total{cache="demo"} 3.0' in text
    # The first read ran queries; the next two none, unless there is no cache.
    cached = 0 if cache_mode == "none" else 2
    assert f'demo_read_requests_total{{served_by="database"}} {3 - cached}.0' in text
    assert f'demo_read_requests_total{{served_by="cache"}} {cached}.0' in text
    # /metrics and the dashboard are not counted as traffic.
    assert 'route="/metrics"' not in text
    page = client.get("/_redline/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/_redline" not in client.get("/metrics").text


def test_reads_on_the_driver_connection_count_as_queries_and_database_reads(demo_url, make_client):
    # Hot reads bypass SQLAlchemy's execution (read_rows); they must still be measured.
    registry = monitor.Registry()
    client = make_client(demo_url, metrics=True, registry=registry)
    for path in ("/capital-calls/1", "/capital-calls/1/payments", "/dashboard"):
        assert client.get(path).status_code == 200, path
    text = client.get("/metrics").text
    assert 'db_queries_total{engine="demo",operation="SELECT"} 3.0' in text
    timed = [line for line in text.splitlines() if line.startswith("db_query_duration_seconds")]
    assert 'db_query_duration_seconds_count{engine="demo",operation="SELECT"} 3' in timed, timed
    assert 'demo_read_requests_total{served_by="database"} 3.0' in text


def test_a_read_over_the_timeout_counts_as_a_query_error(demo_url, make_client):
    registry = monitor.Registry()
    client = make_client(demo_url, metrics=True, registry=registry, statement_timeout=0.2)
    with psycopg.connect(demo_url) as blocker:
        blocker.execute("LOCK TABLE capital_calls IN ACCESS EXCLUSIVE MODE")
        response = client.get("/capital-calls/1")
        assert response.status_code == 503
        assert response.json()["detail"]["error"] == "database_unavailable"
    assert client.get("/capital-calls/1").status_code == 200
    text = client.get("/metrics").text
    assert 'db_query_errors_total{engine="demo",error="QueryCanceledError"} 1.0' in text


def test_without_metrics_there_is_no_metrics_endpoint(demo_url, make_client):
    client = make_client(demo_url)
    assert client.get("/metrics").status_code == 404
    assert client.get("/_redline/").status_code == 404


def test_two_apps_with_metrics_can_run_in_one_process(demo_url, make_client):
    first = make_client(demo_url, metrics=True, cache="l1")
    second = make_client(demo_url, metrics=True, cache="l1")
    assert first.get("/funds").status_code == second.get("/funds").status_code == 200


def test_a_database_outage_is_a_503_and_service_comes_back():
    with PostgresServer() as server:
        url = server.create_database("demo")
        upgrade(url, BASELINE)
        seed(url, 0.01)
        settings = Settings(dsn=url, pool_timeout=2, statement_timeout=2)
        with TestClient(create_app(settings)) as client:
            assert client.get("/funds").status_code == 200
            server.kill()
            for path in ("/funds", "/capital-calls", "/dashboard"):
                response = client.get(path)
                assert response.status_code == 503, path
                assert response.json()["detail"]["error"] == "database_unavailable"
                assert response.headers["retry-after"] == "1"
            assert client.get("/health").status_code == 503
            server.restart()
            assert client.get("/funds").status_code == 200
            assert client.get("/health").json()["database"] == "ok"


def test_a_statement_over_the_timeout_is_a_503(demo_url, make_client):
    client = make_client(demo_url, statement_timeout=0.2)
    with psycopg.connect(demo_url) as blocker:
        blocker.execute("LOCK TABLE funds IN ACCESS EXCLUSIVE MODE")
        response = client.get("/funds")
        assert response.status_code == 503
        assert response.json()["detail"]["error"] == "database_unavailable"
    assert client.get("/funds").status_code == 200


def test_a_redis_outage_degrades_to_the_database(demo_url, make_client, own_redis):
    client = make_client(demo_url, cache="l1+l2", redis_url=own_redis.url)
    first = client.get("/funds/1").json()
    own_redis.kill()
    for path in ("/funds/1", "/funds/2", "/capital-calls?limit=5", "/dashboard"):
        assert client.get(path).status_code == 200, path
    assert client.get("/funds/1").json() == first


def test_an_unreachable_database_stops_the_startup_naming_it():
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    app = create_app(Settings(dsn="postgresql://postgres:secret@127.0.0.1:1/gone"))
    expected = r"Cannot reach the database at postgresql://postgres:\*\*\*@127.0.0.1:1/gone"
    with pytest.raises(DemoError, match=expected), TestClient(app):
        pass
