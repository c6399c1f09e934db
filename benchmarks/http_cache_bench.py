"""HTTP cache benchmark: what a 304 without the handler and a response-cache hit buy over
running the handler, measured with redline's own load engine. Usage:

    python benchmarks/http_cache_bench.py [--cost query|cpu|sleep|all] [--duration 8]
                                          [--rounds 3] [--vus 32] [--json out.json]
                                          [--variants handler,304,...]
    python benchmarks/http_cache_bench.py --in-process [--batches 80]

The route is ``GET /funds/{fund_id}/summary``: a fund's capital calls totalled by status,
as JSON (about 1 KB). Its cost, ``--cost``:

- ``query``: one real PostgreSQL query (a throwaway server, started here, with 100 funds and
  200 000 capital calls; an index on ``fund_id``) aggregating the fund's 2 000 calls;
- ``cpu``: a simulated 5 ms of work on the CPU (rendering, serialising, computing), as the
  issue allows;
- ``sleep``: a simulated 5 ms wait (``asyncio.sleep``, an I/O-bound handler). With enough
  users a wait costs the server no throughput, so this one shows latency gains only.

Variants, each served by its own uvicorn process (uvloop, httptools, one worker, pinned to
the last CPU; the load generator runs here, pinned to CPU 0):

- ``handler``: the bare app, every request runs the handler;
- ``etag``: ``HTTPCacheMiddleware`` with a policy, clients without a validator: the handler
  runs and the body is hashed into an ETag (the middleware's cost on a miss);
- ``304``: the same, but the route declares a validator (``SELECT version FROM funds WHERE
  id = $1``, a primary-key lookup, for ``query``; an in-memory version otherwise) and
  clients send ``If-None-Match``: answered 304 before the handler runs;
- ``304-remembered``: ``304`` with ``validator_ttl``: the validator's answer is kept in the
  response cache under the route's tags (a write path's ``invalidate_tags`` makes it current
  again), so the 304 skips even the validator's query;
- ``cached``: the response cache on a two-tier ``redline.cache`` (L1 + a throwaway Redis):
  every request after the first is a hit.

Each round runs every variant for ``--duration`` seconds with ``--vus`` looping users (closed
model, no think time), in an order rotated per round; the table shows median requests/s,
latency, the CPU per request of the app server, of PostgreSQL (all its processes), of Redis
and of the load generator (this process), and the ratio to ``handler``. The target is >= 5x.
Each run also prints every process's CPU use as a share of one core: on a two-core machine a
process near 100 % (or a sum near 200 %) is what bounds the throughput, and when that is the
load generator the figure says more about it than about the server.

``--in-process`` measures the CPU one request costs in each variant's app instead, called as
an ASGI callable in this process (no server, no network, no PostgreSQL: the handler builds the
same JSON without a simulated cost, the validator returns a constant), the minimum over
interleaved batches, as the machine may be shared. ``null`` is an app that answers at once:
the harness's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

TARGET = 5.0
VARIANTS = ("handler", "etag", "304", "304-remembered", "cached")
# Variants whose clients revalidate with If-None-Match and expect 304s.
CONDITIONAL = ("304", "304-remembered")
FUND = 7
PATH = f"/funds/{FUND}/summary"
FUNDS, CALLS_PER_FUND = 100, 2000
STATUSES = ("draft", "issued", "paid", "overdue", "cancelled")

SUMMARY_SQL = """
SELECT status, count(*) AS calls, sum(amount)::float8 AS amount,
       min(due_date)::text AS first_due, max(due_date)::text AS last_due
FROM capital_calls WHERE fund_id = $1 GROUP BY status ORDER BY status
"""


# -- the served app -------------------------------------------------------------------------


def burn(seconds: float) -> None:
    """Keep the CPU busy for ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def build_app(variant: str, cost: str) -> Any:
    import asyncpg
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    state: dict[str, Any] = {}

    async def summary(request: Any) -> JSONResponse:
        fund_id = int(request.path_params["fund_id"])
        if cost != "query":
            if cost == "sleep":
                await asyncio.sleep(0.005)
            elif cost == "cpu":
                burn(0.005)
            rows = [
                {
                    "status": s,
                    "calls": 400,
                    "amount": 1.0e6,
                    "first_due": "2026-01-01",
                    "last_due": "2026-12-31",
                }
                for s in STATUSES
            ]
        else:
            async with state["pool"].acquire() as connection:
                rows = [dict(r) for r in await connection.fetch(SUMMARY_SQL, fund_id)]
        return JSONResponse({"fund_id": fund_id, "by_status": rows})

    async def version(request: Any) -> int:
        if cost != "query":
            return 1
        async with state["pool"].acquire() as connection:
            return await connection.fetchval(
                "SELECT version FROM funds WHERE id = $1", int(request.path_params["fund_id"])
            )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        if cost == "query":
            state["pool"] = await asyncpg.create_pool(
                os.environ["BENCH_DSN"], min_size=10, max_size=10
            )
        yield
        if "pool" in state:
            await state["pool"].close()
        if "cache" in state:
            await state["cache"].aclose()

    app: Any = Starlette(routes=[Route("/funds/{fund_id:int}/summary", summary)], lifespan=lifespan)
    if variant == "handler":
        return app
    from redline.cache import Cache
    from redline.http import CachePolicy, HTTPCacheMiddleware

    policy = CachePolicy(
        visibility="public",
        max_age=0 if variant != "cached" else 60,
        s_maxage=60,
        tags=("fund:{fund_id}",),
        validator=version if variant in CONDITIONAL else None,
        validator_ttl=300 if variant == "304-remembered" else None,
    )
    options: dict[str, Any] = {"policies": {"/funds/*": policy}}
    if variant in ("cached", "304-remembered"):
        state["cache"] = Cache.from_url(os.environ["BENCH_REDIS"], namespace="bench")
        options["cache"] = state["cache"]
    return HTTPCacheMiddleware(app, **options)


def serve(variant: str, cost: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        build_app(variant, cost),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


# -- in-process -----------------------------------------------------------------------------


def in_process(variants: tuple[str, ...], batches: int, console: Console) -> dict[str, float]:
    """Minimum CPU µs per request of each variant's app as an ASGI callable, and of ``null``."""
    from redline._servers import RedisServer

    async def null(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def measure_all() -> dict[str, float]:
        request = [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"redline-load"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip"),
        ]
        apps = {"null": null} | {v: build_app(v, "none") for v in variants}
        calls, statuses = {}, {}
        for name, app in apps.items():
            call = _asgi_call(app)
            first = await call(request)
            etag = dict(first[0]["headers"]).get(b"etag")
            headers = request + ([(b"if-none-match", etag)] if name in CONDITIONAL else [])
            statuses[name] = (await call(headers))[0]["status"]
            calls[name] = (call, headers)
        best = dict.fromkeys(apps, float("inf"))
        size = 200
        for _ in range(batches):
            for name, (call, headers) in calls.items():
                started = time.process_time()
                for _ in range(size):
                    await call(headers)
                best[name] = min(best[name], (time.process_time() - started) / size * 1e6)
        for name, us in best.items():
            console.print(f"  {name:16} {statuses[name]}  {us:7.1f} us CPU/request")
        return best

    with RedisServer() as redis:
        os.environ["BENCH_REDIS"] = redis.url
        return asyncio.run(measure_all())


def _asgi_call(app: Any) -> Any:
    async def call(headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent

    return call


# -- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    variant: str
    cost: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return process_cpu(self.process.pid)


def process_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of ``pid``; ``children`` adds its exited, waited-for ones."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Others:
    """The other processes a run spends CPU in: PostgreSQL's, Redis, and this one."""

    postmaster: int
    redis: int | None

    @classmethod
    def find(cls, postgres: Any, redis_port: int) -> Others:
        postmaster = int((Path(postgres.data_dir) / "postmaster.pid").read_text().split()[0])
        # redis-server retitles itself "redis-server 127.0.0.1:PORT"; its argv has the port too.
        redis = next(
            (
                int(entry.name)
                for entry in Path("/proc").iterdir()
                if entry.name.isdigit()
                and "redis-server" in (line := _cmdline(entry))
                and str(redis_port) in line
            ),
            None,
        )
        return cls(postmaster, redis)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of PostgreSQL (postmaster, its exited children, live backends),
        Redis and this process (the load generator)."""
        postgres = process_cpu(self.postmaster, children=True)
        postgres += sum(process_cpu(pid) for pid in children_of(self.postmaster))
        return {
            "postgres": postgres,
            "redis": float("nan") if self.redis is None else process_cpu(self.redis),
            "loadgen": time.process_time(),
        }


def _cmdline(entry: Path) -> str:
    try:
        return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pinning() -> tuple[list[str], list[str]]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not shutil_which("taskset"):
        return [], []
    return ["taskset", "-c", str(cpus[0])], ["taskset", "-c", str(cpus[-1])]


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


@contextlib.contextmanager
def servers(
    variants: list[str], cost: str, env: dict[str, str], pin: list[str]
) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for variant in variants:
            port = free_port()
            argv = [
                *pin,
                sys.executable,
                __file__,
                "--serve",
                variant,
                "--cost",
                cost,
                "--port",
                str(port),
            ]
            process = subprocess.Popen(argv, env={**os.environ, **env})
            started.append(Server(variant, cost, port, process))
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


def wait_until_up(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(server.url + PATH, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {server.variant} server did not come up on {server.url}")
        time.sleep(0.1)


def etag_of(server: Server) -> str | None:
    with urllib.request.urlopen(server.url + PATH, timeout=5) as response:
        return response.headers.get("ETag")


# -- data -----------------------------------------------------------------------------------


def load_data(dsn: str) -> None:
    import asyncpg

    async def main() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(
                "CREATE TABLE funds (id int PRIMARY KEY, name text NOT NULL,"
                " version int NOT NULL DEFAULT 1);"
                "CREATE TABLE capital_calls (id bigserial PRIMARY KEY, fund_id int NOT NULL"
                " REFERENCES funds, status text NOT NULL, amount numeric(14, 2) NOT NULL,"
                " due_date date NOT NULL)"
            )
            await connection.copy_records_to_table(
                "funds",
                records=[(i, f"Fund {i}", 1) for i in range(1, FUNDS + 1)],
                columns=["id", "name", "version"],
            )
            start = datetime.date(2026, 1, 1)
            records = [
                (
                    fund,
                    STATUSES[n % len(STATUSES)],
                    (n * 7919 % 100_000) + 0.5,
                    start + datetime.timedelta(days=n % 365),
                )
                for fund in range(1, FUNDS + 1)
                for n in range(CALLS_PER_FUND)
            ]
            await connection.copy_records_to_table(
                "capital_calls",
                records=records,
                columns=["fund_id", "status", "amount", "due_date"],
            )
            await connection.execute("CREATE INDEX ON capital_calls (fund_id); ANALYZE")
        finally:
            await connection.close()

    asyncio.run(main())


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Run:
    cost: str
    variant: str
    round: int
    requests: int
    failed: int
    rps: float
    p50_ms: float
    p99_ms: float
    wall_s: float
    cpu_s: float  # the app server
    postgres_s: float
    redis_s: float
    loadgen_s: float

    def per_request(self, seconds: float) -> float:
        return seconds / self.requests * 1e6 if self.requests else float("nan")

    @property
    def cpu_us_per_request(self) -> float:
        return self.per_request(self.cpu_s)

    def busy(self) -> str:
        """Each process's CPU as a share of one core over the run."""
        shares = {
            "app": self.cpu_s,
            "postgres": self.postgres_s,
            "redis": self.redis_s,
            "loadgen": self.loadgen_s,
        }
        return " ".join(f"{name} {seconds / self.wall_s:4.0%}" for name, seconds in shares.items())


def measure(
    server: Server,
    others: Others,
    duration: float,
    vus: int,
    headers: dict[str, str],
    status: int,
    round_: int,
) -> Run:
    from redline.load import Check, ConstantVUs, Plan, Request, Scenario, run

    flow = [Request(PATH, name=server.variant, headers=headers, check=Check(status=status))]
    plan = Plan(scenarios=(Scenario("bench", ConstantVUs(vus, duration), flow),))
    cpu, before, started = server.cpu_seconds(), others.cpu(), time.monotonic()
    result = asyncio.run(run(plan, server.url))
    wall = time.monotonic() - started
    cpu, after = server.cpu_seconds() - cpu, others.cpu()
    summary = result.summary
    latency = summary["latency_ms"]
    return Run(
        server.cost,
        server.variant,
        round_,
        summary["requests"]["total"],
        summary["requests"]["failed"] + summary["requests"].get("checks_failed", 0),
        summary["rps"],
        latency["p50"],
        latency["p99"],
        wall,
        cpu,
        after["postgres"] - before["postgres"],
        after["redis"] - before["redis"],
        after["loadgen"] - before["loadgen"],
    )


def bench(
    cost: str, args: argparse.Namespace, env: dict[str, str], others: Others, console: Console
) -> list[Run]:
    pin_tool, pin_server = pinning()
    if pin_tool:
        os.sched_setaffinity(0, {int(pin_tool[-1])})
    runs: list[Run] = []
    with servers(list(args.variants), cost, env, pin_server) as started:
        conditional: dict[str, dict[str, str]] = {s.variant: {} for s in started}
        for server in started:
            if server.variant in CONDITIONAL:
                etag = etag_of(server)
                if not etag:
                    raise SystemExit(f"the {server.variant} variant sent no ETag")
                conditional[server.variant] = {"If-None-Match": etag}

        def once(server: Server, duration: float, round_: int) -> Run:
            status = 304 if server.variant in CONDITIONAL else 200
            headers = conditional[server.variant]
            return measure(server, others, duration, args.vus, headers, status, round_)

        # One unmeasured warm-up each: pools filled, caches loaded.
        for server in started:
            once(server, 1.0, -1)
        for round_ in range(args.rounds):
            order = started[round_ % len(started) :] + started[: round_ % len(started)]
            for server in order:
                run = once(server, args.duration, round_)
                console.print(
                    f"  {cost:5} round {round_} {server.variant:14} {run.rps:9,.0f} req/s"
                    f"  p99 {run.p99_ms:7.2f} ms  {run.cpu_us_per_request:7.1f} us app CPU/req"
                    f"  busy: {run.busy()}  failed {run.failed}"
                )
                runs.append(run)
    return runs


def table(runs: list[Run], cost: str) -> tuple[Table, dict[str, Any]]:
    rows: dict[str, Any] = {}
    base = {r.round: r.rps for r in runs if r.variant == "handler"}
    out = Table(title=f"cost = {cost}", title_justify="left")
    headings = ("variant", "req/s", "p50 ms", "p99 ms", "CPU us/req: app", "postgres", "redis")
    for heading in (*headings, "load gen", "vs handler", "failed"):
        out.add_column(heading, justify="left" if heading == "variant" else "right")
    for variant in VARIANTS:
        mine = [r for r in runs if r.variant == variant]
        if not mine:
            continue
        ratios = [r.rps / base[r.round] for r in mine if base.get(r.round)]
        rows[variant] = {
            "rps": statistics.median(r.rps for r in mine),
            "p50_ms": statistics.median(r.p50_ms for r in mine),
            "p99_ms": statistics.median(r.p99_ms for r in mine),
            "cpu_us_per_request": statistics.median(r.cpu_us_per_request for r in mine),
            "postgres_us_per_request": statistics.median(r.per_request(r.postgres_s) for r in mine),
            "redis_us_per_request": statistics.median(r.per_request(r.redis_s) for r in mine),
            "loadgen_us_per_request": statistics.median(r.per_request(r.loadgen_s) for r in mine),
            "ratio": statistics.median(ratios) if ratios else None,
            "ratio_range": [min(ratios), max(ratios)] if ratios else None,
            "failed": sum(r.failed for r in mine),
        }
        row = rows[variant]
        ratio = (
            f"{row['ratio']:.1f}x ({row['ratio_range'][0]:.1f}-{row['ratio_range'][1]:.1f})"
            if row["ratio"]
            else "-"
        )
        out.add_row(
            variant,
            f"{row['rps']:,.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['cpu_us_per_request']:.0f}",
            f"{row['postgres_us_per_request']:.0f}",
            f"{row['redis_us_per_request']:.0f}",
            f"{row['loadgen_us_per_request']:.0f}",
            ratio,
            str(row["failed"]),
        )
    return out, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cost", choices=("query", "cpu", "sleep", "all"), default="all")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vus", type=int, default=32)
    parser.add_argument(
        "--variants",
        type=lambda text: tuple(text.split(",")),
        default=VARIANTS,
        help=f"comma-separated, from {','.join(VARIANTS)} (handler is always run)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--in-process", action="store_true", help="CPU per request in-process, no servers"
    )
    parser.add_argument("--batches", type=int, default=80, help="for --in-process")
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}")
    args.variants = tuple(v for v in VARIANTS if v == "handler" or v in args.variants)
    if args.serve:
        serve(args.serve, args.cost, args.port)
        return 0

    from redline._servers import PostgresServer, RedisServer

    console = Console(width=150)
    if args.in_process:
        best = in_process(args.variants, args.batches, console)
        if args.json:
            args.json.write_text(json.dumps({"in_process_us": best}, indent=2))
        return 0
    costs = ("query", "cpu", "sleep") if args.cost == "all" else (args.cost,)
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "settings": {
            "duration": args.duration,
            "rounds": args.rounds,
            "vus": args.vus,
            "variants": args.variants,
        },
    }
    ok = True
    with PostgresServer() as postgres, RedisServer() as redis:
        dsn = postgres.create_database("bench")
        load_data(dsn)
        env = {"BENCH_DSN": dsn, "BENCH_REDIS": redis.url}
        others = Others.find(postgres, redis.port)
        for cost in costs:
            runs = bench(cost, args, env, others, console)
            out, rows = table(runs, cost)
            console.print(out)
            results[cost] = {"variants": rows, "runs": [asdict(r) for r in runs]}
            for variant in (*CONDITIONAL, "cached") if cost != "sleep" else ():
                if variant not in args.variants:
                    continue
                ratio = rows.get(variant, {}).get("ratio")
                if ratio is None or ratio < TARGET:
                    ok = False
                    console.print(f"[red]{cost}/{variant}: {ratio}x is under the {TARGET}x target")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
