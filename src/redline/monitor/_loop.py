"""Event-loop lag: how late a timer fires, the Python counterpart of the browser's long tasks.

While a coroutine runs without awaiting (a CPU-bound loop, a blocking call, a huge JSON
encode), every other request on that loop waits. ``LoopLagMonitor`` schedules one timer
every ``interval`` seconds with ``loop.call_later`` and, when it fires, records how late it
is. The cost is that one timer per interval (a handle, a ``time.monotonic()``, an array
append): about 4 us, 20 times a second by default, no task and no coroutine. The
interval is shorter than ``threshold``, so every stall longer than threshold + interval
counts as a long one.

- ``event_loop_lag_seconds``: histogram of every tick's lag.
- ``event_loop_lag_max_seconds``: the largest lag of the last ``window`` seconds (10 s),
  including a stall still in progress when collected from another thread (the snapshot
  writer of a ``SnapshotDirectory``); several workers merge as ``max``, the worst loop.
- ``event_loop_long_stalls_total``: ticks later than ``threshold`` (100 ms).

Reading the numbers: a stall of ``d`` seconds shows as a lag between ``d - interval`` and
``d``, depending on where in the interval it began, and one late tick, so one long stall,
however long it lasts. An idle loop measures 0.1-0.3 ms and a few ms at worst (the
selector's timeout is rounded up to the millisecond, by asyncio's epoll as by libuv under
uvloop, and the OS may not run the thread at once): lags of a few ms are not stalls.

Start it on the loop it watches: ``monitor.start()`` from async code and ``stop()``,
``async with LoopLagMonitor():`` (in a Starlette/FastAPI ``lifespan``), or wrap any ASGI
app in ``LoopLagMiddleware``, which starts it at lifespan startup (or on the first request
when the server runs no lifespan) and stops it at shutdown. Monitors that share a registry
share the three metrics; the gauge shows the worst of them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

from redline.monitor._asgi import Receive, Scope, Send
from redline.monitor._counter import Counter
from redline.monitor._exceptions import RedlineMonitorError
from redline.monitor._gauge import Gauge
from redline.monitor._histogram import Histogram
from redline.monitor._registry import REGISTRY, Registry

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LoopLagMonitor:
    """Measures the lag of one event loop: ``LoopLagMonitor(interval=0.05, *,
    threshold=0.1, window=10.0, registry=REGISTRY)``, all in seconds."""

    def __init__(
        self,
        interval: float = 0.05,
        *,
        threshold: float = 0.1,
        window: float = 10.0,
        registry: Registry | None = REGISTRY,
    ) -> None:
        if not interval > 0:
            raise RedlineMonitorError(f"interval must be > 0 seconds, got {interval!r}")
        if not threshold > 0:
            raise RedlineMonitorError(f"threshold must be > 0 seconds, got {threshold!r}")
        if not window >= interval:
            raise RedlineMonitorError(
                f"window ({window!r} s) must be at least one interval ({interval!r} s)"
            )
        self.interval = interval
        self.threshold = threshold
        self.window = window
        self._metrics = _LagMetrics.of(registry)
        self._observe = self._metrics.lag.observe
        self._stall = self._metrics.stalls.inc
        # (when, lag) of recent ticks; bounded so the loop thread never has to prune it.
        self._recent: deque[tuple[float, float]] = deque(maxlen=int(window / interval) + 2)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LoopLagMonitor every {self.interval} s, {state}>"

    async def __aenter__(self) -> LoopLagMonitor:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the timer is scheduled on a loop that is not closed."""
        loop = self._loop
        return self._handle is not None and loop is not None and not loop.is_closed()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> LoopLagMonitor:
        """Start watching ``loop`` (default: the running loop); call it from that loop's
        thread. Starting a running monitor does nothing."""
        if self.running:
            return self
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RedlineMonitorError(
                    "LoopLagMonitor.start() found no running event loop: call it from "
                    "async code (a lifespan, a startup hook) or pass loop="
                ) from None
        self._loop = loop
        self._schedule(loop)
        self._metrics.monitors.add(self)
        return self

    def stop(self) -> None:
        """Stop watching; the metrics keep what was recorded, and the gauge the lags of
        the last window."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()

    def max_lag(self) -> float:
        """The largest lag of the last ``window`` seconds, counting a stall in progress."""
        now = monotonic()
        since = now - self.window
        worst = max((lag for when, lag in list(self._recent) if when >= since), default=0.0)
        loop = self._loop
        if self._handle is not None and loop is not None and loop.is_running():
            worst = max(worst, now - self._due)
        return worst

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = monotonic() + self.interval
        self._handle = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = monotonic()
        # asyncio may fire a timer up to its clock resolution early.
        lag = max(0.0, now - self._due)
        self._observe(lag)
        self._recent.append((now, lag))
        if lag >= self.threshold:
            self._stall()
        if self._handle is not None and self._loop is not None:
            self._schedule(self._loop)


class _LagMetrics:
    """The three metrics of one registry, shared by the monitors that use it."""

    _of: weakref.WeakKeyDictionary[Registry, _LagMetrics] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, registry: Registry | None) -> None:
        self.monitors: weakref.WeakSet[LoopLagMonitor] = weakref.WeakSet()

        def new(kind: type, name: str, help: str, **options: Any) -> Any:
            if registry is None:
                return kind(name, help, registry=None, **options)
            return registry.get_or_create(
                name, kind, lambda: kind(name, help, registry=None, **options)
            )

        self.lag = new(Histogram, "event_loop_lag_seconds", "How late the event loop ran a timer.")
        self.max = new(
            Gauge,
            "event_loop_lag_max_seconds",
            "Largest event-loop lag of the last window, counting a stall in progress.",
            multiprocess_mode="max",
        )
        self.stalls = new(
            Counter,
            "event_loop_long_stalls",
            "Timer ticks later than the long-stall threshold.",
        )
        self.max.set_function(self._worst)

    @classmethod
    def of(cls, registry: Registry | None) -> _LagMetrics:
        if registry is None:
            return cls(None)
        with cls._lock:
            metrics = cls._of.get(registry)
            if metrics is None or registry.get(metrics.lag.name) is not metrics.lag:
                metrics = cls._of[registry] = cls(registry)
            return metrics

    def _worst(self) -> float:
        return max((monitor.max_lag() for monitor in list(self.monitors)), default=0.0)


class LoopLagMiddleware:
    """ASGI middleware running a ``LoopLagMonitor`` (``monitor``, or one made from
    ``options``) from lifespan startup, or the first request, to lifespan shutdown."""

    def __init__(self, app: ASGIApp, monitor: LoopLagMonitor | None = None, **options: Any) -> None:
        self.app = app
        self.monitor = monitor if monitor is not None else LoopLagMonitor(**options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            monitor = self.monitor

            async def lifespan_receive() -> Any:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    monitor.start()
                elif message["type"] == "lifespan.shutdown":
                    monitor.stop()
                return message

            await self.app(scope, lifespan_receive, send)
            return
        if not self.monitor.running:
            self.monitor.start()
        await self.app(scope, receive, send)
