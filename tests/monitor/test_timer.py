"""Timers: ``with hist.time()`` and ``@hist.time()`` on sync and async functions, in threads."""

import asyncio
import threading
import time

import pytest

from redline import monitor


@pytest.fixture
def latency():
    return monitor.Histogram("latency_seconds", "Help.", ("route",), registry=monitor.Registry())


def durations(hist, route):
    got = hist.labels(route=route).snapshot()
    return got.count, got.sum


def test_with_block_records_its_duration_in_seconds(latency):
    with latency.labels(route="/a").time() as timer:
        time.sleep(0.02)

    count, total = durations(latency, "/a")
    assert count == 1
    assert 0.02 <= total < 0.2
    assert timer.elapsed == total


def test_a_block_that_raises_is_recorded_too(latency):
    with pytest.raises(KeyError), latency.labels(route="/a").time():
        raise KeyError("x")

    assert durations(latency, "/a")[0] == 1


def test_decorated_sync_function_records_every_call_and_keeps_its_metadata(latency):
    @latency.labels(route="/a").time()
    def handler(x):
        """Doc."""
        time.sleep(0.01)
        return x * 2

    assert handler(2) == 4
    assert handler(3) == 6
    assert handler.__name__ == "handler"
    assert handler.__doc__ == "Doc."
    count, total = durations(latency, "/a")
    assert count == 2
    assert 0.02 <= total < 0.3


async def test_decorated_async_function_records_the_awaited_duration(latency):
    @latency.labels(route="/a").time()
    async def handler():
        await asyncio.sleep(0.02)
        return "ok"

    assert asyncio.iscoroutinefunction(handler)
    assert await handler() == "ok"
    count, total = durations(latency, "/a")
    assert count == 1
    assert 0.02 <= total < 0.2


async def test_concurrent_tasks_each_time_their_own_call(latency):
    @latency.labels(route="/a").time()
    async def handler(delay):
        await asyncio.sleep(delay)

    await asyncio.gather(handler(0.05), handler(0.01), handler(0.03))

    got = latency.labels(route="/a").snapshot()
    assert got.count == 3
    assert got.sum == pytest.approx(0.09, abs=0.03)
    assert got.quantile(0.0) >= 0.0099  # the bottom of its HDR sub-bucket
    assert got.quantile(1.0) >= 0.05


def test_threads_sharing_one_decorator_each_time_their_own_call(latency):
    @latency.labels(route="/a").time()
    def handler():
        time.sleep(0.05)

    threads = []
    for _ in range(4):
        threads.append(threading.Thread(target=handler))
        threads[-1].start()
        time.sleep(0.01)
    for thread in threads:
        thread.join()

    got = latency.labels(route="/a").snapshot()
    assert got.count == 4
    # Had the threads shared one start time, the earlier calls would measure from a later
    # start (40 ms or less). The minimum reads as the bottom of its HDR sub-bucket: -0.8 %.
    assert got.quantile(0.0) >= 0.0495


def test_each_call_is_timed_from_its_own_start(latency):
    @latency.labels(route="/a").time()
    def instant():
        pass

    instant()
    time.sleep(0.05)
    instant()

    got = latency.labels(route="/a").snapshot()
    assert got.count == 2
    assert got.quantile(1.0) < 0.04


def test_an_unlabelled_histogram_times_directly():
    hist = monitor.Histogram("job_seconds", "Help.", registry=None)

    @hist.time()
    def job():
        pass

    job()
    with hist.time():
        pass

    assert hist.snapshot().count == 2
