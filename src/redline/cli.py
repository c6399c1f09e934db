"""The `redline` command line.

``redline.__main__.main`` starts ``redline load run`` without importing this module (typer)
when it can; see ``redline.load._cli``. ``app()``, as a script calls it, does the same before
it builds its commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from redline import __version__
from redline.load._cli import NoTargetError, RunOptions, run_fast, run_plan


class _Redline(typer.Typer):
    """The app, which hands ``redline load run`` to ``run_fast`` first when called."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and sys.argv[1:3] == ["load", "run"]:
            code = run_fast(sys.argv[3:])
            if code is not None:
                sys.exit(code)
        return super().__call__(*args, **kwargs)


app = _Redline(
    name="redline",
    help="Make Python web backends fast, and prove it.",
    no_args_is_help=True,
)
load_app = typer.Typer(help="Run load tests whose numbers can be trusted.", no_args_is_help=True)
app.add_typer(load_app, name="load")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"redline {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Make Python web backends fast, and prove it."""


@app.command()
def demo(
    scale: Annotated[
        float, typer.Option(help="Seed data size: 1 = 50 funds, 20,000 calls, 20,000 runs.")
    ] = 1.0,
    duration: Annotated[float, typer.Option(help="Seconds of measured load per step.")] = 15.0,
    warmup: Annotated[float, typer.Option(help="Seconds of unmeasured load before each.")] = 10.0,
    vus: Annotated[int, typer.Option(help="Users of the throughput steps (no think time).")] = 32,
    users: Annotated[int, typer.Option(help="Users of the concurrent-users step.")] = 1000,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="App worker processes; default: one per core, at most 4."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only this step (repeat for several): baseline, indexes, matview, l1, "
            "l2, http, users."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for summary.json, report.html and the app logs.")
    ] = Path("redline-demo"),
    keep: Annotated[
        bool,
        typer.Option(help="Leave the app and servers up afterwards, until Ctrl-C, and say where."),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="DATABASE_URL",
            help="A PostgreSQL database the demo may own (it migrates and reseeds it); "
            "default: a throwaway server.",
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(envvar="REDIS_URL", help="A Redis to use; default: a throwaway server."),
    ] = None,
) -> None:
    """Run the reference app through each layer and measure what each buys, against the
    targets both platforms wrote down. Exit 1 when a target of the full configuration fails."""
    try:
        from redline.demo._runner import Options, run
    except ImportError as error:
        typer.echo(f"redline demo needs the demo extra ({error}): pip install 'redline[demo]'")
        raise typer.Exit(2) from None
    options = Options(
        scale=scale,
        duration=duration,
        warmup=warmup,
        vus=vus,
        users=users,
        **({"workers": workers} if workers is not None else {}),
        only=tuple(only or ()),
        out=out,
        keep=keep,
        database_url=database_url,
        redis_url=redis_url,
    )
    raise typer.Exit(run(options))


@app.command("cache-tour")
def cache_tour(
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="REDIS_URL",
            help="Use this Redis instead of starting a throwaway one.",
        ),
    ] = None,
) -> None:
    """Tour the two-tier cache against a real Redis, measuring each claim."""
    from redline._cache_tour import run

    raise typer.Exit(run(redis_url))


_DASHBOARD_HELP = (
    "Serve the live dashboard of an app's workers, read from their snapshot directory, "
    "at http://HOST:PORT/.\n\n"
    "Each worker of the app runs monitor.SnapshotDirectory().start() on the same directory "
    "(--dir or $REDLINE_MONITOR_DIR), so this process sees what all of them recorded, merged: "
    "requests, latency by route, errors, cache, database, memory, event-loop lag and Web "
    "Vitals. It only reads: it records nothing, and its own empty snapshot file is removed "
    "when it stops.\n\n"
    "The slow-query log lives in each app process and is not in the snapshot files; to see "
    'it, mount the dashboard in the app instead: app.mount("/_redline", '
    "monitor.DashboardApp()). Scraping a /metrics URL is not offered: the Prometheus text "
    "has no HDR counts, so window percentiles would be interpolated from buckets."
)


@app.command(help=_DASHBOARD_HELP)
def dashboard(
    directory: Annotated[
        str | None,
        typer.Option(
            "--dir",
            envvar="REDLINE_MONITOR_DIR",
            help="The snapshot directory the app's workers write to (their SnapshotDirectory).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8050,
    interval: Annotated[float, typer.Option(help="Seconds between two snapshots.")] = 1.0,
    window: Annotated[
        float, typer.Option(help="Seconds that rates and percentiles are computed over.")
    ] = 10.0,
    title: Annotated[str, typer.Option(help="The page's heading.")] = "redline",
) -> None:
    """Serve the live dashboard of an app's workers, read from their snapshot directory."""
    try:
        import uvicorn

        from redline.monitor import DashboardApp, Registry, SnapshotDirectory, SnapshotError
    except ImportError as error:
        typer.echo(f"redline dashboard needs the web extra ({error}): pip install 'redline[web]'")
        raise typer.Exit(2) from None
    try:
        # An empty registry: this process only reads; each reading writes its (empty) file.
        shared = SnapshotDirectory(directory, registry=Registry())
        board = DashboardApp(shared, interval=interval, window=window, title=title)
    except (SnapshotError, ValueError) as error:
        typer.echo(f"redline dashboard: {error}", err=True)
        raise typer.Exit(2) from None

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn waits for open responses before it shuts down: end the streams first.
            board.close()
            await super().shutdown(sockets)

    if not any(shared.path.glob("*.msgpack")):
        typer.echo(
            f"no worker snapshot in {shared.path} yet: the panels fill in once the app's "
            "workers run SnapshotDirectory().start() on it"
        )
    typer.echo(f"redline dashboard of {shared.path} on http://{host}:{port}/")
    try:
        Server(uvicorn.Config(board, host=host, port=port, log_level="warning")).run()
    except KeyboardInterrupt:
        pass  # uvicorn raises Ctrl+C again once it has shut down, as its own CLI ignores
    finally:
        shared.file.unlink(missing_ok=True)


@load_app.command("run")
def load_run(
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
    options = RunOptions(
        plan_file, target, preset, vus, rate, duration, workers, metrics_url, timeout, progress, out
    )
    try:
        code = run_plan(options)
    except NoTargetError as exc:
        raise typer.BadParameter(str(exc)) from None
    raise typer.Exit(code)
