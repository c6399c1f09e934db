"""Load-generator benchmark: redline against wrk, k6 and Locust, on one throwaway nginx.

Two questions, one per mode. Usage:

    python benchmarks/load_bench.py [--tools wrk,redline,k6,locust] [--duration 10]
                                    [--connections 50] [--repeat 1] [--json out.json]
    python benchmarks/load_bench.py --stall [--rate 2000] [--stall-at 3] [--stall-for 1]

Efficiency (default): each tool keeps --connections keep-alive connections busy (closed
model) for --duration against nginx ``return 200``; the tool is pinned to CPU 0, nginx to
CPU 1. CPU is user + sys of the tool's whole process tree (``RUSAGE_CHILDREN`` around the
waited child, start-up included); requests are counted twice, by nginx's access log and by
the tool's own report, and CPU per request divides by nginx's count.

--stall: an open-model run at --rate; --stall-at seconds after the first request reaches
nginx, the benchmark SIGSTOPs nginx for --stall-for seconds. The truth comes from nginx's
access log: redline's plan puts each arrival's intended time in its URL (``/?i=<ns>``) and
nginx logs ``$msec`` when it answered, so each request's true latency is the server's clock
minus the schedule's, drain after SIGCONT included. k6 cannot put its schedule in the URL: it
is set against the server-side truth of redline's run of the same schedule. A second column
keeps the lower bound from the schedule alone: max(b, stall_end - t) for an arrival intended
at t inside the stall, b outside it (b: the unloaded median, measured here).

--repeat N runs N interleaved rounds (every tool once per round) and reports medians, so
that noise from the machine falls on all tools alike. ``--tools`` also takes ``redline-py``:
redline with REDLINE_PURE_PYTHON=1, its fast lane in Python instead of C; and ``floor``: a C
client (benchmarks/floor_client.c, compiled here with cc) that only does the system calls of a
request, so its CPU per request is the kernel's price on this machine, below which no tool can
go. Before the first
round, redline's bytecode is compiled as a wheel install would have it (see
``prepare_redline``). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import http.client
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

TOOLS = ("wrk", "redline", "k6", "locust")
# Not run by default: redline with its fast lane in Python (REDLINE_PURE_PYTHON=1), to see
# what the compiled lane (src/redline/load/_lane.c) is worth; and the floor, a C client that
# does nothing but a request's system calls (benchmarks/floor_client.c).
EXTRA_TOOLS = ("redline-py", "floor")
FLOOR_SOURCE = Path(__file__).with_name("floor_client.c")
TOOL_CPU, SERVER_CPU = 0, 1
CPU_TARGET_US = 10.0
WRK_RATIO_TARGET = 1.25
# shared/ANCHORS.md, 50 connections against nginx, each side on its own core.
ANCHOR_CPU_US = {"wrk": 8.0, "k6": 48.5, "locust": 98.7}
ANCHOR_LATENCY = {"wrk": "0.24/0.54/0.90", "k6": "1.99/5.80/12.4", "locust": "3/6/15"}
LOG_FLUSH_S = 0.1  # nginx writes its buffered access log at least this often
START_TIMEOUT_S = 60.0  # from launch to the tool's first request reaching nginx
EXIT_GRACE_S = 60.0  # past --duration, before a tool is killed
# The access log: the status only for efficiency (it just counts); in --stall mode also
# $msec, nginx's clock (epoch seconds, 1 ms resolution) when it logged the answered request,
# and the URI, whose i= holds the intended time of the arrival (redline's runs).
LOG_FORMAT = {"efficiency": "$status", "stall": "$status $msec $request_uri"}

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    default_type text/plain;
    log_format bench '{log_format}';
    access_log {dir}/access.log bench buffer=256k flush={flush_ms}ms;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog={backlog};
        location / {{
            return 200 "hello";
        }}
    }}
}}
"""

# Only done() is defined, so wrk runs no Lua per request: the script costs nothing.
WRK_REPORT_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""

K6_SCRIPT = """\
import http from "k6/http";

export const options = {options};

export default function () {{
  http.get({url});
}}

export function handleSummary(data) {{
  return {{ {out}: JSON.stringify(data) }};
}}
"""

# --stall: each request carries the perf_counter_ns time the scheduler intended its arrival
# for, so that nginx's log alone gives its true latency. A Python flow: a YAML one has no
# access to the intended time (it costs redline more CPU per request than a compiled flow).
REDLINE_STALL_PLAN = """\
from redline.load._plan import ConstantArrivalRate, scenario


@scenario(
    ConstantArrivalRate(
        rate={s.rate},
        duration={s.duration},
        pre_allocated_vus={s.connections},
        max_vus={s.max_vus},
    ),
    name="bench",
)
async def bench(vu):
    await vu.get(f"/?i={{vu.intended_ns}}", name="/")
"""

LOCUST_FILE = """\
from locust import FastHttpUser, {wait}, task


class Bench(FastHttpUser):
    wait_time = {wait}({arg})

    @task
    def index(self):
        self.client.get("/")
"""


@dataclass(frozen=True)
class Settings:
    mode: str  # "efficiency" or "stall"
    duration: int
    connections: int
    rate: int
    max_vus: int
    stall_at: float
    stall_for: float


@dataclass
class Report:
    """What a tool says about its own run (latencies in ms)."""

    requests: int | None = None
    rps: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    dropped: int | None = None
    failed: int | None = None
    self_cpu_us: float | None = None  # redline's own verdict on its CPU per request
    notes: list[str] = field(default_factory=list)


@dataclass
class Command:
    argv: list[str]
    parse: Callable[[], Report]
    model: str
    env: dict[str, str] = field(default_factory=dict)
    ok_exits: tuple[int, ...] = (0,)
    scheduled: int | None = None  # open model: arrivals the tool was asked for


@dataclass
class Run:
    """One tool, one round."""

    tool: str
    model: str = ""
    cpu_s: float | None = None
    wall_s: float | None = None
    nginx_requests: int | None = None
    nginx_statuses: dict[str, int] = field(default_factory=dict)
    report: Report = field(default_factory=Report)
    scheduled: int | None = None
    stall: tuple[float, float] | None = None  # (start, end) in seconds from the first request
    true: dict[str, float] = field(default_factory=dict)  # the schedule's lower bound
    # From nginx's log: $msec - intended time of every answered request that carried i=, with
    # p50/p95/p99/max/min in ms and the counts (see server_truth).
    server_true: dict[str, float] = field(default_factory=dict)
    truth_from: str = ""  # where server_true comes from, when not this run's own log
    clock_drift_us: float | None = None  # epoch - perf_counter offset, after minus before
    error: str = ""
    median_cpu_us: float | None = None  # rows merged from rounds: the median of the rounds'

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.median_cpu_us is not None:
            return self.median_cpu_us
        if self.cpu_s is None or not self.nginx_requests:
            return None
        return self.cpu_s * 1e6 / self.nginx_requests


# -- nginx -----------------------------------------------------------------------------------


def find_binary(name: str, *extra: str) -> str | None:
    """``name`` on PATH, next to this interpreter (a venv's bin/), or at one of ``extra``."""
    for candidate in (shutil.which(name), str(Path(sys.executable).parent / name), *extra):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Nginx:
    """A throwaway single-process nginx whose access log counts the requests it answered."""

    def __init__(self, binary: str, workdir: Path, pin: list[str], mode: str) -> None:
        self.dir = workdir / "nginx"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "access.log"
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 65536)
        (self.dir / "nginx.conf").write_text(
            NGINX_CONF.format(
                dir=self.dir,
                port=self.port,
                nofile=nofile,
                connections=max(1024, nofile - 64),
                backlog=4096,  # a stall must not overflow the accept queue into SYN retries
                flush_ms=int(LOG_FLUSH_S * 1000),
                log_format=LOG_FORMAT[mode],
            )
        )
        conf = str(self.dir / "nginx.conf")
        error_log = str(self.dir / "error.log")
        argv = [*pin, binary, "-p", str(self.dir), "-c", conf, "-e", error_log]
        stderr = self.dir / "stderr.txt"
        with stderr.open("wb") as sink:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink)
        self.stopped = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited at start: {stderr.read_text().strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError(f"nginx did not listen on port {self.port} within 10 s")

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def settled_size(self) -> int:
        """The log's size once nginx has flushed its buffer (no growth for 3 flush periods)."""
        size, still_since = self.log_size(), perf_counter()
        deadline = perf_counter() + 10
        while perf_counter() - still_since < 3 * LOG_FLUSH_S and perf_counter() < deadline:
            time.sleep(LOG_FLUSH_S / 2)
            if (now := self.log_size()) != size:
                size, still_since = now, perf_counter()
        return size

    def lines(self, start: int, end: int) -> list[bytes]:
        """The log's lines between two offsets (the status comes first on each)."""
        with self.log.open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start).splitlines()

    @staticmethod
    def statuses(lines: list[bytes]) -> Counter[str]:
        return Counter(line.split(b" ", 1)[0].decode() for line in lines if line)

    def wait_for_traffic(self, offset: int, proc: subprocess.Popen[bytes]) -> float | None:
        """perf_counter() when the log first grows past ``offset``; None if the tool died."""
        deadline = perf_counter() + START_TIMEOUT_S
        while perf_counter() < deadline and proc.poll() is None:
            if self.log_size() > offset:
                return perf_counter()
            time.sleep(0.002)
        return None

    def pause(self) -> float:
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stopped = True
        return perf_counter()

    def resume(self) -> float:
        # Read before the signal: nginx shares this CPU and, woken, runs first, for
        # milliseconds; read after, the stall would look longer than it was.
        now = perf_counter()
        os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False
        return now

    def base_latency_ms(self, n: int = 300) -> float:
        """Median of ``n`` sequential keep-alive GETs from this process: the unloaded latency."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        samples = []
        try:
            for _ in range(n):
                start = perf_counter()
                conn.request("GET", "/")
                conn.getresponse().read()
                samples.append((perf_counter() - start) * 1000)
        finally:
            conn.close()
        return statistics.median(samples)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.stopped:
                self.resume()
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- tools -----------------------------------------------------------------------------------


def build_floor(workdir: Path) -> list[str] | None:
    """Compile the floor client into workdir; None without a C compiler or when it fails."""
    cc = os.environ.get("CC") or find_binary("cc") or find_binary("gcc")
    if cc is None:
        return None
    binary = workdir / "floor_client"
    built = subprocess.run(
        [cc, "-O2", "-o", str(binary), str(FLOOR_SOURCE)], capture_output=True, text=True
    )
    if built.returncode != 0:
        print(f"floor_client.c did not compile:\n{built.stderr}", file=sys.stderr)
        return None
    return [str(binary)]


def tool_binaries(workdir: Path | None = None) -> dict[str, list[str] | None]:
    """How to start each tool, or None when it is not on this machine.

    With a workdir, the floor client is compiled there; without one it is left out (None).
    """
    redline = find_binary("redline")
    if redline is None and importlib.util.find_spec("redline") is not None:
        # redline.cli has no __main__ guard, so `python -m redline.cli` would do nothing.
        redline_argv = [sys.executable, "-c", "from redline.cli import app; app()"]
    else:
        redline_argv = [redline] if redline else None
    wrk, k6, locust = find_binary("wrk"), find_binary("k6"), find_binary("locust")
    return {
        "wrk": [wrk] if wrk else None,
        "redline": redline_argv,
        "redline-py": redline_argv,
        "k6": [k6] if k6 else None,
        "locust": [locust] if locust else None,
        "floor": build_floor(workdir) if workdir is not None else None,
    }


def wrk_command(argv: list[str], url: str, s: Settings, workdir: Path, out: Path) -> Command:
    script = workdir / "report.lua"
    script.write_text(WRK_REPORT_LUA)
    args = ["-t1", f"-c{s.connections}", f"-d{s.duration}s", "--latency", "-s", str(script)]

    def parse() -> Report:
        for line in out.read_text().splitlines():
            if line.startswith("BENCH "):
                requests, duration_us, p50, p95, p99, most, errors = map(int, line.split()[1:])
                return Report(
                    requests=requests,
                    rps=requests / (duration_us / 1e6),
                    p50=p50 / 1000,
                    p95=p95 / 1000,
                    p99=p99 / 1000,
                    max=most / 1000,
                    failed=errors,
                )
        raise ValueError("no BENCH line from the done() script in wrk's output")

    model = f"closed, {s.connections} connections"
    if s.mode == "stall":
        # wrk 4 has no -R; before reporting, its stats_correct() back-fills the samples a
        # stalled connection would have taken at its average pace (a CO correction).
        model += ", max rate, CO-corrected"
    return Command([*argv, *args, url + "/"], parse, model)


def floor_command(argv: list[str], url: str, s: Settings, out: Path) -> Command:
    parts = urllib.parse.urlsplit(url)
    args = [parts.hostname or "127.0.0.1", str(parts.port or 80), str(s.connections)]

    def parse() -> Report:
        for line in out.read_text().splitlines():
            if line.startswith("BENCH "):
                answers, duration_us, errors = (int(float(x)) for x in line.split()[1:])
                return Report(requests=answers, rps=answers / (duration_us / 1e6), failed=errors)
        raise ValueError("no BENCH line in the floor client's output")

    return Command([*argv, *args, str(s.duration)], parse, f"closed, {s.connections} connections")


def redline_command(argv: list[str], url: str, s: Settings, workdir: Path) -> Command:
    out = workdir / "redline-out"
    if s.mode == "stall":
        plan = workdir / "plan.py"
        plan.write_text(REDLINE_STALL_PLAN.format(s=s))
        model = f"open, {s.rate}/s, max {s.max_vus} VUs, Python flow"
    else:
        plan = workdir / "plan.yaml"
        plan.write_text(
            f"scenarios:\n  bench:\n    executor: constant-vus\n    vus: {s.connections}\n"
            f"    duration: {s.duration}s\n    flow:\n      - get: /\n"
        )
        model = f"closed, {s.connections} VUs"

    def parse() -> Report:
        summary = json.loads((out / "summary.json").read_text())
        latency, requests = summary["latency_ms"], summary["requests"]
        generator = summary.get("generator", {})
        notes = []
        if generator.get("saturated"):
            notes.append("saturated: " + "; ".join(generator.get("reasons", [])))
        if requests.get("late"):
            notes.append(f"{requests['late']} sent late (max {requests.get('max_late_ms')} ms)")
        if s.mode == "stall" and "service_time_ms" in summary:
            service = summary["service_time_ms"]
            notes.append(
                "service time p50/p95/p99 "
                + "/".join(f"{service[p]:.2f}" for p in ("p50", "p95", "p99"))
                + " ms"
            )
        return Report(
            requests=requests["total"],
            rps=summary.get("rps"),
            p50=latency["p50"],
            p95=latency["p95"],
            p99=latency["p99"],
            max=latency["max"],
            dropped=requests.get("dropped"),
            failed=requests.get("failed"),
            self_cpu_us=generator.get("cpu_us_per_request"),
            notes=notes,
        )

    args = ["load", "run", str(plan), "--target", url, "--out", str(out)]
    scheduled = s.rate * s.duration if s.mode == "stall" else None
    # 98: the generator judged itself saturated; 99: a threshold failed. Both write a summary.
    return Command([*argv, *args], parse, model, ok_exits=(0, 98, 99), scheduled=scheduled)


def k6_command(argv: list[str], url: str, s: Settings, workdir: Path) -> Command:
    script, out = workdir / "script.js", workdir / "k6-summary.json"
    trend = ["med", "p(95)", "p(99)", "max"]
    if s.mode == "stall":
        options: dict[str, Any] = {
            "scenarios": {
                "bench": {
                    "executor": "constant-arrival-rate",
                    "rate": s.rate,
                    "timeUnit": "1s",
                    "duration": f"{s.duration}s",
                    "preAllocatedVUs": s.connections,
                    "maxVUs": s.max_vus,
                }
            }
        }
        model = f"open, {s.rate}/s, max {s.max_vus} VUs"
    else:
        options = {"vus": s.connections, "duration": f"{s.duration}s"}
        model = f"closed, {s.connections} VUs"
    options["summaryTrendStats"] = trend
    script.write_text(
        K6_SCRIPT.format(
            options=json.dumps(options), url=json.dumps(url + "/"), out=json.dumps(str(out))
        )
    )

    def parse() -> Report:
        metrics = json.loads(out.read_text())["metrics"]
        duration = metrics["http_req_duration"]["values"]
        reqs = metrics["http_reqs"]["values"]
        failed = metrics.get("http_req_failed", {}).get("values", {}).get("passes")
        return Report(
            requests=int(reqs["count"]),
            rps=reqs["rate"],
            p50=duration["med"],
            p95=duration["p(95)"],
            p99=duration["p(99)"],
            max=duration["max"],
            dropped=int(metrics.get("dropped_iterations", {}).get("values", {}).get("count", 0)),
            failed=int(failed) if failed is not None else None,
        )

    env = {"K6_NO_USAGE_REPORT": "true", "K6_NO_COLOR": "true"}
    scheduled = s.rate * s.duration if s.mode == "stall" else None
    return Command([*argv, "run", "-q", str(script)], parse, model, env, scheduled=scheduled)


def locust_command(argv: list[str], url: str, s: Settings, workdir: Path) -> Command:
    locustfile, prefix = workdir / "locustfile.py", workdir / "locust"
    if s.mode == "stall":
        # Locust has no open model: the closest is users that each pace themselves.
        users = max(s.connections, math.ceil(s.rate / 20))
        wait, arg = "constant_throughput", repr(s.rate / users)
        model = f"closed, {users} users x constant_throughput({s.rate / users:g}/s)"
    else:
        users, wait, arg = s.connections, "constant", "0"
        model = f"closed, {users} users, wait_time constant(0)"
    locustfile.write_text(LOCUST_FILE.format(wait=wait, arg=arg))
    args = [
        "-f",
        str(locustfile),
        "--headless",
        "--only-summary",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{s.duration}s",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--json-file",
        str(prefix),  # Locust adds ".json"
        "--loglevel",
        "WARNING",
    ]

    def parse() -> Report:
        # The final figures: the CSV is rewritten only every second, so it misses the end.
        entries = json.loads(Path(f"{prefix}.json").read_text())
        histogram: Counter[float] = Counter()
        for entry in entries:
            histogram.update({float(ms): n for ms, n in entry["response_times"].items()})
        requests = sum(entry["num_requests"] for entry in entries)
        first = min(entry["start_time"] for entry in entries)
        last = max(entry["last_request_timestamp"] or first for entry in entries)
        report = Report(
            requests=requests,
            rps=requests / (last - first) if last > first else None,
            p50=histogram_percentile(histogram, 50),
            p95=histogram_percentile(histogram, 95),
            p99=histogram_percentile(histogram, 99),
            max=max(entry["max_response_time"] or 0.0 for entry in entries),
            failed=sum(entry["num_failures"] for entry in entries),
        )
        with contextlib.suppress(OSError, KeyError, ValueError):
            with open(f"{prefix}_stats.csv", newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
            in_csv = int(rows[0]["Request Count"])
            if in_csv != requests:
                report.notes.append(
                    f"its --csv stats file says {in_csv:,} requests, its final stats {requests:,}"
                )
        return report

    # Locust exits 1 when any request failed; its CSV is written all the same.
    return Command([*argv, *args], parse, model, ok_exits=(0, 1))


# -- one run ---------------------------------------------------------------------------------


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tool(
    tool: str,
    argv: list[str],
    nginx: Nginx,
    s: Settings,
    pin: list[str],
    workdir: Path,
    base_ms: float | None,
) -> Run:
    """Run one tool once, stalling nginx on the way in --stall mode; never raises."""
    run = Run(tool)
    out = workdir / "stdout.txt"
    try:
        if tool == "wrk":
            command = wrk_command(argv, nginx.url, s, workdir, out)
        elif tool in ("redline", "redline-py"):
            command = redline_command(argv, nginx.url, s, workdir)
            if tool == "redline-py":
                command.env["REDLINE_PURE_PYTHON"] = "1"
                command.model += ", Python lane"
        elif tool == "floor":
            command = floor_command(argv, nginx.url, s, out)
        elif tool == "k6":
            command = k6_command(argv, nginx.url, s, workdir)
        else:
            command = locust_command(argv, nginx.url, s, workdir)
    except Exception as exc:  # a broken adapter costs its row, not the benchmark
        run.error = f"could not prepare: {type(exc).__name__}: {exc}"
        return run
    run.model, run.scheduled = command.model, command.scheduled
    offset = nginx.settled_size()
    env = {**os.environ, **command.env}
    clock_before = epoch_offset_ns()
    cpu_before, start = children_cpu_s(), perf_counter()
    with out.open("wb") as stdout, (workdir / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen([*pin, *command.argv], stdout=stdout, stderr=stderr, env=env)
        try:
            if s.mode == "stall":
                run.stall = stall_nginx(nginx, offset, proc, s)
            proc.wait(timeout=max(0.0, start + s.duration + EXIT_GRACE_S - perf_counter()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            run.error = f"killed: still running {s.duration + EXIT_GRACE_S:.0f} s after start"
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if nginx.stopped:
                nginx.resume()
    run.wall_s = perf_counter() - start
    run.cpu_s = children_cpu_s() - cpu_before
    clock_after = epoch_offset_ns()
    lines = nginx.lines(offset, nginx.settled_size())
    statuses = nginx.statuses(lines)
    run.nginx_requests = sum(statuses.values())
    run.nginx_statuses = dict(statuses)
    if proc.returncode not in command.ok_exits and not run.error:
        run.error = f"exit code {proc.returncode}: {_tail(workdir)}"
    try:
        run.report = command.parse()
    except Exception as exc:  # the tool wrote no usable report: say which and why
        if isinstance(exc, FileNotFoundError) and exc.filename:
            reason = f"no report ({Path(exc.filename).name} not written)"
        else:
            reason = f"no report ({type(exc).__name__}: {exc})"
        run.error = f"{run.error}; {reason}" if run.error else f"{reason}; {_tail(workdir)}"
    if run.stall and base_ms is not None and command.scheduled:
        run.true = true_percentiles(s.rate, s.duration, base_ms, *run.stall)
    if s.mode == "stall":
        # perf_counter is CLOCK_MONOTONIC, one clock for every process on Linux: the tool's
        # intended times convert to nginx's epoch clock with an offset measured here.
        run.clock_drift_us = (clock_after - clock_before) / 1000
        run.server_true = server_truth(lines, (clock_before + clock_after) // 2)
    return run


def epoch_offset_ns(samples: int = 20) -> int:
    """time.time_ns() - time.perf_counter_ns(), from the tightest of ``samples`` readings: the
    wall-clock time is taken between two perf_counter readings, set against their middle."""
    best_spread, best = None, 0
    for _ in range(samples):
        before = time.perf_counter_ns()
        wall = time.time_ns()
        after = time.perf_counter_ns()
        if best_spread is None or after - before < best_spread:
            best_spread, best = after - before, wall - (before + after) // 2
    return best


def intended_from_uri(uri: bytes) -> int | None:
    """The ``i=`` of a logged URI (perf_counter_ns), or None when it has none or a bad one."""
    _, _, query = uri.partition(b"?")
    values = urllib.parse.parse_qs(query.decode("latin-1")).get("i", [])
    if len(values) != 1 or not (values[0].isascii() and values[0].isdigit()):
        return None
    return int(values[0])


def server_truth(lines: list[bytes], epoch_offset: int) -> dict[str, float]:
    """True latencies from nginx's log: $msec (ms, truncated) - intended time (epoch).

    $msec is nginx's cached clock, refreshed each time epoll_wait returns, truncated to the
    millisecond: at or before the answer's write, never after it. Lines without a usable
    ``i=`` (or $msec) and non-200 answers (a 499's $msec is when nginx saw the client go, not an
    answer) are left out and counted. Empty when no line carried ``i=``.
    """
    latencies: list[float] = []
    missing = other = 0
    for line in lines:
        fields = line.split(b" ")
        intended = intended_from_uri(fields[2]) if len(fields) == 3 else None
        if intended is None:
            missing += 1
            continue
        if fields[0] != b"200":
            other += 1
            continue
        seconds, dot, millis = fields[1].partition(b".")
        if not (seconds.isdigit() and dot and len(millis) == 3 and millis.isdigit()):
            missing += 1  # not nginx's $msec: counted with the unusable lines
            continue
        done_ms = int(seconds) * 1000 + int(millis)
        latencies.append(done_ms - (intended + epoch_offset) / 1e6)
    if not latencies:
        return {}
    latencies.sort()
    return {
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": latencies[-1],
        "min": latencies[0],
        "requests": len(latencies),
        "without_i": missing,
        "not_200": other,
    }


def stall_nginx(
    nginx: Nginx, offset: int, proc: subprocess.Popen[bytes], s: Settings
) -> tuple[float, float] | None:
    """SIGSTOP nginx --stall-at s after the first request, for --stall-for s; return when."""
    first = nginx.wait_for_traffic(offset, proc)
    if first is None:
        return None
    # The log is flushed every LOG_FLUSH_S, so `first` may be that late; the true percentiles
    # do not depend on it as long as the stall falls inside the run.
    time.sleep(max(0.0, first + s.stall_at - perf_counter()))
    if proc.poll() is not None:
        return None
    stop = nginx.pause()
    time.sleep(max(0.0, stop + s.stall_for - perf_counter()))
    resume = nginx.resume()
    return stop - first, resume - first


def true_percentiles(
    rate: int, duration: int, base_ms: float, stall_start: float, stall_end: float
) -> dict[str, float]:
    """Percentiles of what users waited, from the schedule: arrival k intended at k/rate."""
    latencies = []
    for k in range(rate * duration):
        t = k / rate
        if stall_start <= t < stall_end:
            latencies.append(max(base_ms, (stall_end - t) * 1000))
        else:
            latencies.append(base_ms)
    latencies.sort()
    return {
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": latencies[-1],
    }


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ordered list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def histogram_percentile(histogram: Counter[float], p: float) -> float | None:
    """Nearest-rank percentile of {value: count} (Locust's rounded response times)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(p / 100 * total)), 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return None


def _tail(workdir: Path, lines: int = 6) -> str:
    text = ""
    for name in ("stderr.txt", "stdout.txt"):
        path = workdir / name
        if path.exists() and (text := path.read_text(errors="replace").strip()):
            break
    return " | ".join(text.splitlines()[-lines:]) if text else "no output"


# -- rounds and medians ----------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    """One row from the rounds of a tool: the median of every figure the rounds have."""
    good = [run for run in runs if not run.error] or runs

    def med(values: list[Any]) -> Any:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    report = Report(
        **{
            name: med([getattr(run.report, name) for run in good])
            for name in (
                "requests",
                "rps",
                "p50",
                "p95",
                "p99",
                "max",
                "dropped",
                "failed",
                "self_cpu_us",
            )
        }
    )
    for number, run in enumerate(runs, 1):
        prefix = f"round {number}: " if len(runs) > 1 else ""
        report.notes += [prefix + note for note in run.report.notes]
    merged = Run(
        good[0].tool,
        model=good[0].model,
        cpu_s=med([run.cpu_s for run in good]),
        wall_s=med([run.wall_s for run in good]),
        nginx_requests=med([run.nginx_requests for run in good]),
        report=report,
        scheduled=good[0].scheduled,
        true={
            key: med([run.true.get(key) for run in good])
            for key in ("p50", "p95", "p99", "max")
            if any(run.true for run in good)
        },
        server_true={
            key: med([run.server_true.get(key) for run in good])
            for key in good[0].server_true
            if all(run.server_true for run in good)
        },
        clock_drift_us=med([run.clock_drift_us for run in good]),
        error="; ".join(dict.fromkeys(run.error for run in runs if run.error)),
        median_cpu_us=med([run.cpu_us_per_request for run in good]),
    )
    statuses: Counter[str] = Counter()
    for run in good:
        statuses.update(run.nginx_statuses)
    merged.nginx_statuses = dict(statuses)
    stalls = [run.stall for run in good if run.stall]
    if stalls:
        merged.stall = (med([a for a, _ in stalls]), med([b for _, b in stalls]))
    if len(runs) > 1:
        report.notes.append(
            "CPU us/request by round: " + ", ".join(fmt(run.cpu_us_per_request, 1) for run in runs)
        )
    return merged


def borrow_truth(rows: list[Run]) -> None:
    """Give open-model rows whose requests carried no intended time (k6: its
    constant-arrival-rate does not tell the script when an iteration was due) the server-side
    truth of redline's run of the same schedule (same rate, duration and stall timing)."""
    redline = next((r for r in rows if r.tool == "redline" and r.server_true), None)
    for run in rows:
        if run.server_true or not run.model.startswith("open"):
            continue
        if redline is not None:
            run.server_true, run.truth_from = redline.server_true, "redline's run"


# -- output ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_count(value: float | None) -> str:
    return "-" if value is None else f"{round(value):,}"


def latencies(report: Report) -> str:
    return "/".join(fmt(v) for v in (report.p50, report.p95, report.p99))


def render_efficiency(rows: list[Run], s: Settings, console: Console) -> bool | None:
    """Print the efficiency table; return redline's verdict (None when it did not run)."""
    table = Table(
        title=f"load generators, closed model: {s.connections} connections, {s.duration} s",
        caption=(
            "CPU: user+sys of the tool's process tree (start-up included), median of the rounds; "
            "per request: / nginx's count\nx wrk: CPU per request / wrk's; anchor: "
            "shared/ANCHORS.md (other run, same setup)"
        ),
    )
    for header, justify in (
        ("tool", "left"),
        ("requests (nginx)", "right"),
        ("requests (tool)", "right"),
        ("rps (tool)", "right"),
        ("CPU s", "right"),
        ("CPU us/req", "right"),
        ("x wrk", "right"),
        ("anchor us/req", "right"),
        ("p50/p95/p99 ms (tool)", "right"),
        ("anchor ms", "right"),
        ("target", "left"),
        ("result", "center"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    wrk = next((r for r in rows if r.tool == "wrk" and r.cpu_us_per_request), None)
    verdict = None
    for run in rows:
        per_request = run.cpu_us_per_request
        ratio = per_request / wrk.cpu_us_per_request if wrk and per_request else None
        target, result = "", Text("")
        if run.tool == "redline":
            target = f"<= {CPU_TARGET_US:.0f} us and <= {WRK_RATIO_TARGET}x wrk"
            verdict = bool(
                per_request
                and per_request <= CPU_TARGET_US
                and (ratio is None or ratio <= WRK_RATIO_TARGET)
                and not run.error
            )
            result = Text("PASS", style="bold green") if verdict else Text("FAIL", style="bold red")
        anchor = ANCHOR_CPU_US.get(run.tool)
        table.add_row(
            run.tool,
            fmt_count(run.nginx_requests),
            fmt_count(run.report.requests),
            fmt_count(run.report.rps),
            fmt(run.cpu_s),
            fmt(per_request, 1),
            f"{ratio:.2f}x" if ratio else "-",
            fmt(anchor, 1) if anchor else "",
            latencies(run.report),
            ANCHOR_LATENCY.get(run.tool, ""),
            target,
            result,
        )
    console.print(table)
    return verdict


def render_stall(rows: list[Run], s: Settings, base_ms: float, console: Console) -> None:
    table = Table(
        title=(
            f"1 server stall of {s.stall_for:g} s at {s.rate}/s for {s.duration} s "
            f"(stall {s.stall_at:g} s after the first request)"
        ),
        caption=(
            "server truth: nginx's $msec (1 ms resolution, truncated; nginx's cached clock, at "
            "or before the write) - the intended time each request carried in its URL (/?i=), "
            "drain after SIGCONT included;\nk6's requests carry none: its column is the truth "
            "of the same schedule, from redline's run (same rate, duration and stall timing).\n"
            f"bound: from the schedule, max(b, stall end - intended time), b = {base_ms:.3f} ms "
            "(unloaded median); a lower bound without the drain.\nReported: the tool's own "
            "figures. Medians of the rounds"
        ),
    )
    for header, justify in (
        ("tool", "left"),
        ("model", "left"),
        ("CPU\nus/req", "right"),
        ("sched-\nuled", "right"),
        ("sent\n(tool)", "right"),
        ("nginx", "right"),
        ("dropped", "right"),
        ("reported ms\np50/p95/p99", "right"),
        ("max\nms", "right"),
        ("server truth ms\np50/p95/p99", "right"),
        ("truth of", "left"),
        ("p95, p99\n/ truth", "right"),
        ("bound ms\np50/p95/p99", "right"),
        ("p95, p99\n/ bound", "right"),
    ):
        wrap = header in ("model", "truth of")
        table.add_column(header, justify=justify, no_wrap=not wrap)  # type: ignore[arg-type]
    for run in rows:
        truth = run.server_true
        source = "-"
        if truth:
            source = f"{run.truth_from}, same schedule" if run.truth_from else "this run"
        table.add_row(
            run.tool,
            run.model,
            fmt(run.cpu_us_per_request, 1),
            fmt_count(run.scheduled),
            fmt_count(run.report.requests),
            fmt_count(run.nginx_requests),
            fmt_count(run.report.dropped),
            three(asdict(run.report)),
            fmt(run.report.max, 1),
            three(truth),
            source,
            ratios(run.report, truth),
            three(run.true),
            ratios(run.report, run.true),
        )
    console.print(table)


def three(values: dict[str, Any]) -> str:
    """p50/p95/p99 to 0.1 ms, or "-"."""
    if not values or values.get("p50") is None:
        return "-"
    return "/".join(fmt(values.get(p), 1) for p in ("p50", "p95", "p99"))


def ratios(report: Report, reference: dict[str, float]) -> str:
    """Reported p95 and p99 over a reference's."""
    if not reference or report.p95 is None or report.p99 is None:
        return "-"
    return f"{report.p95 / reference['p95']:.2f}, {report.p99 / reference['p99']:.2f}"


def render_notes(rows: list[Run], skipped: dict[str, str], console: Console) -> None:
    lines = [f"{tool}: skipped, {why}" for tool, why in skipped.items()]
    for run in rows:
        if run.error:
            lines.append(f"{run.tool}: ERROR {run.error}")
        other = {k: v for k, v in run.nginx_statuses.items() if k != "200"}
        if other:
            lines.append(f"{run.tool}: nginx logged non-200 statuses {other}")
        if run.report.failed:
            lines.append(f"{run.tool}: the tool counted {fmt_count(run.report.failed)} failures")
        if run.nginx_requests is not None and run.report.requests is not None:
            gap = run.nginx_requests - run.report.requests
            if gap:
                lines.append(
                    f"{run.tool}: nginx answered {fmt_count(gap)} requests more than the tool "
                    "reports" + (" (fewer)" if gap < 0 else "")
                )
        if run.scheduled is not None and run.report.requests is not None:
            dropped = run.report.dropped or 0
            missing = run.scheduled - run.report.requests - dropped
            if missing:
                lines.append(
                    f"{run.tool}: {fmt_count(run.report.requests)} sent + {fmt_count(dropped)} "
                    f"dropped = {fmt_count(run.report.requests + dropped)}, "
                    f"{fmt_count(abs(missing))} {'fewer' if missing > 0 else 'more'} than the "
                    f"{fmt_count(run.scheduled)} scheduled"
                )
        if run.stall:
            lines.append(
                f"{run.tool}: nginx stopped {run.stall[0]:.3f}-{run.stall[1]:.3f} s after the "
                "first request"
            )
            if run.cpu_s is not None and run.wall_s:
                lines.append(
                    f"{run.tool}: {run.cpu_s:.2f} s CPU over {run.wall_s:.2f} s wall, "
                    f"{run.cpu_s / run.wall_s:.0%} of its one pinned core on average"
                )
        truth = run.server_true
        if truth and not run.truth_from:
            lines.append(
                f"{run.tool}: server truth from {fmt_count(truth['requests'])} answered "
                f"requests with i=; left out: {fmt_count(truth['without_i'])} without a usable "
                f"i=, {fmt_count(truth['not_200'])} not 200; lowest {truth['min']:.2f} ms "
                "($msec is truncated to the ms); epoch - perf_counter offset moved "
                f"{fmt(run.clock_drift_us, 1)} us over the run"
            )
        elif truth:
            lines.append(
                f"{run.tool}: its requests carry no intended time; truth column: {run.truth_from}"
                " of the same schedule, not this run"
            )
        if run.report.self_cpu_us is not None:
            lines.append(
                f"{run.tool}: self-reported {run.report.self_cpu_us:.1f} us CPU/request "
                "(generator.cpu_us_per_request)"
            )
        lines += [f"{run.tool}: {note}" for note in run.report.notes]
    floor = next((r.cpu_us_per_request for r in rows if r.tool == "floor"), None)
    if floor:
        reach = "out of reach for any client" if floor > CPU_TARGET_US else "within reach"
        lines.append(
            f"floor: a request's system calls alone cost {floor:.1f} us here, so "
            f"<= {CPU_TARGET_US:.0f} us is {reach} on this machine"
            + "".join(
                f"; {r.tool} {r.cpu_us_per_request / floor:.2f}x the floor"
                for r in rows
                if r.tool != "floor" and r.cpu_us_per_request
            )
        )
    if lines:
        console.print("[bold]Notes[/]")
        for line in lines:
            console.print(f"- {line}", markup=False, highlight=False)


def machine_info(nginx_binary: str, binaries: dict[str, list[str] | None], pinning: str) -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"nginx": _version([nginx_binary, "-v"])}
    flags = {
        "wrk": ["-v"],
        "k6": ["version"],
        "locust": ["--version"],
        "redline": ["--version"],
        "redline-py": ["--version"],
    }
    for tool, argv in binaries.items():
        if tool == "floor":
            versions[tool] = "benchmarks/floor_client.c" if argv else "missing (no cc)"
            continue
        versions[tool] = _version([*argv, *flags[tool]]) if argv else "missing"
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu_pinning": pinning,
        "load_avg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": versions,
    }


def prepare_redline() -> str:
    """Compile redline's bytecode as an installed wheel has it; say which fast lane runs.

    pip compiles a wheel's modules at install, but an editable install leaves them to the
    first import, and with PYTHONDONTWRITEBYTECODE set (common in containers and CI) every
    start compiles them again: about 0.1 s of CPU per run that no user of a released redline
    pays, charged to redline's start-up here. Locust, k6 and wrk come installed.
    """
    spec = importlib.util.find_spec("redline")
    notes = []
    if spec is not None and spec.submodule_search_locations:
        package = spec.submodule_search_locations[0]
        done = subprocess.run(
            [sys.executable, "-m", "compileall", "-q", package], capture_output=True, text=True
        )
        notes.append("bytecode compiled" if done.returncode == 0 else "bytecode NOT compiled")
    probe = subprocess.run(
        [sys.executable, "-c", "from redline.load._flow import Lane; print(Lane.__name__)"],
        capture_output=True,
        text=True,
    )
    lane = probe.stdout.strip()
    notes.append(
        {"CompiledLaneConnection": "lane in C", "LaneConnection": "lane in Python"}.get(
            lane, f"lane unknown ({probe.stderr.strip()[-200:]})"
        )
    )
    return ", ".join(notes)


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    first = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return first[0].strip() if first else "unknown"


def as_json(run: Run) -> dict[str, Any]:
    return {**asdict(run), "cpu_us_per_request": run.cpu_us_per_request}


# -- main ------------------------------------------------------------------------------------


def pinning() -> tuple[list[str], list[str], str]:
    """(prefix for the tools, prefix for nginx, description)."""
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0))
    if taskset is None:
        return [], [], "not pinned: taskset not found"
    if TOOL_CPU not in cpus or SERVER_CPU not in cpus:
        return [], [], f"not pinned: CPUs {TOOL_CPU} and {SERVER_CPU} are not both available"
    # This process only waits and polls; it sits with nginx, away from the measured tool.
    os.sched_setaffinity(0, {SERVER_CPU})
    return (
        [taskset, "-c", str(TOOL_CPU)],
        [taskset, "-c", str(SERVER_CPU)],
        f"pinned: tools on CPU {TOOL_CPU}, nginx and this script on CPU {SERVER_CPU}",
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, run order")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument(
        "--connections",
        type=int,
        default=50,
        help="connections/VUs/users (50); --stall: pre-allocated VUs",
    )
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; medians (1)")
    parser.add_argument("--stall", action="store_true", help="accuracy under a server stall")
    parser.add_argument("--rate", type=int, default=2000, help="--stall: arrivals/s (2000)")
    parser.add_argument(
        "--max-vus",
        type=int,
        help="--stall: most VUs (default: enough for the stall's arrivals, at least 2000)",
    )
    parser.add_argument(
        "--stall-at", type=float, default=3.0, help="--stall: seconds after the first request (3)"
    )
    parser.add_argument("--stall-for", type=float, default=1.0, help="--stall: seconds (1)")
    parser.add_argument("--json", type=Path, help="also write every run to this JSON file")
    args = parser.parse_args()
    if args.duration < 1 or args.connections < 1 or args.repeat < 1 or args.rate < 1:
        parser.error("--duration, --connections, --repeat and --rate must be at least 1")
    if args.stall and args.stall_at + args.stall_for > args.duration - 0.5:
        parser.error(
            f"--stall-at {args.stall_at:g} + --stall-for {args.stall_for:g} must end at least "
            f"0.5 s before --duration {args.duration}; lower them or raise --duration"
        )
    if args.stall and "floor" in args.tools.split(","):
        parser.error("--stall: the floor client has no open model; leave floor out of --tools")
    unknown = [t for t in args.tools.split(",") if t not in TOOLS + EXTRA_TOOLS]
    if unknown:
        choices = ", ".join(TOOLS + EXTRA_TOOLS)
        parser.error(f"unknown tool(s) {', '.join(unknown)}; choose from {choices}")
    return args


def main() -> int:
    args = parse_args()
    s = Settings(
        mode="stall" if args.stall else "efficiency",
        duration=args.duration,
        connections=args.connections,
        rate=args.rate,
        # A stalled server holds every arrival of the stall: each needs its own VU.
        max_vus=args.max_vus or max(2000, math.ceil(args.rate * (args.stall_for + 0.25))),
        stall_at=args.stall_at,
        stall_for=args.stall_for,
    )
    console = Console(width=None if sys.stdout.isatty() else 200)
    nginx_binary = os.environ.get("NGINX") or find_binary("nginx", "/usr/sbin/nginx")
    if nginx_binary is None:
        console.print("[red]no nginx: install it (apt-get install nginx) or set NGINX=/path[/]")
        return 2
    wanted = list(dict.fromkeys(args.tools.split(",")))
    # Cleaned up when the object goes, at the latest at exit.
    floor_dir = tempfile.TemporaryDirectory(prefix="load-bench-floor-")
    binaries = tool_binaries(Path(floor_dir.name) if "floor" in wanted else None)
    skipped = {t: "not found on this machine" for t in wanted if binaries[t] is None}
    tools = [t for t in wanted if binaries[t] is not None]
    tool_pin, server_pin, pinned = pinning()
    machine = machine_info(nginx_binary, {t: binaries[t] for t in wanted}, pinned)
    if any(t.startswith("redline") for t in tools):
        machine["redline"] = prepare_redline()
    console.print(
        "  ".join(f"[bold]{k}[/]: {v}" for k, v in machine.items() if k != "versions"),
        highlight=False,
    )
    console.print(
        "[bold]versions[/]: " + "; ".join(f"{k} {v}" for k, v in machine["versions"].items()),
        highlight=False,
    )
    runs: dict[str, list[Run]] = {tool: [] for tool in tools}
    base_ms = None
    with tempfile.TemporaryDirectory(prefix="load-bench-") as name:
        workdir = Path(name)
        try:
            nginx = Nginx(nginx_binary, workdir, server_pin, s.mode)
        except (OSError, RuntimeError) as exc:
            console.print(Text(f"could not start nginx ({nginx_binary}): {exc}", style="red"))
            return 2
        try:
            if s.mode == "stall":
                base_ms = nginx.base_latency_ms()
                console.print(f"[dim]nginx on {nginx.url}; unloaded median {base_ms:.3f} ms[/]")
            for round_ in range(1, args.repeat + 1):
                for tool in tools:
                    console.print(f"[dim]round {round_}/{args.repeat}: {tool}...[/]")
                    rundir = workdir / f"{tool}-{round_}"
                    rundir.mkdir()
                    argv = binaries[tool]
                    assert argv is not None
                    run = run_tool(tool, argv, nginx, s, tool_pin, rundir, base_ms)
                    runs[tool].append(run)
                    if run.error:
                        console.print(Text(f"{tool}: {run.error}", style="yellow"))
        finally:
            nginx.stop()
    rows = [median_run(runs[tool]) for tool in tools]
    if s.mode == "stall":
        borrow_truth(rows)
    machine["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    verdict = None
    if s.mode == "stall":
        assert base_ms is not None
        render_stall(rows, s, base_ms, console)
    else:
        verdict = render_efficiency(rows, s, console)
    render_notes(rows, skipped, console)
    if args.json:
        report = {
            "machine": machine,
            "settings": asdict(s),
            "base_latency_ms": base_ms,
            "skipped": skipped,
            "medians": [as_json(row) for row in rows],
            "runs": {tool: [as_json(run) for run in tool_runs] for tool, tool_runs in runs.items()},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"[dim]results written to {args.json}[/]")
    return 1 if verdict is False else 0


if __name__ == "__main__":
    sys.exit(main())
