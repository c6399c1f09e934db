"""The reports of a load run, written from its ``summary.json``: an HTML page and JUnit XML.

``write_html`` writes one self-contained page for people: the verdict, charts over time
(latency percentiles, throughput, failures, load, scraped server series), the per-request
table, the thresholds, the generator's verdict on itself and any preset verdicts. It opens
offline, from a CI artifact or a mail attachment: nothing is fetched, plotly.js is inlined.

``write_junit`` writes JUnit XML for CI: one test case per threshold and one for the
generator, so a failed threshold shows up where test failures do.

Why plotly: it is already a core dependency, its Python API turns the time series into
figures without any JavaScript of our own, and ``plotly.io.to_html`` embeds plotly.js with
the page, so the charts zoom and show the exact value under the pointer without a network.
The price is about 5 MB of JavaScript per report, included once however many charts there are.

Every string that comes from the plan or the run (request names, threshold expressions,
error reasons, series names) is HTML-escaped. The output depends on the summary only: the
same summary gives the same bytes.
"""

from __future__ import annotations

import html
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_PLOT_HEIGHT = 320
_TOP_ERRORS = 3
_LATENCY_COLUMNS = (("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99"))
_LATENCY_COLUMNS += (("p99.9", "p999"), ("max", "max"))
_SERVICE_COLUMNS = (("p95", "p95"), ("p99", "p99"))

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 0 auto; padding: 1.5em;
       max-width: 1200px; }
h1 { margin: 0 0 .3em; }
h2 { margin: 1.6em 0 .5em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.stats { display: flex; flex-wrap: wrap; gap: .5em 2em; margin: .8em 0; }
.stats div { display: flex; flex-direction: column; }
.stats dt { color: #666; font-size: 12px; }
.stats dd { margin: 0; font-size: 20px; font-variant-numeric: tabular-nums; }
.verdict { display: inline-block; padding: .1em .6em; border-radius: 4px; color: #fff;
           font-weight: bold; }
.pass { color: #17803d; }
.fail { color: #c62828; font-weight: bold; }
.verdict.pass { background: #17803d; color: #fff; }
.verdict.fail { background: #c62828; color: #fff; }
.warning { background: #fff4d6; border-left: 4px solid #e0a800; padding: .5em 1em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .25em .6em; text-align: left;
         vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f5f5f5; }
tfoot td { font-weight: bold; }
code { font-size: 13px; }
.note { color: #666; }
"""


def write_html(summary: Mapping[str, Any], path: Path, *, title: str = "redline load") -> None:
    """Write ``summary`` as one self-contained HTML page that opens without a network."""
    Path(path).write_text(_page(summary, title), encoding="utf-8")


def write_junit(summary: Mapping[str, Any], path: Path, *, suite: str = "redline load") -> None:
    """Write ``summary``'s verdicts as JUnit XML: a test case per threshold, one for the
    generator (failed when it was saturated)."""
    cases = [_threshold_case(expr, verdict) for expr, verdict in _thresholds(summary).items()]
    generator = summary.get("generator")
    if generator is not None:
        cases.append(_generator_case(generator))
    failures = sum(case.find("failure") is not None for case in cases)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0"}
    root = ET.Element("testsuites", name=suite, **counts)
    testsuite = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        **counts,
        skipped="0",
        time=_seconds(summary.get("duration_s")),
    )
    testsuite.extend(cases)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


# -- JUnit ---------------------------------------------------------------------------------


def _threshold_case(expression: str, verdict: Mapping[str, Any]) -> ET.Element:
    case = ET.Element("testcase", classname="thresholds", name=expression, time="0")
    if not verdict.get("ok"):
        value = verdict.get("value")
        message = (
            f"value {_number(value)} fails {expression}"
            if value is not None
            else f"the run has no value for {expression}"
        )
        failure = ET.SubElement(case, "failure", message=message, type="threshold")
        failure.text = f"{expression}\nvalue: {value}"
    return case


def _generator_case(generator: Mapping[str, Any]) -> ET.Element:
    case = ET.Element("testcase", classname="generator", name="generator", time="0")
    if generator.get("saturated"):
        reasons = [str(reason) for reason in generator.get("reasons") or ()]
        message = "generator saturated: " + ("; ".join(reasons) or "no reason given")
        failure = ET.SubElement(case, "failure", message=message, type="saturated")
        failure.text = "\n".join(reasons)
    return case


def _seconds(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "0"


# -- HTML page -----------------------------------------------------------------------------


def _page(summary: Mapping[str, Any], title: str) -> str:
    sections = [
        _header(summary, title),
        _charts(_figures(summary)),
        _requests_section(summary),
        _thresholds_section(_thresholds(summary)),
        _generator_section(summary.get("generator")),
        _verdicts_section(summary.get("verdicts")),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(section for section in sections if section)
        + "\n</body>\n</html>\n"
    )


def _header(summary: Mapping[str, Any], title: str) -> str:
    thresholds = _thresholds(summary)
    passed = all(verdict.get("ok") for verdict in thresholds.values())
    verdict = "PASS" if passed else "FAIL"
    note = "" if thresholds else ' <span class="note">(no thresholds)</span>'
    requests = summary.get("requests") or {}
    stats = [
        ("duration", f"{_number(summary.get('duration_s'))} s"),
        ("requests", _number(requests.get("total"))),
        ("failed", _number(requests.get("failed"))),
        ("dropped", _number(requests.get("dropped"))),
        ("late", _number(requests.get("late"))),
        ("requests/s", _number(summary.get("rps"))),
    ]
    items = "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in stats)
    return (
        f"<header>\n<h1>{_esc(title)}</h1>\n"
        f'<p>Verdict: <span class="verdict {verdict.lower()}">{verdict}</span>{note}</p>\n'
        f'<dl class="stats">{items}</dl>\n'
        f"{_saturation_warning(summary.get('generator') or {})}</header>"
    )


def _saturation_warning(generator: Mapping[str, Any]) -> str:
    if not generator.get("saturated"):
        return ""
    reasons = "".join(f"<li>{_esc(reason)}</li>" for reason in generator.get("reasons") or ())
    return (
        '<div class="warning"><strong>Generator saturated:</strong> the figures may show the '
        f"generator's own queueing rather than the target's.<ul>{reasons}</ul></div>\n"
    )


def _requests_section(summary: Mapping[str, Any]) -> str:
    endpoints = summary.get("endpoints") or {}
    head = (
        '<tr><th rowspan="2">Name</th><th rowspan="2">Requests</th><th rowspan="2">Failed</th>'
        f'<th rowspan="2">req/s</th><th colspan="{len(_LATENCY_COLUMNS)}">Latency (ms)</th>'
        f'<th colspan="{len(_SERVICE_COLUMNS)}">Service time (ms)</th>'
        '<th rowspan="2">Top errors</th></tr>\n<tr>'
        + "".join(f"<th>{label}</th>" for label, _ in _LATENCY_COLUMNS + _SERVICE_COLUMNS)
        + "</tr>"
    )
    body = "\n".join(_request_row(name, stats) for name, stats in endpoints.items())
    total = _request_row("All requests", summary)
    return (
        '<section id="requests">\n<h2>Requests</h2>\n<table>\n'
        f"<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n<tfoot>{total}</tfoot>\n"
        "</table>\n</section>"
    )


def _request_row(name: str, stats: Mapping[str, Any]) -> str:
    requests = stats.get("requests") or {}
    latency = stats.get("latency_ms") or {}
    service = stats.get("service_time_ms") or {}
    cells = [requests.get("total"), requests.get("failed"), stats.get("rps")]
    cells += [latency.get(key) for _, key in _LATENCY_COLUMNS]
    cells += [service.get(key) for _, key in _SERVICE_COLUMNS]
    numbers = "".join(f'<td class="n">{_number(value)}</td>' for value in cells)
    return (
        f"<tr><td>{_esc(name)}</td>{numbers}<td>{_top_errors(stats.get('errors') or {})}</td></tr>"
    )


def _top_errors(errors: Mapping[str, int]) -> str:
    ranked = sorted(errors.items(), key=lambda item: (-item[1], item[0]))
    shown = [f"{_esc(reason)} ({_number(count)})" for reason, count in ranked[:_TOP_ERRORS]]
    if len(ranked) > _TOP_ERRORS:
        shown.append(f"+{len(ranked) - _TOP_ERRORS} more")
    return "<br>".join(shown)


def _thresholds_section(thresholds: Mapping[str, Mapping[str, Any]]) -> str:
    if not thresholds:
        return ""
    rows = "\n".join(
        f"<tr><td><code>{_esc(expression)}</code></td>"
        f'<td class="n">{_number(verdict.get("value"))}</td>'
        f"{_verdict_cell(bool(verdict.get('ok')))}</tr>"
        for expression, verdict in thresholds.items()
    )
    return (
        '<section id="thresholds">\n<h2>Thresholds</h2>\n<table>\n'
        "<thead><tr><th>Threshold</th><th>Value</th><th>Verdict</th></tr></thead>\n"
        f"<tbody>\n{rows}\n</tbody>\n</table>\n</section>"
    )


def _verdict_cell(ok: bool) -> str:
    return '<td class="pass">PASS</td>' if ok else '<td class="fail">FAIL</td>'


def _generator_section(generator: Mapping[str, Any] | None) -> str:
    if not generator:
        return ""
    return f'<section id="generator">\n<h2>Generator</h2>\n{_pairs(generator)}\n</section>'


def _verdicts_section(verdicts: Mapping[str, Any] | None) -> str:
    if not verdicts:
        return ""
    parts = [f"<h3>{_esc(name)}</h3>\n{_value(verdict)}" for name, verdict in verdicts.items()]
    return '<section id="verdicts">\n<h2>Verdicts</h2>\n' + "\n".join(parts) + "\n</section>"


def _pairs(mapping: Mapping[str, Any]) -> str:
    """Any mapping as a key/value table; nested mappings become nested tables."""
    rows = "".join(
        f"<tr><th>{_esc(key)}</th><td>{_value(value)}</td></tr>" for key, value in mapping.items()
    )
    return f'<table class="pairs"><tbody>{rows}</tbody></table>'


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        return _pairs(value) if value else "–"
    if isinstance(value, list | tuple):
        return "<br>".join(_value(item) for item in value) if value else "–"
    if isinstance(value, str):
        return _esc(value)
    return _number(value)


# -- charts --------------------------------------------------------------------------------


def _figures(summary: Mapping[str, Any]) -> list[go.Figure]:
    """The charts of the page: the run's time series, then one per scraped server series."""
    figures = []
    rows = summary.get("timeseries") or []
    if rows:
        figures += [_latency(rows), _throughput(rows), _failures(rows)]
        load = _load(rows)
        if load is not None:
            figures.append(load)
    for key, series in (summary.get("server") or {}).items():
        figures.append(_server_series(key, series))
    return figures


def _charts(figures: list[go.Figure]) -> str:
    if not figures:
        return ""
    # plotly.js goes in once, with the first chart; the others use it. Fixed div ids keep
    # the page the same for the same summary (plotly would pick random ones).
    divs = [
        pio.to_html(
            figure,
            full_html=False,
            include_plotlyjs=index == 0,
            config=_PLOT_CONFIG,
            div_id=f"redline-chart-{index}",
            validate=False,
        )
        for index, figure in enumerate(figures)
    ]
    return '<section id="charts">\n<h2>Over time</h2>\n' + "\n".join(divs) + "\n</section>"


def _figure(
    title: str, y_title: str, traces: Iterable[go.BaseTraceType], **layout: Any
) -> go.Figure:
    figure = go.Figure(list(traces))
    defaults = {
        "title": {"text": title},
        "template": "plotly_white",
        "height": _PLOT_HEIGHT,
        "margin": {"l": 60, "r": 30, "t": 50, "b": 45},
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
        "xaxis": {"title": {"text": "seconds since start"}},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
    }
    figure.update_layout(**(defaults | layout))
    return figure


def _column(rows: list[Mapping[str, Any]], key: str) -> list[Any]:
    return [row.get(key) for row in rows]


def _latency(rows: list[Mapping[str, Any]]) -> go.Figure:
    t = _column(rows, "t")
    traces = [
        go.Scatter(x=t, y=_column(rows, key), name=key, mode="lines")
        for key in ("p50", "p95", "p99")
    ]
    return _figure("Latency", "ms", traces)


def _throughput(rows: list[Mapping[str, Any]]) -> go.Figure:
    trace = go.Scatter(x=_column(rows, "t"), y=_column(rows, "rps"), name="completed", mode="lines")
    return _figure("Throughput", "requests/s", [trace], showlegend=False)


def _failures(rows: list[Mapping[str, Any]]) -> go.Figure:
    t = _column(rows, "t")
    traces = [go.Bar(x=t, y=_column(rows, key), name=key) for key in ("errors", "dropped", "late")]
    return _figure("Errors, dropped and late arrivals", "per second", traces, barmode="group")


def _load(rows: list[Mapping[str, Any]]) -> go.Figure | None:
    """Active VUs (closed model) and the target arrival rate (open model), where known."""
    t = _column(rows, "t")
    vus, rate = _column(rows, "vus"), _column(rows, "rate")
    has_vus = any(v is not None for v in vus)
    has_rate = any(v is not None for v in rate)
    if not (has_vus or has_rate):
        return None
    traces = []
    layout: dict[str, Any] = {}
    if has_vus:
        traces.append(go.Scatter(x=t, y=vus, name="VUs", mode="lines", line_shape="hv"))
    if has_rate:
        # Rates and users are different units: the rate gets its own axis when both show.
        axis = "y2" if has_vus else "y"
        traces.append(go.Scatter(x=t, y=rate, name="target rate (/s)", mode="lines", yaxis=axis))
        if has_vus:
            layout["yaxis2"] = {
                "title": {"text": "arrivals/s"},
                "overlaying": "y",
                "side": "right",
                "rangemode": "tozero",
            }
    y_title = "VUs" if has_vus else "arrivals/s"
    return _figure("Load", y_title, traces, **layout)


def _server_series(key: str, series: Any) -> go.Figure:
    values = series.get("values", []) if isinstance(series, Mapping) else []
    points = [point for point in values if isinstance(point, list | tuple) and len(point) == 2]
    stats = " · ".join(
        f"{name} {_number(series[name])}"
        for name in ("last", "min", "max", "avg")
        if isinstance(series, Mapping) and name in series
    )
    # plotly reads a few tags (<br>, <b>...) and entities in its labels, but not &quot;:
    # escaping <, > and & only shows a series such as le="<0.5" as written.
    label = html.escape(key, quote=False)
    title = label + (f"<br><sup>{stats}</sup>" if stats else "")
    trace = go.Scatter(
        x=[point[0] for point in points], y=[point[1] for point in points], name=label, mode="lines"
    )
    return _figure(
        title, "value", [trace], showlegend=False, margin={"l": 60, "r": 30, "t": 70, "b": 45}
    )


# -- formatting ----------------------------------------------------------------------------


def _thresholds(summary: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    return summary.get("thresholds") or {}


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    """A figure as people read it: thousands separated, four significant digits below 1000."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return _esc(value)
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"
