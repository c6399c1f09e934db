"""Instructions per request that ASGI middlewares add to a trivial Starlette endpoint, counted
by valgrind's callgrind: a measure the machine's other load does not change. Usage:

    python benchmarks/middleware_instructions.py [--mode both|server|loop]
                                                 [--variants bare,noop,redline,...]
                                                 [--seconds 10] [--requests 4000] [--json out]

The apps are ``middleware_bench.py``'s (``bare``, ``noop``, ``send-wrapper``, ``redline``:
``MetricsMiddleware`` with its request path in C, ``redline-py``: its pure-Python twin).

- ``server``: one uvicorn worker (uvloop, httptools) per variant runs under callgrind; after a
  warm-up, its counters are zeroed, ``wrk -t1 -c10`` loads it for ``--seconds``, and the
  counters are dumped: instructions of the whole process (the server, the event loop, the app)
  divided by the requests wrk completed.
- ``loop``: the same app called directly as an ASGI callable (no server, no sockets) in a
  loop of ``--requests`` and of twice that, each run under callgrind: the difference of the
  two counts divided by the difference of requests, so that start-up cancels out.

The table shows the instructions per request of each variant and what each adds to bare. The
VM this project is measured on has no hardware counters, so these counts stand in for them;
the share of instructions a middleware adds predicts its throughput cost under a server to
about 1.1-1.2 times (see docs/monitoring.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from middleware_bench import (  # noqa: E402
    SCOPE,
    build_app,
    free_port,
    receive_empty,
    send_nowhere,
    serve,
)

VARIANTS = ("bare", "noop", "send-wrapper", "redline", "redline-py")
VALGRIND = ["valgrind", "--tool=callgrind", "--quiet"]


# -- under callgrind ------------------------------------------------------------------------


def loop(variant: str, requests: int) -> None:
    """``requests`` requests through ``variant``'s app, called directly."""
    import uvloop

    async def main() -> None:
        app = build_app(variant)
        for _ in range(requests):
            await app(dict(SCOPE), receive_empty, send_nowhere)

    uvloop.run(main())


# -- measuring ------------------------------------------------------------------------------


def total_instructions(out: Path) -> int:
    """The instructions (Ir) counted in a callgrind output file."""
    text = out.read_text()
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no instruction total in {out}")
    return int(found.group(1))


def in_loop(variant: str, requests: int, workdir: Path) -> float:
    counts = []
    for n in (requests, 2 * requests):
        out = workdir / f"loop-{variant}-{n}.out"
        argv = [*VALGRIND, f"--callgrind-out-file={out}", sys.executable, __file__]
        argv += ["--loop", variant, "--requests", str(n)]
        subprocess.run(argv, check=True)
        counts.append(total_instructions(out))
    return (counts[1] - counts[0]) / requests


@contextlib.contextmanager
def server_under_callgrind(variant: str, workdir: Path) -> Iterator[tuple[int, str, Path]]:
    port = free_port()
    out = workdir / f"server-{variant}.out"
    argv = [*VALGRIND, f"--callgrind-out-file={out}", sys.executable, __file__]
    argv += ["--serve", variant, "--port", str(port)]
    process = subprocess.Popen(argv)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"the {variant} server did not start under callgrind"
                    ) from None
                time.sleep(0.5)
        yield process.pid, url, out
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def wrk(url: str, seconds: float) -> int:
    argv = ["wrk", "-t1", "-c10", f"-d{seconds:g}s", "--timeout", "10s", url]
    stdout = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    for line in stdout.splitlines():
        if "Non-2xx" in line:
            raise SystemExit(f"wrk saw errors: {line}")
        if "requests in" in line:
            return int(line.split()[0])
    raise SystemExit(f"unexpected wrk output:\n{stdout}")


def under_server(variant: str, seconds: float, workdir: Path) -> tuple[float, int]:
    with server_under_callgrind(variant, workdir) as (pid, url, out):
        wrk(url, 3)  # warm-up: imports, caches, the route index
        subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
        requests = wrk(url, seconds)
        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
        dumps = sorted(out.parent.glob(out.name + ".*"), key=lambda p: p.stat().st_mtime)
        if not dumps:
            raise SystemExit(f"callgrind wrote no dump for {variant}")
        return total_instructions(dumps[-1]) / requests, requests


def table(results: dict[str, dict[str, float]], modes: list[str]) -> Table:
    out = Table(title="Instructions per request (callgrind), trivial Starlette endpoint")
    out.add_column("variant")
    for mode in modes:
        label = "under uvicorn + wrk" if mode == "server" else "in a loop, no server"
        out.add_column(f"{label}\nper request", justify="right")
        out.add_column(f"{label}\nadded to bare", justify="right")
    for variant, row in results.items():
        cells = [variant]
        for mode in modes:
            value, bare = row.get(mode), results.get("bare", {}).get(mode)
            if value is None:
                cells += ["-", "-"]
                continue
            cells.append(f"{value / 1000:,.1f}k")
            if variant == "bare" or bare is None:
                cells.append("")
            else:
                added = value - bare
                cells.append(f"{added / 1000:+,.1f}k ({added / bare:+.1%})")
        out.add_row(*cells)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("both", "server", "loop"), default="both")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk run per variant")
    parser.add_argument("--requests", type=int, default=4000, help="loop: first run's requests")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--loop", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.loop:
        loop(args.loop, args.requests)
        return 0
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (Debian: apt-get install valgrind wrk)")
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    modes = ["server", "loop"] if args.mode == "both" else [args.mode]
    console = Console(width=max(Console().width, 120))
    results: dict[str, dict[str, float]] = {variant: {} for variant in variants}
    with tempfile.TemporaryDirectory(prefix="redline-instructions-") as tmp:
        workdir = Path(tmp)
        for variant in variants:
            if "server" in modes:
                per_request, requests = under_server(variant, args.seconds, workdir)
                results[variant]["server"] = per_request
                console.print(f"[dim]{variant}: {per_request:,.0f} / request over {requests:,}[/]")
            if "loop" in modes:
                results[variant]["loop"] = in_loop(variant, args.requests, workdir)
                console.print(
                    f"[dim]{variant}: {results[variant]['loop']:,.0f} / request in a loop[/]"
                )
    console.print(table(results, modes))
    console.print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
