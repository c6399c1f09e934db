import math

import pytest

from redline import RedlineError
from redline.load._metrics import Recorder
from redline.load._thresholds import (
    Threshold,
    ThresholdError,
    aborting,
    evaluate_all,
    parse,
    required_percentiles,
)

SECOND = 1_000_000_000
MS = 1_000_000


@pytest.mark.parametrize(
    ("expression", "metric", "aggregation", "op", "target", "tags", "abort"),
    [
        ("latency{name:list-calls}: p(95) < 200", "latency", "p(95)", "<", 200,
         {"name": "list-calls"}, False),
        ("errors: rate < 0.01", "errors", "rate", "<", 0.01, {}, False),
        ("rps > 100", "rps", "rate", ">", 100, {}, False),
        ("requests >= 1e3", "requests", "count", ">=", 1000, {}, False),
        ("dropped == 0", "dropped", "count", "==", 0, {}, False),
        ("late: rate <= 1%", "late", "rate", "<=", 0.01, {}, False),
        ("service_time: avg != 3", "service_time", "avg", "!=", 3, {}, False),
        ("latency: p(99.9) < 1.5s", "latency", "p(99.9)", "<", 1500, {}, False),
        ("latency: med < 800us", "latency", "med", "<", 0.8, {}, False),
        ("latency{ name : 'a b' }:max<9 !", "latency", "max", "<", 9, {"name": "a b"}, True),
        ("errors: rate < 0.05!", "errors", "rate", "<", 0.05, {}, True),
        ('mem_bytes{job:"api",instance:x}: max < 5e8', "mem_bytes", "max", "<", 5e8,
         {"job": "api", "instance": "x"}, False),
        ("cache_hit_ratio > 0.9", "cache_hit_ratio", "last", ">", 0.9, {}, False),
        ("checks < 1%", "checks", "rate", "<", 0.01, {}, False),
        ("checks{name:list-calls}: count == 0", "checks", "count", "==", 0,
         {"name": "list-calls"}, False),
        ("dropped{scenario:checkout}: count == 0", "dropped", "count", "==", 0,
         {"scenario": "checkout"}, False),
        ("late{scenario:'a b'}: rate < 5%", "late", "rate", "<", 0.05, {"scenario": "a b"},
         False),
        ("jobs_total: rate > 2", "jobs_total", "rate", ">", 2, {}, False),
    ],
)  # fmt: skip
def test_parse_reads_every_form(expression, metric, aggregation, op, target, tags, abort):
    threshold = parse(expression)
    assert threshold.expression == expression
    assert (threshold.metric, threshold.aggregation, threshold.op) == (metric, aggregation, op)
    assert threshold.target == pytest.approx(target)
    assert dict(threshold.tags) == tags
    assert threshold.abort_on_fail is abort


@pytest.mark.parametrize(
    ("expression", "column", "words"),
    [
        ("", 1, "metric name"),
        ("  : p(95) < 1", 3, "metric name"),
        ("latency < 200", 9, "needs an aggregation"),
        ("latency: < 200", 10, "expected an aggregation"),
        ("latency: p95x < 1", 10, "not an aggregation"),
        ("latency: p(120) < 1", 10, "between 0 and 100"),
        ("errors: p(95) < 1", 9, "no percentiles"),
        ("rps: max > 1", 6, "not an aggregation"),
        ("latency: p(95) 200", 16, "comparison"),
        ("latency: p(95) <", 17, "expected a number"),
        ("latency: p(95) < fast", 18, "expected a number"),
        ("latency: p(95) < 200 ms extra", 25, "unexpected"),
        ("latency: avg < 20%", 18, "'%' only applies"),
        ("errors: rate < 2s", 17, "not a duration"),
        ("latency{status:200}: p(95) < 1", 9, "unknown tag 'status'"),
        ("latency{name:}: p(95) < 1", 14, "has no value"),
        ("latency{name:a; p(95) < 1", 26, "',' or '}'"),
        ("latency{name a}: p(95) < 1", 14, "expected ':'"),
        ("checks: p(95) < 1", 9, "no percentiles"),
        ("checks{scenario:x}: count == 0", 8, "only be filtered by name:"),
        ("latency{scenario:x}: p(95) < 1", 9, "unknown tag 'scenario'"),
        ("dropped{name:a} == 0", 9, "can only be filtered by scenario:"),
        ("dropped{status:x} == 0", 9, "can only be filtered by scenario:"),
        ("server.: max < 1", 8, "series name after 'server.'"),
        ("server. mem: max < 1", 8, "series name after 'server.'"),
        ("jobs_total: rate < 5%", 21, "'%' only applies"),
        ("rps: rate < 5%", 14, "'%' only applies"),
        ("server.latency: max < 5ms", 24, "a server series is not a duration"),
    ],
)
def test_a_bad_threshold_names_the_column_of_the_problem(expression, column, words):
    with pytest.raises(ThresholdError) as caught:
        parse(expression)
    assert caught.value.column == column
    assert words in caught.value.message
    assert f"column {column}" in str(caught.value)
    assert repr(expression) in str(caught.value)
    assert isinstance(caught.value, RedlineError)


@pytest.mark.parametrize(
    ("expression", "metric", "aggregation", "server"),
    [
        ("app:mem_bytes: max < 1e9", "app:mem_bytes", "max", True),
        ("app:mem_bytes < 1e9", "app:mem_bytes", "last", True),
        ("app:mem_bytes{job:api}: max < 1e9", "app:mem_bytes", "max", True),
        ("server.app:mem_bytes: max < 1e9", "app:mem_bytes", "max", True),
        ("server.requests: last > 0", "requests", "last", True),
        ("server.requests > 0", "requests", "last", True),
        ("server.requests{status:x}: rate > 0", "requests", "rate", True),
        ("server.errors:rate > 0", "errors", "rate", True),
        ("requests: count > 0", "requests", "count", False),
        # Without spaces, a trailing ":aggregation" is the aggregation, as it always was...
        ("errors:rate<0.01", "errors", "rate", False),
        ("latency:p(95)<1", "latency", "p(95)", False),
        ("mem_bytes:max<5", "mem_bytes", "max", True),
        ("job:mem:max < 5", "job:mem", "max", True),
        # ...unless the aggregation is written after it, or tags follow.
        ("job:mem:max: last < 5", "job:mem:max", "last", True),
        ("job:mem:max : last < 5", "job:mem:max", "last", True),
        ("job:mem:max{job:a} < 5", "job:mem:max", "last", True),
        ("job:mem:p < 5", "job:mem:p", "last", True),
        ("job:mem:rate5m < 5", "job:mem:rate5m", "last", True),
    ],
)
def test_series_names_may_hold_colons_and_server_names_a_series(
    expression, metric, aggregation, server
):
    threshold = parse(expression)
    assert (threshold.metric, threshold.aggregation, threshold.server) == (
        metric,
        aggregation,
        server,
    )


def test_the_dict_form_sets_abort_on_fail_and_its_delay():
    threshold = parse({"threshold": "errors: rate < 0.05", "abort_on_fail": True,
                       "delay_abort_eval": "1m"})  # fmt: skip
    assert threshold.abort_on_fail and threshold.delay_abort_eval == 60.0
    k6_spelling = parse({"threshold": "rps > 1", "abortOnFail": True, "delayAbortEval": 5})
    assert k6_spelling.abort_on_fail and k6_spelling.delay_abort_eval == 5.0


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("2h", 7200.0),
        ("1h2m3.5s", 3723.5),
        ("1m 30s", 90.0),
        ("30 s", 30.0),
        ("1 m 30 s", 90.0),
        ("1.5m", 90.0),
        ("30", 30.0),
        (" 30s ", 30.0),
        (2.5, 2.5),
    ],
)
def test_the_delay_of_the_dict_form_takes_compound_durations(delay, seconds):
    for key in ("delay_abort_eval", "delayAbortEval"):
        threshold = parse({"threshold": "rps > 1", "abortOnFail": True, key: delay})
        assert threshold.delay_abort_eval == pytest.approx(seconds)
        assert threshold.abort_on_fail


@pytest.mark.parametrize(
    "form",
    [
        {"abort_on_fail": True},
        {"threshold": "rps > 1", "abort": True},
        {"threshold": "rps > 1", "delay_abort_eval": "soon"},
        {"threshold": "rps > 1", "delay_abort_eval": "1m30"},
        {"threshold": "rps > 1", "delay_abort_eval": "-1s"},
        {"threshold": "rps > 1", "delay_abort_eval": "1d"},
        {"threshold": "rps > 1", "delay_abort_eval": "ms"},
        {"threshold": "rps > 1", "delay_abort_eval": ""},
    ],
)
def test_a_bad_dict_form_is_refused(form):
    with pytest.raises(ThresholdError):
        parse(form)


@pytest.fixture(scope="module")
def summary() -> dict:
    """Known samples: list-calls 1..1000 us with 11 failed checks, get-call 10 ms x 100 of
    which 10 fail, 11 dropped and 1 late, over 2 s."""
    recorder = Recorder(start_ns=0)
    for us in range(1, 1001):
        recorder.record("list-calls", None, 0, us * 1000, 200, None)
    for i in range(100):
        error = "timeout" if i < 10 else None
        recorder.record("get-call", None, SECOND, SECOND + 10 * MS, 200, error)
    for _ in range(11):
        recorder.record_check_failure("list-calls", "status 200")
    recorder.record_dropped("get-call", 11)
    recorder.record_late("get-call", 5 * MS)
    recorder.stop(2 * SECOND)
    thresholds = [parse("latency: p(75) < 1"), parse("latency: p(99.99) < 1")]
    return recorder.summary(extra=required_percentiles(thresholds))


@pytest.mark.parametrize(
    ("expression", "ok", "value"),
    [
        ("latency{name:list-calls}: p(95) < 1", True, 0.95),
        ("latency{name:list-calls}: p(99) <= 0.99", True, 0.99),
        ("latency{name:list-calls}: med == 0.5", True, 0.5),
        ("latency{name:list-calls}: max < 1", False, 1.0),
        ("latency{name:list-calls}: min == 1us", True, 0.001),
        ("latency{name:list-calls}: avg < 0.6", True, 0.5005),
        ("latency{name:get-call}: p(50) < 10ms", False, 10.005),
        ("latency: p(75) < 1", True, 0.825),
        ("latency: p(95) < 200", True, 10.005),
        ("latency: count == 1100", True, 1100),
        ("service_time{name:get-call}: max < 11", True, 10.005),
        ("errors: rate < 0.005", False, 10 / 1100),
        ("errors: rate < 1%", True, 10 / 1100),
        ("errors{name:get-call}: rate < 0.05", False, 0.1),
        ("errors: count <= 10", True, 10),
        ("requests == 1100", True, 1100),
        ("requests: rate > 500", True, 550),
        ("rps > 600", False, 550),
        ("dropped == 0", False, 11),
        ("dropped: rate < 0.01", True, 11 / 1111),
        ("checks < 0.01", False, 11 / 1100),
        ("checks: rate <= 1%", True, 11 / 1100),
        ("checks: count == 11", True, 11),
        ("checks{name:list-calls}: rate > 0.01", True, 11 / 1000),
        ("checks{name:get-call}: count == 0", True, 0),
    ],
)
def test_evaluate_reads_the_value_from_the_summary(summary, expression, ok, value):
    got_ok, got_value = parse(expression).evaluate(summary)
    assert got_value == pytest.approx(value, rel=1e-3)
    assert got_ok is ok


def test_checks_rate_is_zero_without_requests():
    empty = {"requests": {"total": 0, "failed": 0, "checks_failed": 0}}
    assert parse("checks: rate == 0").evaluate(empty) == (True, 0.0)


@pytest.mark.parametrize(
    ("scheduled", "dropped_rate", "late_rate"),
    [
        (2000, 11 / 2000, 1 / 2000),  # over the arrivals the runner scheduled
        (0, 11 / 1111, 1 / 1111),  # none counted: over requests plus dropped, as before
        (None, 11 / 1111, 1 / 1111),
    ],
)
def test_dropped_and_late_rates_are_over_the_scheduled_arrivals(
    summary, scheduled, dropped_rate, late_rate
):
    requests = dict(summary["requests"])
    if scheduled is not None:
        requests["scheduled"] = scheduled
    run = {**summary, "requests": requests}
    assert parse("dropped: rate < 1").evaluate(run)[1] == pytest.approx(dropped_rate)
    assert parse("late: rate < 1").evaluate(run)[1] == pytest.approx(late_rate)
    assert parse("dropped: count < 1").evaluate(run)[1] == 11


SCENARIOS = {
    "checkout": {"scheduled": 400, "dropped": 8, "late": 2, "max_late_ms": 12.5},
    "browse": {"scheduled": 0, "dropped": 0, "late": 0, "max_late_ms": 0.0},
    "old": {"dropped": 3},
}


@pytest.mark.parametrize(
    ("expression", "ok", "value"),
    [
        ("dropped{scenario:checkout}: count == 0", False, 8),
        ("dropped{scenario:checkout} < 10", True, 8),
        ("dropped{scenario:checkout}: rate < 1%", False, 0.02),
        ("late{scenario:checkout}: rate <= 0.005", True, 0.005),
        ("late{scenario:checkout}: count == 2", True, 2),
        ("dropped{scenario:browse}: rate == 0", True, 0.0),
        ("dropped{scenario:nope}: count == 0", False, None),
        ("late{scenario:old}: count == 0", False, None),
        ("dropped{scenario:old}: rate == 0", False, None),
        ("dropped{scenario:old}: count == 3", True, 3),
    ],
)
def test_the_scenario_tag_reads_the_scenarios_section(summary, expression, ok, value):
    run = {**summary, "scenarios": SCENARIOS}
    result = evaluate_all([expression], run)[expression]
    assert result["ok"] is ok
    assert result["value"] == (pytest.approx(value) if value is not None else None)


def test_a_value_the_summary_lacks_fails_and_reports_none(summary):
    results = evaluate_all(
        ["latency{name:nope}: p(95) < 1", "latency: p(97.5) < 1000", "mem_bytes < 1"], summary
    )
    assert all(result == {"ok": False, "value": None} for result in results.values())
    ok, value = parse("mem_bytes < 1").evaluate(summary)
    assert ok is False and math.isnan(value)


def test_evaluate_all_keys_results_by_expression(summary):
    results = evaluate_all(
        ["errors: rate < 1%", {"threshold": "rps > 600", "abort_on_fail": True}], summary
    )
    assert results == {
        "errors: rate < 1%": {"ok": True, "value": pytest.approx(10 / 1100)},
        "rps > 600": {"ok": False, "value": 550.0},
    }


@pytest.mark.parametrize(
    ("series", "expression", "value"),
    [
        ({"mem_bytes": 120.0}, "mem_bytes < 200", 120.0),
        ({"mem_bytes": [[0, 100], [1, 300], [2, 200]]}, "mem_bytes: max < 250", 300.0),
        ({"mem_bytes": [[0, 100], [1, 300], [2, 200]]}, "mem_bytes < 250", 200.0),
        ({"mem_bytes": [1, 2, 3, 4]}, "mem_bytes: avg < 3", 2.5),
        ({"mem_bytes": {"max": 7, "values": [1, 2]}}, "mem_bytes: max < 9", 7.0),
        ({"mem_bytes": {"values": [1, 2, 3, 4]}}, "mem_bytes: p(50) < 9", 2.0),
        (
            {'hits{job="api"}': 0.95, 'hits{job="db"}': 0.5},
            'hits{job:"api"}: last > 0.9',
            0.95,
        ),
        ({"jobs_total": {"last": 90, "rate": 4.5, "values": []}}, "jobs_total: rate > 4", 4.5),
        ({"app:mem_bytes": {"max": 3e8}}, "app:mem_bytes: max < 1e9", 3e8),
        ({'app:mem{job="a"}': {"max": 2}}, "server.app:mem{job:a}: max < 1e9", 2.0),
        ({"job:mem:max": [1, 5, 2]}, "job:mem:max: last < 5", 2.0),
        ({"requests": {"last": 12.0}}, "server.requests: last > 0", 12.0),
    ],
)
def test_scraped_server_metrics_carry_thresholds(series, expression, value):
    assert parse(expression).evaluate({"server": series})[1] == value


@pytest.mark.parametrize(
    "series",
    [
        {"workers": {"last": 3.0, "values": [[0, 1.0], [1, 3.0]]}},  # a gauge: no rate
        {"workers": [[0, 1.0], [1, 3.0]]},
        {"workers": 3.0},
    ],
)
def test_a_server_rate_the_scraper_did_not_compute_fails(series):
    ok, value = parse("workers: rate >= 0").evaluate({"server": series})
    assert ok is False and math.isnan(value)


def test_server_names_a_series_that_shares_a_built_in_name():
    run = {
        "requests": {"total": 10, "failed": 0},
        "server": {"requests": {"last": 0.0, "values": [[0, 0.0]]}},
    }
    assert parse("requests > 0").evaluate(run) == (True, 10.0)
    assert parse("server.requests > 0").evaluate(run) == (False, 0.0)


def test_aborting_returns_failed_abort_thresholds_past_their_delay(summary):
    thresholds = [
        parse("errors: rate < 0.001 !"),
        parse({"threshold": "rps > 600", "abort_on_fail": True, "delay_abort_eval": "10s"}),
        parse("dropped == 0"),
        parse({"threshold": "checks == 0", "abortOnFail": True, "delayAbortEval": "1m30s"}),
    ]
    assert aborting(thresholds, summary, elapsed_s=5) == [thresholds[0]]
    assert aborting(thresholds, summary, elapsed_s=10) == thresholds[:2]
    assert aborting(thresholds, summary, elapsed_s=90) == [*thresholds[:2], thresholds[3]]


def test_thresholds_are_values_with_equality():
    assert parse("rps > 1") == parse("rps > 1")
    assert isinstance(parse("rps > 1"), Threshold)
