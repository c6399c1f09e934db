"""``MetricsMiddleware``'s batched recording: pending requests kept per series and added in
bulk, exact across batches, threads, statuses and methods; the cached exclusion of paths
under a root path; its one wrapper serving as both send and receive. On both request paths,
C and Python (the ``implementation`` fixture)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from asgi_server import serve_url
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from test_middleware import (
    durations,
    eventually,
    implementation,  # noqa: F401  (autouse: C and Python paths)
    requests,
    sizes,
)

from redline import monitor
from redline.monitor import MetricsMiddleware
from redline.monitor._middleware import BATCH


def counted(registry: monitor.Registry, total: int) -> dict[tuple[str, str, str], float]:
    eventually(lambda: sum(requests(registry).values()) >= total, timeout=10.0)
    return requests(registry)


async def status_of(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        "x" * int(request.query_params.get("n", "1")),
        status_code=int(request.query_params.get("status", "200")),
    )


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(await request.body())


@pytest.fixture
def registry() -> monitor.Registry:
    return monitor.Registry()


def test_requests_beyond_several_batches_with_mixed_statuses_count_exactly(registry):
    app = Starlette(
        routes=[Route("/s", status_of, methods=["GET", "POST"])],
        middleware=[Middleware(MetricsMiddleware, registry=registry, response_size=True)],
    )
    statuses = [200, 404, 200, 503, 201]
    total = 2 * BATCH + 300
    with serve_url(app) as url, httpx.Client(base_url=url) as client:
        for i in range(total):
            status = statuses[i % len(statuses)]
            method = client.post if i % 7 == 0 else client.get
            assert method(f"/s?status={status}&n={i % 3 + 1}").status_code == status
        counts = counted(registry, total)

    expected: dict[tuple[str, str, str], float] = {}
    for i in range(total):
        key = ("/s", "POST" if i % 7 == 0 else "GET", str(statuses[i % len(statuses)]))
        expected[key] = expected.get(key, 0) + 1
    assert counts == expected
    timed = durations(registry)
    assert timed[("/s", "GET")].count + timed[("/s", "POST")].count == total
    assert all(0 < value.sum < value.count for value in timed.values())  # under 1 s each
    body_bytes = sum(i % 3 + 1 for i in range(total))
    assert sizes(registry)[("/s", "GET")].sum + sizes(registry)[("/s", "POST")].sum == body_bytes


def test_two_servers_in_two_threads_on_one_middleware_count_every_request(registry):
    # Each uvicorn runs its own event loop in its own thread: both append to the same
    # pending lists while either may drain them.
    app = Starlette(
        routes=[Route("/s", status_of)],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    per_client = BATCH + 500
    errors: list[BaseException] = []

    def hammer(url: str, status: int) -> None:
        try:
            with httpx.Client(base_url=url) as client:
                for _ in range(per_client):
                    assert client.get(f"/s?status={status}").status_code == status
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    with serve_url(app) as first, serve_url(app) as second:
        threads = [
            threading.Thread(target=hammer, args=(first, 200)),
            threading.Thread(target=hammer, args=(second, 404)),
            threading.Thread(target=hammer, args=(first, 404)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        counts = counted(registry, 3 * per_client)

    assert counts == {("/s", "GET", "200"): per_client, ("/s", "GET", "404"): 2 * per_client}
    assert durations(registry)[("/s", "GET")].count == 3 * per_client


def test_excluded_paths_stay_excluded_below_a_root_path(registry):
    app = Starlette(
        routes=[
            Route("/metrics", status_of),
            Route("/items/metrics", status_of),
            Route("/metricsx", status_of),
        ],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    # uvicorn puts the root path in front of the path it was sent: "/metrics" arrives as
    # "/api/metrics", which is "/metrics" once the root path is taken off, and excluded;
    # paths that merely contain an excluded path are counted, however often they come.
    with serve_url(app, root_path="/api") as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert client.get("/items/metrics").status_code == 200
            assert client.get("/metrics").status_code == 200
            assert client.get("/metricsx").status_code == 200
        counted(registry, 6)
        time.sleep(0.1)  # room for an excluded request to be (wrongly) counted
        counts = requests(registry)

    assert counts == {("/items/metrics", "GET", "200"): 3, ("/metricsx", "GET", "200"): 3}


async def test_a_path_seen_as_not_excluded_is_excluded_under_a_root_that_makes_it_so(registry):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = MetricsMiddleware(app, registry=registry, route_of=lambda scope: scope["path"])

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    for root_path, path in [("", "/a/metrics/x"), ("/a", "/a/metrics/x"), ("", "/a/b")] * 2:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": root_path}
        await middleware(scope, receive, send)

    assert requests(registry) == {("/a/metrics/x", "GET", "200"): 2, ("/a/b", "GET", "200"): 2}


def test_a_request_body_is_read_through_the_wrapper_and_counted(registry):
    app = Starlette(
        routes=[Route("/echo", echo, methods=["POST"])],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    body = b"0123456789" * 50_000  # several receive() calls
    with serve_url(app) as url, httpx.Client(base_url=url) as client:
        response = client.post("/echo", content=body)
        counts = counted(registry, 1)

    assert response.status_code == 200 and response.content == body
    assert counts == {("/echo", "POST", "200"): 1}


async def call(app: Any, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """Sends ``messages`` through ``app`` as an ASGI app would: no server here speaks
    pathsend or trailers. Returns what reached the server's send, and the time taken."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/f", "headers": [], "root_path": ""}
    started = time.perf_counter()
    await app(scope, receive, send)
    return sent, time.perf_counter() - started


@pytest.mark.parametrize(
    ("tail", "more"),
    [
        ([{"type": "http.response.pathsend", "path": "/etc/hostname"}], []),
        (
            [{"type": "http.response.body", "body": b"abc"}],
            [
                {"type": "http.response.trailers", "headers": [], "more_trailers": True},
                {"type": "http.response.trailers", "headers": []},
            ],
        ),
    ],
    ids=["pathsend", "trailers"],
)
async def test_pathsend_and_trailers_end_the_response_they_close(registry, tail, more):
    trailers = bool(more)
    messages = [{"type": "http.response.start", "status": 206, "trailers": trailers}]
    messages += tail + more

    async def app(scope, receive, send):
        for message in messages:
            await send(message)

    middleware = MetricsMiddleware(
        app, registry=registry, route_of=lambda scope: "/f", response_size=True
    )
    sent, _ = await call(middleware, messages)

    assert sent == messages
    assert requests(registry) == {("/f", "GET", "206"): 1}
    assert durations(registry)[("/f", "GET")].count == 1
    assert sizes(registry)[("/f", "GET")].sum == (3 if trailers else 0)


async def test_a_wrapper_called_as_receive_returns_the_servers_messages(registry):
    seen: list[dict[str, Any]] = []

    async def app(scope, receive, send):
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = MetricsMiddleware(app, registry=registry, route_of=lambda scope: "/f")
    sent, _ = await call(middleware, [])

    assert seen == [{"type": "http.request", "body": b""}]
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert requests(registry) == {("/f", "GET", "200"): 1}


# -- Pending: a series' requests between drains, in C or in its Python twin ----------------


def pending_types() -> list[Any]:
    from redline.monitor import _middleware

    types: list[Any] = [_middleware._PendingLists]
    if _middleware._CompiledPending is not None:
        types.append(_middleware._CompiledPending)
    return types


def doubles(raw: Any) -> list[float]:
    from redline.monitor._middleware import _as_doubles

    return list(_as_doubles(raw))


@pytest.mark.parametrize("kind", pending_types(), ids=lambda t: t.__name__)
def test_pending_hands_over_everything_once_and_keeps_nothing(kind):
    pending = kind(sizes=True, capacity=4)  # grown past its capacity below
    big = 10**30  # any int a status may be is kept as it came
    rows = [(200, 0.25, 10), (404, 0.5, 0), (200, 0.75, 7), (big, 1.0, 3), (200, 1.5, 2**40)]
    for row in rows * 3:
        pending.add(*row)
    assert len(pending) == 15

    tally, durations_, sizes_ = pending.take()

    assert tally == {200: 9, 404: 3, big: 3}
    assert doubles(durations_) == [seconds for _, seconds, _ in rows * 3]
    assert doubles(sizes_) == [float(size) for _, _, size in rows * 3]
    assert len(pending) == 0
    tally, durations_, sizes_ = pending.take()  # nothing left to hand over
    assert (tally, doubles(durations_), doubles(sizes_)) == ({}, [], [])
    pending.add(500, 0.1, 1)
    pending.clear()
    assert len(pending) == 0


@pytest.mark.parametrize("kind", pending_types(), ids=lambda t: t.__name__)
def test_pending_without_sizes_hands_over_none_for_them(kind):
    pending = kind(sizes=False, capacity=1)
    pending.add(200, 0.125, 99)
    tally, durations_, sizes_ = pending.take()
    assert (tally, doubles(durations_), sizes_) == ({200: 1}, [0.125], None)


def test_the_c_pending_refuses_a_status_that_is_not_an_int_and_holds_no_reference_after():
    import sys

    from redline.monitor import _middleware

    if _middleware._CompiledPending is None:
        pytest.skip("redline.monitor._request is not compiled")
    pending = _middleware._CompiledPending(sizes=False, capacity=2)
    with pytest.raises(TypeError, match="status must be an int, not str"):
        pending.add("200", 0.1, 0)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        pending.add(200, 0.1)
    with pytest.raises(ValueError, match="capacity must be 1"):
        _middleware._CompiledPending(capacity=0)
    status = 10**20 + 7  # a fresh int object: its reference count shows what Pending holds
    before = sys.getrefcount(status)
    for _ in range(100):
        pending.add(status, 0.1, 0)
    assert sys.getrefcount(status) == before + 100
    pending.take()
    assert sys.getrefcount(status) == before
    pending.add(status, 0.1, 0)
    del pending  # deallocated with a request pending: the reference goes too
    assert sys.getrefcount(status) == before


def test_each_request_path_keeps_its_series_in_its_own_pending(
    registry,
    implementation,  # noqa: F811  (the autouse fixture's value: which path)
):
    from redline.monitor import _middleware

    middleware = served(registry, 2)
    kinds = {type(p) for p in middleware._finished.series.values()}
    expected = _middleware._CompiledPending if implementation == "c" else _middleware._PendingLists
    assert kinds == {expected}
    assert counted(registry, 2) == {("/s", "GET", "200"): 2}


def served(registry: monitor.Registry, n: int) -> MetricsMiddleware:
    """The MetricsMiddleware of a Starlette app served by uvicorn, after n GETs of /s."""
    app = Starlette(
        routes=[Route("/s", status_of)],
        middleware=[Middleware(MetricsMiddleware, registry=registry)],
    )
    with serve_url(app) as url, httpx.Client(base_url=url) as client:
        for _ in range(n):
            assert client.get("/s").status_code == 200
    layer = app.middleware_stack
    while not isinstance(layer, MetricsMiddleware):
        layer = layer.app  # an AttributeError if it is missing: the test fails
    return layer


def test_the_c_routes_table_answers_as_the_dict_it_replaces():
    from redline.monitor import _middleware

    if _middleware._CompiledRoutes is None:
        pytest.skip("redline.monitor._request is not compiled")
    routes, twin = _middleware._CompiledRoutes(), {}
    keep = [object() for _ in range(3000)]  # alive: their ids are not reused meanwhile
    for i, thing in enumerate(keep):  # grown from 8 slots many times over
        routes[id(thing)] = twin[id(thing)] = f"series {i}"
    routes[id(keep[0])] = twin[id(keep[0])] = "replaced"
    for thing in keep[::7]:
        del routes[id(thing)], twin[id(thing)]
    assert len(routes) == len(twin)
    for thing in keep:
        assert routes.get(id(thing)) == twin.get(id(thing))
        assert routes.get(id(thing), "none") == twin.get(id(thing), "none")
    assert routes[id(keep[1])] == "series 1"
    with pytest.raises(KeyError):
        routes[id(keep[7])]
    with pytest.raises(KeyError):
        del routes[id(keep[7])]
    assert routes.get("not an id") is None and routes.get(0, "none") == "none"
    with pytest.raises(TypeError, match="keys are id"):
        routes["not an id"] = 1
    routes.clear()
    assert len(routes) == 0 and routes.get(id(keep[1])) is None


def test_with_the_c_path_the_series_of_each_method_are_a_routes_table(
    registry,
    implementation,  # noqa: F811  (the autouse fixture's value: which path)
):
    from redline.monitor import _middleware

    table = served(registry, 3)._routes.pending["GET"]
    assert len(table) == 1  # the route, found by address from the second request on
    expected = _middleware._CompiledRoutes if implementation == "c" else dict
    assert type(table) is expected
    assert counted(registry, 3) == {("/s", "GET", "200"): 3}


def test_the_c_pending_hands_over_statuses_of_int_subclasses_without_their_hash():
    """take() counts them as plain ints, having moved them out first: no code of theirs runs
    while it counts (another thread could clear meanwhile), and one that cannot be hashed
    does not block its series for good."""
    from redline.monitor import _middleware

    if _middleware._CompiledPending is None:
        pytest.skip("redline.monitor._request is not compiled")
    hashed = []

    class Watched(int):
        def __hash__(self) -> int:
            hashed.append(int(self))
            return int.__hash__(self)

    class Unhashable(int):
        __hash__ = None  # type: ignore[assignment]

    pending = _middleware._CompiledPending(sizes=False, capacity=4)
    for status in (Watched(200), Watched(200), Unhashable(404), Watched(201)):
        pending.add(status, 0.1, 0)

    tally, durations_, _ = pending.take()

    assert tally == {200: 2, 404: 1, 201: 1}
    assert all(type(status) is int for status in tally)
    assert hashed == [] and len(pending) == 0 and len(doubles(durations_)) == 4
    with pytest.raises(ValueError, match="capacity must be 1"):
        _middleware._CompiledPending(capacity=2**62)
