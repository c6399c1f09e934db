"""A worker process for the multi-process tests (a helper, not a test).

Each worker records a known set of samples, counters and gauges into the default registry,
shares it through a ``SnapshotDirectory`` and then obeys commands from the test: ``set``
(set the ``last``-rule gauge now), ``render`` (serve ``/metrics`` through ``MetricsApp`` and
send back the body) and ``exit`` (count one ``shutdown`` job and return normally, so only the
at-exit snapshot can carry that job).
"""

from __future__ import annotations

import asyncio
import os
import random
from multiprocessing.connection import Connection

from redline import monitor

SAMPLES_PER_WORKER = 20_000
ROUTES = ("/users/{id}", "/search")


def samples(index: int) -> list[float]:
    """The latencies worker ``index`` records: lognormal, median about 20 ms, long tail."""
    rng = random.Random(1000 + index)
    return [rng.lognormvariate(-4.0, 1.0) for _ in range(SAMPLES_PER_WORKER)]


def jobs(index: int) -> dict[str, int]:
    """How many jobs of each kind worker ``index`` counts."""
    return {"email": 100 * (index + 1), "report": 7 + index}


def render(app: monitor.MetricsApp) -> bytes:
    """What a GET /metrics on ``app`` returns."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}
    asyncio.run(app(scope, receive, send))
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def run(directory: str, index: int, conn: Connection) -> None:
    jobs_total = monitor.Counter("jobs", "Jobs done.", ("kind",))
    latency = monitor.Histogram("request_duration_seconds", "Latency.", ("route",))
    inflight = monitor.Gauge("inflight", "In flight.")
    lag = monitor.Gauge("loop_lag_seconds", "Loop lag.", multiprocess_mode="max")
    free = monitor.Gauge("free_slots", "Free slots.", multiprocess_mode="min")
    version = monitor.Gauge("config_version", "Config.", multiprocess_mode="last")
    worker = monitor.Gauge("worker_index", "Index.", multiprocess_mode="all")

    for i, value in enumerate(samples(index)):
        latency.labels(route=ROUTES[i % 2]).observe(value)
    for kind, n in jobs(index).items():
        for _ in range(n):
            jobs_total.labels(kind=kind).inc()
    inflight.set(index + 1)
    lag.set(0.1 * (index + 1))
    free.set(10 - index)
    worker.set(index)

    shared = monitor.SnapshotDirectory(directory, interval=0.2, expire_after=30)
    shared.start()
    app = monitor.MetricsApp(shared)
    conn.send(("ready", os.getpid()))
    while True:
        command = conn.recv()
        if command == "set":
            version.set(index)
            conn.send("done")
        elif command == "render":
            conn.send(render(app))
        elif command == "exit":
            # Recorded after the last periodic write: only the at-exit write carries it.
            jobs_total.labels(kind="shutdown").inc()
            return
