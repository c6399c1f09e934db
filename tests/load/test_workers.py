"""``--workers N``: worker processes share the load and their measurements merge exactly."""

import time

import pytest

from redline.load._errors import RedlineLoadError
from redline.load._workers import PlanSpec, run_workers


def write_plan(tmp_path, url, executor: str, thresholds: str = "", flow: str = "- get: /x"):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"target: {url}\n"
        f"scenarios:\n  s:\n{executor}"
        f"    flow:\n      {flow}\n" + (f"thresholds:\n{thresholds}" if thresholds else "")
    )
    return plan


async def test_two_workers_report_exactly_the_requests_the_server_saw(http_server, tmp_path):
    executor = "    executor: constant-vus\n    vus: 4\n    duration: 1s\n"
    plan = write_plan(tmp_path, http_server.url, executor)

    result = await run_workers(PlanSpec(plan), http_server.url, 2)

    summary = result.summary
    assert summary["requests"]["total"] == len(http_server.seen) > 100
    assert summary["endpoints"]["/x"]["requests"]["total"] == len(http_server.seen)
    assert summary["generator"]["workers"] == 2
    # Both workers drove load: each kept its own connections (2 users each).
    assert http_server.connections >= 4


async def test_workers_split_an_arrival_schedule_without_losing_or_doubling_any(
    http_server, tmp_path
):
    executor = (
        "    executor: constant-arrival-rate\n    rate: 200\n    duration: 1s\n"
        "    pre_allocated_vus: 4\n"
    )
    plan = write_plan(tmp_path, http_server.url, executor)

    result = await run_workers(PlanSpec(plan), http_server.url, 3)

    requests = result.summary["requests"]
    assert requests["total"] == len(http_server.seen) == 200
    assert requests["dropped"] == 0


async def test_merged_latency_is_that_of_all_samples(http_server, tmp_path):
    executor = "    executor: constant-vus\n    vus: 2\n    duration: 1s\n"
    plan = write_plan(tmp_path, http_server.url, executor, flow="- get: /delay/20")

    result = await run_workers(PlanSpec(plan), http_server.url, 2)

    latency = result.summary["latency_ms"]
    assert 20 <= latency["p50"] <= 23, latency
    # Per-second series come from every worker's intervals, merged.
    rows = [row for row in result.summary["timeseries"] if row["p50"] is not None]
    assert rows and all(20 <= row["p50"] <= 25 for row in rows), rows


async def test_an_abort_on_fail_threshold_stops_every_worker(http_server, tmp_path):
    executor = "    executor: constant-vus\n    vus: 2\n    duration: 20s\n"
    thresholds = '  - "errors: rate < 0.01 !"\n'
    plan = write_plan(tmp_path, http_server.url, executor, thresholds, flow="- get: /status/500")

    started = time.monotonic()
    result = await run_workers(PlanSpec(plan), http_server.url, 2)

    assert time.monotonic() - started < 10
    assert result.aborted and result.passed is False
    (by,) = result.summary["aborted"]["by"]
    assert by.startswith("errors: rate < 0.01")


async def test_a_plan_that_does_not_load_fails_before_any_worker_starts(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("scenarios:\n  s:\n    executor: constant-vu\n")

    with pytest.raises(RedlineLoadError, match="plan.yaml:3"):
        await run_workers(PlanSpec(plan), "http://127.0.0.1:1", 2)


def test_preset_options_and_duration_reach_the_preset(tmp_path):
    from redline.load._workers import parse_preset

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 2\n    duration: 10s\n"
        "    flow:\n      - get: /x\n"
    )

    soak = PlanSpec(plan, preset="soak", duration="20s").load()
    spike = PlanSpec(plan, preset="spike:factor=5,hold=2s").load()

    assert soak.total_duration == 20
    assert spike.preset.options["factor"] == 5 and spike.preset.options["hold"] == 2.0
    assert parse_preset("spike:factor=2.5, hold=1s") == ("spike", {"factor": 2.5, "hold": "1s"})
    with pytest.raises(ValueError, match="key=value"):
        parse_preset("spike:factor")


async def test_the_arrival_rate_series_is_the_plans_rate_with_any_number_of_workers(
    http_server, tmp_path
):
    executor = (
        "    executor: constant-arrival-rate\n    rate: 100\n    duration: 1.5s\n"
        "    pre_allocated_vus: 4\n"
    )
    plan = write_plan(tmp_path, http_server.url, executor)

    result = await run_workers(PlanSpec(plan), http_server.url, 2)

    assert result.summary["timeseries"][0]["rate"] == 100
