import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redline.load._metrics import (
    HIGHEST_US,
    PERCENTILES,
    Recorder,
    new_histogram,
    percentile_key,
    percentiles,
)

SECOND = 1_000_000_000
MS = 1_000_000
US = 1_000

# Latencies in microseconds spread over every magnitude the histogram covers.
latencies_us = st.integers(min_value=0, max_value=60_000_000) | st.integers(0, 5_000)


def hdrh_percentiles(values_us: list[int]) -> dict[str, float]:
    """The reference: one hdrh histogram fed with its own record_value."""
    hist = new_histogram()
    for value in values_us:
        hist.record_value(value)
    return {percentile_key(p): hist.get_value_at_percentile(p) / 1000 for p in PERCENTILES}


def closed_recorder(values_us: list[int], name: str = "a") -> Recorder:
    recorder = Recorder(start_ns=0)
    for value in values_us:
        recorder.record(name, None, 100 * MS, 100 * MS + value * US, 200, None)
    recorder.stop(SECOND)
    return recorder


@settings(max_examples=60, deadline=None)
@given(st.lists(latencies_us, min_size=1, max_size=400))
def test_bulk_recording_gives_the_percentiles_of_hdrh_record_value(values_us):
    latency = closed_recorder(values_us).summary()["latency_ms"]
    expected = hdrh_percentiles(values_us)
    assert {key: latency[key] for key in expected} == expected


def test_bucket_edges_index_exactly_like_record_value():
    edges = {0, 1, HIGHEST_US}
    for power in range(1, 32):
        edges |= {(1 << power) - 1, 1 << power, (1 << power) + 1}
    values = sorted(v for v in edges if v <= HIGHEST_US)
    recorder = closed_recorder(values)
    reference = new_histogram()
    for value in values:
        reference.record_value(value)
    hist = recorder._total.latency
    assert list(hist.counts) == list(reference.counts)
    assert hist.get_max_value() == reference.get_max_value()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(latencies_us, min_size=1, max_size=300),
    st.randoms(use_true_random=False),
)
def test_merging_four_workers_equals_one_recorder_of_all_samples(values_us, rng):
    workers = [Recorder(start_ns=0) for _ in range(4)]
    single = Recorder(start_ns=0)
    for i, value in enumerate(values_us):
        done = (i % 3) * SECOND + value * US
        rng.choice(workers).record("a", 0, 0, done, 200, None)
        single.record("a", 0, 0, done, 200, None)
    merged = Recorder()
    for worker in workers:
        worker.stop(3 * SECOND)
        merged.merge(worker.export())
    single.stop(3 * SECOND)
    got, want = merged.summary(), single.summary()
    for section in ("latency_ms", "service_time_ms"):
        for p in PERCENTILES:
            key = percentile_key(p)
            assert got[section][key] == want[section][key]
            assert got["endpoints"]["a"][section][key] == want["endpoints"]["a"][section][key]
        assert got[section]["max"] == want[section]["max"]
    assert got["timeseries"] == want["timeseries"]
    assert got["requests"] == want["requests"]


def test_percentiles_of_1_to_1000_us_are_the_exact_order_statistics():
    summary = closed_recorder(list(range(1, 1001))).summary()
    latency = summary["latency_ms"]
    # Below 2048 us the histogram keeps every microsecond: the 950th smallest of 1..1000 is 950.
    assert latency["p50"] == 0.5
    assert latency["p90"] == 0.9
    assert latency["p95"] == 0.95
    assert latency["p99"] == 0.99
    assert latency["p999"] == 0.999
    assert latency["max"] == 1.0
    assert latency["min"] == 0.001
    assert latency["avg"] == pytest.approx(0.5005)
    assert summary["requests"]["total"] == 1000
    assert summary["rps"] == 1000.0


def test_large_values_stay_within_three_significant_digits():
    values = list(range(1_000, 10_000_000, 9_973))
    latency = closed_recorder(values).summary()["latency_ms"]
    ordered = sorted(values)
    for p in PERCENTILES:
        exact = ordered[round(p / 100 * len(ordered)) - 1] / 1000
        assert latency[percentile_key(p)] == pytest.approx(exact, rel=1e-3)


def simulate_stall(open_model: bool) -> dict:
    """15 s at 5000 req/s; the server pauses for 1 s at t = 5 s.

    The generator sends at most one request every 2 us: during the stall every connection is
    blocked, so the arrivals scheduled then queue and go out when it ends (the backlog drains in
    about 10 ms), each answered in 1 ms. The true latency of an arrival scheduled at t in the
    stall is about 6 s - t: uniform over 0..1 s for 5000 of 75000 requests, so p95 ~ 250 ms and
    p99 ~ 850 ms.
    """
    stall_start, stall_end = 5 * SECOND, 6 * SECOND
    recorder = Recorder(start_ns=0)
    free_at = 0
    for i in range(75_000):
        intended = i * 200 * US
        sent = max(intended, free_at)
        if stall_start <= sent < stall_end:
            sent = stall_end
        done = sent + MS
        if sent < stall_start < done:
            done = stall_end + MS
        free_at = sent + 2 * US
        if sent > intended:
            recorder.record_late("call", sent - intended, sent)
        recorder.record("call", intended if open_model else None, sent, done, 200, None)
    recorder.stop(15 * SECOND + 10 * MS)
    return recorder.summary()


def test_open_model_latency_shows_the_stall_while_service_time_stays_small():
    summary = simulate_stall(open_model=True)
    latency, service = summary["latency_ms"], summary["service_time_ms"]
    assert latency["p99"] == pytest.approx(850, rel=0.05)
    assert latency["p95"] == pytest.approx(250, rel=0.10)
    assert latency["max"] == pytest.approx(1001, rel=0.01)
    assert service["p99"] < 2
    assert summary["requests"]["late"] >= 5000


def test_closed_recording_of_the_same_stall_hides_it():
    latency = simulate_stall(open_model=False)["latency_ms"]
    # Coordinated omission: measured from the actual send, the stall all but disappears.
    assert latency["p99"] < 2
    assert latency["max"] == pytest.approx(1000, rel=0.01)


def test_timeseries_percentiles_are_exact_per_second():
    recorder = Recorder(start_ns=0)
    per_second = {0: list(range(100, 200)), 1: list(range(1000, 1500)), 2: [5000] * 10}
    for second, values in per_second.items():
        for value in values:
            recorder.record("a", None, second * SECOND, second * SECOND + value * US, 200, None)
    recorder.stop(3 * SECOND)
    rows = recorder.summary()["timeseries"]
    assert [row["t"] for row in rows] == [0, 1, 2]
    for row, values in zip(rows, per_second.values(), strict=True):
        reference = hdrh_percentiles(values)
        assert (row["p50"], row["p95"], row["p99"]) == (
            reference["p50"],
            reference["p95"],
            reference["p99"],
        )
        assert row["rps"] == len(values)


def test_a_straggler_from_an_earlier_second_lands_in_its_own_second():
    recorder = Recorder(start_ns=0)
    recorder.record("a", None, 0, 500 * MS, 200, None)
    recorder.record("a", None, SECOND, SECOND + MS, 200, None)
    recorder.record("a", None, 0, 999 * MS, 200, "timeout")
    recorder.stop(2 * SECOND)
    rows = recorder.summary()["timeseries"]
    assert [row["rps"] for row in rows] == [2, 1]
    assert [row["errors"] for row in rows] == [1, 0]
    assert rows[0]["p99"] == pytest.approx(999, rel=1e-3)
    assert rows[1]["p99"] == pytest.approx(1, rel=1e-3)


def test_failures_and_checks_count_per_name_drops_and_lateness_per_scenario():
    recorder = Recorder(start_ns=0)
    for _ in range(10):
        recorder.record("list", None, 0, MS, 200, None)
    recorder.record("list", None, 0, MS, None, "timeout")
    recorder.record("list", None, 0, MS, 503, "status:503")
    recorder.record("get", None, 0, MS, 503, "status:503")
    recorder.record_check_failure("get", "status 404")
    recorder.record_scheduled("browse", 20)
    recorder.record_dropped("browse", 7)
    recorder.record_late("browse", 3 * MS)
    recorder.stop(SECOND)
    summary = recorder.summary()
    assert summary["requests"] == {
        "total": 13,
        "failed": 3,
        "dropped": 7,
        "late": 1,
        "checks_failed": 1,
        "max_late_ms": 3.0,
        "scheduled": 20,
    }
    assert summary["scenarios"] == {
        "browse": {"scheduled": 20, "dropped": 7, "late": 1, "max_late_ms": 3.0}
    }
    assert "browse" not in summary["endpoints"]
    assert summary["errors"] == {"status:503": 2, "timeout": 1, "check: status 404": 1}
    assert summary["endpoints"]["list"]["requests"]["failed"] == 2
    assert summary["endpoints"]["get"]["errors"] == {"status:503": 1, "check: status 404": 1}
    assert "dropped" not in summary["endpoints"]["get"]["requests"]
    assert summary["timeseries"][0]["errors"] == 3
    assert summary["timeseries"][0]["dropped"] == 7


def test_vus_and_rate_hold_their_value_until_changed_and_sum_across_workers():
    workers = []
    for _ in range(2):
        recorder = Recorder(start_ns=0)
        recorder.record_vus(0, 5)
        recorder.record_vus(2 * SECOND + 1, 10)
        recorder.record_rate(0, 100.0)
        recorder.stop(4 * SECOND)
        workers.append(recorder)
    assert [row["vus"] for row in workers[0].summary()["timeseries"]] == [5, 5, 10, 10]
    merged = Recorder()
    for worker in workers:
        merged.merge(worker.export())
    rows = merged.summary()["timeseries"]
    assert [row["vus"] for row in rows] == [10, 10, 20, 20]
    assert [row["rate"] for row in rows] == [200.0] * 4


def test_samples_outside_the_range_are_kept_at_its_edges():
    recorder = Recorder(start_ns=0)
    recorder.record("a", None, 10 * MS, 5 * MS, 200, None)
    recorder.record("a", None, 0, (HIGHEST_US + 10**9) * US, 200, None)
    summary = recorder.summary()
    assert summary["requests"]["total"] == 2
    assert summary["latency_ms"]["min"] == 0
    assert summary["latency_ms"]["max"] == pytest.approx(HIGHEST_US / 1000, rel=1e-3)


def test_extra_percentiles_can_be_asked_for():
    summary = closed_recorder(list(range(1, 1001))).summary(extra=(75.0, 99.99))
    assert summary["latency_ms"]["p75"] == 0.75
    assert summary["latency_ms"]["p9999"] == 1.0


def test_percentiles_helper_matches_hdrh_on_random_histograms():
    rng = random.Random(7)
    hist = new_histogram()
    for _ in range(5000):
        hist.record_value(int(rng.lognormvariate(8, 2)) % HIGHEST_US)
    wanted = (0.0, 1.0, 50.0, 99.0, 99.99, 100.0)
    assert percentiles(hist, wanted) == {p: hist.get_value_at_percentile(p) for p in wanted}


def test_an_export_is_compact_and_merging_it_twice_doubles_the_counts():
    recorder = closed_recorder(list(range(1, 10_001)))
    blob = recorder.export()
    assert len(blob) < 20_000
    merged = Recorder()
    merged.merge(blob)
    merged.merge(blob)
    summary = merged.summary()
    assert summary["requests"]["total"] == 20_000
    assert summary["latency_ms"]["p50"] == recorder.summary()["latency_ms"]["p50"]


def test_scenario_counts_merge_by_sum_and_worst_lateness():
    workers = []
    for lag in (2, 9):
        recorder = Recorder(start_ns=0)
        recorder.record_scheduled("browse", 10)
        recorder.record_dropped("browse", 1)
        recorder.record_late("browse", lag * MS)
        recorder.stop(SECOND)
        workers.append(recorder)
    merged = Recorder()
    for worker in workers:
        merged.merge(worker.export())

    summary = merged.summary()

    assert summary["scenarios"]["browse"] == {
        "scheduled": 20,
        "dropped": 2,
        "late": 2,
        "max_late_ms": 9.0,
    }
    assert summary["requests"]["scheduled"] == 20
