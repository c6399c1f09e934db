"""``redline load``: run a plan and report; exit codes tell CI what happened."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from redline.load._errors import RedlineLoadError
from redline.load._http import Target
from redline.load._runner import Progress, run

EXIT_PASSED = 0
EXIT_FAILED = 1  # the generator itself failed (a worker died): no result
EXIT_USAGE = 2
EXIT_SATURATED = 98
EXIT_THRESHOLDS = 99

app = typer.Typer(help="Run load tests whose numbers can be trusted.", no_args_is_help=True)


@app.command("run")
def run_command(
    plan_file: Annotated[Path, typer.Argument(help="A YAML or Python plan.")],
    target: Annotated[str | None, typer.Option(help="Base URL (overrides the plan's).")] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="load, stress, spike, soak or breakpoint, with options as in "
            "spike:factor=20,hold=5s."
        ),
    ] = None,
    vus: Annotated[int | None, typer.Option(help="Users of constant-vus scenarios.")] = None,
    rate: Annotated[
        float | None, typer.Option(help="Arrivals per second of constant-arrival-rate ones.")
    ] = None,
    duration: Annotated[str | None, typer.Option(help="Duration of constant scenarios.")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes to spread the load over (one core each).")
    ] = 1,
    metrics_url: Annotated[
        str | None,
        typer.Option(help="Prometheus text endpoint of the target, scraped once a second."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds a request may take.")] = 10.0,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Live progress (default: when on a terminal)."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for summary.json, report.html and junit.xml.")
    ] = Path("redline-load"),
) -> None:
    """Run PLAN against its target; exit 0 pass, 99 thresholds failed, 98 generator saturated,
    2 bad plan or usage, 1 the generator failed."""
    from redline.load._workers import PlanSpec, WorkerError, loop_factory, quiet_gc, run_workers

    console = Console()
    spec = PlanSpec(plan_file, preset, vus, rate, duration)
    try:
        plan = spec.load()
        url = target or plan.target
        if not url:
            raise typer.BadParameter("no target: pass --target URL or set target in the plan")
        Target.parse(url)
        if metrics_url:
            Target.parse(metrics_url)
    except (RedlineLoadError, ValueError) as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(EXIT_USAGE) from None
    shape = f"{workers} workers" if workers > 1 else "1 process"
    console.print(
        f"running {escape(str(plan_file))} against {escape(url)} for "
        f"{plan.total_duration:.1f} s ({shape})"
    )
    quiet_gc()
    live = _LiveProgress(console, enabled=console.is_terminal if progress is None else progress)
    try:
        with live, asyncio.Runner(loop_factory=loop_factory()) as runner:
            if workers > 1:
                result = runner.run(
                    run_workers(
                        spec,
                        url,
                        workers,
                        timeout=timeout,
                        on_tick=live.update,
                        metrics_url=metrics_url,
                    )
                )
            else:
                result = runner.run(
                    run(
                        plan,
                        url,
                        timeout=timeout,
                        on_tick=live.update,
                        metrics_url=metrics_url,
                    )
                )
    except WorkerError as exc:
        console.print(f"[red]the run failed: {escape(str(exc))}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    except RedlineLoadError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(EXIT_USAGE) from None
    _write_outputs(result.summary, out, title=f"redline load: {plan_file.name}")
    _print(console, result.summary)
    console.print(f"wrote {escape(str(out))}/summary.json, report.html, junit.xml")
    if result.saturated:
        for reason in result.summary["generator"]["reasons"]:
            console.print(f"[yellow]generator saturated: {escape(reason)}[/]")
        raise typer.Exit(EXIT_SATURATED)
    raise typer.Exit(EXIT_PASSED if result.passed else EXIT_THRESHOLDS)


def _write_outputs(summary: dict[str, Any], out: Path, *, title: str) -> None:
    from redline.load._report import write_html, write_junit

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_bytes(
        orjson.dumps(
            summary,
            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
        )
    )
    write_html(summary, out / "report.html", title=title)
    write_junit(summary, out / "junit.xml")


class _LiveProgress:
    """Elapsed/remaining, users or arrival rate, rps, p50/p95/p99 and errors, redrawn once
    a second (or one line every 10 s when not on a terminal and asked for)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.live: Live | None = None
        self._last_line = -10.0

    def __enter__(self) -> _LiveProgress:
        if self.enabled and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, progress: Progress) -> None:
        if not self.enabled:
            return
        now = progress.recorder.live()
        remaining = max(progress.duration_s - progress.elapsed_s, 0.0)
        load = (
            f"{progress.rate:.0f}/s arrivals"
            if progress.rate is not None
            else f"{progress.vus} VUs"
        )
        text = (
            f"{progress.elapsed_s:6.1f} s  ({remaining:.0f} s left)  {load}  "
            f"{now['rps']:.0f} req/s  p50 {now['p50']:.2f}  p95 {now['p95']:.2f}  "
            f"p99 {now['p99']:.2f} ms  requests {now['requests']}  "
            f"errors {now['failed']}  dropped {now['dropped']}"
        )
        if self.live is not None:
            self.live.update(Text(text))
        elif progress.elapsed_s - self._last_line >= 10:
            self._last_line = progress.elapsed_s
            self.console.print(text)


def _print(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="redline load")
    for column in ("request", "count", "failed", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "request" else "right")
    rows = [("all", summary), *summary.get("endpoints", {}).items()]
    for name, data in rows:
        latency = data["latency_ms"]
        table.add_row(
            name,
            str(data["requests"]["total"]),
            str(data["requests"]["failed"]),
            *(f"{latency[p]:.2f}" for p in ("p50", "p95", "p99", "max")),
        )
    console.print(table)
    for expression, verdict in summary.get("thresholds", {}).items():
        mark = "[green]PASS[/]" if verdict["ok"] else "[red]FAIL[/]"
        console.print(f"{mark} {expression} (value {verdict['value']})")
