from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httptools
import orjson
import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The HTTP client runs on uvloop in production and on asyncio anywhere: test both."""
    if item.path.name == "test_http.py":
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


class _ServerConnection(asyncio.Protocol):
    """One client connection; the request path picks the behaviour (see ``HTTPTestServer``)."""

    def __init__(self, server: HTTPTestServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()  # type: ignore[union-attr]

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        server = self.server
        server.requests += 1
        method = self.parser.get_method().decode()
        path = self.url.decode().split("?", 1)[0]
        body = b"".join(self.body)
        server.seen.append((method, path, body))
        server.heads.append(self.headers)
        head = method == "HEAD"
        parts = path.strip("/").split("/")
        route, arg = parts[0], parts[1] if len(parts) > 1 else ""
        if route == "delay":
            asyncio.get_running_loop().call_later(
                int(arg) / 1000, self.respond, 200, server.body, head
            )
        elif route == "hang":
            pass
        elif route == "drop":
            self.transport.abort()  # type: ignore[union-attr]
        elif route == "echo":
            self.respond(200, body, head)
        elif route == "login":
            self.respond(
                200, server.body, head, b"Set-Cookie: session=" + arg.encode() + b"; Path=/\r\n"
            )
        elif route == "inspect":
            seen = {
                "method": method,
                "path": self.url.decode(),
                "headers": [[k.decode(), v.decode()] for k, v in self.headers],
            }
            self.respond(200, orjson.dumps(seen), head, b"Content-Type: application/json\r\n")
        elif route == "status":
            self.respond(int(arg), b"" if arg in ("204", "304") else server.body, head)
        elif route == "chunked":
            self.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for chunk in (b"hello, ", b"chunked ", b"world"):
                self.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.write(b"0\r\n\r\n")
        elif route == "connection-close":
            self.respond(200, server.body, head, b"Connection: close\r\n")
            self.transport.close()  # type: ignore[union-attr]
        elif route == "close-after":
            self.respond(200, server.body, head)
            self.transport.close()  # type: ignore[union-attr]
        elif route == "until-close":
            self.write(b"HTTP/1.1 200 OK\r\n\r\n" + server.body)
            self.transport.close()  # type: ignore[union-attr]
        elif route == "interim":
            self.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
            asyncio.get_running_loop().call_later(
                0.01, self.respond, 200, server.body, head, b"X-Final: yes\r\n"
            )
        elif route == "split-head":
            self.write(b"HTTP/1.1 200 OK\r\nX-Fi")
            asyncio.get_running_loop().call_later(
                0.01, self.write, b"rst: 1\r\nX-Second: 2\r\nContent-Length: 2\r\n\r\nok"
            )
        elif route == "garbage":
            self.write(b"HTTP/1.1 abc nonsense\r\n\r\n")
        elif route == "raw":
            self.write(RAW_RESPONSES[arg])
        else:
            self.respond(200, server.body, head)

    def respond(self, status: int, body: bytes, head: bool, extra: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        length = b"" if status in (204, 304) else b"Content-Length: %d\r\n" % len(body)
        self.write(b"HTTP/1.1 %d X\r\n%s%s\r\n%s" % (status, length, extra, b"" if head else body))

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


# /raw/<name>: responses written as they are, byte for byte, to test the edges of parsing.
RAW_RESPONSES = {
    "plain": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "lowercase": b"HTTP/1.1 200 OK\r\ncontent-length:2\r\nconnection: keep-alive\r\n\r\nok",
    "keep-alive-caps": b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
    "no-reason": b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "chunk-extension": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n0\r\n\r\n"
    ),
    "trailer": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
    ),
    "obs-text": b"HTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nok",
    "control-char": b"HTTP/1.1 200 OK\r\nX-Name: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    "caps-cookie": b"HTTP/1.1 200 OK\r\nSET-COOKIE: s=caps\r\nContent-Length: 2\r\n\r\nok",
    "cookie-in-body": b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfresh cookie",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "http10-keep-alive": (
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    ),
    "length-and-chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    ),
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "created": b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    "no-content": b"HTTP/1.1 204 No Content\r\n\r\n",
    "teapot": b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 2\r\n\r\nok",
    "unavailable": b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nok",
}


class HTTPTestServer:
    """A tiny real HTTP/1.1 server on a free 127.0.0.1 port that counts what it sees.

    Routes: ``/delay/<ms>``, ``/hang`` (never answers), ``/drop`` (closes without answering),
    ``/echo`` (the request body), ``/inspect`` (method, path and headers as JSON),
    ``/status/<code>``, ``/chunked``, ``/connection-close`` (says so, then closes),
    ``/close-after`` (answers, then closes without saying so), ``/until-close`` (a body
    delimited by closing), ``/interim`` (103 Early Hints first), ``/split-head`` (the head
    in two writes), ``/garbage``, ``/raw/<name>`` (``RAW_RESPONSES[name]`` as it is);
    anything else answers 200 with ``body``.
    """

    def __init__(self, body: bytes = b"hello", ssl_context: ssl.SSLContext | None = None) -> None:
        self.body = body
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests = 0
        self.seen: list[tuple[str, str, bytes]] = []
        self.heads: list[list[tuple[bytes, bytes]]] = []  # request header fields, in order
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _ServerConnection(self), "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture(params=["python", "c"])
def lane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    """Runs a test once on each fast lane: ``LaneConnection`` and its C twin (``_lane.c``)."""
    from redline.load import _flow

    if request.param == "python":
        chosen: type = _flow.LaneConnection
    elif _flow.CompiledLaneConnection is None:
        pytest.skip("the C lane is not built (no C compiler at install time)")
    else:
        chosen = _flow.CompiledLaneConnection
    monkeypatch.setattr(_flow, "Lane", chosen)
    return chosen


@pytest.fixture
async def http_server() -> AsyncIterator[HTTPTestServer]:
    server = HTTPTestServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 made by the openssl CLI; skips without it."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def https_server(self_signed_cert: tuple[Path, Path]) -> AsyncIterator[HTTPTestServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed_cert)
    server = HTTPTestServer(ssl_context=context)
    await server.start()
    yield server
    await server.stop()
