"""``DashboardApp``: the snapshot maths (window percentiles from HDR differences, rates from
counter deltas, 5xx share), every panel's data and its hint when there is none, the event
stream under a real uvicorn, ``redline dashboard`` over a snapshot directory, and the page in
a real headless Chromium fed by a real app under traffic.

The browser test saves a screenshot of the page under pytest's tmp dir and, when
``REDLINE_ARTIFACTS`` names a directory, copies it there (CI uploads that directory).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from browser import chromium, devtools
from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from redline import monitor
from redline.monitor import DashboardApp
from redline.monitor._dashboard import (
    _Reading,
    cache_panel,
    db_panel,
    http_panel,
    leak_panel,
    loop_panel,
    memory_panel,
)

# -- helpers ---------------------------------------------------------------------------------


def eventually(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


class Serving:
    """An app under uvicorn in a thread on a free loopback port."""

    def __init__(self, app: Any, server_class: type[uvicorn.Server] = uvicorn.Server) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

        async def noting_loop(scope: Any, receive: Any, send: Any) -> None:
            self.loop = asyncio.get_running_loop()
            await app(scope, receive, send)

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(noting_loop, log_level="warning", lifespan="off")
        self.server = server_class(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Serving:
        self.thread.start()
        eventually(lambda: self.server.started, "uvicorn to start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.sock.close()

    def stop(self, timeout: float = 10.0) -> float:
        """Ask the server to shut down; how long it took."""
        started = time.monotonic()
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"uvicorn did not shut down in {timeout} s"
        return time.monotonic() - started

    def tasks(self) -> list[str]:
        """The names of the coroutines of every task on the server's loop but the server's
        own and this inspection."""

        async def names() -> list[str]:
            me = asyncio.current_task()
            return sorted(t.get_coro().__qualname__ for t in asyncio.all_tasks() if t is not me)

        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(names(), self.loop)
        return [name for name in future.result(5) if name != "Server.serve"]


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The Server-Sent Events of a streamed response, as ``{"event", "id", "data"}``, and
    comment lines as ``{"comment": text}``."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


def http_metrics(registry: monitor.Registry) -> tuple[monitor.Counter, monitor.Histogram]:
    """The two metric families MetricsMiddleware records into, made by hand."""
    requests = monitor.Counter(
        "http_requests_total", "Requests.", ("route", "method", "status"), registry=registry
    )
    durations = monitor.Histogram(
        "http_request_duration_seconds", "Latency.", ("route", "method"), registry=registry
    )
    return requests, durations


def reading(registry: monitor.Registry, when: float) -> _Reading:
    return _Reading.of(registry.collect(), when, wall=1_700_000_000.0 + when)


def record(
    requests: monitor.Counter,
    durations: monitor.Histogram,
    route: str,
    samples: list[float],
    status: int = 200,
) -> None:
    for seconds in samples:
        requests.labels(route, "GET", status).inc()
        durations.labels(route, "GET").observe(seconds)


def exact_quantiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 of a histogram that holds only ``samples`` (the layout Histogram uses)."""
    registry = monitor.Registry()
    histogram = monitor.Histogram("alone_seconds", "Only these.", registry=registry)
    for value in samples:
        histogram.observe(value)
    qs = histogram.snapshot().quantiles((0.5, 0.95, 0.99))
    return {"p50": qs[0.5], "p95": qs[0.95], "p99": qs[0.99]}


# -- the snapshot maths ------------------------------------------------------------------------


def test_window_percentiles_are_exactly_those_of_the_samples_recorded_in_the_window():
    rng = random.Random(7)
    registry = monitor.Registry()
    requests, durations = http_metrics(registry)
    # Slow before the window, fast within it: cumulative percentiles would be far off.
    record(requests, durations, "/users/{id}", [rng.uniform(0.5, 2.0) for _ in range(5000)])
    before = reading(registry, 100.0)
    window = [rng.lognormvariate(-6, 1) for _ in range(3000)]
    record(requests, durations, "/users/{id}", window)
    other = [rng.uniform(0.001, 0.01) for _ in range(1000)]
    record(requests, durations, "/health", other)

    panel = http_panel(reading(registry, 110.0), before)

    routes = {row["route"]: row for row in panel["routes"]}
    users = routes["/users/{id}"]
    assert {q: users[q] for q in ("p50", "p95", "p99")} == exact_quantiles(window)
    assert {q: routes["/health"][q] for q in ("p50", "p95", "p99")} == exact_quantiles(other)
    assert panel["latency"] == exact_quantiles(window + other)
    # and within HDR's precision of the exact sample percentiles
    ordered = sorted(window)
    assert users["p99"] == pytest.approx(ordered[int(0.99 * len(ordered)) - 1], rel=0.01)


def test_rates_come_from_counter_deltas_over_the_window_seconds():
    registry = monitor.Registry()
    requests, durations = http_metrics(registry)
    record(requests, durations, "/a", [0.001] * 700)
    before = reading(registry, 50.0)
    record(requests, durations, "/a", [0.001] * 300)
    record(requests, durations, "/b", [0.001] * 50)

    panel = http_panel(reading(registry, 60.0), before)

    assert panel["rps"] == pytest.approx(35.0)
    assert panel["requests"] == 350
    assert panel["total"] == 1050
    rows = {row["route"]: row for row in panel["routes"]}
    assert rows["/a"]["rps"] == pytest.approx(30.0)
    assert (rows["/a"]["requests"], rows["/a"]["total"]) == (300, 1000)
    assert rows["/b"]["rps"] == pytest.approx(5.0)
    assert [row["route"] for row in panel["routes"]] == ["/a", "/b"]


def test_the_error_rate_is_the_share_of_5xx_responses_in_the_window():
    registry = monitor.Registry()
    requests, durations = http_metrics(registry)
    record(requests, durations, "/a", [0.001] * 100, status=500)  # before: not counted
    before = reading(registry, 0.0)
    record(requests, durations, "/a", [0.001] * 80, status=200)
    record(requests, durations, "/a", [0.001] * 10, status=404)
    record(requests, durations, "/a", [0.001] * 6, status=500)
    record(requests, durations, "/a", [0.001] * 4, status=503)
    record(requests, durations, "/b", [0.001] * 100, status=201)

    panel = http_panel(reading(registry, 10.0), before)

    assert panel["errors"] == 10
    assert panel["error_rate"] == pytest.approx(10 / 200)
    rows = {row["route"]: row for row in panel["routes"]}
    assert rows["/a"]["error_rate"] == pytest.approx(10 / 100)
    assert rows["/b"]["error_rate"] == 0
    assert rows["/a"]["errors"] == 10


def test_without_an_earlier_reading_values_are_cumulative_and_rates_unknown():
    registry = monitor.Registry()
    requests, durations = http_metrics(registry)
    samples = [0.002] * 90 + [0.2] * 10
    record(requests, durations, "/a", samples)

    panel = http_panel(reading(registry, 5.0), None)

    assert panel["rps"] is None
    assert panel["requests"] == 100
    assert panel["latency"] == exact_quantiles(samples)


def test_a_route_without_requests_in_the_window_has_no_percentiles_rather_than_zeros():
    registry = monitor.Registry()
    requests, durations = http_metrics(registry)
    record(requests, durations, "/quiet", [0.01] * 10)
    before = reading(registry, 0.0)

    row = http_panel(reading(registry, 10.0), before)["routes"][0]

    assert row["rps"] == 0
    assert (row["p50"], row["p99"], row["error_rate"]) == (None, None, None)
    assert row["total"] == 10


def test_counters_and_histograms_that_went_down_count_from_zero_like_rate():
    registry = monitor.Registry()
    requests, durations = http_metrics(registry)
    record(requests, durations, "/a", [0.5] * 1000)
    before = reading(registry, 0.0)
    registry.reset()  # the process restarted
    record(requests, durations, "/a", [0.001] * 40)

    panel = http_panel(reading(registry, 10.0), before)

    assert panel["requests"] == 40
    assert panel["latency"]["p99"] == pytest.approx(0.001, rel=0.01)


def test_the_app_diffs_against_the_oldest_reading_within_the_window():
    registry = monitor.Registry()
    requests, durations = http_metrics(registry)
    board = DashboardApp(registry, interval=0.05, window=0.3)

    first = board.snapshot()
    record(requests, durations, "/a", [0.001] * 10)
    time.sleep(0.1)
    second = board.snapshot()
    time.sleep(0.6)
    after_a_pause = board.snapshot()

    assert first["window"] == {"seconds": None, "cumulative": True}
    assert second["window"]["cumulative"] is False
    assert second["http"]["requests"] == 10
    assert 0.09 < second["window"]["seconds"] < 0.3
    # Nobody asked for longer than the window: no baseline is recent enough.
    assert after_a_pause["window"]["cumulative"] is True
    assert [first["seq"], second["seq"], after_a_pause["seq"]] == [1, 2, 3]


# -- the other panels --------------------------------------------------------------------------


def test_every_panel_without_its_metrics_says_how_to_enable_it():
    board = DashboardApp(monitor.Registry())

    snapshot = board.snapshot()

    for name, enable in [
        ("http", "MetricsMiddleware"),
        ("cache", "instrument_cache"),
        ("db", "instrument_engine"),
        ("memory", "install_process_metrics"),
        ("leak", "LeakWatch"),
        ("loop", "LoopLagMiddleware"),
        ("vitals", "VitalsApp"),
    ]:
        panel = snapshot[name]
        assert panel["available"] is False, name
        assert panel["hint"].startswith("no data: ") and enable in panel["hint"], name
        assert set(panel) == {"available", "hint"}, name


def cache_registry() -> tuple[monitor.Registry, monitor.Counter, monitor.Counter]:
    registry = monitor.Registry()
    hits = monitor.Counter("redline_cache_hits", "Hits.", ("tier",), registry=registry)
    misses = monitor.Counter("redline_cache_misses", "Misses.", ("tier",), registry=registry)
    return registry, hits, misses


def test_the_cache_panel_shows_the_hit_ratio_per_tier_in_the_window_and_since_start():
    registry, hits, misses = cache_registry()
    hits.labels("l1").inc(50)
    misses.labels("l1").inc(50)
    before = reading(registry, 0.0)
    hits.labels("l1").inc(90)
    misses.labels("l1").inc(10)
    hits.labels("l2").inc(3)
    misses.labels("l2").inc(1)
    breaker = monitor.Gauge(
        "redline_cache_l2_breaker_state", "State.", ("cache",), registry=registry
    )
    breaker.labels("default").set(1)

    panel = cache_panel(reading(registry, 10.0), before)

    tiers = {t["labels"]["tier"]: t for t in panel["tiers"]}
    assert tiers["l1"]["hit_ratio"] == pytest.approx(0.9)
    assert tiers["l1"]["hit_ratio_total"] == pytest.approx(140 / 200)
    assert (tiers["l2"]["hits"], tiers["l2"]["misses"]) == (3, 1)
    assert panel["breakers"] == [{"labels": {"cache": "default"}, "state": "open"}]


def test_the_breaker_state_reads_instrument_caches_0_closed_half_open_1_open():
    registry, hits, misses = cache_registry()
    breaker = monitor.Gauge(
        "redline_cache_l2_breaker_state", "State.", ("cache",), registry=registry
    )
    for cache, value in [("a", 0), ("b", 0.5), ("c", 1)]:
        breaker.labels(cache).set(value)

    panel = cache_panel(reading(registry, 0.0), None)

    assert [b["state"] for b in panel["breakers"]] == ["closed", "half_open", "open"]


def test_the_db_panel_shows_queries_latency_pool_use_and_the_slowest_queries(pg_url):
    registry = monitor.Registry()
    engine = create_engine(
        pg_url.replace("postgresql://", "postgresql+psycopg://"), pool_size=4, max_overflow=1
    )
    watched = monitor.instrument_engine(
        engine, registry=registry, slow_query_seconds=0.05, logger=None
    )
    board = DashboardApp(registry)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        board.snapshot()
        with engine.connect() as conn:
            for i in range(20):
                conn.execute(text("SELECT :i + 1"), {"i": i})
            conn.execute(text("SELECT pg_sleep(0.06), 'secret@example.com'"))
            held = board.snapshot()["db"]
    finally:
        watched.close()
        engine.dispose()

    (row,) = held["engines"]
    assert row["engine"] == "default"
    assert row["queries"] == 21
    assert row["qps"] > 0
    assert row["p99"] >= 0.06
    assert row["slow"] == 1
    assert (row["checked_out"], row["pool_size"]) == (1, 4)
    assert row["usage_ratio"] == pytest.approx(1 / 5)
    (slow,) = held["slow_queries"]
    assert slow["statement"] == "SELECT pg_sleep(?), ?"
    assert slow["max_seconds"] >= 0.06
    assert held["slow_hint"] is None


def test_over_a_snapshot_directory_the_db_panel_says_where_the_slow_query_log_is(tmp_path):
    registry = monitor.Registry()
    monitor.Counter("db_queries", "Queries.", ("engine", "operation"), registry=registry).labels(
        "main", "SELECT"
    ).inc(3)
    monitor.SnapshotDirectory(tmp_path, registry=registry).write()
    board = DashboardApp(monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry()))

    db = board.snapshot()["db"]

    assert db["engines"][0]["queries"] == 3
    assert db["slow_queries"] == []
    assert "mount the dashboard in the app" in db["slow_hint"]


def test_over_a_snapshot_directory_every_worker_counts(tmp_path):
    workers = []
    for n in (3, 5):
        registry = monitor.Registry()
        requests, durations = http_metrics(registry)
        record(requests, durations, "/a", [0.01] * n)
        workers.append(monitor.SnapshotDirectory(tmp_path, registry=registry))
        workers[-1].write()
    board = DashboardApp(monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry()))

    snapshot = board.snapshot()

    assert snapshot["http"]["total"] == 8
    assert snapshot["http"]["latency"]["p50"] == pytest.approx(0.01, rel=0.01)


def test_the_memory_panel_keeps_a_bounded_rss_trend_and_the_leak_verdict():
    registry = monitor.Registry()
    monitor.install_process_metrics(registry)
    rss = iter(range(100_000_000, 200_000_000, 5_000_000))
    clock = iter(range(0, 10_000, 60))
    watch = monitor.LeakWatch(
        interval=60,
        warmup=0,
        min_samples=6,
        min_growth_bytes=1,
        sample_rss=lambda: next(rss),
        clock=lambda: next(clock),
        registry=registry,
    )
    for _ in range(8):
        watch.sample()
    board = DashboardApp(registry, interval=0.01, window=0.05, trend=3)

    for _ in range(5):
        snapshot = board.snapshot()

    memory, leak = snapshot["memory"], snapshot["leak"]
    assert memory["rss_bytes"] > 10_000_000
    assert len(memory["trend"]) == 3
    assert [w["pid"] for w in memory["workers"]] == [None]
    assert leak["verdict"] == "growing"
    assert leak["slope_bytes_per_second"] == pytest.approx(5_000_000 / 60)
    assert leak_panel(reading(monitor.Registry(), 0.0))["available"] is False
    assert memory_panel(reading(monitor.Registry(), 0.0), [])["available"] is False


async def test_the_loop_panel_shows_the_window_percentiles_and_the_stalls():
    registry = monitor.Registry()
    lag = monitor.LoopLagMonitor(interval=0.01, threshold=0.05, registry=registry).start()
    try:
        await asyncio.sleep(0.1)
        before = reading(registry, 0.0)
        time.sleep(0.08)  # a stall of the loop
        await asyncio.sleep(0.1)
        panel = loop_panel(reading(registry, 1.0), before)
    finally:
        lag.stop()

    assert panel["stalls"] == 1
    assert 0.06 <= panel["max_seconds"] <= 0.1
    assert panel["p50_seconds"] < 0.01
    assert panel["ticks"] >= 5


def test_the_vitals_panel_shows_p75_and_rating_per_page_with_or_without_the_vitals_app():
    registry = monitor.Registry()
    vitals = monitor.VitalsApp(registry)
    for lcp in (1000, 1200, 5000, 5200):
        vitals.ingest(json.dumps({"page": "/shop/7", "metrics": [{"name": "LCP", "value": lcp}]}))
    vitals.ingest(b'{"page": "/", "metrics": [{"name": "CLS", "value": 0.3}]}')

    with_app = DashboardApp(registry, vitals=vitals).snapshot()["vitals"]
    without = DashboardApp(registry).snapshot()["vitals"]

    assert with_app == without
    pages = {p["page"]: p["metrics"] for p in with_app["pages"]}
    assert pages["/shop/:id"]["LCP"]["rating"] == "poor"
    assert pages["/shop/:id"]["LCP"]["count"] == 4
    cls = pages["/"]["CLS"]
    assert (cls["count"], cls["rating"], cls["unit"]) == (1, "poor", "")
    assert cls["p75"] == pytest.approx(0.3, rel=0.01)
    assert pages["/shop/:id"]["LCP"]["unit"] == "ms"


def test_the_snapshot_is_json_with_null_for_unknown_values_never_nan():
    registry = monitor.Registry()
    ratio = monitor.Gauge("db_pool_usage_ratio", "Usage.", ("engine",), registry=registry)
    ratio.labels("main").set(float("nan"))
    monitor.Counter("db_queries", "Q.", ("engine", "operation"), registry=registry)

    panel = db_panel(reading(registry, 0.0), None, [])

    assert panel["engines"][0]["usage_ratio"] is None


# -- the app under a real uvicorn -------------------------------------------------------------


def dashboard_site(board: DashboardApp, registry: monitor.Registry, *routes: Route) -> Starlette:
    async def user(request):
        return JSONResponse({"id": request.path_params["id"]})

    async def boom(request):
        return PlainTextResponse("failed", status_code=500)

    return Starlette(
        routes=[
            *routes,
            Route("/users/{id}", user),
            Route("/boom", boom),
            Mount("/_redline", app=board),
        ],
        middleware=[
            Middleware(
                monitor.MetricsMiddleware, registry=registry, exclude=("/metrics", "/_redline")
            )
        ],
    )


def test_the_stream_pushes_snapshots_and_ends_cleanly_when_the_client_goes():
    registry = monitor.Registry()
    board = DashboardApp(registry, interval=0.1)
    with Serving(dashboard_site(board, registry)) as serving, httpx.Client() as client:
        client.get(f"{serving.url}/users/1")
        with client.stream("GET", f"{serving.url}/_redline/api/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            received = []
            for event in events(response):
                if event.get("event") == "snapshot":
                    received.append(event)
                    client.get(f"{serving.url}/users/2")
                if len(received) == 2:
                    # Leaving the loop closes the line iterator, and with it the connection.
                    assert board.streams == 1
                    break
        first, second = (json.loads(e["data"]) for e in received)
        assert int(received[1]["id"]) > int(received[0]["id"])
        assert first["window"]["cumulative"] is True
        assert second["window"]["cumulative"] is False
        assert second["http"]["total"] >= 2
        eventually(lambda: board.streams == 0, "the stream to end")
        eventually(lambda: serving.tasks() == [], "no task left on the server's loop")


def test_a_stream_ends_with_bye_after_max_stream_so_a_plain_uvicorn_can_stop():
    registry = monitor.Registry()
    board = DashboardApp(registry, interval=0.1, max_stream=0.5)
    with Serving(board) as serving, httpx.Client() as client:
        started = time.monotonic()
        with client.stream("GET", f"{serving.url}/api/stream") as response:
            received = list(events(response))
        took = time.monotonic() - started
        assert received[-1] == {"event": "bye", "data": '{"reason":"max-stream"}'}
        assert sum(e.get("event") == "snapshot" for e in received) >= 3
        assert 0.5 <= took < 2
        assert serving.stop() < 2


def test_close_ends_every_stream_at_once_with_bye_and_refuses_new_ones():
    registry = monitor.Registry()
    board = DashboardApp(registry, interval=0.1)

    class Server(uvicorn.Server):
        # What `redline dashboard` does: end the streams before uvicorn waits for them.
        async def shutdown(self, sockets=None):
            board.close()
            await super().shutdown(sockets)

    with Serving(board, Server) as serving, httpx.Client() as client:
        with client.stream("GET", f"{serving.url}/api/stream") as response:
            stream = events(response)
            assert next(e for e in stream if e.get("event") == "snapshot")
            took = serving.stop()
            rest = list(stream)
        assert rest[-1] == {"event": "bye", "data": '{"reason":"shutdown"}'}
        assert took < 2
        assert board.streams == 0


def test_closing_from_another_thread_ends_streams_and_new_ones_get_503():
    registry = monitor.Registry()
    board = DashboardApp(registry, interval=0.1)
    with Serving(board) as serving, httpx.Client() as client:
        with client.stream("GET", f"{serving.url}/api/stream") as response:
            stream = events(response)
            assert next(e for e in stream if e.get("event") == "snapshot")
            board.close()
            assert list(stream)[-1]["event"] == "bye"
        refused = client.get(f"{serving.url}/api/stream")
        assert refused.status_code == 503
        eventually(lambda: serving.tasks() == [], "no task left on the server's loop")


def test_a_stream_sends_heartbeats_when_there_is_nothing_new(monkeypatch):
    monkeypatch.setattr("redline.monitor._dashboard.HEARTBEAT", 0.1)
    board = DashboardApp(monitor.Registry(), interval=5.0, max_stream=10.0)
    with (
        Serving(board) as serving,
        httpx.Client() as client,
        client.stream("GET", f"{serving.url}/api/stream") as response,
    ):
        stream = events(response)
        assert next(stream)["event"] == "snapshot"
        assert next(stream) == {"comment": "heartbeat"}
        assert next(stream) == {"comment": "heartbeat"}


def test_the_page_snapshot_and_vitals_routes_answer_with_the_right_types():
    registry = monitor.Registry()
    board = DashboardApp(registry, vitals=monitor.VitalsApp(registry), title="shop <prod>")
    with Serving(dashboard_site(board, registry)) as serving, httpx.Client() as client:
        base = f"{serving.url}/_redline"
        page = client.get(f"{base}/")
        script = client.get(f"{base}/dashboard.js")
        style = client.get(f"{base}/dashboard.css")
        snapshot = client.get(f"{base}/api/snapshot")
        again = client.get(
            f"{base}/dashboard.js", headers={"if-none-match": script.headers["etag"]}
        )
        bare = client.get(base)
        beacon_script = client.get(f"{base}/vitals.js")
        beacon = client.post(
            f"{base}/vitals",
            content=b'{"page": "/", "metrics": [{"name": "TTFB", "value": 90}]}',
            headers={"content-type": "text/plain"},
        )
        missing = client.get(f"{base}/nope")
        posted = client.post(f"{base}/api/snapshot")

    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    assert again.status_code == 304
    assert snapshot.headers["content-type"] == "application/json"
    assert snapshot.json()["title"] == "shop <prod>"
    assert "NaN" not in snapshot.text
    assert bare.status_code == 307  # Starlette's slash redirect, before the mount
    assert beacon_script.status_code == 200 and beacon.status_code == 204
    assert (missing.status_code, posted.status_code) == (404, 405)


def test_the_page_loads_nothing_from_elsewhere():
    from importlib.resources import files

    static = files("redline.monitor").joinpath("static")
    text_ = "".join(static.joinpath(n).read_text() for n in ("dashboard.html", "dashboard.js"))
    text_ += static.joinpath("dashboard.css").read_text()

    urls = {word for word in text_.replace('"', " ").replace("'", " ").split() if "//" in word}
    assert urls <= {"http://www.w3.org/2000/svg", "//"}, urls  # the SVG namespace, a comment
    assert "innerHTML" not in text_ and "insertAdjacentHTML" not in text_


# -- redline dashboard -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redline_dashboard_serves_a_snapshot_directory_and_stops_on_ctrl_c(tmp_path):
    registry = monitor.Registry()
    requests, durations = http_metrics(registry)
    record(requests, durations, "/orders/{id}", [0.02] * 7, status=502)
    monitor.SnapshotDirectory(tmp_path, registry=registry).write()
    port = free_port()
    redline = Path(sys.executable).with_name("redline")
    process = subprocess.Popen(
        [str(redline), "dashboard", "--dir", str(tmp_path), "--port", str(port), "--title", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client() as client:

            def up() -> httpx.Response | None:
                assert process.poll() is None, process.stdout.read()
                with contextlib.suppress(httpx.TransportError):
                    return client.get(f"{url}/api/snapshot")
                return None

            snapshot = eventually(up, "redline dashboard to answer").json()
            with client.stream("GET", f"{url}/api/stream") as response:
                stream = events(response)
                assert next(e for e in stream if e.get("event") == "snapshot")
                started = time.monotonic()
                process.send_signal(signal.SIGINT)
                rest = list(stream)
        returncode = process.wait(10)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    (row,) = snapshot["http"]["routes"]
    assert (row["route"], row["total"], row["errors"]) == ("/orders/{id}", 7, 7)
    assert rest[-1] == {"event": "bye", "data": '{"reason":"shutdown"}'}
    assert took < 5 and returncode == 0
    mine = f"worker-{os.getpid()}-"
    others = [p for p in tmp_path.glob("worker-*.msgpack") if not p.name.startswith(mine)]
    assert others == []  # the dashboard removed its own (empty) snapshot file


# -- the page in a real Chromium ---------------------------------------------------------------


class Traffic:
    """Requests to the app from a thread until stopped: users, items (a query each), and one
    request in ten to /boom (a 500)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()
        self.thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url) as client:
            while not self.done.is_set():
                n = self.sent
                path = "/boom" if n % 10 == 9 else f"/users/{n}" if n % 2 else f"/items/{n % 5}"
                client.get(path)
                self.sent += 1
                time.sleep(0.005)


def page_state(browser: Any) -> dict[str, Any]:
    return browser.evaluate(
        """(() => {
          const text = (id) => document.querySelector(`[data-testid="${id}"]`).textContent;
          const rows = [...document.querySelectorAll('[data-testid="route-row"]')].map((tr) => ({
            route: tr.dataset.route, method: tr.dataset.method, total: Number(tr.dataset.total),
            errors: tr.querySelector('[data-field="errors"]').textContent,
            p99: tr.querySelector('[data-field="p99"]').textContent,
            html: tr.querySelector('[data-field="route"]').innerHTML,
          }));
          const shown = (id) => !document.querySelector(`[data-testid="${id}"]`).hidden;
          return {
            seq: Number(document.body.dataset.seq), status: text("status"), window: text("window"),
            rps: text("rps"), errorRate: text("error-rate"), p99: text("p99"), rss: text("rss"),
            leak: text("leak-verdict"), loop: text("loop-p99"), rows,
            cacheHint: shown("nodata-cache") ? text("nodata-cache") : null,
            engines: [...document.querySelectorAll('[data-testid="db-engine"]')].map(
              (tr) => tr.dataset.engine),
            slow: [...document.querySelectorAll('[data-testid="slow-query"] td.code')].map(
              (td) => td.textContent),
            vitals: [...document.querySelectorAll('[data-testid="vitals-row"]')].map((tr) => ({
              page: tr.dataset.page,
              lcp: tr.querySelector('[data-field="LCP"]').dataset.rating,
            })),
            rssPath: document.querySelector('#chart-rss path.line')?.getAttribute('d') || "",
            errors: window.__problems,
            resources: performance.getEntriesByType("resource").map((e) => e.name),
            xss: window.__xss === true,
          };
        })()"""
    )


def save_screenshot(browser: Any, path: Path) -> Path:
    size = browser.send("Page.getLayoutMetrics")["cssContentSize"]
    shot = browser.send(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    artifacts = os.environ.get("REDLINE_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)
    return path


def test_chromium_shows_live_values_from_a_real_app_under_traffic(tmp_path, pg_url):
    chromium()
    registry = monitor.Registry()
    monitor.install_process_metrics(registry)
    watch = monitor.LeakWatch(interval=0.2, warmup=0, min_samples=6, registry=registry)
    vitals = monitor.VitalsApp(registry)
    board = DashboardApp(registry, vitals=vitals, interval=0.25, window=3.0, title="shop")
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    watched = monitor.instrument_engine(
        engine, registry=registry, slow_query_seconds=0, logger=None
    )

    def item(request):  # sync: Starlette runs it in a thread
        with engine.connect() as conn:
            value = conn.execute(
                text("SELECT :id * 2 AS doubled, 'secret@example.com' AS who"),
                {"id": request.path_params["id"]},
            ).scalar()
        return JSONResponse({"doubled": value})

    site = dashboard_site(board, registry, Route("/items/{id:int}", item))
    app = monitor.LoopLagMiddleware(site, registry=registry, interval=0.05)
    # A label no app should produce, to prove the page never renders data as markup.
    requests, _ = http_metrics(registry)  # MetricsMiddleware will record into these
    requests.labels("<img src=x onerror=window.__xss=true>", "GET", "200").inc()
    watch.start()
    try:
        with Serving(app) as serving, Traffic(serving.url) as traffic:
            with httpx.Client() as client:
                beacon = {"page": "/shop/42", "metrics": [{"name": "LCP", "value": 1800}]}
                client.post(f"{serving.url}/_redline/vitals", json=beacon)
            eventually(lambda: traffic.sent > 50, "traffic to flow")
            started = time.perf_counter()
            with devtools() as browser:
                browser.send(
                    "Page.addScriptToEvaluateOnNewDocument",
                    source="window.__problems = [];"
                    "addEventListener('error', (e) => __problems.push(String(e.message)));"
                    "document.addEventListener('securitypolicyviolation',"
                    " (e) => __problems.push('CSP: ' + e.blockedURI));",
                )
                browser.navigate(f"{serving.url}/_redline/")
                state = eventually(
                    lambda: (
                        (s := page_state(browser))["seq"] >= 4
                        and s["window"].startswith("last")
                        and len(s["rows"]) >= 4
                        and s["leak"] != "not watched"
                        and s
                        or None
                    ),
                    "live values over SSE",
                    timeout=20,
                )
                first_seq = state["seq"]
                later = eventually(
                    lambda: (s := page_state(browser))["seq"] >= first_seq + 2 and s,
                    "more events",
                )
                shot = save_screenshot(browser, tmp_path / "dashboard.png")
            seconds = time.perf_counter() - started
    finally:
        watch.stop()
        watched.close()
        engine.dispose()

    rows = {(r["route"], r["method"]): r for r in later["rows"]}
    assert {("/users/{id}", "GET"), ("/items/{id}", "GET"), ("/boom", "GET")} <= set(rows)
    assert rows[("/boom", "GET")]["total"] >= 5
    assert rows[("/boom", "GET")]["errors"].endswith("(100.0 %)")
    assert rows[("/users/{id}", "GET")]["p99"].endswith(("µs", "ms"))
    assert later["status"] == "live"
    assert later["rps"].endswith(" req/s") and float(later["rps"].split()[0]) > 0
    assert later["errorRate"].endswith(" %") and 0 < float(later["errorRate"].split()[0]) < 100
    assert later["p99"].endswith(("µs", "ms"))
    assert later["rss"].endswith("MiB")
    assert later["leak"] in monitor.VERDICTS
    assert later["loop"].endswith(("µs", "ms"))
    assert later["rssPath"].startswith("M")
    assert later["cacheHint"].startswith("no data: ")
    assert later["engines"] == ["default"]
    assert "SELECT ? * ? AS doubled, ? AS who" in later["slow"]
    assert not any("secret" in s for s in later["slow"])
    assert later["vitals"] == [{"page": "/shop/:id", "lcp": "good"}]
    # The hostile label is shown as text, and nothing ran.
    assert rows[("<img src=x onerror=window.__xss=true>", "GET")]["html"].startswith("&lt;img")
    assert later["xss"] is False
    assert later["errors"] == []
    assert all(r.startswith(serving.url) for r in later["resources"]), later["resources"]
    assert shot.stat().st_size > 10_000
    assert seconds < 30
