"""HTTPCacheMiddleware and the purge adapters behind a real Varnish (default_vcl()).

``Origin`` is a Starlette app under uvicorn that counts how often each handler runs, so "a HIT
that does not reach the app" is checked by the app's own count, not only by Varnish's headers.
The app can be made to fail (500) or slow on demand, or be stopped, for the stale-content
tests. Varnish runs with no default grace, so only the app's headers decide staleness.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from redline._servers import VarnishServer
from redline.cache import Cache
from redline.http import CachePolicy, HTTPCacheMiddleware
from redline.http._purge import Purger, VarnishPurger

StartVarnish = Callable[..., VarnishServer]

POLICIES = {
    "/funds/*": CachePolicy("public", max_age=60, tags=("fund:{fund_id}", "funds")),
    "/swr": CachePolicy("public", max_age=1, stale_while_revalidate=30, tags=("swr",)),
    "/sie": CachePolicy("public", max_age=1, stale_if_error=30),
    "/sie-short": CachePolicy("public", max_age=1, stale_if_error=1),
    "/swr-sie": CachePolicy("public", max_age=1, stale_while_revalidate=1, stale_if_error=30),
    "/me": CachePolicy("public", max_age=60),
    "/private": CachePolicy("private", max_age=60),
    "/no-store": CachePolicy("no-store"),
}


class Origin:
    """The app behind Varnish: counts handler runs per path; can fail or be slow on demand.

    With ``cache_url`` the middleware's response cache keeps responses in Redis too; the app's
    Cache is made and closed on the app's own event loop, as in a real deployment.
    """

    def __init__(self, cache_url: str | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.failing = False
        self.delay = 0.0
        self.nav: dict[str, int] = {}  # the "database" behind /funds/{fund_id}
        routes = [
            Route("/funds/{fund_id}", self.fund),
            *(
                Route(path, self.page)
                for path in ("/swr", "/sie", "/sie-short", "/swr-sie", "/no-store")
            ),
            Route("/me", self.me),
            Route("/private", self.me),
            Route("/raw-me", self.raw_me),
            Route("/raw-login", self.raw_login),
        ]
        cache = Cache.from_url(cache_url) if cache_url else None

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            if cache is not None:
                await cache.aclose()

        self.app = HTTPCacheMiddleware(
            Starlette(routes=routes, lifespan=lifespan), policies=POLICIES, cache=cache
        )
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def count(self, request: Request) -> int:
        self.calls[request.url.path] += 1
        return self.calls[request.url.path]

    async def fund(self, request: Request) -> PlainTextResponse:
        n = self.count(request)
        fund = request.path_params["fund_id"]
        if fund in self.nav:
            return PlainTextResponse(f"fund {fund} nav {self.nav[fund]}")
        return PlainTextResponse(f"fund {fund} v{n}")

    async def page(self, request: Request) -> PlainTextResponse:
        n = self.count(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failing:
            return PlainTextResponse(f"failure {n}", status_code=500)
        return PlainTextResponse(f"{request.url.path} v{n}")

    async def me(self, request: Request) -> PlainTextResponse:
        self.count(request)
        return PlainTextResponse(f"data of {user_of(request)}")

    async def raw_me(self, request: Request) -> PlainTextResponse:
        # The handler itself claims "public": Varnish must still keep it from other users.
        self.count(request)
        headers = {"cache-control": "public, max-age=60"}
        return PlainTextResponse(f"data of {user_of(request)}", headers=headers)

    async def raw_login(self, request: Request) -> PlainTextResponse:
        n = self.count(request)
        response = PlainTextResponse(
            f"welcome {n}", headers={"cache-control": "public, max-age=60"}
        )
        response.set_cookie("session", f"secret-{n}")
        return response


def user_of(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bearer ") or request.cookies.get("session") or "anonymous"


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cached_origin(redis_url: str) -> Iterator[Origin]:
    server = Origin(cache_url=redis_url)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def edge(varnish: StartVarnish, origin: Origin) -> VarnishServer:
    return varnish(origin.address)


def get(server: VarnishServer, path: str, **headers: str) -> httpx.Response:
    headers = {name.replace("_", "-"): value for name, value in headers.items()}
    return httpx.get(server.url + path, headers=headers, timeout=15)


def is_hit(response: httpx.Response) -> bool:
    # X-Varnish holds this request's id, and on a hit also the id of the request that stored it.
    return len(response.headers["x-varnish"].split()) == 2


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- hits and misses ---------------------------------------------------------------------------


def test_first_request_misses_and_the_second_hits_without_reaching_the_app(
    edge: VarnishServer, origin: Origin
) -> None:
    first = get(edge, "/funds/1")
    second = get(edge, "/funds/1")
    assert first.text == second.text == "fund 1 v1"
    assert not is_hit(first) and is_hit(second)
    assert origin.calls["/funds/1"] == 1


def test_tag_headers_reach_varnish_but_not_clients(edge: VarnishServer, origin: Origin) -> None:
    direct = httpx.get(f"http://{origin.address}/funds/1")
    assert direct.headers["xkey"] == "fund:1 funds"
    assert direct.headers["surrogate-key"] == "fund:1 funds"
    through = get(edge, "/funds/1")
    assert through.status_code == 200
    for name in ("xkey", "surrogate-key", "cache-tag"):
        assert name not in through.headers


# -- purge by tag --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["xkey", "ban"])
async def test_purge_by_tag_makes_only_the_tagged_pages_miss(
    edge: VarnishServer, origin: Origin, mode: str
) -> None:
    for fund in ("1", "2"):
        get(edge, f"/funds/{fund}")
        assert is_hit(get(edge, f"/funds/{fund}"))
    async with Purger(VarnishPurger(edge.url, mode=mode)) as purger:  # type: ignore[arg-type]
        result = await purger.purge(["fund:1"])
    assert result.ok
    assert result.outcomes[0].count == (1 if mode == "xkey" else None)
    again = get(edge, "/funds/1")
    assert not is_hit(again) and again.text == "fund 1 v2"
    assert is_hit(get(edge, "/funds/2"))
    assert origin.calls == {"/funds/1": 2, "/funds/2": 1}


@pytest.mark.parametrize("mode", ["xkey", "ban"])
async def test_purge_matches_whole_tags_only(
    edge: VarnishServer, origin: Origin, mode: str
) -> None:
    # "fund:1" must not reach "fund:10", and the '.' in "fund:a.b" is no regex wildcard.
    funds = ("1", "10", "a.b", "axb")
    for fund in funds:
        get(edge, f"/funds/{fund}")
    async with Purger(VarnishPurger(edge.url, mode=mode)) as purger:  # type: ignore[arg-type]
        assert (await purger.purge(["fund:1", "fund:a.b"])).ok
    hits = {fund: is_hit(get(edge, f"/funds/{fund}")) for fund in funds}
    assert hits == {"1": False, "10": True, "a.b": False, "axb": True}


@pytest.mark.parametrize("mode", ["xkey", "ban"])
async def test_a_shared_tag_purges_every_page_that_carries_it(
    edge: VarnishServer, origin: Origin, mode: str
) -> None:
    for fund in ("1", "2"):
        get(edge, f"/funds/{fund}")
    async with Purger(VarnishPurger(edge.url, mode=mode)) as purger:  # type: ignore[arg-type]
        assert (await purger.purge(["funds"])).ok
    assert not is_hit(get(edge, "/funds/1")) and not is_hit(get(edge, "/funds/2"))


async def test_soft_purge_serves_stale_once_while_refreshing(
    edge: VarnishServer, origin: Origin
) -> None:
    get(edge, "/swr")
    async with Purger(VarnishPurger(edge.url, soft=True)) as purger:
        assert (await purger.purge(["swr"])).outcomes[0].count == 1
    stale = get(edge, "/swr")
    assert stale.text == "/swr v1"
    wait_for(lambda: origin.calls["/swr"] == 2)
    wait_for(lambda: get(edge, "/swr").text == "/swr v2")


async def test_one_purge_reaches_varnish_and_the_apps_response_cache(
    varnish: StartVarnish, cached_origin: Origin, redis_url: str
) -> None:
    edge = varnish(cached_origin.address)
    cached_origin.nav["1"] = 100
    assert get(edge, "/funds/1").text == "fund 1 nav 100"
    cached_origin.nav["1"] = 101  # the write
    # Purging Varnish alone is not enough: it refills from the app's response cache.
    async with Purger(VarnishPurger(edge.url)) as varnish_only:
        assert (await varnish_only.purge(["fund:1"])).ok
    refilled = get(edge, "/funds/1")
    assert refilled.text == "fund 1 nav 100" and refilled.headers["x-cache"] == "HIT"
    # One Purger with the cache: the app's caches first, then Varnish.
    cache = Cache.from_url(redis_url)  # this process's view of the app's Redis
    try:
        async with Purger(VarnishPurger(edge.url), cache=cache) as purger:
            result = await purger.purge(["fund:1"])
    finally:
        await cache.aclose()
    assert [o.target for o in result.outcomes] == ["cache Cache", f"varnish {edge.url}"]
    assert result.ok
    fresh = get(edge, "/funds/1")
    assert fresh.text == "fund 1 nav 101" and not is_hit(fresh)
    assert cached_origin.calls["/funds/1"] == 2


async def test_a_fleet_is_purged_node_by_node(varnish: StartVarnish, origin: Origin) -> None:
    nodes = [varnish(origin.address), varnish(origin.address)]
    for node in nodes:
        get(node, "/funds/1")
    dead = nodes[0].url
    nodes[0].stop()  # a node that went away: reported, and the other is still purged
    async with Purger(VarnishPurger([dead, nodes[1].url], retries=1, backoff=0.01)) as purger:
        result = await purger.purge(["fund:1"])
    by_target = {outcome.target: outcome for outcome in result.outcomes}
    assert by_target[f"varnish {nodes[1].url}"].ok
    assert by_target[f"varnish {nodes[1].url}"].count == 1
    assert not by_target[f"varnish {dead}"].ok and by_target[f"varnish {dead}"].attempts == 2
    assert result.failed_tags == ("fund:1",)
    assert not is_hit(get(nodes[1], "/funds/1"))


async def test_a_vcl_without_the_purge_handler_is_reported(
    varnish: StartVarnish, origin: Origin
) -> None:
    host, port = origin.address.split(":")
    plain = f'vcl 4.1;\nbackend default {{ .host = "{host}"; .port = "{port}"; }}\n'
    node = varnish(origin.address, vcl=plain)
    async with Purger(VarnishPurger(node.url)) as purger:
        result = await purger.purge(["fund:1"])
    # The builtin VCL pipes an unknown method to the app, which knows no PURGE either.
    [outcome] = result.outcomes
    assert not outcome.ok and outcome.failed == ("fund:1",)
    assert "HTTP 404" in (outcome.error or "") and "PURGE handler" in (outcome.error or "")


# -- stale content -------------------------------------------------------------------------------


def test_stale_while_revalidate_serves_stale_then_refreshes(
    edge: VarnishServer, origin: Origin
) -> None:
    assert get(edge, "/swr").text == "/swr v1"
    time.sleep(1.3)
    origin.delay = 1.5
    started = time.monotonic()
    stale = get(edge, "/swr")
    # Served from cache at once, not after the app's 1.5 s.
    assert stale.text == "/swr v1" and time.monotonic() - started < 1.0
    wait_for(lambda: origin.calls["/swr"] == 2)
    origin.delay = 0
    wait_for(lambda: get(edge, "/swr").text == "/swr v2")
    assert origin.calls["/swr"] == 2


def test_stale_if_error_serves_stale_while_the_app_fails(
    edge: VarnishServer, origin: Origin
) -> None:
    assert get(edge, "/sie").text == "/sie v1"
    time.sleep(1.3)
    origin.failing = True
    stale = get(edge, "/sie")
    assert (stale.status_code, stale.text) == (200, "/sie v1")
    assert origin.calls["/sie"] >= 2  # the app was asked first, and failed
    origin.failing = False
    fresh = get(edge, "/sie")
    assert fresh.status_code == 200 and fresh.text != "/sie v1"


def test_past_stale_while_revalidate_a_working_app_is_asked_synchronously(
    edge: VarnishServer, origin: Origin
) -> None:
    # stale-if-error alone gives no licence to serve stale when the app answers.
    get(edge, "/sie")
    time.sleep(1.3)
    # The VCL's internal state header cannot be forged by a client to get stale content.
    response = get(edge, "/sie", x_redline_stale="serve")
    assert response.text == "/sie v2" and origin.calls["/sie"] == 2
    assert "x-redline-swr" not in response.headers


def test_stale_if_error_serves_stale_while_the_app_is_down(
    edge: VarnishServer, origin: Origin
) -> None:
    assert get(edge, "/sie").text == "/sie v1"
    origin.stop()
    time.sleep(1.3)
    stale = get(edge, "/sie")
    assert (stale.status_code, stale.text) == (200, "/sie v1")


def test_stale_while_revalidate_and_stale_if_error_each_keep_their_window(
    edge: VarnishServer, origin: Origin
) -> None:
    assert get(edge, "/swr-sie").text == "/swr-sie v1"
    time.sleep(1.3)  # within stale-while-revalidate: stale at once, refreshed behind
    assert get(edge, "/swr-sie").text == "/swr-sie v1"
    wait_for(lambda: origin.calls["/swr-sie"] == 2)
    time.sleep(2.3)  # past max-age + stale-while-revalidate of v2, within stale-if-error
    origin.failing = True
    stale = get(edge, "/swr-sie")
    assert (stale.status_code, stale.text) == (200, "/swr-sie v2")
    assert origin.calls["/swr-sie"] >= 3


def test_errors_pass_through_once_stale_if_error_has_run_out(
    edge: VarnishServer, origin: Origin
) -> None:
    get(edge, "/sie-short")
    time.sleep(2.5)  # max-age=1 plus stale-if-error=1, and a margin
    origin.failing = True
    response = get(edge, "/sie-short")
    assert response.status_code == 500 and response.text.startswith("failure")


# -- one user's response never reaches another ---------------------------------------------------


@pytest.mark.parametrize("path", ["/me", "/raw-me"])
@pytest.mark.parametrize(
    "credentials",
    [{"authorization": "Bearer alice"}, {"cookie": "session=alice"}],
    ids=["authorization", "cookie"],
)
def test_a_users_response_is_never_served_to_another_client(
    edge: VarnishServer, origin: Origin, path: str, credentials: dict[str, str]
) -> None:
    alice = get(edge, path, **credentials)
    assert alice.text == "data of alice"
    for _ in range(2):
        anonymous = get(edge, path)
        assert anonymous.text == "data of anonymous"
        bob = get(edge, path, authorization="Bearer bob")
        assert bob.text == "data of bob"
    assert "alice" not in get(edge, path, cookie="session=mallory").text
    assert origin.calls[path] >= 4


def test_private_and_no_store_responses_are_not_cached(edge: VarnishServer, origin: Origin) -> None:
    for path in ("/private", "/no-store"):
        get(edge, path)
        assert not is_hit(get(edge, path))
        assert origin.calls[path] == 2


def test_a_response_setting_a_cookie_is_never_cached_or_replayed(
    edge: VarnishServer, origin: Origin
) -> None:
    first = get(edge, "/raw-login")
    second = get(edge, "/raw-login")
    assert first.cookies["session"] == "secret-1"
    assert second.cookies["session"] == "secret-2"
    assert not is_hit(second) and origin.calls["/raw-login"] == 2
