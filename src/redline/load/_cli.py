"""``redline load run``: run a plan and report; exit codes tell CI what happened.

The command's options and help text are declared for Typer in ``redline.cli``; what the
command does is here, in ``run_plan``, and so is ``run_fast``, which starts a run from the
console entry point without Typer. Typer converts options with pydantic: typer, its click and
pydantic cost a run about 0.15 s of CPU before the first request, and the load benchmark
charges the whole process to the tool. ``parse_run_args`` takes only arguments it is sure of
(known long options, values in their plain form, one plan file); anything else (``--help``,
an unknown or repeated option, ``--vus 1e3``, no plan, shell completion) goes to Typer, which
gives the help and words every usage error. Both paths end in ``run_plan``, so a run, its
output and its exit code are the same either way; ``tests/load/test_cli_fastpath.py`` holds
the parser to Typer's conversions. Only a crash (a bug) looks different: Python's own
traceback instead of Typer's, with the same exit code, 1.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from redline.load._errors import RedlineLoadError
from redline.load._http import Target
from redline.load._runner import Progress, run

if TYPE_CHECKING:
    from rich.live import Live

EXIT_PASSED = 0
EXIT_FAILED = 1  # the generator itself failed (a worker died): no result
EXIT_USAGE = 2
EXIT_SATURATED = 98
EXIT_THRESHOLDS = 99
EXIT_INTERRUPTED = 130  # Ctrl-C, as click ends a command it interrupts


class NoTargetError(RedlineLoadError):
    """Neither --target nor the plan names a target: a usage error, which Typer words."""


@dataclass(frozen=True)
class RunOptions:
    """The arguments of ``redline load run``, with the defaults its Typer declaration has."""

    plan_file: Path
    target: str | None = None
    preset: str | None = None
    vus: int | None = None
    rate: float | None = None
    duration: str | None = None
    workers: int = 1
    metrics_url: str | None = None
    timeout: float = 10.0
    progress: bool | None = None
    out: Path = Path("redline-load")


def _count(text: str) -> int | None:
    # Digits only, and few enough for any int parser to agree: "1_000" or "+5" go to Typer.
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 15 else None


def _at_least_one(text: str) -> int | None:
    count = _count(text)
    return count if count is not None and count >= 1 else None  # Typer words the range error


def _decimal(text: str) -> float | None:
    return float(text) if re.fullmatch(r"[0-9]{1,15}(?:\.[0-9]{1,15})?", text) else None


_VALUES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--target": ("target", str),
    "--preset": ("preset", str),
    "--vus": ("vus", _count),
    "--rate": ("rate", _decimal),
    "--duration": ("duration", str),
    "--workers": ("workers", _at_least_one),
    "--metrics-url": ("metrics_url", str),
    "--timeout": ("timeout", _decimal),
    "--out": ("out", Path),
}
_FLAGS = {"--progress": ("progress", True), "--no-progress": ("progress", False)}


def parse_run_args(args: Sequence[str]) -> RunOptions | None:
    """The options of ``redline load run ARGS``, or None when Typer is to parse ARGS."""
    if any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ):
        return None  # a shell asks click for completions
    given: dict[str, Any] = {}
    plan_file: Path | None = None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-"):
            if plan_file is not None or not arg:
                return None
            plan_file = Path(arg)
            continue
        name, equals, attached = arg.partition("=")
        if name in _FLAGS and not equals:
            field, value = _FLAGS[name]
        elif name in _VALUES:
            if equals:
                text = attached
            elif rest and not rest[0].startswith("-"):
                text = rest.pop(0)
            else:
                return None
            field, convert = _VALUES[name]
            value = convert(text)
            if value is None:
                return None
        else:
            return None  # --help, "--", "-", a short or unknown option
        if field in given:
            return None
        given[field] = value
    if plan_file is None:
        return None
    return replace(RunOptions(plan_file), **given)


def run_fast(args: Sequence[str]) -> int | None:
    """Run ``redline load run ARGS`` without Typer and return its exit code, or None when
    Typer is to take ARGS. End as click would on Ctrl-C (130) and on a closed pipe (1)."""
    options = parse_run_args(args)
    if options is None:
        return None
    try:
        return run_plan(options)
    except NoTargetError:
        return None  # Typer loads the plan again, to show this with the command's usage
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        # Nobody reads any more (`| head`): silence the flush at exit, as click does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.dup2(devnull, sys.stderr.fileno())
        return EXIT_FAILED


def run_plan(options: RunOptions) -> int:
    """Run the plan against its target, write the outputs and return the exit code: 0 pass,
    99 thresholds failed, 98 generator saturated, 2 bad plan or usage, 1 the generator
    failed. Raise NoTargetError, before any output, when there is no target."""
    from redline.load._workers import PlanSpec, WorkerError, loop_factory, quiet_gc, run_workers

    console = Console()
    plan_file, metrics_url = options.plan_file, options.metrics_url
    spec = PlanSpec(plan_file, options.preset, options.vus, options.rate, options.duration)
    try:
        plan = spec.load()
        url = options.target or plan.target
        if not url:
            raise NoTargetError("no target: pass --target URL or set target in the plan")
        Target.parse(url)
        if metrics_url:
            Target.parse(metrics_url)
    except NoTargetError:
        raise
    except (RedlineLoadError, ValueError) as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        return EXIT_USAGE
    workers = options.workers
    shape = f"{workers} workers" if workers > 1 else "1 process"
    console.print(
        f"running {escape(str(plan_file))} against {escape(url)} for "
        f"{plan.total_duration:.1f} s ({shape})"
    )
    quiet_gc()
    progress = options.progress
    live = _LiveProgress(console, enabled=console.is_terminal if progress is None else progress)
    try:
        with live, asyncio.Runner(loop_factory=loop_factory()) as runner:
            if workers > 1:
                result = runner.run(
                    run_workers(
                        spec,
                        url,
                        workers,
                        timeout=options.timeout,
                        on_tick=live.update,
                        metrics_url=metrics_url,
                    )
                )
            else:
                result = runner.run(
                    run(
                        plan,
                        url,
                        timeout=options.timeout,
                        on_tick=live.update,
                        metrics_url=metrics_url,
                    )
                )
    except WorkerError as exc:
        console.print(f"[red]the run failed: {escape(str(exc))}[/]")
        return EXIT_FAILED
    except RedlineLoadError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        return EXIT_USAGE
    out = options.out
    _write_outputs(result.summary, out, title=f"redline load: {plan_file.name}")
    _print(console, result.summary)
    console.print(f"wrote {escape(str(out))}/summary.json, report.html, junit.xml")
    if result.saturated:
        for reason in result.summary["generator"]["reasons"]:
            console.print(f"[yellow]generator saturated: {escape(reason)}[/]")
        return EXIT_SATURATED
    return EXIT_PASSED if result.passed else EXIT_THRESHOLDS


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
            from rich.live import Live

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
            from rich.text import Text

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
