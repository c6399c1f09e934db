"""``redline demo``: run the reference application through each layer and measure what it buys.

One run, on one set of data:

1. services: the given ``DATABASE_URL`` / ``REDIS_URL``, or throwaway servers (``_stack``);
2. schema at its first revision (tables, primary and foreign keys only) and seed data;
3. the configurations, one after another, each with a fresh app (uvicorn on uvloop and
   httptools, ``Options.workers`` worker processes, one per core by default, sharing the
   listening socket, Redis and one merged ``/metrics``) started with that configuration's
   settings:
   ``baseline`` (no secondary indexes, live aggregates, no cache), ``indexes`` (the index
   migration, built CONCURRENTLY while the database is live), ``matview`` (the dashboard from a
   materialized view), ``l1`` (in-process cache), ``l2`` (+ Redis), ``http`` (+ ETags, 304s and
   the response cache), then ``users``: 1000 concurrent users with think time on the full
   configuration;
4. for each: an unmeasured warm-up (the throughput mix, 10 s by default), then the measured
   load run (``_mix``: the seven user scenarios of the platforms), with the app's ``/metrics``
   read before and after (reads served by the database or a cache, cache lookups and hits,
   database time), the app's CPU time (``/proc``) and PostgreSQL's index block counters
   (index hit ratio);
5. the comparison table, the targets (``_targets``), ``summary.json`` and ``report.html``.

The exit status is 0 when every target of the full configuration passes, 1 when one fails,
2 for bad options, 130 on Ctrl-C. Everything the run started is stopped on the way out.

Why a fresh app per configuration: settings such as the cache tier are read once at startup,
as in production, and a restart gives every configuration the same cold start; metrics then
count that configuration alone. Redis is not emptied between steps, as a deploy does not empty
it: the ``l2`` step finds what nothing wrote there yet, the ``http`` and ``users`` steps what
the steps before them cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from redline.demo._app import SNAPSHOT_INTERVAL_S
from redline.demo._stack import Services, services, sigterm_as_interrupt
from redline.demo._targets import FULL, check_targets


@dataclass(frozen=True)
class Step:
    """One configuration of the demo: the schema revision and the app settings it runs with."""

    name: str
    title: str
    what: str
    revision: str
    dashboard_source: str = "live"
    cache: str = "none"
    http_cache: bool = False
    users: bool = False

    def settings(self) -> dict[str, Any]:
        return {
            "dashboard_source": self.dashboard_source,
            "cache": self.cache,
            "http_cache": self.http_cache,
        }


_FULL = {"revision": "dashboard_view", "dashboard_source": "matview", "cache": "l1+l2"}
STEPS: tuple[Step, ...] = (
    Step("baseline", "Baseline", "no secondary indexes, live aggregates, no cache", "baseline"),
    Step(
        "indexes",
        "+ indexes",
        "composite, partial and trigram indexes, built concurrently",
        "indexes",
    ),
    Step(
        "matview",
        "+ materialized view",
        "dashboard analytics from a materialized view",
        "dashboard_view",
        dashboard_source="matview",
    ),
    Step(
        "l1",
        "+ L1 cache",
        "cache-aside in process memory with tag invalidation",
        "dashboard_view",
        dashboard_source="matview",
        cache="l1",
    ),
    Step("l2", "+ L2 Redis", "the in-process cache in front of a shared Redis", **_FULL),
    Step(
        "http",
        "+ HTTP caching",
        "ETags, 304 before the handler, the response cache",
        **_FULL,
        http_cache=True,
    ),
    Step(
        "users",
        "1000 users",
        "1000 concurrent users with think time, full configuration",
        **_FULL,
        http_cache=True,
        users=True,
    ),
)
STEP_NAMES = tuple(step.name for step in STEPS)
REVISION_ORDER = ("baseline", "indexes", "dashboard_view")
LOGINS = 40  # sessions shared by the writing users
# A page read after this counts every request answered before it, in every worker.
SNAPSHOT_WAIT_S = SNAPSHOT_INTERVAL_S + 0.3
# How the load engine names a failed status check among a summary's errors (``VU.check``).
CHECK_STATUS = "check: status "
USERS_RAMP_S = 5.0  # the users step: arrivals spread over this, then the hold is measured


def default_workers() -> int:
    """One app worker per core, at most 4: the database, Redis and the load generator
    share the machine."""
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass
class Options:
    scale: float = 1.0
    duration: float = 15.0
    warmup: float = 10.0
    vus: int = 32
    users: int = 1000
    workers: int = field(default_factory=lambda: default_workers())
    only: tuple[str, ...] = ()
    out: Path = Path("redline-demo")
    keep: bool = False
    database_url: str | None = None
    redis_url: str | None = None
    seed: int = 7

    def steps(self) -> list[Step]:
        return [s for s in STEPS if not self.only or s.name in self.only]


@dataclass
class StepRun:
    step: Step
    figures: dict[str, Any] = field(default_factory=dict)
    endpoints: dict[str, Any] = field(default_factory=dict)
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    migrate_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.step.name,
            "title": self.step.title,
            "what": self.step.what,
            "settings": self.step.settings() | {"revision": self.step.revision},
            "figures": self.figures,
            "endpoints": self.endpoints,
            "timeseries": self.timeseries,
            "migrate_s": self.migrate_s,
        }


# --------------------------------------------------------------------------------------------
# The app under test


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AppProcess:
    """The reference app under uvicorn in a child process, with one configuration's settings."""

    def __init__(
        self, services: Services, settings: Mapping[str, Any], log: Path, workers: int = 1
    ) -> None:
        self.services = services
        self.settings = dict(settings)
        self.log = log
        self.workers = workers
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._metrics_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_dir(self) -> Path | None:
        """Where several workers' metrics snapshots are, while the app runs."""
        return None if self._metrics_dir is None else Path(self._metrics_dir.name)

    def __enter__(self) -> AppProcess:
        env = dict(os.environ)
        settings = {
            **self.settings,
            "database_url": self.services.database_url,
            "redis_url": self.services.redis_url,
        }
        if self.workers > 1:
            # The workers' metrics snapshots, merged by /metrics; this run's alone.
            self._metrics_dir = tempfile.TemporaryDirectory(prefix="redline-demo-metrics-")
            settings["metrics_dir"] = self._metrics_dir.name
        env["REDLINE_DEMO_SETTINGS"] = json.dumps(settings)
        command = [sys.executable, "-m", "redline.demo._serve", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*command, "--workers", str(self.workers)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the app itself
            )
        try:
            self._wait_healthy(60.0)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_healthy(self, timeout: float) -> None:
        """Until every worker has answered ``/health`` (each says its pid)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        answered: set[int] = set()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoRunError(
                    f"the app exited with code {self.process.returncode} while starting; "
                    f"its log:\n{_tail(self.log)}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError, ValueError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as response,
            ):
                if response.status == 200:
                    answered.add(json.loads(response.read())["pid"])
                    if len(answered) >= self.workers:
                        return
                    continue  # a new connection may reach another worker
            time.sleep(0.1)
        raise DemoRunError(
            f"{len(answered)} of the app's {self.workers} workers answered /health within "
            f"{timeout:.0f}s:\n{_tail(self.log)}"
        )

    def metrics(self) -> str:
        """The app's ``/metrics``; with several workers, after their next snapshots, so
        that it counts every request answered so far."""
        if self.workers > 1:
            time.sleep(SNAPSHOT_WAIT_S)
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return response.read().decode()

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the app has used so far: the process and its workers.
        None where ``/proc`` cannot say (not Linux)."""
        if self.process is None:
            return None
        return process_tree_cpu(self.process.pid)

    def stop(self) -> None:
        process, self.process = self.process, None
        try:
            if process is None or process.poll() is not None:
                return
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                # The supervisor and its workers: the whole session.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        finally:
            if self._metrics_dir is not None:
                self._metrics_dir.cleanup()
                self._metrics_dir = None


def process_tree_cpu(root: int) -> float | None:
    """User + system CPU seconds of ``root`` and its descendants, from ``/proc``."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        stats = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    with open(f"/proc/{entry.name}/stat", "rb") as file:
                        # The fields after the command (which may hold spaces) and its ")".
                        fields = file.read().rsplit(b")", 1)[1].split()
                    stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    except (OSError, ValueError, AttributeError):
        return None
    if root not in stats:
        return None
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, (parent, _) in stats.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    total = sum(stats[pid][1] for pid in tree)
    return total / ticks


class DemoRunError(RuntimeError):
    """The demo could not run a step (the app failed to start, a migration failed, ...)."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------
# Measuring


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_sum(samples: Mapping[tuple[str, Any], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for (sample, sample_labels), value in samples.items():
        matches = sample == name and all((k, v) in sample_labels for k, v in labels.items())
        if matches and value == value:  # NaN: an empty quantile
            total += value
    return total


def server_figures(before: str, after: str, requests: int) -> dict[str, Any]:
    """Cache hit ratio, database time per request and query p95 from two /metrics pages."""
    a, b = parse_metrics(before), parse_metrics(after)

    def delta(name: str, **labels: str) -> float:
        return metric_sum(b, name, **labels) - metric_sum(a, name, **labels)

    gets = delta("redline_cache_gets_total")
    hits = delta("redline_cache_hits_total")
    db_seconds = delta("db_query_duration_seconds_sum")
    # The app's statements only: "other" is DDL and the materialized view's scheduled
    # REFRESH, which no request waits for.
    p95 = [
        value
        for (name, labels), value in b.items()
        if name == "db_query_duration_seconds_quantiles"
        and ("quantile", "0.95") in labels
        and dict(labels).get("operation") != "other"
        and value == value
    ]
    from_cache = delta("demo_read_requests_total", served_by="cache")
    reads = from_cache + delta("demo_read_requests_total", served_by="database")
    return {
        "cache_gets": int(gets),
        "cache_hit_ratio": hits / gets if gets > 0 else None,
        # Reads that ran no SQL statement (_reads): what the caches took off the database.
        "reads_from_cache": from_cache / reads if reads > 0 and gets > 0 else None,
        "db_queries": int(delta("db_queries_total")),
        "db_ms_per_request": db_seconds * 1000 / requests if requests else None,
        "db_query_p95_ms": max(p95) * 1000 if p95 else None,
    }


INDEX_BLOCKS = "SELECT coalesce(sum(idx_blks_hit), 0), coalesce(sum(idx_blks_read), 0) " \
    "FROM pg_statio_user_indexes"  # fmt: skip


async def index_blocks(dsn: str) -> tuple[int, int]:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(INDEX_BLOCKS)
        return int(row[0]), int(row[1])
    finally:
        await connection.close()


def unexpected_statuses(errors: Mapping[str, int]) -> int:
    """Answers below 500 that a flow's check did not expect (a 422 from a malformed search,
    a 404): failed requests like k6's ``http_req_failed``, though the server answered. The
    5xx whose checks failed too are already counted as failed requests."""
    count = 0
    for reason, n in errors.items():
        if reason.startswith(CHECK_STATUS):
            status = reason[len(CHECK_STATUS) :]
            if not (status.isdigit() and int(status) >= 500):
                count += n
    return count


def load_figures(summary: Mapping[str, Any], reads: frozenset[str]) -> dict[str, Any]:
    latency = summary.get("latency_ms") or {}
    requests = summary["requests"]
    total = requests["total"]
    # Errors: no answer, a 5xx, or a status the flow did not expect.
    failed = requests["failed"] + unexpected_statuses(summary.get("errors") or {})
    duration = summary.get("duration_s") or 0
    endpoints = summary.get("endpoints") or {}
    read_requests = sum(
        stats["requests"]["total"] for name, stats in endpoints.items() if name in reads
    )
    return {
        "requests": total,
        "failed": failed,
        "rps": summary.get("rps"),
        "read_rps": read_requests / duration if duration else None,
        "p50_ms": latency.get("p50"),
        "p95_ms": latency.get("p95"),
        "p99_ms": latency.get("p99"),
        "error_rate": failed / total if total else None,
        "errors": summary.get("errors") or {},
        "generator_saturated": (summary.get("generator") or {}).get("saturated"),
        "generator_reasons": (summary.get("generator") or {}).get("reasons") or [],
    }


def endpoint_table(summary: Mapping[str, Any]) -> dict[str, Any]:
    table = {}
    for name, stats in (summary.get("endpoints") or {}).items():
        latency = stats.get("latency_ms") or {}
        table[name] = {
            "requests": stats["requests"]["total"],
            "failed": stats["requests"]["failed"] + unexpected_statuses(stats.get("errors") or {}),
            "rps": stats.get("rps"),
            "p50_ms": latency.get("p50"),
            "p95_ms": latency.get("p95"),
            "p99_ms": latency.get("p99"),
        }
    return table


# --------------------------------------------------------------------------------------------
# The run


@contextlib.contextmanager
def _quiet_interrupts() -> Iterator[None]:
    with sigterm_as_interrupt():
        yield


def run(options: Options, console: Console | None = None) -> int:
    """Run the demo with ``options``; return the exit status."""
    # Logs and CI get the whole table; a terminal gets its own width.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    bad = [name for name in options.only if name not in STEP_NAMES]
    if bad:
        console.print(
            f"[red]--only {', '.join(bad)}: unknown step; the steps are {', '.join(STEP_NAMES)}"
        )
        return 2
    options.out.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_interrupts(), services(options.database_url, options.redis_url) as svc:
            for line in svc.started:
                console.print(f"started {line}")
            summary = _run_steps(options, svc, console)
            if options.keep:
                _keep(options, svc, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: servers stopped")
        return 130
    failed = [row for row in summary["targets"] if row["status"] == "fail"]
    return 1 if failed else 0


def _prepare(options: Options, svc: Services, first: str, console: Console) -> dict[str, Any]:
    """The schema at revision ``first`` (downgrading a database a previous run left at a later
    one) and fresh seed data; returns the row counts."""
    import redline.demo as demo

    current = demo.current_revision(svc.database_url)
    with console.status(f"migrating to {first}"):
        if current is not None and REVISION_ORDER.index(current) > REVISION_ORDER.index(first):
            demo.downgrade(svc.database_url, first)
        else:
            demo.upgrade(svc.database_url, first)
    t0 = time.monotonic()
    counts = demo.seed(svc.database_url, options.scale, seed=options.seed, progress=True,
                       replace=True)  # fmt: skip
    console.print(
        f"seeded {sum(counts.as_dict().values()):,} rows at scale {options.scale:g} "
        f"in {time.monotonic() - t0:.1f}s"
    )
    return counts.as_dict()


def _run_steps(options: Options, svc: Services, console: Console) -> dict[str, Any]:
    from redline.demo import _mix

    started = time.monotonic()
    steps = options.steps()
    first = steps[0].revision if options.only else "baseline"
    seeded = _prepare(options, svc, first, console)
    data = asyncio.run(_mix.dataset(svc.database_url))
    revision = first
    runs: list[StepRun] = []
    for step in steps:
        run = StepRun(step)
        if REVISION_ORDER.index(step.revision) > REVISION_ORDER.index(revision):
            with console.status(f"{step.title}: migrating to {step.revision}"):
                import redline.demo as demo

                t0 = time.monotonic()
                demo.upgrade(svc.database_url, step.revision)
                run.migrate_s = time.monotonic() - t0
            console.print(f"migrated to {step.revision} in {run.migrate_s:.1f}s, app running")
            revision = step.revision
        console.rule(f"{step.title}: {step.what}")
        _measure(options, svc, step, run, data, console)
        runs.append(run)
        _print_step(run, console)
    results = {run.step.name: run.figures for run in runs}
    baseline = results.get("baseline", {}).get("read_rps")
    for run in runs:
        if baseline and run.figures.get("read_rps") is not None:
            run.figures["gain"] = run.figures["read_rps"] / baseline
    targets = check_targets(results)
    full_ran = FULL in results
    verdict = (
        "fail" if any(t["status"] == "fail" for t in targets) else "pass" if full_ran else "partial"
    )
    summary = {
        "verdict": verdict,
        "steps": [run.as_dict() for run in runs],
        "targets": targets,
        "environment": _environment(options, svc, seeded, time.monotonic() - started),
    }
    from redline.demo import _report

    _report.print_table(summary, console)
    _report.write_json(summary, options.out / "summary.json")
    _report.write_html(summary, options.out / "report.html")
    console.print(f"wrote {options.out / 'summary.json'} and {options.out / 'report.html'}")
    return summary


def _measure(
    options: Options,
    svc: Services,
    step: Step,
    run: StepRun,
    data: dict[str, Any],
    console: Console,
) -> None:
    from redline.demo import _mix
    from redline.load import Recorder
    from redline.load import run as load_run

    log = options.out / f"app-{step.name}.log"
    log.unlink(missing_ok=True)
    with AppProcess(svc, step.settings(), log, options.workers) as app:
        if "tokens" not in data:
            # Sessions live in the database, so one login per user serves every step.
            data["tokens"] = asyncio.run(
                _mix.log_in(app.url, data["emails"], min(LOGINS, len(data["emails"])))
            )
        if options.warmup > 0:
            # The throughput mix (no think time) with the step's users: every step, the
            # users step too, starts measuring on a process that has served its share.
            warm = _mix.plan("warm-up", data, duration=options.warmup, vus=options.vus)
            asyncio.run(load_run(warm, app.url))
        before = app.metrics()
        blocks_before = asyncio.run(index_blocks(svc.database_url))
        cpu_before = app.cpu_seconds()
        vus = options.users if step.users else options.vus
        ramp = USERS_RAMP_S if step.users else 0.0
        plan = _mix.plan(step, data, duration=options.duration, vus=vus, ramp=ramp)
        recorder = Recorder()
        with console.status(f"{step.title}: {vus} users for {options.duration:g}s"):
            result = asyncio.run(load_run(plan, app.url, timeout=30.0, recorder=recorder))
        cpu_after = app.cpu_seconds()
        after = app.metrics()
        blocks_after = asyncio.run(index_blocks(svc.database_url))
    summary = result.summary
    figures = load_figures(summary, _mix.READS)
    if ramp > 0:
        # Judged on the hold: the seconds after every user has arrived, up to the end.
        first, last = math.ceil(ramp) + 1, math.floor(ramp + options.duration) - 1
        hold = recorder.window(first, last)
        if hold.get_total_count():
            figures.update(
                {f"p{q}_ms": hold.get_value_at_percentile(q) / 1000 for q in (50, 95, 99)}
            )
            figures["hold_s"] = [first, last + 1]
            figures["hold_requests"] = hold.get_total_count()
    figures.update(server_figures(before, after, figures["requests"]))
    if cpu_before is not None and cpu_after is not None and figures["requests"]:
        # The app's own cost, whatever else the machine was doing meanwhile.
        figures["app_cpu_ms_per_request"] = (cpu_after - cpu_before) * 1000 / figures["requests"]
    hit = blocks_after[0] - blocks_before[0]
    read = blocks_after[1] - blocks_before[1]
    figures["index_hit_ratio"] = hit / (hit + read) if hit + read > 0 else None
    figures["vus"] = vus
    figures["vus_reached"] = max((row.get("vus") or 0 for row in summary.get("timeseries", [])),
                                 default=0)  # fmt: skip
    run.figures = figures
    run.endpoints = endpoint_table(summary)
    run.timeseries = [
        {k: row.get(k) for k in ("t", "rps", "p50", "p95", "p99", "errors", "vus")}
        for row in summary.get("timeseries", [])
    ]


def _print_step(run: StepRun, console: Console) -> None:
    f = run.figures
    console.print(
        f"  {f['rps']:,.0f} req/s, p50 {f['p50_ms']:.3g} ms, p95 {f['p95_ms']:.3g} ms, "
        f"p99 {f['p99_ms']:.3g} ms, errors {f['failed']:,} of {f['requests']:,}"
        + (f", cache hits {f['cache_hit_ratio']:.1%}" if f.get("cache_hit_ratio") else "")
        + (f", reads from cache {f['reads_from_cache']:.1%}" if f.get("reads_from_cache") else "")
    )


def _environment(
    options: Options, svc: Services, seeded: Mapping[str, Any], elapsed: float
) -> dict[str, Any]:
    from redline import __version__

    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(),
        "redline": __version__,
        "scale": options.scale,
        "duration_s": options.duration,
        "vus": options.vus,
        "users": options.users,
        "workers": options.workers,
        "rows": sum(v for v in seeded.values() if isinstance(v, int)),
        "elapsed_s": round(elapsed, 1),
        "started": list(svc.started),
        "seeded": dict(seeded),
        "options": {k: str(v) for k, v in asdict(options).items() if k not in ("database_url",)},
    }


def _keep(options: Options, svc: Services, console: Console) -> None:
    """Leave the full configuration up until Ctrl-C, printing where everything is; Ctrl-C
    here is the expected end, so the exit status stays the targets' verdict."""
    full = next(step for step in STEPS if step.name == FULL)
    with AppProcess(svc, full.settings(), options.out / "app-keep.log", options.workers) as app:
        console.print(f"app:        {app.url}  (full configuration)")
        console.print(f"dashboard:  {app.url}/_redline/")
        console.print(f"metrics:    {app.url}/metrics")
        console.print(f"PostgreSQL: {svc.database_url}")
        console.print(f"Redis:      {svc.redis_url}")
        console.print("Ctrl-C stops everything.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping the app and the servers")
