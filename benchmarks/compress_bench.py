"""Compression benchmark: ``CompressionMiddleware`` beside Starlette's ``GZipMiddleware`` on a
~20 KB JSON response, plus zstd and br. Usage:

    python benchmarks/compress_bench.py [--level 6] [--batches 15] [--quick]
                                        [--server] [--duration 5] [--json out.json]

Body: 22.5 KB of JSON list rows (ids, names, e-mails, flags), the size of an API list page,
answered by a Starlette ``Response`` with ``application/json``.

Variants: ``identity`` (no middleware); ``starlette-pass`` and ``redline-pass``, each
middleware with a client sending ``Accept-Encoding: identity`` (what the middleware itself
costs, with no codec); ``starlette-gzip`` (``GZipMiddleware`` at ``--level``),
``redline-gzip`` (``CompressionMiddleware`` offering only gzip at the same level),
``redline-zstd`` and ``redline-br`` (its default levels, zstd 3 and br 4). Each request sends
the Accept-Encoding its variant needs, and its response is decoded and checked against the
body before anything is timed.

In-process (always): the apps are called as ASGI callables in a loop, no server, no sockets.
Each variant is calibrated to a batch of about 0.1 s; ``--batches`` batches per variant run
interleaved (so the machine's noise falls on all alike), and the CPU time
(``time.process_time``) per request of the fastest batch is reported (noise only ever adds),
with requests/s of one core, the ratio to ``starlette-gzip`` and the codec alone on the same
body (``zlib.compress`` etc., timed the same way: the floor any middleware pays; inside a
request it costs more, its buffers no longer hot in cache). Sizes and size ratios come from
the bytes the middleware actually sent.

``--server``: the same apps each under one uvicorn worker (uvloop, httptools, no access log),
all running at once pinned with ``taskset`` to the last CPU, each loaded by its own
``wrk -t1 -c8`` (pinned to CPU 0) sending the variant's Accept-Encoding, all for the same
``--duration`` s, after a 1 s warm-up round; 3 rounds (1 with ``--quick``), medians. Sharing
the one server CPU, each server gets an equal slice of it, so whatever else the machine runs
slows every variant alike and throughputs compare what a request costs; server CPU per
request is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gzip
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import brotli
import zstandard
from rich.console import Console
from rich.table import Table

VARIANTS = (
    "identity",
    "starlette-pass",
    "redline-pass",
    "starlette-gzip",
    "redline-gzip",
    "redline-zstd",
    "redline-br",
)
ACCEPT = {
    "identity": "identity",
    "starlette-pass": "identity",
    "redline-pass": "identity",
    "starlette-gzip": "gzip",
    "redline-gzip": "gzip",
    "redline-zstd": "zstd",
    "redline-br": "br",
}
BODY = json.dumps(
    [
        {"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": i % 3 == 0}
        for i in range(280)
    ]
).encode()


def build_app(variant: str, level: int) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.responses import Response
    from starlette.routing import Route

    from redline.http._compress import CompressionMiddleware

    async def data(request: Any) -> Response:
        return Response(BODY, media_type="application/json")

    app: Any = Starlette(routes=[Route("/", data)])
    if variant in ("starlette-gzip", "starlette-pass"):
        app = GZipMiddleware(app, compresslevel=level)
    elif variant == "redline-pass":
        app = CompressionMiddleware(app)
    elif variant == "redline-gzip":
        app = CompressionMiddleware(app, encodings=("gzip",), levels={"gzip": level})
    elif variant == "redline-zstd":
        app = CompressionMiddleware(app, encodings=("zstd",))
    elif variant == "redline-br":
        app = CompressionMiddleware(app, encodings=("br",))
    elif variant != "identity":
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return app


def codec(variant: str, level: int) -> Callable[[bytes], bytes] | None:
    """The bare codec call a variant's middleware makes, at the same level."""
    if variant.endswith("-gzip"):
        return lambda body: zlib.compress(body, level, wbits=31)
    if variant == "redline-zstd":
        compressor = zstandard.ZstdCompressor(level=3)
        return compressor.compress
    if variant == "redline-br":
        return lambda body: brotli.compress(body, quality=4)
    return None


def decode(encoding: str | None, data: bytes) -> bytes:
    if encoding is None:
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "br":
        return brotli.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


# -- in-process -----------------------------------------------------------------------------


class Caller:
    """One variant's app as a plain ASGI callable, one GET at a time."""

    def __init__(self, variant: str, level: int) -> None:
        self.variant = variant
        self.app = build_app(variant, level)
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"bench"), (b"accept-encoding", ACCEPT[variant].encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.headers = dict(message["headers"])
            self.body = b""
        else:
            self.body += message.get("body", b"")

    async def batch(self, n: int) -> float:
        """CPU seconds for n requests."""
        app, scope, receive, send = self.app, self.scope, self.receive, self.send
        start = time.process_time()
        for _ in range(n):
            await app(scope, receive, send)
        return time.process_time() - start

    async def check(self) -> int:
        await self.batch(1)
        encoding = self.headers.get(b"content-encoding")
        name = None if encoding is None else encoding.decode()
        expected = None if ACCEPT[self.variant] == "identity" else ACCEPT[self.variant]
        if name != expected or decode(name, self.body) != BODY:
            raise SystemExit(f"{self.variant}: wrong response ({name!r}, {len(self.body)} B)")
        return len(self.body)


def time_codec(function: Callable[[bytes], bytes], batches: int) -> float:
    n = 1
    while True:
        start = time.process_time()
        for _ in range(n):
            function(BODY)
        if time.process_time() - start > 0.05:
            break
        n *= 2
    samples = []
    for _ in range(batches):
        start = time.process_time()
        for _ in range(n):
            function(BODY)
        samples.append((time.process_time() - start) / n)
    return min(samples)


async def in_process(level: int, batches: int) -> list[dict[str, Any]]:
    callers = [Caller(variant, level) for variant in VARIANTS]
    sizes = {caller.variant: await caller.check() for caller in callers}
    counts = {}
    for caller in callers:
        n = 1
        while await caller.batch(n) < 0.1:
            n *= 2
        counts[caller.variant] = n
    samples: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(batches):
        for caller in callers:
            n = counts[caller.variant]
            samples[caller.variant].append(await caller.batch(n) / n)
    rows = []
    for variant in VARIANTS:
        function = codec(variant, level)
        rows.append(
            {
                "variant": variant,
                "cpu_us": min(samples[variant]) * 1e6,
                "codec_us": time_codec(function, batches) * 1e6 if function else 0.0,
                "size": sizes[variant],
            }
        )
    return rows


# -- under uvicorn --------------------------------------------------------------------------


def serve(variant: str, level: int, port: int) -> None:
    import uvicorn

    uvicorn.run(
        build_app(variant, level),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(variant: str, level: int, pin: list[str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    argv = [*pin, sys.executable, __file__, "--serve", variant, "--level", str(level)]
    process = subprocess.Popen([*argv, "--port", str(port)])
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    response.read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the {variant} server did not start") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def start_wrk(url: str, accept: str, duration: float, pin: list[str]) -> subprocess.Popen[str]:
    argv = [*pin, "wrk", "-t1", "-c8", f"-d{duration:g}s", "-H", f"Accept-Encoding: {accept}"]
    return subprocess.Popen([*argv, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wrk_result(process: subprocess.Popen[str]) -> tuple[int, float]:
    out, err = process.communicate()
    requests = rps = None
    for line in out.splitlines():
        if "requests in" in line:
            requests = int(line.split()[0])
        elif line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        elif "Non-2xx" in line or "Socket errors" in line:
            raise SystemExit(f"wrk saw errors: {line}")
    if requests is None or rps is None:
        raise SystemExit(f"unexpected wrk output:\n{out}{err}")
    return requests, rps


def under_server(level: int, duration: float, rounds: int) -> list[dict[str, Any]]:
    if shutil.which("wrk") is None:
        raise SystemExit("--server needs wrk on PATH")
    cpus = os.cpu_count() or 1
    taskset = shutil.which("taskset")
    pin_server = ["taskset", "-c", str(cpus - 1)] if taskset and cpus > 1 else []
    pin_tool = ["taskset", "-c", "0"] if taskset and cpus > 1 else []
    runs: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
    with contextlib.ExitStack() as stack:
        started = [stack.enter_context(server(v, level, pin_server)) for v in VARIANTS]
        for round_ in range(rounds + 1):
            length = 1.0 if round_ == 0 else duration  # round 0 warms every server up
            before = [cpu_seconds(pid) for _, pid in started]
            loads = [
                start_wrk(url, ACCEPT[variant], length, pin_tool)
                for variant, (url, _) in zip(VARIANTS, started, strict=True)
            ]
            results = [wrk_result(load) for load in loads]
            after = [cpu_seconds(pid) for _, pid in started]
            if round_ == 0:
                continue
            for i, variant in enumerate(VARIANTS):
                requests, rps = results[i]
                runs[variant].append((rps, (after[i] - before[i]) / requests * 1e6))
    return [
        {
            "variant": variant,
            "rps": statistics.median(rps for rps, _ in runs[variant]),
            "server_cpu_us": statistics.median(cpu for _, cpu in runs[variant]),
        }
        for variant in VARIANTS
    ]


# -- report ---------------------------------------------------------------------------------


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def report(level: int, rows: list[dict[str, Any]], served: list[dict[str, Any]] | None) -> None:
    console = Console(width=150)
    base = next(row for row in rows if row["variant"] == "identity")["cpu_us"]
    rival = next(row for row in rows if row["variant"] == "starlette-gzip")["cpu_us"]
    table = Table(title=f"In-process, {len(BODY):,} B JSON, gzip level {level}")
    for column in ("variant", "CPU µs/req", "req/s (1 core)", "vs starlette-gzip"):
        table.add_column(column, justify="right")
    for column in ("codec alone µs", "bytes sent", "size ratio"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["variant"],
            f"{row['cpu_us']:.1f} (+{row['cpu_us'] - base:.1f})",
            f"{1e6 / row['cpu_us']:,.0f}",
            f"{rival / row['cpu_us']:.2f}x",
            f"{row['codec_us']:.1f}" if row["codec_us"] else "-",
            f"{row['size']:,}",
            f"{row['size'] / len(BODY):.3f}",
        )
    console.print(table)
    if served:
        srv_rival = next(row for row in served if row["variant"] == "starlette-gzip")
        table = Table(title="Under uvicorn, all variants at once on one CPU, wrk -t1 -c8 each")
        for column in ("variant", "req/s", "vs starlette-gzip", "server CPU µs/req"):
            table.add_column(column, justify="right")
        for row in served:
            table.add_row(
                row["variant"],
                f"{row['rps']:,.0f}",
                f"{row['rps'] / srv_rival['rps']:.2f}x",
                f"{row['server_cpu_us']:.0f}",
            )
        console.print(table)
    console.print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, starlette {version('starlette')}, zstandard "
        f"{version('zstandard')}, brotli {version('brotli')}, zlib {zlib.ZLIB_RUNTIME_VERSION}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", type=int, default=6, help="gzip level of both gzip variants")
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="5 batches, 1 server round")
    parser.add_argument("--server", action="store_true", help="also measure under uvicorn")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.level, args.port)
        return
    batches = 5 if args.quick else args.batches
    rows = asyncio.run(in_process(args.level, batches))
    served = (
        under_server(args.level, args.duration, 1 if args.quick else 3) if args.server else None
    )
    report(args.level, rows, served)
    if args.json:
        machine = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
            "python": platform.python_version(),
            "packages": {p: version(p) for p in ("starlette", "zstandard", "brotli", "uvicorn")},
        }
        payload = {"body_bytes": len(BODY), "level": args.level, "in_process": rows}
        args.json.write_text(json.dumps({**payload, "server": served, "machine": machine}))


if __name__ == "__main__":
    main()
