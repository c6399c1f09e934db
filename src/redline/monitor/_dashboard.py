"""``DashboardApp``: a live page of a service's metrics, pushed over Server-Sent Events.

Mount it in the app (``app.mount("/_redline", DashboardApp())``) or serve it alone over a
``SnapshotDirectory`` (``redline dashboard --dir $REDLINE_MONITOR_DIR``). It answers

- ``GET /``: the page (``static/dashboard.html``, ``.js`` and ``.css``: hand-written, no
  library, nothing loaded from elsewhere, so it opens offline);
- ``GET /api/snapshot``: the current snapshot as JSON (below);
- ``GET /api/stream``: ``text/event-stream``, one ``snapshot`` event every ``interval``
  seconds, a comment line as heartbeat when there is nothing new for 15 s;
- with ``vitals=``, ``/vitals`` and ``/vitals.js`` go to that ``VitalsApp``, so one mount
  serves both the beacon and the page that shows what it reports.

Exclude the mount from ``MetricsMiddleware`` (``exclude=("/metrics", "/_redline")``): a
stream is one request lasting up to ``max_stream`` seconds and would swamp the latencies.

Sampling. A snapshot collects ``source`` (a ``Registry``, default ``REGISTRY``, or a
``SnapshotDirectory`` for all workers) in a worker thread and compares it with the reading
of ``window`` seconds before (default 10 s; readings are kept for that long): request and
error rates come from counter deltas, percentiles from the difference of the HDR histograms,
which is exact (the counts subtract), so a window's p99 is the p99 of the requests that
ended in it, not since start. Before a reading that old exists (the first snapshot, or the
first after nobody watched for longer than ``window``), values are cumulative since the
process started and ``window.cumulative`` says so; rates are then unknown (null). A counter
or histogram that went down (a restarted process) counts from zero, as ``rate()`` does.

Snapshots are taken only while someone asks: every open stream and ``/api/snapshot`` share
the newest one, so ten viewers cost one collection per ``interval``, and nobody watching
costs nothing. The RSS trend is a ring of the last ``trend`` samples (300: 5 min at 1 s)
kept here, so a page opened later still shows it.

Streams end on client disconnect, after ``max_stream`` seconds (30 s: the page reconnects
at once and nothing is lost) and on ``close()``, with a ``bye`` event. uvicorn waits for
open responses to finish before it shuts down and tells the app nothing (the lifespan
shutdown comes after), so a mounted dashboard delays a shutdown by at most ``max_stream``;
call ``close()`` where the server begins to shut down for an immediate stop (``redline
dashboard`` does).

The snapshot (``snapshot()``; numbers in base units: seconds, bytes, ratios 0..1; null for
unknown, never NaN). Each panel has ``available`` and, when false, a ``hint`` saying how to
enable it::

    {"version": 1, "seq": 12, "title": "...", "time": 1.7e9, "interval": 1.0,
     "window": {"seconds": 10.0, "cumulative": false},
     "http": {"rps", "requests", "errors", "error_rate", "in_flight", "total",
              "latency": {"p50", "p95", "p99"},
              "routes": [{"route", "method", "rps", "requests", "errors", "error_rate",
                          "total", "p50", "p95", "p99"}]},
     "cache": {"tiers": [{"labels": {...}, "hits", "misses", "hit_ratio",
                          "hit_ratio_total"}], "breakers": [{"labels": {...}, "state"}]},
     "db": {"engines": [{"engine", "qps", "queries", "errors", "slow", "p50", "p95",
                         "p99", "checked_out", "pool_size", "overflow", "usage_ratio"}],
            "slow_queries": [{"engine", "operation", "statement", "count", "max_seconds",
                              "mean_seconds", "last_seconds", "last_seen"}],
            "slow_hint": "..." | null},
     "memory": {"rss_bytes", "workers": [{"pid", "rss_bytes"}], "trend": [[time, bytes]]},
                 (rss_bytes and the trend: the sum over the workers; pid null in one process)
     "leak": {"verdict", "slope_bytes_per_second",
              "workers": [{"pid", "verdict", "slope_bytes_per_second"}]},
     "loop": {"p50_seconds", "p99_seconds", "max_seconds", "current_max_seconds",
              "stalls", "ticks"},
     "vitals": {"pages": [{"page", "metrics": {"LCP": {"p75", "count", "rating",
                                                       "unit"}}}]}}

Cache panels read ``redline_cache_hits_total`` and ``redline_cache_misses_total`` (or a
``redline_cache_hit_ratio`` gauge) by their labels (``tier``, ...), and
``redline_cache_l2_breaker_state`` (from ``instrument_cache``: 0 closed, 0.5 half-open,
1 open).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from time import monotonic
from typing import Any
from urllib.parse import quote

import orjson

from redline._hdr import new_histogram
from redline.monitor._asgi import Receive, Scope, Send
from redline.monitor._registry import REGISTRY, Collector, Registry
from redline.monitor._snapshot import HistogramValue, MetricFamily, _histogram_minus
from redline.monitor._sqlalchemy import SlowQuery, slow_queries
from redline.monitor._vitals import VitalsApp, _route_path

log = logging.getLogger("redline.monitor")

HEARTBEAT = 15.0
"""Seconds of silence after which a stream sends a comment line, so proxies keep it open."""

_CACHE = "redline_cache_"
_VITALS = "web_vitals_"
_WANTED = frozenset(
    {
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_progress",
        "db_queries_total",
        "db_query_duration_seconds",
        "db_query_errors_total",
        "db_slow_queries_total",
        "db_pool_checked_out",
        "db_pool_size",
        "db_pool_overflow",
        "db_pool_usage_ratio",
        "process_resident_memory_bytes",
        "leak_verdict",
        "leak_rss_slope_bytes_per_second",
        "event_loop_lag_seconds",
        "event_loop_lag_max_seconds",
        "event_loop_long_stalls_total",
    }
)
_BREAKER_STATES = {0.0: "closed", 0.5: "half_open", 1.0: "open"}
_SLOW_SHOWN = 10
_ROUTES_SHOWN = 100


class DashboardApp:
    """The live dashboard of ``source``: ``DashboardApp(source=REGISTRY, *, vitals=None,
    interval=1.0, window=10.0, max_stream=30.0, trend=300, title="redline")``; see the
    module docs for the routes and the snapshot."""

    def __init__(
        self,
        source: Collector | None = None,
        *,
        vitals: VitalsApp | None = None,
        interval: float = 1.0,
        window: float = 10.0,
        max_stream: float = 30.0,
        trend: int = 300,
        title: str = "redline",
    ) -> None:
        if not interval > 0:
            raise ValueError(f"DashboardApp: interval must be > 0 seconds, got {interval!r}")
        if not window >= interval:
            raise ValueError(
                f"DashboardApp: window ({window!r} s) must be at least one interval "
                f"({interval!r} s)"
            )
        if not max_stream > interval:
            raise ValueError(
                f"DashboardApp: max_stream ({max_stream!r} s) must exceed interval "
                f"({interval!r} s), or a stream would end before its second event"
            )
        if trend < 2:
            raise ValueError(f"DashboardApp: trend must keep at least 2 samples, got {trend!r}")
        self.source: Collector = REGISTRY if source is None else source
        self.vitals = vitals
        self.interval = interval
        self.window = window
        self.max_stream = max_stream
        self.title = title
        # Summarises web_vitals_* families found in the source when no VitalsApp is given.
        self._summariser = vitals if vitals is not None else VitalsApp(registry=None)
        self._sampling = threading.Lock()
        self._readings: deque[_Reading] = deque(maxlen=math.ceil(window / interval) + 3)
        self._rss: deque[tuple[float, float]] = deque(maxlen=trend)
        self._seq = 0
        self._latest: _Published | None = None
        self._refresh: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._streams: set[_Stream] = set()
        self._streams_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<DashboardApp of {self.source!r} every {self.interval} s>"

    @property
    def streams(self) -> int:
        """How many event streams are open."""
        return len(self._streams)

    def close(self) -> None:
        """End every open stream now (with a ``bye`` event) and refuse new ones with 503.
        Safe from any thread."""
        with self._streams_lock:
            self._closed = True
            streams = list(self._streams)
        for stream in streams:
            stream.stop("shutdown")

    # -- snapshots ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Collect the source now and return the snapshot (see the module docs)."""
        with self._sampling:
            now = _Reading.of(self.source.collect(), monotonic())
            readings = self._readings
            readings.append(now)
            # The oldest reading within the window (and half an interval's jitter) is the
            # baseline; older ones are of no further use.
            while len(readings) > 1 and readings[0].when < now.when - self.window - (
                self.interval / 2
            ):
                readings.popleft()
            base = readings[0] if readings[0] is not now else None
            rss = now.get("process_resident_memory_bytes")
            if rss is not None and rss.samples:
                self._rss.append((now.wall, math.fsum(rss.samples.values())))
            self._seq += 1
            data = {
                "version": 1,
                "seq": self._seq,
                "title": self.title,
                "time": now.wall,
                "interval": self.interval,
                "window": {
                    "seconds": None if base is None else now.when - base.when,
                    "cumulative": base is None,
                },
                "http": http_panel(now, base),
                "cache": cache_panel(now, base),
                "db": db_panel(now, base, *self._slow_queries()),
                "memory": memory_panel(now, list(self._rss)),
                "leak": leak_panel(now),
                "loop": loop_panel(now, base),
                "vitals": vitals_panel(now, self._summariser),
            }
            self._latest = _Published(self._seq, now.when, orjson.dumps(data))
            return data

    def _slow_queries(self) -> tuple[list[SlowQuery], bool]:
        """This process's slow-query log, and whether it is one worker's among several."""
        if isinstance(self.source, Registry):
            return slow_queries(self.source), False
        registry = getattr(self.source, "registry", None)
        return (slow_queries(registry) if isinstance(registry, Registry) else []), True

    async def _fresh(self) -> _Published:
        """The newest snapshot, taken now unless one is less than half an interval old;
        concurrent callers wait for one collection rather than each making their own."""
        latest = self._latest
        if latest is not None and monotonic() - latest.taken < self.interval / 2:
            return latest
        loop = asyncio.get_running_loop()
        if self._refresh is None or self._refresh[0] is not loop:
            self._refresh = (loop, asyncio.Lock())
        async with self._refresh[1]:
            latest = self._latest
            if latest is not None and monotonic() - latest.taken < self.interval / 2:
                return latest
            await asyncio.to_thread(self.snapshot)
            assert self._latest is not None
            return self._latest

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"DashboardApp serves HTTP, not {scope['type']!r}")
        path = _route_path(scope)
        if self.vitals is not None and path in ("/vitals", "/vitals.js"):
            await self.vitals(scope, receive, send)
            return
        if path == "":
            # Mounted at /_redline and asked for /_redline: the page's relative URLs
            # need the slash.
            location = quote(scope.get("root_path", "")) + "/"
            await _respond(send, 308, b"", [(b"location", location.encode())])
            return
        method = scope["method"]
        if path not in _ASSETS and path not in ("/api/snapshot", "/api/stream"):
            await _respond(
                send,
                404,
                b"not found: the dashboard serves /, /api/snapshot and /api/stream\n",
                _TEXT,
            )
        elif method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [*_TEXT, (b"allow", b"GET, HEAD")])
        elif path == "/api/stream":
            await self._stream(scope, receive, send)
        elif path == "/api/snapshot":
            published = await self._fresh()
            body = published.body if method == "GET" else b""
            headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
            await _respond(send, 200, body, headers, len(published.body))
        else:
            await _static(*_ASSETS[path], scope, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = _Stream(asyncio.get_running_loop())
        with self._streams_lock:
            closed = self._closed
            if not closed:
                self._streams.add(stream)
        if closed:
            await _respond(send, 503, b"the dashboard is shutting down\n", _TEXT)
            return
        watcher = asyncio.create_task(_watch_disconnect(receive, stream))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            if scope["method"] == "GET":
                await self._pump(send, stream)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            # ASGI 2.4 servers raise it from send() once the client has gone.
            pass
        finally:
            with self._streams_lock:
                self._streams.discard(stream)
            watcher.cancel()
            await asyncio.wait([watcher])

    async def _pump(self, send: Send, stream: _Stream) -> None:
        started = monotonic()
        end = started + self.max_stream
        # The browser waits this long before reconnecting after a lost connection; sent
        # with the first event.
        chunk = b"retry: 2000\n"
        last_seq = -1
        sent = started
        due = started
        while True:
            now = monotonic()
            if now >= due:
                try:
                    published = await self._fresh()
                except Exception as error:
                    log.exception("dashboard: taking a snapshot failed")
                    chunk += b"event: failure\ndata: " + orjson.dumps(str(error)) + b"\n\n"
                    due = now + self.interval
                else:
                    if published.seq != last_seq:
                        last_seq = published.seq
                        chunk += b"id: %d\nevent: snapshot\ndata: %s\n\n" % (
                            published.seq,
                            published.body,
                        )
                    due = published.taken + self.interval
            elif now - sent >= HEARTBEAT:
                chunk = b": heartbeat\n\n"
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                chunk, sent = b"", monotonic()
            wake = min(due, end, sent + HEARTBEAT)
            try:
                async with asyncio.timeout(max(wake - monotonic(), 0)):
                    await stream.stopped.wait()
            except TimeoutError:
                pass
            if stream.reason == "disconnect":
                return
            if stream.reason or monotonic() >= end:
                reason = stream.reason or "max-stream"
                bye = b"event: bye\ndata: " + orjson.dumps({"reason": reason}) + b"\n\n"
                await send({"type": "http.response.body", "body": bye, "more_body": True})
                return


class _Stream:
    """One open event stream: why it must stop, settable from any thread."""

    __slots__ = ("loop", "stopped", "reason")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stopped = asyncio.Event()
        self.reason = ""

    def stop(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
        # A closed loop took the stream with it.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.stopped.set)


async def _watch_disconnect(receive: Receive, stream: _Stream) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.stop("disconnect")
            return


@dataclass(frozen=True, slots=True)
class _Published:
    seq: int
    taken: float
    body: bytes


# -- readings and panels ---------------------------------------------------------------------


class _Reading:
    """The families the dashboard uses, as collected at ``when`` (monotonic) / ``wall``."""

    __slots__ = ("when", "wall", "families")

    def __init__(self, when: float, wall: float, families: dict[str, MetricFamily]) -> None:
        self.when = when
        self.wall = wall
        self.families = families

    @classmethod
    def of(
        cls, families: Iterable[MetricFamily], when: float, wall: float | None = None
    ) -> _Reading:
        kept = {
            f.name: f for f in families if f.name in _WANTED or f.name.startswith((_CACHE, _VITALS))
        }
        return cls(when, time.time() if wall is None else wall, kept)

    def get(self, name: str) -> MetricFamily | None:
        return self.families.get(name)


def _no_data(hint: str) -> dict[str, Any]:
    return {"available": False, "hint": f"no data: {hint}"}


def _since(now: MetricFamily | None, base: _Reading | None) -> dict[tuple[str, ...], Any]:
    """Each series of counter or histogram ``now`` less its value in ``base`` (all of it
    when ``base`` is None, the series is new, or it went down: a restarted process)."""
    if now is None:
        return {}
    before = base.get(now.name) if base is not None else None
    if before is None or before.signature() != now.signature():
        return dict(now.samples)
    old = before.samples
    out: dict[tuple[str, ...], Any] = {}
    for key, value in now.samples.items():
        prior = old.get(key)
        if prior is None:
            out[key] = value
        elif now.kind == "counter":
            out[key] = value - prior if value >= prior else value
        elif prior.count > value.count or any(
            b > a for a, b in zip(value.bucket_counts, prior.bucket_counts, strict=True)
        ):
            out[key] = value
        else:
            out[key] = _histogram_minus(value, prior)
    return out


def _combined(values: Iterable[HistogramValue]) -> HistogramValue | None:
    """One histogram of several series' samples (for quantiles only), None if no samples."""
    values = [v for v in values if v.count and _layout(v) is not None]
    if not values:
        return None
    hdr = new_histogram(*_layout(values[0]))  # type: ignore[misc]
    for value in values:
        value._add_to(hdr)
    count = sum(v.count for v in values)
    return HistogramValue(count, math.fsum(v.sum for v in values), (), values[0].scale, hdr=hdr)


def _layout(value: HistogramValue) -> tuple[int, int] | None:
    if value._span is not None:
        return value._span.highest, value._span.digits
    hdr = value._hdr
    return (hdr.highest_trackable_value, hdr.significant_figures) if hdr is not None else None


def _quantiles(value: HistogramValue | None) -> dict[str, float | None]:
    if value is None or not value.count:
        return {"p50": None, "p95": None, "p99": None}
    qs = value.quantiles((0.5, 0.95, 0.99))
    return {"p50": qs[0.5], "p95": qs[0.95], "p99": qs[0.99]}


def _rate(count: float, seconds: float | None) -> float | None:
    return count / seconds if seconds else None


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _seconds(now: _Reading, base: _Reading | None) -> float | None:
    return None if base is None else now.when - base.when


def http_panel(now: _Reading, base: _Reading | None) -> dict[str, Any]:
    """Request rate, 5xx share and latency percentiles, overall and by route and method."""
    requests = now.get("http_requests_total")
    if requests is None:
        return _no_data(
            "add MetricsMiddleware to the app (app.add_middleware(monitor.MetricsMiddleware)) "
            "and, with several workers, serve the dashboard over their SnapshotDirectory"
        )
    seconds = _seconds(now, base)
    counts = _since(requests, base)
    latencies = _since(now.get("http_request_duration_seconds"), base)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (route, method, status), total in requests.samples.items():
        row = rows.setdefault((route, method), {"requests": 0.0, "errors": 0.0, "total": 0.0})
        row["total"] += total
        window = counts.get((route, method, status), 0.0)
        row["requests"] += window
        if status.startswith("5"):
            row["errors"] += window
    routes = []
    for (route, method), row in rows.items():
        routes.append(
            {
                "route": route,
                "method": method,
                "rps": _rate(row["requests"], seconds),
                "requests": row["requests"],
                "errors": row["errors"],
                "error_rate": _ratio(row["errors"], row["requests"]),
                "total": row["total"],
                **_quantiles(latencies.get((route, method))),
            }
        )
    routes.sort(key=lambda r: (-r["requests"], -r["total"], r["route"], r["method"]))
    window_requests = math.fsum(row["requests"] for row in rows.values())
    window_errors = math.fsum(row["errors"] for row in rows.values())
    in_flight = now.get("http_requests_in_progress")
    return {
        "available": True,
        "rps": _rate(window_requests, seconds),
        "requests": window_requests,
        "errors": window_errors,
        "error_rate": _ratio(window_errors, window_requests),
        "in_flight": math.fsum(in_flight.samples.values()) if in_flight else None,
        "total": math.fsum(requests.samples.values()),
        "latency": _quantiles(_combined(latencies.values())),
        "routes": routes[:_ROUTES_SHOWN],
        "routes_hidden": max(len(routes) - _ROUTES_SHOWN, 0),
    }


def _labels(family: MetricFamily, key: tuple[str, ...], drop: str = "") -> dict[str, str]:
    return {name: value for name, value in zip(family.labelnames, key, strict=True) if name != drop}


def cache_panel(now: _Reading, base: _Reading | None) -> dict[str, Any]:
    """Hit ratio per tier over the window and since start, and each breaker's state."""
    if not any(name.startswith(_CACHE) for name in now.families):
        return _no_data(
            "instrument the cache (monitor.instrument_cache(cache)) to export redline_cache_* "
            "metrics"
        )
    hits_family = now.get(f"{_CACHE}hits_total")
    misses_family = now.get(f"{_CACHE}misses_total")
    tiers = []
    if hits_family is not None and misses_family is not None:
        hits, misses = _since(hits_family, base), _since(misses_family, base)
        keys = sorted(set(hits_family.samples) | set(misses_family.samples))
        for key in keys:
            h, m = hits.get(key, 0.0), misses.get(key, 0.0)
            total_h = hits_family.samples.get(key, 0.0)
            total_m = misses_family.samples.get(key, 0.0)
            tiers.append(
                {
                    "labels": _labels(hits_family, key),
                    "hits": h,
                    "misses": m,
                    "hit_ratio": _ratio(h, h + m),
                    "hit_ratio_total": _ratio(total_h, total_h + total_m),
                }
            )
    else:
        ratio = now.get(f"{_CACHE}hit_ratio")
        for key, value in (ratio.samples if ratio else {}).items():
            tiers.append(
                {
                    "labels": _labels(ratio, key),
                    "hits": None,
                    "misses": None,
                    "hit_ratio": _finite(value),
                    "hit_ratio_total": None,
                }
            )
    breakers = []
    # instrument_cache exports the L2 breaker as 0 closed, 0.5 half-open, 1 open.
    breaker = now.get(f"{_CACHE}l2_breaker_state")
    if breaker is not None:
        for key, value in sorted(breaker.samples.items()):
            state = _BREAKER_STATES.get(value) if math.isfinite(value) else None
            breakers.append({"labels": _labels(breaker, key), "state": state or "unknown"})
    return {"available": True, "tiers": tiers, "breakers": breakers}


def db_panel(
    now: _Reading, base: _Reading | None, slow: list[SlowQuery], per_worker: bool = False
) -> dict[str, Any]:
    """Per engine: queries, errors and slow ones over the window, latency, pool use; and the
    slow-query log ``slow`` (``slow_queries()``), of one worker among several if
    ``per_worker``."""
    queries = now.get("db_queries_total")
    if queries is None and not slow:
        return _no_data("instrument the engine (monitor.instrument_engine(engine))")
    seconds = _seconds(now, base)
    engines: dict[str, dict[str, Any]] = {}

    def engine(name: str) -> dict[str, Any]:
        return engines.setdefault(
            name,
            {"engine": name, "queries": 0.0, "errors": 0.0, "slow": 0.0, "latencies": []},
        )

    for name, field in (
        ("db_queries_total", "queries"),
        ("db_query_errors_total", "errors"),
        ("db_slow_queries_total", "slow"),
    ):
        family = now.get(name)
        for key, delta in _since(family, base).items():
            engine(_labels(family, key)["engine"])[field] += delta
    durations = now.get("db_query_duration_seconds")
    for key, value in _since(durations, base).items():
        engine(_labels(durations, key)["engine"])["latencies"].append(value)
    for name, field in (
        ("db_pool_checked_out", "checked_out"),
        ("db_pool_size", "pool_size"),
        ("db_pool_overflow", "overflow"),
        ("db_pool_usage_ratio", "usage_ratio"),
    ):
        family = now.get(name)
        for key, value in (family.samples if family else {}).items():
            engine(_labels(family, key)["engine"])[field] = _finite(value)
    rows = []
    for name in sorted(engines):
        row = engines[name]
        latencies = row.pop("latencies")
        row["qps"] = _rate(row["queries"], seconds)
        row.update(_quantiles(_combined(latencies)))
        for field in ("checked_out", "pool_size", "overflow", "usage_ratio"):
            row.setdefault(field, None)
        rows.append(row)
    log_entries = [
        {
            "engine": q.engine,
            "operation": q.operation,
            "statement": q.statement,
            "count": q.count,
            "max_seconds": q.max_seconds,
            "mean_seconds": q.mean_seconds,
            "last_seconds": q.last_seconds,
            "last_seen": q.last_seen,
        }
        for q in slow[:_SLOW_SHOWN]
    ]
    if per_worker and not slow:
        hint = (
            "the slow-query log is kept in each app process: mount the dashboard in the app "
            "to see it (the counts above are of all workers)"
        )
    elif per_worker:
        hint = "the slow-query log of the worker serving this page: each process keeps its own"
    elif not slow:
        hint = "no statement has reached the engine's slow_query_seconds yet"
    else:
        hint = None
    return {"available": True, "engines": rows, "slow_queries": log_entries, "slow_hint": hint}


def _pid(family: MetricFamily, key: tuple[str, ...]) -> str | None:
    return _labels(family, key).get("pid")


def memory_panel(now: _Reading, trend: list[tuple[float, float]]) -> dict[str, Any]:
    """Resident memory of every worker, their total and its recent trend."""
    rss = now.get("process_resident_memory_bytes")
    if rss is None or not rss.samples:
        return _no_data("install process metrics (monitor.install_process_metrics())")
    workers = [{"pid": _pid(rss, key), "rss_bytes": value} for key, value in rss.samples.items()]
    workers.sort(key=lambda w: w["pid"] or "")
    return {
        "available": True,
        "rss_bytes": math.fsum(rss.samples.values()),
        "workers": workers,
        "trend": [[when, value] for when, value in trend],
    }


_VERDICT_ORDER = {"growing": 0, "warming-up": 1, "stable": 2}


def leak_panel(now: _Reading) -> dict[str, Any]:
    """The leak watch's verdict per worker; the service's is the worst of them."""
    verdicts = now.get("leak_verdict")
    if verdicts is None or not verdicts.samples:
        return _no_data("start a leak watch in each worker (monitor.LeakWatch().start())")
    slopes = now.get("leak_rss_slope_bytes_per_second")
    slope_of = {
        _pid(slopes, key): _finite(value)
        for key, value in (slopes.samples if slopes else {}).items()
    }
    by_pid: dict[str | None, str] = {}
    for key, value in verdicts.samples.items():
        if value >= 1:
            by_pid[_pid(verdicts, key)] = _labels(verdicts, key)["verdict"]
    workers = [
        {"pid": pid, "verdict": verdict, "slope_bytes_per_second": slope_of.get(pid)}
        for pid, verdict in sorted(by_pid.items(), key=lambda item: item[0] or "")
    ]
    worst = min(by_pid.values(), key=lambda v: _VERDICT_ORDER.get(v, 1), default=None)
    known = [s for s in slope_of.values() if s is not None]
    return {
        "available": True,
        "verdict": worst,
        "slope_bytes_per_second": max(known) if known else None,
        "workers": workers,
    }


def loop_panel(now: _Reading, base: _Reading | None) -> dict[str, Any]:
    """Event-loop lag: p50/p99/max of the window's ticks, and the monitor's own max."""
    lag = now.get("event_loop_lag_seconds")
    if lag is None:
        return _no_data(
            "wrap the app in monitor.LoopLagMiddleware (or start a LoopLagMonitor on its loop)"
        )
    window = _combined(_since(lag, base).values())
    stalls = now.get("event_loop_long_stalls_total")
    current = now.get("event_loop_lag_max_seconds")
    qs = window.quantiles((0.5, 0.99, 1.0)) if window is not None else {}
    return {
        "available": True,
        "p50_seconds": qs.get(0.5),
        "p99_seconds": qs.get(0.99),
        "max_seconds": qs.get(1.0),
        "current_max_seconds": max(current.samples.values(), default=None) if current else None,
        "stalls": math.fsum(_since(stalls, base).values()) if stalls else None,
        "ticks": window.count if window is not None else 0,
    }


class _Families:
    """A ``Collector`` of families already collected."""

    def __init__(self, families: list[MetricFamily]) -> None:
        self.families = families

    def collect(self) -> list[MetricFamily]:
        return self.families


def vitals_panel(now: _Reading, summariser: VitalsApp) -> dict[str, Any]:
    """Web Vitals p75 and rating per page and metric, since start (one sample a page view)."""
    families = [f for name, f in now.families.items() if name.startswith(_VITALS)]
    if not families:
        return _no_data(
            "mount monitor.VitalsApp (or pass vitals= to DashboardApp) and add its "
            'beacon to the pages: <script src="/_redline/vitals.js" defer></script>'
        )
    summary = summariser.summary(_Families(families))
    pages = [
        {
            "page": page,
            "metrics": {
                name: {
                    "p75": value.p75,
                    "count": value.count,
                    "rating": value.rating,
                    "unit": "" if name == "CLS" else "ms",
                }
                for name, value in sorted(metrics.items())
            },
        }
        for page, metrics in sorted(summary.items())
    ]
    hint = None if pages else "no beacon yet: the pages report when they are first hidden"
    return {"available": True, "pages": pages, "hint": hint}


# -- responses -------------------------------------------------------------------------------

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    # nginx buffers proxied responses unless told not to.
    (b"x-accel-buffering", b"no"),
]
_ASSETS = {
    "/": ("dashboard.html", b"text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
}
# Only this origin's script, style and connections: no inline script, nothing fetched
# from elsewhere, whatever a metric label contains.
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


@cache
def _asset(name: str) -> tuple[bytes, bytes]:
    body = files("redline.monitor").joinpath("static", name).read_bytes()
    return body, f'"{hashlib.sha256(body).hexdigest()[:20]}"'.encode()


async def _static(name: str, kind: bytes, scope: Scope, send: Send) -> None:
    body, etag = _asset(name)
    headers = [
        (b"content-type", kind),
        (b"cache-control", b"no-cache"),
        (b"etag", etag),
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", _CSP),
        (b"referrer-policy", b"no-referrer"),
    ]
    wanted = b",".join(v for k, v in scope.get("headers", ()) if k.lower() == b"if-none-match")
    if etag in {tag.strip().removeprefix(b"W/") for tag in wanted.split(b",")}:
        await _respond(send, 304, b"", headers, None)
        return
    await _respond(send, 200, body if scope["method"] == "GET" else b"", headers, len(body))


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    length: int | None = -1,
) -> None:
    """A whole response; ``length`` None for none (304), -1 for ``len(body)``."""
    headers = list(headers)
    if length is not None:
        headers.append((b"content-length", b"%d" % (len(body) if length == -1 else length)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
