"""``MetricsMiddleware``: requests, latency and requests in flight of any ASGI app, by route
template.

Pure ASGI, like Starlette's own middleware: it wraps any ASGI 3 app and imports nothing from
a framework at module import. Per HTTP request it records

- ``http_requests_total{route,method,status}`` (counter);
- ``http_request_duration_seconds{route,method}`` (histogram: classic buckets and the HDR
  quantiles, see ``Histogram``), from the request's arrival at the middleware to the moment
  the last message of its response is handed to the server;
- ``http_requests_in_progress{method}`` (gauge) while the app runs: by method only, because
  the route is known only once the app has routed the request;
- with ``response_size=True``, ``http_response_size_bytes{route,method}`` (histogram of body
  bytes; off by default, as in OpenTelemetry and starlette_exporter).

``route`` is the template that matched (``/users/{id}``), never the raw path, which would
make one series per user id and per scanner probe. Starlette and FastAPI leave the matched
route in ``scope["route"]``; its template lacks the prefixes of the Mounts it sits under
(and in FastAPI >= 0.137, of ``include_router(prefix=...)``), so the middleware looks the
route up, by identity, in an index of the app's route tree built on first sight and rebuilt
when an unknown route shows up; the usual request costs one dict lookup. A route reachable
under two prefixes (one router included or mounted twice) is told apart by matching the
request path against each full template. Requests no route matched (404s, slash redirects,
a 404 inside a mounted sub-app) get ``route="<unmatched>"``. For plain ASGI apps, and to
override, ``route_of(scope)`` returns the route name; it is called with the scope as the app
left it when the response ends, and ``None`` falls back to the detection above.

``status`` is the one of ``http.response.start``. A response that never completes counts as
499 (nginx's "client closed request") when the app had received the client's disconnect
(noted in the scope as ``"redline.monitor.disconnected"``), else 500, and an
exception from the app is re-raised after being counted. An exception after the response
completed (a Starlette background task) does not change the status the client got; the
duration likewise ends with the response, not with the background tasks. Methods outside
the standard nine count as ``method="other"``. WebSocket scopes, and paths in ``exclude``
(exactly, or below them: ``/metrics`` excludes ``/metrics/x``), pass through untouched.

Shutdown: the lifespan scope passes through too, but when the app reports its shutdown
complete, and when after a SIGTERM no request is left in flight, the middleware writes the
last snapshot of every started ``SnapshotDirectory`` of the process, so that the requests
that were in flight at the signal, and what the app records on its way out, are counted
before a server such as uvicorn ends the process by re-raising the signal.

Cost: what the middleware adds to a request's CPU time is, to a few per cent, the share of
instructions it adds to the request. Counted with valgrind (callgrind, user space), a
trivial Starlette endpoint under uvicorn runs some 180,000 instructions a request, 80,000 of
them in the app called in a loop without a server. The middleware adds as many instructions
in either setting, but under the server each takes four to five times as long as in the warm
loop (most likely caches and branch predictors gone cold between system calls), so a
microbenchmark's microseconds understate its cost by that much, and its instruction count
does not (for Python code; the C path below costs two to three times its smaller share under
a loaded server, see docs/monitoring.md). Any pure-Python wrapper of ``send`` already adds
some 8,000 (a Python frame and a closure per request, a call per message), so the request
path is in C where a compiler was at hand at install (``_request.c``,
``benchmarks/middleware_instructions.py`` counts it): the middleware's ``__call__`` (its C
base class's) looks the path up among those seen not to be excluded and the method among
those seen, and returns one C object that is both the awaitable the server awaits (it drives
the app's coroutine itself, so no Python frame runs for the middleware) and the ``receive``
and ``send`` the app is given (called with a message it is send, without one receive).
Everything else (other scopes, a path or method not seen before) goes through ``_dispatch``,
and ``_serve`` is the pure-Python twin of the C object, used without the extension or with
``REDLINE_PURE_PYTHON=1``; the tests run on both. In either, a finished request of a route
seen before finds the pending requests of its series by one dict lookup by the route's
identity and adds its status, duration and size there: with the C path into the
extension's ``Pending``, C arrays (a reference to the status int and two doubles, no object
made), else into ``_PendingLists``, its twin, which appends an int and a float to lists,
nothing the cyclic GC tracks. A series' pending requests are added to the metrics in bulk
once they are 1024 (statuses counted in C, durations handed over as one array of doubles,
which the histogram counts in C too, see ``_tally.c``) and whenever one of the metrics is
collected (a scrape, a multi-process snapshot), so every collected view is exact; only a
child read directly (``.labels(...).value``) can be behind.
``benchmarks/middleware_bench.py`` measures the throughput, beside a middleware that only
forwards and one that only wraps ``send`` to time requests: the floor any pure-Python
instrumentation pays.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import weakref
from array import array
from collections import Counter as Tally
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from struct import pack
from time import perf_counter
from typing import Any

from redline._routes import ROUTE_TEMPLATE_KEY
from redline.monitor._counter import Counter
from redline.monitor._exceptions import MetricError
from redline.monitor._gauge import Gauge
from redline.monitor._histogram import DEFAULT_BUCKETS, Histogram, exponential_buckets
from redline.monitor._multiprocess import SIGNALLED, write_last_snapshots
from redline.monitor._registry import REGISTRY, Registry
from redline.monitor._snapshot import MetricFamily

try:
    from redline.monitor._request import Flight as _Flight
    from redline.monitor._request import Middleware as _Base
    from redline.monitor._request import Pending as _CompiledPending
    from redline.monitor._request import Requests as _Compiled
    from redline.monitor._request import Routes as _CompiledRoutes
    from redline.monitor._request import enable_vectorcall as _enable_vectorcall
except ImportError:  # built without a C compiler: _dispatch and _serve do the work in Python
    _Base, _Compiled, _Flight = object, None, deque  # type: ignore[assignment,misc]
    _CompiledPending = _CompiledRoutes = _enable_vectorcall = None  # type: ignore[assignment,misc]

# The C request path unless absent or REDLINE_PURE_PYTHON=1 (read when a middleware is made;
# workers inherit the environment).
_Requests = None if os.environ.get("REDLINE_PURE_PYTHON", "0") != "0" else _Compiled

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "<unmatched>"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
SIZE_BUCKETS = exponential_buckets(256, 4, 8)
CLIENT_CLOSED = 499
BATCH = 1024
DISCONNECTED = "redline.monitor.disconnected"
CLEAN_PATHS = 4096

_METHOD = {method: method for method in METHODS}

log = logging.getLogger("redline.monitor")


class MetricsMiddleware(_Base):  # type: ignore[misc,valid-type]
    """Records every HTTP request of ``app``: ``MetricsMiddleware(app, *, registry=REGISTRY,
    route_of=None, exclude=("/metrics",), buckets=DEFAULT_BUCKETS, response_size=False)``.

    In Starlette or FastAPI: ``app.add_middleware(MetricsMiddleware)``. Several middlewares
    on one registry (an app built twice in tests) share the metrics. Metrics of these names
    made beforehand by other code are recorded into if their labels and buckets match, each
    request at once rather than in batches. ``compiled`` says whether its request path runs
    in C (see the module's docstring).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: Registry | None = REGISTRY,
        route_of: Callable[[Scope], str | None] | None = None,
        exclude: Iterable[str] = ("/metrics",),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        response_size: bool = False,
    ) -> None:
        self.app = app
        self.route_of = route_of
        if isinstance(exclude, str):
            raise MetricError(
                f"exclude must be a sequence of paths, not the string {exclude!r} "
                f"(write ({exclude!r},))"
            )
        paths = [path.rstrip("/") or "/" for path in exclude]
        self._exclude = frozenset(paths)
        self._exclude_below = tuple(path + "/" for path in paths if path != "/")
        self.requests: Counter = _metric(
            registry,
            _RequestCounter,
            "http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
        )
        self.duration: Histogram = _metric(
            registry,
            _RequestHistogram,
            "http_request_duration_seconds",
            "Time from a request's arrival to the last message of its response.",
            ("route", "method"),
            buckets=buckets,
        )
        self.in_progress: Gauge = _metric(
            registry,
            Gauge,
            "http_requests_in_progress",
            "HTTP requests the app is handling now, by method.",
            ("method",),
        )
        self.response_size: Histogram | None = None
        if response_size:
            self.response_size = _metric(
                registry,
                _RequestHistogram,
                "http_response_size_bytes",
                "Bytes of response bodies, by route template and method.",
                ("route", "method"),
                buckets=SIZE_BUCKETS,
                scale=1,
                max_value=2.0**40,
            )
        self._finished = _Finished(
            self.requests, self.duration, self.response_size, compiled=_Requests is not None
        )
        # The metrics know their feeds weakly; what a discarded middleware still held counts.
        weakref.finalize(self, self._finished.drain)
        self._in_flight = _InFlight.of(self.in_progress)
        # With the C request path, id(route) -> Pending tables that C reads by address.
        compiled = _Requests is not None and _CompiledRoutes is not None
        self._routes = _RouteTemplates(_CompiledRoutes if compiled else dict)
        self._route = self._routes.template if route_of is None else self.route
        # Paths seen not to be excluded under any root path: one set lookup per request.
        self._clean: set[str] = set()
        self._cacheable = "/" not in self._exclude
        self._hot = (self._record, self._finished.batch, self._finished.drain)
        self._sizes = self.response_size is not None
        # Request method -> (append and pop of the count of its label's requests in flight,
        # and the id of each route seen -> the pending requests of that route and method).
        self._methods: dict[str, _Method] = {}
        # The request path: C where compiled (see _request.c), else _serve, its twin. The C
        # base class's __call__ makes the requests of paths and methods seen before itself,
        # leaves the rest to _dispatch, and calls _serve when _requests is None.
        self._requests: Any = None
        if _Requests is not None:
            self._requests = _Requests(
                app=app,
                record=self._record,
                drain=self._finished.drain,
                receive=_receive,
                awaiting=_awaiting,
                signalled=SIGNALLED,
                idle=_write_if_idle,
                batch=self._finished.batch,
                sizes=self._sizes,
            )
        self.compiled = self._requests is not None
        # Servers tell an ASGI 3 app by app.__call__ being a coroutine function (uvicorn:
        # asyncio.iscoroutinefunction, hypercorn: inspect's, asgiref: either). The C
        # __call__ returns the request's awaitable rather than being a coroutine function,
        # so what they look at is an async def that awaits it; calls go through the class.
        self.__call__ = self._call

    def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """``__call__`` for what the C one leaves to Python: other scopes, excluded paths, a
        path or a method not seen before. Returns the request's awaitable."""
        if scope["type"] != "http" or (scope["path"] not in self._clean and self._excluded(scope)):
            return self._pass(scope, receive, send)
        found = self._methods.get(scope["method"]) or self._method(scope["method"])
        return self._requests.request(scope, receive, send, found)  # type: ignore[no-any-return]

    def _pass(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """A scope that is not counted: a WebSocket, the lifespan, an excluded path."""
        if scope["type"] == "lifespan":
            return self.app(scope, receive, self._lifespan_sender(send))
        return self.app(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What servers see as ``app.__call__`` (see ``__init__``): the same, awaited."""
        await self(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``__call__`` in Python: what ``_dispatch`` and the C request do, in one coroutine
        (the middleware's ``__call__`` itself without the extension)."""
        if scope["type"] != "http" or (scope["path"] not in self._clean and self._excluded(scope)):
            await self._pass(scope, receive, send)
            return
        # Under a server every instruction run here costs throughput in proportion (see the
        # module's docstring), so the request's state lives in three closure cells, what the
        # wrapper only reads comes as default arguments, and one function object wraps both
        # send and receive: called with a message it is send, without one it is receive.
        enter, leave, series = self._methods.get(scope["method"]) or self._method(scope["method"])
        started = perf_counter()
        status = size = 0  # status: 0 before http.response.start, -1 once recorded
        trailers = False

        def channel(
            message: Message | None = None,
            send: Send = send,
            scope: Scope = scope,
            series: dict[int, _Pending] = series,
            started: float = started,
            hot: tuple[Any, ...] = self._hot,
            sizes: bool = self._sizes,
            receive: Receive = receive,
        ) -> Awaitable[Any]:
            nonlocal status, size, trailers
            if message is None:
                return _receive(receive, scope)
            kind = message["type"]
            if kind == "http.response.body":
                if sizes:
                    size += len(message.get("body", b""))
                if (
                    status > 0
                    and not trailers
                    and not message.get("more_body", False)
                    and status > 0  # again: that truth test may have sent and recorded
                ):
                    # Recorded as the last message goes out: this wrapper returns the server's
                    # awaitable rather than awaiting it in a coroutine of its own. A route
                    # seen before has its pending list found by one lookup, not a call.
                    pending = series.get(id(scope.get("route")))
                    if pending is None:
                        hot[0](scope, status, perf_counter() - started, size)
                    else:
                        # A _PendingLists (this path's): its lists, not a method and __len__
                        # in Python, which would cost two frames.
                        pending.statuses.append(status)
                        durations = pending.durations
                        durations.append(perf_counter() - started)
                        if sizes:
                            pending.sizes.append(size)
                        if len(durations) >= hot[1]:
                            hot[2]()
                    status = -1
            elif kind == "http.response.start":
                if not isinstance(message["status"], int):
                    raise TypeError(
                        "http.response.start's status must be an int, not "
                        f"{type(message['status']).__name__}"
                    )
                status = message["status"]
                trailers = message.get("trailers", False)
            elif status > 0 and (
                kind == "http.response.pathsend"
                or (kind == "http.response.trailers" and not message.get("more_trailers", False))
            ):
                hot[0](scope, status, perf_counter() - started, size)
                status = -1
            return send(message)

        enter(None)
        try:
            await self.app(scope, channel, channel)
            if status >= 0:
                status = -1
                failed = CLIENT_CLOSED if scope.get(DISCONNECTED) else 500
                self._record(scope, failed, perf_counter() - started, size)
        except BaseException as exc:
            if status >= 0:
                # ASGI 2.4 servers raise OSError from send() once the client has gone, and
                # Starlette turns that into ClientDisconnect.
                gone = scope.get(DISCONNECTED) or isinstance(exc, OSError)
                gone = gone or type(exc).__name__ == "ClientDisconnect"
                failed = CLIENT_CLOSED if gone else 500
                self._record(scope, failed, perf_counter() - started, size)
            raise
        finally:
            leave()
            if SIGNALLED:
                _write_if_idle()

    if _Base is object:
        __call__ = _serve

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _enable_vectorcall is not None:
            _enable_vectorcall(cls)  # unless cls defines its own __call__

    def _record(self, scope: Scope, status: int, seconds: float, size: int) -> None:
        """A finished request off the fast path: the first of its route and method (whose
        pending lists are then remembered by the route's identity), one whose route has no
        single template, one named by ``route_of``, or one that ended without a response."""
        method = _METHOD.get(scope["method"], "other")
        template = self._route(scope)
        pending = self._finished.pending(template, method)
        if self.route_of is None and self._finished.batch > 1:
            found = scope.get("route")
            if found is not None and self._routes.by_route.get(id(found)) == template:
                self._routes.pending[method][id(found)] = pending
        self._finished.add(pending, status, seconds, size)

    def _excluded(self, scope: Scope) -> bool:
        path = scope["path"]
        if (
            path in self._exclude
            or path.startswith(self._exclude_below)
            or (scope.get("root_path") and self._below_root(scope))
        ):
            return True
        # A path that contains no excluded path is not excluded whatever the root path
        # taken off it; the set is bounded, so that paths with ids do not grow it for ever.
        if (
            self._cacheable
            and len(self._clean) < CLEAN_PATHS
            and not any(excluded in path for excluded in self._exclude)
        ):
            self._clean.add(path)
        return False

    def _method(self, method: str) -> _Method:
        label = _METHOD.get(method, "other")
        flight = self._in_flight[label]
        found = flight.append, flight.pop, self._routes.pending[label]
        if label != "other":  # only the standard methods: the dict stays small
            self._methods[method] = found
        return found

    def _lifespan_sender(self, send: Send) -> Send:
        async def send_(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # The server has drained its connections and the app's own shutdown has
                # run: what every request recorded is in, so write the last snapshot now,
                # before a server that re-raises SIGTERM (uvicorn) ends the process.
                self._finished.drain()
                write_last_snapshots()
            await send(message)

        return send_

    def route(self, scope: Scope) -> str:
        """The ``route`` label of a handled request: ``route_of(scope)``, else the matched
        route's full template, else ``"<unmatched>"``."""
        if self.route_of is not None:
            try:
                name = self.route_of(scope)
            except Exception:
                # It runs as the response's last message goes out: raising would cut it off.
                log.exception("route_of(scope) raised; the request counts as %r", UNMATCHED)
                return UNMATCHED
            if name is not None:
                return name
        return self._routes.template(scope)

    def _below_root(self, scope: Scope) -> bool:
        """Whether the path is excluded once the root path (a proxy's prefix, which the
        server includes in ``path``) is taken off it."""
        root = scope["root_path"]
        if not scope["path"].startswith(root):
            return False
        path = scope["path"][len(root) :] or "/"
        return path in self._exclude or path.startswith(self._exclude_below)


# Calls of the middleware skip the argument tuple (see _request.c's enable_vectorcall).
if _enable_vectorcall is not None:
    _enable_vectorcall(MetricsMiddleware)


class _PendingLists:
    """A series' finished requests not yet added to the metrics, in Python: the twin of the
    extension's ``Pending`` (``_request.c``), which keeps them in C arrays.

    Statuses, durations and (when recorded) body sizes go in three lists rather than one list
    of tuples: appending an int or a float allocates nothing the cyclic GC tracks, and the
    metrics need the columns apart. Which status went with which duration does not matter,
    so a request that has appended to one list and not yet to the next (another thread's)
    just waits for the next ``take``, which takes a counted prefix of each, in place.
    """

    __slots__ = ("statuses", "durations", "sizes", "keep_sizes")

    def __init__(self, sizes: bool = False, capacity: int = 0) -> None:
        self.statuses: list[int] = []
        self.durations: list[float] = []
        self.sizes: list[int] = []
        self.keep_sizes = sizes

    def add(self, status: int, seconds: float, size: int) -> None:
        self.statuses.append(status)
        self.durations.append(seconds)
        if self.keep_sizes:
            self.sizes.append(size)

    def __len__(self) -> int:
        return len(self.durations)

    def take(self) -> tuple[dict[int, int], bytes, bytes | None]:
        statuses, durations, sizes = self.statuses, self.durations, self.sizes
        n = min(len(statuses), len(durations))
        if self.keep_sizes:
            n = min(n, len(sizes))
        counted, seconds, lengths = statuses[:n], durations[:n], sizes[:n]
        del statuses[:n], durations[:n], sizes[:n]
        # One status, the usual, is counted in C.
        one = not counted or counted.count(counted[0]) == n
        tally = ({counted[0]: n} if n else {}) if one else dict(Tally(counted))
        return tally, _doubles(seconds), _doubles(lengths) if self.keep_sizes else None

    def clear(self) -> None:
        del self.statuses[:], self.durations[:], self.sizes[:]


# Per request method: the in-flight count's append and pop, and id(route) -> the pending
# requests of that route and method (a Pending, or its twin _PendingLists).
_Pending = Any
_Method = tuple[Callable[[None], None], Callable[[], None], dict[int, _Pending]]


class _Finished:
    """One middleware's finished requests not yet added to the metrics, per series (route
    template and method)."""

    def __init__(
        self,
        requests: Counter,
        duration: Histogram,
        size: Histogram | None,
        *,
        compiled: bool = False,
    ) -> None:
        self.requests = requests
        self.duration = duration
        self.size = size
        self.series: dict[tuple[str, str], _Pending] = {}
        # Re-entrant: a collection during a drain may finalize a request of this middleware,
        # which records and may drain again on this thread; that inner drain leaves the
        # requests to the outer one or the next (see _draining), rather than deadlocking.
        self._lock = threading.RLock()
        self._draining = False
        # Requests kept per series before they are added; 1 (at once) when a metric was
        # made by other code and so does not add them before it is collected.
        self.batch = BATCH
        for metric in (requests, duration, size):
            if isinstance(metric, _Drained):
                metric._feeds.add(self)
            elif metric is not None:
                self.batch = 1
        # The C request path stores into the extension's Pending; the Python one into either.
        use_c = compiled and _CompiledPending is not None
        self._new_pending = _CompiledPending if use_c else _PendingLists

    def pending(self, route: str, method: str) -> _Pending:
        """The pending requests of a series, made on first use."""
        found = self.series.get((route, method))
        if found is None:
            made = self._new_pending(sizes=self.size is not None, capacity=self.batch)
            found = self.series.setdefault((route, method), made)
        return found

    def add(self, pending: _Pending, status: int, seconds: float, size: int) -> None:
        pending.add(status, seconds, size)
        if len(pending) >= self.batch:
            self.drain()

    def drain(self) -> None:
        """Add the finished requests to the metrics."""
        taken = []
        with self._lock:
            if self._draining:
                return
            self._draining = True
            try:
                for key, pending in list(self.series.items()):
                    if len(pending):
                        taken.append((key, pending.take()))
            finally:
                self._draining = False
        # One labels() lookup and one bulk record per series and metric.
        for (route, method), (tally, durations, sizes) in taken:
            for status, count in tally.items():
                self.requests.labels(route, method, status).inc(count)
            _observe_all(self.duration.labels(route, method), _as_doubles(durations))
            if self.size is not None and sizes is not None:
                _observe_all(self.size.labels(route, method), _as_doubles(sizes))

    def clear(self) -> None:
        with self._lock:
            for pending in self.series.values():
                pending.clear()


def _as_doubles(raw: bytes | array[float]) -> array[float]:
    if isinstance(raw, array):
        return raw
    values = array("d")
    values.frombytes(raw)
    return values


def _doubles(values: list[float]) -> array[float]:
    """``values`` as an array of doubles, which a histogram takes in by copying memory;
    packed by ``struct`` in a C loop, 10 times cheaper than ``array("d", values)``."""
    return array("d", pack(f"{len(values)}d", *values))


def _observe_all(child: Any, values: Iterable[float]) -> None:
    """Record ``values`` on a histogram child at once, or one by one on another type's."""
    bulk = getattr(child, "_observe_all", None)
    if bulk is not None:
        bulk(values)
    else:
        for value in values:
            child.observe(value)


async def _awaiting(awaitable: Awaitable[Any]) -> Any:
    """Awaits what the C request cannot drive itself (a generator-based coroutine), or
    raises the TypeError that ``await`` raises for what is not awaitable."""
    return await awaitable


async def _receive(receive: Receive, scope: Scope) -> Message:
    """The server's next message; a disconnect is noted in the scope, for a response that
    then never completes to count as 499."""
    message = await receive()
    if message["type"] == "http.disconnect":
        scope[DISCONNECTED] = True
    return message


def _write_if_idle() -> None:
    """After SIGTERM, the last snapshot once no request is in flight in this process: the
    requests that were in flight at the signal have then finished and counted."""
    if not any(flight for flights in list(_IN_FLIGHT.values()) for flight in flights.values()):
        write_last_snapshots()


class _Drained:
    """Metrics that add their middlewares' finished requests first whenever they are
    collected, so that every exposition and snapshot is exact."""

    _feeds: weakref.WeakSet[_Finished]

    def collect(self) -> MetricFamily:
        for feed in list(self._feeds):
            feed.drain()
        return super().collect()  # type: ignore[misc]

    def _reset(self) -> None:
        for feed in list(self._feeds):
            feed.clear()
        super()._reset()  # type: ignore[misc]


class _RequestCounter(_Drained, Counter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._feeds = weakref.WeakSet()
        super().__init__(*args, **kwargs)


class _RequestHistogram(_Drained, Histogram):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._feeds = weakref.WeakSet()
        super().__init__(*args, **kwargs)


class _InFlight(dict[str, Any]):
    """Per method, an object as long as the requests in flight, with a deque's ``append``
    and ``pop``: the extension's ``Flight``, a counter that the C request path increments
    and decrements without a call, else a deque. Both are atomic under the GIL and cost
    less than a locked ``Gauge.inc``/``dec`` pair, and allocate nothing (a list would free
    its array at 0); the gauge reads the lengths when collected. Series appear per method
    on first use."""

    def __init__(self, gauge: Gauge) -> None:
        super().__init__()
        self._gauge = gauge

    def __missing__(self, method: str) -> Any:
        flight = self.setdefault(method, _Flight())
        self._gauge.labels(method).set_function(flight.__len__)
        return flight

    @classmethod
    def of(cls, gauge: Gauge) -> _InFlight:
        """The one for ``gauge``, shared by every middleware recording into it."""
        shared = _IN_FLIGHT.get(gauge)
        if shared is None:
            shared = _IN_FLIGHT[gauge] = cls(gauge)
        return shared


_IN_FLIGHT: weakref.WeakKeyDictionary[Gauge, _InFlight] = weakref.WeakKeyDictionary()


def _metric(
    registry: Registry | None,
    kind: type[Any],
    name: str,
    documentation: str,
    labelnames: tuple[str, ...],
    **options: Any,
) -> Any:
    """The metric ``name``, created in ``registry`` or the one a middleware created there."""
    if registry is None:
        return kind(name, documentation, labelnames, registry=None, **options)
    wanted = kind(name, documentation, labelnames, registry=None, **options)
    metric = registry.get(name)
    if metric is None:
        metric = registry.get_or_create(name, kind, lambda: wanted)
    base = next(cls for cls in (Counter, Histogram, Gauge) if issubclass(kind, cls))
    if not isinstance(metric, base):
        raise MetricError(
            f"{metric.kind} {metric.name!r} is already in this registry, not a "
            f"{base.kind}; pass the middleware another registry="
        )
    buckets = getattr(metric, "buckets", ())
    if metric.labelnames != labelnames or buckets != getattr(wanted, "buckets", ()):
        raise MetricError(
            f"{metric.kind} {name!r} is already in this registry with labels "
            f"{metric.labelnames} and buckets {buckets}; this MetricsMiddleware needs labels "
            f"{labelnames} and buckets {getattr(wanted, 'buckets', ())}: pass the same "
            "buckets= or another registry="
        )
    return metric


# -- route templates ------------------------------------------------------------------------

_PARAM = re.compile(r"{([a-zA-Z_]\w*)(:\w+)?}")


class _Candidate:
    """One way to reach a route from the app's root: its full template, and (when the route
    is reachable in several ways) the pattern that tells a request path which way it came."""

    __slots__ = ("template", "raw", "_pattern")

    def __init__(self, template: str, raw: str) -> None:
        self.template = template
        self.raw = raw
        self._pattern: re.Pattern[str] | None = None

    def matches(self, path: str) -> bool:
        if self._pattern is None:
            parts, end = [], 0
            for param in _PARAM.finditer(self.raw):
                parts.append(re.escape(self.raw[end : param.start()]))
                parts.append(".*" if param.group(2) == ":path" else "[^/]+")
                end = param.end()
            parts.append(re.escape(self.raw[end:]))
            self._pattern = re.compile("".join(parts))
        return self._pattern.fullmatch(path) is not None


class _RouteTemplates:
    """Full route templates, found by the identity of the route object that routing left in
    ``scope["route"]`` or, where it left none (FastAPI sets it for its own routes only, not
    for Starlette routes and mounts added to it), in ``scope["endpoint"]``."""

    def __init__(self, table: Callable[[], Any] = dict) -> None:
        # id(route or endpoint) -> (it, its template, or None when several are possible);
        # the object is kept so that its id cannot be reused by another one.
        self._known: dict[int, tuple[Any, str | None]] = {}
        # id(route) -> its template, for routes with one template: what the middleware
        # looks up itself, without a call, on every request.
        self.by_route: dict[int, str] = {}
        # method label -> id(route) -> the pending requests of the route and method (see
        # _Finished); filled by the middleware, emptied with by_route.
        # A dict, or the extension's Routes, which the C request path reads by address.
        self.pending: defaultdict[str, dict[int, _Pending]] = defaultdict(table)
        # id(root router) -> (router, its _Tree)
        self._trees: dict[int, tuple[Any, _Tree]] = {}

    def template(self, scope: Scope) -> str:
        found = scope.get("route")
        by_endpoint = found is None
        if by_endpoint:
            found = scope.get("endpoint")
            if found is None:
                # Answered before routing (an HTTPCacheMiddleware 304 or cache hit): that
                # middleware matched the route itself and left its template.
                return scope.get(ROUTE_TEMPLATE_KEY) or UNMATCHED
        # No identity check: the object is kept in the value, so its id is not reused.
        known = self._known.get(id(found))
        if known is not None and known[1] is not None:
            return known[1]
        return self._resolve(scope, found, by_endpoint)

    def _resolve(self, scope: Scope, found: Any, by_endpoint: bool) -> str:
        candidates = self._candidates(scope.get("router"), found, by_endpoint)
        if not candidates:
            # Unreachable from the root router: a route's own template lacks only the
            # prefixes; an endpoint alone says nothing.
            template = None if by_endpoint else getattr(found, "path_format", None)
            template = template if isinstance(template, str) else UNMATCHED
            self._remember(found, template, by_endpoint)
            return template
        templates = {candidate.template for candidate in candidates}
        if len(templates) == 1:
            template = templates.pop()
            self._remember(found, template, by_endpoint)
            return template
        self._remember(found, None, by_endpoint)
        path = scope.get("path", "")
        root = scope.get("app_root_path", scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        for candidate in candidates:
            if candidate.matches(path):
                return candidate.template
        return candidates[0].template

    def _remember(self, found: Any, template: str | None, by_endpoint: bool) -> None:
        if len(self._known) >= 10_000:
            # Routes or endpoints made per request would grow this without end.
            self._known.clear()
            self.by_route.clear()
            for pending in self.pending.values():
                pending.clear()
        self._known[id(found)] = (found, template)
        if template is not None and not by_endpoint:
            self.by_route[id(found)] = template

    def _candidates(self, router: Any, found: Any, by_endpoint: bool) -> list[_Candidate]:
        if router is None:
            return []
        entry = self._trees.get(id(router))
        fresh = entry is None or entry[0] is not router
        if fresh:
            entry = self._trees[id(router)] = (router, _Tree(router))
        candidates = entry[1].find(found, by_endpoint)
        if candidates or fresh:
            return candidates
        # Routes added since the index was built.
        entry = self._trees[id(router)] = (router, _Tree(router))
        return entry[1].find(found, by_endpoint)


class _Tree:
    """Every route of an app's route tree with its full templates, by the identity of the
    route and of its endpoint (a mount's app)."""

    def __init__(self, router: Any) -> None:
        try:
            from starlette.routing import Host, Mount
        except ImportError:  # a router of another framework: nothing to index
            Host = Mount = ()  # type: ignore[assignment,misc]  # noqa: N806
        self._mount, self._host = Mount, Host
        self.routes: dict[int, tuple[Any, list[_Candidate]]] = {}
        self.endpoints: dict[int, tuple[Any, list[_Candidate]]] = {}
        self._walk(getattr(router, "routes", ()), "", "", 0)

    def find(self, found: Any, by_endpoint: bool) -> list[_Candidate]:
        entry = (self.endpoints if by_endpoint else self.routes).get(id(found))
        return entry[1] if entry is not None and entry[0] is found else []

    def _add(self, route: Any, endpoint: Any, template: str, raw: str) -> None:
        candidate = _Candidate(template, raw)
        self.routes.setdefault(id(route), (route, []))[1].append(candidate)
        if endpoint is not None:
            self.endpoints.setdefault(id(endpoint), (endpoint, []))[1].append(candidate)

    def _walk(self, routes: Iterable[Any], template: str, raw: str, depth: int) -> None:
        if depth > 32:
            return
        for item in _flatten(routes):
            # FastAPI's RouteContext stands for an included route: scope["route"] is the
            # original route, the context knows its prefixed path.
            route = getattr(item, "original_route", item)
            children = getattr(item, "routes", None) or ()
            if isinstance(route, self._mount):
                path = item.path_format.removesuffix("/{path}")
                # A 404 inside a mounted router leaves the mount in scope["route"].
                mounted = UNMATCHED if children else f"{template}{path}/{{path}}"
                self._add(route, route.app, mounted, f"{raw}{item.path}/{{path:path}}")
                self._walk(children, template + path, raw + item.path, depth + 1)
            elif isinstance(route, self._host):
                hosted = UNMATCHED if children else f"{template}/{{path}}"
                self._add(route, route.app, hosted, f"{raw}/{{path:path}}")
                self._walk(children, template, raw, depth + 1)
            else:
                path, path_format = getattr(item, "path", None), getattr(item, "path_format", None)
                if isinstance(path, str) and isinstance(path_format, str):
                    endpoint = getattr(route, "endpoint", None)
                    self._add(route, endpoint, template + path_format, raw + path)


def _flatten(routes: Iterable[Any]) -> Iterable[Any]:
    """The routes of one level, with FastAPI's included routers (>= 0.137) expanded."""
    fastapi = sys.modules.get("fastapi.routing")
    expand = getattr(fastapi, "iter_route_contexts", None)
    return expand(list(routes)) if expand is not None else routes
