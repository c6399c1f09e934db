"""Merging views of several processes: counters and histograms add exactly, gauges by rule."""

import logging
import math
import random

import pytest

from redline import monitor
from redline.monitor import _snapshot
from redline.monitor._snapshot import pack_families, subtract_families, unpack_families


def worker_view(*, jobs=0.0, samples=(), gauges=None, updated=0.0, buckets=None):
    """One process's families, built through the public metric API."""
    registry = monitor.Registry()
    monitor.Counter("jobs", "Jobs.", ("kind",), registry=registry).labels(kind="a").inc(jobs)
    options = {"buckets": buckets} if buckets else {}
    hist = monitor.Histogram("latency_seconds", "Latency.", registry=registry, **options)
    for value in samples:
        hist.observe(value)
    for mode, value in (gauges or {}).items():
        monitor.Gauge(f"g_{mode}", "G.", multiprocess_mode=mode, registry=registry).set(value)
    families = registry.collect()
    for family in families:
        if family.kind == "gauge":
            family.updated = {key: updated for key in family.samples}
    return families


def by_name(families):
    return {family.name: family for family in families}


def test_counters_sum_and_histograms_add_exactly():
    rng = random.Random(3)
    batches = [[rng.lognormvariate(-4, 1) for _ in range(3000)] for _ in range(4)]
    views = [(pid, worker_view(jobs=pid, samples=batch)) for pid, batch in enumerate(batches)]
    single = worker_view(jobs=6, samples=[v for batch in batches for v in batch])

    merged = by_name(monitor.merge_families(views))
    expected = by_name(single)

    assert merged["jobs_total"].samples == {("a",): 0 + 1 + 2 + 3}
    got, want = merged["latency_seconds"].samples[()], expected["latency_seconds"].samples[()]
    assert list(got.hdr.counts) == list(want.hdr.counts)
    assert got.bucket_counts == want.bucket_counts
    assert got.count == want.count == 12_000
    assert got.sum == pytest.approx(want.sum, rel=1e-12)
    assert got.quantiles() == want.quantiles()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("sum", 1 + 5 + 3), ("max", 5), ("min", 1), ("last", 3)],
)
def test_gauges_merge_by_their_rule(mode, expected):
    # Set at times 10, 20 and 30: the value set last is 3, though it is neither max nor min.
    views = [
        (101, worker_view(gauges={mode: 1}, updated=10.0)),
        (102, worker_view(gauges={mode: 3}, updated=30.0)),
        (103, worker_view(gauges={mode: 5}, updated=20.0)),
    ]

    merged = by_name(monitor.merge_families(views))

    assert merged[f"g_{mode}"].samples == {(): expected}


def test_gauges_in_mode_all_get_one_series_per_pid():
    views = [(101, worker_view(gauges={"all": 1})), (102, worker_view(gauges={"all": 2}))]

    merged = by_name(monitor.merge_families(views))["g_all"]

    assert merged.labelnames == ("pid",)
    assert merged.samples == {("101",): 1, ("102",): 2}


def test_gauges_can_be_left_out():
    merged = by_name(monitor.merge_families([(1, worker_view(gauges={"sum": 1}))], gauges=False))

    assert "g_sum" not in merged
    assert "jobs_total" in merged


def test_a_family_defined_differently_elsewhere_is_left_out_with_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(_snapshot, "_warned", set())
    views = [
        (1, worker_view(samples=[0.1], buckets=[0.1, 1.0])),
        (2, worker_view(samples=[0.2, 0.3], buckets=[0.5, 1.0])),
    ]

    with caplog.at_level(logging.WARNING, logger="redline.monitor"):
        merged = by_name(monitor.merge_families(views))
        monitor.merge_families(views)

    assert merged["latency_seconds"].samples[()].count == 1
    assert merged["latency_seconds"].buckets == (0.1, 1.0, math.inf)
    assert caplog.text.count("'latency_seconds' is defined differently") == 1
    assert "buckets (0.1, 1.0, inf) here, (0.5, 1.0, inf) there" in caplog.text


def test_packing_and_unpacking_keeps_every_value():
    families = worker_view(jobs=3, samples=[0.001, 0.02, 0.3], gauges={"last": 7}, updated=5.0)

    restored = by_name(unpack_families(pack_families(families)))

    original = by_name(families)
    assert restored["jobs_total"].samples == original["jobs_total"].samples
    assert restored["g_last"].samples == {(): 7}
    assert restored["g_last"].updated == {(): 5.0}
    assert restored["g_last"].multiprocess_mode == "last"
    got, want = restored["latency_seconds"].samples[()], original["latency_seconds"].samples[()]
    assert (got.count, got.sum, got.bucket_counts) == (want.count, want.sum, want.bucket_counts)
    assert list(got.hdr.counts) == list(want.hdr.counts)
    assert restored["latency_seconds"].signature() == original["latency_seconds"].signature()


def test_subtracting_a_baseline_leaves_what_came_after():
    registry = monitor.Registry()
    jobs = monitor.Counter("jobs", "Jobs.", registry=registry)
    hist = monitor.Histogram("latency_seconds", "Latency.", registry=registry)
    gauge = monitor.Gauge("inflight", "In flight.", registry=registry)
    jobs.inc(3)
    hist.observe(0.01)
    hist.observe(0.02)
    gauge.set(4)
    baseline = registry.collect()
    jobs.inc(2)
    hist.observe(5.0)
    gauge.set(1)

    after = by_name(subtract_families(registry.collect(), baseline))

    assert after["jobs_total"].samples == {(): 2}
    assert after["inflight"].samples == {(): 1}
    value = after["latency_seconds"].samples[()]
    assert (value.count, value.sum) == (1, pytest.approx(5.0))
    assert value.hdr.total_count == 1
    assert value.quantile(0.5) == pytest.approx(5.0, rel=0.01)
    below = monitor.DEFAULT_BUCKETS.index(2.5)
    assert value.bucket_counts[below:] == (0,) + (1,) * (len(value.bucket_counts) - below - 1)


def test_snapshots_of_the_previous_format_with_hdrh_blobs_still_unpack():
    families = worker_view(samples=[0.001, 0.02, 0.3, 0.3])
    packed = pack_families(families)
    for row in packed:
        if row[1] == "histogram":
            # Format 1 carried each series' HDR histogram in hdrh's own encoding.
            row[-1] = [[*series[:4], by_name(families)[row[0]].samples[()].encoded()]
                       for series in row[-1]]  # fmt: skip

    restored = by_name(unpack_families(packed))["latency_seconds"].samples[()]

    original = by_name(families)["latency_seconds"].samples[()]
    assert restored.quantiles() == original.quantiles()
    assert (restored.count, restored.bucket_counts) == (original.count, original.bucket_counts)


def test_a_series_snapshot_keeps_its_counts_compactly_and_answers_like_the_dense_histogram():
    rng = random.Random(11)
    samples = [rng.lognormvariate(-3, 2) for _ in range(20_000)]
    value = by_name(worker_view(samples=samples))["latency_seconds"].samples[()]

    dense = value.hdr
    assert value._hdr is None and value._span is not None
    assert dense.total_count == len(samples)
    assert value.quantiles((0.0, 0.25, 0.5, 0.99, 1.0)) == {
        q: dense.get_value_at_percentile(q * 100) / value.scale for q in (0.0, 0.25, 0.5, 0.99, 1.0)
    }
