"""Histogram: HDR percentiles within 1 %, exact bucket counts, cheap and thread-safe recording."""

import math
import random
import sys
import threading
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redline import monitor
from redline._hdr import _Counted, new_histogram
from redline.monitor import _histogram

LAYOUTS = [
    # (scale, highest, significant figures): seconds in us, the monitor's default; in ns;
    # bytes; and the load engine's precision.
    (1_000_000, 3_600_000_000, 2),
    (1_000_000_000, 3_600_000_000_000, 2),
    (1, 2**32, 2),
    (1_000_000, 3_600_000_000, 3),
]


@pytest.fixture
def registry():
    return monitor.Registry()


@pytest.fixture(autouse=True, params=["c", "python"])
def flush(request, monkeypatch):
    """The flush the histograms a test makes use: _tally.c's counting, or the Python twin."""
    if request.param == "c":
        if _histogram._compiled_tally is None:
            pytest.skip("redline.monitor._tally is not compiled (no C compiler at install)")
        monkeypatch.setattr(_histogram, "_tally", _histogram._compiled_tally)
    else:
        monkeypatch.setattr(_histogram, "_tally", None)
    return request.param


def _series_state(child):
    return (
        list(child._counts or ()),
        child._first,
        child._low,
        child._high,
        child._count,
        child._sum,
        list(child._le),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(LAYOUTS),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=200)
    | st.lists(st.floats(0, 5000) | st.sampled_from([0.0, 1e-6, 5e-4, 0.25, 60.0]), max_size=200),
    st.integers(1, 4),
)
def test_the_c_flush_counts_exactly_as_the_python_one(layout, values, chunks):
    """Counts, first index, extremes, count, sum (in the order recorded) and buckets agree,
    NaN, infinities, negatives and values beyond the range included, over several flushes."""
    if _histogram._compiled_tally is None:
        pytest.skip("redline.monitor._tally is not compiled")
    scale, highest, digits = layout
    states = []
    for tally in (None, _histogram._compiled_tally):
        _histogram._tally = tally
        histogram = monitor.Histogram(
            "h", "d", ["a"], scale=scale, max_value=highest / scale,
            significant_figures=digits, registry=monitor.Registry(),
        )  # fmt: skip
        child = histogram.labels("x")
        assert (child._layout.tally is None) is (tally is None)
        for i in range(chunks):
            child._observe_all(array("d", values[i::chunks]))
            child.snapshot()
        states.append(_series_state(child))
    assert states[0] == states[1]


def test_the_c_flush_refuses_buffers_of_the_wrong_kind():
    if _histogram._compiled_tally is None:
        pytest.skip("redline.monitor._tally is not compiled")
    tally = _histogram._compiled_tally
    layout = monitor.Histogram("h", "d", ["a"], registry=monitor.Registry())._layout
    doubles = array("d", [1.0])
    good = (doubles, layout.shifts, layout.bases, 1e6, 3_600_000_000, doubles, 3600.0)

    def call(i, value):
        return tally(*good[:i], value, *good[i + 1 :])

    with pytest.raises(TypeError, match="values must be a buffer of doubles"):
        call(0, array("q", [1]))
    with pytest.raises(TypeError, match="shifts must be 65 int64"):
        call(1, array("q", [1]))
    with pytest.raises(TypeError, match="bounds must be a buffer of doubles"):
        call(5, b"12345678")
    with pytest.raises(ValueError, match="highest < 2"):
        call(4, 2**53)
    with pytest.raises(TypeError, match="takes 7 arguments"):
        tally(*good[:6])
    assert call(0, array("d", [math.nan])) is None
    assert call(0, array("d", [0.5]))[1:4] == (
        layout_index(0.5), 1, 0.5
    )  # fmt: skip


def layout_index(value):
    units = round(value * 1e6)
    reference = new_histogram(3_600_000_000, 2)
    return reference.get_counts_array_index(units)


def test_a_layout_beyond_two_to_the_53_units_keeps_the_python_flush(registry):
    huge = monitor.Histogram("h", "d", ["a"], scale=1e9, max_value=1e8, registry=registry)
    child = huge.labels("x")
    assert child._layout.tally is None
    child.observe(1.5)
    assert child.snapshot().count == 1


def exact_quantile(values, q):
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(LAYOUTS),
    st.lists(
        st.integers(0, 300) | st.integers(0, 2**32) | st.integers(-5, 5),
        min_size=1,
        max_size=300,
    ),
)
def test_bulk_counting_of_floats_matches_hdrh_record_value(layout, units):
    scale, highest, digits = layout
    values = sorted(unit / scale for unit in units)

    counted = _Counted.of_sorted_floats(values, scale, highest, digits)
    bulk = new_histogram(highest, digits)
    counted.add_to(bulk)

    reference = new_histogram(highest, digits)
    for unit in units:
        reference.record_value(min(max(unit, 0), highest))
    assert list(bulk.counts) == list(reference.counts)
    assert bulk.total_count == reference.total_count
    assert bulk.get_max_value() == reference.get_max_value()
    assert bulk.get_min_value() == reference.get_min_value()


def test_percentiles_are_within_one_percent_and_never_below(registry):
    rng = random.Random(7)
    values = [rng.lognormvariate(-4.5, 1.2) for _ in range(50_000)]
    latency = monitor.Histogram("latency_seconds", "Help.", registry=registry)
    for value in values:
        latency.observe(value)

    got = latency.snapshot().quantiles((0.5, 0.9, 0.99, 0.999))

    for q, value in got.items():
        exact = exact_quantile(values, q)
        assert exact <= value <= exact * 1.0079, q


def test_three_significant_figures_are_within_a_tenth_of_a_percent(registry):
    rng = random.Random(8)
    values = [rng.lognormvariate(-4.5, 1.2) for _ in range(20_000)]
    latency = monitor.Histogram(
        "latency_seconds", "Help.", significant_figures=3, registry=registry
    )
    for value in values:
        latency.observe(value)

    for q, value in latency.snapshot().quantiles((0.5, 0.99)).items():
        exact = exact_quantile(values, q)
        assert exact <= value <= exact * 1.001


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(0, 100, allow_nan=False) | st.sampled_from([0.1, 0.5, 1.0, 2.5]), max_size=200
    ),
    st.lists(st.floats(0.001, 50, allow_nan=False), min_size=1, max_size=6, unique=True),
)
def test_bucket_counts_are_exact_at_any_bound(values, bounds):
    bounds = sorted(bounds) + [0.1, 0.5, 1.0, 2.5]
    bounds = sorted(set(bounds))
    hist = monitor.Histogram("h", "Help.", buckets=bounds, registry=None)
    for value in values:
        hist.observe(value)

    got = hist.snapshot()

    assert got.bucket_counts == (*(sum(v <= b for v in values) for b in bounds), len(values))
    assert got.count == len(values)
    assert got.sum == pytest.approx(math.fsum(values))


def test_out_of_range_nan_and_infinite_values(registry):
    hist = monitor.Histogram("h_seconds", "Help.", max_value=10.0, registry=registry)
    for value in (-1.0, 0.0, 0.5, 11.0, math.inf, -math.inf, math.nan):
        hist.observe(value)

    got = hist.snapshot()

    # NaN is dropped; the rest count, clamped to 0 .. max_value in the HDR histogram.
    assert got.count == 6
    assert got.quantile(1.0) == pytest.approx(10.0, rel=0.01)
    assert got.quantile(0.01) == 0.0
    assert got.sum == pytest.approx(-1.0 + 0.5 + 11.0 + 10.0 - 10.0)
    assert got.bucket_counts[-1] == 6
    assert got.bucket_counts[0] == 3  # -10 (the clamped -inf), -1 and 0 are <= 0.5 ms


def test_sizes_in_bytes_with_scale_one(registry):
    sizes = monitor.Histogram(
        "response_size_bytes",
        "Help.",
        scale=1,
        max_value=2**32,
        buckets=monitor.exponential_buckets(256, 4, 8),
        registry=registry,
    )
    for size in [100] * 50 + [1024] * 40 + [70_000] * 10:
        sizes.observe(size)

    got = sizes.snapshot()

    assert sizes.buckets == (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, math.inf)
    assert got.bucket_counts == (50, 90, 90, 90, 90, 100, 100, 100, 100)
    assert got.quantile(0.5) == 100
    assert got.quantile(0.9) == pytest.approx(1024, rel=0.008)
    assert got.sum == 50 * 100 + 40 * 1024 + 10 * 70_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buckets": [1.0, 0.5]}, "buckets must increase, got 1.0 then 0.5"),
        ({"buckets": [0.1, 0.1]}, "buckets must increase"),
        ({"buckets": [-1.0, 1.0]}, "buckets must be >= 0"),
        ({"scale": 0}, "scale must be > 0"),
        ({"max_value": 1e-6}, "max_value 1e-06 x scale 1000000 must be at least 2"),
        ({"significant_figures": 6}, "significant_figures must be 1..5"),
    ],
)
def test_a_bad_layout_is_refused_naming_the_histogram(registry, kwargs, message):
    with pytest.raises(monitor.MetricError, match=f"histogram 'h': {message}"):
        monitor.Histogram("h", "Help.", registry=registry, **kwargs)


def test_exponential_buckets():
    assert monitor.exponential_buckets(1, 2, 3) == (1, 2, 4, math.inf)
    with pytest.raises(monitor.MetricError, match="factor > 1"):
        monitor.exponential_buckets(1, 1, 3)


def test_infinity_ends_the_buckets_once(registry):
    a = monitor.Histogram("a", "Help.", buckets=[1, 2], registry=registry)
    b = monitor.Histogram("b", "Help.", buckets=[1, 2, math.inf], registry=registry)

    assert a.buckets == b.buckets == (1.0, 2.0, math.inf)


def test_a_snapshot_is_shared_until_the_next_sample(registry):
    hist = monitor.Histogram("h", "Help.", registry=registry)
    hist.observe(0.1)
    first = hist.snapshot()

    assert hist.snapshot() is first
    hist.observe(0.2)
    second = hist.snapshot()
    assert second is not first
    assert (first.count, second.count) == (1, 2)


def test_observe_flushes_every_flush_at_values(registry, monkeypatch):
    monkeypatch.setattr(_histogram, "FLUSH_AT", 100)
    hist = monitor.Histogram("h", "Help.", registry=registry)
    for _ in range(250):
        hist.observe(0.01)

    child = hist._series[()]
    assert len(child._pending) == 50
    assert child._count == 200


def test_concurrent_observe_and_flush_lose_nothing(registry, monkeypatch):
    monkeypatch.setattr(_histogram, "FLUSH_AT", 97)
    hist = monitor.Histogram("h_seconds", "Help.", ("route",), registry=registry)
    threads, per_thread = 8, 20_000
    done = threading.Event()

    def work(n):
        child = hist.labels(route="/a")
        value = 0.25 if n % 2 else 2.0
        for _ in range(per_thread):
            child.observe(value)

    def flush():
        while not done.is_set():
            hist.labels(route="/a").snapshot()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        flusher = threading.Thread(target=flush)
        flusher.start()
        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        done.set()
        flusher.join()
    finally:
        sys.setswitchinterval(old)

    got = hist.labels(route="/a").snapshot()
    assert got.count == threads * per_thread
    assert got.sum == (0.25 + 2.0) * threads // 2 * per_thread
    assert got.bucket_counts[monitor.DEFAULT_BUCKETS.index(0.25)] == threads // 2 * per_thread
    assert got.hdr.total_count == threads * per_thread


def test_recording_on_a_labelled_parent_is_refused(registry):
    hist = monitor.Histogram("h", "Help.", ("route",), registry=registry)
    for call in (lambda: hist.observe(1), lambda: hist.time(), lambda: hist.snapshot()):
        with pytest.raises(monitor.MetricError, match="call .labels"):
            call()


def test_an_empty_histogram_has_nan_quantiles(registry):
    hist = monitor.Histogram("h", "Help.", registry=registry)

    got = hist.snapshot()

    assert got.count == 0
    assert got.hdr is None
    assert all(math.isnan(v) for v in got.quantiles().values())


def test_of_sorted_floats_counts_a_whole_chunk_in_one_array():
    values = array("d", sorted([0.001, 0.001, 0.002, 5.0]))

    counted = _Counted.of_sorted_floats(values, 1_000_000, 3_600_000_000, 2)

    assert counted.total == 4
    assert (counted.low, counted.high) == (1000, 5_000_000)
    assert sum(counted.counts) == 4


def test_counts_grow_both_ways_across_flushes_exactly_as_one_bulk_count(registry):
    rng = random.Random(21)
    chunks = [
        [rng.uniform(0.01, 0.02) for _ in range(500)],
        [rng.uniform(0.0001, 0.001) for _ in range(500)],  # below the first: grows down
        [rng.uniform(1.0, 30.0) for _ in range(500)],  # above: grows up
        [rng.uniform(0.005, 0.05) for _ in range(500)],  # inside
    ]
    hist = monitor.Histogram("h_seconds", "Help.", registry=registry)
    for chunk in chunks:
        for value in chunk:
            hist.observe(value)
        hist.snapshot()  # one flush per chunk

    everything = sorted(v for chunk in chunks for v in chunk)
    want = new_histogram(3_600_000_000, 2)
    _Counted.of_sorted_floats(everything, 1_000_000, 3_600_000_000, 2).add_to(want)
    got = hist.snapshot().hdr
    assert list(got.counts) == list(want.counts)
    assert got.total_count == want.total_count == 2000
    assert (got.min_value, got.max_value) == (want.min_value, want.max_value)


def test_values_recorded_in_bulk_count_like_one_by_one(registry):
    one = monitor.Histogram("one_seconds", "Help.", registry=registry)
    bulk = monitor.Histogram("bulk_seconds", "Help.", registry=registry)
    values = [0.001 * i for i in range(1, 3000)]
    for value in values:
        one.observe(value)
    bulk._series[()]._observe_all(values)

    a, b = one.snapshot(), bulk.snapshot()
    assert (a.count, a.sum, a.bucket_counts) == (b.count, b.sum, b.bucket_counts)
    assert a.quantiles() == b.quantiles()
