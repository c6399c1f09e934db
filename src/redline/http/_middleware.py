"""HTTPCacheMiddleware: Cache-Control policies, strong ETags and 304s for any ASGI app.

Policies are found, first match wins: a ``@cache_policy`` mark on the routed endpoint, then
``policies`` (a callable, or a mapping of path patterns), then ``default``. A pattern is an
exact path (``"/about"``) or a prefix glob (``"/static/*"``, matching ``/static/`` and
everything below it, not ``/static``); the longest matching prefix wins, an exact path beats
any glob. Both are matched against ``scope["path"]`` after the app has routed the request, so a
callable may read ``scope["endpoint"]`` and ``scope["path_params"]``.

Only 2xx answers to GET and HEAD are touched. HEAD bodies are empty, so HEAD responses are only
answered 304 against an ETag the handler set itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypeVar

from redline._exceptions import RedlineError
from redline.http._conditional import not_modified, strong_etag
from redline.http._policy import CachePolicy, header_values

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
PolicySource = Mapping[str, CachePolicy] | Callable[[Scope], CachePolicy | None]

_Endpoint = TypeVar("_Endpoint")
_POLICY_ATTRIBUTE = "__redline_cache_policy__"
# RFC 9110 §15.4.5: a 304 carries the validators and caching fields of the 200 it stands for,
# but no representation metadata, which would describe a body that is not there.
_NOT_IN_304 = frozenset(
    {
        b"content-length",
        b"content-type",
        b"content-encoding",
        b"content-language",
        b"content-range",
        b"transfer-encoding",
    }
)


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
    """Pure ASGI middleware adding Cache-Control, Vary and strong ETags, and answering 304."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        policies: PolicySource | None = None,
        default: CachePolicy | None = None,
        etag: bool = True,
        max_etag_body: int = 8 << 20,
    ) -> None:
        if default is not None and not isinstance(default, CachePolicy):
            raise CacheRouteError(f"default={default!r}: give a CachePolicy or None")
        if isinstance(max_etag_body, bool) or not isinstance(max_etag_body, int):
            raise CacheRouteError(f"max_etag_body={max_etag_body!r}: give a number of bytes")
        if max_etag_body < 0:
            raise CacheRouteError(f"max_etag_body={max_etag_body}: must be >= 0")
        self.app = app
        self.default = default
        self.etag = etag
        self.max_etag_body = max_etag_body
        self._route_policy: Callable[[Scope], CachePolicy | None] = (
            policies if callable(policies) else _RouteTable(policies or {})
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Responder(self, scope, send).send)

    def policy_for(self, scope: Scope) -> CachePolicy | None:
        """The policy for a routed request: endpoint mark, then policies, then default."""
        route = scope.get("route")
        for endpoint in (scope.get("endpoint"), getattr(route, "endpoint", None)):
            policy = getattr(endpoint, _POLICY_ATTRIBUTE, None)
            if isinstance(policy, CachePolicy):
                return policy
        policy = self._route_policy(scope)
        return self.default if policy is None else policy


class _Responder:
    """One response on its way out: headers decided at start, body buffered for the ETag."""

    def __init__(self, middleware: HTTPCacheMiddleware, scope: Scope, send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self.downstream = send
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.mode = "pass"  # "buffer" while hashing, "swallow" once a 304 has been sent

    async def send(self, message: Message) -> None:
        if self.mode == "swallow":
            return
        if message["type"] == "http.response.start":
            await self.on_start(message)
            return
        if self.mode != "buffer":
            await self.downstream(message)
            return
        if message["type"] != "http.response.body":
            await self.release(more_body=True)
            await self.downstream(message)
            return
        body = message.get("body", b"")
        self.chunks.append(body)
        self.size += len(body)
        if not message.get("more_body", False):
            await self.finish()
        elif self.size > self.middleware.max_etag_body:
            # Too big to hold: the body streams on untagged rather than sitting in memory.
            await self.release(more_body=True)

    async def on_start(self, message: Message) -> None:
        status = message["status"]
        headers = list(message.get("headers", []))
        if not 200 <= status < 300:
            await self.downstream(message)
            return
        policy = self.middleware.policy_for(self.scope)
        if policy is not None:
            headers = self.apply(policy, headers)
        start = {**message, "headers": headers}
        etags = header_values(headers, "etag")
        if etags:
            if self.is_not_modified(etags[0]):
                await self.send_304(headers)
            else:
                await self.downstream(start)
            return
        lengths = header_values(headers, "content-length")
        if (
            self.middleware.etag
            and self.scope["method"] == "GET"
            # 206 is a part of the representation and 204 has none: neither gets a body hash.
            and status not in (204, 206)
            # no-store means nothing is kept to revalidate, so hashing would be wasted work.
            and (policy is None or policy.visibility != "no-store")
            and not (
                lengths and lengths[0].isdigit() and int(lengths[0]) > self.middleware.max_etag_body
            )
        ):
            self.start = start
            self.mode = "buffer"
            return
        await self.downstream(start)

    def apply(
        self, policy: CachePolicy, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """Headers with the policy's Cache-Control (unless the handler set one) and Vary."""
        if not header_values(headers, "cache-control"):
            request = self.scope.get("headers", [])
            personal = header_values(request, "authorization") or header_values(request, "cookie")
            if policy.visibility == "public" and (personal or header_values(headers, "set-cookie")):
                # Secure by default: a response to a credentialed request, or one setting a
                # cookie, may be one user's data; a shared cache must never hand it to another.
                # The browser may still keep it for max-age, so only public/s-maxage go.
                policy = dataclasses.replace(policy, visibility="private", s_maxage=None)
            headers.append((b"cache-control", policy.header().encode("latin-1")))
        if policy.vary:
            present = [
                name.strip()
                for line in header_values(headers, "vary")
                for name in line.split(",")
                if name.strip()
            ]
            lowered = {name.lower() for name in present}
            missing = [name for name in policy.vary if name.lower() not in lowered]
            if missing and "*" not in lowered:
                merged = ["*"] if "*" in missing else present + missing
                headers = [(k, v) for k, v in headers if k.lower() != b"vary"]
                headers.append((b"vary", ", ".join(merged).encode("latin-1")))
        return headers

    def is_not_modified(self, etag: str) -> bool:
        return not_modified(self.scope.get("headers", []), etag, method=self.scope["method"])

    async def send_304(self, headers: list[tuple[bytes, bytes]]) -> None:
        kept = [(k, v) for k, v in headers if k.lower() not in _NOT_IN_304]
        await self.downstream({"type": "http.response.start", "status": 304, "headers": kept})
        await self.downstream({"type": "http.response.body", "body": b"", "more_body": False})
        self.mode = "swallow"

    async def finish(self) -> None:
        assert self.start is not None
        body = b"".join(self.chunks)
        etag = strong_etag(body)
        headers = [*self.start["headers"], (b"etag", etag.encode("latin-1"))]
        self.mode = "pass"
        if self.is_not_modified(etag):
            await self.send_304(headers)
            return
        await self.downstream({**self.start, "headers": headers})
        await self.downstream({"type": "http.response.body", "body": body, "more_body": False})

    async def release(self, *, more_body: bool) -> None:
        assert self.start is not None
        self.mode = "pass"
        await self.downstream(self.start)
        if self.chunks:
            body = b"".join(self.chunks)
            await self.downstream(
                {"type": "http.response.body", "body": body, "more_body": more_body}
            )
        self.chunks = []
