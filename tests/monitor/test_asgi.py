"""``MetricsApp``: the ASGI app serving ``/metrics``."""

import gzip

import httpx
import pytest

from redline import monitor


async def call(app, method="GET", headers=(), scope_type="http"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": scope_type, "method": method, "path": "/metrics", "headers": list(headers)}
    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


@pytest.fixture
def registry():
    registry = monitor.Registry()
    monitor.Counter("jobs", "Jobs.", registry=registry).inc(2)
    return registry


async def test_get_serves_the_exposition_with_its_content_type(registry):
    status, headers, body = await call(monitor.MetricsApp(registry))

    assert status == 200
    assert headers[b"content-type"] == b"text/plain; version=0.0.4; charset=utf-8"
    assert body == monitor.generate_latest(registry)
    assert headers[b"content-length"] == str(len(body)).encode()


async def test_head_sends_headers_without_a_body(registry):
    status, headers, body = await call(monitor.MetricsApp(registry), method="HEAD")

    assert status == 200
    assert body == b""
    assert int(headers[b"content-length"]) == len(monitor.generate_latest(registry))


async def test_other_methods_get_405(registry):
    status, headers, _ = await call(monitor.MetricsApp(registry), method="POST")

    assert status == 405
    assert headers[b"allow"] == b"GET, HEAD"


async def test_the_body_is_gzipped_when_the_scraper_accepts_it(registry):
    status, headers, body = await call(
        monitor.MetricsApp(registry), headers=[(b"accept-encoding", b"gzip, deflate")]
    )

    assert headers[b"content-encoding"] == b"gzip"
    assert gzip.decompress(body) == monitor.generate_latest(registry)


async def test_the_default_app_serves_the_default_registry():
    jobs = monitor.Counter("test_asgi_default_jobs", "Jobs.")
    try:
        jobs.inc()
        _, _, body = await call(monitor.metrics_app)
    finally:
        monitor.REGISTRY.unregister(jobs)

    assert b"test_asgi_default_jobs_total 1.0" in body


async def test_a_snapshot_directory_serves_the_merged_view(tmp_path, registry):
    other = monitor.Registry()
    monitor.Counter("jobs", "Jobs.", registry=other).inc(5)
    monitor.SnapshotDirectory(tmp_path, registry=other).write()

    _, _, body = await call(
        monitor.MetricsApp(monitor.SnapshotDirectory(tmp_path, registry=registry))
    )

    assert b"jobs_total 7.0" in body


async def test_lifespan_is_acknowledged(registry):
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message["type"])

    await monitor.MetricsApp(registry)({"type": "lifespan"}, receive, send)

    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_a_scraper_refusing_gzip_gets_plain_text(registry):
    _, headers, body = await call(
        monitor.MetricsApp(registry), headers=[(b"accept-encoding", b"gzip;q=0, identity")]
    )

    assert b"content-encoding" not in headers
    assert body == monitor.generate_latest(registry)


# -- in a Starlette or FastAPI app ---------------------------------------------------------------


def starlette_app(route):
    from starlette.applications import Starlette

    app = Starlette()
    app.routes.append(route)
    return app


def fastapi_app(route):
    from fastapi import FastAPI

    app = FastAPI()
    app.routes.append(route)
    return app


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
@pytest.mark.parametrize("path", ["/metrics", "/metrics/"])
async def test_metrics_route_answers_with_and_without_the_slash(registry, make_app, path):
    app = make_app(monitor.metrics_route(source=registry))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(path)

    assert response.status_code == 200
    assert response.content == monitor.generate_latest(registry)
    assert app.url_path_for("metrics") == "/metrics"


async def test_metrics_route_takes_another_path_and_leaves_other_paths_alone(registry):
    app = starlette_app(monitor.metrics_route("/internal/metrics/", registry))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        served = await client.get("/internal/metrics")
        below = await client.get("/internal/metrics/x")

    assert served.status_code == 200
    assert below.status_code == 404


def test_metrics_route_is_left_out_of_the_openapi_schema(registry):
    app = fastapi_app(monitor.metrics_route(source=registry))

    assert "/metrics" not in app.openapi()["paths"]


@pytest.mark.parametrize("path", ["metrics", "/", ""])
def test_metrics_route_refuses_a_path_that_is_not_one(path):
    with pytest.raises(ValueError, match="must start with '/'"):
        monitor.metrics_route(path)
