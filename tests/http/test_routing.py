"""RouteMatcher: the route a request will reach, found before the app runs
(redline/http/_routing.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Host, Mount, Route, Router

from redline.http._routing import RouteMatcher


async def endpoint(request: Request) -> Response:
    return PlainTextResponse("x")


async def other(request: Request) -> Response:
    return PlainTextResponse("y")


def scope(path: str, method: str = "GET", host: str = "example.com") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
    }


class CountingRoute(Route):
    calls = 0

    def matches(self, scope: Any) -> Any:
        CountingRoute.calls += 1
        return super().matches(scope)


def test_starlette_route_gives_template_endpoint_and_params() -> None:
    app = Starlette(routes=[Route("/a", other), Route("/funds/{fund_id:int}", endpoint)])
    found = RouteMatcher(app).match(scope("/funds/7"))
    assert found is not None
    assert found.template == "/funds/{fund_id}"
    assert found.endpoint is endpoint
    assert found.path_params == {"fund_id": 7}


def test_mounted_router_templates_carry_the_mount_prefix_and_its_params() -> None:
    inner = Router(routes=[Route("/holdings/{holding_id}", endpoint)])
    app = Starlette(routes=[Mount("/t/{tenant}", app=inner)])
    found = RouteMatcher(app).match(scope("/t/acme/holdings/3"))
    assert found is not None
    assert found.template == "/t/{tenant}/holdings/{holding_id}"
    assert found.path_params == {"tenant": "acme", "holding_id": "3"}
    assert found.child_scope["root_path"] == "/t/acme"


def test_fastapi_included_router_is_matched_with_its_prefix() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.get("/funds/{fund_id}")
    async def fund(fund_id: int) -> dict[str, int]:
        return {"id": fund_id}

    app.include_router(router, prefix="/api")
    found = RouteMatcher(app).match(scope("/api/funds/9"))
    assert found is not None
    assert found.template == "/api/funds/{fund_id}"
    assert found.endpoint is fund


def test_host_routes_are_told_apart_by_the_host_header() -> None:
    app = Starlette(
        routes=[
            Host("api.example.com", app=Router(routes=[Route("/x", endpoint)])),
            Route("/x", other),
        ]
    )
    matcher = RouteMatcher(app)
    api = matcher.match(scope("/x", host="api.example.com"))
    www = matcher.match(scope("/x", host="www.example.com"))
    assert api is not None and api.endpoint is endpoint
    assert www is not None and www.endpoint is other


def test_wrong_method_and_unknown_path_match_nothing() -> None:
    app = Starlette(routes=[Route("/only-post", endpoint, methods=["POST"])])
    matcher = RouteMatcher(app)
    assert matcher.match(scope("/only-post")) is None
    assert matcher.match(scope("/nowhere")) is None


def test_a_later_full_match_beats_an_earlier_method_mismatch() -> None:
    app = Starlette(
        routes=[Route("/x", other, methods=["POST"]), Route("/x", endpoint, methods=["GET"])]
    )
    found = RouteMatcher(app).match(scope("/x"))
    assert found is not None and found.endpoint is endpoint


def test_matching_is_memoised_per_method_and_path() -> None:
    CountingRoute.calls = 0
    app = Starlette(routes=[CountingRoute("/a/{x}", endpoint)])
    matcher = RouteMatcher(app)
    for _ in range(5):
        assert matcher.match(scope("/a/1")) is not None
    assert CountingRoute.calls == 1
    matcher.match(scope("/a/2"))
    assert CountingRoute.calls == 2


def test_memo_is_bounded() -> None:
    CountingRoute.calls = 0
    matcher = RouteMatcher(Starlette(routes=[CountingRoute("/a/{x}", endpoint)]), max_entries=2)
    for path in ("/a/1", "/a/2", "/a/3", "/a/1"):
        matcher.match(scope(path))
    assert CountingRoute.calls == 4  # /a/1 was evicted by /a/3


def test_routes_added_later_are_seen() -> None:
    app = Starlette(routes=[Route("/a", endpoint)])
    matcher = RouteMatcher(app)
    assert matcher.match(scope("/b")) is None
    app.router.routes.append(Route("/b", other))
    found = matcher.match(scope("/b"))
    assert found is not None and found.endpoint is other


def test_router_is_found_through_scope_app_when_the_wrapped_app_has_none() -> None:
    app = Starlette(routes=[Route("/a", endpoint)])

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    matcher = RouteMatcher(plain)
    assert matcher.match(scope("/a")) is None
    found = matcher.match({**scope("/a"), "app": app})
    assert found is not None and found.endpoint is endpoint


def test_a_failing_custom_route_matches_nothing_instead_of_raising() -> None:
    class Broken(Route):
        def matches(self, scope: Any) -> Any:
            raise RuntimeError("boom")

    assert RouteMatcher(Starlette(routes=[Broken("/a", endpoint)])).match(scope("/a")) is None
