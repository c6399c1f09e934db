"""Middleware benchmark: what ``MetricsMiddleware`` costs a trivial Starlette endpoint, beside
prometheus_client-based instrumentation. Usage:

    python benchmarks/middleware_bench.py [--tool redline|wrk] [--duration 5] [--rounds 5]
                                          [--mode interleaved|sequential|together|all]
                                          [--connections 50] [--quick] [--json out.json]

Served: one uvicorn worker (uvloop, httptools, no access log) per variant, each answering
``GET /`` with ``PlainTextResponse("hello")``: ``bare`` (no middleware), ``redline``
(``MetricsMiddleware`` with its defaults: its request path in C when compiled),
``redline-py`` (the same with its pure-Python twin forced, as ``REDLINE_PURE_PYTHON=1``
does) and, when installed, ``starlette_exporter``
(``PrometheusMiddleware``, defaults) and ``prometheus-fastapi-instrumentator``
(``Instrumentator().instrument(app)``, defaults); the last two are not project dependencies
(``pip install starlette-exporter prometheus-fastapi-instrumentator`` to compare). Two
calibration variants show what any pure-Python ASGI middleware pays before it records
anything: ``noop`` forwards every call unchanged, and ``send-wrapper`` does the least an
instrumentation that reports status and latency must (wrap ``send`` in a closure that notes
the status, times the response and appends one tuple to a list). All
servers are pinned with ``taskset`` to the last CPU, the load generators to CPU 0 (no
pinning on a single CPU or without taskset).

Load: ``redline load run`` with a YAML plan (one ``constant-vus`` scenario of
``--connections`` users looping ``GET /``), or ``wrk -t1 -c<connections>``, for
``--duration`` seconds per run. ``--rounds`` rounds, each of which runs

- ``interleaved`` (the default): fresh server processes every round, one warm-up run
  each, then one generator per server, all at once, while the servers take turns on the
  server CPU in slices of ``--slice`` seconds (100 ms): every other server is stopped
  (SIGSTOP) while one runs, for as long as the generators run. Each variant thus runs alone
  on its CPU, as under ``sequential``, yet within the same second as every other, so that
  the second-to-second changes in speed of a shared or virtual machine (15 % and more on
  the one the figures come from) fall on all variants alike; and new processes every round
  make the luck of one process's memory layout (a few per cent either way, and lasting as
  long as the process) part of the spread instead of a bias;
- ``sequential``: every variant alone, in turn, in an order rotated per round (what a user
  would do), on servers started once: throughput is the tool's requests / s;
- ``together``: every variant at once, each with its own generator, all servers sharing
  the one server CPU. The scheduler gives each server an equal share of it, so the
  throughputs compare what a request costs, and whatever else the machine runs at that
  moment slows every variant alike; but the servers' switches every few milliseconds leave
  each one's caches cold for the next, which costs a middleware more than its share.

For each mode and variant the table shows the median throughput, the median server CPU per
request (user + sys of the server process from /proc, over the requests the tool saw), and
against ``bare``: under ``interleaved`` the geometric mean of the per-round throughput
ratios with its 95 % confidence interval, under the others their median and quartiles; and
the same statistic of the per-round CPU-per-request ratios (bare's over the variant's). The
overhead is 1 - the throughput ratio; redline's target is <= 5 %; the exit status is 1 when
it is missed.

In-process: the same apps called directly as ASGI callables in a loop (no server, no
sockets), CPU time of the fastest of 25 interleaved batches: the microseconds each
middleware adds to a request in a warm loop. Under a server, between its system calls,
the same Python code costs several times that.

Before the table, the redline server's own ``/metrics`` is read back: its
``http_requests_total{route="/"}`` must match the requests the tool reported (give or take
those in flight when a run ended).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

TARGET_OVERHEAD = 0.05
VARIANTS = (
    "bare",
    "redline",
    "redline-py",
    "noop",
    "send-wrapper",
    "starlette_exporter",
    "prometheus-fastapi-instrumentator",
)
MODULES = {
    "starlette_exporter": "starlette_exporter",
    "prometheus-fastapi-instrumentator": "prometheus_fastapi_instrumentator",
}


# -- the served apps ------------------------------------------------------------------------


def build_app(variant: str) -> Any:
    """The trivial endpoint with ``variant``'s instrumentation."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    if variant in ("redline", "redline-py"):
        from redline import monitor
        from redline.monitor import _middleware

        app.routes.append(monitor.metrics_route())
        app.add_middleware(monitor.MetricsMiddleware)
        compiled = _middleware._Requests
        if variant == "redline-py":
            _middleware._Requests = None
        try:
            # Built now rather than on the first request, with the implementation chosen.
            app.middleware_stack = app.build_middleware_stack()
        finally:
            _middleware._Requests = compiled
    elif variant == "noop":
        app.add_middleware(_Noop)
    elif variant == "send-wrapper":
        app.add_middleware(_SendWrapper)
    elif variant == "starlette_exporter":
        from starlette_exporter import PrometheusMiddleware, handle_metrics

        app.add_middleware(PrometheusMiddleware)
        app.add_route("/metrics", handle_metrics)
    elif variant == "prometheus-fastapi-instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    elif variant != "bare":
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return app


class _Noop:
    """Calibration: a pure ASGI middleware that only forwards."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class _SendWrapper:
    """Calibration: the least a status-and-latency instrumentation does per request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.finished: list[tuple[int, float]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status = 0
        started = time.perf_counter()
        finished = self.finished

        def send_(message: Any, send: Any = send) -> Any:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not message.get("more_body", False):
                finished.append((status, time.perf_counter() - started))
                if len(finished) >= 1024:
                    finished.clear()
            return send(message)

        await self.app(scope, receive, send_)


def serve(variant: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        build_app(variant),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    variant: str
    round: int
    requests: int
    rps: float
    cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else float("nan")


@dataclass
class Server:
    variant: str
    port: int
    process: subprocess.Popen[bytes]
    requests_sent: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Settings:
    tool: str
    duration: float
    rounds: int
    connections: int
    modes: tuple[str, ...]
    slice: float = 0.1
    pin_tool: list[str] = field(default_factory=list)
    pin_server: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def servers(variants: list[str], pin: list[str]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for variant in variants:
            port = free_port()
            argv = [*pin, sys.executable, __file__, "--serve", variant, "--port", str(port)]
            started.append(Server(variant, port, subprocess.Popen(argv)))
        for server in started:
            wait_until_up(server)
        yield started
    finally:
        for server in started:
            server.process.send_signal(signal.SIGINT)
        for server in started:
            try:
                server.process.wait(10)
            except subprocess.TimeoutExpired:
                server.process.kill()


def wait_until_up(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(server.url + "/", timeout=1) as response:
                response.read()
            return
        except OSError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {server.variant} server did not start") from None
            time.sleep(0.1)


@dataclass
class Load:
    """One run of the tool against one server, started and not yet read."""

    server: Server
    process: subprocess.Popen[str]
    out: Path
    cpu_before: float

    def result(self, tool: str) -> tuple[int, float]:
        stdout, stderr = self.process.communicate()
        if tool == "wrk":
            requests = rps = None
            for line in stdout.splitlines():
                if "requests in" in line:
                    requests = int(line.split()[0])
                elif line.startswith("Requests/sec:"):
                    rps = float(line.split()[1])
                elif "Non-2xx" in line:
                    raise SystemExit(f"wrk saw errors against {self.server.variant}: {line}")
                elif "Socket errors" in line and any(
                    int(part.split()[-1]) for part in line.split(":", 1)[1].split(",")[:3]
                ):
                    # connect, read or write errors; a few timeouts on a busy machine are not.
                    raise SystemExit(f"wrk saw errors against {self.server.variant}: {line}")
            if requests is None or rps is None:
                raise SystemExit(f"unexpected wrk output:\n{stdout}{stderr}")
            return requests, rps
        if self.process.returncode not in (0, 98):
            code = self.process.returncode
            raise SystemExit(f"redline load failed ({code}):\n{stdout}{stderr}")
        summary = json.loads((self.out / "summary.json").read_text())
        if summary["requests"].get("failed"):
            raise SystemExit(f"redline load saw failed requests against {self.server.variant}")
        return summary["requests"]["total"], summary["rps"]


def start_load(server: Server, s: Settings, workdir: Path, duration: float) -> Load:
    out = workdir / f"{server.variant}-{time.monotonic_ns()}"
    out.mkdir()
    if s.tool == "wrk":
        argv = [*s.pin_tool, "wrk", "-t1", f"-c{s.connections}", f"-d{duration:g}s"]
        argv.append(server.url + "/")
    else:
        plan = out / "plan.yaml"
        plan.write_text(
            f"scenarios:\n  bench:\n    executor: constant-vus\n    vus: {s.connections}\n"
            f"    duration: {duration:g}s\n    flow:\n      - get: /\n"
        )
        argv = [*s.pin_tool, sys.executable, "-c", "from redline.cli import app; app()"]
        argv += ["load", "run", str(plan), "--target", server.url, "--out", str(out)]
        argv.append("--no-progress")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Load(server, process, out, server.cpu_seconds())


def measure(servers_: list[Server], s: Settings) -> list[Run]:
    """Sequential rounds (each variant alone, in turn) and together rounds (all variants at
    once, sharing the server CPU), as ``s.modes`` asks."""
    runs: list[Run] = []

    def finish(loads: list[Load], mode: str, round_: int) -> None:
        for started in loads:
            requests, rps = started.result(s.tool)
            cpu = started.server.cpu_seconds() - started.cpu_before
            started.server.requests_sent += requests
            if round_ >= 0:
                runs.append(Run(mode, started.server.variant, round_, requests, rps, cpu))

    with tempfile.TemporaryDirectory(prefix="redline-mwbench-") as tmp:
        workdir = Path(tmp)
        for server in servers_:  # warm-up, unmeasured
            finish([start_load(server, s, workdir, min(2.0, s.duration))], "warm-up", -1)
        for round_ in range(s.rounds):
            if "sequential" in s.modes:
                shift = round_ % len(servers_)
                for server in servers_[shift:] + servers_[:shift]:
                    finish([start_load(server, s, workdir, s.duration)], "sequential", round_)
            if "together" in s.modes:
                together = [start_load(server, s, workdir, s.duration) for server in servers_]
                finish(together, "together", round_)
    return runs


def measure_interleaved(variants: list[str], s: Settings) -> tuple[list[Run], float, int]:
    """Interleaved rounds: fresh servers each round, taking turns on the server CPU in
    slices while every generator runs. Also what the last round's redline server counted
    against what its generator reported."""
    runs: list[Run] = []
    counted, sent = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="redline-mwbench-") as tmp:
        workdir = Path(tmp)
        for round_ in range(s.rounds):
            with servers(variants, s.pin_server) as running:
                for server in running:  # warm-up, unmeasured
                    load = start_load(server, s, workdir, 1.0)
                    server.requests_sent += load.result(s.tool)[0]
                for server in running:
                    server.process.send_signal(signal.SIGSTOP)
                try:
                    loads = [start_load(server, s, workdir, s.duration) for server in running]
                    turn = round_  # whose slice comes first rotates per round
                    while any(load.process.poll() is None for load in loads):
                        server = running[turn % len(running)]
                        turn += 1
                        server.process.send_signal(signal.SIGCONT)
                        time.sleep(s.slice)
                        server.process.send_signal(signal.SIGSTOP)
                finally:
                    for server in running:
                        server.process.send_signal(signal.SIGCONT)
                for load in loads:
                    requests, rps = load.result(s.tool)
                    cpu = load.server.cpu_seconds() - load.cpu_before
                    load.server.requests_sent += requests
                    # Its rate while on the CPU: each server had 1/n of the time.
                    rps *= len(running)
                    runs.append(Run("interleaved", load.server.variant, round_, requests, rps, cpu))
                redline = next(server for server in running if server.variant == "redline")
                counted, sent = counted_by_redline(redline), redline.requests_sent
    return runs, counted, sent


def counted_by_redline(server: Server) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('http_requests_total{route="/",')
    )


# -- in process -----------------------------------------------------------------------------


# A GET / request for an app called directly, without a server (copied per call: apps may
# write to the scope).
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"bench")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


async def receive_empty() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send_nowhere(message: Any) -> None:
    pass


def in_process(variants: list[str], batches: int = 25, size: int = 3000) -> dict[str, float]:
    """Microseconds per request of each app called directly, fastest batch."""
    import uvloop

    async def batch(app: Any, n: int) -> float:
        started = time.process_time()
        for _ in range(n):
            await app(dict(SCOPE), receive_empty, send_nowhere)
        return (time.process_time() - started) / n * 1e6

    async def main() -> dict[str, float]:
        apps = {variant: build_app(variant) for variant in variants}
        for app in apps.values():
            await batch(app, size)
        best = dict.fromkeys(apps, float("inf"))
        for _ in range(batches):
            for variant, app in apps.items():
                best[variant] = min(best[variant], await batch(app, size))
        return best

    return uvloop.run(main())


# -- report ---------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {}
    for name in ("redline", "starlette", "uvicorn", "uvloop", "httptools", "prometheus_client"):
        out[name] = importlib.metadata.version(name)
    for name in MODULES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def machine(s: Settings) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    tool = "redline load run (YAML, constant-vus)" if s.tool == "redline" else "wrk -t1"
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "tool": f"{tool}, {s.connections} connections, {s.duration:g} s x {s.rounds} rounds",
        "pinning": (
            f"servers on CPU {s.pin_server[-1]}, tool on CPU {s.pin_tool[-1]}"
            if s.pin_server
            else "none"
        ),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": versions(),
    }


def summarise(runs: list[Run], variants: list[str], mode: str) -> dict[str, dict[str, Any]]:
    """Per variant: median throughput and CPU per request, and the median and quartiles of
    the per-round throughput ratios to bare."""
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        if run.mode == mode:
            by_round.setdefault(run.round, {})[run.variant] = run
    out = {}
    for variant in variants:
        mine = [r[variant] for r in by_round.values()]
        ratios = sorted(r[variant].rps / r["bare"].rps for r in by_round.values())
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        cpu_ratios = [
            r["bare"].cpu_us_per_request / r[variant].cpu_us_per_request for r in by_round.values()
        ]
        out[variant] = {
            "rps": statistics.median(run.rps for run in mine),
            "cpu_us_per_request": statistics.median(run.cpu_us_per_request for run in mine),
            "ratio": statistics.median(ratios),
            "ratio_q1": quartiles[0],
            "ratio_q3": quartiles[-1],
            "ratios": ratios,
            "cpu_ratio": statistics.median(cpu_ratios),
        }
        if mode == "interleaved":
            mean, low, high = geometric_mean_ci(ratios)
            out[variant] |= {"ratio": mean, "ratio_q1": low, "ratio_q3": high}
            out[variant]["cpu_ratio"] = geometric_mean_ci(cpu_ratios)[0]
    return out


def geometric_mean_ci(ratios: list[float]) -> tuple[float, float, float]:
    """The geometric mean of ``ratios`` and its 95 % confidence interval (Student's t on the
    logarithms: rounds are independent, each with fresh processes)."""
    logs = [math.log(ratio) for ratio in ratios]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), math.exp(mean), math.exp(mean)
    half = T95.get(len(logs) - 1, 1.96) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


# Student's t, two-sided 95 %, by degrees of freedom (1.96 beyond 30).
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
T95 |= {10: 2.23, 11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11}
T95 |= {18: 2.10, 19: 2.09, 20: 2.09, 21: 2.08, 22: 2.07, 23: 2.07, 24: 2.06, 25: 2.06}
T95 |= {26: 2.06, 27: 2.05, 28: 2.05, 29: 2.05, 30: 2.04}


def table(
    results: dict[str, dict[str, dict[str, Any]]],
    variants: list[str],
    micro: dict[str, float],
    info: dict[str, Any],
) -> Table:
    out = Table(
        title=f"MetricsMiddleware overhead on a trivial Starlette endpoint, {info['date']}",
        caption=caption(info),
        caption_justify="left",
    )
    out.add_column("variant")
    for mode in results:
        out.add_column(f"{mode}\nrps (median)", justify="right")
        out.add_column(f"{mode}\nCPU/request", justify="right")
        spread = "95% CI" if mode == "interleaved" else "IQR"
        out.add_column(f"{mode}\nrps vs bare [{spread}]", justify="right")
        out.add_column(f"{mode}\nCPU vs bare", justify="right")
    out.add_column("in-process\nCPU/request", justify="right")
    out.add_column(f"target: overhead\n<= {TARGET_OVERHEAD:.0%}")
    for variant in variants:
        cells = [variant]
        verdicts = []
        for mode, rows in results.items():
            row = rows[variant]
            cells += [f"{row['rps']:,.0f}", f"{row['cpu_us_per_request']:.1f} µs"]
            if variant == "bare":
                cells += ["1", "1"]
                continue
            cells.append(f"{row['ratio']:.3f} [{row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}]")
            cells.append(f"{row['cpu_ratio']:.3f}")
            overhead = 1 - row["ratio"]
            ok = "PASS" if overhead <= TARGET_OVERHEAD else "FAIL"
            mine = variant in ("redline", "redline-py")
            verdicts.append(f"{mode} {overhead:.1%} {ok}" if mine else "")
        added = micro[variant] - micro["bare"]
        cells.append(f"{micro[variant]:.1f} µs" + ("" if variant == "bare" else f" ({added:+.1f})"))
        cells.append("\n".join(v for v in verdicts if v))
        out.add_row(*cells)
    return out


def caption(info: dict[str, Any]) -> str:
    versions_ = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['os']}, {info['python']}\n"
        f"load: {info['tool']}; {info['pinning']}; "
        f"load average at the end: {info['load average']}\n{versions_}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool", choices=("redline", "wrk"), default="redline")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--mode",
        choices=("interleaved", "sequential", "together", "all"),
        default="interleaved",
        help="fresh servers taking turns in slices (the default), each variant alone in turn, "
        "all at once on one CPU, or all three",
    )
    parser.add_argument(
        "--slice", type=float, default=0.1, help="interleaved: seconds per turn on the CPU"
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s")
    parser.add_argument("--json", type=Path, help="also write every run to this JSON file")
    parser.add_argument(
        "--variants",
        help=f"comma-separated subset of {', '.join(VARIANTS)} (bare and redline are always in)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0

    console = Console(width=max(Console().width, 150))
    if args.quick:
        args.duration, args.rounds = 2.0, 3
    if args.tool == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk), or use --tool redline")
    wanted = set(VARIANTS if not args.variants else args.variants.split(",")) | {"bare", "redline"}
    if wanted - set(VARIANTS):
        raise SystemExit(
            f"unknown variants {sorted(wanted - set(VARIANTS))}; choose from {VARIANTS}"
        )
    variants = [v for v in VARIANTS if v in wanted and (v not in MODULES or _installed(MODULES[v]))]
    for missing in sorted(wanted - set(variants)):
        console.print(f"[dim]{missing} is not installed: left out[/]")
    modes = ("interleaved", "sequential", "together") if args.mode == "all" else (args.mode,)
    s = Settings(args.tool, args.duration, args.rounds, args.connections, modes, args.slice)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and shutil.which("taskset"):
        s.pin_tool, s.pin_server = ["taskset", "-c", str(cpus[0])], ["taskset", "-c", str(cpus[-1])]

    micro = in_process(variants)
    runs: list[Run] = []
    if "interleaved" in modes:
        runs, counted, sent = measure_interleaved(variants, s)
    if set(modes) - {"interleaved"}:
        with servers(variants, s.pin_server) as running:
            runs += measure(running, s)
            redline = next(server for server in running if server.variant == "redline")
            counted, sent = counted_by_redline(redline), redline.requests_sent
    info = machine(s)
    results = {mode: summarise(runs, variants, mode) for mode in modes}
    if _compiled() is None:
        console.print("[yellow]redline.monitor._request is not compiled: redline is redline-py[/]")
    console.print(
        f"redline's server counted {counted:,.0f} requests to /; the tool reported "
        f"{sent:,} (difference {counted - sent:+,.0f}: "
        "requests in flight when a run stopped)"
    )
    console.print(table(results, variants, micro, info))
    if args.json:
        report = {"machine": info, "results": results, "in_process_us": micro}
        report["runs"] = [asdict(run) | {"cpu_us": run.cpu_us_per_request} for run in runs]
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"[dim]results written to {args.json}[/]")
    overheads = [1 - results[mode]["redline"]["ratio"] for mode in modes]
    return 0 if all(overhead <= TARGET_OVERHEAD for overhead in overheads) else 1


def _compiled() -> Any:
    from redline.monitor import _middleware

    return _middleware._Requests


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
