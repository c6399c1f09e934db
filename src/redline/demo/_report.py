"""What ``redline demo`` leaves behind: the terminal table, ``summary.json`` and ``report.html``.

All three are written from one summary dict (``build_summary``), so they cannot disagree:

- ``steps``: one entry per configuration run, in order, with its settings, its figures
  (requests/s, read requests/s, latency p50/p95/p99, error rate, cache hit ratio, database time
  per request and query p95, index hit ratio) and the load run's own per-second time series and
  per-request-name table;
- ``targets``: the seeds' target table, each row with the measured value and pass, fail or
  skipped (``redline.demo._targets``);
- ``environment``: machine, versions, the servers that were started, the scale and durations.

The HTML page is self-contained like the load engine's report (plotly.js inlined from the
plotly package; it opens offline): the verdict, the target table, the comparison table, bar
charts of throughput and latency per configuration, and each configuration's latency and
throughput over time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from redline.load._report import _CSS, _charts, _esc, _figure, _line, _number, _plotly_js

# (key in a step's figures, column heading, how to show it)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("rps", "req/s", "n"),
    ("read_rps", "reads/s", "n"),
    ("gain", "gain", "x"),
    ("p50_ms", "p50 ms", "n"),
    ("p95_ms", "p95 ms", "n"),
    ("p99_ms", "p99 ms", "n"),
    ("error_rate", "errors", "%"),
    ("cache_hit_ratio", "cache hits", "%"),
    ("reads_from_cache", "reads from cache", "%"),
    ("app_cpu_ms_per_request", "app CPU ms/req", "n"),
    ("db_ms_per_request", "DB ms/req", "n"),
    ("db_query_p95_ms", "query p95", "n"),
    ("index_hit_ratio", "index hits", "%"),
)
TABLE_WIDTH = 175  # wide enough for every column; narrower terminals get it as it is


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "%":
        return f"{value * 100:.3g} %" if value < 0.9995 or value == 1 else f"{value * 100:.2f} %"
    if kind == "x":
        return f"{value:.3g}x"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if isinstance(value, float) else f"{value:,}"


def print_table(summary: Mapping[str, Any], console: Console) -> None:
    """The comparison table and the target table, for the terminal."""
    table = Table(
        title="What each layer buys (gain: read requests/s over the baseline's)",
        title_justify="left",
    )
    table.add_column("configuration", no_wrap=True)
    for _, heading, _ in COLUMNS:
        table.add_column(heading, justify="right")
    for step in summary["steps"]:
        figures = step["figures"]
        table.add_row(step["title"], *(_cell(figures.get(k), kind) for k, _, kind in COLUMNS))
    console.print(table, width=max(console.width, TABLE_WIDTH))
    targets = Table(title="Targets (full configuration)", title_justify="left")
    for heading in ("target", "expected", "measured", "step", "verdict"):
        targets.add_column(heading, justify="right" if heading == "measured" else "left")
    styles = {"pass": "green", "fail": "bold red", "skipped": "yellow"}
    for row in summary["targets"]:
        verdict = f"{row['status']}: {row['why']}" if row.get("why") else row["status"]
        targets.add_row(
            row["target"],
            row["expected"],
            row["shown"],
            row["step"],
            f"[{styles[row['status']]}]{verdict}[/]",
        )
    console.print(targets, width=max(console.width, TABLE_WIDTH))


def write_json(summary: Mapping[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def write_html(summary: Mapping[str, Any], path: Path) -> None:
    """One self-contained page: verdict, targets, comparison, charts."""
    steps = summary["steps"]
    figures: list[dict[str, Any]] = []
    titles = [step["title"] for step in steps]
    if steps:
        figures.append(
            _figure(
                "Throughput per configuration",
                "requests / s",
                [
                    _bar(titles, [s["figures"].get("rps") for s in steps], "all requests"),
                    _bar(titles, [s["figures"].get("read_rps") for s in steps], "reads"),
                ],
                xaxis={"title": {"text": ""}},
                hovermode="closest",
                barmode="group",
            )
        )
        figures.append(
            _figure(
                "Latency per configuration",
                "ms",
                [
                    _bar(titles, [s["figures"].get(key) for s in steps], label)
                    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))
                ],
                xaxis={"title": {"text": ""}},
                yaxis={"title": {"text": "ms"}, "type": "log"},
                hovermode="closest",
                barmode="group",
            )
        )
        figures.append(
            _figure(
                "p95 latency over time",
                "ms",
                [_series(step, "p95") for step in steps],
            )
        )
        figures.append(
            _figure(
                "Throughput over time",
                "requests / s",
                [_series(step, "rps") for step in steps],
            )
        )
    verdict = summary["verdict"]
    page = [
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>redline demo: {_esc(verdict.upper())}</title><style>{_CSS}</style><script>",
    ]
    head = "".join(page).encode()
    body = "\n".join(
        [
            "</script></head><body>",
            "<h1>redline demo: what each layer buys "
            f'<span class="verdict {_esc(verdict)}">{_esc(verdict.upper())}</span></h1>',
            _environment(summary["environment"]),
            _targets_table(summary["targets"]),
            _steps_table(steps),
            _charts(figures, 0),
            _requests_tables(steps),
            "</body></html>\n",
        ]
    ).encode()
    path.write_bytes(head + _plotly_js() + body)


def _bar(x: Sequence[str], y: Sequence[Any], name: str) -> dict[str, Any]:
    return {"type": "bar", "x": list(x), "y": list(y), "name": name}


def _series(step: Mapping[str, Any], key: str) -> dict[str, Any]:
    rows = step.get("timeseries") or []
    return _line([r.get("t") for r in rows], [r.get(key) for r in rows], step["title"])


def _environment(env: Mapping[str, Any]) -> str:
    items = "".join(
        f"<div><dt>{_esc(key)}</dt><dd>{_esc(value)}</dd></div>"
        for key, value in env.items()
        if not isinstance(value, list | dict)
    )
    started = "".join(f"<li>{_esc(line)}</li>" for line in env.get("started", []))
    started = f"<p>Started for this run:</p><ul>{started}</ul>" if started else ""
    return f'<dl class="stats">{items}</dl>{started}'


def _targets_table(rows: Sequence[Mapping[str, Any]]) -> str:
    body = "".join(
        "<tr>"
        f"<td>{_esc(row['target'])}</td><td>{_esc(row['expected'])}</td>"
        f'<td class="n">{_esc(row["shown"])}</td><td>{_esc(row["step"])}</td>'
        f'<td class="{"pass" if row["status"] == "pass" else "fail"}">'
        f"{_esc(row['status'])}{': ' + _esc(row['why']) if row.get('why') else ''}</td>"
        "</tr>"
        for row in rows
    )
    return (
        '<section id="targets"><h2>Targets</h2><table><thead><tr><th>target</th>'
        "<th>expected</th><th>measured</th><th>step</th><th>verdict</th></tr></thead>"
        f"<tbody>{body}</tbody></table></section>"
    )


def _steps_table(steps: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{_esc(heading)}</th>" for _, heading, _ in COLUMNS)
    rows = "".join(
        f"<tr><td><b>{_esc(step['title'])}</b><br><span class=note>{_esc(step['what'])}</span>"
        "</td>"
        + "".join(
            f'<td class="n">{_esc(_cell(step["figures"].get(key), kind))}</td>'
            for key, _, kind in COLUMNS
        )
        + "</tr>"
        for step in steps
    )
    return (
        '<section id="steps"><h2>Configurations</h2><table><thead><tr><th>configuration</th>'
        f"{head}</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _requests_tables(steps: Sequence[Mapping[str, Any]]) -> str:
    parts = ['<section id="requests"><h2>Requests by name</h2>']
    for step in steps:
        rows = "".join(
            f"<tr><td>{_esc(name)}</td><td class=n>{_number(stats.get('requests'))}</td>"
            f"<td class=n>{_number(stats.get('failed'))}</td>"
            f"<td class=n>{_number(stats.get('rps'))}</td>"
            f"<td class=n>{_number(stats.get('p50_ms'))}</td>"
            f"<td class=n>{_number(stats.get('p95_ms'))}</td>"
            f"<td class=n>{_number(stats.get('p99_ms'))}</td></tr>"
            for name, stats in (step.get("endpoints") or {}).items()
        )
        parts.append(
            f"<h3>{_esc(step['title'])}</h3><table><thead><tr><th>request</th><th>requests</th>"
            "<th>failed</th><th>req/s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )
    parts.append("</section>")
    return "\n".join(parts)
