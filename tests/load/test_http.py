from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING

import pytest

from redline import RedlineError, __version__
from redline.load._http import (
    ConnectError,
    Connection,
    ConnectionClosed,
    HTTPError,
    ProtocolError,
    RequestTimeout,
    Target,
)

if TYPE_CHECKING:
    from conftest import HTTPTestServer


async def connect(server: HTTPTestServer) -> Connection:
    return await Connection.open(Target.parse(server.url), 2.0)


def test_target_parse_splits_scheme_host_port_and_base_path() -> None:
    target = Target.parse("http://127.0.0.1:8080/api/")
    assert (target.scheme, target.host, target.port, target.base_path) == (
        "http",
        "127.0.0.1",
        8080,
        "/api",
    )
    assert target.path("/calls/17?x=1") == "/api/calls/17?x=1"
    assert target.path("calls") == "/api/calls"
    assert target.ssl is None


def test_target_parse_defaults_ports_and_builds_tls_context_for_https() -> None:
    assert Target.parse("http://example.com").port == 80
    secure = Target.parse("https://example.com", verify=False)
    assert secure.port == 443
    assert secure.path("/") == "/"
    assert secure.ssl is not None and not secure.ssl.check_hostname


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com", "127.0.0.1:8080", "http://", "http://h:notaport", "http://h/?q=1"],
)
def test_target_parse_rejects_bad_urls_naming_them(url: str) -> None:
    with pytest.raises(ValueError, match="invalid target URL") as caught:
        Target.parse(url)
    assert repr(url) in str(caught.value)


def test_errors_form_one_hierarchy_with_stable_reasons() -> None:
    reasons = {
        cls: cls.reason for cls in (ConnectError, RequestTimeout, ConnectionClosed, ProtocolError)
    }
    assert reasons == {
        ConnectError: "connect",
        RequestTimeout: "timeout",
        ConnectionClosed: "closed",
        ProtocolError: "protocol",
    }
    assert all(issubclass(cls, HTTPError) for cls in reasons)
    assert issubclass(HTTPError, RedlineError)


async def test_keep_alive_carries_1000_requests_on_one_tcp_connection(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    for _ in range(1000):
        response = await conn.request("GET", "/", timeout=2.0)
        assert (response.status, response.body) == (200, b"hello")
    assert (http_server.connections, http_server.requests) == (1, 1000)
    assert conn.reusable
    conn.close()


async def test_request_sends_host_user_agent_keep_alive_and_extra_headers(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    response = await conn.request("GET", "/inspect?a=1", [("X-Trace", "t-1")])
    seen = response.json()
    assert seen["path"] == "/inspect?a=1"
    assert seen["headers"] == [
        ["Host", f"127.0.0.1:{http_server.port}"],
        ["User-Agent", f"redline/{__version__}"],
        ["Connection", "keep-alive"],
        ["X-Trace", "t-1"],
    ]
    assert response.header("content-type") == "application/json"
    assert (b"content-type", b"application/json") in response.headers
    assert response.header("X-Missing") is None
    conn.close()


async def test_header_with_line_break_is_refused_before_sending(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    with pytest.raises(ValueError, match="CR or LF"):
        await conn.request("GET", "/", [("X-Evil", "a\r\nHost: elsewhere")])
    assert (await conn.request("GET", "/")).status == 200
    assert http_server.requests == 1
    conn.close()


async def test_post_body_arrives_intact_with_content_length(http_server: HTTPTestServer) -> None:
    conn = await connect(http_server)
    payload = bytes(range(256)) * 400
    response = await conn.request("POST", "/echo", [("Content-Type", "x/y")], payload)
    assert response.body == payload
    assert http_server.seen[-1] == ("POST", "/echo", payload)
    empty = await conn.request("POST", "/echo")
    assert (empty.status, empty.body) == (200, b"")
    conn.close()


async def test_chunked_response_body_is_reassembled(http_server: HTTPTestServer) -> None:
    conn = await connect(http_server)
    for _ in range(3):
        response = await conn.request("GET", "/chunked")
        assert response.body == b"hello, chunked world"
    assert http_server.connections == 1
    conn.close()


async def test_timeout_raises_request_timeout_on_time_and_closes_the_connection(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    started = time.perf_counter()
    with pytest.raises(RequestTimeout) as caught:
        await conn.request("GET", "/hang", timeout=0.2)
    elapsed = time.perf_counter() - started
    assert caught.value.reason == "timeout"
    assert 0.19 <= elapsed < 0.4
    assert not conn.reusable
    with pytest.raises(ConnectionClosed):
        await conn.request("GET", "/")


async def test_late_response_after_timeout_never_reaches_the_next_request(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    with pytest.raises(RequestTimeout):
        await conn.request("GET", "/delay/100", timeout=0.05)
    fresh = await connect(http_server)
    assert (await fresh.request("GET", "/echo", body=b"mine")).body == b"mine"
    await asyncio.sleep(0.1)
    assert (await fresh.request("GET", "/echo", body=b"again")).body == b"again"
    fresh.close()


async def test_server_closing_before_the_response_raises_connection_closed(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    with pytest.raises(ConnectionClosed) as caught:
        await conn.request("GET", "/drop")
    assert caught.value.reason == "closed"
    assert not conn.reusable


async def test_server_closing_an_idle_connection_fails_the_next_request(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    response = await conn.request("GET", "/close-after")
    assert response.body == b"hello"
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionClosed):
        await conn.request("GET", "/")


async def test_connection_close_header_marks_the_connection_not_reusable(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    response = await conn.request("GET", "/connection-close")
    assert (response.status, response.body) == (200, b"hello")
    assert response.header("Connection") == "close"
    assert not response.reusable and not conn.reusable
    with pytest.raises(ConnectionClosed):
        await conn.request("GET", "/")


async def test_body_delimited_by_close_is_read_to_the_end(http_server: HTTPTestServer) -> None:
    http_server.body = b"x" * 100_000
    conn = await connect(http_server)
    response = await conn.request("GET", "/until-close")
    assert response.body == http_server.body
    assert not response.reusable


async def test_interim_response_is_skipped_for_the_final_one(http_server: HTTPTestServer) -> None:
    conn = await connect(http_server)
    response = await conn.request("GET", "/interim")
    assert (response.status, response.body) == (200, b"hello")
    assert response.header("x-final") == "yes"
    assert response.header("link") is None
    assert (await conn.request("GET", "/")).body == b"hello"
    conn.close()


async def test_head_split_across_reads_keeps_every_header(http_server: HTTPTestServer) -> None:
    conn = await connect(http_server)
    response = await conn.request("GET", "/split-head")
    assert response.body == b"ok"
    assert response.headers == [
        (b"x-first", b"1"),
        (b"x-second", b"2"),
        (b"content-length", b"2"),
    ]
    conn.close()


async def test_timeout_holds_after_many_fast_requests_and_for_a_shorter_timeout(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    stop = time.perf_counter() + 0.3
    while time.perf_counter() < stop:
        await conn.request("GET", "/", timeout=0.2)
    started = time.perf_counter()
    with pytest.raises(RequestTimeout, match="within 0.2 s"):
        await conn.request("GET", "/hang", timeout=0.2)
    assert 0.19 <= time.perf_counter() - started < 0.4

    conn = await connect(http_server)
    await conn.request("GET", "/", timeout=5.0)
    started = time.perf_counter()
    with pytest.raises(RequestTimeout, match="within 0.1 s"):
        await conn.request("GET", "/hang", timeout=0.1)
    assert 0.09 <= time.perf_counter() - started < 0.3


async def test_malformed_response_raises_protocol_error(http_server: HTTPTestServer) -> None:
    conn = await connect(http_server)
    with pytest.raises(ProtocolError) as caught:
        await conn.request("GET", "/garbage")
    assert caught.value.reason == "protocol"
    assert not conn.reusable


async def test_connect_to_a_closed_port_raises_connect_error_quickly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(ConnectError) as caught:
        await Connection.open(Target.parse(f"http://127.0.0.1:{port}"), 2.0)
    assert time.perf_counter() - started < 0.5
    assert caught.value.reason == "connect"
    assert f"127.0.0.1:{port}" in str(caught.value)


async def test_connect_timeout_raises_connect_error() -> None:
    # A listening socket whose backlog is full leaves further handshakes unanswered.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        started = time.perf_counter()
        try:
            with pytest.raises(ConnectError, match="within 0.2 s"):
                await Connection.open(Target.parse(f"http://127.0.0.1:{port}"), 0.2)
        finally:
            for filler in fillers:
                filler.close()
        assert time.perf_counter() - started < 0.5


async def test_timings_are_ordered_and_show_a_20ms_server_delay(
    http_server: HTTPTestServer,
) -> None:
    conn = await connect(http_server)
    await conn.request("GET", "/")
    durations = []
    for _ in range(5):
        response = await conn.request("GET", "/delay/20")
        assert response.sent_ns <= response.first_byte_ns <= response.done_ns
        durations.append((response.done_ns - response.sent_ns) / 1e6)
    assert 19.5 <= sorted(durations)[2] < 30
    conn.close()


async def test_head_and_204_and_304_responses_have_no_body(http_server: HTTPTestServer) -> None:
    conn = await connect(http_server)
    head = await conn.request("HEAD", "/")
    assert (head.status, head.body, head.header("content-length")) == (200, b"", "5")
    no_content = await conn.request("DELETE", "/status/204")
    assert (no_content.status, no_content.body) == (204, b"")
    not_modified = await conn.request("GET", "/status/304")
    assert (not_modified.status, not_modified.body) == (304, b"")
    after = await conn.request("GET", "/")
    assert (after.status, after.body) == (200, b"hello")
    assert http_server.connections == 1
    conn.close()


async def test_cancelled_request_closes_the_connection(http_server: HTTPTestServer) -> None:
    conn = await connect(http_server)
    task = asyncio.ensure_future(conn.request("GET", "/delay/50"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not conn.reusable


async def test_https_with_a_self_signed_certificate(https_server: HTTPTestServer) -> None:
    conn = await Connection.open(Target.parse(https_server.url, verify=False), 2.0)
    for _ in range(3):
        response = await conn.request("POST", "/echo", body=b"secret")
        assert response.body == b"secret"
    assert https_server.connections == 1
    conn.close()
    with pytest.raises(ConnectError, match="certificate"):
        await Connection.open(Target.parse(https_server.url), 2.0)


def test_a_full_url_is_not_a_request_path():
    target = Target.parse("http://127.0.0.1:8080/api")

    assert target.path("calls/7") == "/api/calls/7"
    with pytest.raises(ValueError, match="full URL"):
        target.path("http://other.example/x")
