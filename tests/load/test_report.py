"""The HTML and JUnit reports, from summaries of a real Recorder with real threshold verdicts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from browser import dump_dom
from plotly.offline import get_plotlyjs

from redline.load._metrics import Recorder
from redline.load._report import write_html, write_junit
from redline.load._thresholds import evaluate_all, parse, required_percentiles

SECOND = 1_000_000_000
MS = 1_000_000
EVIL = "<script>alert(1)</script>"
SERVER = {
    'mem_bytes{job="api"}': {
        "values": [[0.0, 1.0e8], [1.0, 2.0e8], [2.0, 1.5e8]],
        "last": 1.5e8,
        "min": 1.0e8,
        "max": 2.0e8,
        "avg": 1.5e8,
    },
    'mem_bytes{job="db"}': {"values": [[0.0, 3.0e8], [2.0, 3.5e8]], "last": 3.5e8},
    'queue_depth{le="<0.5"}': {"values": [[0.0, 1], [2.0, 4]], "last": 4},
}
SERVER_NAMES = 2  # mem_bytes (two label sets, one chart) and queue_depth
# Closed-model "list-calls": 5 s x 100 requests, latency 5 ms in second 0 up to 9 ms in second 4.
# Open-model EVIL: 5 s x 50 requests, every 10th a 503, each sent 1 ms late.
THRESHOLDS = [
    "latency{name:list-calls}: p(95) < 6",  # fails: 9 ms
    "errors: rate < 0.5",
    f'latency{{name:"{EVIL}"}}: p(99) < 100',
    "rps > 1000",  # fails: 150/s
]


def run_summary(
    thresholds: list[str] = THRESHOLDS, *, saturated: bool = False, **extra: Any
) -> dict[str, Any]:
    """A five-second run recorded with explicit timestamps, judged by ``thresholds``."""
    recorder = Recorder(start_ns=0)
    for second in range(5):
        start = second * SECOND
        recorder.record_vus(start, 10 + second)
        recorder.record_rate(start, 50.0)
        for i in range(100):
            sent = start + i * 9 * MS
            recorder.record("list-calls", None, sent, sent + (5 + second) * MS, 200, None)
        for i in range(50):
            intended = start + i * 19 * MS
            error = "status:503" if i % 10 == 0 else None
            recorder.record(EVIL, intended, intended + MS, intended + 3 * MS, 200, error)
        recorder.record_dropped(EVIL, 2, now_ns=start + 1)
        recorder.record_late(EVIL, MS, now_ns=start + 1)
    recorder.record_check_failure("list-calls", "body contains <b>")
    recorder.stop(5 * SECOND)
    summary = recorder.summary(extra=required_percentiles(parse(t) for t in thresholds))
    summary["generator"] = {
        "cpu_us_per_request": 9.1,
        "saturated": saturated,
        "reasons": ["event loop p99 lag 12.0 ms > 10 ms"] if saturated else [],
        "max_schedule_lag_ms": 1.0,
    }
    summary.update(extra)
    summary["thresholds"] = evaluate_all(thresholds, summary)
    return summary


def html_of(summary: dict[str, Any], tmp_path: Path, **options: Any) -> str:
    path = tmp_path / "report.html"
    write_html(summary, path, **options)
    return path.read_text(encoding="utf-8")


class _Tables(HTMLParser):
    """The text of every cell of the tables inside ``<section id=...>``, row by row."""

    def __init__(self, section: str) -> None:
        super().__init__()
        self.section = section
        self.inside = False
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.inside = ("id", self.section) in attrs
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "section":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def rows_of(page: str, section: str) -> dict[str, list[str]]:
    """``{first cell: other cells}`` of the section's table rows."""
    parser = _Tables(section)
    parser.feed(page)
    return {row[0]: row[1:] for row in parser.rows if row}


def test_html_has_a_row_per_request_name_with_its_counts(tmp_path: Path) -> None:
    rows = rows_of(html_of(run_summary(), tmp_path), "requests")

    # requests, failed, req/s, p50, p90, p95, p99, p99.9, max, service p95, service p99, errors
    assert rows["list-calls"][:3] == ["500", "0", "100"]
    assert rows["list-calls"][5] == "9.007"
    assert rows["list-calls"][11] == "check: body contains <b> (1)"
    assert rows[EVIL][:3] == ["250", "25", "50"]
    assert rows[EVIL][6] == "3.001"  # latency from the intended send: 3 ms
    assert rows[EVIL][10] == "2"  # service time from the actual send: 2 ms
    assert rows[EVIL][11] == "status:503 (25)"
    assert rows["All requests"][:3] == ["750", "25", "150"]


def test_html_shows_failed_thresholds_as_fail_and_the_run_as_fail(tmp_path: Path) -> None:
    page = html_of(run_summary(), tmp_path)
    rows = rows_of(page, "thresholds")

    assert rows["latency{name:list-calls}: p(95) < 6"] == ["9.007", "FAIL"]
    assert rows["errors: rate < 0.5"] == ["0.03333", "PASS"]
    assert rows[f'latency{{name:"{EVIL}"}}: p(99) < 100'] == ["3.001", "PASS"]
    assert rows["rps > 1000"] == ["150", "FAIL"]
    assert '<span class="verdict fail">FAIL</span>' in page


def test_html_shows_pass_when_every_threshold_passes(tmp_path: Path) -> None:
    thresholds = ["errors: rate < 0.5", "rps > 100"]
    page = html_of(run_summary(thresholds), tmp_path)

    rows = rows_of(page, "thresholds")
    assert [rows[expression][-1] for expression in thresholds] == ["PASS", "PASS"]
    assert '<span class="verdict pass">PASS</span>' in page


def test_html_loads_nothing_from_the_network(tmp_path: Path) -> None:
    page = html_of(run_summary(server=SERVER), tmp_path)

    assert page.count(get_plotlyjs()) == 1
    own = page.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert not re.search(r"<link\b", own, re.IGNORECASE)
    assert not re.search(r"https?://|//cdn|@import", own)


def test_html_escapes_request_names_expressions_and_reasons(tmp_path: Path) -> None:
    page = html_of(run_summary(server=SERVER), tmp_path, title="<i>load</i>")

    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "body contains &lt;b&gt;" in page
    assert "<title>&lt;i&gt;load&lt;/i&gt;</title>" in page
    # Plotly shows entities as characters but reads tags in labels: it gets "&lt;", not "<".
    assert 'queue_depth{le=\\"&lt;0.5\\"}' in page
    assert "\\u003c0.5" not in page


def plotted(page: str) -> list[tuple[str, list[str]]]:
    """``(title, [trace name, ...])`` of every chart of the page, in order."""
    charts = []
    decoder = json.JSONDecoder()
    for found in re.finditer(r'Plotly\.newPlot\(\s*"redline-chart-\d+",\s*', page):
        traces, end = decoder.raw_decode(page, found.end())
        layout, _ = decoder.raw_decode(page, page.index("{", end))
        charts.append((layout["title"]["text"], [trace.get("name") for trace in traces]))
    return charts


def test_html_has_a_chart_per_timeseries_panel_and_per_server_metric_name(
    tmp_path: Path,
) -> None:
    without = html_of(run_summary(), tmp_path)
    with_server = html_of(run_summary(server=SERVER), tmp_path)

    # latency, throughput, failures, load; then one per metric name, a line per label set
    assert len(re.findall(r'<div id="redline-chart-\d+"', without)) == 4
    assert len(re.findall(r'<div id="redline-chart-\d+"', with_server)) == 4 + SERVER_NAMES
    assert plotted(with_server)[4:] == [
        ("mem_bytes", ['mem_bytes{job="api"}', 'mem_bytes{job="db"}']),
        ("queue_depth", ['queue_depth{le="&lt;0.5"}']),
    ]


def many_series(names: int) -> dict[str, Any]:
    """``names`` metric names, out of order, each with two label sets."""
    return {
        f'm{n:02d}{{pod="{pod}"}}': {"values": [[0.0, n], [1.0, n + 1]], "last": n + 1}
        for n in reversed(range(names))
        for pod in ("a", "b")
    }


def test_html_charts_at_most_twelve_server_metric_names_and_says_how_many_not(
    tmp_path: Path,
) -> None:
    page = html_of(run_summary(server=many_series(30)), tmp_path)

    server_charts = plotted(page)[4:]
    assert [title for title, _ in server_charts] == [f"m{n:02d}" for n in range(12)]
    assert all(len(traces) == 2 for _, traces in server_charts)
    assert "18 more server metric names not charted" in page
    # The table keeps every series.
    rows = rows_of(page, "server")
    assert len([key for key in rows if key.startswith("m")]) == 60
    assert rows['m29{pod="b"}'][0] == "30"


def test_html_takes_the_number_of_server_charts(tmp_path: Path) -> None:
    page = html_of(run_summary(server=many_series(3)), tmp_path, server_charts=1)
    every = html_of(run_summary(server=many_series(3)), tmp_path)

    assert [title for title, _ in plotted(page)[4:]] == ["m00"]
    assert "2 more server metric names not charted" in page
    assert len(plotted(every)) == 4 + 3
    assert "not charted" not in every


def test_html_shows_how_the_scrape_went_and_every_series(tmp_path: Path) -> None:
    scrape = {
        "url": "http://127.0.0.1:9/metrics",
        "scrapes": 62,
        "errors": 0,
        "last_error": None,
        "series": 3,
        "dropped_series": 0,
    }
    page = html_of(run_summary(server=SERVER, server_scrape=scrape), tmp_path)

    rows = rows_of(page, "server")
    assert rows["url"] == ["http://127.0.0.1:9/metrics"]
    assert rows["scrapes"] == ["62"]
    assert rows["errors"] == ["0"]
    # last, min, max, avg, rate
    assert rows['mem_bytes{job="api"}'] == ["150,000,000", "100,000,000", "200,000,000",
                                            "150,000,000", "–"]  # fmt: skip
    assert rows['queue_depth{le="<0.5"}'] == ["4", "–", "–", "–", "–"]
    assert 'class="warning"' not in page
    assert "not kept" not in page


def test_html_warns_of_failed_scrapes_with_the_last_error(tmp_path: Path) -> None:
    scrape = {
        "url": "http://127.0.0.1:9/metrics",
        "scrapes": 62,
        "errors": 3,
        "last_error": EVIL,
        "series": 0,
        "dropped_series": 5,
    }
    page = html_of(run_summary(server_scrape=scrape), tmp_path)

    section = page[page.index('<section id="server">') :]
    assert section.index('class="warning"') < section.index("</section>")
    assert "3 of 62 scrapes failed" in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "5 series beyond the limit were not kept" in section
    assert EVIL not in page


def test_html_has_no_server_section_without_scraping(tmp_path: Path) -> None:
    assert '<section id="server">' not in html_of(run_summary(), tmp_path)


def test_html_shows_when_a_threshold_stopped_the_run(tmp_path: Path) -> None:
    aborted = {"at_s": 12.0, "by": ["errors: rate < 0.01", EVIL]}
    page = html_of(run_summary(aborted=aborted), tmp_path)
    calm = html_of(run_summary(), tmp_path)

    header = page[: page.index("</header>")]
    banner = re.search(r'<div class="aborted" id="aborted">(.*?)</div>', header)
    assert banner is not None
    text = re.sub(r"<[^>]+>", "", banner.group(1))
    assert text.startswith(
        "Stopped at 12.0 s by: errors: rate &lt; 0.01; &lt;script&gt;alert(1)&lt;/script&gt;"
    )
    # Near the verdict: right after it, before the figures.
    assert header.index("Verdict:") < banner.start() < header.index('<dl class="stats">')
    assert 'id="aborted"' not in calm


def test_html_shows_each_scenarios_arrivals_and_the_scheduled_total(tmp_path: Path) -> None:
    summary = run_summary(
        scenarios={
            "checkout": {"scheduled": 400, "dropped": 8, "late": 2, "max_late_ms": 12.5},
            EVIL: {"scheduled": 1250, "dropped": 0, "late": 0, "max_late_ms": 0.0},
        }
    )
    summary["requests"]["scheduled"] = 1650
    page = html_of(summary, tmp_path)
    closed = run_summary()  # as a closed-model run: no arrivals were scheduled
    closed.pop("scenarios", None)
    closed["requests"].pop("scheduled", None)
    plain = html_of(closed, tmp_path)

    rows = rows_of(page, "scenarios")
    # scheduled, dropped, late, max late
    assert rows["checkout"] == ["400", "8", "2", "12.5"]
    assert rows[EVIL] == ["1,250", "0", "0", "0"]
    assert "<dt>scheduled</dt><dd>1,650</dd>" in page
    assert '<section id="scenarios">' not in plain
    assert "<dt>scheduled</dt>" not in plain


def test_html_is_the_same_for_the_same_summary(tmp_path: Path) -> None:
    summary = run_summary(server=SERVER)

    assert html_of(summary, tmp_path) == html_of(summary, tmp_path)


def test_html_is_written_without_importing_plotlys_python_api(tmp_path: Path) -> None:
    # A fresh interpreter: this module imports plotly itself. The load benchmark counts the
    # tool's CPU, and plotly.graph_objects alone costs a large share of it.
    script = (
        "import sys, json; from pathlib import Path; "
        "from redline.load._report import write_html; "
        "write_html(json.loads(sys.argv[1]), Path(sys.argv[2])); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'plotly'))"
    )
    summary = run_summary(server=SERVER)
    path = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(summary), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )

    assert done.stdout.strip() == "[]"
    assert path.read_text(encoding="utf-8") == html_of(summary, tmp_path)


def test_html_warns_of_a_saturated_generator_with_its_reasons(tmp_path: Path) -> None:
    calm = html_of(run_summary(), tmp_path)
    saturated = html_of(run_summary(saturated=True), tmp_path)

    assert 'class="warning"' not in calm
    assert 'class="warning"' in saturated
    assert "event loop p99 lag 12.0 ms &gt; 10 ms" in saturated
    assert rows_of(saturated, "generator")["saturated"] == ["yes"]


def test_html_renders_any_preset_verdict_as_a_key_value_table(tmp_path: Path) -> None:
    verdicts = {"spike": {"recovery_s": 3.0, "peak_p99_ms": 812.5, "recovered": True}}
    rows = rows_of(html_of(run_summary(verdicts=verdicts), tmp_path), "verdicts")

    assert rows == {"recovery_s": ["3"], "peak_p99_ms": ["812.5"], "recovered": ["yes"]}


def junit_of(summary: dict[str, Any], tmp_path: Path) -> ET.Element:
    path = tmp_path / "junit.xml"
    write_junit(summary, path, suite="checkout")
    return ET.parse(path).getroot()


def test_junit_has_a_case_per_threshold_and_counts_the_failures(tmp_path: Path) -> None:
    suite = junit_of(run_summary(), tmp_path).find("testsuite")

    assert suite is not None
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("checkout", "5", "2")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == [*THRESHOLDS, "generator"]
    assert {case.get("classname") for case in cases.values()} == {"thresholds", "generator"}
    failure = cases["rps > 1000"].find("failure")
    assert failure is not None and failure.get("message") == "value 150 fails rps > 1000"
    assert cases["errors: rate < 0.5"].find("failure") is None
    assert cases["generator"].find("failure") is None


def test_junit_fails_the_generator_case_when_saturated(tmp_path: Path) -> None:
    suite = junit_of(run_summary(["errors: rate < 0.5"], saturated=True), tmp_path)[0]

    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failure = suite.find("testcase[@name='generator']/failure")
    assert failure is not None
    assert failure.get("message") == "generator saturated: event loop p99 lag 12.0 ms > 10 ms"


def test_junit_says_when_and_by_what_a_threshold_stopped_the_run(tmp_path: Path) -> None:
    aborted = {"at_s": 12.0, "by": ["errors: rate < 0.01", "rps > 1000"]}
    suite = junit_of(run_summary(aborted=aborted), tmp_path)[0]
    calm = junit_of(run_summary(), tmp_path)[0]

    properties = suite.findall("properties/property")
    assert [(p.get("name"), p.get("value")) for p in properties] == [
        ("aborted_at_s", "12.0"),
        ("aborted_by", "errors: rate < 0.01"),
        ("aborted_by", "rps > 1000"),
    ]
    assert suite.findtext("system-out") == "Stopped at 12.0 s by: errors: rate < 0.01; rps > 1000"
    # The JUnit schema's order: properties, test cases, system-out.
    assert [child.tag for child in suite][0] == "properties"
    assert [child.tag for child in suite][-1] == "system-out"
    assert suite.get("tests") == "5"
    assert calm.find("properties") is None and calm.find("system-out") is None


def test_junit_fails_a_threshold_the_run_has_no_value_for(tmp_path: Path) -> None:
    suite = junit_of(run_summary(["latency{name:missing}: p(95) < 5"]), tmp_path)[0]

    failure = suite.find("testcase[@classname='thresholds']/failure")
    assert failure is not None
    assert "no value" in failure.get("message", "")


def test_report_renders_offline_in_headless_chromium(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    scrape = {"url": "http://127.0.0.1:9/metrics", "scrapes": 5, "errors": 1,
              "last_error": "refused", "series": 3, "dropped_series": 0}  # fmt: skip
    scenarios = {"s": {"scheduled": 250, "dropped": 10, "late": 5, "max_late_ms": 1.0}}
    aborted = {"at_s": 4.5, "by": ["rps > 1000"]}
    write_html(
        run_summary(server=SERVER, server_scrape=scrape, scenarios=scenarios, aborted=aborted),
        path,
    )

    rendered = dump_dom(path, offline=True)

    charts = re.findall(r'<div id="redline-chart-\d+" class="([^"]*)"', rendered.dom)
    assert len(charts) == 4 + SERVER_NAMES
    assert all("js-plotly-plot" in classes for classes in charts)
    assert len(re.findall(r'<svg class="main-svg"', rendered.dom)) >= len(charts)
    assert len(re.findall(r'<g class="trace scatter', rendered.dom)) == 3 + 1 + 2 + len(SERVER)
    assert len(re.findall(r'<g class="trace bars', rendered.dom)) == 3
    rows = rows_of(rendered.dom, "thresholds")
    assert rows["rps > 1000"] == ["150", "FAIL"]
    assert "Stopped at 4.5 s by:" in rendered.dom
    assert rows_of(rendered.dom, "scenarios")["s"] == ["250", "10", "5", "1"]
    assert rows_of(rendered.dom, "server")["last_error"] == ["refused"]
