"""Surrogate keys: tag validation, the three CDN header styles, and their emission by
``HTTPCacheMiddleware`` from route tag templates."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from redline.http import CachePolicy, CachePolicyError, HTTPCacheMiddleware, cache_policy
from redline.http._middleware import CacheRouteError
from redline.http._surrogate import SurrogateKeyError, check_surrogate_tags, surrogate_headers

FUND = CachePolicy("public", max_age=60, tags=("fund:{fund_id}", "funds"))


def test_check_surrogate_tags_keeps_order_and_drops_duplicates() -> None:
    assert check_surrogate_tags(["fund:7", "funds", "fund:7"]) == ("fund:7", "funds")
    assert check_surrogate_tags([]) == ()


@pytest.mark.parametrize(
    ("tag", "why"),
    [
        ("a b", "' '"),
        ("a,b", "','"),
        ("a\tb", "'\\\\t'"),
        ("fünd", "'ü'"),
        ("", "non-empty"),
        ("x" * 1025, "over 1024"),
    ],
)
def test_invalid_tags_are_refused_naming_the_tag(tag: str, why: str) -> None:
    with pytest.raises(SurrogateKeyError, match=why):
        check_surrogate_tags(["ok", tag])


def test_a_single_string_is_refused_rather_than_split_into_characters() -> None:
    with pytest.raises(SurrogateKeyError, match="not one string"):
        check_surrogate_tags("fund:7")


def test_surrogate_headers_use_each_cdns_separator() -> None:
    headers = dict(surrogate_headers(["fund:7", "funds"]))
    assert headers == {
        b"surrogate-key": b"fund:7 funds",
        b"cache-tag": b"fund:7,funds",
        b"xkey": b"fund:7 funds",
    }
    assert surrogate_headers(["a"], styles=("xkey",)) == [(b"xkey", b"a")]
    assert surrogate_headers([]) == []


def test_surrogate_headers_refuse_unknown_styles_and_oversized_headers() -> None:
    with pytest.raises(SurrogateKeyError, match="akamai"):
        surrogate_headers(["a"], styles=("akamai",))
    many = [f"item:{i:05}" for i in range(2000)]  # 2000 * 11 bytes > 16 KB
    with pytest.raises(SurrogateKeyError, match="over the 16384 bytes"):
        surrogate_headers(many)


# -- emission by the middleware ---------------------------------------------------------------


def make_app(**options: Any) -> Starlette:
    async def fund(request: Request) -> Response:
        return PlainTextResponse(f"fund {request.path_params['fund_id']}")

    async def login(request: Request) -> Response:
        response = PlainTextResponse("hi")
        response.set_cookie("session", "s")
        return response

    @cache_policy(CachePolicy("public", max_age=5, tags=("holding:{tenant}:{holding_id}",)))
    async def holding(request: Request) -> Response:
        return PlainTextResponse("holding")

    tenant = Mount("/t/{tenant}", routes=[Route("/holdings/{holding_id}", holding)])
    routes = [Route("/funds/{fund_id}", fund), Route("/login/{fund_id}", login), tenant]
    policies = {"/funds/*": FUND, "/login/*": FUND}
    return Starlette(
        routes=routes,
        middleware=[_middleware(policies=policies, **options)],
    )


def _middleware(**options: Any) -> Any:
    from starlette.middleware import Middleware

    return Middleware(HTTPCacheMiddleware, **options)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_cacheable_response_carries_its_tags_in_all_three_styles() -> None:
    async with client_for(make_app()) as client:
        response = await client.get("/funds/7")
    assert response.headers["surrogate-key"] == "fund:7 funds"
    assert response.headers["cache-tag"] == "fund:7,funds"
    assert response.headers["xkey"] == "fund:7 funds"


async def test_tags_are_filled_from_mount_and_route_parameters_of_the_decorated_endpoint() -> None:
    async with client_for(make_app()) as client:
        response = await client.get("/t/acme/holdings/42")
    assert response.headers["xkey"] == "holding:acme:42"


async def test_styles_are_configurable_and_can_be_switched_off() -> None:
    async with client_for(make_app(surrogate_keys=("xkey",))) as client:
        only_xkey = await client.get("/funds/7")
    async with client_for(make_app(surrogate_keys=())) as client:
        none = await client.get("/funds/7")
    assert only_xkey.headers["xkey"] == "fund:7 funds"
    assert "surrogate-key" not in only_xkey.headers and "cache-tag" not in only_xkey.headers
    assert not {"xkey", "surrogate-key", "cache-tag"} & set(none.headers)


async def test_private_responses_carry_no_tags() -> None:
    async with client_for(make_app()) as client:
        credentialed = await client.get("/funds/7", headers={"Authorization": "Bearer t"})
        cookie_setting = await client.get("/login/7")
    for response in (credentialed, cookie_setting):
        assert response.headers["cache-control"].startswith("private")
        assert "xkey" not in response.headers and "surrogate-key" not in response.headers


async def test_path_parameter_characters_a_tag_cannot_hold_are_percent_encoded() -> None:
    async with client_for(make_app()) as client:
        response = await client.get("/funds/a%20b,c")
    assert response.headers["xkey"] == "fund:a%20b%2Cc funds"


async def test_too_long_parameter_is_served_untagged_not_failed() -> None:
    async with client_for(make_app()) as client:
        response = await client.get("/funds/" + "x" * 2000)
    assert response.status_code == 200
    assert "xkey" not in response.headers


async def test_tag_template_naming_a_missing_parameter_is_an_error_naming_route_and_template() -> (
    None
):
    policy = CachePolicy("public", max_age=5, tags=("fund:{fund}",))

    async def fund(request: Request) -> Response:
        return PlainTextResponse("x")

    app = Starlette(routes=[Route("/funds/{fund_id}", fund)])
    wrapped = HTTPCacheMiddleware(app, policies={"/funds/*": policy})
    async with client_for(wrapped) as client:
        with pytest.raises(
            CachePolicyError, match=r"'fund:\{fund\}' on route '/funds/\{fund_id\}'"
        ):
            await client.get("/funds/7")


def test_unknown_style_on_the_middleware_is_a_config_error() -> None:
    with pytest.raises(CacheRouteError, match="surrogate_keys"):
        HTTPCacheMiddleware(make_app(), surrogate_keys=("fastly",))


def test_surrogate_headers_hands_each_caller_its_own_list() -> None:
    first = surrogate_headers(("fund:7",), ("xkey",))
    first.append((b"x-extra", b"1"))
    first[0] = (b"xkey", b"changed")
    assert surrogate_headers(("fund:7",), ("xkey",)) == [(b"xkey", b"fund:7")]


def test_an_unhashable_tag_is_refused_like_any_other_bad_tag() -> None:
    with pytest.raises(SurrogateKeyError, match="must be a non-empty str"):
        surrogate_headers((["fund:7"],), ("xkey",))  # type: ignore[arg-type]


def test_a_bad_tag_is_refused_every_time_not_only_the_first() -> None:
    for _ in range(2):
        with pytest.raises(SurrogateKeyError, match="' '"):
            surrogate_headers(("fund 7",), ("xkey",))
