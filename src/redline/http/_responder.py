"""One request on its way through HTTPCacheMiddleware, and the two stages its response passes.

``Exchange`` holds what is known before the app runs: the matched route, its policy, its tags
and the validator's answer. A response then passes ``Decorator`` (the policy's Cache-Control
and Vary, the validator's ETag and Last-Modified or a content hash, surrogate keys) and, last,
``Conditional`` (a 304 when the request's validators match). Keeping the 304 in its own last
stage lets the response cache capture the full 200 of a conditional request, store it, and
still answer that request with a 304.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redline._routes import ROUTE_TEMPLATE_KEY
from redline.http._conditional import http_date, not_modified, parse_http_date, strong_etag_bytes
from redline.http._headers import HeaderFields, header_values
from redline.http._policy import CachePolicy, shared_cache_may_store
from redline.http._surrogate import SurrogateKeyError, surrogate_headers

if TYPE_CHECKING:
    from redline.http._middleware import HTTPCacheMiddleware
    from redline.http._routing import RouteMatch

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("redline.http")
# Not worked out yet (None is a valid answer for what it stands in for).
UNKNOWN: Any = object()

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
    """What the middleware knows about one GET/HEAD request before the app runs.

    The request's headers are read once, into ``fields``. What depends only on the route (its
    policy when no ``policies`` callable decides it, its rendered tags) is derived on the first
    request to reach that route and kept on the route match, so later requests look it up.
    """

    __slots__ = (
        "middleware",
        "scope",
        "fields",
        "match",
        "template",
        "policy",
        "personal",
        "tags",
        "untaggable",
        "etag",
        "last_modified",
        "cache_key",
        "_view",
    )

    def __init__(self, middleware: HTTPCacheMiddleware, scope: Scope) -> None:
        self.middleware = middleware
        self.scope = scope
        self.fields = fields = HeaderFields(scope.get("headers", []))
        host = fields.get(b"host")
        match: RouteMatch | None = middleware.route_matcher.match(scope, host[0] if host else b"")
        self.match = match
        if match is not None:
            # For middleware outside this one (redline.monitor's route label): a 304 or a
            # cache hit never reaches the router that would otherwise say where it went.
            scope[ROUTE_TEMPLATE_KEY] = match.template
        self._view: Scope | None = None
        self.template: str = match.template if match is not None else scope.get("path", "")
        self.personal = (b"authorization" in fields or b"cookie" in fields) and (
            middleware.is_personal(fields)
        )
        self.tags: tuple[str, ...] | None = None
        self.untaggable = False
        self.etag: str | None = None
        self.last_modified: datetime | None = None
        # The response cache's key, worked out when first needed (see ResponseCache.key_for).
        self.cache_key: Any = UNKNOWN
        if match is None:
            policy = middleware.policy_for(scope)
        else:
            policy = match.derived.get("policy", UNKNOWN)
            if policy is UNKNOWN:
                policy, fixed = middleware.resolve_policy(self.view)
                if fixed:
                    match.derived["policy"] = policy
        self.policy = policy
        if match is not None and policy is not None and policy.tags:
            derived = match.derived.get("tags")
            if derived is not None and derived[0] is policy:
                _, self.tags, self.untaggable = derived
            else:
                self.render_tags(policy, match.path_params)
                match.derived["tags"] = (policy, self.tags, self.untaggable)

    @property
    def view(self) -> Scope:
        """The scope as the endpoint will see it: endpoint, route and path_params filled in."""
        view = self._view
        if view is None:
            match = self.match
            view = self._view = {**self.scope, **match.child_scope} if match else self.scope
        return view

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

    def conditional(self, send: Send, extra: list[tuple[bytes, bytes]] | None = None) -> Send:
        """``send`` behind the :class:`Conditional` stage, unless it has nothing to do."""
        if not extra and not _is_conditional(self.fields):
            return send
        return Conditional(self.scope, send, extra, self.fields).send


class Decorator:
    """Adds policy headers, validators and surrogate keys to 2xx responses; hashes bodies."""

    __slots__ = (
        "exchange",
        "middleware",
        "app_scope",
        "downstream",
        "start",
        "chunks",
        "size",
        "buffering",
    )

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
            start = self.decorate(message)
            if start is not None:
                await self.downstream(start)
            return
        if not self.buffering:
            await self.downstream(message)
            return
        if message["type"] != "http.response.body":
            await self.release(more_body=True)
            await self.downstream(message)
            return
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if self.chunks:
                self.chunks.append(body)
                body = b"".join(self.chunks)
            await self.finish(body)
            return
        self.chunks.append(body)
        self.size += len(body)
        if self.size > self.middleware.max_etag_body:
            # Too big to hold: the body streams on untagged rather than sitting in memory.
            await self.release(more_body=True)

    def decorate(self, message: Message) -> Message | None:
        """The response start to send on, or None when it is held until the body is hashed."""
        status = message["status"]
        if not 200 <= status < 300:
            return message
        headers = list(message.get("headers", []))
        # Read once; every change below keeps ``fields`` in step with ``headers``.
        fields = HeaderFields(headers)
        exchange = self.exchange
        policy = exchange.policy
        if policy is None:
            # No policy was found before routing: the routed scope may resolve one now.
            policy = exchange.policy = self.middleware.policy_for(self.app_scope)
        if policy is not None:
            headers = policy_headers(policy, headers, exchange.personal, fields)
        if exchange.etag is not None or exchange.last_modified is not None:
            # The validator's tags win over the handler's: they are what a later request is
            # answered 304 against before the handler runs.
            validators = exchange.validator_headers()
            replaced = {name for name, _ in validators}
            headers = [(k, v) for k, v in headers if k.lower() not in replaced]
            headers += validators
            for name, value in validators:
                fields[name] = [value]
        if policy is not None and policy.tags:
            tags = exchange.tags
            if tags is None:
                tags = exchange.render_tags(policy, self.app_scope.get("path_params") or {})
            headers += self.surrogate_keys(tags, status, fields)
        start = {**message, "headers": headers}
        lengths = fields.get(b"content-length")
        if (
            self.middleware.etag
            and b"etag" not in fields
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
            return None
        return start

    def surrogate_keys(
        self, tags: tuple[str, ...], status: int, headers: HeaderFields
    ) -> list[tuple[bytes, bytes]]:
        """Surrogate-key headers, only on responses a shared cache may store."""
        styles = self.middleware.surrogate_keys
        if not tags or not styles:
            return []
        if not shared_cache_may_store(self.exchange.fields, status, headers):
            return []
        try:
            return surrogate_headers(tags, styles)
        except SurrogateKeyError as exc:
            log.warning(
                "route %s: %s; not tagging or storing this response", self.exchange.template, exc
            )
            self.exchange.untaggable = True
            return []

    async def finish(self, body: bytes) -> None:
        """Send the held start with the ETag of ``body``, the whole body, then ``body``."""
        start = self.start
        assert start is not None
        # start is this stage's own copy of the message, free to change.
        start["headers"].append((b"etag", strong_etag_bytes(body)))
        self.buffering = False
        self.chunks = []
        await self.downstream(start)
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
    policy: CachePolicy,
    headers: list[tuple[bytes, bytes]],
    personal: bool,
    fields: HeaderFields,
) -> list[tuple[bytes, bytes]]:
    """``headers`` (read into ``fields``) plus the policy's Cache-Control, unless already set,
    and Vary; ``fields`` is updated to match."""
    if b"cache-control" not in fields:
        # A response setting a cookie is as personal as a credentialed request (see CachePolicy).
        value = policy._cache_control[personal or b"set-cookie" in fields]
        headers.append((b"cache-control", value))
        fields[b"cache-control"] = [value]
    if not policy.vary:
        return headers
    if b"vary" not in fields:
        assert policy._vary_value is not None
        headers.append((b"vary", policy._vary_value))
        fields[b"vary"] = [policy._vary_value]
        return headers
    present = [
        name.strip()
        for line in fields.values_of(b"vary")
        for name in line.split(",")
        if name.strip()
    ]
    lowered = {name.lower() for name in present}
    missing = [name for name in policy.vary if name.lower() not in lowered]
    if missing and "*" not in lowered:
        merged = ", ".join(["*"] if "*" in missing else present + missing).encode("latin-1")
        headers = [(k, v) for k, v in headers if k.lower() != b"vary"]
        headers.append((b"vary", merged))
        fields[b"vary"] = [merged]
    return headers


def _is_conditional(fields: HeaderFields) -> bool:
    return b"if-none-match" in fields or b"if-modified-since" in fields


class Conditional:
    """The last stage: answers 304 when the request's validators match a 2xx response."""

    __slots__ = ("scope", "downstream", "extra", "fields", "check", "swallow")

    def __init__(
        self,
        scope: Scope,
        downstream: Send,
        extra: list[tuple[bytes, bytes]] | None = None,
        fields: HeaderFields | None = None,
    ) -> None:
        self.scope = scope
        self.downstream = downstream
        self.extra = extra or []
        self.fields = HeaderFields(scope.get("headers", [])) if fields is None else fields
        self.check = _is_conditional(self.fields)
        self.swallow = False

    async def send(self, message: Message) -> None:
        if self.swallow:
            return
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), *self.extra]
            if self.check and 200 <= message["status"] < 300 and self.is_not_modified(headers):
                await send_304(self.downstream, headers)
                self.swallow = True
                return
            message = {**message, "headers": headers}
        await self.downstream(message)

    def is_not_modified(self, headers: list[tuple[bytes, bytes]]) -> bool:
        etags = header_values(headers, "etag")
        modified = header_values(headers, "last-modified")
        return not_modified(
            self.fields,
            etags[0] if etags else None,
            parse_http_date(modified[0]) if modified else None,
            method=self.scope["method"],
        )


async def send_304(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    """A 304 carrying ``headers`` minus the representation metadata."""
    kept = [(k, v) for k, v in headers if k.lower() not in _NOT_IN_304]
    await send({"type": "http.response.start", "status": 304, "headers": kept})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
