"""What HTTPCacheMiddleware derives once per route or policy and reuses on later requests
(redline/http/_responder.py Exchange, RouteMatch.derived, CachePolicy's derived headers) never
leaks between routes, path parameters, users, or policies that a callable chooses per request.

Each test alternates requests so that a value remembered from an earlier request would show.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redline.http import CachePolicy, HTTPCacheMiddleware, cache_policy

FUNDS = CachePolicy("public", max_age=60, s_maxage=300, tags=("fund:{fund_id}", "funds"))
NEWS = CachePolicy("public", max_age=5, tags=("news",), vary=("Accept-Language",))
MARKED = CachePolicy("private", max_age=7)


async def page(request: Request) -> Response:
    return PlainTextResponse(f"page {request.url.path}")


@cache_policy(MARKED)
async def marked(request: Request) -> Response:
    return PlainTextResponse("marked")


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def funds_app(**options: Any) -> HTTPCacheMiddleware:
    routes = [Route("/funds/{fund_id}", page), Route("/news", page), Route("/marked", marked)]
    policies = {"/funds/*": FUNDS, "/news": NEWS, "/marked": FUNDS}
    return HTTPCacheMiddleware(
        Starlette(routes=routes), policies=policies, surrogate_keys=("xkey",), **options
    )


async def test_routes_and_path_parameters_keep_their_own_policy_and_tags() -> None:
    async with client_for(funds_app()) as client:
        for _ in range(3):
            one = await client.get("/funds/1")
            two = await client.get("/funds/2")
            news = await client.get("/news")
            mark = await client.get("/marked")
            assert one.headers["xkey"] == "fund:1 funds"
            assert two.headers["xkey"] == "fund:2 funds"
            assert one.headers["cache-control"] == "public, max-age=60, s-maxage=300"
            assert news.headers["xkey"] == "news"
            assert news.headers["cache-control"] == "public, max-age=5"
            assert news.headers["vary"] == "Accept-Language"
            assert "vary" not in one.headers
            # The endpoint's mark beats the path table, on every request.
            assert mark.headers["cache-control"] == "private, max-age=7"
            assert "xkey" not in mark.headers


async def test_credentialed_and_anonymous_requests_alternate_without_mixing() -> None:
    async with client_for(funds_app()) as client:
        for _ in range(3):
            anonymous = await client.get("/funds/1")
            alice = await client.get("/funds/1", headers={"Authorization": "Bearer alice"})
            cookie = await client.get("/funds/1", headers={"Cookie": "session=abc"})
            assert anonymous.headers["cache-control"] == "public, max-age=60, s-maxage=300"
            assert anonymous.headers["xkey"] == "fund:1 funds"
            for personal in (alice, cookie):
                assert personal.headers["cache-control"] == "private, max-age=60"
                assert "xkey" not in personal.headers


async def test_validator_304s_alternate_between_users_without_mixing() -> None:
    policy = CachePolicy(
        "public", max_age=60, s_maxage=300, tags=("fund:{fund_id}",), validator=lambda r: 7
    )
    app = HTTPCacheMiddleware(
        Starlette(routes=[Route("/funds/{fund_id}", page)]),
        policies={"/funds/*": policy},
        surrogate_keys=("xkey",),
    )
    async with client_for(app) as client:
        etag = (await client.get("/funds/1")).headers["etag"]
        for _ in range(3):
            anonymous = await client.get("/funds/1", headers={"If-None-Match": etag})
            alice = await client.get(
                "/funds/1", headers={"If-None-Match": etag, "Authorization": "Bearer alice"}
            )
            other = await client.get("/funds/2", headers={"If-None-Match": etag})
            assert anonymous.status_code == alice.status_code == 304
            assert anonymous.headers["cache-control"] == "public, max-age=60, s-maxage=300"
            assert anonymous.headers["xkey"] == "fund:1"
            assert alice.headers["cache-control"] == "private, max-age=60"
            assert "xkey" not in alice.headers
            # Another fund's version hashes with its own route: 7 either way, but fund 2's
            # 304 carries fund 2's tag, not the one remembered for fund 1.
            assert other.status_code == 304 and other.headers["xkey"] == "fund:2"


async def test_a_policies_callable_is_asked_on_every_request() -> None:
    asked: list[str] = []

    def by_header(scope: Any) -> CachePolicy:
        asked.append(scope["path"])
        headers = dict(scope["headers"])
        return NEWS if headers.get(b"x-edition") == b"news" else FUNDS

    app = HTTPCacheMiddleware(
        Starlette(routes=[Route("/funds/{fund_id}", page)]),
        policies=by_header,
        surrogate_keys=("xkey",),
    )
    async with client_for(app) as client:
        for _ in range(2):
            funds = await client.get("/funds/3")
            news = await client.get("/funds/3", headers={"X-Edition": "news"})
            assert funds.headers["cache-control"] == "public, max-age=60, s-maxage=300"
            assert funds.headers["xkey"] == "fund:3 funds"
            assert news.headers["cache-control"] == "public, max-age=5"
            assert news.headers["xkey"] == "news"
    assert len(asked) >= 4


async def test_a_route_keeps_separate_policies_for_separate_middlewares() -> None:
    routes = [Route("/funds/{fund_id}", page)]
    short = CachePolicy("public", max_age=1)
    one = HTTPCacheMiddleware(Starlette(routes=routes), policies={"/funds/*": FUNDS})
    two = HTTPCacheMiddleware(Starlette(routes=routes), policies={"/funds/*": short})
    async with client_for(one) as first, client_for(two) as second:
        for _ in range(2):
            assert (await first.get("/funds/1")).headers["cache-control"].endswith("s-maxage=300")
            assert (await second.get("/funds/1")).headers["cache-control"] == "public, max-age=1"
