"""The C fast lane (``redline/load/_lane.c``): built where a compiler is, chosen unless turned
off, never taking a response httptools would read differently, and recording what the Python
lane records for every kind of response."""

import importlib
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import httptools
import pytest
from conftest import RAW_RESPONSES
from hypothesis import given, settings
from hypothesis import strategies as st

from redline.load import _flow
from redline.load._plan import Check, ConstantVUs, Plan, Request, Scenario
from redline.load._runner import run

LANE_SOURCE = Path(_flow.__file__).with_name("_lane.c")


def plan_of(executor, *steps):
    return Plan(scenarios=(Scenario("s", executor, tuple(steps)),))


def compiled():
    if _flow.CompiledLaneConnection is None:
        pytest.skip("the C lane is not built (no C compiler at install time)")
    return _flow.CompiledLaneConnection


def frame(data: bytes) -> int:
    from redline.load._lane import frame

    return frame(data)


# -- building and choosing --------------------------------------------------------------------


def test_the_c_lane_is_built_wherever_a_c_compiler_is():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine")
    assert _flow.CompiledLaneConnection is not None, "reinstall: pip install -e ."


def test_an_in_place_build_is_not_older_than_its_source():
    # An editable install compiles once: a changed _lane.c needs `pip install -e .` again.
    built = list(LANE_SOURCE.parent.glob("_lane.*.so"))
    if not built:
        pytest.skip("no in-place build (a wheel install, or no compiler)")
    for path in built:
        assert path.stat().st_mtime >= LANE_SOURCE.stat().st_mtime, (
            f"{path.name} is older than _lane.c: rebuild with pip install -e ."
        )


def test_the_c_lane_is_chosen_unless_redline_pure_python_is_set(monkeypatch):
    cls = compiled()
    monkeypatch.delenv("REDLINE_PURE_PYTHON", raising=False)
    assert _flow.lane_class() is cls
    monkeypatch.setenv("REDLINE_PURE_PYTHON", "0")
    assert _flow.lane_class() is cls
    monkeypatch.setenv("REDLINE_PURE_PYTHON", "1")
    assert _flow.lane_class() is _flow.LaneConnection


def test_without_the_extension_the_python_lane_runs(monkeypatch):
    monkeypatch.setitem(sys.modules, "redline.load._lane", None)  # import fails
    assert _flow._compiled_lane() is None
    monkeypatch.setattr(_flow, "CompiledLaneConnection", None)
    assert _flow.lane_class() is _flow.LaneConnection


def test_the_extension_imports_again_cleanly():
    compiled()
    module = importlib.import_module("redline.load._lane")
    assert module.frame(RAW_RESPONSES["plain"]) == 200


# -- the framer against httptools ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("plain", 200),
        ("lowercase", 200),
        ("keep-alive-caps", 200),
        ("chunked", 200),
        ("created", 201),
        ("teapot", 418),
        ("unavailable", 503),  # framed; the lane still sends a 5xx to the general path
        ("cookie-in-body", 200),  # framed; the lane's cookie search sends it on
        ("no-reason", 200),
    ],
)
def test_ordinary_responses_are_framed(name, status):
    compiled()
    assert frame(RAW_RESPONSES[name]) == status


@pytest.mark.parametrize(
    "name",
    [
        "chunk-extension",
        "trailer",
        "obs-text",
        "control-char",
        "http10",
        "http10-keep-alive",
        "length-and-chunked",
        "space-before-colon",
        "no-content",
    ],
)
def test_unusual_responses_are_left_to_httptools(name):
    compiled()
    assert frame(RAW_RESPONSES[name]) == -1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no",  # short
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok!",  # a byte too many
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",  # two answers
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Upgrade\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n\r\nok",  # ends with the connection
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",  # bare LF
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n",  # unfinished
        b"HTTP/1.1 200 OK\r\n Folded: x\r\nContent-Length: 2\r\n\r\nok",
    ],
)
def test_incomplete_ambiguous_or_closing_responses_are_not_framed(data):
    compiled()
    assert frame(data) == -1


class _Messages:
    """httptools callbacks that keep what the parser says as each message completes."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.complete: list[tuple[int, bool]] = []

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.complete.append((self.parser.get_status_code(), self.parser.should_keep_alive()))


def _httptools_reading(data: bytes) -> list[tuple[int, bool]] | None:
    """(status, keep-alive) of each message httptools reads in ``data``; None if it refuses."""
    messages = _Messages()
    messages.parser = httptools.HttpResponseParser(messages)
    try:
        messages.parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    return messages.complete


_FIELDS = [
    "Server: nginx/1.22.1",
    "Date: Sat, 21 Nov 2026 12:00:00 GMT",
    "Content-Type: text/plain; charset=utf-8",
    "connection: keep-alive",
    "X-Empty:",
    "x-tab:\tvalue\t",
    'ETag: "abc"',
]


def _at(data: bytes, i: int) -> int:
    return i % len(data) if data else 0


# One change each to an ordinary response; a few keep it ordinary, most do not.
_MUTATIONS = [
    lambda d, i: d.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    lambda d, i: d.replace(b"\r\n", b"\n", 1 + i % 3),
    lambda d, i: d.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1),
    lambda d, i: d.replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\n", 1),
    lambda d, i: d.replace(b"\r\n\r\n", b"\r\nUpgrade: h2c\r\n\r\n", 1),
    lambda d, i: d.replace(b"\r\n\r\n", b"\r\nX-Bad: a\x01b\r\n\r\n", 1),
    lambda d, i: d.replace(b"\r\n\r\n", b"\r\nX-Obs: \xe9\r\n\r\n", 1),
    lambda d, i: d.replace(b"\r\n\r\n", b"\r\nX-Del: \x7f\r\n\r\n", 1),
    lambda d, i: d.replace(b"\r\n\r\n", b"\r\n folded\r\n\r\n", 1),
    lambda d, i: d.replace(b": ", b" : ", 1),
    lambda d, i: d + b"x",
    lambda d, i: d[: len(d) - 1 - i % 4],
    lambda d, i: d + d,
    lambda d, i: d[: _at(d, i)] + bytes([(d[_at(d, i)] + 1 + i) % 256]) + d[_at(d, i) + 1 :],
    lambda d, i: d[: _at(d, i)] + d[_at(d, i) + 1 :],
    lambda d, i: d[: _at(d, i)] + b"\r\n" + d[_at(d, i) :],
]


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, int, bool]:
    """(response, its status, mutated): an ordinary response, often changed in one way."""
    status = draw(st.sampled_from([200, 201, 202, 206, 301, 404, 418, 429, 499, 500, 503]))
    reason = draw(st.sampled_from(["OK", "", "Some Reason", "x"]))
    fields = draw(st.lists(st.sampled_from(_FIELDS), max_size=4))
    body = draw(st.binary(max_size=40))
    if draw(st.booleans()):
        sizes = draw(st.lists(st.integers(1, 8), max_size=3))
        chunks, rest = [], body
        for size in sizes:
            piece, rest = rest[:size], rest[size:]
            if piece:
                chunks.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        framing = ["Transfer-Encoding: chunked"]
        payload = b"".join(chunks) + b"0\r\n\r\n"
    else:
        framing = [f"Content-Length: {len(body)}"]
        payload = body
    lines = draw(st.permutations([*fields, *framing]))
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{line}\r\n" for line in lines)
    data = head.encode() + b"\r\n" + payload
    if draw(st.booleans()):
        return data, status, False
    mutation = draw(st.sampled_from(_MUTATIONS))
    return mutation(data, draw(st.integers(0, 1000))), status, True


@settings(max_examples=1500, deadline=None)
@given(responses())
def test_whatever_the_framer_takes_httptools_reads_as_one_kept_alive_response(case):
    compiled()
    data, status, mutated = case
    framed = frame(data)
    if not mutated:
        assert framed == status, data  # an ordinary response is taken
    if framed >= 0:
        assert _httptools_reading(data) == [(framed, True)], data


# -- the lane at work -----------------------------------------------------------------------


async def test_the_c_lane_handles_ordinary_responses_itself(http_server, monkeypatch):
    base = compiled()
    handed_on = []

    class Counting(base):
        def _py_data_received(self, data):
            handed_on.append(data)
            base._py_data_received(self, data)

    monkeypatch.setattr(_flow, "Lane", Counting)

    result = await run(plan_of(ConstantVUs(2, 0.3), Request(url="/raw/plain")), http_server.url)

    total = result.summary["requests"]["total"]
    assert total == len(http_server.seen) > 20
    assert result.summary["requests"]["failed"] == 0
    # Only the last response of each user goes through the general path, which ends it.
    assert len(handed_on) <= 2


async def test_unusual_responses_take_the_python_lane_from_the_c_one(http_server, monkeypatch):
    base = compiled()
    handed_on = []

    class Counting(base):
        def _py_data_received(self, data):
            handed_on.append(data)
            base._py_data_received(self, data)

    monkeypatch.setattr(_flow, "Lane", Counting)
    flow = (Request(url="/raw/trailer", name="trailer"), Request(url="/raw/plain", name="plain"))

    result = await run(plan_of(ConstantVUs(1, 0.3), *flow), http_server.url)

    trailers = result.summary["endpoints"]["trailer"]["requests"]["total"]
    assert trailers > 5
    assert sum(1 for data in handed_on if b"X-T: 1" in data) == trailers
    assert result.summary["requests"]["total"] == len(http_server.seen)
    assert result.summary["requests"]["failed"] == 0


def _outcome(summary: dict) -> dict:
    """What a run says about each endpoint, apart from how many requests fitted in it."""
    out = {}
    for name, endpoint in summary["endpoints"].items():
        requests = endpoint["requests"]
        total = requests["total"]
        out[name] = {
            "failed": requests["failed"] / total if total else None,
            "checks_failed": requests["checks_failed"] / total if total else None,
            "errors": sorted(endpoint["errors"]),
        }
    return out


@pytest.mark.parametrize(
    "names",
    [
        ("plain", "chunked", "lowercase", "keep-alive-caps", "no-reason"),
        ("chunk-extension", "trailer", "obs-text", "space-before-colon"),
        ("created", "no-content", "teapot", "unavailable"),
        ("http10", "http10-keep-alive", "cookie-in-body"),
        ("control-char",),
        ("length-and-chunked",),
    ],
)
async def test_both_lanes_record_the_same_for_every_kind_of_response(
    http_server, monkeypatch, names
):
    cls = compiled()
    flow = [Request(url=f"/raw/{name}", name=name, check=Check((200, 201, 204))) for name in names]
    outcomes, seen = [], []
    for lane in (_flow.LaneConnection, cls):
        monkeypatch.setattr(_flow, "Lane", lane)
        before = len(http_server.seen)
        result = await run(plan_of(ConstantVUs(2, 0.25), *flow), http_server.url)
        assert result.summary["requests"]["total"] == len(http_server.seen) - before > 0
        outcomes.append(_outcome(result.summary))
        seen.append(result.summary["requests"]["total"])

    assert outcomes[0] == outcomes[1]


async def test_an_all_capitals_set_cookie_is_treated_alike_on_both_lanes(http_server, monkeypatch):
    cls = compiled()
    flow = (Request(url="/raw/caps-cookie"), Request(url="/anything"))
    sent_back = []
    for lane in (_flow.LaneConnection, cls):
        monkeypatch.setattr(_flow, "Lane", lane)
        start = len(http_server.heads)
        await run(plan_of(ConstantVUs(1, 0.2), *flow), http_server.url)
        heads = http_server.heads[start:]
        sent_back.append({dict(head).get(b"Cookie") for head in heads[1:]})

    assert sent_back[0] == sent_back[1]


def test_the_lane_clock_is_perf_counter_ns():
    compiled()
    from redline.load._lane import now_ns

    before = time.perf_counter_ns()
    now = now_ns()
    after = time.perf_counter_ns()
    assert before <= now <= after
