"""Finding the route a request will reach before the app runs.

A validator's 304 and a response-cache hit must be decided without calling the app, yet both
depend on the route: its policy, its path parameters, its template. So the middleware asks the
app's own route objects, in the app's order, as Starlette's router would:
``route.matches(scope)``, descending into mounted routers and FastAPI's included routers (whose
expansion :mod:`redline.monitor` already knows). Results are kept in a bounded LRU keyed by
what routing reads (method, path, root path, host), so the usual request costs one dict lookup.
Apps without Starlette-style routes match nothing here; their policies come from path patterns.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("redline.http")

Scope = MutableMapping[str, Any]
_MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Where routing will send a request: the route, its full template and what it adds."""

    route: Any
    endpoint: Any
    template: str
    child_scope: dict[str, Any]
    # What the middleware derives from this match once and reuses for every request that
    # routes here (its policy, rendered tags, surrogate headers); see Exchange.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def path_params(self) -> dict[str, Any]:
        return self.child_scope.get("path_params", {})


class RouteMatcher:
    """Matches requests against an app's routes before the app runs; see the module docstring."""

    def __init__(self, app: Any, router: Any = None, max_entries: int = 4096) -> None:
        self._router = router if router is not None else _router_of(app)
        self._max_entries = max_entries
        self._memo: OrderedDict[tuple[Any, ...], RouteMatch | None] = OrderedDict()

    def match(self, scope: Scope, host: bytes | None = None) -> RouteMatch | None:
        """The route ``scope`` will reach, or None (no router, no route, or wrong method).

        ``host`` is the request's Host header when the caller has read it already.
        """
        router = self._router or _router_of(scope.get("app"))
        if router is None:
            return None
        routes = getattr(router, "routes", ())
        key = (
            id(router),
            len(routes),
            scope.get("method"),
            scope.get("path"),
            scope.get("root_path", ""),
            _host(scope) if host is None else host,
        )
        memo = self._memo
        try:
            found = memo[key]
        except KeyError:
            pass
        else:
            memo.move_to_end(key)
            return found
        try:
            found = _walk(routes, scope, "", 0)
        except Exception:
            # A custom route whose matches() fails must not take the request down with it.
            log.exception("matching %r against the app's routes failed", scope.get("path"))
            found = None
        memo[key] = found
        if len(memo) > self._max_entries:
            memo.popitem(last=False)
        return found


def _router_of(app: Any) -> Any:
    """The router of a Starlette/FastAPI app (or the app itself when it is a router)."""
    if app is None:
        return None
    router = getattr(app, "router", None)
    if router is not None and hasattr(router, "routes"):
        return router
    return app if isinstance(getattr(app, "routes", None), list) else None


def _host(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return value
    return b""


def _walk(routes: Iterable[Any], scope: Scope, prefix: str, depth: int) -> RouteMatch | None:
    from starlette.routing import Host, Match, Mount

    from redline.monitor._middleware import _flatten

    if depth > _MAX_DEPTH:
        return None
    for item in _flatten(routes):
        match, child = item.matches(scope)
        if match is not Match.FULL:
            # PARTIAL is a path match with the wrong method: Starlette keeps looking for a full
            # match and otherwise answers 405, which is nothing to cache.
            continue
        route = getattr(item, "original_route", item)
        children = getattr(item, "routes", None) or ()
        merged = {**scope, **child}
        if isinstance(route, Mount) and children:
            mount = item.path_format.removesuffix("/{path}")
            return _nested(children, merged, child, prefix + mount, depth)
        if isinstance(route, Host) and children:
            return _nested(children, merged, child, prefix, depth)
        template = prefix + (getattr(item, "path_format", None) or "")
        return RouteMatch(route, child.get("endpoint"), template, {**child, "route": route})
    return None


def _nested(
    routes: Iterable[Any], merged: Scope, child: dict[str, Any], prefix: str, depth: int
) -> RouteMatch | None:
    # Starlette does not backtrack out of a matched mount: no inner route means a 404.
    inner = _walk(routes, merged, prefix, depth + 1)
    if inner is None:
        return None
    return RouteMatch(inner.route, inner.endpoint, inner.template, {**child, **inner.child_scope})
