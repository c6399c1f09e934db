"""The Prometheus text exposition: standard names, escaping, histograms and their quantiles."""

import math
import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from redline import monitor


@pytest.fixture
def registry():
    return monitor.Registry()


def families(registry):
    return {
        f.name: f
        for f in text_string_to_metric_families(monitor.generate_latest(registry).decode())
    }


def test_counters_and_gauges_with_help_type_and_labels(registry):
    jobs = monitor.Counter("jobs", "Jobs done.", ("kind",), registry=registry)
    jobs.labels(kind="email").inc(3)
    monitor.Gauge("inflight", "In flight.", registry=registry).set(2)

    text = monitor.generate_latest(registry).decode()

    assert text == (
        "# HELP jobs_total Jobs done.\n"
        "# TYPE jobs_total counter\n"
        'jobs_total{kind="email"} 3.0\n'
        "# HELP inflight In flight.\n"
        "# TYPE inflight gauge\n"
        "inflight 2.0\n"
    )
    parsed = families(registry)
    assert parsed["jobs"].type == "counter"
    assert parsed["jobs"].samples[0].labels == {"kind": "email"}


def test_label_values_and_help_are_escaped(registry):
    nasty = 'a "quoted" back\\slash\nnew line'
    monitor.Counter(
        "jobs", 'Help with \\ and\nnewline "quotes".', ("v",), registry=registry
    ).labels(v=nasty).inc()

    text = monitor.generate_latest(registry).decode()
    parsed = families(registry)["jobs"]

    assert r'jobs_total{v="a \"quoted\" back\\slash\nnew line"} 1.0' in text
    assert r'# HELP jobs_total Help with \\ and\nnewline "quotes".' in text
    assert parsed.samples[0].labels == {"v": nasty}
    assert parsed.documentation == 'Help with \\ and\nnewline "quotes".'


def test_a_histogram_is_classic_buckets_plus_a_quantile_summary(registry):
    rng = random.Random(5)
    values = [rng.lognormvariate(-3, 1) for _ in range(5000)]
    latency = monitor.Histogram(
        "request_duration_seconds", "Latency.", ("route",), registry=registry
    )
    for value in values:
        latency.labels(route="/a").observe(value)

    parsed = families(registry)

    hist = parsed["request_duration_seconds"]
    assert hist.type == "histogram"
    buckets = [s for s in hist.samples if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == [
        *(repr(b) for b in monitor.DEFAULT_BUCKETS[:-1]),
        "+Inf",
    ]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)
    for sample, bound in zip(buckets, monitor.DEFAULT_BUCKETS, strict=True):
        assert sample.value == sum(v <= bound for v in values)
    by_name = {s.name: s.value for s in hist.samples}
    assert by_name["request_duration_seconds_count"] == 5000
    assert by_name["request_duration_seconds_sum"] == pytest.approx(math.fsum(values))

    summary = parsed["request_duration_seconds_quantiles"]
    assert summary.type == "summary"
    quantiles = {s.labels["quantile"]: s.value for s in summary.samples}
    assert set(quantiles) == {"0.5", "0.9", "0.95", "0.99", "0.999"}
    ordered = sorted(values)
    for q, got in quantiles.items():
        exact = ordered[math.ceil(float(q) * len(ordered)) - 1]
        assert exact <= got <= exact * 1.0079
    assert all(s.labels["route"] == "/a" for s in summary.samples)


def test_an_empty_histogram_exports_zero_counts_and_nan_quantiles(registry):
    monitor.Histogram("idle_seconds", "Idle.", buckets=[1.0], registry=registry)

    text = monitor.generate_latest(registry).decode()

    assert 'idle_seconds_bucket{le="1.0"} 0\n' in text
    assert 'idle_seconds_bucket{le="+Inf"} 0\n' in text
    assert "idle_seconds_count 0\n" in text
    assert 'idle_seconds_quantiles{quantile="0.99"} NaN\n' in text
    parsed = families(registry)
    assert all(math.isnan(s.value) for s in parsed["idle_seconds_quantiles"].samples)


def test_a_labelled_metric_without_children_exports_only_its_header(registry):
    monitor.Counter("jobs", "Jobs.", ("kind",), registry=registry)

    assert (
        monitor.generate_latest(registry) == b"# HELP jobs_total Jobs.\n# TYPE jobs_total counter\n"
    )


def test_special_values_use_prometheus_spelling(registry):
    gauge = monitor.Gauge("g", "G.", ("v",), registry=registry)
    gauge.labels(v="inf").set(math.inf)
    gauge.labels(v="-inf").set(-math.inf)
    gauge.labels(v="nan").set(math.nan)

    text = monitor.generate_latest(registry).decode()

    assert 'g{v="inf"} +Inf\n' in text
    assert 'g{v="-inf"} -Inf\n' in text
    assert 'g{v="nan"} NaN\n' in text


def test_the_content_type_is_prometheus_text_0_0_4():
    assert monitor.CONTENT_TYPE_LATEST == "text/plain; version=0.0.4; charset=utf-8"
