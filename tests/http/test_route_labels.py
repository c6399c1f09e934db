"""MetricsMiddleware outside HTTPCacheMiddleware: requests the cache answers before routing (a
validator's 304, a response-cache hit) are labelled with their route template like the ones
that reach the handler, not ``<unmatched>``."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from redline import monitor
from redline.cache import Cache
from redline.http import CachePolicy, HTTPCacheMiddleware

POLICY = CachePolicy("public", max_age=0, s_maxage=60, tags=("fund:{fund_id}",))
VALIDATED = CachePolicy("public", max_age=0, validator=lambda request: 3)


def labels(registry: monitor.Registry) -> dict[str, float]:
    text = monitor.generate_latest(registry).decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("http_requests_total{"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def instrumented(app: object, cache: Cache, registry: monitor.Registry, **options: object):
    wrapped = HTTPCacheMiddleware(app, cache=cache, **options)
    return monitor.MetricsMiddleware(wrapped, registry=registry)


async def fund(request):
    return JSONResponse({"fund": request.path_params["fund_id"]})


async def test_hits_and_misses_of_a_starlette_route_under_a_mount_share_its_template() -> None:
    registry = monitor.Registry()
    app = Starlette(routes=[Mount("/api", routes=[Route("/funds/{fund_id}", fund)])])
    cache = Cache.memory(namespace="labels")
    asgi = instrumented(app, cache, registry, policies={"/api/funds/*": POLICY})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="http://test"
    ) as client:
        states = [(await client.get("/api/funds/7")).headers["x-cache"] for _ in range(3)]
        missing = await client.get("/api/nothing")
    assert states == ["MISS", "HIT", "HIT"]
    assert missing.status_code == 404
    assert labels(registry) == {
        'http_requests_total{route="/api/funds/{fund_id}",method="GET",status="200"}': 3.0,
        'http_requests_total{route="<unmatched>",method="GET",status="404"}': 1.0,
    }
    await cache.aclose()


async def test_a_validator_304_of_a_fastapi_route_is_labelled_with_its_template() -> None:
    registry = monitor.Registry()
    app = FastAPI()
    runs = []

    @app.get("/calls/{call_id}")
    async def call(call_id: int):
        runs.append(call_id)
        return {"call": call_id}

    cache = Cache.memory(namespace="labels")
    asgi = instrumented(app, cache, registry, policies={"/calls/*": VALIDATED})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="http://test"
    ) as client:
        first = await client.get("/calls/5")
        again = await client.get("/calls/5", headers={"if-none-match": first.headers["etag"]})
    assert (first.status_code, again.status_code) == (200, 304)
    assert runs == [5]  # the 304 was answered before the handler
    assert labels(registry) == {
        'http_requests_total{route="/calls/{call_id}",method="GET",status="200"}': 1.0,
        'http_requests_total{route="/calls/{call_id}",method="GET",status="304"}': 1.0,
    }
    await cache.aclose()
