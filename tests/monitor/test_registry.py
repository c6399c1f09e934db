"""Registries: which metrics one exposition shows, and no two that would clash."""

import pytest

from redline import monitor


def test_metrics_join_the_default_registry_unless_told_otherwise():
    mine = monitor.Registry()
    default = monitor.Counter("test_registry_default_jobs", "Help.")
    explicit = monitor.Counter("jobs", "Help.", registry=mine)
    loose = monitor.Counter("loose_jobs", "Help.", registry=None)
    try:
        assert monitor.REGISTRY.get("test_registry_default_jobs_total") is default
        assert mine.get("jobs_total") is explicit
        assert list(mine) == [explicit]
        assert monitor.REGISTRY.get("loose_jobs_total") is None
        assert loose.collect().samples == {(): 0.0}
    finally:
        monitor.REGISTRY.unregister(default)


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        (
            lambda r: monitor.Counter("jobs", "H.", registry=r),
            lambda r: monitor.Gauge("jobs_total", "H.", registry=r),
            "jobs_total",
        ),
        (
            lambda r: monitor.Histogram("latency", "H.", registry=r),
            lambda r: monitor.Gauge("latency_count", "H.", registry=r),
            "latency_count",
        ),
        (
            lambda r: monitor.Histogram("latency", "H.", registry=r),
            lambda r: monitor.Counter("latency_quantiles", "H.", registry=r),
            "latency_quantiles",
        ),
        (
            lambda r: monitor.Gauge("jobs", "H.", registry=r),
            lambda r: monitor.Counter("jobs", "H.", registry=r),
            "jobs",
        ),
    ],
)
def test_two_metrics_that_would_export_the_same_name_are_refused(first, second, clash):
    registry = monitor.Registry()
    kept = first(registry)
    with pytest.raises(monitor.MetricError, match=f"already exports '{clash}'"):
        second(registry)
    assert list(registry) == [kept]


def test_unregister_frees_the_names():
    registry = monitor.Registry()
    old = monitor.Counter("jobs", "Help.", registry=registry)
    registry.unregister(old)

    new = monitor.Gauge("jobs", "Help.", registry=registry)

    assert registry.get("jobs") is new
    with pytest.raises(monitor.MetricError, match="not in this registry"):
        registry.unregister(old)


def test_get_finds_a_counter_by_either_spelling():
    registry = monitor.Registry()
    jobs = monitor.Counter("jobs", "Help.", registry=registry)

    assert registry.get("jobs") is registry.get("jobs_total") is jobs


def test_collect_lists_families_in_registration_order():
    registry = monitor.Registry()
    monitor.Gauge("b", "Help.", registry=registry)
    monitor.Counter("a", "Help.", registry=registry)
    monitor.Histogram("c", "Help.", registry=registry)

    assert [f.name for f in registry.collect()] == ["b", "a_total", "c"]


def test_reset_zeroes_values_but_keeps_metrics_and_children():
    registry = monitor.Registry()
    jobs = monitor.Counter("jobs", "Help.", ("kind",), registry=registry)
    child = jobs.labels(kind="email")
    child.inc(3)
    latency = monitor.Histogram("latency_seconds", "Help.", registry=registry)
    latency.observe(0.1)

    registry.reset()

    assert child.value == 0
    assert jobs.labels(kind="email") is child
    assert latency.snapshot().count == 0
    child.inc()
    assert jobs.collect().samples == {("email",): 1.0}
