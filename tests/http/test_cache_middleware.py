"""``HTTPCacheMiddleware``: real Starlette and FastAPI apps behind a real uvicorn on loopback,
driven with httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgi_server import serve
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from redline.http import (
    CachePolicy,
    CacheRouteError,
    HTTPCacheMiddleware,
    cache_policy,
    strong_etag,
)

PUBLIC = CachePolicy("public", max_age=60, s_maxage=300, vary=("Accept-Language",))
STATIC = CachePolicy("public", max_age=3600, immutable=True)
BODY = b"hello, cache"


def make_app(calls: list[str] | None = None, **options: Any) -> Starlette:
    calls = [] if calls is None else calls

    async def page(request: Request) -> Response:
        calls.append(request.url.path)
        return PlainTextResponse(BODY)

    async def login(request: Request) -> Response:
        response = PlainTextResponse(BODY)
        response.set_cookie("session", "abc")
        return response

    async def own_headers(request: Request) -> Response:
        calls.append(request.url.path)
        return PlainTextResponse(BODY, headers={"Cache-Control": "no-cache", "ETag": '"v7"'})

    async def missing(request: Request) -> Response:
        return PlainTextResponse("gone", status_code=404)

    @cache_policy(CachePolicy("private", max_age=5))
    async def marked(request: Request) -> Response:
        return PlainTextResponse(BODY)

    async def stream(request: Request) -> Response:
        size = int(request.query_params["kb"])

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(size):
                yield b"x" * 1024

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    routes = [
        Route("/page", page, methods=["GET", "HEAD", "POST"]),
        Route("/static/{name}", page),
        Route("/login", login),
        Route("/own", own_headers),
        Route("/missing", missing),
        Route("/marked", marked),
        Route("/stream", stream),
    ]
    policies = {"/page": PUBLIC, "/static/*": STATIC, "/login": PUBLIC, "/own": PUBLIC}
    policies |= {"/missing": PUBLIC, "/marked": PUBLIC, "/stream": PUBLIC}
    return Starlette(
        routes=routes, middleware=[Middleware(HTTPCacheMiddleware, policies=policies, **options)]
    )


def test_policy_sets_cache_control_and_vary_by_exact_path_and_glob() -> None:
    with serve(make_app()) as client:
        page = client.get("/page")
        static = client.get("/static/app.js")
    assert page.headers["cache-control"] == "public, max-age=60, s-maxage=300"
    assert page.headers["vary"] == "Accept-Language"
    assert static.headers["cache-control"] == "public, max-age=3600, immutable"


def test_etag_is_a_content_hash_stable_across_app_instances() -> None:
    with serve(make_app()) as first:
        one = first.get("/page").headers["etag"]
    with serve(make_app()) as second:
        two = second.get("/page").headers["etag"]
    assert one == two == strong_etag(BODY)


def test_matching_if_none_match_answers_304_without_body_after_the_handler_ran() -> None:
    calls: list[str] = []
    with serve(make_app(calls)) as client:
        etag = client.get("/page").headers["etag"]
        response = client.get("/page", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert calls == ["/page", "/page"]
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "public, max-age=60, s-maxage=300"
    assert response.headers["vary"] == "Accept-Language"
    assert "date" in response.headers
    assert "content-type" not in response.headers
    assert "content-length" not in response.headers


def test_weak_if_none_match_matches_the_strong_etag() -> None:
    with serve(make_app()) as client:
        etag = client.get("/page").headers["etag"]
        response = client.get("/page", headers={"If-None-Match": f'"other", W/{etag}'})
        stale = client.get("/page", headers={"If-None-Match": '"other"'})
    assert response.status_code == 304
    assert stale.status_code == 200 and stale.content == BODY


@pytest.mark.parametrize("credential", [{"Authorization": "Bearer t"}, {"Cookie": "session=1"}])
def test_credentialed_request_downgrades_public_to_private(credential: dict[str, str]) -> None:
    with serve(make_app()) as client:
        response = client.get("/page", headers=credential)
    assert response.headers["cache-control"] == "private, max-age=60"


def test_response_setting_a_cookie_is_never_public() -> None:
    with serve(make_app()) as client:
        response = client.get("/login")
    assert response.headers["cache-control"] == "private, max-age=60"


def test_handler_set_cache_control_and_etag_are_kept_and_validate() -> None:
    calls: list[str] = []
    with serve(make_app(calls)) as client:
        response = client.get("/own")
        revalidated = client.get("/own", headers={"If-None-Match": '"v7"'})
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"] == '"v7"'
    assert revalidated.status_code == 304 and calls == ["/own", "/own"]


def test_post_and_error_statuses_get_no_caching_headers() -> None:
    with serve(make_app()) as client:
        posted = client.post("/page")
        missing = client.get("/missing")
    for response in (posted, missing):
        assert "cache-control" not in response.headers
        assert "etag" not in response.headers
    assert posted.content == BODY


def test_head_keeps_policy_but_has_no_body_hash() -> None:
    with serve(make_app()) as client:
        response = client.head("/page")
    assert response.headers["cache-control"] == "public, max-age=60, s-maxage=300"
    assert "etag" not in response.headers


def test_decorator_beats_the_path_policy_on_starlette() -> None:
    with serve(make_app()) as client:
        response = client.get("/marked")
    assert response.headers["cache-control"] == "private, max-age=5"


def test_decorator_on_a_fastapi_endpoint() -> None:
    app = FastAPI()

    @app.get("/item")
    @cache_policy(CachePolicy("public", max_age=30))
    async def item() -> dict[str, int]:
        return {"id": 1}

    with serve(HTTPCacheMiddleware(app)) as client:
        response = client.get("/item")
        again = client.get("/item", headers={"If-None-Match": response.headers["etag"]})
    assert response.headers["cache-control"] == "public, max-age=30"
    assert response.headers["etag"] == strong_etag(response.content)
    assert again.status_code == 304


def test_streaming_body_over_max_etag_body_passes_through_untagged() -> None:
    with serve(make_app(max_etag_body=64 * 1024)) as client:
        small = client.get("/stream", params={"kb": 4})
        big = client.get("/stream", params={"kb": 256})
    assert small.headers["etag"] == strong_etag(b"x" * 4096)
    assert "etag" not in big.headers
    assert big.content == b"x" * 256 * 1024
    assert big.headers["cache-control"] == "public, max-age=60, s-maxage=300"


def test_callable_policies_and_default() -> None:
    def by_param(scope: Any) -> CachePolicy | None:
        return STATIC if scope["path"].startswith("/static/") else None

    async def page(request: Request) -> Response:
        return PlainTextResponse(BODY)

    app = Starlette(routes=[Route("/static/{name}", page), Route("/other", page)])
    wrapped = HTTPCacheMiddleware(app, policies=by_param, default=CachePolicy(max_age=1))
    with serve(wrapped) as client:
        static = client.get("/static/a.css")
        other = client.get("/other")
    assert static.headers["cache-control"] == "public, max-age=3600, immutable"
    assert other.headers["cache-control"] == "private, max-age=1"


@pytest.mark.parametrize("pattern", ["page", "/a/*/b", "/a*"])
def test_invalid_route_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(CacheRouteError, match="policies key"):
        HTTPCacheMiddleware(make_app(), policies={pattern: PUBLIC})
