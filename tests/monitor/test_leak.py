"""Leak watch: verdicts on synthetic RSS series, each guard, the gauges, a real leak and a
real stable process, and the on-demand tracemalloc diff."""

import math
import random
import time
import tracemalloc

import pytest

from redline import monitor
from redline.monitor import LeakWatch

MiB = 1 << 20
STEP = 30.0  # the default interval: synthetic series have one sample per 30 s


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(values, registry=None, **options):
    """Every value as one sample, 30 s apart; the watch and its reports."""
    clock = FakeClock()
    series = iter(values)
    watch = LeakWatch(
        sample_rss=lambda: next(series), sample_heap=None, clock=clock, registry=registry, **options
    )
    reports = []
    for i in range(len(values)):
        clock.now = i * STEP
        reports.append(watch.sample())
    return watch, reports


def minutes(n):
    return int(n * 60 / STEP)


def test_a_flat_series_warms_up_then_is_stable():
    noise = random.Random(1)
    values = [200 * MiB + noise.uniform(-1, 1) * MiB for _ in range(minutes(40))]

    _, reports = feed(values)

    # Warm-up is 5 minutes, then 10 samples (5 more minutes) are needed for a verdict.
    assert {r.verdict for r in reports[: minutes(5)]} == {"warming-up"}
    assert "warm-up" in reports[0].reason
    assert {r.verdict for r in reports[minutes(5) : minutes(5) + 9]} == {"warming-up"}
    assert {r.verdict for r in reports[minutes(5) + 9 :]} == {"stable"}


def test_growth_during_warm_up_then_flat_is_stable():
    ramp = [(50 + 200 * i / minutes(5)) * MiB for i in range(minutes(5))]
    values = ramp + [250 * MiB + (i % 3) * 0.5 * MiB for i in range(minutes(30))]

    watch, reports = feed(values)

    assert reports[-1].verdict == "stable"
    assert all(s.when >= 300 for s in watch.samples()), "warm-up samples are not kept"
    assert {r.verdict for r in reports} == {"warming-up", "stable"}


def test_linear_growth_is_growing_with_its_slope():
    values = [200 * MiB + i * MiB for i in range(minutes(40))]  # 1 MiB per 30 s

    _, reports = feed(values)
    report = reports[-1]

    assert report.verdict == "growing"
    assert report.slope == pytest.approx(MiB / STEP)
    assert report.r2 == pytest.approx(1.0)
    assert report.samples == 60
    assert "MiB/h" in report.reason
    first_growing = next(i for i, r in enumerate(reports) if r.verdict == "growing")
    # Needs the warm-up and the minimum window, and 16 MiB of growth within the window.
    assert first_growing >= minutes(5) + 16


def test_noisy_growth_is_growing():
    noise = random.Random(7)
    values = [200 * MiB + i * MiB + noise.gauss(0, 4) * MiB for i in range(minutes(40))]

    _, reports = feed(values)

    assert reports[-1].verdict == "growing"
    assert 0.8 <= reports[-1].r2 < 0.99


def test_a_gc_sawtooth_is_stable():
    # RSS climbs 30 MiB over 4 minutes of work, then a collection and the allocator give it back.
    values = [200 * MiB + (i % 8) * 4 * MiB for i in range(minutes(40))]

    _, reports = feed(values)

    assert {r.verdict for r in reports[minutes(10) :]} == {"stable"}
    assert "R^2" in reports[-1].reason


def test_a_single_step_such_as_a_cache_filled_once_is_stable():
    values = [200 * MiB] * minutes(20) + [300 * MiB] * minutes(15)

    _, reports = feed(values)

    assert {r.verdict for r in reports} == {"warming-up", "stable"}


def test_growth_levelling_off_into_a_plateau_is_stable():
    # Arenas and caches approaching their working set: fits a line well, but decelerates.
    values = [200 * MiB] * minutes(5) + [
        (200 + 100 * (1 - math.exp(-i * STEP / 600))) * MiB for i in range(60)
    ]

    _, reports = feed(values)

    assert reports[-1].r2 > 0.8
    assert reports[-1].growth > 16 * MiB
    assert reports[-1].verdict == "stable"
    assert "levelling off" in reports[-1].reason


def test_growth_under_the_absolute_floor_is_stable():
    values = [200 * MiB + i * 0.2 * MiB for i in range(minutes(40))]  # 12 MiB per window

    _, reports = feed(values)

    assert reports[-1].r2 > 0.99
    assert reports[-1].verdict == "stable"
    assert "floor" in reports[-1].reason


def test_growth_under_the_relative_floor_is_stable():
    values = [4096 * MiB + i * 3 * MiB for i in range(minutes(40))]  # 180 MiB of 4 GiB, 4 %

    _, reports = feed(values)

    assert reports[-1].verdict == "stable"
    assert "10% of" in reports[-1].reason
    _, reports = feed(values, min_growth_ratio=0.02)
    assert reports[-1].verdict == "growing"


def test_a_leak_starting_late_is_found_once_it_dominates_the_window():
    values = [200 * MiB] * minutes(30) + [200 * MiB + i * MiB for i in range(minutes(30))]

    _, reports = feed(values)

    assert reports[minutes(30)].verdict == "stable"
    assert reports[-1].verdict == "growing"


def test_heap_slope_is_reported_in_blocks_per_second():
    clock = FakeClock()
    watch = LeakWatch(
        warmup=0,
        sample_rss=lambda: 100 * MiB,
        sample_heap=lambda: 1000 + clock.now,
        clock=clock,
        registry=None,
    )
    for i in range(12):
        clock.now = i * STEP
        report = watch.sample()

    assert report.heap_slope == pytest.approx(1.0)
    assert report.verdict == "stable"


def test_gauges_show_the_slope_and_one_verdict():
    registry = monitor.Registry()
    values = [200 * MiB + i * MiB for i in range(minutes(40))]

    watch, reports = feed(values, registry=registry)
    text = monitor.generate_latest(registry).decode()

    assert registry.get("leak_rss_slope_bytes_per_second").value == pytest.approx(MiB / STEP)
    assert 'leak_verdict{verdict="growing"} 1.0' in text
    assert 'leak_verdict{verdict="stable"} 0.0' in text
    assert 'leak_verdict{verdict="warming-up"} 0.0' in text
    assert registry.get("leak_verdict").multiprocess_mode == "all"


def test_slope_gauge_is_nan_and_verdict_warming_up_before_any_fit():
    registry = monitor.Registry()
    LeakWatch(sample_rss=lambda: 1.0, registry=registry)

    assert math.isnan(registry.get("leak_rss_slope_bytes_per_second").value)
    assert 'leak_verdict{verdict="warming-up"} 1.0' in monitor.generate_latest(registry).decode()


def test_a_second_watch_in_the_same_registry_is_refused_and_the_first_keeps_its_gauges():
    registry = monitor.Registry()
    LeakWatch(sample_rss=lambda: 1.0, registry=registry)

    with pytest.raises(monitor.MetricError, match="leak_rss_slope_bytes_per_second"):
        LeakWatch(sample_rss=lambda: 1.0, registry=registry)
    assert len(registry) == 3


def test_bad_settings_are_refused_with_the_values():
    with pytest.raises(monitor.RedlineMonitorError, match="min_samples=3"):
        LeakWatch(min_samples=3, registry=None)
    with pytest.raises(monitor.RedlineMonitorError, match="interval"):
        LeakWatch(interval=0, registry=None)


def test_the_thread_samples_every_interval_until_stopped():
    with LeakWatch(interval=0.02, warmup=0, registry=None) as watch:
        time.sleep(0.3)
    count = len(watch.samples())
    time.sleep(0.1)

    assert 5 <= count <= 16
    assert len(watch.samples()) == count
    assert watch.samples()[-1].rss > 1 * MiB
    assert not tracemalloc.is_tracing(), "the watch never starts tracemalloc"


# -- real memory ----------------------------------------------------------------------------------

REAL = dict(interval=0.05, warmup=0.2, window=40, min_samples=10, min_growth_bytes=4 * MiB)


def test_retaining_memory_in_a_loop_is_growing():
    retained = []
    with LeakWatch(min_growth_ratio=0.01, registry=None, **REAL) as watch:
        deadline = time.monotonic() + 10
        while watch.report.verdict != "growing" and time.monotonic() < deadline:
            retained.append(bytearray(256 * 1024))  # zero-filled: the pages are touched
            time.sleep(0.01)
    report = watch.report
    held = len(retained) * 256 * 1024
    retained.clear()

    assert report.verdict == "growing", report.reason
    assert held < 400 * MiB
    assert report.slope > 5 * MiB  # about 25 MiB/s retained


def test_allocating_and_freeing_in_a_loop_is_stable():
    with LeakWatch(min_growth_ratio=0.01, registry=None, **REAL) as watch:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            block = bytearray(256 * 1024)
            del block
            time.sleep(0.01)
    report = watch.report

    assert report.samples >= 20
    assert report.verdict == "stable", report.reason


# -- tracemalloc, on demand -----------------------------------------------------------------------


def retain_strings(into):
    into.extend(str(i) * 50 for i in range(20_000))


def test_snapshot_diff_names_the_growing_allocation_site():
    assert not tracemalloc.is_tracing()
    kept = []
    monitor.start_tracing()
    try:
        retain_strings(kept)
        top = monitor.snapshot_diff(top=5)
        again = monitor.snapshot_diff(top=5)
    finally:
        monitor.stop_tracing()

    assert top[0].where.endswith("test_leak.py:" + str(retain_strings.__code__.co_firstlineno + 1))
    assert top[0].size_diff > 20_000 * 50
    assert top[0].count_diff >= 20_000
    assert all(a.size_diff >= b.size_diff for a, b in zip(top, top[1:], strict=False))
    # The second diff compares with the first's snapshot: those strings are not new.
    assert all(site.where != top[0].where or site.size_diff < 100_000 for site in again)
    assert not tracemalloc.is_tracing()


def test_snapshot_diff_without_tracing_says_what_to_do():
    with pytest.raises(monitor.RedlineMonitorError, match="start_tracing"):
        monitor.snapshot_diff()


def test_stop_tracing_leaves_tracing_it_did_not_start():
    tracemalloc.start()
    try:
        monitor.start_tracing()
        monitor.stop_tracing()
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
