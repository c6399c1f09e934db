"""Gauge: set, inc, dec, callbacks, in-progress tracking and the declared merge rule."""

import asyncio
import threading
import time

import pytest

from redline import monitor


@pytest.fixture
def registry():
    return monitor.Registry()


def test_set_inc_dec(registry):
    gauge = monitor.Gauge("queue", "Help.", registry=registry)
    gauge.set(10)
    gauge.inc()
    gauge.dec(3.5)

    assert gauge.value == 7.5


def test_under_the_last_rule_each_change_records_when_it_happened(registry):
    gauge = monitor.Gauge("queue", "Help.", ("q",), multiprocess_mode="last", registry=registry)
    before = time.time()
    gauge.labels(q="a").set(1)
    after = time.time()
    gauge.labels(q="b")

    family = gauge.collect()

    assert before <= family.updated[("a",)] <= after
    assert family.updated[("b",)] == 0.0


def test_set_function_is_read_at_collect_time(registry):
    gauge = monitor.Gauge("fds", "Help.", registry=registry)
    source = iter([3, 4])
    gauge.set_function(lambda: next(source))

    assert gauge.collect().samples == {(): 3.0}
    assert gauge.collect().samples == {(): 4.0}


def test_track_inprogress_counts_blocks_and_calls_sync_and_async(registry):
    gauge = monitor.Gauge("inflight", "Help.", registry=registry)
    seen = []

    @gauge.track_inprogress()
    def handler():
        seen.append(gauge.value)

    @gauge.track_inprogress()
    async def async_handler():
        await asyncio.sleep(0)
        seen.append(gauge.value)

    with gauge.track_inprogress():
        handler()
        asyncio.run(async_handler())
    with pytest.raises(RuntimeError), gauge.track_inprogress():
        raise RuntimeError("handler failed")

    assert seen == [2, 2]
    assert gauge.value == 0


def test_concurrent_inc_and_dec_balance_exactly(registry):
    gauge = monitor.Gauge("inflight", "Help.", registry=registry)

    def work():
        for _ in range(20_000):
            gauge.inc()
            gauge.dec()
            gauge.inc()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert gauge.value == 4 * 20_000


def test_the_merge_rule_is_checked_and_recorded(registry):
    with pytest.raises(monitor.MetricError, match="'median' is not one of sum, max, min"):
        monitor.Gauge("lag", "Help.", multiprocess_mode="median", registry=registry)
    with pytest.raises(monitor.MetricError, match="'pid' is reserved by multiprocess_mode='all'"):
        monitor.Gauge("lag", "Help.", ("pid",), multiprocess_mode="all", registry=registry)

    default = monitor.Gauge("inflight", "Help.", registry=registry)
    lag = monitor.Gauge("lag", "Help.", multiprocess_mode="max", registry=registry)
    assert default.collect().multiprocess_mode == "sum"
    assert lag.collect().multiprocess_mode == "max"


def test_a_failing_function_reads_nan_and_the_rest_is_still_exported(registry, caplog):
    def pool_size():
        raise RuntimeError("pool closed")

    monitor.Gauge("pool_size", "Pool.", registry=registry).set_function(pool_size)
    monitor.Counter("jobs", "Jobs.", registry=registry).inc()

    text = monitor.generate_latest(registry).decode()

    assert "pool_size NaN\n" in text
    assert "jobs_total 1.0\n" in text
    assert "its function raised" in caplog.text
