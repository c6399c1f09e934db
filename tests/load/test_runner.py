"""The runner against a real local HTTP server: every request accounted for, latencies true."""

from redline.load._plan import (
    Capture,
    Check,
    ConstantArrivalRate,
    ConstantVUs,
    Plan,
    Request,
    Scenario,
)
from redline.load._runner import run


def plan_of(executor, flow, thresholds=()):
    return Plan(scenarios=(Scenario("s", executor, flow),), thresholds=tuple(thresholds))


async def test_closed_model_reports_exactly_the_requests_the_server_saw(http_server):
    async def browse(vu):
        await vu.get("/delay/0", name="ping")

    result = await run(plan_of(ConstantVUs(4, 0.5), browse), http_server.url)

    total = result.summary["requests"]["total"]
    assert total == len(http_server.seen) > 50
    assert result.summary["endpoints"]["ping"]["requests"]["total"] == total
    assert result.summary["requests"]["failed"] == 0


async def test_a_20ms_server_delay_is_reported_as_a_20ms_median(http_server):
    async def slow(vu):
        await vu.get("/delay/20", name="slow")

    result = await run(plan_of(ConstantVUs(2, 0.6), slow), http_server.url)

    p50 = result.summary["endpoints"]["slow"]["latency_ms"]["p50"]
    assert 20 <= p50 <= 22, p50


async def test_open_model_sends_every_arrival_and_counts_none_dropped(http_server):
    executor = ConstantArrivalRate(rate=200, time_unit=1, duration=0.5, pre_allocated_vus=5)

    async def hit(vu):
        await vu.get("/delay/0", name="hit")

    result = await run(plan_of(executor, hit), http_server.url)

    requests = result.summary["requests"]
    assert requests["total"] == len(http_server.seen) == 100
    assert requests["dropped"] == 0


async def test_arrivals_without_a_free_user_are_counted_as_dropped_never_lost(http_server):
    executor = ConstantArrivalRate(
        rate=100, time_unit=1, duration=0.5, pre_allocated_vus=1, max_vus=1
    )

    async def slow(vu):
        await vu.get("/delay/50", name="slow")

    result = await run(plan_of(executor, slow), http_server.url)

    requests = result.summary["requests"]
    assert requests["dropped"] > 10
    assert requests["total"] == len(http_server.seen)
    assert requests["total"] + requests["dropped"] == 50


async def test_declarative_flow_captures_checks_and_substitutes_variables(http_server):
    flow = (
        Request(url="/inspect", name="first", capture=(Capture("method", json="$.method"),)),
        Request(url="/echo", method="POST", name="second", body="m={method}", check=Check(200)),
    )

    result = await run(plan_of(ConstantVUs(1, 0.2), flow), http_server.url)

    bodies = [body for method, path, body in http_server.seen if path == "/echo"]
    assert bodies and all(body == b"m=GET" for body in bodies)
    assert result.summary["endpoints"]["second"]["requests"]["total"] == len(bodies)


async def test_thresholds_are_evaluated_on_the_summary(http_server):
    async def ping(vu):
        await vu.get("/delay/0", name="ping")

    result = await run(
        plan_of(
            ConstantVUs(1, 0.3),
            ping,
            ["latency{name:ping}: p(95) < 1000", "rps < 1"],
        ),
        http_server.url,
    )

    verdicts = result.summary["thresholds"]
    assert verdicts["latency{name:ping}: p(95) < 1000"]["ok"] is True
    assert verdicts["rps < 1"]["ok"] is False
    assert result.passed is False


async def test_a_vu_keeps_the_cookies_it_is_given_and_sends_them_back(http_server):
    async def session(vu):
        await vu.get("/login/abc123", name="login")
        response = await vu.get("/inspect", name="inspect")
        vu.vars["cookie"] = response.header("content-type") and dict(response.json()["headers"])

    seen = {}

    async def flow(vu):
        await session(vu)
        seen.update(vu.vars["cookie"])

    await run(plan_of(ConstantVUs(1, 0.1), flow), http_server.url)

    assert seen.get("Cookie") == "session=abc123"


async def test_users_and_arrival_rates_of_all_scenarios_add_up_in_the_series(http_server):
    from redline.load._plan import Request

    flow = (Request(url="/delay/5"),)
    plan = Plan(
        scenarios=(
            Scenario("a", ConstantVUs(2, 1.2), flow),
            Scenario("b", ConstantVUs(5, 1.2), flow),
            Scenario("c", ConstantArrivalRate(rate=100, duration=1.2), flow),
            Scenario("d", ConstantArrivalRate(rate=300, duration=1.2), flow),
        )
    )

    result = await run(plan, http_server.url)

    first = result.summary["timeseries"][0]
    assert first["vus"] == 7
    assert first["rate"] == 400
    assert result.summary["requests"]["scheduled"] == 480
    assert {name: s["scheduled"] for name, s in result.summary["scenarios"].items()} == {
        "c": 120,
        "d": 360,
    }


async def test_a_user_removed_by_a_ramp_down_is_cut_after_its_grace(http_server):
    from redline.load._plan import RampingVUs, Request, Stage

    # Two users, then one: the second is in a 2 s request when it is retired, with 0.3 s grace.
    executor = RampingVUs(2, (Stage(0.2, 2), Stage(0.01, 1), Stage(2.5, 1)), 0.3)

    result = await run(
        plan_of(executor, (Request(url="/delay/2000", name="slow"),)), http_server.url
    )

    # The user kept to the end finishes its first request at 2 s (its second is cut at the
    # end); the retired one was cut 0.3 s after retirement, long before its 2 s were up.
    assert result.summary["endpoints"]["slow"]["requests"]["total"] == 1
    assert len(http_server.seen) == 3
