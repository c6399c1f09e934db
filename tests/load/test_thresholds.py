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


def test_the_dict_form_sets_abort_on_fail_and_its_delay():
    threshold = parse({"threshold": "errors: rate < 0.05", "abort_on_fail": True,
                       "delay_abort_eval": "1m"})  # fmt: skip
    assert threshold.abort_on_fail and threshold.delay_abort_eval == 60.0
    k6_spelling = parse({"threshold": "rps > 1", "abortOnFail": True, "delayAbortEval": 5})
    assert k6_spelling.abort_on_fail and k6_spelling.delay_abort_eval == 5.0


@pytest.mark.parametrize(
    "form",
    [
        {"abort_on_fail": True},
        {"threshold": "rps > 1", "abort": True},
        {"threshold": "rps > 1", "delay_abort_eval": "soon"},
    ],
)
def test_a_bad_dict_form_is_refused(form):
    with pytest.raises(ThresholdError):
        parse(form)


@pytest.fixture(scope="module")
def summary() -> dict:
    """Known samples: list-calls 1..1000 us, get-call 10 ms x 100 of which 10 fail, over 2 s."""
    recorder = Recorder(start_ns=0)
    for us in range(1, 1001):
        recorder.record("list-calls", None, 0, us * 1000, 200, None)
    for i in range(100):
        error = "timeout" if i < 10 else None
        recorder.record("get-call", None, SECOND, SECOND + 10 * MS, 200, error)
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
        ("late{name:get-call}: count < 1", False, 1),
    ],
)
def test_evaluate_reads_the_value_from_the_summary(summary, expression, ok, value):
    got_ok, got_value = parse(expression).evaluate(summary)
    assert got_value == pytest.approx(value, rel=1e-3)
    assert got_ok is ok


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
    ],
)
def test_scraped_server_metrics_carry_thresholds(series, expression, value):
    assert parse(expression).evaluate({"server": series})[1] == value


def test_aborting_returns_failed_abort_thresholds_past_their_delay(summary):
    thresholds = [
        parse("errors: rate < 0.001 !"),
        parse({"threshold": "rps > 600", "abort_on_fail": True, "delay_abort_eval": "10s"}),
        parse("dropped == 0"),
    ]
    assert aborting(thresholds, summary, elapsed_s=5) == [thresholds[0]]
    assert aborting(thresholds, summary, elapsed_s=10) == thresholds[:2]


def test_thresholds_are_values_with_equality():
    assert parse("rps > 1") == parse("rps > 1")
    assert isinstance(parse("rps > 1"), Threshold)
