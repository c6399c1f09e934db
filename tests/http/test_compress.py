"""``CompressionMiddleware``: real Starlette apps through httpx's ASGITransport and a real
uvicorn, every encoded body decoded and compared byte for byte; negotiation tables and
properties; Vary; and the ETag/304 round trip with ``HTTPCacheMiddleware`` stacked inside."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
import zlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest
import zstandard
from asgi_server import serve
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from redline.http import CachePolicy, HTTPCacheMiddleware, strong_etag
from redline.http._compress import (
    CompressionError,
    CompressionMiddleware,
    is_compressible,
    negotiate_encoding,
)

# About 20 KB of JSON, the size of a typical API list page.
BODY = json.dumps(
    [
        {"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": i % 3 == 0}
        for i in range(280)
    ]
).encode()
CODINGS = ("zstd", "br", "gzip")


def decode(coding: str, data: bytes) -> bytes:
    """The bytes behind one content coding, decoded by that codec's reference library."""
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        # Streamed frames carry no content size, so decode as a stream.
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise AssertionError(f"unexpected coding {coding!r}")


def make_app(*, cache: bool = False, calls: list[str] | None = None, **options: Any) -> Starlette:
    calls = [] if calls is None else calls
    file_path = Path(options.pop("file_path", os.devnull))

    async def data(request: Request) -> Response:
        calls.append(request.url.path)
        return Response(BODY, media_type="application/json")

    async def sized(request: Request) -> Response:
        return PlainTextResponse(b"a" * int(request.query_params["n"]))

    async def untyped(request: Request) -> Response:
        return Response(BODY)

    async def image(request: Request) -> Response:
        return Response(BODY, media_type="image/png")

    async def encoded(request: Request) -> Response:
        return Response(
            gzip.compress(BODY), media_type="application/json", headers={"Content-Encoding": "gzip"}
        )

    async def no_transform(request: Request) -> Response:
        return Response(
            BODY, media_type="application/json", headers={"Cache-Control": "public, no-transform"}
        )

    async def headers(request: Request) -> Response:
        extra = dict(request.query_params)
        return Response(BODY, media_type="application/json", headers=extra)

    async def noise(request: Request) -> Response:
        return Response(os.urandom(8192), media_type="application/json")

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for line in BODY.split(b"}, "):
                yield line + b"\n"

        return StreamingResponse(chunks(), media_type="application/x-ndjson")

    async def events(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: " + BODY + b"\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def file(request: Request) -> Response:
        return FileResponse(file_path, media_type="application/json")

    routes = [
        Route("/data", data),
        Route("/sized", sized),
        Route("/image", image),
        Route("/untyped", untyped),
        Route("/encoded", encoded),
        Route("/no-transform", no_transform),
        Route("/headers", headers),
        Route("/noise", noise),
        Route("/stream", stream),
        Route("/events", events),
        Route("/file", file),
    ]
    # The documented order: compression outside, so the cache middleware sees identity bodies.
    middleware = [Middleware(CompressionMiddleware, **options)]
    if cache:
        policy = CachePolicy("public", max_age=60, vary=("Accept-Language",))
        middleware.append(Middleware(HTTPCacheMiddleware, default=policy))
    return Starlette(routes=routes, middleware=middleware)


def client_for(app: Any) -> httpx.AsyncClient:
    """A client that sends Accept-Encoding only when a test gives one (httpx sends its own)."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    del client.headers["accept-encoding"]
    return client


async def fetch(
    client: httpx.AsyncClient, path: str, method: str = "GET", **headers: str
) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent, before httpx decodes any content coding."""
    wire = {name.replace("_", "-"): value for name, value in headers.items()}
    async with client.stream(method, path, headers=wire) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    return response, raw


def vary_of(response: httpx.Response) -> list[str]:
    return [
        v.strip().lower() for line in response.headers.get_list("vary") for v in line.split(",")
    ]


# --- negotiation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        (None, None),  # no header: identity, as every major server does
        ("", None),  # empty: the client wants no coding
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("GZip", "gzip"),
        ("gzip, deflate, br", "br"),  # a browser without zstd
        ("gzip, deflate, br, zstd", "zstd"),  # a current browser: server order breaks the tie
        ("br;q=0.9, gzip", "gzip"),
        ("zstd;q=0.2, br;q=0.2, gzip;q=0.1", "zstd"),
        ("gzip;q=0", None),  # refused, not accepted by substring
        ("gzip;q=0.000", None),
        ("gzip;q=0.001", "gzip"),
        ("*", "zstd"),
        ("*;q=0", None),
        ("*;q=0.5, zstd;q=0.1", "br"),  # an explicit entry beats the wildcard for its coding
        ("*, zstd;q=0, br;q=0", "gzip"),
        ("deflate, compress", None),  # nothing we offer: identity
        ("identity", None),
        ("identity;q=1, gzip;q=0.5", None),  # the client prefers identity
        ("identity;q=0.5, gzip", "gzip"),
        ("identity;q=1, gzip;q=1", "gzip"),  # equal: the server's preference for compression
        ("identity;q=0", None),  # identity refused and no coding acceptable: identity, not 406
        ("identity;q=0, deflate", None),
        ("gzip;q=2", None),  # malformed q: the entry grants nothing
        ("gzip;q=abc, br", "br"),
        ("gzip;level=1", None),
        ("gzip;q=1, gzip;q=0", None),  # listed twice: the refusal stands
        (" , gzip ;  q=0.5 ,, ", "gzip"),
    ],
)
def test_negotiation_table(accept_encoding: str | None, expected: str | None) -> None:
    assert negotiate_encoding(accept_encoding, CODINGS) == expected


def test_negotiation_offers_only_what_the_server_has() -> None:
    assert negotiate_encoding("zstd, br", ("gzip",)) is None
    assert negotiate_encoding("zstd, gzip", ("gzip", "zstd")) == "gzip"


QVALUES = st.sampled_from(["0", "0.1", "0.25", "0.5", "0.8", "0.999", "1", "1.0"])
ENTRIES = st.dictionaries(
    st.sampled_from(["zstd", "br", "gzip", "deflate", "*", "identity"]), QVALUES
)


@given(entries=ENTRIES, order=st.permutations(CODINGS), data=st.data())
def test_negotiation_picks_a_most_wanted_acceptable_coding(
    entries: dict[str, str], order: list[str], data: st.DataObject
) -> None:
    items = data.draw(st.permutations(sorted(entries.items())))
    header = ", ".join(f"{coding};q={q}" for coding, q in items)
    chosen = negotiate_encoding(header, order)

    def weight(coding: str) -> float:
        return float(entries.get(coding, entries.get("*", "0")))

    best = max(weight(coding) for coding in order)
    if chosen is None:
        # Identity: nothing acceptable, or the client named identity above every coding.
        assert best == 0 or float(entries.get("identity", "-1")) > best
    else:
        assert weight(chosen) == best > 0
        # Among equals, the first in the server's order.
        assert chosen == next(coding for coding in order if weight(coding) == best)
        assert float(entries.get("identity", "0")) <= best


@given(entries=ENTRIES, data=st.data())
def test_negotiation_ignores_the_order_of_the_header(
    entries: dict[str, str], data: st.DataObject
) -> None:
    items = sorted(entries.items())
    shuffled = data.draw(st.permutations(items))
    first = negotiate_encoding(", ".join(f"{c};q={q}" for c, q in items), CODINGS)
    second = negotiate_encoding(", ".join(f"{c};q={q}" for c, q in shuffled), CODINGS)
    assert first == second


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/problem+json; charset=utf-8", True),
        ("image/svg+xml", True),
        ("text/html; charset=utf-8", True),
        ("TEXT/CSV", True),
        ("application/javascript", True),
        ("text/event-stream", False),
        ("image/png", False),
        ("video/mp4", False),
        ("application/zip", False),
        ("application/gzip", False),
        ("application/octet-stream", False),
        ("", False),
    ],
)
def test_default_compressible_types(content_type: str, expected: bool) -> None:
    assert is_compressible(content_type) is expected


# --- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
async def test_each_coding_round_trips_and_content_length_is_the_compressed_size(
    coding: str,
) -> None:
    async with client_for(make_app()) as client:
        response, raw = await fetch(client, "/data", accept_encoding=coding)
    assert response.status_code == 200
    assert response.headers["content-encoding"] == coding
    assert int(response.headers["content-length"]) == len(raw) < len(BODY) // 4
    assert decode(coding, raw) == BODY
    assert "accept-encoding" in vary_of(response)


@pytest.mark.parametrize("coding", CODINGS)
async def test_streamed_body_is_compressed_without_a_length_and_decodes(coding: str) -> None:
    async with client_for(make_app()) as client:
        response, raw = await fetch(client, "/stream", accept_encoding=coding)
    assert response.headers["content-encoding"] == coding
    assert "content-length" not in response.headers
    assert decode(coding, raw) == b"\n".join(BODY.split(b"}, ")) + b"\n"


@pytest.mark.parametrize("coding", CODINGS)
async def test_each_streamed_message_is_flushed_and_decodable_on_its_own(coding: str) -> None:
    """Driven at the ASGI interface: every chunk the app sends must reach the client as it
    goes, so each message out must decode to exactly the message that went in."""
    pieces = [b'{"tick": %d, "pad": "%s"}\n' % (i, b"x" * 200) for i in range(5)]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-ndjson")],
            }
        )
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    sent: list[dict[str, Any]] = []

    async def collect(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"accept-encoding", coding.encode())],
    }
    await CompressionMiddleware(app, minimum_size=0)(scope, None, collect)  # type: ignore[arg-type]
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == len(pieces) + 1
    if coding == "gzip":
        decoder: Any = zlib.decompressobj(wbits=31)
    elif coding == "br":
        decoder = brotli.Decompressor()
    else:
        decoder = zstandard.ZstdDecompressor().decompressobj()
    for piece, message in zip(pieces, bodies, strict=False):
        assert message["more_body"] is True
        step = (
            decoder.process(message["body"])
            if coding == "br"
            else decoder.decompress(message["body"])
        )
        assert step == piece
    assert bodies[-1]["more_body"] is False
    whole = b"".join(m["body"] for m in bodies)
    assert decode(coding, whole) == b"".join(pieces)


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the work handed to it."""

    submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def test_large_bodies_are_compressed_in_a_worker_thread_with_the_same_result() -> None:
    executor = CountingExecutor(max_workers=2)
    asyncio.get_running_loop().set_default_executor(executor)
    async with client_for(make_app(thread_minimum_size=len(BODY))) as client:
        for coding in CODINGS:
            one_shot, raw = await fetch(client, "/data", accept_encoding=coding)
            assert decode(coding, raw) == BODY
        assert executor.submitted == len(CODINGS)
        # The streamed chunks are each far below the threshold: compressed on the loop.
        for coding in CODINGS:
            streamed, raw = await fetch(client, "/stream", accept_encoding=coding)
            assert streamed.headers["content-encoding"] == coding
            assert decode(coding, raw) == b"\n".join(BODY.split(b"}, ")) + b"\n"
        assert executor.submitted == len(CODINGS)
    async with client_for(make_app(thread_minimum_size=0)) as client:
        for coding in CODINGS:
            streamed, raw = await fetch(client, "/stream", accept_encoding=coding)
            assert decode(coding, raw) == b"\n".join(BODY.split(b"}, ")) + b"\n"
    assert executor.submitted > 2 * len(CODINGS)


async def test_levels_change_the_output() -> None:
    async with client_for(make_app(levels={"gzip": 1})) as fast:
        _, low = await fetch(fast, "/data", accept_encoding="gzip")
    async with client_for(make_app(levels={"gzip": 9})) as slow:
        _, high = await fetch(slow, "/data", accept_encoding="gzip")
    assert decode("gzip", low) == decode("gzip", high) == BODY
    assert len(high) < len(low)


async def test_only_the_configured_encodings_are_offered_in_their_order() -> None:
    async with client_for(make_app(encodings=("gzip", "zstd"))) as client:
        both, _ = await fetch(client, "/data", accept_encoding="zstd, br, gzip")
        br_only, raw = await fetch(client, "/data", accept_encoding="br")
    assert both.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in br_only.headers and raw == BODY
    assert "accept-encoding" in vary_of(br_only)


async def test_refused_identity_still_gets_identity_not_406() -> None:
    async with client_for(make_app()) as client:
        response, raw = await fetch(client, "/data", accept_encoding="identity;q=0, deflate")
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert raw == BODY


async def test_minimum_size_is_inclusive() -> None:
    async with client_for(make_app(minimum_size=2000)) as client:
        at, raw = await fetch(client, "/sized?n=2000", accept_encoding="gzip")
        below, small = await fetch(client, "/sized?n=1999", accept_encoding="gzip")
    assert at.headers["content-encoding"] == "gzip" and decode("gzip", raw) == b"a" * 2000
    assert "content-encoding" not in below.headers and small == b"a" * 1999
    # A body too small to be compressed for anyone does not vary by Accept-Encoding.
    assert "vary" not in below.headers


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/image", "an image is compressed already"),
        ("/untyped", "without a Content-Type, nothing says the body is text"),
        ("/events", "an event stream would hold a compressor for its lifetime"),
        ("/no-transform", "Cache-Control: no-transform"),
    ],
)
async def test_responses_that_are_never_compressed_pass_untouched(path: str, reason: str) -> None:
    async with client_for(make_app()) as client:
        plain, plain_raw = await fetch(client, path)
        response, raw = await fetch(client, path, accept_encoding="zstd, br, gzip")
    assert "content-encoding" not in response.headers, reason
    assert "accept-encoding" not in vary_of(response), reason
    assert raw == plain_raw
    assert response.headers.get("content-length") == plain.headers.get("content-length")


async def test_an_already_encoded_body_is_not_encoded_again() -> None:
    async with client_for(make_app()) as client:
        response, raw = await fetch(client, "/encoded", accept_encoding="zstd, gzip")
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == BODY


async def test_a_body_that_does_not_shrink_is_sent_as_it_was() -> None:
    async with client_for(make_app(encodings=("gzip",), levels={"gzip": 1})) as client:
        response, raw = await fetch(client, "/noise", accept_encoding="gzip")
    assert "content-encoding" not in response.headers
    assert len(raw) == int(response.headers["content-length"]) == 8192
    # Another body at this URL might shrink: caches must still keep the variants apart.
    assert "accept-encoding" in vary_of(response)


async def test_compression_drops_digests_and_weakens_a_strong_etag() -> None:
    query = "?ETag=%22v1%22&Content-Digest=sha-256%3D%3Aabc%3D%3A&Content-MD5=abc&x-keep=1"
    async with client_for(make_app()) as client:
        response, raw = await fetch(client, f"/headers{query}", accept_encoding="br")
        plain, _ = await fetch(client, f"/headers{query}")
    assert decode("br", raw) == BODY
    assert response.headers["etag"] == 'W/"v1"'
    assert "content-digest" not in response.headers and "content-md5" not in response.headers
    assert response.headers["x-keep"] == "1"
    assert plain.headers["etag"] == '"v1"' and plain.headers["content-digest"]


async def test_a_weak_etag_stays_as_it_is() -> None:
    async with client_for(make_app()) as client:
        response, _ = await fetch(client, "/headers?ETag=W/%22v1%22", accept_encoding="gzip")
    assert response.headers["etag"] == 'W/"v1"'


async def test_head_gets_the_headers_of_get_without_length_or_body() -> None:
    async with client_for(make_app(cache=True)) as client:
        get, _ = await fetch(client, "/data", accept_encoding="zstd")
        head, raw = await fetch(client, "/data", method="HEAD", accept_encoding="zstd")
    assert raw == b""
    assert head.headers["content-encoding"] == get.headers["content-encoding"] == "zstd"
    assert vary_of(head) == vary_of(get)
    assert "content-length" not in head.headers


# --- Vary --------------------------------------------------------------------------------------


async def test_identity_answer_to_a_client_without_accept_encoding_still_varies() -> None:
    async with client_for(make_app()) as client:
        response, raw = await fetch(client, "/data")
    assert raw == BODY
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


async def test_vary_is_merged_into_an_existing_one_once() -> None:
    async with client_for(make_app()) as client:
        merged, _ = await fetch(client, "/headers?Vary=Accept-Language", accept_encoding="gzip")
        already, _ = await fetch(
            client, "/headers?Vary=accept-encoding, Origin", accept_encoding="gzip"
        )
        star, _ = await fetch(client, "/headers?Vary=*", accept_encoding="gzip")
    assert merged.headers.get_list("vary") == ["Accept-Language, Accept-Encoding"]
    assert already.headers.get_list("vary") == ["accept-encoding, Origin"]
    assert star.headers.get_list("vary") == ["*"]


# --- ranges and files --------------------------------------------------------------------------


async def test_file_is_streamed_compressed_and_a_range_request_gets_identity_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(BODY * 5)
    async with client_for(make_app(file_path=path)) as client:
        whole, raw = await fetch(client, "/file", accept_encoding="gzip")
        part, part_raw = await fetch(client, "/file", accept_encoding="gzip", range="bytes=0-99")
    assert decode("gzip", raw) == BODY * 5
    # Byte ranges of the identity file mean nothing inside a gzip stream.
    assert "accept-ranges" not in whole.headers
    assert whole.headers["etag"].startswith('W/"')
    assert part.status_code == 206
    assert "content-encoding" not in part.headers
    assert part_raw == BODY[:100]


async def test_pathsend_files_and_other_protocols_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", b"5000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": "/srv/data.json"})

    sent: list[dict[str, Any]] = []

    async def collect(message: Any) -> None:
        sent.append(message)

    middleware = CompressionMiddleware(app)
    await middleware({"type": "lifespan"}, None, collect)  # type: ignore[arg-type]
    http = {"type": "http", "method": "GET", "headers": [(b"accept-encoding", b"gzip")]}
    await middleware(http, None, collect)  # type: ignore[arg-type]
    assert seen == ["lifespan", "http"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]
    assert dict(sent[0]["headers"])[b"content-length"] == b"5000"
    assert b"content-encoding" not in dict(sent[0]["headers"])


# --- ETags and 304 with HTTPCacheMiddleware ----------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
async def test_compressed_variant_revalidates_to_304_through_http_cache_middleware(
    coding: str,
) -> None:
    calls: list[str] = []
    async with client_for(make_app(cache=True, calls=calls)) as client:
        first, raw = await fetch(client, "/data", accept_encoding=coding)
        etag = first.headers["etag"]
        again, again_raw = await fetch(client, "/data", accept_encoding=coding, if_none_match=etag)
    assert decode(coding, raw) == BODY
    assert etag == "W/" + strong_etag(BODY)
    assert again.status_code == 304 and again_raw == b""
    # The 304 names the variant the client holds, and says that it varies.
    assert again.headers["etag"] == etag
    assert vary_of(again) == ["accept-language", "accept-encoding"]
    assert "content-encoding" not in again.headers
    assert calls == ["/data", "/data"]


async def test_identity_variant_keeps_its_strong_etag_and_revalidates() -> None:
    async with client_for(make_app(cache=True)) as client:
        first, raw = await fetch(client, "/data", accept_encoding="identity")
        again, _ = await fetch(client, "/data", if_none_match=first.headers["etag"])
        other, _ = await fetch(client, "/data", if_none_match='"something-else"')
    assert raw == BODY and first.headers["etag"] == strong_etag(BODY)
    assert again.status_code == 304 and again.headers["etag"] == strong_etag(BODY)
    assert other.status_code == 200


async def test_client_holding_the_gzip_tag_that_stops_accepting_gzip_gets_the_strong_tag() -> None:
    """It cannot be told to reuse bytes it could not decode: the 304 names identity, which a
    cache holding only the gzip variant does not match, so it refetches."""
    async with client_for(make_app(cache=True)) as client:
        weak = "W/" + strong_etag(BODY)
        response, _ = await fetch(client, "/data", if_none_match=weak)
    assert response.status_code == 304
    assert response.headers["etag"] == strong_etag(BODY)


async def test_wrong_order_still_revalidates_but_compresses_before_the_304() -> None:
    """Documented order is compression outside; inside, the cache hashes compressed bytes."""
    calls: list[str] = []
    policy = CachePolicy("public", max_age=60)
    inner = make_app(calls=calls)
    app = HTTPCacheMiddleware(inner, default=policy)
    async with client_for(app) as client:
        first, raw = await fetch(client, "/data", accept_encoding="gzip")
        again, _ = await fetch(
            client, "/data", accept_encoding="gzip", if_none_match=first.headers["etag"]
        )
    assert first.headers["etag"] == strong_etag(raw) != strong_etag(BODY)
    assert again.status_code == 304


# --- a real server -----------------------------------------------------------------------------


def test_under_uvicorn_every_coding_decodes_and_304_works() -> None:
    with serve(make_app(cache=True)) as client:
        for coding in CODINGS:
            with client.stream("GET", "/data", headers={"Accept-Encoding": coding}) as response:
                raw = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == coding
            assert int(response.headers["content-length"]) == len(raw)
            assert decode(coding, raw) == BODY
            etag = response.headers["etag"]
            again = client.get("/data", headers={"Accept-Encoding": coding, "If-None-Match": etag})
            assert again.status_code == 304 and again.headers["etag"] == etag
        plain = client.get("/data", headers={"Accept-Encoding": "identity"})
        assert plain.content == BODY and plain.headers["etag"] == strong_etag(BODY)
        head = client.head("/data", headers={"Accept-Encoding": "gzip"})
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-encoding"] == "gzip"
        assert "transfer-encoding" not in head.headers


def test_under_uvicorn_a_streamed_chunk_arrives_before_the_app_sends_the_next() -> None:
    released = threading.Event()

    async def ticks(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"first": true}\n' * 100
            # The second chunk waits until the client has decoded the first over the socket.
            await asyncio.get_running_loop().run_in_executor(None, released.wait, 10)
            yield b'{"second": true}\n' * 100

        return StreamingResponse(chunks(), media_type="application/x-ndjson")

    app = CompressionMiddleware(Starlette(routes=[Route("/ticks", ticks)]))
    with serve(app) as client:
        headers = {"Accept-Encoding": "zstd"}
        with client.stream("GET", "/ticks", headers=headers) as response:
            assert response.headers["content-encoding"] == "zstd"
            decoder = zstandard.ZstdDecompressor().decompressobj()
            received = b""
            raw_chunks = response.iter_raw()
            while len(received) < len(b'{"first": true}\n' * 100):
                received += decoder.decompress(next(raw_chunks))
            assert received == b'{"first": true}\n' * 100
            released.set()
            for chunk in raw_chunks:
                received += decoder.decompress(chunk)
    assert received == b'{"first": true}\n' * 100 + b'{"second": true}\n' * 100


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"encodings": "gzip"}, "give a sequence of codings"),
        ({"encodings": ("gzip", "deflate")}, "unknown coding 'deflate'"),
        ({"encodings": ("gzip", "gzip")}, "each coding may appear once"),
        ({"encodings": ()}, "at least one coding"),
        ({"levels": {"gzip": 10}}, "levels['gzip']=10: give a whole number from 1 to 9"),
        ({"levels": {"zstd": 22}}, "from -7 to 19"),
        ({"levels": {"br": 4.5}}, "levels['br']=4.5"),
        ({"levels": {"lzma": 1}}, "unknown coding 'lzma'"),
        ({"levels": [("gzip", 6)]}, "give a mapping"),
        ({"minimum_size": -1}, "minimum_size=-1"),
        ({"minimum_size": True}, "minimum_size=True"),
        ({"thread_minimum_size": "1MB"}, "thread_minimum_size='1MB'"),
        ({"compressible": ("text/html",)}, "give a callable"),
    ],
)
def test_invalid_options_are_refused_with_the_option_named(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(CompressionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CompressionMiddleware(make_app(), **options)


def test_default_encodings_include_br_when_brotli_is_installed() -> None:
    assert CompressionMiddleware(make_app()).encodings == ("zstd", "br", "gzip")


async def test_a_custom_compressible_predicate_decides() -> None:
    app = make_app(compressible=lambda content_type: content_type.startswith("image/"))
    async with client_for(app) as client:
        image, raw = await fetch(client, "/image", accept_encoding="gzip")
        data, _ = await fetch(client, "/data", accept_encoding="gzip")
    assert image.headers["content-encoding"] == "gzip" and decode("gzip", raw) == BODY
    assert "content-encoding" not in data.headers
