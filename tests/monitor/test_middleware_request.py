"""The awaitable ``MetricsMiddleware`` returns per request, on both request paths (C and
Python, the ``implementation`` fixture): it behaves as the coroutine it stands for under
cancellation, close(), throw() and garbage collection, counts what it must, leaks nothing,
and servers take the middleware for the ASGI 3 app it is."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import signal
import subprocess
import sys
import tracemalloc
import types
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_server import serve_url
from test_middleware import (
    implementation,  # noqa: F401  (autouse: C and Python paths)
    in_progress,
    requests,
    settle,
    sizes,
)

from redline import monitor
from redline.monitor import MetricsMiddleware, _multiprocess


@pytest.fixture
def registry() -> monitor.Registry:
    return monitor.Registry()


def scope(path: str = "/x", method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def discard(message: dict[str, Any]) -> None:
    pass


def middleware(app: Any, registry: monitor.Registry, **options: Any) -> MetricsMiddleware:
    return MetricsMiddleware(app, registry=registry, route_of=lambda scope: "/x", **options)


START = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.response.body", "body": b"ok"}


# -- servers --------------------------------------------------------------------------------


def test_servers_take_the_middleware_for_an_asgi3_app(registry):
    async def app(scope, receive, send):
        await send(START)
        await send(BODY)

    wrapped = middleware(app, registry)
    config = uvicorn.Config(wrapped)
    config.load()

    assert config.interface == "asgi3"  # uvicorn: asyncio.iscoroutinefunction(app.__call__)
    assert inspect.iscoroutinefunction(wrapped.__call__)  # hypercorn, asgiref
    assert asyncio.iscoroutinefunction(wrapped.__call__)


def test_the_middleware_outermost_under_uvicorn_counts_its_requests(registry):
    async def app(scope, receive, send):
        await receive()
        await send({**START, "status": 201})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"bc"})

    wrapped = middleware(app, registry, response_size=True)
    with serve_url(wrapped) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            response = client.post("/x", content=b"hello")
            assert (response.status_code, response.content) == (201, b"abc")
        counts = settle(registry, 3)

    assert counts == {("/x", "POST", "201"): 3}
    sizes = dict(registry.get("http_response_size_bytes").collect().samples)
    assert sizes[("/x", "POST")].sum == 9


def test_without_the_compiled_module_the_python_path_serves_under_uvicorn(tmp_path: Path):
    # A fresh interpreter in which redline.monitor._request cannot be imported, as after an
    # install without a C compiler: MetricsMiddleware then has a Python __call__.
    script = tmp_path / "pure.py"
    script.write_text(
        "import sys\n"
        "sys.modules['redline.monitor._request'] = None\n"
        "import httpx, uvicorn, test_middleware\n"
        "from asgi_server import serve_url\n"
        "from redline import monitor\n"
        "from redline.monitor import MetricsMiddleware\n"
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 204})\n"
        "    await send({'type': 'http.response.body'})\n"
        "registry = monitor.Registry()\n"
        "wrapped = MetricsMiddleware(app, registry=registry, route_of=lambda s: '/p')\n"
        "assert not wrapped.compiled and MetricsMiddleware.__mro__[1] is object\n"
        "config = uvicorn.Config(wrapped)\n"
        "config.load()\n"
        "assert config.interface == 'asgi3', config.interface\n"
        "with serve_url(wrapped) as url:\n"
        "    assert httpx.get(url + '/p').status_code == 204\n"
        "    assert httpx.get(url + '/p').status_code == 204\n"
        "    test_middleware.settle(registry, 2)\n"
        "print(test_middleware.requests(registry))\n"
    )
    here = Path(__file__).resolve().parent
    path = os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{('/p', 'GET', '204'): 2.0}"


def test_redline_pure_python_makes_middlewares_use_the_python_path():
    code = (
        "from redline.monitor import MetricsMiddleware\n"
        "print(MetricsMiddleware(lambda s, r, w: None, registry=None).compiled)\n"
    )
    env = {**os.environ, "REDLINE_PURE_PYTHON": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


async def test_asyncio_runs_the_request_awaitable_as_a_task(registry):
    async def app(scope, receive, send):
        await asyncio.sleep(0)
        await send(START)
        await send(BODY)

    request = middleware(app, registry)(scope(), receive, discard)

    assert asyncio.iscoroutine(request)
    assert await asyncio.create_task(request) is None
    assert requests(registry) == {("/x", "GET", "200"): 1}


# -- requests in flight ---------------------------------------------------------------------


def test_the_in_flight_count_is_a_deque_like_counter_that_refuses_to_go_below_zero():
    from redline.monitor._middleware import _Flight

    flight = _Flight()
    flight.append(None)
    flight.append(None)
    assert len(flight) == 2
    flight.pop()
    flight.pop()
    assert len(flight) == 0
    with pytest.raises(IndexError):
        flight.pop()
    assert len(flight) == 0


async def test_requests_of_both_paths_share_one_in_flight_count(registry, monkeypatch):
    """A C and a Python middleware on one registry count into the same series; each
    request enters on start and leaves on its end, whichever path serves it."""
    from redline.monitor import _middleware

    gates = [asyncio.Event(), asyncio.Event()]
    started = asyncio.Queue()

    async def app(scope, receive, send):
        started.put_nowait(None)
        await gates[int(scope["path"][-1])].wait()
        await send(START)
        await send(BODY)

    made = []
    for compiled in (_middleware._Compiled, None):
        if compiled is None or _middleware._Compiled is not None:
            monkeypatch.setattr(_middleware, "_Requests", compiled)
            made.append(middleware(app, registry))
    tasks = [
        asyncio.ensure_future(each(scope(f"/x{i}"), receive, discard))
        for i, each in enumerate(made)
    ]
    for _ in tasks:
        await asyncio.wait_for(started.get(), 5)
    assert in_progress(registry) == {("GET",): len(made)}
    gates[0].set()
    await tasks[0]
    assert in_progress(registry) == {("GET",): len(made) - 1}
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert in_progress(registry) == {("GET",): 0}
    assert sum(requests(registry).values()) == len(made)


# -- how a request ends ---------------------------------------------------------------------


async def test_a_request_cancelled_mid_response_counts_500_and_the_cancellation_propagates(
    registry,
):
    started, seen = asyncio.Event(), []

    async def app(scope, receive, send):
        await send(START)
        started.set()
        try:
            await asyncio.sleep(60)
        except BaseException as exc:
            seen.append(type(exc))
            raise

    wrapped = middleware(app, registry)

    async def server() -> None:
        await wrapped(scope(), receive, discard)

    task = asyncio.create_task(server())
    await started.wait()
    assert in_progress(registry) == {("GET",): 1}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert seen == [asyncio.CancelledError]
    assert requests(registry) == {("/x", "GET", "500"): 1}
    assert in_progress(registry) == {("GET",): 0}


async def test_a_request_cancelled_after_the_client_disconnected_counts_499(registry):
    waiting = asyncio.Event()

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def app(scope, receive, send):
        assert (await receive())["type"] == "http.disconnect"
        waiting.set()
        await asyncio.sleep(60)

    wrapped = middleware(app, registry)
    task = asyncio.ensure_future(wrapped(scope(), gone, discard))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert requests(registry) == {("/x", "GET", "499"): 1}


async def test_an_exception_after_the_response_keeps_its_status_and_is_re_raised(registry):
    async def app(scope, receive, send):
        await send(START)
        await send(BODY)
        raise RuntimeError("a background task failed")

    with pytest.raises(RuntimeError, match="background task"):
        await middleware(app, registry)(scope(), receive, discard)

    assert requests(registry) == {("/x", "GET", "200"): 1}
    assert in_progress(registry) == {("GET",): 0}


async def test_an_app_that_returns_without_a_response_counts_500(registry):
    async def app(scope, receive, send):
        await send(START)

    await middleware(app, registry)(scope(), receive, discard)

    assert requests(registry) == {("/x", "GET", "500"): 1}


def suspended(app_future: asyncio.Future[Any]) -> Any:
    async def app(scope, receive, send):
        await send(START)
        await app_future

    return app


async def test_closing_an_unstarted_request_runs_nothing_and_counts_nothing(registry):
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    request = middleware(app, registry)(scope(), receive, discard)
    request.close()

    assert called == []
    assert requests(registry) == {}
    with pytest.raises(RuntimeError, match="cannot reuse"):
        await request


async def test_closing_a_started_request_closes_the_app_and_counts_500(registry):
    future = asyncio.get_running_loop().create_future()
    seen = []

    async def app(scope, receive, send):
        await send(START)
        try:
            await future
        except BaseException as exc:
            seen.append(type(exc))
            raise

    steps = middleware(app, registry)(scope(), receive, discard).__await__()
    assert steps.send(None) is future  # suspended in the app, awaiting the future
    assert in_progress(registry) == {("GET",): 1}
    steps.close()

    assert seen == [GeneratorExit]
    assert requests(registry) == {("/x", "GET", "500"): 1}
    assert in_progress(registry) == {("GET",): 0}
    steps.close()  # closing again does nothing
    assert requests(registry) == {("/x", "GET", "500"): 1}


async def test_an_exception_thrown_into_a_request_reaches_the_app_and_is_counted(registry):
    future = asyncio.get_running_loop().create_future()
    steps = middleware(suspended(future), registry)(scope(), receive, discard).__await__()
    steps.send(None)

    with pytest.raises(LookupError, match="thrown"):
        steps.throw(LookupError("thrown"))

    assert requests(registry) == {("/x", "GET", "500"): 1}
    assert in_progress(registry) == {("GET",): 0}


async def test_an_app_that_handles_a_thrown_exception_finishes_its_response(registry):
    future = asyncio.get_running_loop().create_future()
    other = asyncio.get_running_loop().create_future()

    async def app(scope, receive, send):
        await send(START)
        try:
            await future
        except LookupError:
            await other
            await send(BODY)

    steps = middleware(app, registry)(scope(), receive, discard).__await__()
    steps.send(None)

    assert steps.throw(LookupError("handled")) is other  # the app awaits something else
    other.set_result(None)
    with pytest.raises(StopIteration):
        steps.send(None)
    assert requests(registry) == {("/x", "GET", "200"): 1}


async def test_throwing_into_an_unstarted_request_raises_there_and_counts_nothing(registry):
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    steps = middleware(app, registry)(scope(), receive, discard).__await__()
    with pytest.raises(KeyError):
        steps.throw(KeyError("early"))

    assert called == []
    assert requests(registry) == {}
    assert not any(in_progress(registry).values())


async def test_a_suspended_request_that_is_garbage_collected_counts_500(registry):
    future = asyncio.get_running_loop().create_future()
    wrapped = middleware(suspended(future), registry)  # kept, as the server keeps its app
    steps = wrapped(scope(), receive, discard).__await__()
    steps.send(None)
    assert in_progress(registry) == {("GET",): 1}

    del steps
    gc.collect()

    assert requests(registry) == {("/x", "GET", "500"): 1}
    assert in_progress(registry) == {("GET",): 0}


async def test_a_request_follows_the_coroutine_protocol(registry):
    async def app(scope, receive, send):
        await send(START)
        await send(BODY)

    wrapped = middleware(app, registry)
    unstarted = wrapped(scope(), receive, discard)
    with pytest.raises(TypeError, match="just-started"):
        unstarted.__await__().send(1)
    unstarted.close()
    done = wrapped(scope(), receive, discard)
    await done
    with pytest.raises(RuntimeError, match="cannot reuse"):
        await done

    assert requests(registry) == {("/x", "GET", "200"): 1}


# -- what the app returns and sends ---------------------------------------------------------


class Later:
    """An awaitable that is not a coroutine, as some ASGI frameworks' apps return."""

    def __init__(self, send: Any) -> None:
        self.send = send

    def __await__(self) -> Generator[Any, None, str]:
        yield from asyncio.sleep(0).__await__()
        yield from self.send(START).__await__()
        yield from self.send(BODY).__await__()
        return "ignored"


async def test_apps_may_return_any_awaitable(registry):
    @types.coroutine
    def generator_based(send: Any) -> Generator[Any, None, None]:
        yield from asyncio.sleep(0).__await__()
        yield from send({**START, "status": 202}).__await__()
        yield from send(BODY).__await__()

    def app(scope, receive, send):
        return Later(send) if scope["method"] == "GET" else generator_based(send)

    wrapped = middleware(app, registry)
    assert await wrapped(scope(), receive, discard) is None
    await wrapped(scope(method="POST"), receive, discard)

    assert requests(registry) == {("/x", "GET", "200"): 1, ("/x", "POST", "202"): 1}


async def test_an_app_that_returns_no_awaitable_raises_type_error_and_counts_500(registry):
    def app(scope, receive, send):
        return 42

    with pytest.raises(TypeError, match="int"):
        await middleware(app, registry)(scope(), receive, discard)

    assert requests(registry) == {("/x", "GET", "500"): 1}
    assert in_progress(registry) == {("GET",): 0}


async def test_a_status_that_is_not_an_int_is_refused_with_a_clear_error(registry):
    async def app(scope, receive, send):
        await send({**START, "status": "200"})

    with pytest.raises(TypeError, match="status must be an int, not str"):
        await middleware(app, registry)(scope(), receive, discard)

    assert requests(registry) == {("/x", "GET", "500"): 1}


class ReadOnlyMessage(Mapping[str, Any]):
    """A message that is not a dict: the C path reads it by lookups, not in one pass."""

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


def runtime_keys(**fields: Any) -> dict[str, Any]:
    """Keys made at run time, not interned: equal to the literals' in text only."""
    return {"".join(list(key)): value for key, value in fields.items()}


def padded(**fields: Any) -> dict[str, Any]:
    """More entries than the C path reads in one pass."""
    return {**{f"x-extra-{i}": i for i in range(10)}, **fields}


@pytest.mark.parametrize(
    "make", [dict, ReadOnlyMessage, runtime_keys, padded], ids=lambda make: make.__name__
)
async def test_messages_of_any_mapping_and_key_strings_are_read_alike(registry, make):
    async def app(scope, receive, send):
        await send(make(type="http.response.start", status=201, headers=[], trailers=False))
        await send(make(type="http.response.body", body=b"ab", more_body=True))
        await send(make(type="http.response.body", body=b"cde", more_body=False))
        await send(make(type="http.response.body", body=b"late"))  # after the end: not sized

    await middleware(app, registry, response_size=True)(scope(), receive, discard)

    assert requests(registry) == {("/x", "GET", "201"): 1}
    assert sizes(registry)[("/x", "GET")].sum == 5


@pytest.mark.parametrize("make", [dict, ReadOnlyMessage], ids=lambda make: make.__name__)
async def test_a_start_message_without_a_status_raises_key_error(registry, make):
    async def app(scope, receive, send):
        await send(make(type="http.response.start", headers=[]))

    with pytest.raises(KeyError, match="status"):
        await middleware(app, registry)(scope(), receive, discard)

    assert requests(registry) == {("/x", "GET", "500"): 1}


async def test_a_message_without_a_type_raises_key_error(registry):
    async def app(scope, receive, send):
        await send({"status": 200})

    with pytest.raises(KeyError, match="type"):
        await middleware(app, registry)(scope(), receive, discard)


async def test_the_server_awaitable_of_send_and_receive_is_returned_as_is(registry):
    marker = asyncio.get_running_loop().create_future()
    marker.set_result(None)
    results = []

    def send(message: dict[str, Any]) -> asyncio.Future[None]:
        return marker

    async def app(scope, receive, send_):
        results.append(send_(START))
        await results[-1]
        results.append(send_(BODY))
        await results[-1]

    await middleware(app, registry)(scope(), receive, send)

    assert results == [marker, marker]


# -- nothing kept ---------------------------------------------------------------------------


async def test_ten_thousand_requests_leave_no_references_or_objects_behind(registry):
    route = object()

    async def app(scope, receive, send):
        scope["route"] = route
        await receive()
        await send(START)
        await send(BODY)

    async def failing(scope, receive, send):
        await send(START)
        raise ValueError("counted, then re-raised")

    wrapped = middleware(app, registry, response_size=True)
    broken = middleware(failing, registry)

    async def run(n: int) -> None:
        for i in range(n):
            await wrapped(scope(), receive, discard)
            if i % 10 == 0:
                with pytest.raises(ValueError):
                    await broken(scope(), receive, discard)

    await run(3000)  # warm: the route index, the series, the histograms' buckets
    monitor.generate_latest(registry)
    gc.collect()
    watched = (route, app, failing, receive, discard, START, BODY)
    before = [sys.getrefcount(obj) for obj in watched]
    objects = len(gc.get_objects())
    tracemalloc.start()
    try:
        first = tracemalloc.get_traced_memory()[0]
        await run(10_000)
        monitor.generate_latest(registry)  # what is pending goes into the histograms
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()

    assert [sys.getrefcount(obj) for obj in watched] == before
    # A leak of one float per request would be 10,000 objects and 240 kB; what grows is the
    # histograms' bookkeeping, some 15 kB.
    assert len(gc.get_objects()) - objects < 500
    assert grown < 100_000
    counts = requests(registry)
    assert counts == {("/x", "GET", "200"): 13_000, ("/x", "GET", "500"): 1_300}
    assert in_progress(registry) == {("GET",): 0}


# -- graceful shutdown ----------------------------------------------------------------------


async def test_after_sigterm_the_last_request_in_flight_writes_the_last_snapshot(
    registry, tmp_path
):
    shared = monitor.SnapshotDirectory(
        tmp_path, registry=registry, interval=3600, expire_after=7201
    ).start()
    try:
        (written,) = tmp_path.glob("worker-*")
        future = asyncio.get_running_loop().create_future()
        wrapped = middleware(suspended(future), registry)
        wrapped_quick = MetricsMiddleware(
            lambda scope, receive, send: _respond(send), registry=registry, route_of=lambda s: "/q"
        )
        slow = asyncio.ensure_future(wrapped(scope(), receive, discard))
        await asyncio.sleep(0)
        before = written.read_bytes()
        _multiprocess.SIGNALLED.add(signal.SIGTERM)
        try:
            await wrapped_quick(scope("/q"), receive, discard)
            # One request is still in flight: no write yet.
            assert written.read_bytes() == before
            future.set_result(None)
            await slow
        finally:
            _multiprocess.SIGNALLED.discard(signal.SIGTERM)
        after = written.read_bytes()
    finally:
        shared.close()

    assert after != before
    assert requests(registry) == {("/q", "GET", "200"): 1, ("/x", "GET", "500"): 1}


async def _respond(send: Any) -> None:
    await send(START)
    await send(BODY)


# -- calls without an argument tuple ---------------------------------------------------------

HAVE_VECTORCALL = 1 << 11  # Py_TPFLAGS_HAVE_VECTORCALL


def test_the_middleware_is_called_without_an_argument_tuple_where_compiled():
    from redline.monitor import _middleware

    if _middleware._enable_vectorcall is None:
        pytest.skip("redline.monitor._request is not compiled")
    assert MetricsMiddleware.__flags__ & HAVE_VECTORCALL

    class Plain(MetricsMiddleware):
        pass

    assert Plain.__flags__ & HAVE_VECTORCALL


async def test_a_subclass_with_its_own_call_is_not_bypassed(registry):
    calls = []

    class Own(MetricsMiddleware):
        async def __call__(self, scope, receive, send):
            calls.append(scope["path"])
            await super().__call__(scope, receive, send)

    async def app(scope, receive, send):
        await send(START)
        await send(BODY)

    own = Own(app, registry=registry, route_of=lambda scope: "/x")
    assert not Own.__flags__ & HAVE_VECTORCALL
    await own(scope(), receive, discard)
    await own(scope(), receive, discard)

    assert calls == ["/x", "/x"]
    assert requests(registry) == {("/x", "GET", "200"): 2}


async def test_a_call_assigned_to_the_class_later_is_not_bypassed(registry):
    calls = []

    class Later(MetricsMiddleware):
        pass

    async def patched(self, scope, receive, send):
        calls.append(scope["path"])

    Later.__call__ = patched  # after the class was made (and given vectorcall)

    async def app(scope, receive, send):
        await send(START)
        await send(BODY)

    await Later(app, registry=registry, route_of=lambda scope: "/x")(scope(), receive, discard)

    assert calls == ["/x"]
    assert requests(registry) == {}


async def test_a_send_re_entered_from_a_messages_truth_test_records_the_response_once(registry):
    """The last body re-sent from inside ``bool(more_body)`` of another: one request, 200."""
    sends: list[Any] = []

    class SendsTheLastBody:
        def __bool__(self) -> bool:
            sends[0]({"type": "http.response.body", "body": b""}).close()
            return False

    async def app(scope, receive, send):
        sends.append(send)
        await send(START)
        await send({"type": "http.response.body", "body": b"x", "more_body": SendsTheLastBody()})

    await middleware(app, registry)(scope(), receive, discard)

    assert requests(registry) == {("/x", "GET", "200"): 1}
