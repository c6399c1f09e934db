"""One request on its way through HTTPCacheMiddleware, and the two stages its response passes.

``Exchange`` holds what is known before the app runs: the matched route, its policy, its tags
and the validator's answer. A response then passes ``Decorator`` (the policy's Cache-Control
and Vary, the validator's ETag and Last-Modified or a content hash, surrogate keys) and, last,
``Conditional`` (a 304 when the request's validators match). Keeping the 304 in its own last
stage lets the response cache capture the full 200 of a conditional request, store it, and
still answer that request with a 304.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redline.http._conditional import http_date, not_modified, parse_http_date, strong_etag
from redline.http._policy import CachePolicy, header_values, shared_cache_may_store
from redline.http._surrogate import SurrogateKeyError, surrogate_headers

if TYPE_CHECKING:
    from redline.http._middleware import HTTPCacheMiddleware
    from redline.http._routing import RouteMatch

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("redline.http")

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


class Exchange:
    """What the middleware knows about one GET/HEAD request before the app runs."""

    __slots__ = (
        "middleware",
        "scope",
        "match",
        "view",
        "template",
        "policy",
        "personal",
        "tags",
        "untaggable",
        "etag",
        "last_modified",
    )

    def __init__(self, middleware: HTTPCacheMiddleware, scope: Scope) -> None:
        self.middleware = middleware
        self.scope = scope
        match: RouteMatch | None = middleware.route_matcher.match(scope)
        self.match = match
        # The scope as the endpoint will see it: endpoint, route and path_params filled in.
        self.view: Scope = {**scope, **match.child_scope} if match is not None else scope
        self.template: str = match.template if match is not None else scope.get("path", "")
        self.policy = middleware.policy_for(self.view)
        self.personal = middleware.is_personal(scope.get("headers", []))
        self.tags: tuple[str, ...] | None = None
        self.untaggable = False
        self.etag: str | None = None
        self.last_modified: datetime | None = None
        if match is not None and self.policy is not None and self.policy.tags:
            self.render_tags(self.policy, match.path_params)

    def render_tags(self, policy: CachePolicy, path_params: Any) -> tuple[str, ...]:
        """The policy's tags for these path parameters (a missing one is a config error)."""
        try:
            self.tags = policy.tags_for(path_params, self.template)
        except SurrogateKeyError as exc:
            # A path parameter too long for a tag: this response cannot be purged by tag, so
            # it carries no surrogate keys and the response cache does not keep it.
            log.warning("route %s: %s; not tagging or storing this response", self.template, exc)
            self.tags = ()
            self.untaggable = True
        return self.tags

    def validator_headers(self) -> list[tuple[bytes, bytes]]:
        headers = []
        if self.etag is not None:
            headers.append((b"etag", self.etag.encode("latin-1")))
        if self.last_modified is not None:
            headers.append((b"last-modified", http_date(self.last_modified).encode("latin-1")))
        return headers


class Decorator:
    """Adds policy headers, validators and surrogate keys to 2xx responses; hashes bodies."""

    def __init__(self, exchange: Exchange, downstream: Send, app_scope: Scope) -> None:
        self.exchange = exchange
        self.middleware = exchange.middleware
        self.app_scope = app_scope
        self.downstream = downstream
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.buffering = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self.on_start(message)
            return
        if not self.buffering:
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
        if not 200 <= status < 300:
            await self.downstream(message)
            return
        headers = list(message.get("headers", []))
        exchange = self.exchange
        policy = exchange.policy
        if policy is None:
            # No policy was found before routing: the routed scope may resolve one now.
            policy = exchange.policy = self.middleware.policy_for(self.app_scope)
        if policy is not None:
            headers = self.apply(policy, headers)
        if exchange.etag is not None or exchange.last_modified is not None:
            # The validator's tags win over the handler's: they are what a later request is
            # answered 304 against before the handler runs.
            replaced = {name for name, _ in exchange.validator_headers()}
            headers = [(k, v) for k, v in headers if k.lower() not in replaced]
            headers += exchange.validator_headers()
        if policy is not None and policy.tags:
            tags = exchange.tags
            if tags is None:
                tags = exchange.render_tags(policy, self.app_scope.get("path_params") or {})
            headers += self.surrogate_keys(tags, status, headers)
        start = {**message, "headers": headers}
        lengths = header_values(headers, "content-length")
        if (
            self.middleware.etag
            and not header_values(headers, "etag")
            and self.app_scope["method"] == "GET"
            # 206 is a part of the representation and 204 has none: neither gets a body hash.
            and status not in (204, 206)
            # no-store means nothing is kept to revalidate, so hashing would be wasted work.
            and (policy is None or policy.visibility != "no-store")
            and not (
                lengths and lengths[0].isdigit() and int(lengths[0]) > self.middleware.max_etag_body
            )
        ):
            self.start = start
            self.buffering = True
            return
        await self.downstream(start)

    def apply(
        self, policy: CachePolicy, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """Headers with the policy's Cache-Control (unless the handler set one) and Vary."""
        return policy_headers(policy, headers, self.exchange.personal)

    def surrogate_keys(
        self, tags: tuple[str, ...], status: int, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """Surrogate-key headers, only on responses a shared cache may store."""
        styles = self.middleware.surrogate_keys
        if not tags or not styles:
            return []
        if not shared_cache_may_store(self.exchange.scope.get("headers", []), status, headers):
            return []
        try:
            return surrogate_headers(tags, styles)
        except SurrogateKeyError as exc:
            log.warning(
                "route %s: %s; not tagging or storing this response", self.exchange.template, exc
            )
            self.exchange.untaggable = True
            return []

    async def finish(self) -> None:
        assert self.start is not None
        body = b"".join(self.chunks)
        headers = [*self.start["headers"], (b"etag", strong_etag(body).encode("latin-1"))]
        self.buffering = False
        await self.downstream({**self.start, "headers": headers})
        await self.downstream({"type": "http.response.body", "body": body, "more_body": False})

    async def release(self, *, more_body: bool) -> None:
        assert self.start is not None
        self.buffering = False
        await self.downstream(self.start)
        if self.chunks:
            body = b"".join(self.chunks)
            await self.downstream(
                {"type": "http.response.body", "body": body, "more_body": more_body}
            )
        self.chunks = []


def policy_headers(
    policy: CachePolicy, headers: list[tuple[bytes, bytes]], personal: bool
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus the policy's Cache-Control (unless already set) and Vary."""
    if not header_values(headers, "cache-control"):
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


class Conditional:
    """The last stage: answers 304 when the request's validators match a 2xx response."""

    def __init__(
        self, scope: Scope, downstream: Send, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.scope = scope
        self.downstream = downstream
        self.extra = extra or []
        self.swallow = False

    async def send(self, message: Message) -> None:
        if self.swallow:
            return
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), *self.extra]
            if 200 <= message["status"] < 300 and self.is_not_modified(headers):
                await send_304(self.downstream, headers)
                self.swallow = True
                return
            message = {**message, "headers": headers}
        await self.downstream(message)

    def is_not_modified(self, headers: list[tuple[bytes, bytes]]) -> bool:
        etags = header_values(headers, "etag")
        modified = header_values(headers, "last-modified")
        return not_modified(
            self.scope.get("headers", []),
            etags[0] if etags else None,
            parse_http_date(modified[0]) if modified else None,
            method=self.scope["method"],
        )


async def send_304(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    """A 304 carrying ``headers`` minus the representation metadata."""
    kept = [(k, v) for k, v in headers if k.lower() not in _NOT_IN_304]
    await send({"type": "http.response.start", "status": 304, "headers": kept})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
