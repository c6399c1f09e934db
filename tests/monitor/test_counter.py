"""Counter: only up, and no increment lost to concurrent threads."""

import sys
import threading

import pytest

from redline import monitor
from redline.monitor import _counter


@pytest.fixture
def registry():
    return monitor.Registry()


def test_inc_adds_one_or_the_amount(registry):
    jobs = monitor.Counter("jobs", "Help.", registry=registry)
    jobs.inc()
    jobs.inc(2.5)

    assert jobs.value == 3.5
    assert registry.collect()[0].samples == {(): 3.5}


def test_a_negative_increment_is_refused_and_changes_nothing(registry):
    jobs = monitor.Counter("jobs", "Help.", ("kind",), registry=registry)
    child = jobs.labels(kind="email")
    child.inc()

    with pytest.raises(monitor.MetricError, match="counter 'jobs_total': inc\\(-1\\) is negative"):
        child.inc(-1)
    assert child.value == 1


@pytest.mark.parametrize("amount", [float("nan"), float("inf")])
def test_a_nan_or_infinite_increment_is_refused_and_does_not_poison_the_total(registry, amount):
    jobs = monitor.Counter("jobs", "Help.", registry=registry)
    jobs.inc()

    with pytest.raises(monitor.MetricError, match="is not a finite number"):
        jobs.inc(amount)
    jobs.inc()
    assert jobs.value == 2


def test_the_name_ends_with_total_either_way(registry):
    assert monitor.Counter("a", "Help.", registry=registry).name == "a_total"
    assert monitor.Counter("b_total", "Help.", registry=registry).name == "b_total"


def test_pending_increments_are_folded_in_every_flush_at(registry, monkeypatch):
    monkeypatch.setattr(_counter, "FLUSH_AT", 10)
    jobs = monitor.Counter("jobs", "Help.", registry=registry)
    for _ in range(25):
        jobs.inc()

    child = jobs._series[()]
    assert len(child._pending) == 5
    assert child._value == 20
    assert jobs.value == 25


def test_concurrent_increments_and_reads_lose_nothing(registry, monkeypatch):
    monkeypatch.setattr(_counter, "FLUSH_AT", 64)
    jobs = monitor.Counter("jobs", "Help.", ("kind",), registry=registry)
    threads, per_thread = 8, 20_000
    done = threading.Event()

    def work():
        child = jobs.labels(kind="email")
        for _ in range(per_thread):
            child.inc()

    def read():
        while not done.is_set():
            registry.collect()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        reader = threading.Thread(target=read)
        reader.start()
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        done.set()
        reader.join()
    finally:
        sys.setswitchinterval(old)

    assert jobs.labels(kind="email").value == threads * per_thread


def test_a_counters_unit_goes_before_total():
    from redline.monitor import Counter, Registry

    registry = Registry()

    assert Counter("sent_total", "Sent.", unit="bytes", registry=registry).name == (
        "sent_bytes_total"
    )
    assert Counter("read_bytes_total", "Read.", unit="bytes", registry=registry).name == (
        "read_bytes_total"
    )
    assert Counter("jobs", "Jobs.", unit="seconds", registry=registry).name == (
        "jobs_seconds_total"
    )
