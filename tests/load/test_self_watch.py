"""The generator's self-watch: saturation is reported when the generator, not the target, lags."""

import asyncio
import time

from redline.load._self_watch import SelfWatch


async def test_an_idle_generator_is_not_saturated():
    watch = SelfWatch(interval=0.01)
    watch.start()
    await asyncio.sleep(0.3)
    await watch.stop()
    summary = watch.summary(requests=100)
    # A shared CI machine may delay one tick now and then; an idle generator stays far
    # from the blocked one below.
    assert summary["core_busy"] < 0.5
    assert summary["max_schedule_lag_ms"] == 0
    assert summary["loop_lag_p99_ms"] < 30
    assert len(watch.loop_lag_ms) >= 10


async def test_a_blocked_event_loop_is_reported_as_saturation():
    watch = SelfWatch(interval=0.01)
    watch.start()
    await asyncio.sleep(0.05)
    for _ in range(5):
        time.sleep(0.05)  # the generator's own work blocks its loop
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    await watch.stop()
    summary = watch.summary(requests=100)
    assert summary["saturated"] is True
    assert any("event loop" in reason for reason in summary["reasons"])
    assert summary["loop_lag_p99_ms"] > 30


async def test_late_arrivals_are_reported_as_saturation_with_the_worst_lag():
    watch = SelfWatch(interval=0.01)
    watch.start()
    watch.schedule_lag(2_000_000)
    watch.schedule_lag(35_000_000)
    watch.schedule_lag(1_000_000)
    await asyncio.sleep(0.05)
    await watch.stop()
    summary = watch.summary(requests=3)
    assert summary["max_schedule_lag_ms"] == 35.0
    assert (summary["arrivals"], summary["late_arrivals"]) == (3, 1)
    assert summary["saturated"] is True
    assert "1 of 3 arrivals (33.3%) sent more than 10 ms late" in " ".join(summary["reasons"])


def lagged(lags_ms: list[float]) -> dict[str, object]:
    """The summary of a watch that saw arrivals ``lags_ms`` late, and nothing else."""
    watch = SelfWatch()
    for lag_ms in lags_ms:
        watch.schedule_lag(round(lag_ms * 1_000_000))
    return watch.summary(requests=len(lags_ms))


def test_one_arrival_a_few_tens_of_ms_late_in_many_is_not_saturation():
    summary = lagged([0.2] * 999 + [35.0])

    assert summary["saturated"] is False
    assert summary["reasons"] == []
    assert summary["max_schedule_lag_ms"] == 35.0
    assert (summary["arrivals"], summary["late_arrivals"]) == (1000, 1)
    assert summary["late_arrival_share"] == 0.001


def test_more_than_one_percent_of_arrivals_late_is_saturation():
    at_the_limit = lagged([0.2] * 990 + [20.0] * 10)
    over = lagged([0.2] * 989 + [20.0] * 11)

    assert at_the_limit["saturated"] is False
    assert at_the_limit["late_arrival_share"] == 0.01
    assert over["saturated"] is True
    assert over["late_arrival_share"] == 0.011
    assert over["reasons"] == [
        "11 of 1000 arrivals (1.1%) sent more than 10 ms late (> 1% of them), "
        "the worst 20.0 ms late"
    ]


def test_an_arrival_exactly_at_the_limit_is_not_late():
    summary = lagged([10.0] * 10)

    assert summary["late_arrivals"] == 0
    assert summary["saturated"] is False


def test_one_arrival_more_than_100_ms_late_is_saturation():
    summary = lagged([0.2] * 9999 + [150.0])

    assert summary["late_arrival_share"] == 0.0001
    assert summary["saturated"] is True
    assert summary["reasons"] == ["arrivals sent up to 150.0 ms late (> 100 ms)"]


def test_without_arrivals_the_share_is_zero():
    summary = lagged([])

    assert (summary["arrivals"], summary["late_arrivals"]) == (0, 0)
    assert summary["late_arrival_share"] == 0.0
    assert summary["saturated"] is False


async def test_cpu_per_request_is_the_process_cpu_divided_by_requests():
    watch = SelfWatch(interval=0.05)
    watch.start()
    # Burn 0.2 s of this process's CPU, however long a loaded machine takes to give it.
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    await watch.stop()
    summary = watch.summary(requests=1000)
    assert 0.2 <= summary["cpu_seconds"] < 0.6
    assert abs(summary["cpu_us_per_request"] - summary["cpu_seconds"] * 1000) < 1
    assert 0 < summary["core_busy"] <= 1.0


def test_one_hiccup_of_a_busy_machine_is_not_saturation_and_two_are():
    # The loop-lag samples a short run would take, set rather than provoked: on a loaded CI
    # machine a real run can see a second stall of its own (the blocked-loop test above
    # provokes real ones).
    def summary(lags_ms: list[float]) -> dict[str, object]:
        watch = SelfWatch(interval=0.01)
        watch.loop_lag_ms.extend(lags_ms)
        return watch.summary(requests=100)

    one = summary([0.5] * 19 + [45.0])
    two = summary([0.5] * 18 + [45.0, 45.0])

    assert one["loop_lag_p99_ms"] == 45.0
    assert not any("event loop" in reason for reason in one["reasons"])
    assert one["saturated"] is False
    assert any("event loop" in reason for reason in two["reasons"])
    assert two["saturated"] is True
