"""HTTP cache benchmark: what a 304 without the handler and a response-cache hit buy over
running the handler, measured with redline's own load engine. Usage:

    python benchmarks/http_cache_bench.py [--cost query|cpu|sleep|all] [--duration 8]
                                          [--rounds 3] [--vus 32] [--json out.json]

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
- ``cached``: the response cache on a two-tier ``redline.cache`` (L1 + a throwaway Redis):
  every request after the first is a hit.

Each round runs every variant for ``--duration`` seconds with ``--vus`` looping users (closed
model, no think time), in an order rotated per round; the table shows median requests/s,
latency, the server's CPU per request, and the ratio to ``handler``. The target is >= 5x.
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
VARIANTS = ("handler", "etag", "304", "cached")
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
            else:
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
        validator=version if variant == "304" else None,
    )
    options: dict[str, Any] = {"policies": {"/funds/*": policy}}
    if variant == "cached":
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
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else float("nan")


def measure(
    server: Server, duration: float, vus: int, headers: dict[str, str], status: int, round_: int
) -> Run:
    from redline.load import Check, ConstantVUs, Plan, Request, Scenario, run

    flow = [Request(PATH, name=server.variant, headers=headers, check=Check(status=status))]
    plan = Plan(scenarios=(Scenario("bench", ConstantVUs(vus, duration), flow),))
    cpu = server.cpu_seconds()
    result = asyncio.run(run(plan, server.url))
    cpu = server.cpu_seconds() - cpu
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
        cpu,
    )


def bench(cost: str, args: argparse.Namespace, env: dict[str, str], console: Console) -> list[Run]:
    pin_tool, pin_server = pinning()
    if pin_tool:
        os.sched_setaffinity(0, {int(pin_tool[-1])})
    runs: list[Run] = []
    with servers(list(VARIANTS), cost, env, pin_server) as started:
        conditional: dict[str, dict[str, str]] = {s.variant: {} for s in started}
        for server in started:
            if server.variant == "304":
                etag = etag_of(server)
                if not etag:
                    raise SystemExit("the 304 variant sent no ETag")
                conditional["304"] = {"If-None-Match": etag}
        # One unmeasured warm-up each: pools filled, caches loaded.
        for server in started:
            measure(
                server,
                1.0,
                args.vus,
                conditional[server.variant],
                304 if server.variant == "304" else 200,
                -1,
            )
        for round_ in range(args.rounds):
            order = started[round_ % len(started) :] + started[: round_ % len(started)]
            for server in order:
                run = measure(
                    server,
                    args.duration,
                    args.vus,
                    conditional[server.variant],
                    304 if server.variant == "304" else 200,
                    round_,
                )
                console.print(
                    f"  {cost:5} round {round_} {server.variant:8} {run.rps:9,.0f} req/s"
                    f"  p99 {run.p99_ms:7.2f} ms  {run.cpu_us_per_request:7.1f} us CPU/req"
                    f"  failed {run.failed}"
                )
                runs.append(run)
    return runs


def table(runs: list[Run], cost: str) -> tuple[Table, dict[str, Any]]:
    rows: dict[str, Any] = {}
    base = {r.round: r.rps for r in runs if r.variant == "handler"}
    out = Table(title=f"cost = {cost}", title_justify="left")
    for heading in ("variant", "req/s", "p50 ms", "p99 ms", "CPU us/req", "vs handler", "failed"):
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
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.cost, args.port)
        return 0

    from redline._servers import PostgresServer, RedisServer

    console = Console()
    costs = ("query", "cpu", "sleep") if args.cost == "all" else (args.cost,)
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "settings": {"duration": args.duration, "rounds": args.rounds, "vus": args.vus},
    }
    ok = True
    with PostgresServer() as postgres, RedisServer() as redis:
        dsn = postgres.create_database("bench")
        load_data(dsn)
        env = {"BENCH_DSN": dsn, "BENCH_REDIS": redis.url}
        for cost in costs:
            runs = bench(cost, args, env, console)
            out, rows = table(runs, cost)
            console.print(out)
            results[cost] = {"variants": rows, "runs": [asdict(r) for r in runs]}
            for variant in ("304", "cached") if cost != "sleep" else ():
                ratio = rows.get(variant, {}).get("ratio")
                if ratio is None or ratio < TARGET:
                    ok = False
                    console.print(f"[red]{cost}/{variant}: {ratio}x is under the {TARGET}x target")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
