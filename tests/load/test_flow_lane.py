"""Declarative flows on the fast lane: every response it does not expect takes the general
path, so the results are those of any flow. Every test runs on both lanes, the Python one and
the C one (the ``lane`` fixture)."""

import pytest

from redline.load._plan import Check, ConstantArrivalRate, ConstantVUs, Plan, Request, Scenario
from redline.load._runner import run

pytestmark = pytest.mark.usefixtures("lane")


def plan_of(executor, *steps):
    return Plan(scenarios=(Scenario("s", executor, tuple(steps)),))


async def test_plain_requests_are_counted_exactly_on_the_lane(http_server):
    result = await run(
        plan_of(ConstantVUs(3, 0.5), Request(url="/a"), Request(url="/b")), http_server.url
    )

    paths = [path for _, path, _ in http_server.seen]
    summary = result.summary
    assert summary["requests"]["total"] == len(paths) > 50
    assert summary["endpoints"]["/a"]["requests"]["total"] == paths.count("/a")
    assert summary["endpoints"]["/b"]["requests"]["total"] == paths.count("/b")
    assert summary["requests"]["failed"] == 0
    # Each user alternates /a, /b: the counts differ by at most one per user.
    assert abs(paths.count("/a") - paths.count("/b")) <= 3


async def test_a_cookie_set_on_the_lane_is_sent_back_afterwards(http_server):
    flow = (Request(url="/login/abc123"), Request(url="/anything"))

    await run(plan_of(ConstantVUs(1, 0.3), *flow), http_server.url)

    cookies = [dict(head).get(b"Cookie") for head in http_server.heads]
    assert cookies[0] is None  # the first request, before any Set-Cookie
    assert len(cookies) > 4 and all(c == b"session=abc123" for c in cookies[1:])


async def test_server_errors_and_failed_checks_are_counted_on_the_lane(http_server):
    flow = (
        Request(url="/status/500", name="boom"),
        Request(url="/status/404", name="missing", check=Check(200)),
    )

    result = await run(plan_of(ConstantVUs(2, 0.3), *flow), http_server.url)

    boom = result.summary["endpoints"]["boom"]
    missing = result.summary["endpoints"]["missing"]
    assert boom["requests"]["failed"] == boom["requests"]["total"] > 5
    assert boom["errors"] == {"status:500": boom["requests"]["total"]}
    assert missing["requests"]["failed"] == 0
    assert missing["requests"]["checks_failed"] == missing["requests"]["total"] > 5


async def test_odd_responses_leave_the_lane_and_come_back(http_server):
    flow = (
        Request(url="/split-head", name="split"),
        Request(url="/chunked", name="chunked"),
        Request(url="/connection-close", name="close"),
        Request(url="/until-close", name="until-close"),
        Request(url="/interim", name="interim"),
    )

    result = await run(plan_of(ConstantVUs(2, 0.5), *flow), http_server.url)

    summary = result.summary
    assert summary["requests"]["failed"] == 0, summary["errors"]
    assert summary["requests"]["total"] == len(http_server.seen) > 10
    assert {name for name in summary["endpoints"]} == {
        "split",
        "chunked",
        "close",
        "until-close",
        "interim",
    }


async def test_timeouts_on_the_lane_are_errors_with_their_latency(http_server):
    flow = (Request(url="/hang", name="hang"),)

    result = await run(plan_of(ConstantVUs(1, 0.2), *flow), http_server.url, timeout=0.1)

    hang = result.summary["endpoints"]["hang"]
    assert hang["errors"].get("timeout", 0) == hang["requests"]["total"] >= 1
    assert 100 <= hang["latency_ms"]["p50"] < 200


async def test_open_model_arrivals_of_a_plain_flow_are_all_sent(http_server):
    executor = ConstantArrivalRate(rate=300, duration=0.5, pre_allocated_vus=5)

    result = await run(plan_of(executor, Request(url="/x")), http_server.url)

    assert result.summary["requests"]["total"] == len(http_server.seen) == 150
    assert result.summary["requests"]["dropped"] == 0
