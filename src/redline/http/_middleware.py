"""HTTPCacheMiddleware: Cache-Control policies, ETags, 304s, surrogate keys and a response cache.

Policies are found, first match wins: a ``@cache_policy`` mark on the endpoint, then
``policies`` (a callable, or a mapping of path patterns), then ``default``. A pattern is an
exact path (``"/about"``) or a prefix glob (``"/static/*"``, matching ``/static/`` and
everything below it, not ``/static``); the longest matching prefix wins, an exact path beats
any glob. The route is found before the app runs, from the app's own Starlette/FastAPI routes
(see ``_routing``), so a callable may read ``scope["endpoint"]`` and ``scope["path_params"]``;
for other apps the callable is asked again with the routed scope when the response starts.

A request then goes, in order: the policy's ``validator`` (a 304 without running the handler),
the response cache when one is configured (a hit without running the handler), the handler.
Only 2xx answers to GET and HEAD are touched. HEAD bodies are empty, so HEAD responses are only
answered 304 against an ETag the handler or a validator set.

The 304 and the hit are the paths that must be cheap, so per-request work is kept to one pass
over the request's headers and lookups: what depends only on a policy (its Cache-Control
values, its Vary, a 304's headers) is built with the policy, and what depends only on the
route (the policy from a path table or a mark, the rendered tags) once per matched route.
A ``policies`` callable may read anything in the scope, so it is asked on every request.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from datetime import datetime
from typing import Any, TypeVar

from redline._exceptions import RedlineError
from redline.http._conditional import not_modified, validators_from
from redline.http._headers import Headers, header_fields
from redline.http._policy import CachePolicy, shared_cache_may_store
from redline.http._responder import Decorator, Exchange, send_304
from redline.http._response_cache import DEFAULT_IGNORED_QUERY, ResponseCache
from redline.http._routing import RouteMatcher
from redline.http._surrogate import (
    SURROGATE_STYLES,
    SurrogateKeyError,
    check_surrogate_styles,
    surrogate_headers,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
PolicySource = Mapping[str, CachePolicy] | Callable[[Scope], CachePolicy | None]

log = logging.getLogger("redline.http")

_Endpoint = TypeVar("_Endpoint")
_POLICY_ATTRIBUTE = "__redline_cache_policy__"


class CacheRouteError(RedlineError, ValueError):
    """HTTPCacheMiddleware was configured with an invalid route pattern or option."""


def cache_policy(policy: CachePolicy) -> Callable[[_Endpoint], _Endpoint]:
    """Mark a Starlette/FastAPI endpoint with the policy HTTPCacheMiddleware applies to it."""
    if not isinstance(policy, CachePolicy):
        raise CacheRouteError(f"cache_policy({policy!r}): give a CachePolicy")

    def mark(endpoint: _Endpoint) -> _Endpoint:
        setattr(endpoint, _POLICY_ATTRIBUTE, policy)
        return endpoint

    return mark


class _RouteTable:
    """Path patterns to policies: exact paths, then '/prefix/*' globs, longest first."""

    def __init__(self, policies: Mapping[str, CachePolicy]) -> None:
        self._exact: dict[str, CachePolicy] = {}
        prefixes: list[tuple[str, CachePolicy]] = []
        for pattern, policy in policies.items():
            if not isinstance(policy, CachePolicy):
                raise CacheRouteError(f"policies[{pattern!r}] = {policy!r}: give a CachePolicy")
            if not isinstance(pattern, str) or not pattern.startswith("/"):
                raise CacheRouteError(f"policies key {pattern!r}: a path must start with '/'")
            if pattern.endswith("/*") and "*" not in pattern[:-1]:
                prefixes.append((pattern[:-1], policy))
            elif "*" in pattern:
                raise CacheRouteError(
                    f"policies key {pattern!r}: '*' is only allowed as a final '/*'"
                    " as in '/static/*'"
                )
            else:
                self._exact[pattern] = policy
        self._prefixes = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)

    def __call__(self, scope: Scope) -> CachePolicy | None:
        path = scope.get("path", "")
        policy = self._exact.get(path)
        if policy is not None:
            return policy
        for prefix, policy in self._prefixes:
            if path.startswith(prefix):
                return policy
        return None


class HTTPCacheMiddleware:
    """Pure ASGI middleware: policies, validators and 304s, surrogate keys, a response cache.

    ``cache`` (a :class:`redline.cache.Cache`) turns on the response cache; ``surrogate_keys``
    chooses the tag headers (``()`` for none); ``session_cookies`` names the cookies that make
    a request personal (None: any cookie does); ``ignored_query`` lists query parameters (globs
    such as ``"utm_*"``) left out of cache keys; ``cache_header`` names the HIT/MISS/STALE/BYPASS
    header (None for none); ``max_body`` bounds stored bodies; ``max_ttl`` bounds how long an
    entry is kept; ``router`` overrides the router whose routes are matched before the app runs.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        policies: PolicySource | None = None,
        default: CachePolicy | None = None,
        etag: bool = True,
        max_etag_body: int = 8 << 20,
        cache: Any = None,
        surrogate_keys: Iterable[str] = SURROGATE_STYLES,
        session_cookies: Iterable[str] | None = None,
        ignored_query: Iterable[str] = DEFAULT_IGNORED_QUERY,
        cache_header: str | None = "X-Cache",
        max_body: int = 1 << 20,
        max_ttl: int = 86400,
        router: Any = None,
    ) -> None:
        if default is not None and not isinstance(default, CachePolicy):
            raise CacheRouteError(f"default={default!r}: give a CachePolicy or None")
        _check_size("max_etag_body", max_etag_body)
        _check_size("max_body", max_body)
        _check_size("max_ttl", max_ttl)
        try:
            self.surrogate_keys = check_surrogate_styles(surrogate_keys)
        except SurrogateKeyError as exc:
            raise CacheRouteError(f"surrogate_keys: {exc}") from None
        if isinstance(session_cookies, str):
            raise CacheRouteError(
                f"session_cookies={session_cookies!r}: give a tuple of names, e.g. ('session',)"
            )
        self.session_cookies = None if session_cookies is None else frozenset(session_cookies)
        self.app = app
        self.default = default
        self.etag = etag
        self.max_etag_body = max_etag_body
        self._route_policy: Callable[[Scope], CachePolicy | None] = (
            policies if callable(policies) else _RouteTable(policies or {})
        )
        self.route_matcher = RouteMatcher(app, router)
        self._warned_ttl: set[int] = set()
        if cache is None:
            known = [default, *(() if callable(policies) else (policies or {}).values())]
            if any(p is not None and p.validator_ttl is not None for p in known):
                raise CacheRouteError(
                    "a policy sets validator_ttl, which remembers validators in the response"
                    " cache: pass cache=Cache.from_url(...)"
                )
        self.response_cache: ResponseCache | None = None
        if cache is not None:
            self.response_cache = ResponseCache(
                self,
                cache,
                ignored_query=ignored_query,
                header=cache_header,
                max_body=max_body,
                max_ttl=max_ttl,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        exchange = Exchange(self, scope)
        policy = exchange.policy
        if (
            policy is not None
            and policy.validator is not None
            and await self.validate(exchange, policy)
        ):
            await self.send_validated_304(exchange, policy, send)
            return
        if self.response_cache is not None and policy is not None:
            await self.response_cache.handle(exchange, receive, send)
            return
        send = exchange.conditional(send)
        await self.app(scope, receive, Decorator(exchange, send, scope).send)

    async def run(self, exchange: Exchange, app_scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app for ``exchange``, its response decorated on the way to ``send``."""
        await self.app(app_scope, receive, Decorator(exchange, send, app_scope).send)

    def policy_for(self, scope: Scope) -> CachePolicy | None:
        """The policy for a routed request: endpoint mark, then policies, then default."""
        return self.resolve_policy(scope)[0]

    def resolve_policy(self, scope: Scope) -> tuple[CachePolicy | None, bool]:
        """(:meth:`policy_for`, whether every request routed like ``scope`` gets that policy).

        The second is what lets a request reuse the policy resolved for its route before.
        """
        route = scope.get("route")
        for endpoint in (scope.get("endpoint"), getattr(route, "endpoint", None)):
            policy = getattr(endpoint, _POLICY_ATTRIBUTE, None)
            if isinstance(policy, CachePolicy):
                return policy, True
        policy = self._route_policy(scope)
        # A path table reads only the path, which a route match stands for; a callable may read
        # anything in the scope (headers, query), so it is asked on every request.
        fixed = type(self._route_policy) is _RouteTable
        return (self.default if policy is None else policy), fixed

    def is_personal(self, headers: Headers) -> bool:
        """Whether a request carries credentials: Authorization, or a session cookie."""
        fields = header_fields(headers)
        if b"authorization" in fields:
            return True
        cookies = fields.values_of(b"cookie")
        if self.session_cookies is None:
            return any(cookie.strip() for cookie in cookies)
        names = {item.split("=", 1)[0].strip() for cookie in cookies for item in cookie.split(";")}
        return not names.isdisjoint(self.session_cookies)

    async def validate(self, exchange: Exchange, policy: CachePolicy) -> bool:
        """Ask the route's validator; True when the request can be answered 304 right away."""
        assert policy.validator is not None
        try:
            if policy.validator_ttl is None:
                found = await self.ask_validator(exchange, policy)
            elif self.response_cache is None:
                self._warn_unremembered(policy)
                found = await self.ask_validator(exchange, policy)
            else:
                found = await self.response_cache.validators(
                    exchange, lambda: self.ask_validator(exchange, policy)
                )
            exchange.etag, exchange.last_modified = found
        except Exception:
            # A failing validator (its database is down, say) costs the shortcut, not the page.
            log.exception("validator of route %s failed; running the handler", exchange.template)
            return False
        return not_modified(
            exchange.fields,
            exchange.etag,
            exchange.last_modified,
            method=exchange.scope["method"],
        )

    async def ask_validator(
        self, exchange: Exchange, policy: CachePolicy
    ) -> tuple[str | None, datetime | None]:
        """Run the route's validator: (ETag, Last-Modified) from what it returns."""
        assert policy.validator is not None
        result = policy.validator(_request(exchange.view))
        if inspect.isawaitable(result):
            result = await result
        context = [exchange.fields.joined(name) for name in policy._vary_fields]
        return validators_from(result, context)

    def _warn_unremembered(self, policy: CachePolicy) -> None:
        if id(policy) not in self._warned_ttl:
            self._warned_ttl.add(id(policy))
            log.warning(
                "a policy sets validator_ttl=%s but HTTPCacheMiddleware has no cache= to"
                " remember validators in; asking the validator on every request",
                policy.validator_ttl,
            )

    async def send_validated_304(self, exchange: Exchange, policy: CachePolicy, send: Send) -> None:
        personal = exchange.personal
        headers = [*policy._bare[personal], *exchange.validator_headers()]
        # The validators do not change whether the 200 this stands for may be shared.
        if (
            exchange.tags
            and self.surrogate_keys
            and shared_cache_may_store(exchange.fields, 200, policy._bare_fields[personal])
        ):
            try:
                headers += surrogate_headers(exchange.tags, self.surrogate_keys)
            except SurrogateKeyError as exc:
                log.warning("route %s: %s", exchange.template, exc)
        await send_304(send, headers)


try:
    from starlette.requests import Request as _StarletteRequest
except ImportError:  # pragma: no cover - Starlette is in the web extra
    _StarletteRequest = None


def _request(scope: Scope) -> Any:
    """A validator's argument: a Starlette Request when Starlette is installed, else the scope."""
    return scope if _StarletteRequest is None else _StarletteRequest(scope)


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CacheRouteError(f"{name}={value!r}: give a whole number")
    if value < 0:
        raise CacheRouteError(f"{name}={value}: must be >= 0")
