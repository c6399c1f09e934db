"""The demo's verdicts and outputs from given figures: each target passes, fails or is skipped
on the right figure of the right step, the terminal tables, ``summary.json``, and
``report.html`` as a real headless Chromium renders it (offline)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from browser import dump_dom
from rich.console import Console

from redline.demo._report import print_table, write_html, write_json
from redline.demo._runner import endpoint_table, load_figures, server_figures
from redline.demo._targets import TARGETS, check_targets

GOOD_FULL = {
    "read_rps": 2400.0,
    "rps": 2500.0,
    "p50_ms": 8.0,
    "p95_ms": 40.0,
    "p99_ms": 90.0,
    "db_query_p95_ms": 3.0,
    "cache_hit_ratio": 0.93,
    "reads_from_cache": 0.95,
    "error_rate": 0.0,
    "index_hit_ratio": 0.999,
}
GOOD = {
    "baseline": {"read_rps": 120.0, "rps": 130.0, "p50_ms": 200.0, "p95_ms": 900.0},
    "http": GOOD_FULL,
    "users": {"error_rate": 0.0, "p95_ms": 20.0, "vus_reached": 1000},
}


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["target"]: row for row in rows}


def test_every_target_passes_on_good_figures() -> None:
    rows = check_targets(GOOD)
    assert [row["status"] for row in rows] == ["pass"] * len(TARGETS)
    gain = by_name(rows)["Read-mix throughput vs baseline"]
    assert gain["value"] == pytest.approx(20.0)
    assert gain["shown"] == "20x"


@pytest.mark.parametrize(
    ("target", "figure", "value"),
    [
        ("API p50", "p50_ms", 100.0),  # the bound itself fails: "< 100"
        ("API p95", "p95_ms", 250.0),
        ("API p99", "p99_ms", 501.0),
        ("Database query p95", "db_query_p95_ms", 60.0),
        ("Cache hit rate", "reads_from_cache", 0.80),
        ("Error rate", "error_rate", 0.001),
        ("Index hit ratio", "index_hit_ratio", 0.9),
        ("Read-mix throughput vs baseline", "read_rps", 1199.0),
    ],
)
def test_one_bad_figure_fails_exactly_its_target(target: str, figure: str, value: float) -> None:
    results = {**GOOD, "http": {**GOOD_FULL, figure: value}}
    rows = by_name(check_targets(results))
    assert rows[target]["status"] == "fail"
    assert [name for name, row in rows.items() if row["status"] != "pass"] == [target]


def test_users_not_held_when_errors_or_latency_break() -> None:
    for users in ({"error_rate": 0.01, "p95_ms": 20.0, "vus_reached": 1000},
                  {"error_rate": 0.0, "p95_ms": 250.0, "vus_reached": 1000},
                  {"error_rate": 0.0, "p95_ms": 20.0, "vus_reached": 990}):  # fmt: skip
        rows = by_name(check_targets({**GOOD, "users": users}))
        assert rows["Concurrent users held"]["status"] == "fail", users


def test_targets_of_steps_not_run_are_skipped_with_the_reason() -> None:
    rows = by_name(check_targets({"http": {**GOOD_FULL, "db_query_p95_ms": None}}))
    assert rows["Read-mix throughput vs baseline"]["status"] == "skipped"
    assert "baseline" in rows["Read-mix throughput vs baseline"]["why"]
    assert rows["Concurrent users held"]["why"] == "step 'users' did not run"
    assert rows["Database query p95"]["why"] == "db_query_p95_ms was not measured in step 'http'"
    assert rows["API p95"]["status"] == "pass"


LOAD_SUMMARY = {
    "requests": {"total": 1000, "failed": 4},
    "rps": 100.0,
    "duration_s": 10.0,
    "latency_ms": {"p50": 5.0, "p95": 20.0, "p99": 30.0},
    "endpoints": {
        "list-calls": {"requests": {"total": 600, "failed": 0}, "rps": 60.0},
        "create-call": {"requests": {"total": 400, "failed": 4}, "rps": 40.0},
    },
}


def test_load_figures_count_reads_by_request_name() -> None:
    figures = load_figures(LOAD_SUMMARY, frozenset({"list-calls"}))
    assert figures["read_rps"] == 60.0
    assert figures["error_rate"] == 0.004
    assert (figures["p50_ms"], figures["p95_ms"], figures["p99_ms"]) == (5.0, 20.0, 30.0)


def test_server_figures_are_deltas_between_two_metric_pages() -> None:
    before = """
# TYPE redline_cache_gets_total counter
redline_cache_gets_total{cache="data"} 100
# TYPE redline_cache_hits_total counter
redline_cache_hits_total{cache="data",tier="l1"} 50
redline_cache_hits_total{cache="data",tier="l2"} 10
# TYPE db_query_duration_seconds histogram
db_query_duration_seconds_bucket{engine="app",operation="SELECT",le="+Inf"} 10
db_query_duration_seconds_count{engine="app",operation="SELECT"} 10
db_query_duration_seconds_sum{engine="app",operation="SELECT"} 1.0
# TYPE demo_read_requests_total counter
demo_read_requests_total{served_by="cache"} 30
demo_read_requests_total{served_by="database"} 70
"""
    after = """
# TYPE redline_cache_gets_total counter
redline_cache_gets_total{cache="data"} 1100
# TYPE redline_cache_hits_total counter
redline_cache_hits_total{cache="data",tier="l1"} 850
redline_cache_hits_total{cache="data",tier="l2"} 110
# TYPE db_query_duration_seconds histogram
db_query_duration_seconds_bucket{engine="app",operation="SELECT",le="+Inf"} 110
db_query_duration_seconds_count{engine="app",operation="SELECT"} 110
db_query_duration_seconds_sum{engine="app",operation="SELECT"} 3.0
# TYPE demo_read_requests_total counter
demo_read_requests_total{served_by="cache"} 430
demo_read_requests_total{served_by="database"} 170
# TYPE db_query_duration_seconds_quantiles summary
db_query_duration_seconds_quantiles{engine="app",operation="SELECT",quantile="0.95"} 0.004
db_query_duration_seconds_quantiles{engine="app",operation="INSERT",quantile="0.95"} 0.012
db_query_duration_seconds_quantiles{engine="app",operation="DELETE",quantile="0.95"} NaN
"""
    figures = server_figures(before, after, requests=500)
    assert figures["cache_hit_ratio"] == pytest.approx(0.9)  # (800 + 100) / 1000
    assert figures["reads_from_cache"] == pytest.approx(0.8)  # 400 of 500 reads
    assert figures["db_ms_per_request"] == pytest.approx(4.0)  # 2 s over 500 requests
    assert figures["db_query_p95_ms"] == pytest.approx(12.0)  # the slowest operation's p95
    assert figures["cache_gets"] == 1000


def test_no_cache_lookups_means_no_hit_ratio() -> None:
    figures = server_figures("", "", requests=10)
    assert figures["cache_hit_ratio"] is None and figures["reads_from_cache"] is None


def summary_of(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    titles = {"baseline": "Baseline", "http": "+ HTTP caching", "users": "1000 users"}
    steps = [
        {
            "name": name,
            "title": titles[name],
            "what": f"what <{name}> is",
            "figures": figures,
            "endpoints": {"list-calls": {"requests": 10, "failed": 0, "rps": 1.0}},
            "timeseries": [{"t": t, "rps": 100.0 + t, "p95": 5.0 + t} for t in range(3)],
        }
        for name, figures in results.items()
    ]
    targets = check_targets(results)
    verdict = "fail" if any(t["status"] == "fail" for t in targets) else "pass"
    return {
        "verdict": verdict,
        "steps": steps,
        "targets": targets,
        "environment": {"date": "2026-11-21", "scale": 0.01, "started": ["Redis <7>"]},
    }


def test_terminal_tables_show_every_step_and_target() -> None:
    console = Console(record=True, width=250)
    print_table(summary_of(GOOD), console)
    text = console.export_text()
    assert "Baseline" in text and "+ HTTP caching" in text
    assert text.count(" pass") == len(TARGETS)
    assert "93 %" in text  # the cache hit ratio column


def test_summary_json_round_trips(tmp_path: Path) -> None:
    summary = summary_of(GOOD)
    write_json(summary, tmp_path / "summary.json")
    assert orjson.loads((tmp_path / "summary.json").read_bytes()) == orjson.loads(
        orjson.dumps(summary)
    )


def test_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    results = {**GOOD, "http": {**GOOD_FULL, "p95_ms": 250.0}}
    path = tmp_path / "report.html"
    write_html(summary_of(results), path)
    html = path.read_text()
    assert "<what <" not in html  # escaped
    assert "http://" not in html.split("<script>")[0]  # nothing fetched from a network

    rendered = dump_dom(path, offline=True)

    charts = re.findall(r'<div id="redline-chart-\d+" class="([^"]*)"', rendered.dom)
    assert len(charts) == 4
    assert all("js-plotly-plot" in classes for classes in charts)
    assert len(re.findall(r'<g class="trace bars', rendered.dom)) == 2 + 3
    assert len(re.findall(r'<g class="trace scatter', rendered.dom)) == 3 + 3
    verdict = re.search(r'<span class="verdict (\w+)">', rendered.dom)
    assert verdict is not None and verdict.group(1) == "fail"
    row = re.search(r"<td>API p95</td>(.*?)</tr>", rendered.dom, re.S)
    assert row is not None
    assert "250 ms" in row.group(1) and ">fail<" in row.group(1)


def test_unexpected_statuses_count_as_errors_and_5xx_only_once() -> None:
    summary = {
        **LOAD_SUMMARY,
        "requests": {"total": 1000, "failed": 4},
        "errors": {"status:503": 4, "check: status 503": 4, "check: status 422": 6},
        "endpoints": {
            "list-calls": {
                "requests": {"total": 600, "failed": 0},
                "errors": {"check: status 422": 6},
            },
            "create-call": {
                "requests": {"total": 400, "failed": 4},
                "errors": {"status:503": 4, "check: status 503": 4},
            },
        },
    }
    figures = load_figures(summary, frozenset({"list-calls"}))
    assert figures["failed"] == 10  # 4 answers of 503 and 6 unexpected 422s
    assert figures["error_rate"] == 0.01
    table = endpoint_table(summary)
    assert (table["list-calls"]["failed"], table["create-call"]["failed"]) == (6, 4)
