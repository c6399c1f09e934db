"""``MetricsMiddleware``: real Starlette and FastAPI apps behind a real uvicorn on loopback,
driven with httpx (and a raw socket where a client must vanish mid-response). Every test runs
on both request paths: the C one (``_request.c``) and its pure-Python twin."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from asgi_server import serve_url
from fastapi import APIRouter, FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, Router, WebSocketRoute
from websockets.sync.client import connect as websocket_connect

from redline import monitor
from redline.monitor import MetricsMiddleware, _middleware


def serve(app: Any) -> contextlib.AbstractContextManager[str]:
    """``app`` under uvicorn in a thread, on a free loopback port; yields its base URL."""
    return serve_url(app, lifespan="auto", ws="websockets-sansio")


def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    # The server records a request just after handing its last byte over, so a client can
    # read the response a moment before it is counted.
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.005)


def requests(registry: monitor.Registry) -> dict[tuple[str, str, str], float]:
    return dict(registry.get("http_requests_total").collect().samples)


def durations(registry: monitor.Registry) -> dict[tuple[str, str], monitor.HistogramValue]:
    return dict(registry.get("http_request_duration_seconds").collect().samples)


def sizes(registry: monitor.Registry) -> dict[tuple[str, str], monitor.HistogramValue]:
    return dict(registry.get("http_response_size_bytes").collect().samples)


def in_progress(registry: monitor.Registry) -> dict[tuple[str, ...], float]:
    return dict(registry.get("http_requests_in_progress").collect().samples)


def settle(registry: monitor.Registry, total: int) -> dict[tuple[str, str, str], float]:
    """The request counts once ``total`` requests are counted and none is in progress."""
    eventually(
        lambda: (
            sum(requests(registry).values()) >= total and not any(in_progress(registry).values())
        )
    )
    return requests(registry)


def text(body: str = "ok", status: int = 200) -> Callable[..., Any]:
    async def endpoint(request):
        return PlainTextResponse(body, status_code=status)

    return endpoint


@pytest.fixture
def registry() -> monitor.Registry:
    return monitor.Registry()


@pytest.fixture(autouse=True, params=["c", "python"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The request path the middlewares a test makes use: C, or the Python twin."""
    if request.param == "c":
        if _middleware._Compiled is None:
            pytest.skip("redline.monitor._request is not compiled (no C compiler at install)")
        monkeypatch.setattr(_middleware, "_Requests", _middleware._Compiled)
    else:
        monkeypatch.setattr(_middleware, "_Requests", None)
    return request.param


def test_each_middleware_uses_the_request_path_chosen_when_it_was_made(implementation):
    middleware = MetricsMiddleware(text(), registry=None)

    assert middleware.compiled is (implementation == "c")


# -- route templates ------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_method_and_status(registry):
    async def user(request):
        return JSONResponse({"id": request.path_params["user_id"]})

    app = Starlette(
        routes=[
            Route("/", text("home")),
            Route("/users/{user_id:int}", user, methods=["GET", "DELETE"]),
            Route("/users/{user_id:int}/posts/{slug}", text("post")),
            Route("/teapot", text("short and stout", 418), methods=["POST"]),
        ],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").status_code == 200
        for user_id in range(5):
            assert client.get(f"/users/{user_id}").status_code == 200
        assert client.delete("/users/9").status_code == 200
        assert client.get("/users/3/posts/hello-world").status_code == 200
        assert client.get("/users/4/posts/another").status_code == 200
        assert client.post("/teapot").status_code == 418
        assert client.get("/teapot").status_code == 405
        counts = settle(registry, 11)

    assert counts == {
        ("/", "GET", "200"): 1,
        ("/users/{user_id}", "GET", "200"): 5,
        ("/users/{user_id}", "DELETE", "200"): 1,
        ("/users/{user_id}/posts/{slug}", "GET", "200"): 2,
        ("/teapot", "POST", "418"): 1,
        ("/teapot", "GET", "405"): 1,
    }


def test_mounted_routes_carry_every_mount_prefix_as_a_template(registry):
    team = Router(routes=[Route("/members/{member_id:int}", text("member"))])
    shop = Starlette(routes=[Route("/items/{item_id}", text("item"))])
    app = MetricsMiddleware(
        Starlette(
            routes=[
                Mount("/orgs/{org}", routes=[Mount("/teams/{team}", app=team)]),
                # One sub-application under two prefixes: its routes are the same objects.
                Mount("/eu", app=shop),
                Mount("/us", app=shop),
                Mount("/metrics", app=monitor.MetricsApp(registry)),
                Mount("/raw", app=monitor.MetricsApp(registry)),
            ]
        ),
        registry=registry,
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for org in ("acme", "globex", "initech"):
            assert client.get(f"/orgs/{org}/teams/red/members/7").status_code == 200
        assert client.get("/eu/items/1").status_code == 200
        assert client.get("/us/items/2").status_code == 200
        assert client.get("/us/items/3").status_code == 200
        assert client.get("/us/nothing-here").status_code == 404
        assert client.get("/orgs/acme/teams/red/nobody").status_code == 404
        assert client.get("/raw/anything").status_code == 200
        assert client.get("/metrics/").status_code == 200  # excluded by default
        counts = settle(registry, 9)

    assert counts == {
        ("/orgs/{org}/teams/{team}/members/{member_id}", "GET", "200"): 3,
        ("/eu/items/{item_id}", "GET", "200"): 1,
        ("/us/items/{item_id}", "GET", "200"): 2,
        ("<unmatched>", "GET", "404"): 2,
        ("/raw/{path}", "GET", "200"): 1,
    }


def test_fastapi_routes_get_their_full_template_through_included_routers_and_mounts(registry):
    app = FastAPI()
    items = APIRouter()

    @items.get("/items/{item_id}")
    def get_item(item_id: int) -> dict[str, int]:
        if item_id == 404:
            raise HTTPException(404, "no such item")
        return {"id": item_id}

    reviews = APIRouter(prefix="/reviews")

    @reviews.post("/{review_id}")
    def post_review(review_id: str) -> dict[str, str]:
        return {"id": review_id}

    items.include_router(reviews, prefix="/items/{item_id}")
    app.include_router(items, prefix="/v1")
    app.include_router(items, prefix="/v2")  # the same routes under a second prefix

    tenant = FastAPI()

    @tenant.get("/settings/{key}")
    def setting(key: str) -> str:
        return key

    app.mount("/tenants/{tenant_id}", tenant)
    app.add_route("/health", text("up"))
    app.mount("/legacy", Starlette(routes=[Route("/pages/{page}", text("page"))]))
    app.add_middleware(MetricsMiddleware, registry=registry)

    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/v1/items/1").status_code == 200
        assert client.get("/v1/items/2").status_code == 200
        assert client.get("/v2/items/3").status_code == 200
        assert client.get("/v1/items/404").status_code == 404
        assert client.get("/v1/items/not-a-number").status_code == 422
        assert client.post("/v2/items/5/reviews/r1").status_code == 200
        assert client.get("/tenants/acme/settings/theme").status_code == 200
        assert client.get("/tenants/globex/settings/lang").status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/legacy/pages/about").status_code == 200
        assert client.get("/legacy/missing").status_code == 404
        assert client.get("/nowhere").status_code == 404
        counts = settle(registry, 12)

    assert counts == {
        ("/v1/items/{item_id}", "GET", "200"): 2,
        ("/v2/items/{item_id}", "GET", "200"): 1,
        ("/v1/items/{item_id}", "GET", "404"): 1,
        ("/v1/items/{item_id}", "GET", "422"): 1,
        ("/v2/items/{item_id}/reviews/{review_id}", "POST", "200"): 1,
        ("/tenants/{tenant_id}/settings/{key}", "GET", "200"): 2,
        ("/health", "GET", "200"): 1,
        ("/legacy/pages/{page}", "GET", "200"): 1,
        ("<unmatched>", "GET", "404"): 2,
    }


def test_routes_added_after_the_first_request_are_found(registry):
    app = Starlette(routes=[Route("/first", text())])
    wrapped = MetricsMiddleware(app, registry=registry)
    with serve(wrapped) as url, httpx.Client(base_url=url) as client:
        assert client.get("/first").status_code == 200
        app.router.routes.append(Mount("/late/{kind}", routes=[Route("/{id}", text())]))
        assert client.get("/late/book/1").status_code == 200
        counts = settle(registry, 2)

    assert counts == {("/first", "GET", "200"): 1, ("/late/{kind}/{id}", "GET", "200"): 1}


def test_random_unmatched_paths_add_one_series_not_one_per_path(registry):
    app = MetricsMiddleware(Starlette(routes=[Route("/", text())]), registry=registry)
    rng = random.Random(4)
    paths = [
        "/" + "/".join(f"{rng.getrandbits(40):x}" for _ in range(rng.randint(1, 4)))
        for _ in range(300)
    ]
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for path in paths:
            assert client.get(path, follow_redirects=False).status_code in (404, 307)
        client.post("/wp-login.php")
        counts = settle(registry, 301)

    routes = {route for route, _, _ in counts}
    assert routes == {"<unmatched>"}
    assert sum(counts.values()) == 301
    assert len(durations(registry)) == 2  # GET and POST
    exposition = monitor.generate_latest(registry).decode()
    assert not any(path in exposition for path in paths)


def test_plain_asgi_apps_name_routes_with_route_of(registry):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    def route_of(scope):
        return "/hello" if scope["path"] == "/hello" else None

    with (
        serve(MetricsMiddleware(app, registry=registry, route_of=route_of)) as url,
        httpx.Client(base_url=url) as client,
    ):
        client.get("/hello")
        client.get("/hello")
        client.get("/elsewhere/123")
        counts = settle(registry, 3)

    assert counts == {("/hello", "GET", "200"): 2, ("<unmatched>", "GET", "200"): 1}


async def test_a_route_of_that_raises_counts_unmatched_and_the_response_still_ends(
    registry, caplog
):
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    def route_of(scope):
        raise KeyError("no such thing")

    middleware = MetricsMiddleware(PlainTextResponse("ok"), registry=registry, route_of=route_of)
    await middleware({"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send)

    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert requests(registry) == {("<unmatched>", "GET", "200"): 1}
    assert "route_of(scope) raised" in caplog.text


# -- status, timing, sizes ------------------------------------------------------------------


def test_an_exception_in_the_app_counts_as_500_and_still_reaches_the_server(registry):
    async def boom(request):
        raise RuntimeError("the endpoint failed")

    app = Starlette(
        routes=[Route("/boom/{n}", boom)],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve(app) as url:
        for n in range(3):
            # uvicorn closes a connection whose app raised, so each request gets its own.
            assert httpx.get(f"{url}/boom/{n}").status_code == 500
        counts = settle(registry, 3)

    assert counts == {("/boom/{n}", "GET", "500"): 3}
    assert durations(registry)[("/boom/{n}", "GET")].count == 3


async def test_an_exception_before_any_response_is_counted_as_500_and_re_raised(registry):
    async def app(scope, receive, send):
        raise LookupError("no response at all")

    middleware = MetricsMiddleware(app, registry=registry, route_of=lambda scope: "/x")
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        raise AssertionError("nothing may be sent")

    with pytest.raises(LookupError):
        await middleware(scope, receive, send)

    assert requests(registry) == {("/x", "GET", "500"): 1}
    assert in_progress(registry) == {("GET",): 0}


def test_histogram_counts_every_request_and_measures_its_duration(registry):
    async def slow(request):
        await asyncio.sleep(0.05)
        return PlainTextResponse("slow")

    app = Starlette(
        routes=[Route("/slow", slow), Route("/fast", text())],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for _ in range(10):
            client.get("/slow")
        for _ in range(40):
            client.get("/fast")
        settle(registry, 50)

    slow_hist, fast_hist = (
        durations(registry)[("/slow", "GET")],
        durations(registry)[("/fast", "GET")],
    )
    assert slow_hist.count == 10 and fast_hist.count == 40
    assert 0.05 <= slow_hist.quantile(0.5) < 0.5
    # Not the maximum: one request of 40 may meet a full GC pass or a busy CPU (seen at 0.1 s
    # after the batch tests' thousands of requests).
    assert fast_hist.quantile(0.9) < 0.05
    assert 0.5 <= slow_hist.sum < 5
    exposition = monitor.generate_latest(registry).decode()
    assert 'http_request_duration_seconds_count{route="/slow",method="GET"} 10' in exposition
    assert 'http_request_duration_seconds_quantiles{route="/fast",method="GET",quantile=' in (
        exposition
    )


def test_in_progress_counts_running_requests_and_returns_to_zero(registry):
    release = threading.Event()

    async def wait(request):
        await asyncio.to_thread(release.wait, 10)
        return PlainTextResponse("done")

    app = Starlette(
        routes=[Route("/wait", wait, methods=["GET", "POST"])],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve(app) as url:

        def call(method: str) -> int:
            with httpx.Client(base_url=url, timeout=10) as client:
                return client.request(method, "/wait").status_code

        threads = [
            threading.Thread(target=call, args=(method,)) for method in ["GET"] * 4 + ["POST"] * 2
        ]
        for thread in threads:
            thread.start()
        try:
            eventually(lambda: in_progress(registry) == {("GET",): 4, ("POST",): 2})
        finally:
            release.set()
            for thread in threads:
                thread.join(10)
        counts = settle(registry, 6)

    assert in_progress(registry) == {("GET",): 0, ("POST",): 0}
    assert counts == {("/wait", "GET", "200"): 4, ("/wait", "POST", "200"): 2}


def test_a_streaming_response_is_timed_to_its_last_chunk_and_its_bytes_counted(registry):
    async def chunks():
        for i in range(5):
            await asyncio.sleep(0.02)
            yield f"chunk {i}\n".encode()

    async def stream(request):
        return StreamingResponse(chunks())

    app = Starlette(
        routes=[Route("/stream", stream)],
        middleware=[Middleware(MetricsMiddleware, registry=registry, response_size=True)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        body = client.get("/stream").content
        settle(registry, 1)

    assert body == b"".join(f"chunk {i}\n".encode() for i in range(5))
    assert 0.1 <= durations(registry)[("/stream", "GET")].sum < 1.0
    assert sizes(registry)[("/stream", "GET")].sum == len(body)
    assert requests(registry) == {("/stream", "GET", "200"): 1}


def test_background_tasks_do_not_count_in_the_duration(registry):
    done = threading.Event()

    async def later():
        await asyncio.sleep(1.5)
        done.set()

    async def endpoint(request):
        return PlainTextResponse("now", background=BackgroundTask(later))

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text == "now"
        settle(registry, 1)  # in progress until the background task is done, too
        assert done.is_set()

    # Counting the background task would make it at least 1.5 s; a busy machine may make the
    # request itself slow, but not that slow.
    assert durations(registry)[("/", "GET")].sum < 1.0


def test_a_client_that_disconnects_mid_stream_counts_as_499(registry):
    async def forever():
        while True:
            yield b"x" * 1024
            await asyncio.sleep(0.01)

    async def stream(request):
        return StreamingResponse(forever())

    app = Starlette(
        routes=[Route("/forever", stream)],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as client:
            client.sendall(b"GET /forever HTTP/1.1\r\nHost: test\r\n\r\n")
            assert client.recv(1024).startswith(b"HTTP/1.1 200")
        counts = settle(registry, 1)

    assert counts == {("/forever", "GET", "499"): 1}
    assert in_progress(registry) == {("GET",): 0}


def test_methods_outside_the_standard_nine_count_as_other(registry):
    app = Starlette(
        routes=[Route("/dav", text(), methods=["GET", "PROPFIND"])],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.request("PROPFIND", "/dav").status_code == 200
        assert client.request("PURGE", "/dav").status_code == 405
        assert client.request("OPTIONS", "/dav").status_code == 405
        counts = settle(registry, 3)

    assert counts == {
        ("/dav", "other", "200"): 1,
        ("/dav", "other", "405"): 1,
        ("/dav", "OPTIONS", "405"): 1,
    }


# -- what passes through --------------------------------------------------------------------


def test_websockets_lifespan_and_excluded_paths_pass_through_untouched(registry):
    started = []

    async def echo(websocket):
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        started.append(True)
        yield

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", echo),
            Route("/healthz", text()),
            Route("/healthz/deep", text()),
            Route("/work", text()),
            Mount("/metrics", app=monitor.MetricsApp(registry)),
        ],
        lifespan=lifespan,
        middleware=[Middleware(MetricsMiddleware, registry=registry, exclude=["/healthz/"])],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        with websocket_connect(url.replace("http", "ws") + "/ws") as ws:
            ws.send("ping")
            assert ws.recv() == "ping"
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz/deep").status_code == 200
        assert client.get("/metrics/").status_code == 200  # counted: only /healthz excluded
        assert client.get("/work").status_code == 200
        counts = settle(registry, 2)

    assert started == [True]
    assert counts == {("/metrics/{path}", "GET", "200"): 1, ("/work", "GET", "200"): 1}


def test_the_default_exclusion_leaves_the_metrics_endpoint_uncounted(registry):
    app = Starlette(
        routes=[Route("/", text()), Mount("/metrics", app=monitor.MetricsApp(registry))],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        client.get("/")
        settle(registry, 1)
        exposition = client.get("/metrics/").text

    assert 'http_requests_total{route="/",method="GET",status="200"} 1.0' in exposition
    assert requests(registry) == {("/", "GET", "200"): 1}


# -- setup ----------------------------------------------------------------------------------


def test_middlewares_on_one_registry_share_its_metrics(registry):
    first = MetricsMiddleware(text(), registry=registry)
    second = MetricsMiddleware(text(), registry=registry)

    assert first.requests is second.requests and first.duration is second.duration
    with pytest.raises(monitor.MetricError, match="buckets"):
        MetricsMiddleware(text(), registry=registry, buckets=(0.1, 1.0))


async def test_metrics_made_beforehand_are_recorded_into_at_once(registry):
    requests = monitor.Counter(
        "http_requests_total", "Requests.", ("route", "method", "status"), registry=registry
    )
    monitor.Histogram(
        "http_request_duration_seconds", "Latency.", ("route", "method"), registry=registry
    )
    app = PlainTextResponse("ok")  # a response is an ASGI app
    middleware = MetricsMiddleware(app, registry=registry, route_of=lambda scope: "/x")
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    await middleware(scope, receive, send)

    assert middleware.requests is requests
    assert requests.labels("/x", "GET", 200).value == 1


async def test_requests_of_a_discarded_middleware_still_count(registry):
    middleware = MetricsMiddleware(PlainTextResponse("ok"), registry=registry)

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    for _ in range(3):
        await middleware(
            {"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send
        )
    del middleware
    gc.collect()

    assert requests(registry) == {("<unmatched>", "GET", "200"): 3}


def test_the_response_size_histogram_is_off_by_default(registry):
    middleware = MetricsMiddleware(text(), registry=registry)

    assert middleware.response_size is None
    assert registry.get("http_response_size_bytes") is None


def test_exclude_must_be_a_sequence_of_paths(registry):
    with pytest.raises(monitor.MetricError, match=r"write \('/metrics',\)"):
        MetricsMiddleware(text(), registry=registry, exclude="/metrics")
