"""Names, label names and the cache of labelled children, shared by every metric type."""

import pytest

from redline import monitor


@pytest.fixture
def registry():
    return monitor.Registry()


@pytest.mark.parametrize("name", ["", "1requests", "http-requests", "http requests", "é"])
def test_an_invalid_metric_name_is_refused_with_the_name(registry, name):
    with pytest.raises(monitor.MetricError, match="name .* is invalid"):
        monitor.Counter(name, "Help.", registry=registry)


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("1st", "invalid"),
        ("route-name", "invalid"),
        ("__meta", "reserved"),
        ("rate:5m", "invalid"),
    ],
)
def test_an_invalid_label_name_is_refused_naming_metric_and_label(registry, label, reason):
    with pytest.raises(monitor.MetricError, match=rf"'jobs'.*'{label}' is {reason}"):
        monitor.Gauge("jobs", "Help.", (label,), registry=registry)


def test_a_histogram_reserves_le_and_quantile(registry):
    for label in ("le", "quantile"):
        with pytest.raises(monitor.MetricError, match=f"'{label}' is reserved for the histogram"):
            monitor.Histogram("latency_seconds", "Help.", (label,), registry=registry)


def test_a_label_name_given_twice_is_refused(registry):
    with pytest.raises(monitor.MetricError, match="'route' appears twice"):
        monitor.Counter("hits", "Help.", ("route", "route"), registry=registry)


def test_a_single_string_as_labelnames_is_refused(registry):
    with pytest.raises(monitor.MetricError, match=r"write \('route',\)"):
        monitor.Counter("hits", "Help.", "route", registry=registry)


def test_labels_returns_one_cached_child_however_the_values_are_given(registry):
    hits = monitor.Counter("hits", "Help.", ("route", "status"), registry=registry)

    by_name = hits.labels(route="/a", status="200")
    assert hits.labels(status="200", route="/a") is by_name
    assert hits.labels("/a", "200") is by_name
    assert hits.labels(route="/a", status=200) is by_name
    assert hits.labels("/a", 200) is by_name
    assert hits.labels(route="/b", status="200") is not by_name


def test_label_values_are_strings_in_the_collected_view(registry):
    hits = monitor.Counter("hits", "Help.", ("route", "status"), registry=registry)
    hits.labels(route="/a", status=200).inc()
    hits.labels(route=None, status=3.5).inc()

    assert set(hits.collect().samples) == {("/a", "200"), ("None", "3.5")}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.labels(route="/a"), "missing label 'status'"),
        (lambda m: m.labels(route="/a", status="200", verb="GET"), "unknown label 'verb'"),
        (lambda m: m.labels("/a"), r"expected 2 label values \('route', 'status'\), got 1"),
        (lambda m: m.labels("/a", "200", "x"), "expected 2 label values"),
        (lambda m: m.labels("/a", status="200"), "either positionally or by name"),
        (lambda m: m.inc(), r"has labels \('route', 'status'\); call .labels"),
    ],
)
def test_wrong_label_values_name_the_metric_and_the_labels(registry, call, message):
    hits = monitor.Counter("hits", "Help.", ("route", "status"), registry=registry)
    with pytest.raises(monitor.MetricError, match="counter 'hits_total'") as raised:
        call(hits)
    assert raised.match(message)


def test_a_metric_without_labels_has_no_labels_method(registry):
    hits = monitor.Counter("hits", "Help.", registry=registry)
    with pytest.raises(monitor.MetricError, match="has no labels"):
        hits.labels("x")


def test_python_keywords_work_as_label_names_through_the_generic_path(registry):
    hits = monitor.Counter("hits", "Help.", ("class", "route"), registry=registry)

    child = hits.labels(**{"class": "bot", "route": "/a"})
    child.inc()

    assert hits.labels("bot", "/a") is child
    assert hits.collect().samples == {("bot", "/a"): 1.0}
    with pytest.raises(monitor.MetricError, match="missing label 'route'"):
        hits.labels(**{"class": "bot"})


def test_remove_forgets_a_child_and_all_its_aliases(registry):
    hits = monitor.Counter("hits", "Help.", ("status",), registry=registry)
    old = hits.labels(status=200)
    old.inc()

    hits.remove("200")

    assert hits.collect().samples == {}
    fresh = hits.labels(status=200)
    assert fresh is not old
    assert fresh.value == 0


def test_clear_forgets_every_child(registry):
    hits = monitor.Counter("hits", "Help.", ("status",), registry=registry)
    hits.labels(status="200").inc()
    hits.labels(status="500").inc()

    hits.clear()

    assert hits.collect().samples == {}


def test_unit_is_appended_to_the_name_once(registry):
    a = monitor.Histogram("request_duration", "Help.", unit="seconds", registry=registry)
    b = monitor.Gauge("memory_bytes", "Help.", unit="bytes", registry=registry)

    assert a.name == "request_duration_seconds"
    assert b.name == "memory_bytes"
