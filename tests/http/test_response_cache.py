"""The response cache of ``HTTPCacheMiddleware`` on a real Redis: hits without the handler,
private-data isolation, keys, coalescing, stale-while-revalidate, stale-if-error, tag
invalidation shared with the data cache, and a Redis outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from asgi_server import serve
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from redline._servers import RedisServer
from redline.cache import Cache
from redline.http import CachePolicy, HTTPCacheMiddleware, filling_response_cache, strong_etag
from redline.http._middleware import CacheRouteError

PUBLIC = CachePolicy("public", max_age=60, tags=("fund:{fund_id}", "funds"))


class Backend:
    """What the handlers read, and how often they ran."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.version = 1
        self.fail: str | None = None  # "raise" or "503"
        self.gate: asyncio.Event | None = None
        self.set_cookie = False
        self.body_size = 0
        self.extra_vary: str | None = None


TOKENS = {"Bearer alice-token": "alice", "Bearer bob-token": "bob"}


def user_of(scope: Any) -> str | None:
    """vary_user: the user a request is authenticated as (here: a bearer token table)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return TOKENS.get(value.decode())
    return None


def make_app(backend: Backend, cache: Cache, **options: Any) -> Starlette:
    async def fund(request: Request) -> Response:
        backend.runs.append(request.url.path)
        if backend.gate is not None:
            await backend.gate.wait()
        if backend.fail == "raise":
            raise RuntimeError("database is down")
        if backend.fail == "503":
            return PlainTextResponse("unavailable", status_code=503)
        text = f"fund {request.path_params['fund_id']} v{backend.version}"
        text += f" {request.headers.get('accept-language', '-')} {sorted(request.query_params)}"
        response = PlainTextResponse(text + "x" * backend.body_size)
        if backend.set_cookie:
            response.set_cookie("visited", "1")
        if backend.extra_vary:
            response.headers["Vary"] = backend.extra_vary
        return response

    async def me(request: Request) -> Response:
        backend.runs.append(request.url.path)
        user = user_of(request.scope) or "anonymous"
        return PlainTextResponse(f"private data of {user}")

    async def dashboard(request: Request) -> Response:
        backend.runs.append(request.url.path)
        session = request.cookies.get("session")
        return PlainTextResponse(f"dashboard of {session or 'a visitor'}")

    policies = {
        "/funds/*": CachePolicy(
            "public",
            max_age=options.pop("max_age", 60),
            stale_while_revalidate=options.pop("swr", None),
            stale_if_error=options.pop("sie", None),
            vary=("Accept-Language", "Cookie"),
            tags=("fund:{fund_id}", "funds"),
            validator=options.pop("validator", None),
        ),
        "/me": CachePolicy("private", max_age=60, vary=("Authorization",), vary_user=user_of),
        "/dashboard": CachePolicy("public", max_age=60),
    }
    routes = [
        Route("/funds/{fund_id}", fund),
        Route("/me", me),
        Route("/dashboard", dashboard),
    ]
    middleware = Middleware(HTTPCacheMiddleware, policies=policies, cache=cache, **options)
    return Starlette(routes=routes, middleware=[middleware])


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[Cache]:
    # A generous Redis timeout: the machine is shared and these tests are not about outages.
    async with Cache.from_url(redis_url, namespace=uuid.uuid4().hex, timeout=1.0) as cache:
        yield cache


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- hits, misses, headers ----------------------------------------------------------------


async def test_second_request_is_a_hit_without_running_the_handler(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        miss = await client.get("/funds/7")
        hit = await client.get("/funds/7")
    assert backend.runs == ["/funds/7"]
    assert miss.headers["x-cache"] == "MISS" and hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content
    assert hit.headers["etag"] == miss.headers["etag"] == strong_etag(miss.content)
    assert hit.headers["cache-control"] == miss.headers["cache-control"]
    assert hit.headers["xkey"] == "fund:7 funds"
    assert int(hit.headers["age"]) >= 0 and "age" not in miss.headers


async def test_another_process_hits_the_entry_in_redis(cache: Cache, redis_url: str) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        await client.get("/funds/7")
    # A second cache with its own, empty L1 stands for another worker process.
    namespace = cache._keys.prefix.split(":")[1]
    other = Cache.from_url(redis_url, namespace=namespace, timeout=1.0)
    async with other, client_for(make_app(backend, other)) as client:
        hit = await client.get("/funds/7")
    assert hit.headers["x-cache"] == "HIT" and backend.runs == ["/funds/7"]


async def test_hit_carries_age_from_when_the_response_was_made(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        await client.get("/funds/7")
        await asyncio.sleep(1.1)
        hit = await client.get("/funds/7")
    assert hit.headers["x-cache"] == "HIT"
    assert int(hit.headers["age"]) >= 1


async def test_cached_etag_answers_304_from_the_cache(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        etag = (await client.get("/funds/7")).headers["etag"]
        revalidated = await client.get("/funds/7", headers={"If-None-Match": etag})
    assert revalidated.status_code == 304 and revalidated.content == b""
    assert revalidated.headers["etag"] == etag
    assert revalidated.headers["x-cache"] == "HIT"
    assert backend.runs == ["/funds/7"]


async def test_conditional_miss_is_stored_whole_and_answered_304(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        # The client already holds the body (e.g. from before a deploy) and revalidates.
        etag = strong_etag(b"fund 7 v1 - []")
        first = await client.get("/funds/7", headers={"If-None-Match": etag})
        full = await client.get("/funds/7")
    assert first.status_code == 304
    assert full.status_code == 200 and full.content == b"fund 7 v1 - []"
    assert full.headers["x-cache"] == "HIT" and backend.runs == ["/funds/7"]


async def test_head_is_served_from_the_get_entry_without_a_body(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        get = await client.get("/funds/7")
        head = await client.head("/funds/7")
    assert head.headers["x-cache"] == "HIT" and head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert backend.runs == ["/funds/7"]


async def test_cache_header_name_is_configurable_and_can_be_switched_off(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache, cache_header="CDN-Status")) as client:
        named = await client.get("/funds/1")
    async with client_for(make_app(backend, cache, cache_header=None)) as client:
        off = await client.get("/funds/1")
    assert named.headers["cdn-status"] == "MISS"
    assert "x-cache" not in off.headers and off.status_code == 200


# -- what is never stored -----------------------------------------------------------------


async def test_set_cookie_response_is_never_stored(cache: Cache) -> None:
    backend = Backend()
    backend.set_cookie = True
    async with client_for(make_app(backend, cache)) as client:
        for _ in range(3):
            client.cookies.clear()  # stay anonymous: any cookie would make it a BYPASS
            response = await client.get("/funds/7")
            assert response.headers["x-cache"] == "MISS"
            assert "visited=1" in response.headers["set-cookie"]
    assert len(backend.runs) == 3


async def test_body_over_max_body_is_served_but_not_stored(cache: Cache) -> None:
    backend = Backend()
    backend.body_size = 4096
    async with client_for(make_app(backend, cache, max_body=1024)) as client:
        first = await client.get("/funds/7")
        second = await client.get("/funds/7")
    assert first.content.endswith(b"x" * 4096) and second.content == first.content
    assert second.headers["x-cache"] == "MISS" and len(backend.runs) == 2


async def test_streamed_body_growing_past_max_body_is_delivered_whole(cache: Cache) -> None:
    runs: list[int] = []

    async def stream(request: Request) -> Response:
        runs.append(1)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(int(request.query_params["kb"])):
                yield b"x" * 1024

        return StreamingResponse(chunks(), media_type="text/plain")

    app = Starlette(routes=[Route("/s", stream)])
    policy = CachePolicy("public", max_age=60)
    wrapped = HTTPCacheMiddleware(app, default=policy, cache=cache, max_body=4096)
    async with client_for(wrapped) as client:
        small = [await client.get("/s?kb=2") for _ in range(2)]
        big = [await client.get("/s?kb=16") for _ in range(2)]
        etag = big[0].headers["etag"]
        revalidated = await client.get("/s?kb=16", headers={"If-None-Match": etag})
    assert [r.headers["x-cache"] for r in small] == ["MISS", "HIT"]
    assert all(r.content == b"x" * 16 * 1024 for r in big)
    assert [r.headers["x-cache"] for r in big] == ["MISS", "MISS"]
    # Not stored, yet still answered 304 when the client holds the same body.
    assert revalidated.status_code == 304 and revalidated.headers["x-cache"] == "MISS"
    assert len(runs) == 4


async def test_response_varying_on_an_unkeyed_header_is_not_stored(
    cache: Cache, caplog: Any
) -> None:
    backend = Backend()
    backend.extra_vary = "User-Agent"
    async with client_for(make_app(backend, cache)) as client:
        await client.get("/funds/7")
        again = await client.get("/funds/7")
    assert again.headers["x-cache"] == "MISS" and len(backend.runs) == 2
    assert "varies on user-agent" in caplog.text


@pytest.mark.parametrize(
    "headers",
    [{"Cache-Control": "no-store"}, {"Range": "bytes=0-3"}, {"If-Match": '"x"'}],
)
async def test_requests_the_cache_must_not_answer_bypass_it(
    cache: Cache, headers: dict[str, str]
) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        await client.get("/funds/7")
        bypassed = await client.get("/funds/7", headers=headers)
    assert bypassed.headers["x-cache"] == "BYPASS" and len(backend.runs) == 2


# -- private data ---------------------------------------------------------------------------


async def test_one_users_cached_response_is_never_served_to_another(cache: Cache) -> None:
    backend = Backend()
    alice = {"Authorization": "Bearer alice-token"}
    bob = {"Authorization": "Bearer bob-token"}
    async with client_for(make_app(backend, cache)) as client:
        first = await client.get("/me", headers=alice)
        again = await client.get("/me", headers=alice)
        # Bob, an anonymous visitor and a forged token each try to read Alice's entry.
        as_bob = await client.get("/me", headers=bob)
        anonymous = await client.get("/me")
        forged = await client.get("/me", headers={"Authorization": "Bearer forged"})
        as_bob_again = await client.get("/me", headers=bob)
    assert first.text == again.text == "private data of alice"
    assert again.headers["x-cache"] == "HIT"
    assert as_bob.text == as_bob_again.text == "private data of bob"
    assert as_bob.headers["x-cache"] == "MISS" and as_bob_again.headers["x-cache"] == "HIT"
    assert anonymous.text == "private data of anonymous"
    assert forged.headers["x-cache"] == "BYPASS" and "alice" not in forged.text
    assert again.headers["cache-control"].startswith("private")


async def test_credentialed_request_to_a_shared_route_neither_reads_nor_fills_it(
    cache: Cache,
) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        await client.get("/dashboard")
        with_session = await client.get("/dashboard", headers={"Cookie": "session=alice"})
        with_token = await client.get("/dashboard", headers={"Authorization": "Bearer x"})
        anonymous_again = await client.get("/dashboard")
    assert with_session.headers["x-cache"] == "BYPASS"
    assert with_session.text == "dashboard of alice"
    assert with_token.headers["x-cache"] == "BYPASS"
    assert anonymous_again.text == "dashboard of a visitor"
    assert anonymous_again.headers["x-cache"] == "HIT"
    assert backend.runs.count("/dashboard") == 3


async def test_session_cookie_first_then_anonymous_never_sees_the_session_page(
    cache: Cache,
) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        await client.get("/dashboard", headers={"Cookie": "session=alice"})
        anonymous = await client.get("/dashboard")
    assert anonymous.text == "dashboard of a visitor"
    assert anonymous.headers["x-cache"] == "MISS"


async def test_anonymous_traffic_is_not_fragmented_by_vary_cookie(cache: Cache) -> None:
    backend = Backend()
    app = make_app(backend, cache, session_cookies=("session",))
    async with client_for(app) as client:
        one = await client.get("/funds/7", headers={"Cookie": "_ga=GA1.1"})
        two = await client.get("/funds/7", headers={"Cookie": "_ga=GA1.2; theme=dark"})
        three = await client.get("/funds/7")
        session = await client.get("/funds/7", headers={"Cookie": "_ga=1; session=s1"})
    assert one.headers["vary"] == "Accept-Language, Cookie"
    assert [r.headers["x-cache"] for r in (one, two, three)] == ["MISS", "HIT", "HIT"]
    assert session.headers["x-cache"] == "BYPASS"
    assert session.headers["cache-control"].startswith("private")


async def test_without_session_cookie_names_any_cookie_is_personal(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        await client.get("/funds/7")
        with_cookie = await client.get("/funds/7", headers={"Cookie": "_ga=GA1.1"})
    assert with_cookie.headers["x-cache"] == "BYPASS"


# -- keys -----------------------------------------------------------------------------------


async def test_query_is_normalised_and_tracking_parameters_ignored(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        first = await client.get("/funds/7?b=2&a=1")
        same = await client.get("/funds/7?a=1&utm_source=mail&b=2&empty=&fbclid=x")
        other = await client.get("/funds/7?a=2&b=2")
    assert same.headers["x-cache"] == "HIT" and same.content == first.content
    assert other.headers["x-cache"] == "MISS"
    assert len(backend.runs) == 2


async def test_ignored_query_parameters_are_configurable(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache, ignored_query=("ref",))) as client:
        await client.get("/funds/7?ref=home")
        hit = await client.get("/funds/7?ref=search")
        utm = await client.get("/funds/7?utm_source=x")
    assert hit.headers["x-cache"] == "HIT"
    assert utm.headers["x-cache"] == "MISS"  # no longer ignored once the list is replaced


async def test_vary_headers_are_part_of_the_key(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        english = await client.get("/funds/7", headers={"Accept-Language": "en"})
        german = await client.get("/funds/7", headers={"Accept-Language": "de"})
        english_again = await client.get("/funds/7", headers={"Accept-Language": "en"})
    assert german.headers["x-cache"] == "MISS" and b" de " in german.content
    assert english_again.headers["x-cache"] == "HIT" and english_again.content == english.content


async def test_users_hosts_and_languages_alternating_keep_their_own_entries(
    cache: Cache,
) -> None:
    # Keys are remembered per request shape; alternating shapes must never cross.
    backend = Backend()
    alice = {"Authorization": "Bearer alice-token"}
    bob = {"Authorization": "Bearer bob-token"}
    async with client_for(make_app(backend, cache)) as client:
        for _ in range(3):
            assert (await client.get("/me", headers=alice)).text == "private data of alice"
            assert (await client.get("/me", headers=bob)).text == "private data of bob"
            english = await client.get("/funds/7", headers={"Accept-Language": "en"})
            german = await client.get("/funds/7", headers={"Accept-Language": "de"})
            assert b" en " in english.content and b" de " in german.content
            other_host = await client.get("http://other.test/funds/7?a=1")
            same_host = await client.get("http://test/funds/7?a=1")
            assert other_host.content == same_host.content  # same answer, separate entries
    # Each distinct request ran the handler once: two users, two languages, two hosts.
    assert backend.runs.count("/me") == 2
    assert backend.runs.count("/funds/7") == 4


async def test_remembered_keys_are_bounded_and_skip_long_queries(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redline.http import _response_cache

    monkeypatch.setattr(_response_cache, "_MAX_MEMO_KEYS", 8)
    backend = Backend()
    app = make_app(backend, cache)
    async with client_for(app) as client:
        for n in range(20):
            await client.get(f"/funds/{n}?page={n}")
        long_query = "q=" + "x" * 600
        first = await client.get(f"/funds/1?{long_query}")
        again = await client.get(f"/funds/1?{long_query}")
    memo = _response_cache_of(app)._keys
    assert len(memo) <= 8
    assert all(len(inputs[5]) <= _response_cache._MAX_MEMO_QUERY for inputs in memo)
    # Not remembered is not uncached: the long query's entry is still found.
    assert first.headers["x-cache"] == "MISS" and again.headers["x-cache"] == "HIT"


def _response_cache_of(app: Starlette) -> Any:
    """The ResponseCache inside a Starlette app that has served a request."""
    layer: Any = app.middleware_stack
    while not isinstance(layer, HTTPCacheMiddleware):
        layer = layer.app
    return layer.response_cache


# -- coalescing, stale-while-revalidate, stale-if-error ------------------------------------


async def test_concurrent_misses_run_the_handler_once(cache: Cache) -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    async with client_for(make_app(backend, cache)) as client:
        requests = [asyncio.ensure_future(client.get("/funds/7")) for _ in range(20)]
        await wait_for(lambda: len(backend.runs) >= 1)
        await asyncio.sleep(0.2)  # every request has arrived and is waiting
        backend.gate.set()
        responses = await asyncio.gather(*requests)
    assert backend.runs == ["/funds/7"]
    assert {r.content for r in responses} == {b"fund 7 v1 - []"}
    labels = sorted(r.headers["x-cache"] for r in responses)
    assert labels == ["HIT"] * 19 + ["MISS"]


async def test_waiters_never_get_the_leaders_uncacheable_response(cache: Cache) -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    backend.set_cookie = True
    app = make_app(backend, cache)
    clients = [client_for(app) for _ in range(5)]  # five visitors, no cookies shared
    requests = [asyncio.ensure_future(c.get("/funds/7")) for c in clients]
    await wait_for(lambda: len(backend.runs) >= 1)
    await asyncio.sleep(0.2)
    backend.gate.set()
    responses = await asyncio.gather(*requests)
    for c in clients:
        await c.aclose()
    # The leader's response set a cookie: each waiter ran the handler for its own answer.
    assert len(backend.runs) == 5
    assert {r.headers["x-cache"] for r in responses} == {"MISS"}


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache, max_age=1, swr=30)) as client:
        await client.get("/funds/7")
        backend.version = 2
        await asyncio.sleep(1.2)
        backend.gate = asyncio.Event()  # holds the refresh until every stale hit is answered
        stale = await asyncio.gather(*(client.get("/funds/7") for _ in range(5)))
        await wait_for(lambda: len(backend.runs) == 2)
        backend.gate.set()
        await asyncio.sleep(0.3)
        fresh = await client.get("/funds/7")
    assert {r.headers["x-cache"] for r in stale} == {"STALE"}
    assert {r.content for r in stale} == {b"fund 7 v1 - []"}
    assert all(int(r.headers["age"]) >= 1 for r in stale)
    assert fresh.headers["x-cache"] == "HIT" and fresh.content == b"fund 7 v2 - []"
    assert len(backend.runs) == 2  # one background refresh for five stale hits


async def test_past_the_swr_window_the_entry_is_a_miss(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache, max_age=1, swr=1)) as client:
        await client.get("/funds/7")
        await asyncio.sleep(2.2)
        late = await client.get("/funds/7")
    assert late.headers["x-cache"] == "MISS" and len(backend.runs) == 2


@pytest.mark.parametrize("failure", ["raise", "503"])
async def test_stale_if_error_serves_stale_when_the_handler_fails(
    cache: Cache, failure: str
) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache, max_age=1, sie=30)) as client:
        first = await client.get("/funds/7")
        await asyncio.sleep(1.2)
        backend.fail = failure
        rescued = await client.get("/funds/7")
        backend.fail = None
        recovered = await client.get("/funds/7")
    assert rescued.status_code == 200 and rescued.content == first.content
    assert rescued.headers["x-cache"] == "STALE" and int(rescued.headers["age"]) >= 1
    assert recovered.headers["x-cache"] == "MISS" and len(backend.runs) == 3


async def test_without_stale_if_error_the_failure_reaches_the_client(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache, max_age=1)) as client:
        await client.get("/funds/7")
        await asyncio.sleep(1.2)
        backend.fail = "503"
        failed = await client.get("/funds/7")
    assert failed.status_code == 503


# -- invalidation -------------------------------------------------------------------------


async def test_invalidate_tags_drops_data_and_responses_together(cache: Cache) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        await cache.set("fund-row:7", {"name": "Alpha"}, tags=["fund:7"])
        await client.get("/funds/7")
        await client.get("/funds/8")
        await cache.invalidate_tags("fund:7")
        seven = await client.get("/funds/7")
        eight = await client.get("/funds/8")
        assert await cache.get("fund-row:7") is None
        await cache.invalidate_tags("funds")
        eight_again = await client.get("/funds/8")
    assert seven.headers["x-cache"] == "MISS"
    assert eight.headers["x-cache"] == "HIT"
    assert eight_again.headers["x-cache"] == "MISS"


async def test_validator_newer_than_the_entry_refills_it(cache: Cache) -> None:
    backend = Backend()
    app = make_app(backend, cache, validator=lambda request: backend.version)
    async with client_for(app) as client:
        await client.get("/funds/7")
        hit = await client.get("/funds/7")
        backend.version = 2
        changed = await client.get("/funds/7")
    assert hit.headers["x-cache"] == "HIT"
    assert changed.headers["x-cache"] == "MISS" and changed.content == b"fund 7 v2 - []"


# -- outages and configuration --------------------------------------------------------------


async def test_redis_down_the_middleware_keeps_serving(own_redis: RedisServer) -> None:
    backend = Backend()
    cache = Cache.from_url(own_redis.url, namespace="outage", timeout=0.2)
    async with cache, client_for(make_app(backend, cache)) as client:
        await client.get("/funds/7")
        own_redis.kill()
        started = time.monotonic()
        during = [await client.get(f"/funds/{n}") for n in (7, 10, 11, 12, 7)]
        elapsed = time.monotonic() - started
        own_redis.restart()
        await asyncio.sleep(1.5)  # the breaker's window: L2 is tried again after it
        await client.get("/funds/20")
        after = await client.get("/funds/20")
    assert all(r.status_code == 200 for r in during)
    assert [r.text.split()[1] for r in during] == ["7", "10", "11", "12", "7"]
    assert elapsed < 10  # bounded by the breaker, not by a hang
    assert after.headers["x-cache"] == "HIT"


async def test_entries_are_msgpack_in_redis(cache: Cache, redis_url: str) -> None:
    backend = Backend()
    async with client_for(make_app(backend, cache)) as client:
        await client.get("/funds/7")
    with redis.Redis.from_url(redis_url) as raw:
        keys = [k for k in raw.keys("*") if b":k:http:GET:/funds/{fund_id}:" in k]
        assert len(keys) == 1
        blob = raw.get(keys[0])
    assert blob is not None and b"fund 7 v1" in blob  # short bodies are stored uncompressed
    assert b"\x80\x04\x95" not in blob and b"\x80\x05\x95" not in blob  # no pickle frames


async def test_pickle_codec_cache_is_refused() -> None:
    async with Cache.memory(codec="pickle") as cache:
        with pytest.raises(CacheRouteError, match="'pickle' codec"):
            HTTPCacheMiddleware(Starlette(), cache=cache)


async def test_corrupt_entry_is_a_miss_not_a_crash(cache: Cache, redis_url: str) -> None:
    backend = Backend()
    app = make_app(backend, cache)
    async with client_for(app) as client:
        await client.get("/funds/7")
        prefix = cache._keys.entries.encode()
        with redis.Redis.from_url(redis_url) as raw:
            keys = [k[len(prefix) :].decode() for k in raw.keys(b"*") if k.startswith(prefix)]
        assert len(keys) == 1
        await cache.set(keys[0], {"v": 1, "status": "200"})  # e.g. written by a buggy deploy
        again = await client.get("/funds/7")
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"
    assert len(backend.runs) == 2


# -- a real server ------------------------------------------------------------------------


def test_under_uvicorn_users_stay_apart_and_hits_skip_the_handler(redis_url: str) -> None:
    backend = Backend()
    # Connections are opened lazily, in the server's event loop.
    cache = Cache.from_url(redis_url, namespace=uuid.uuid4().hex, timeout=1.0)
    with serve(make_app(backend, cache)) as client:
        alice = client.get("/me", headers={"Authorization": "Bearer alice-token"})
        bob = client.get("/me", headers={"Authorization": "Bearer bob-token"})
        first = client.get("/funds/3")
        second = client.get("/funds/3")
        alice_again = client.get("/me", headers={"Authorization": "Bearer alice-token"})
    assert alice.text == alice_again.text == "private data of alice"
    assert bob.text == "private data of bob"
    assert alice_again.headers["x-cache"] == "HIT"
    assert second.headers["x-cache"] == "HIT" and second.content == first.content
    assert backend.runs == ["/me", "/me", "/funds/3"]


async def test_a_handler_knows_when_its_answer_fills_the_response_cache(cache: Cache) -> None:
    seen: list[tuple[str, bool]] = []

    async def report(request: Request) -> Response:
        seen.append((request.url.path, filling_response_cache()))
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/funds/{fund_id}", report), Route("/plain", report)],
        middleware=[
            Middleware(
                HTTPCacheMiddleware,
                policies={"/funds/*": CachePolicy("public", max_age=60, tags=("fund:{fund_id}",))},
                cache=cache,
            )
        ],
    )
    async with client_for(app) as client:
        assert (await client.get("/funds/1")).headers["x-cache"] == "MISS"
        assert (await client.get("/funds/1")).headers["x-cache"] == "HIT"  # no handler run
        credentialed = await client.get("/funds/2", headers={"Authorization": "Bearer t"})
        assert credentialed.headers["x-cache"] == "BYPASS"
        await client.get("/plain")
    # Only the miss was filling the cache; a bypass or a route without a policy is not.
    assert seen == [("/funds/1", True), ("/funds/2", False), ("/plain", False)]
    assert filling_response_cache() is False
