"""CompressionMiddleware: zstd, br and gzip negotiated per RFC 9110, with ETags kept correct.

Why not reuse one from PyPI: Starlette's ``GZipMiddleware`` only speaks gzip and matches
``"gzip" in Accept-Encoding`` as a substring, so ``gzip;q=0`` gets gzip. ``starlette-compress``
adds zstd and br but reads Accept-Encoding the same way (q-values ignored); ``brotli-asgi`` is
br with Starlette's gzip behind it, matches the same way, and compresses even responses that
already have a Content-Encoding. None of them touches ETags: a compressed body goes out under the
strong ETag of the uncompressed one, which RFC 9110 §8.8.3 forbids (a strong validator names
one exact byte sequence) and which lets a byte-range ``If-Range`` splice identity bytes into a
gzip stream. None honours ``Cache-Control: no-transform``. So this one is written here; the
codecs are the ecosystem's (stdlib ``zlib``, ``zstandard``, ``brotli``).

Negotiation (``negotiate_encoding``), RFC 9110 §12.5.3: each of our codings gets the q of its
own entry, else the q of ``*``, else is refused; ``x-gzip`` means gzip. The highest q above 0
wins, ties going to the server's order (``encodings``). Identity competes only when the client
names it (``identity;q=1, gzip;q=0.5`` gets identity); otherwise it is the fallback. Decisions
where the RFC leaves a choice:

- No Accept-Encoding at all gets identity, as from nginx, Apache and every CDN: the RFC
  allows any coding then, but clients that send none are scripts that may not decode one.
- When identity is refused (``identity;q=0``, or ``*;q=0`` without an identity entry) and
  none of our codings is acceptable, the response goes out in identity anyway rather than as a
  406 (§12.5.3 allows both): it is the same answer images and small bodies get, and an error
  page in place of readable data helps nobody.

What is never compressed: responses that already have a Content-Encoding; 1xx, 204, 206 and
304 (no body, or a byte range of the identity representation); any Content-Range; responses
with ``Cache-Control: no-transform``; responses without a Content-Type, and media types the
``compressible`` predicate rejects (by default an allow-list of text types: images, video,
archives and ``text/event-stream`` stay as they are); bodies known to be under
``minimum_size`` (from Content-Length or a single body message; these get no Vary either, as
no client would get them encoded); ``http.response.pathsend`` files. A one-shot body whose
compressed form is not smaller is sent as it was. A HEAD response gets the headers the GET
would get (Content-Encoding, weak ETag, Vary) without a Content-Length, which only
compressing the body would tell, and no body.

Headers of a compressed response: Content-Encoding; ``Vary: Accept-Encoding`` merged into any
Vary (also on the identity answers to clients that did not accept a coding, so that a shared
cache keeps the variants apart); Content-Length set to the compressed size, or removed when the
body streams; Accept-Ranges removed (ranges of the identity bytes mean nothing in a gzip
stream); Content-MD5, Digest, Content-Digest and Repr-Digest removed (they describe the
uncompressed bytes). A strong ETag ``"x"`` becomes weak ``W/"x"``: the compressed bytes are a
different byte sequence with the same meaning, which is what a weak validator says. This is
the design that keeps 304s working behind ``HTTPCacheMiddleware``: a client holding the gzip
variant sends ``If-None-Match: W/"x"``, which the cache middleware compares weakly with the
``"x"`` it computes from the uncompressed body (RFC 9110 §13.1.2). The 304 on its way back is
given ``W/"x"`` again, and Vary, when the client holds the weak tag and negotiates a coding, so
that its cache freshens the variant it has. (Per-coding strong tags such as ``"x-gzip"``, as
Apache's mod_deflate makes, need the request header rewritten on the way in and are known to
break 304s when anything else forgets to.)

BREACH: over TLS, a compressed body holding both a secret (a CSRF token) and text an attacker
can reflect into it leaks the secret through its length. Such routes should send
``Cache-Control: no-transform``, which this middleware honours, or keep the secret out of
compressed bodies; nothing here pads lengths.

Order: this middleware goes outside ``HTTPCacheMiddleware`` (it wraps it), so that ETags are
computed on the uncompressed body and a 304 is decided before any compression work:
``CompressionMiddleware(HTTPCacheMiddleware(app, ...))``, i.e. first in Starlette's
``middleware=[...]`` list, or added last with ``app.add_middleware``.

Streaming bodies (``more_body``) are compressed message by message, each flushed, so that what
the app sends as it goes still reaches the client as it goes; nothing is buffered beyond the
message in hand. Each streaming response holds one compressor for its lifetime: about 1 MB for
zstd level 3, less for gzip; high zstd levels cost tens of MB per stream, which is another
reason long-lived event streams are not compressed by default. Bodies or chunks of
``thread_minimum_size`` bytes or more are compressed in a worker thread (the codecs release the
GIL) so that a large export does not stall every other request on the event loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from functools import lru_cache
from typing import Any

import zstandard

from redline._exceptions import RedlineError
from redline.http._conditional import parse_etags

try:
    import brotli
except ImportError:  # pragma: no cover - exercised only where the extra is not installed
    brotli = None

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

CODINGS = ("zstd", "br", "gzip")
# Fast levels for dynamic responses: each is within a few % of its codec's best ratio on JSON
# at a fraction of the CPU (see benchmarks/compress_bench.py).
DEFAULT_LEVELS: Mapping[str, int] = {"zstd": 3, "br": 4, "gzip": 6}
# RFC 9659 §3: a zstd-encoded response must decode within an 8 MB window; levels above 19 use
# larger windows, which browsers may refuse.
_LEVEL_RANGES = {"zstd": (-7, 19), "br": (0, 11), "gzip": (1, 9)}
_ALIASES = {"x-gzip": "gzip"}
_QVALUE = re.compile(r"0(?:\.[0-9]*)?|1(?:\.0*)?")

_COMPRESSIBLE_TYPES = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/graphql",
        "application/sql",
        "application/x-www-form-urlencoded",
        "application/rtf",
        "application/wasm",
        "application/x-protobuf",
        "application/vnd.ms-fontobject",
        "font/otf",
        "font/ttf",
        "font/collection",
        "image/bmp",
        "image/x-icon",
        "image/vnd.microsoft.icon",
    }
)
_COMPRESSIBLE_SUFFIXES = ("+json", "+xml", "+yaml")
# Dropped from a compressed response: its length changes, byte ranges of the identity body
# mean nothing in the compressed one, and digests describe the bytes before compression.
_DROPPED = frozenset(
    {
        b"content-length",
        b"accept-ranges",
        b"content-md5",
        b"digest",
        b"content-digest",
        b"repr-digest",
    }
)
_WATCHED = frozenset(
    {
        b"content-encoding",
        b"content-range",
        b"cache-control",
        b"content-type",
        b"content-length",
        b"vary",
        b"etag",
    }
)


class CompressionError(RedlineError, ValueError):
    """CompressionMiddleware was configured with an invalid option."""


def is_compressible(content_type: str) -> bool:
    """Whether a media type is worth compressing: text and structured text, not media or archives.

    ``text/event-stream`` is left out: an event stream lives as long as its connection and
    would hold a compressor's memory all that time for a few bytes saved per event.
    """
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type.startswith("text/"):
        return media_type != "text/event-stream"
    return media_type in _COMPRESSIBLE_TYPES or media_type.endswith(_COMPRESSIBLE_SUFFIXES)


@lru_cache(maxsize=512)
def _parse_accept_encoding(value: str) -> tuple[dict[str, float], float | None]:
    """Coding -> q for the listed codings, and the q of ``*`` (None when absent)."""
    listed: dict[str, float] = {}
    star: float | None = None
    for element in value.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        if params:
            name, _, weight = params.partition("=")
            weight = weight.strip()
            if name.strip().lower() != "q" or not _QVALUE.fullmatch(weight):
                # A malformed entry grants nothing.
                continue
            q = float(weight)
        coding = _ALIASES.get(coding, coding)
        if coding == "*":
            star = q if star is None else min(star, q)
        else:
            # A coding listed twice keeps its lower weight: a refusal is never overridden.
            listed[coding] = min(q, listed.get(coding, q))
    return listed, star


def negotiate_encoding(
    accept_encoding: str | None, available: Iterable[str] = CODINGS
) -> str | None:
    """The coding to send for this Accept-Encoding, from ``available`` (best first); None: identity.

    See the module docstring for the rules, which follow RFC 9110 §12.5.3.
    """
    if accept_encoding is None:
        return None
    listed, star = _parse_accept_encoding(accept_encoding)
    best, best_q = None, 0.0
    for coding in available:
        q = listed.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best is not None and "identity" in listed and listed["identity"] > best_q:
        return None
    return best


class _Codec:
    """One coding at one level: whole bodies, and flushed streams."""

    def __init__(self, name: str, level: int) -> None:
        self.name = name
        self.level = level
        self._local = threading.local()

    def compress(self, body: bytes) -> bytes:
        if self.name == "gzip":
            return zlib.compress(body, self.level, wbits=31)
        if self.name == "br":
            return brotli.compress(body, quality=self.level)
        # A zstd context is costly to create and must not be shared across threads.
        compressor = getattr(self._local, "zstd", None)
        if compressor is None:
            compressor = self._local.zstd = zstandard.ZstdCompressor(level=self.level)
        return compressor.compress(body)

    def stream(self) -> _Stream:
        return _Stream(self.name, self.level)


class _Stream:
    """An incremental compressor whose every chunk is flushed to a decodable boundary."""

    def __init__(self, name: str, level: int) -> None:
        self.name = name
        if name == "gzip":
            self._compressor: Any = zlib.compressobj(level, zlib.DEFLATED, 31)
        elif name == "br":
            self._compressor = brotli.Compressor(quality=level)
        else:
            self._compressor = zstandard.ZstdCompressor(level=level).compressobj()

    def chunk(self, data: bytes) -> bytes:
        compressor = self._compressor
        if self.name == "gzip":
            return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.name == "br":
            return compressor.process(data) + compressor.flush()
        return compressor.compress(data) + compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self, data: bytes) -> bytes:
        compressor = self._compressor
        if self.name == "br":
            return compressor.process(data) + compressor.finish()
        return compressor.compress(data) + compressor.flush()


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CompressionError(f"{name}={value!r}: give a number of bytes >= 0")
    return value


class CompressionMiddleware:
    """Pure ASGI middleware compressing responses with zstd, br or gzip, as the client accepts.

    ``encodings`` are the codings offered, preferred first; by default zstd, br (when the
    ``brotli`` package is installed: ``pip install redline[brotli]``) and gzip. ``levels``
    overrides the default levels per coding (zstd 3, br 4, gzip 6).
    ``compressible(content_type)`` decides which media types are compressed (default
    ``is_compressible``). Bodies under ``minimum_size`` bytes are sent as they are; bodies and
    stream chunks of ``thread_minimum_size`` bytes or more are compressed in a worker thread.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        minimum_size: int = 1024,
        encodings: Iterable[str] | None = None,
        levels: Mapping[str, int] | None = None,
        compressible: Callable[[str], bool] = is_compressible,
        thread_minimum_size: int = 256 * 1024,
    ) -> None:
        self.app = app
        # Below about one TCP segment compression saves no round trip, only CPU.
        self.minimum_size = _check_size("minimum_size", minimum_size)
        self.thread_minimum_size = _check_size("thread_minimum_size", thread_minimum_size)
        if not callable(compressible):
            raise CompressionError(f"compressible={compressible!r}: give a callable(content_type)")
        self.compressible = compressible
        self.encodings = self._check_encodings(encodings)
        chosen = {**DEFAULT_LEVELS, **self._check_levels(levels)}
        self._codecs = {name: _Codec(name, chosen[name]) for name in self.encodings}

    @staticmethod
    def _check_encodings(encodings: Iterable[str] | None) -> tuple[str, ...]:
        if encodings is None:
            return tuple(name for name in CODINGS if name != "br" or brotli is not None)
        if isinstance(encodings, str | bytes):
            raise CompressionError(
                f"encodings={encodings!r}: give a sequence of codings, e.g. ('zstd', 'gzip')"
            )
        names = tuple(encodings)
        for name in names:
            if name not in CODINGS:
                raise CompressionError(
                    f"encodings: unknown coding {name!r}; choose from {', '.join(CODINGS)}"
                )
            if name == "br" and brotli is None:
                raise CompressionError(
                    "encodings: 'br' needs the brotli package: pip install 'redline[brotli]'"
                )
        if len(set(names)) != len(names):
            raise CompressionError(f"encodings={names!r}: each coding may appear once")
        if not names:
            raise CompressionError("encodings=(): give at least one coding")
        return names

    @staticmethod
    def _check_levels(levels: Mapping[str, int] | None) -> dict[str, int]:
        if levels is None:
            return {}
        if not isinstance(levels, Mapping):
            raise CompressionError(f"levels={levels!r}: give a mapping such as {{'gzip': 6}}")
        for name, level in levels.items():
            if name not in _LEVEL_RANGES:
                raise CompressionError(
                    f"levels: unknown coding {name!r}; choose from {', '.join(CODINGS)}"
                )
            low, high = _LEVEL_RANGES[name]
            if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
                raise CompressionError(
                    f"levels[{name!r}]={level!r}: give a whole number from {low} to {high}"
                )
        return dict(levels)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept = _request_header(scope, b"accept-encoding")
        coding = negotiate_encoding(accept, self.encodings)
        responder = _Responder(self, scope, None if coding is None else self._codecs[coding], send)
        await self.app(scope, receive, responder.send)

    async def run(self, function: Callable[[bytes], bytes], data: bytes) -> bytes:
        """``function(data)``, in a worker thread when data is large enough to stall the loop."""
        if len(data) >= self.thread_minimum_size:
            return await asyncio.to_thread(function, data)
        return function(data)


def _request_header(scope: Scope, name: bytes) -> str | None:
    """One request field, its lines joined by commas; None when absent."""
    values = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    return b", ".join(values).decode("latin-1") if values else None


def _scan(headers: Headers) -> dict[bytes, list[bytes]]:
    """The response fields this middleware reads, found in one pass."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        name = name.lower()
        if name in _WATCHED:
            found.setdefault(name, []).append(value)
    return found


def _merged_vary(values: list[bytes]) -> bytes | None:
    """Vary with Accept-Encoding added, or None when it already covers Accept-Encoding."""
    present = [name.strip() for line in values for name in line.split(b",") if name.strip()]
    lowered = {name.lower() for name in present}
    if b"*" in lowered or b"accept-encoding" in lowered:
        return None
    return b", ".join([*present, b"Accept-Encoding"])


def _rewritten(
    headers: Headers,
    *,
    vary: bytes | None,
    weaken: bool = False,
    drop: frozenset[bytes] = frozenset(),
    add: Headers | None = None,
) -> Headers:
    """headers with a new Vary (unless None), the ETag weakened, fields dropped and added."""
    result = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in drop or (vary is not None and lowered == b"vary"):
            continue
        if weaken and lowered == b"etag" and value.startswith(b'"'):
            value = b"W/" + value
        result.append((name, value))
    if vary is not None:
        result.append((b"vary", vary))
    return result + (add or [])


class _Responder:
    """One response on its way out: the start held until the first body says how big it is."""

    def __init__(
        self, middleware: CompressionMiddleware, scope: Scope, codec: _Codec | None, send: Send
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self.codec = codec
        self.downstream = send
        self.start: Message = {}
        self.fields: dict[bytes, list[bytes]] = {}
        self.stream: _Stream | None = None
        self.mode = "start"  # then "held", and finally "pass", "compress" or "empty"

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.mode == "start" and kind == "http.response.start":
            await self.on_start(message)
        elif self.mode == "held":
            if kind == "http.response.body":
                await self.on_first_body(message)
            else:
                # A file sent by path (or any other extension) is not ours to compress.
                self.mode = "pass"
                await self.downstream(self.start)
                await self.downstream(message)
        elif self.mode == "compress" and kind == "http.response.body":
            await self.on_stream_body(message)
        elif self.mode == "empty" and kind == "http.response.body":
            await self.downstream({**message, "body": b""})
        else:
            await self.downstream(message)

    def eligible(self, status: int) -> bool:
        fields = self.fields
        if status < 200 or status in (204, 206, 304):
            return False
        if b"content-encoding" in fields or b"content-range" in fields:
            return False
        directives = {
            part.strip().lower()
            for line in fields.get(b"cache-control", ())
            for part in line.split(b",")
        }
        if b"no-transform" in directives:
            return False
        content_type = fields.get(b"content-type")
        return bool(content_type) and bool(
            self.middleware.compressible(content_type[0].decode("latin-1"))
        )

    async def on_start(self, message: Message) -> None:
        self.mode = "pass"
        self.fields = _scan(message.get("headers", ()))
        if message["status"] == 304:
            await self.downstream(self.not_modified(message))
        elif self.eligible(message["status"]):
            self.mode = "held"
            self.start = message
        else:
            await self.downstream(message)

    def not_modified(self, message: Message) -> Message:
        """A 304 names the variant the client holds: weak when that was a compressed one."""
        etags = self.fields.get(b"etag")
        if self.codec is None or not etags or not etags[0].startswith(b'"'):
            return message
        if_none_match = _request_header(self.scope, b"if-none-match")
        tags = parse_etags(if_none_match)
        if tags == "*" or "W/" + etags[0].decode("latin-1") not in tags:
            return message
        vary = _merged_vary(self.fields.get(b"vary", []))
        headers = _rewritten(message.get("headers", ()), vary=vary, weaken=True)
        return {**message, "headers": headers}

    def size(self, message: Message) -> int | None:
        """The whole body's size, when the length field or a single message tells it."""
        lengths = self.fields.get(b"content-length", [])
        if len(lengths) == 1 and lengths[0].strip().isdigit():
            return int(lengths[0])
        return None if message.get("more_body", False) else len(message.get("body", b""))

    async def on_first_body(self, message: Message) -> None:
        start = self.start
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        self.mode = "pass"
        size = self.size(message)
        if size is not None and size < self.middleware.minimum_size:
            await self.downstream(start)
            await self.downstream(message)
            return
        vary = _merged_vary(self.fields.get(b"vary", []))
        if self.codec is None:
            await self.send_identity(vary, message)
            return
        coding = [(b"content-encoding", self.codec.name.encode("ascii"))]
        encoded = {
            **start,
            "headers": _rewritten(
                start.get("headers", ()), vary=vary, weaken=True, drop=_DROPPED, add=coding
            ),
        }
        if self.scope["method"] == "HEAD":
            # The headers a GET would get, bar the length, which only compressing would tell.
            self.mode = "empty"
            await self.downstream(encoded)
            await self.downstream({**message, "body": b""})
        elif not more_body:
            compressed = await self.middleware.run(self.codec.compress, body)
            if len(compressed) >= len(body):
                await self.send_identity(vary, message)
                return
            if not start.get("trailers", False):
                encoded["headers"].append((b"content-length", b"%d" % len(compressed)))
            await self.downstream(encoded)
            await self.downstream({**message, "body": compressed})
        else:
            self.mode = "compress"
            self.stream = self.codec.stream()
            await self.downstream(encoded)
            await self.on_stream_body(message)

    async def send_identity(self, vary: bytes | None, message: Message) -> None:
        """The response as the app made it, but for Vary: another client may get it encoded."""
        await self.downstream(
            {**self.start, "headers": _rewritten(self.start.get("headers", ()), vary=vary)}
        )
        await self.downstream(message)

    async def on_stream_body(self, message: Message) -> None:
        assert self.stream is not None
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if more_body:
            if not body:
                return
            chunk = await self.middleware.run(self.stream.chunk, body)
        else:
            chunk = await self.middleware.run(self.stream.finish, body)
        await self.downstream({**message, "body": chunk, "more_body": more_body})
