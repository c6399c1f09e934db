"""``MetricsMiddleware``: requests, latency and requests in flight of any ASGI app, by route
template.

Pure ASGI, like Starlette's own middleware: it wraps any ASGI 3 app and imports nothing from
a framework at module import. Per HTTP request it records

- ``http_requests_total{route,method,status}`` (counter);
- ``http_request_duration_seconds{route,method}`` (histogram: classic buckets and the HDR
  quantiles, see ``Histogram``), from the request's arrival at the middleware to the last
  body message of the response handed to the server;
- ``http_requests_in_progress{method}`` (gauge) while the app runs: by method only, because
  the route is known only once the app has routed the request, and a label set chosen
  after the increment could not be decremented reliably;
- with ``response_size=True``, ``http_response_size_bytes{route,method}`` (histogram of body
  bytes; off by default, as in OpenTelemetry and starlette_exporter: 0.3 us a request).

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
left it, and ``None`` falls back to the detection above.

``status`` is the one of ``http.response.start``. A response that never completes counts as
499 (nginx's "client closed request") when the client disconnected first, else 500, and an
exception from the app is re-raised after being counted. An exception after the response
completed (a Starlette background task) does not change the status the client got; the
duration likewise ends with the response, not with the background tasks. Methods outside
the standard nine count as ``method="other"``. WebSocket and lifespan scopes, and paths in
``exclude`` (exactly, or below them: ``/metrics`` excludes ``/metrics/x``), pass through
untouched.
"""

from __future__ import annotations

import re
import sys
import weakref
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from time import perf_counter
from typing import Any

from redline.monitor._counter import Counter
from redline.monitor._exceptions import MetricError
from redline.monitor._gauge import Gauge
from redline.monitor._histogram import DEFAULT_BUCKETS, Histogram, exponential_buckets
from redline.monitor._metric import Metric
from redline.monitor._registry import REGISTRY, Registry

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "<unmatched>"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
SIZE_BUCKETS = exponential_buckets(256, 4, 8)
CLIENT_CLOSED = 499

_METHOD = {method: method for method in METHODS}


class MetricsMiddleware:
    """Records every HTTP request of ``app``: ``MetricsMiddleware(app, *, registry=REGISTRY,
    route_of=None, exclude=("/metrics",), buckets=DEFAULT_BUCKETS, response_size=False)``.

    In Starlette or FastAPI: ``app.add_middleware(MetricsMiddleware)``. Several middlewares
    on one registry (an app built twice in tests) share the metrics.
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
        self.requests = _metric(
            registry,
            Counter,
            "http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
        )
        self.duration = _metric(
            registry,
            Histogram,
            "http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte handed to the server.",
            ("route", "method"),
            buckets=buckets,
        )
        self.in_progress = _metric(
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
                Histogram,
                "http_response_size_bytes",
                "Bytes of response bodies, by route template and method.",
                ("route", "method"),
                buckets=SIZE_BUCKETS,
                scale=1,
                max_value=2.0**40,
            )
        self._in_flight = _InFlight.of(self.in_progress)
        # (route, method, status) -> the recording methods of its series.
        self._recorders: dict[tuple[str, str, int], tuple[Callable[..., None], ...]] = {}
        self._routes = _RouteTemplates()
        self._route = self._routes.template if route_of is None else self.route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if (
            path in self._exclude
            or path.startswith(self._exclude_below)
            or (scope.get("root_path") and self._below_root(scope))
        ):
            await self.app(scope, receive, send)
            return
        # The request's state lives in the cells of these two closures rather than in a
        # responder object: a trivial endpoint costs some 70 us under uvicorn, and the
        # object, its attributes and bound methods would add 0.5 us of it.
        method = _METHOD.get(scope["method"], "other")
        started = perf_counter()
        status = size = 0  # status: 0 before http.response.start, -1 once recorded
        trailers = disconnected = False

        async def receive_() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_(message: Message) -> None:
            nonlocal status, size, trailers, disconnected
            kind = message["type"]
            if kind == "http.response.body":
                size += len(message.get("body", b""))
                last = not message.get("more_body", False) and not trailers
            elif kind == "http.response.start":
                status = message["status"]
                trailers = message.get("trailers", False)
                last = False
            else:
                last = kind == "http.response.pathsend" or (
                    kind == "http.response.trailers" and not message.get("more_trailers", False)
                )
            try:
                await send(message)
            except OSError:
                # ASGI 2.4 servers raise OSError from send() once the client has gone.
                disconnected = True
                raise
            if last and status > 0:
                self._record(scope, method, status, perf_counter() - started, size)
                status = -1

        flight = self._in_flight[method]
        flight.append(None)
        try:
            await self.app(scope, receive_, send_)
        except BaseException:
            if status >= 0:
                failed = CLIENT_CLOSED if disconnected else 500
                self._record(scope, method, failed, perf_counter() - started, size)
            raise
        finally:
            flight.pop()
        if status >= 0:
            failed = CLIENT_CLOSED if disconnected else 500
            self._record(scope, method, failed, perf_counter() - started, size)

    def route(self, scope: Scope) -> str:
        """The ``route`` label of a handled request: ``route_of(scope)``, else the matched
        route's full template, else ``"<unmatched>"``."""
        if self.route_of is not None:
            name = self.route_of(scope)
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

    def _record(self, scope: Scope, method: str, status: int, seconds: float, size: int) -> None:
        key = (self._route(scope), method, status)
        recorders = self._recorders.get(key)
        if recorders is None:
            recorders = self._recorders_of(key)
        recorders[0]()
        recorders[1](seconds)
        if len(recorders) > 2:
            recorders[2](size)

    def _recorders_of(self, key: tuple[str, str, int]) -> tuple[Callable[..., None], ...]:
        route, method, status = key
        recorders: tuple[Callable[..., None], ...] = (
            self.requests.labels(route, method, status).inc,
            self.duration.labels(route, method).observe,
        )
        if self.response_size is not None:
            recorders += (self.response_size.labels(route, method).observe,)
        if len(self._recorders) >= 10_000:
            # A route_of that names raw paths would grow this without end.
            self._recorders.clear()
        self._recorders[key] = recorders
        return recorders


class _InFlight(dict[str, list[None]]):
    """Per method, a list as long as the requests in flight: ``list.append`` and ``list.pop``
    are atomic under the GIL and cost a tenth of a locked ``Gauge.inc``/``dec`` pair; the
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
    kind: type[Metric],
    name: str,
    documentation: str,
    labelnames: tuple[str, ...],
    **options: Any,
) -> Any:
    if registry is None:
        return kind(name, documentation, labelnames, registry=None, **options)
    metric = registry.get_or_create(
        name, kind, lambda: kind(name, documentation, labelnames, registry=None, **options)
    )
    wanted = kind(name, documentation, labelnames, registry=None, **options)
    if metric.labelnames != labelnames or getattr(metric, "buckets", ()) != getattr(
        wanted, "buckets", ()
    ):
        raise MetricError(
            f"{metric.kind} {name!r} is already in this registry with labels "
            f"{metric.labelnames} and buckets {getattr(metric, 'buckets', ())}; "
            f"MetricsMiddleware needs labels {labelnames} and buckets "
            f"{getattr(wanted, 'buckets', ())}: pass another registry= or the same buckets="
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
        # id(root router) -> (router, its _Tree)
        self._trees: dict[int, tuple[Any, _Tree]] = {}

    def template(self, scope: Scope) -> str:
        found = scope.get("route")
        by_endpoint = found is None
        if by_endpoint:
            found = scope.get("endpoint")
            if found is None:
                return UNMATCHED
        known = self._known.get(id(found))
        if known is not None and known[0] is found and known[1] is not None:
            return known[1]
        return self._resolve(scope, found, by_endpoint)

    def _resolve(self, scope: Scope, found: Any, by_endpoint: bool) -> str:
        candidates = self._candidates(scope.get("router"), found, by_endpoint)
        if not candidates:
            # Unreachable from the root router: a route's own template lacks only the
            # prefixes; an endpoint alone says nothing.
            template = None if by_endpoint else getattr(found, "path_format", None)
            template = template if isinstance(template, str) else UNMATCHED
            self._remember(found, template)
            return template
        templates = {candidate.template for candidate in candidates}
        if len(templates) == 1:
            template = templates.pop()
            self._remember(found, template)
            return template
        self._remember(found, None)
        path = scope.get("path", "")
        root = scope.get("app_root_path", scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        for candidate in candidates:
            if candidate.matches(path):
                return candidate.template
        return candidates[0].template

    def _remember(self, found: Any, template: str | None) -> None:
        if len(self._known) >= 10_000:
            # Routes or endpoints made per request would grow this without end.
            self._known.clear()
        self._known[id(found)] = (found, template)

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
        from starlette.routing import Host, Mount

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
