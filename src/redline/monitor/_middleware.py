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
499 (nginx's "client closed request") when the client disconnected first, else 500, and an
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

Cost: a trivial Starlette endpoint under uvicorn spends some 70-110 us of CPU a request, and
Python code run between the server's system calls costs three to four times what a loop in
a microbenchmark shows, so the request path does as little as it can: the wrapper of
``send`` is a plain function returning the server's awaitable (no coroutine of its own),
what it only reads comes as default arguments, a route seen before is one dict lookup by
identity (no call), and a finished request is appended to a list as ``(route, method,
status, seconds, size)``. The list is added to the metrics in bulk every 1024 requests,
grouped by C-level passes (``Counter`` over the keys, lists per series filled by ``map``),
then one bulk record per series; and whenever one of the metrics is collected (a scrape, a
multi-process snapshot), so every collected view is exact; only a child read directly
(``.labels(...).value``) can be behind. ``benchmarks/middleware_bench.py`` measures it,
beside a middleware that only forwards and one that only wraps ``send`` to time requests:
the floor any pure-Python instrumentation pays.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import weakref
from collections import Counter as Tally
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from operator import itemgetter
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

_METHOD = {method: method for method in METHODS}

log = logging.getLogger("redline.monitor")


class MetricsMiddleware:
    """Records every HTTP request of ``app``: ``MetricsMiddleware(app, *, registry=REGISTRY,
    route_of=None, exclude=("/metrics",), buckets=DEFAULT_BUCKETS, response_size=False)``.

    In Starlette or FastAPI: ``app.add_middleware(MetricsMiddleware)``. Several middlewares
    on one registry (an app built twice in tests) share the metrics. Metrics of these names
    made beforehand by other code are recorded into if their labels and buckets match, each
    request at once rather than in batches.
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
        self._finished = _Finished(self.requests, self.duration, self.response_size)
        # The metrics know their feeds weakly; what a discarded middleware still held counts.
        weakref.finalize(self, self._finished.drain)
        self._in_flight = _InFlight.of(self.in_progress)
        self._routes = _RouteTemplates()
        self._route = self._routes.template if route_of is None else self.route
        finished = self._finished
        # route_of decides every request's label itself: then no template is looked up.
        templates = self._routes.by_route if route_of is None else {}
        self._skip = (self._exclude, self._exclude_below)
        self._sizes = self.response_size is not None
        self._hot = (self._route, templates.get, finished, finished.entries, finished.batch)
        # Request method -> (its label, the list of its requests in flight).
        self._methods: dict[str, tuple[str, list[None]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, self._lifespan_sender(send))
            else:
                await self.app(scope, receive, send)
            return
        # The request's state lives in closure cells, not in a responder object, and what
        # send_ only reads is bound as default arguments, not cells, the middleware's share
        # in one tuple: on this path every allocation and attribute lookup shows in the
        # throughput of a trivial endpoint.
        exclude, below = self._skip
        path = scope["path"]
        if (
            path in exclude
            or path.startswith(below)
            or (scope.get("root_path") and self._below_root(scope))
        ):
            await self.app(scope, receive, send)
            return
        method, flight = self._methods.get(scope["method"]) or self._method(scope["method"])
        started = perf_counter()
        status = size = 0  # status: 0 before http.response.start, -1 once recorded
        trailers = disconnected = False

        async def receive_() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        def send_(
            message: Message,
            send: Send = send,
            scope: Scope = scope,
            method: str = method,
            started: float = started,
            hot: tuple[Any, ...] = self._hot,
            sizes: bool = self._sizes,
        ) -> Awaitable[None]:
            nonlocal status, size, trailers
            kind = message["type"]
            if kind == "http.response.body":
                if sizes:
                    size += len(message.get("body", b""))
                if status > 0 and not trailers and not message.get("more_body", False):
                    # Recorded as the last message goes out: this wrapper returns the server's
                    # awaitable rather than awaiting it in a coroutine of its own. A route
                    # seen before costs one lookup here, not a call.
                    route, template_of, finished, entries, batch = hot
                    template = template_of(id(scope.get("route")))
                    if template is None:
                        template = route(scope)
                    entries.append((template, method, status, perf_counter() - started, size))
                    status = -1
                    if len(entries) >= batch:
                        finished.drain()
            elif kind == "http.response.start":
                status = message["status"]
                trailers = message.get("trailers", False)
            elif status > 0 and (
                kind == "http.response.pathsend"
                or (kind == "http.response.trailers" and not message.get("more_trailers", False))
            ):
                route, _, finished, _, _ = hot
                finished.add(route(scope), method, status, perf_counter() - started, size)
                status = -1
            return send(message)

        flight.append(None)
        try:
            await self.app(scope, receive_, send_)
            if status >= 0:
                status, failed = -1, CLIENT_CLOSED if disconnected else 500
                self._finished.add(
                    self._route(scope), method, failed, perf_counter() - started, size
                )
        except BaseException as exc:
            if status >= 0:
                # ASGI 2.4 servers raise OSError from send() once the client has gone, and
                # Starlette turns that into ClientDisconnect.
                gone = disconnected or isinstance(exc, OSError)
                gone = gone or type(exc).__name__ == "ClientDisconnect"
                failed = CLIENT_CLOSED if gone else 500
                self._finished.add(
                    self._route(scope), method, failed, perf_counter() - started, size
                )
            raise
        finally:
            flight.pop()
            if SIGNALLED:
                _write_if_idle()

    def _method(self, method: str) -> tuple[str, list[None]]:
        label = _METHOD.get(method, "other")
        found = label, self._in_flight[label]
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


class _Finished:
    """One middleware's finished requests not yet added to the metrics."""

    def __init__(self, requests: Counter, duration: Histogram, size: Histogram | None) -> None:
        self.requests = requests
        self.duration = duration
        self.size = size
        self.entries: list[tuple[str, str, int, float, int]] = []
        self._lock = threading.Lock()
        # Entries kept before they are added; 1 (at once) when a metric was made by other
        # code and so does not add them before it is collected.
        self.batch = BATCH
        for metric in (requests, duration, size):
            if isinstance(metric, _Drained):
                metric._feeds.add(self)
            elif metric is not None:
                self.batch = 1

    def add(self, route: str, method: str, status: int, seconds: float, size: int) -> None:
        entries = self.entries
        entries.append((route, method, status, seconds, size))
        if len(entries) >= self.batch:
            self.drain()

    def drain(self) -> None:
        """Add the finished requests to the metrics."""
        with self._lock:
            # A counted prefix, in place: requests finishing meanwhile stay for next time.
            entries = self.entries
            n = len(entries)
            if not n:
                return
            batch = entries[:n]
            del entries[:n]
        # Grouped first, with C-level passes where possible: then one labels() lookup and
        # one bulk record per series rather than per request.
        labels = self.requests.labels
        for key, count in Tally(map(_STATUS_KEY, batch)).items():
            labels(*key).inc(count)
        durations: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
        _group(durations, map(_PAIR, batch), map(_SECONDS, batch))
        sizes: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
        if self.size is not None:
            _group(sizes, map(_PAIR, batch), map(_SIZE, batch))
        for (route, method), values in durations.items():
            _observe_all(self.duration.labels(route, method), values)
        for (route, method), values in sizes.items():
            _observe_all(self.size.labels(route, method), values)  # type: ignore[union-attr]

    def clear(self) -> None:
        with self._lock:
            del self.entries[:]


_STATUS_KEY = itemgetter(0, 1, 2)
_PAIR = itemgetter(0, 1)
_SECONDS = itemgetter(3)
_SIZE = itemgetter(4)


def _group(groups: defaultdict[Any, list[Any]], keys: Iterable[Any], values: Iterable[Any]) -> None:
    """Append each value to the list of its key, in C: no Python code runs per value."""
    deque(map(list.append, map(groups.__getitem__, keys), values), maxlen=0)


def _observe_all(child: Any, values: list[float]) -> None:
    """Record ``values`` on a histogram child at once, or one by one on another type's."""
    bulk = getattr(child, "_observe_all", None)
    if bulk is not None:
        bulk(values)
    else:
        for value in values:
            child.observe(value)


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


class _InFlight(dict[str, list[None]]):
    """Per method, a list as long as the requests in flight: ``list.append`` and ``list.pop``
    are atomic under the GIL and cost less than a locked ``Gauge.inc``/``dec`` pair; the
    gauge reads the lengths when collected. Series appear per method on first use."""

    def __init__(self, gauge: Gauge) -> None:
        super().__init__()
        self._gauge = gauge

    def __missing__(self, method: str) -> list[None]:
        flight: list[None] = self.setdefault(method, [])
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

    def __init__(self) -> None:
        # id(route or endpoint) -> (it, its template, or None when several are possible);
        # the object is kept so that its id cannot be reused by another one.
        self._known: dict[int, tuple[Any, str | None]] = {}
        # id(route) -> its template, for routes with one template: what the middleware
        # looks up itself, without a call, on every request.
        self.by_route: dict[int, str] = {}
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
