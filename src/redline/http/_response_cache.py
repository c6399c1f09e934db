"""The response cache: whole responses in redline.cache, served without running the handler.

Entries live in the same two-tier :class:`redline.cache.Cache` as the app's data, tagged with
the route's tags, so one ``await cache.invalidate_tags("fund:7")`` drops both the fund's data
and every response built from it. An entry is a msgpack map (the cache's codec; pickle is
refused) of status, headers, body, the time it was made and its freshness, ``stale-while-
revalidate`` and ``stale-if-error`` windows, kept for their sum (at most ``max_ttl``).

What may be stored follows RFC 9111 for a shared cache, stricter where a server-side cache
must be: only 2xx answers to GET with an explicit ``s-maxage``/``max-age``, never with
``Set-Cookie``, ``no-store``, ``no-cache`` or ``private``, never for a request with
Authorization or a session cookie, unless the route names the user with ``vary_user``; then
the user is part of the key and private responses are kept for that user alone.

The key is the method, the route template, the path parameters, the query (sorted by name,
blank and ignored parameters dropped), scheme, host, root path, the values of the policy's
Vary request headers and the user. ``Cookie`` and ``Authorization`` are never keyed on: a
request either carries no session (and shares the anonymous entry) or is user-keyed.

Timeline of an entry, with ``max-age=F, stale-while-revalidate=W, stale-if-error=E``::

    0 ─── F: HIT ─── F+W: STALE, one background refresh ─── F+E: handler; STALE if it fails
    after max(F+W, F+E): MISS

Concurrent misses for one key in one process wait for a single handler run (coalescing);
another process may run the handler once more. Redis being down costs only hits: the cache
degrades to its L1, and a failing cache read or write is logged, never raised.

A policy's ``validator_ttl`` also keeps the validator's answer (ETag, Last-Modified) here,
under ``validator:`` + the response's key and the same tags, so that a revalidation is
answered without the validator's query until a write invalidates a tag. Keys themselves are
remembered per request shape (bounded), since the query parsing and hashing behind them
would otherwise be most of a hit's cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import lru_cache
from time import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgpack

from redline.http._conditional import http_date, parse_etags
from redline.http._headers import header_values
from redline.http._policy import parse_cache_control, shared_cache_may_store
from redline.http._responder import UNKNOWN, Exchange, Message, Send

if TYPE_CHECKING:
    from redline.http._middleware import HTTPCacheMiddleware, Receive

log = logging.getLogger("redline.http")
_FILLING: ContextVar[bool] = ContextVar("redline.http.filling", default=False)


def filling_response_cache() -> bool:
    """True while the handler runs to fill the response cache (a miss, or a background
    refresh of a stale entry): what it answers is about to be stored, under the route's tags,
    and served without the handler until they are invalidated. A handler that also caches
    the same data itself (cache-aside under the same tags) may skip that second copy: it
    would cost a cache lookup and a write on every miss and serve nothing the response cache
    does not. False for a request that bypasses the response cache (a session cookie, a
    route without a shared policy), where the handler's own cache is what there is. If the
    response turns out not storable (an error status, ``Set-Cookie``), nothing is kept."""
    return _FILLING.get()


Validators = tuple[str | None, datetime | None]

DEFAULT_IGNORED_QUERY = ("utm_*", "fbclid", "gclid", "msclkid")
_FORMAT = 1
_KEY_PREFIX = "http"
# A remembered validator lives under its response's key with this in front.
_VALIDATOR_PREFIX = "validator:"
# Preconditions other than the two the cache answers itself, and ranges: such requests are
# passed to the handler untouched, which alone knows how to answer them.
_BYPASS_REQUEST = frozenset({b"if-match", b"if-unmodified-since", b"if-range", b"range"})
_CONDITIONAL = (b"if-none-match", b"if-modified-since")
_TIMES = ("stored", "fresh", "swr", "sie")
# Keys computed for recent requests, by what they are computed from: bounded in number, and
# only for query strings short enough that the memo cannot grow large.
_MAX_MEMO_KEYS = 4096
_MAX_MEMO_QUERY = 512
# Never stored: recomputed per response, or about one connection only.
_NOT_STORED = frozenset(
    {b"age", b"date", b"connection", b"keep-alive", b"transfer-encoding", b"set-cookie"}
)


class _Key:
    """Where a request's response lives in the cache, and who it belongs to."""

    __slots__ = ("key", "user_keyed", "vary")

    def __init__(self, key: str, user_keyed: bool, vary: frozenset[str]) -> None:
        self.key = key
        self.user_keyed = user_keyed
        self.vary = vary


class ResponseCache:
    """Looks up, coalesces, stores and refreshes responses for HTTPCacheMiddleware."""

    def __init__(
        self,
        middleware: HTTPCacheMiddleware,
        cache: Any,
        *,
        ignored_query: Iterable[str],
        header: str | None,
        max_body: int,
        max_ttl: int,
    ) -> None:
        from redline.http._middleware import CacheRouteError

        for method in ("get", "set", "invalidate_tags"):
            if not callable(getattr(cache, method, None)):
                raise CacheRouteError(f"cache={cache!r}: give a redline.cache.Cache")
        codec = getattr(getattr(cache, "_codec", None), "name", "msgpack")
        if codec != "msgpack":
            # Entries hold bytes, which JSON cannot, and unpickling what Redis returns would
            # let anyone able to write to Redis run code in every app process.
            raise CacheRouteError(
                f"cache uses the {codec!r} codec; the response cache stores msgpack entries:"
                " give it a Cache with codec='msgpack' (the default)"
            )
        if isinstance(ignored_query, str):
            raise CacheRouteError(f"ignored_query={ignored_query!r}: give a tuple of names")
        self.middleware = middleware
        self.cache = cache
        self.ignored_query = tuple(ignored_query)
        self.header = None if header is None else header.lower().encode("latin-1")
        self.max_body = max_body
        self.max_ttl = max_ttl
        self._flights: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned: set[tuple[str, str]] = set()
        self._keys: dict[tuple[Any, ...], _Key] = {}

    # -- requests ---------------------------------------------------------------------------

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        policy = exchange.policy
        assert policy is not None
        if policy.visibility == "no-store" or (
            policy.visibility == "private" and policy.vary_user is None
        ):
            await self.middleware.run(exchange, exchange.scope, receive, exchange.conditional(send))
            return
        key = self.key_for(exchange)
        if key is None:
            await self.pass_through(exchange, receive, send, "BYPASS")
            return
        now = time()
        stale = None
        entry = await self.read(key.key)
        if entry is not None and self.outdated(exchange, entry):
            entry = None
        if entry is not None:
            age = now - entry["stored"]
            fresh = entry["fresh"]
            if age < fresh:
                await self.serve(exchange, send, entry, "HIT", now)
                return
            if age < fresh + entry["swr"]:
                await self.serve(exchange, send, entry, "STALE", now)
                self.refresh_later(exchange, key, entry)
                return
            if age < fresh + entry["sie"]:
                stale = entry
        if exchange.scope["method"] != "GET":
            # A HEAD answer has no body to store; it waits for nobody and fills nothing.
            await self.pass_through(exchange, receive, send, "MISS")
            return
        flight = self._flights.get(key.key)
        if flight is not None:
            # shield: a waiter whose client went away must not cancel the others' result.
            result = await asyncio.shield(flight)
            if result is not None:
                served, label = result
                await self.serve(exchange, send, served, "HIT" if label == "MISS" else label)
                return
            await self.pass_through(exchange, receive, send, "MISS")
            return
        flight = asyncio.get_running_loop().create_future()
        self._flights[key.key] = flight
        try:
            await self.fill(exchange, key, receive, send, stale, flight)
        finally:
            if self._flights.get(key.key) is flight:
                del self._flights[key.key]
            if not flight.done():
                flight.set_result(None)

    async def pass_through(
        self, exchange: Exchange, receive: Receive, send: Send, label: str
    ) -> None:
        extra = [(self.header, label.encode())] if self.header else []
        await self.middleware.run(
            exchange, exchange.scope, receive, exchange.conditional(send, extra)
        )

    def key_for(self, exchange: Exchange) -> _Key | None:
        """The request's cache key, or None when this request must not use the cache."""
        key = exchange.cache_key
        if key is UNKNOWN:
            key = exchange.cache_key = self._key_for(exchange)
        return key

    def _key_for(self, exchange: Exchange) -> _Key | None:
        scope = exchange.scope
        policy = exchange.policy
        assert policy is not None
        fields = exchange.fields
        if not _BYPASS_REQUEST.isdisjoint(fields):
            return None
        if b"cache-control" in fields and "no-store" in parse_cache_control(
            fields.values_of(b"cache-control")
        ):
            return None
        user = None
        if policy.vary_user is not None:
            try:
                user = policy.vary_user(exchange.view)
            except Exception:
                log.exception("vary_user of route %s failed; not caching", exchange.template)
                return None
        if user is None and exchange.personal:
            # Credentials but no user to key on: this response may be anyone's.
            return None
        vary, vary_names = _keyed_vary(policy.vary)
        match = exchange.match
        params: tuple[tuple[str, str], ...] = ()
        if match is not None:
            params = match.derived.get("key_params", params)
            if not params and match.path_params:
                params = match.derived["key_params"] = tuple(
                    sorted((str(k), str(v)) for k, v in match.path_params.items())
                )
        query_string = scope.get("query_string", b"")
        # Everything the key is computed from; the same inputs give the same key, so a request
        # like an earlier one skips the query parsing and hashing.
        inputs = (
            exchange.template,
            scope.get("scheme", "http"),
            fields.joined(b"host"),
            scope.get("root_path", ""),
            params,
            query_string,
            tuple(fields.joined(name) for name in vary_names),
            None if user is None else str(user),
        )
        key = self._keys.get(inputs)
        if key is None:
            parts = [
                inputs[1],
                inputs[2],
                inputs[3],
                [list(pair) for pair in params],
                self.query(query_string),
                [[name, value] for name, value in zip(sorted(vary), inputs[6], strict=True)],
                inputs[7],
            ]
            digest = hashlib.blake2b(
                msgpack.packb(parts, use_bin_type=True), digest_size=20
            ).hexdigest()
            key = _Key(f"{_KEY_PREFIX}:GET:{exchange.template}:{digest}", user is not None, vary)
            if len(query_string) <= _MAX_MEMO_QUERY:
                if len(self._keys) >= _MAX_MEMO_KEYS:
                    del self._keys[next(iter(self._keys))]
                self._keys[inputs] = key
        return key

    def query(self, query_string: bytes) -> list[tuple[str, str]]:
        """The query as the key sees it: blank and ignored parameters dropped, sorted by name."""
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        kept = [
            (name, value)
            for name, value in pairs
            if value and not any(fnmatchcase(name, pattern) for pattern in self.ignored_query)
        ]
        # A stable sort: repeated parameters keep their order, which may carry meaning.
        kept.sort(key=lambda pair: pair[0])
        return kept

    @staticmethod
    def outdated(exchange: Exchange, entry: dict[str, Any]) -> bool:
        """Whether the route's validator says the stored response is no longer current."""
        if exchange.etag is None and exchange.last_modified is None:
            return False
        headers = entry["headers"]
        if exchange.etag is not None and header_values(headers, "etag") != [exchange.etag]:
            return True
        return exchange.last_modified is not None and header_values(headers, "last-modified") != [
            http_date(exchange.last_modified)
        ]

    # -- remembered validators -------------------------------------------------------------

    async def validators(
        self, exchange: Exchange, ask: Callable[[], Awaitable[Validators]]
    ) -> Validators:
        """The route's validators, remembered under its tags when its policy says so.

        ``ask`` runs the validator; its exceptions reach the caller. The cache's
        ``get_or_set`` runs it once per process for concurrent requests, and an invalidation
        that lands while it runs leaves its answer stale, never current.
        """
        policy = exchange.policy
        assert policy is not None and policy.validator_ttl is not None
        key = None if exchange.untaggable or not exchange.tags else self.key_for(exchange)
        if key is None:
            return await ask()

        async def load() -> dict[str, Any]:
            try:
                etag, modified = await ask()
            except Exception as exc:
                raise _ValidatorFailed(exc) from exc
            return {
                "v": _FORMAT,
                "etag": etag,
                "modified": None if modified is None else modified.timestamp(),
            }

        try:
            remembered = await self.cache.get_or_set(
                _VALIDATOR_PREFIX + key.key, load, ttl=policy.validator_ttl, tags=exchange.tags
            )
        except _ValidatorFailed as failed:
            raise failed.error from None
        except Exception:
            log.warning(
                "remembering the validator of route %s failed; asking it",
                exchange.template,
                exc_info=True,
            )
            return await ask()
        found = _validators_of(remembered)
        if found is None:
            log.warning(
                "remembered validator of route %s is malformed; asking it", exchange.template
            )
            return await ask()
        return found

    # -- filling ----------------------------------------------------------------------------

    async def fill(
        self,
        exchange: Exchange,
        key: _Key,
        receive: Receive,
        send: Send | None,
        stale: dict[str, Any] | None,
        flight: asyncio.Future[Any],
    ) -> None:
        """Run the handler once for ``key``, store what may be stored, answer ``send``."""
        # The cache answers conditional requests itself, after storing the full response.
        app_scope = {
            **exchange.scope,
            "headers": [
                (k, v) for k, v in exchange.scope.get("headers", []) if k not in _CONDITIONAL
            ],
        }
        capture = _Capture(self, exchange, key, send, stale, flight)
        filling = _FILLING.set(True)
        try:
            await self.middleware.run(exchange, app_scope, receive, capture.send)
        except Exception:
            if stale is None or capture.forwarded:
                raise
            log.exception(
                "route %s failed; serving its stale response (stale-if-error)", exchange.template
            )
            await capture.serve_stale()
        finally:
            _FILLING.reset(filling)

    def refresh_later(self, exchange: Exchange, key: _Key, entry: dict[str, Any]) -> None:
        """Refresh ``key`` in the background, once however many stale hits ask."""
        if key.key in self._flights:
            return
        flight = asyncio.get_running_loop().create_future()
        self._flights[key.key] = flight
        task = asyncio.create_task(self._refresh(exchange, key, entry, flight))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(
        self, exchange: Exchange, key: _Key, entry: dict[str, Any], flight: asyncio.Future[Any]
    ) -> None:
        done = asyncio.Event()
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        try:
            await self.fill(exchange, key, receive, None, entry, flight)
        except Exception:
            log.exception("background refresh of route %s failed", exchange.template)
        finally:
            done.set()
            if self._flights.get(key.key) is flight:
                del self._flights[key.key]
            if not flight.done():
                flight.set_result(None)

    def lifetimes(
        self, exchange: Exchange, key: _Key, status: int, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, int, int] | None:
        """(fresh, stale-while-revalidate, stale-if-error) seconds, or None: do not store."""
        if not 200 <= status < 300 or status == 206 or exchange.untaggable:
            return None
        cc = parse_cache_control(header_values(headers, "cache-control"))
        if "no-store" in cc or "no-cache" in cc or header_values(headers, "set-cookie"):
            return None
        if key.user_keyed:
            # A private cache for this one user: only max-age counts (RFC 9111 §5.2.2.10).
            vary = {v.strip() for line in header_values(headers, "vary") for v in line.split(",")}
            if "*" in vary:
                return None
            fresh = cc.get("max-age")
        else:
            if not shared_cache_may_store(exchange.scope.get("headers", []), status, headers):
                return None
            fresh = cc.get("s-maxage") if isinstance(cc.get("s-maxage"), int) else cc.get("max-age")
        if not isinstance(fresh, int) or fresh <= 0:
            return None
        unkeyed = (
            {
                name.strip().lower()
                for line in header_values(headers, "vary")
                for name in line.split(",")
                if name.strip()
            }
            - key.vary
            - {"cookie", "authorization"}
        )
        if unkeyed:
            warning = (exchange.template, ",".join(sorted(unkeyed)))
            if warning not in self._warned:
                self._warned.add(warning)
                log.warning(
                    "route %s: the response varies on %s, which its policy's vary does not"
                    " name, so the response cache cannot tell the variants apart and does"
                    " not store them; add them to CachePolicy.vary",
                    *warning,
                )
            return None
        if "must-revalidate" in cc or "proxy-revalidate" in cc:
            return fresh, 0, 0
        return fresh, _seconds(cc.get("stale-while-revalidate")), _seconds(cc.get("stale-if-error"))

    # -- storage ----------------------------------------------------------------------------

    async def read(self, key: str) -> dict[str, Any] | None:
        try:
            entry = await self.cache.get(key)
        except Exception:
            log.warning(
                "response cache read of %r failed; treating it as a miss", key, exc_info=True
            )
            return None
        return entry if _well_formed(entry) else None

    async def write(self, key: _Key, entry: dict[str, Any], tags: tuple[str, ...]) -> None:
        ttl = min(entry["fresh"] + max(entry["swr"], entry["sie"]), self.max_ttl)
        if ttl <= 0:
            return
        try:
            await self.cache.set(key.key, entry, ttl=ttl, tags=tags)
        except Exception:
            log.warning("response cache write of %r failed", key.key, exc_info=True)

    async def serve(
        self,
        exchange: Exchange,
        send: Send,
        entry: dict[str, Any],
        label: str,
        now: float | None = None,
    ) -> None:
        """Answer from ``entry``: Age and the cache header added, 304 when it validates."""
        headers = [(k, v) for k, v in entry["headers"]]
        if label != "MISS":
            age = max(0, int((time() if now is None else now) - entry["stored"]))
            headers.append((b"age", str(age).encode()))
        if self.header:
            headers.append((self.header, label.encode()))
        body = entry["body"] if exchange.scope["method"] == "GET" else b""
        send = exchange.conditional(send)
        await send({"type": "http.response.start", "status": entry["status"], "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


class _Capture:
    """The handler's response on its way to the client: held whole to store it, or passed on."""

    def __init__(
        self,
        cache: ResponseCache,
        exchange: Exchange,
        key: _Key,
        send: Send | None,
        stale: dict[str, Any] | None,
        flight: asyncio.Future[Any],
    ) -> None:
        self.cache = cache
        self.exchange = exchange
        self.key = key
        self.client = send
        # What is not stored still gets its 304 when it validates.
        self.passthrough = None if send is None else exchange.conditional(send)
        self.stale = stale
        self.flight = flight
        # "hold": kept whole to store; "pass": streamed on; "error": a 5xx that a stale response
        # replaces; "drop": answered already, the rest is ignored.
        self.mode = "hold"
        self.start: Message | None = None
        self.lifetimes: tuple[int, int, int] | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.forwarded = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self.on_start(message)
            return
        if self.mode == "drop":
            return
        if self.mode == "error":
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await self.serve_stale()
            return
        if self.mode == "pass" or message["type"] != "http.response.body":
            await self.release()
            await self.forward(message)
            return
        body = message.get("body", b"")
        self.chunks.append(body)
        self.size += len(body)
        if self.size > self.cache.max_body:
            await self.release(more_body=message.get("more_body", False))
        elif not message.get("more_body", False):
            await self.complete()

    async def on_start(self, message: Message) -> None:
        status = message["status"]
        headers = list(message.get("headers", []))
        if status >= 500 and self.stale is not None:
            # stale-if-error: the error's body is dropped and the stale response answered.
            self.mode = "error"
            return
        self.lifetimes = self.cache.lifetimes(self.exchange, self.key, status, headers)
        lengths = header_values(headers, "content-length")
        if lengths and lengths[0].isdigit() and int(lengths[0]) > self.cache.max_body:
            self.lifetimes = None
        self.start = message
        self.mode = "hold" if self.lifetimes is not None else "pass"
        if self.mode == "pass":
            await self.release()

    async def release(self, *, more_body: bool = True) -> None:
        """Stop holding: send what was held on and stream the rest."""
        if self.mode == "pass" and self.forwarded:
            return
        self.mode = "pass"
        if not self.forwarded and self.start is not None:
            start = self.start
            if self.cache.header:
                headers = [*start.get("headers", []), (self.cache.header, b"MISS")]
                start = {**start, "headers": headers}
            await self.forward(start)
        if self.chunks:
            body, self.chunks = b"".join(self.chunks), []
            await self.forward({"type": "http.response.body", "body": body, "more_body": more_body})

    async def forward(self, message: Message) -> None:
        self.forwarded = True
        if self.passthrough is not None:
            await self.passthrough(message)

    async def complete(self) -> None:
        assert self.start is not None and self.lifetimes is not None
        fresh, swr, sie = self.lifetimes
        entry = {
            "v": _FORMAT,
            "status": self.start["status"],
            "headers": [
                [k, v] for k, v in self.start.get("headers", []) if k.lower() not in _NOT_STORED
            ],
            "body": b"".join(self.chunks),
            "stored": time(),
            "fresh": fresh,
            "swr": swr,
            "sie": sie,
        }
        self.chunks = []
        self.mode = "drop"
        if not self.flight.done():
            self.flight.set_result((entry, "MISS"))
        if self.client is not None:
            self.forwarded = True
            await self.cache.serve(self.exchange, self.client, entry, "MISS")
        await self.cache.write(self.key, entry, self.exchange.tags or ())

    async def serve_stale(self) -> None:
        assert self.stale is not None
        if not self.flight.done():
            self.flight.set_result((self.stale, "STALE"))
        if self.client is not None:
            await self.cache.serve(self.exchange, self.client, self.stale, "STALE")
        self.mode = "drop"


@lru_cache(maxsize=256)
def _keyed_vary(vary: tuple[str, ...]) -> tuple[frozenset[str], tuple[bytes, ...]]:
    """The Vary names a key holds, lowercased, and the request fields to read for them, sorted.

    ``Cookie`` and ``Authorization`` are never keyed on (see the module docstring).
    """
    names = frozenset(name.lower() for name in vary) - {"cookie", "authorization"}
    return names, tuple(name.encode("latin-1") for name in sorted(names))


class _ValidatorFailed(Exception):
    """Carries a validator's own exception through the cache's loader machinery."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _validators_of(value: object) -> Validators | None:
    """(ETag, Last-Modified) from a remembered entry, or None when it is malformed (Redis is
    not trusted: an ETag goes into a header, so it must be exactly one entity-tag)."""
    if type(value) is not dict or value.get("v") != _FORMAT:
        return None
    etag, modified = value.get("etag"), value.get("modified")
    if etag is not None and (type(etag) is not str or parse_etags(etag) != [etag]):
        return None
    if modified is None:
        return etag, None
    if type(modified) not in (int, float):
        return None
    try:
        return etag, datetime.fromtimestamp(modified, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _seconds(value: object) -> int:
    return value if isinstance(value, int) else 0


def _well_formed(entry: object) -> bool:
    """Whether a value read from the cache is an entry of this format (Redis is not trusted)."""
    if type(entry) is not dict or entry.get("v") != _FORMAT:
        return False
    try:
        if not (
            type(entry["status"]) is int
            and type(entry["body"]) is bytes
            and all(isinstance(entry[name], (int, float)) for name in _TIMES)
        ):
            return False
        for pair in entry["headers"]:
            if not (
                type(pair) in (list, tuple)
                and len(pair) == 2
                and type(pair[0]) is bytes
                and type(pair[1]) is bytes
            ):
                return False
    except (KeyError, TypeError):
        return False
    return True
