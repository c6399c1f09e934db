"""``redline load``: run a plan and report; exit codes tell CI what happened."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from redline.load._errors import RedlineLoadError
from redline.load._plan import (
    ConstantArrivalRate,
    ConstantVUs,
    Plan,
    apply_preset,
    load_plan,
    parse_duration,
)

EXIT_PASSED = 0
EXIT_USAGE = 2
EXIT_SATURATED = 98
EXIT_THRESHOLDS = 99

app = typer.Typer(help="Run load tests whose numbers can be trusted.", no_args_is_help=True)


@app.command("run")
def run_command(
    plan_file: Annotated[Path, typer.Argument(help="A YAML or Python plan.")],
    target: Annotated[str | None, typer.Option(help="Base URL (overrides the plan's).")] = None,
    preset: Annotated[
        str | None, typer.Option(help="load, stress, spike, soak or breakpoint.")
    ] = None,
    vus: Annotated[int | None, typer.Option(help="Users of constant-vus scenarios.")] = None,
    rate: Annotated[
        float | None, typer.Option(help="Arrivals per second of constant-arrival-rate ones.")
    ] = None,
    duration: Annotated[str | None, typer.Option(help="Duration of constant scenarios.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for summary.json.")] = Path("redline-load"),
) -> None:
    """Run PLAN against its target; exit 0 pass, 99 thresholds failed, 98 generator saturated,
    2 bad plan or usage."""
    from redline.load._runner import run

    console = Console()
    try:
        plan = _overridden(load_plan(plan_file), vus, rate, duration)
        if preset:
            plan = apply_preset(plan, preset)
        url = target or plan.target
        if not url:
            raise typer.BadParameter("no target: pass --target URL or set target in the plan")
    except (RedlineLoadError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_USAGE) from None
    console.print(f"running {plan_file} against {url} for {plan.total_duration:.1f} s")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        result = runner.run(run(plan, url))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_bytes(
        orjson.dumps(result.summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    _print(console, result.summary)
    if result.saturated:
        for reason in result.summary["generator"]["reasons"]:
            console.print(f"[yellow]generator saturated: {reason}[/]")
        raise typer.Exit(EXIT_SATURATED)
    raise typer.Exit(EXIT_PASSED if result.passed else EXIT_THRESHOLDS)


def _loop_factory() -> Any:
    """uvloop when installed: its loop costs less CPU per request than asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - e.g. on Windows
        return None
    return uvloop.new_event_loop


def _overridden(plan: Plan, vus: int | None, rate: float | None, duration: str | None) -> Plan:
    seconds = parse_duration(duration) if duration is not None else None
    scenarios = []
    for scenario in plan.scenarios:
        executor: Any = scenario.executor
        changes: dict[str, Any] = {}
        if isinstance(executor, ConstantVUs) and vus is not None:
            changes["vus"] = vus
        if isinstance(executor, ConstantArrivalRate) and rate is not None:
            changes["rate"] = rate * executor.time_unit
        if isinstance(executor, ConstantVUs | ConstantArrivalRate) and seconds is not None:
            changes["duration"] = seconds
        if changes:
            scenario = dataclasses.replace(
                scenario, executor=dataclasses.replace(executor, **changes)
            )
        scenarios.append(scenario)
    return dataclasses.replace(plan, scenarios=tuple(scenarios))


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
