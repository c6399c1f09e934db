"""The reports of a load run, written from its ``summary.json``: an HTML page and JUnit XML.

``write_html`` writes one self-contained page for people: the verdict (with a banner when a
threshold stopped the run), charts over time (latency percentiles, throughput, failures, load,
and one chart per scraped server metric name, its label sets as lines), the per-request table,
the per-scenario arrivals, the thresholds, how the server scrape went with every series'
figures, the generator's verdict on itself and any preset verdicts. It opens offline, from a
CI artifact or a mail attachment: nothing is fetched, plotly.js is inlined.

``write_junit`` writes JUnit XML for CI: one test case per threshold and one for the
generator, so a failed threshold shows up where test failures do; a run a threshold stopped
says so in the suite's properties and ``system-out``.

Server charts are grouped by metric name and capped (``server_charts``, 12 by default, the
first names in sorted order): an exporter's hundreds of series would otherwise bury the run's
own charts, and each chart costs the browser time. Every series stays in the table.

Why plotly: the plotly package, a core dependency, bundles plotly.js, whose charts zoom and
show the exact value under the pointer without a network. The price is about 5 MB of
JavaScript per report, inlined once in ``<head>`` however many charts there are.

How the charts are embedded: each figure is a plain dict in plotly.js's own schema (``data``
and ``layout``), written with orjson into a ``Plotly.newPlot`` call after its ``<div>``, and the
package's ``plotly.min.js`` is copied in as bytes, found without importing plotly. None of
plotly's Python API runs: importing ``plotly.graph_objects`` and building validated figures
took about 0.45 s of CPU, which the load benchmark counts against the tool as it measures the
whole process; the page now takes about 10 ms. plotly.js knows a template only as a dict, not
by a name such as ``plotly_white``, so the parts of that template the charts use are spelled
out in ``_TEMPLATE``.

Every string that comes from the plan or the run (request names, threshold expressions,
error reasons, series names) is HTML-escaped. The output depends on the summary only: the
same summary gives the same bytes.
"""

from __future__ import annotations

import html
import importlib.util
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from redline.load._errors import RedlineLoadError

_PLOT_CONFIG = orjson.dumps({"displaylogo": False, "responsive": True}).decode()
_PLOT_HEIGHT = 320
_TOP_ERRORS = 3
_SERVER_CHARTS = 12
_SERVER_COLUMNS = ("last", "min", "max", "avg", "rate")
_LATENCY_COLUMNS = (("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99"))
_LATENCY_COLUMNS += (("p99.9", "p999"), ("max", "max"))
_SERVICE_COLUMNS = (("p95", "p95"), ("p99", "p99"))

# plotly's "plotly_white" template, cut to what line and bar charts on x/y axes use.
_AXIS = {
    "automargin": True,
    "gridcolor": "#EBF0F8",
    "linecolor": "#EBF0F8",
    "ticks": "",
    "title": {"standoff": 15},
    "zerolinecolor": "#EBF0F8",
    "zerolinewidth": 2,
}
_TEMPLATE = {
    "data": {"bar": [{"marker": {"line": {"color": "white", "width": 0.5}}}]},
    "layout": {
        "autotypenumbers": "strict",
        "colorway": [
            "#636efa",
            "#EF553B",
            "#00cc96",
            "#ab63fa",
            "#FFA15A",
            "#19d3f3",
            "#FF6692",
            "#B6E880",
            "#FF97FF",
            "#FECB52",
        ],
        "font": {"color": "#2a3f5f"},
        "hoverlabel": {"align": "left"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "title": {"x": 0.05},
        "xaxis": _AXIS,
        "yaxis": _AXIS,
    },
}

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
.aborted { background: #fdecea; border-left: 4px solid #c62828; padding: .5em 1em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .25em .6em; text-align: left;
         vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f5f5f5; }
tfoot td { font-weight: bold; }
code { font-size: 13px; }
.note { color: #666; }
"""


def write_html(
    summary: Mapping[str, Any],
    path: Path,
    *,
    title: str = "redline load",
    server_charts: int = _SERVER_CHARTS,
) -> None:
    """Write ``summary`` as one self-contained HTML page that opens without a network; at most
    ``server_charts`` scraped metric names get a chart."""
    if server_charts < 0:
        raise ValueError(f"server_charts must be 0 or more, not {server_charts}")
    Path(path).write_bytes(b"".join(_page(summary, title, server_charts)))


def write_junit(summary: Mapping[str, Any], path: Path, *, suite: str = "redline load") -> None:
    """Write ``summary``'s verdicts as JUnit XML: a test case per threshold, one for the
    generator (failed when it was saturated); a run a threshold stopped has the properties
    ``aborted_at_s`` and ``aborted_by`` (one per expression) and says so in ``system-out``."""
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
    aborted = summary.get("aborted")
    if aborted:
        # JUnit wants properties before the test cases and system-out after them.
        properties = ET.SubElement(testsuite, "properties")
        ET.SubElement(properties, "property", name="aborted_at_s", value=str(aborted.get("at_s")))
        for expression in aborted.get("by") or ():
            ET.SubElement(properties, "property", name="aborted_by", value=str(expression))
    testsuite.extend(cases)
    if aborted:
        ET.SubElement(testsuite, "system-out").text = _stopped(aborted)
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


def _page(summary: Mapping[str, Any], title: str, server_charts: int) -> list[bytes]:
    """The page in pieces to join: plotly.js stays bytes, as read, rather than 5 MB of text
    decoded and encoded again."""
    server = summary.get("server") or {}
    names = sorted({_metric_name(key) for key in server})
    figures = _figures(summary, names[:server_charts])
    sections = [
        _header(summary, title),
        _charts(figures, len(names) - server_charts),
        _requests_section(summary),
        _scenarios_section(summary.get("scenarios")),
        _thresholds_section(_thresholds(summary)),
        _server_section(summary.get("server_scrape"), server),
        _generator_section(summary.get("generator")),
        _verdicts_section(summary.get("verdicts")),
    ]
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n"
    )
    body = (
        "</head>\n<body>\n"
        + "\n".join(section for section in sections if section)
        + "\n</body>\n</html>\n"
    )
    plotly_js = [b"<script>", _plotly_js(), b"</script>\n"] if figures else []
    return [head.encode(), *plotly_js, body.encode()]


def _header(summary: Mapping[str, Any], title: str) -> str:
    thresholds = _thresholds(summary)
    passed = all(verdict.get("ok") for verdict in thresholds.values())
    verdict = "PASS" if passed else "FAIL"
    note = "" if thresholds else ' <span class="note">(no thresholds)</span>'
    requests = summary.get("requests") or {}
    stats = [("duration", f"{_number(summary.get('duration_s'))} s")]
    if requests.get("scheduled") is not None:
        stats.append(("scheduled", _number(requests["scheduled"])))
    stats += [
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
        f"{_aborted_banner(summary.get('aborted'))}"
        f'<dl class="stats">{items}</dl>\n'
        f"{_saturation_warning(summary.get('generator') or {})}</header>"
    )


def _aborted_banner(aborted: Mapping[str, Any] | None) -> str:
    if not aborted:
        return ""
    by = "; ".join(f"<code>{_esc(expression)}</code>" for expression in aborted.get("by") or ())
    return (
        f'<div class="aborted" id="aborted"><strong>{_esc(_stopped_at(aborted))} by:</strong> '
        f"{by or 'no reason given'}. The figures cover the run up to then.</div>\n"
    )


def _stopped(aborted: Mapping[str, Any]) -> str:
    """``Stopped at 12.0 s by: errors: rate < 0.01`` (expressions joined by ``; ``)."""
    by = "; ".join(str(expression) for expression in aborted.get("by") or ())
    return f"{_stopped_at(aborted)} by: {by or 'no reason given'}"


def _stopped_at(aborted: Mapping[str, Any]) -> str:
    at = aborted.get("at_s")
    return f"Stopped at {at:.1f} s" if isinstance(at, int | float) else "Stopped early"


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


def _scenarios_section(scenarios: Mapping[str, Mapping[str, Any]] | None) -> str:
    if not scenarios:
        return ""
    keys = ("scheduled", "dropped", "late", "max_late_ms")
    rows = "\n".join(
        f"<tr><td>{_esc(name)}</td>"
        + "".join(f'<td class="n">{_number(stats.get(key))}</td>' for key in keys)
        + "</tr>"
        for name, stats in scenarios.items()
    )
    return (
        '<section id="scenarios">\n<h2>Scenarios</h2>\n<table>\n'
        "<thead><tr><th>Scenario</th><th>Scheduled</th><th>Dropped</th><th>Late</th>"
        "<th>Max late (ms)</th></tr></thead>\n"
        f"<tbody>\n{rows}\n</tbody>\n</table>\n</section>"
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


def _server_section(scrape: Mapping[str, Any] | None, server: Mapping[str, Any]) -> str:
    """How scraping went, and every series' figures (the charts show only some)."""
    if not scrape and not server:
        return ""
    parts = ['<section id="server">\n<h2>Server metrics</h2>']
    if scrape:
        errors = scrape.get("errors") or 0
        if errors:
            parts.append(
                f'<div class="warning"><strong>{_number(errors)} of '
                f"{_number(scrape.get('scrapes'))} scrapes failed</strong>; the last: "
                f"{_esc(scrape.get('last_error') or 'no reason given')}</div>"
            )
        if scrape.get("dropped_series"):
            parts.append(
                f'<p class="note">{_number(scrape["dropped_series"])} series beyond the '
                "limit were not kept.</p>"
            )
        parts.append(_pairs(scrape))
    if server:
        head = "".join(f"<th>{name}</th>" for name in _SERVER_COLUMNS)
        rows = "\n".join(
            f"<tr><td><code>{_esc(key)}</code></td>"
            + "".join(
                f'<td class="n">{_number(_stat(series, name))}</td>' for name in _SERVER_COLUMNS
            )
            + "</tr>"
            for key, series in sorted(server.items())
        )
        parts.append(
            f'<table class="series">\n<thead><tr><th>Series</th>{head}</tr></thead>\n'
            f"<tbody>\n{rows}\n</tbody>\n</table>"
        )
    return "\n".join(parts) + "\n</section>"


def _stat(series: Any, name: str) -> Any:
    if isinstance(series, Mapping):
        return series.get(name)
    return series if name == "last" and isinstance(series, int | float) else None


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


def _figures(summary: Mapping[str, Any], server_names: list[str]) -> list[dict[str, Any]]:
    """The charts of the page: the run's time series, then one per server metric name."""
    figures = []
    rows = summary.get("timeseries") or []
    if rows:
        figures += [_latency(rows), _throughput(rows), _failures(rows)]
        load = _load(rows)
        if load is not None:
            figures.append(load)
    server = summary.get("server") or {}
    for name in server_names:
        figures.append(
            _server_metric(name, {k: v for k, v in server.items() if _metric_name(k) == name})
        )
    return figures


def _charts(figures: list[dict[str, Any]], left_out: int) -> str:
    if not figures:
        return ""
    note = (
        f'\n<p class="note">{left_out} more server metric {"name" if left_out == 1 else "names"}'
        " not charted; every series is in the server metrics table.</p>"
        if left_out > 0
        else ""
    )
    # Fixed div ids keep the page the same for the same summary.
    divs = [
        f'<div id="redline-chart-{index}" class="plotly-graph-div" '
        f'style="height:{_PLOT_HEIGHT}px; width:100%;"></div>\n'
        f'<script>Plotly.newPlot("redline-chart-{index}", {_json(figure["data"])}, '
        f"{_json(figure['layout'])}, {_PLOT_CONFIG});</script>"
        for index, figure in enumerate(figures)
    ]
    return '<section id="charts">\n<h2>Over time</h2>\n' + "\n".join(divs) + note + "\n</section>"


def _json(value: Any) -> str:
    """``value`` as JSON to put inside ``<script>``: with ``<`` escaped, no string can end the
    script (``</script>``) or change how the browser reads it (``<!--``)."""
    return orjson.dumps(value).replace(b"<", b"\\u003c").decode()


def _plotly_js() -> bytes:
    """The minified plotly.js the plotly package bundles, found without importing plotly
    (its import alone takes about 50 ms of CPU)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise RedlineLoadError(
            "the HTML report inlines plotly.js from the plotly package, which is not "
            "installed; install it with: pip install plotly"
        )
    return (Path(spec.origin).parent / "package_data" / "plotly.min.js").read_bytes()


def _figure(
    title: str, y_title: str, traces: Iterable[dict[str, Any]], **layout: Any
) -> dict[str, Any]:
    defaults = {
        "template": _TEMPLATE,
        "title": {"text": title},
        "height": _PLOT_HEIGHT,
        "margin": {"l": 60, "r": 30, "t": 50, "b": 45},
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
        "xaxis": {"title": {"text": "seconds since start"}},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
    }
    return {"data": list(traces), "layout": defaults | layout}


def _line(x: list[Any], y: list[Any], name: str, **trace: Any) -> dict[str, Any]:
    return {"type": "scatter", "x": x, "y": y, "name": name, "mode": "lines", **trace}


def _column(rows: list[Mapping[str, Any]], key: str) -> list[Any]:
    return [row.get(key) for row in rows]


def _latency(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    t = _column(rows, "t")
    traces = [_line(t, _column(rows, key), key) for key in ("p50", "p95", "p99")]
    return _figure("Latency", "ms", traces)


def _throughput(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    trace = _line(_column(rows, "t"), _column(rows, "rps"), "completed")
    return _figure("Throughput", "requests/s", [trace], showlegend=False)


def _failures(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    t = _column(rows, "t")
    traces = [
        {"type": "bar", "x": t, "y": _column(rows, key), "name": key}
        for key in ("errors", "dropped", "late")
    ]
    return _figure("Errors, dropped and late arrivals", "per second", traces, barmode="group")


def _load(rows: list[Mapping[str, Any]]) -> dict[str, Any] | None:
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
        traces.append(_line(t, vus, "VUs", line={"shape": "hv"}))
    if has_rate:
        # Rates and users are different units: the rate gets its own axis when both show.
        axis = "y2" if has_vus else "y"
        traces.append(_line(t, rate, "target rate (/s)", yaxis=axis))
        if has_vus:
            layout["yaxis2"] = {
                "title": {"text": "arrivals/s"},
                "overlaying": "y",
                "side": "right",
                "rangemode": "tozero",
            }
    y_title = "VUs" if has_vus else "arrivals/s"
    return _figure("Load", y_title, traces, **layout)


def _metric_name(key: str) -> str:
    return key.partition("{")[0]


def _server_metric(name: str, series: Mapping[str, Any]) -> dict[str, Any]:
    """One chart for a metric name: a line per label set, named by its whole series key."""
    traces = []
    for key, one in sorted(series.items()):
        values = one.get("values", []) if isinstance(one, Mapping) else []
        points = [point for point in values if isinstance(point, list | tuple) and len(point) == 2]
        # plotly reads a few tags (<br>, <b>...) and entities in its labels, but not &quot;:
        # escaping <, > and & only shows a series such as le="<0.5" as written.
        traces.append(
            _line(
                [point[0] for point in points],
                [point[1] for point in points],
                html.escape(key, quote=False),
            )
        )
    return _figure(html.escape(name, quote=False), "value", traces, showlegend=len(traces) > 1)


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
