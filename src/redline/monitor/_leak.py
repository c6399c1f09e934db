"""Leak watch: is this process's memory growing without bound, or has it levelled off?

``LeakWatch`` samples the resident set size (and the Python heap's allocated block count,
``sys.getallocatedblocks()``) every ``interval`` seconds (30) into a sliding window of the
last ``window`` samples (60, so 30 minutes), fits a least-squares line through the RSS and
gives a verdict: ``warming-up``, ``stable`` or ``growing``. A sample reads
``/proc/self/statm``, counts the allocator's blocks and fits three lines over the window:
about 0.2 ms every 30 s, safe to leave on in production.

Memory that grows is not a leak until it keeps growing. Allocator arenas, caches, pools and
lazily imported modules grow quickly after start and then plateau, and a busy process's RSS
rises and falls with its work. Each guard keeps one of these from reading as a leak; the
verdict is ``growing`` only when all of them pass:

1. Warm-up (``warmup``, 300 s from the first sample): samples taken before it are not kept.
   Start-up growth is real but expected, and would dominate any fit it took part in.
2. Minimum window (``min_samples``, 10): fewer points give a slope that is mostly noise.
   Until then the verdict stays ``warming-up``.
3. Positive slope: RSS must rise on the whole window.
4. Fit quality (``min_r2``, 0.8): the line must explain at least 80 % of the variance. A
   sawtooth (work and GC cycles) or noise has a slope but a poor fit; and a single step
   (a cache filled once) fits at most R^2 = 0.75 however it is placed, so 0.8 rejects it.
5. Absolute floor (``min_growth_bytes``, 16 MiB): the fitted growth over the window must
   exceed it; a few MiB of drift are fragmentation and allocator noise, not worth a page.
6. Relative floor (``min_growth_ratio``, 10 %): the growth must also exceed this share of
   the baseline (the fitted RSS at the start of the window): 16 MiB is noise for a 4 GiB
   process.
7. Not levelling off (``plateau_ratio``, 0.5): the slope of the most recent half of the
   window must be at least half the whole window's. Growth that decelerates into a plateau
   (arenas and caches reaching their working set) fits a line well but fails this.

The heap's slope (blocks per second) is reported alongside: RSS growing with the heap means
Python objects are being retained (find where with ``snapshot_diff``); RSS growing while the
heap is flat points at native memory (C extensions, buffers) or fragmentation. The heap is
never read through ``tracemalloc``, which would have to be tracing: it costs memory and
slows every allocation, so it is never started implicitly, only by ``start_tracing()``.

The watch runs in a daemon thread rather than an asyncio task: it works in sync servers
too, and keeps sampling while an event loop is stalled. ``clock``, ``sample_rss`` and
``sample_heap`` are injectable, and ``sample()`` takes one sample at once, so tests can feed
any series. Outside Linux the RSS is the peak (``getrusage``), which never falls: a leak
still shows as growth, memory that is freed again as a flat line at its peak. In a worker
forked from a watching parent the window starts over.

Metrics, one series per worker (``multiprocess_mode="all"``): the slopes
``leak_rss_slope_bytes_per_second`` and ``leak_heap_slope_blocks_per_second`` (NaN until
the window has 3 samples) and ``leak_verdict{verdict}``, 1 for the current verdict and 0
for the others. Create one watch per process: a second one in the same registry is refused.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import tracemalloc
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import fsum

from redline.monitor._exceptions import MetricError, RedlineMonitorError
from redline.monitor._gauge import Gauge
from redline.monitor._process import _LINUX, _read_max_rss, read_rss, resource
from redline.monitor._registry import REGISTRY, Registry

log = logging.getLogger("redline.monitor")

MiB = 1 << 20
VERDICTS = ("warming-up", "stable", "growing")


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading: ``when`` (the watch's clock), ``rss`` in bytes, ``heap`` in blocks."""

    when: float
    rss: float
    heap: float | None


@dataclass(frozen=True, slots=True)
class LeakReport:
    """A verdict and the numbers behind it. ``slope`` and ``recent_slope`` are in bytes per
    second, ``growth`` and ``baseline`` in bytes (fitted, over the window), ``heap_slope`` in
    blocks per second; slopes are NaN with fewer than 3 samples."""

    verdict: str
    reason: str
    samples: int
    span: float
    slope: float = math.nan
    r2: float = math.nan
    growth: float = math.nan
    baseline: float = math.nan
    recent_slope: float = math.nan
    heap_slope: float = math.nan
    rss: float = math.nan


class LeakWatch:
    """Samples RSS and heap size and judges whether they grow; see the module docs for the
    guards. ``start()`` runs it in a daemon thread; ``stop()`` ends it."""

    def __init__(
        self,
        interval: float = 30.0,
        *,
        window: int = 60,
        warmup: float = 300.0,
        min_samples: int = 10,
        min_r2: float = 0.8,
        min_growth_bytes: float = 16 * MiB,
        min_growth_ratio: float = 0.10,
        plateau_ratio: float = 0.5,
        sample_rss: Callable[[], float] | None = None,
        sample_heap: Callable[[], float] | None = sys.getallocatedblocks,
        clock: Callable[[], float] = time.monotonic,
        registry: Registry | None = REGISTRY,
    ) -> None:
        if not interval > 0:
            raise RedlineMonitorError(f"interval must be > 0 seconds, got {interval!r}")
        if not 6 <= min_samples <= window:
            raise RedlineMonitorError(
                f"need 6 <= min_samples <= window (the recent half needs 3 points), got "
                f"min_samples={min_samples!r}, window={window!r}"
            )
        if not 0 <= min_r2 <= 1 or not 0 <= plateau_ratio <= 1:
            raise RedlineMonitorError(
                f"min_r2 ({min_r2!r}) and plateau_ratio ({plateau_ratio!r}) must be in 0..1"
            )
        if warmup < 0 or min_growth_bytes < 0 or min_growth_ratio < 0:
            raise RedlineMonitorError("warmup, min_growth_bytes and min_growth_ratio must be >= 0")
        if sample_rss is None:
            sample_rss = _default_rss()
        self.interval = interval
        self.window = window
        self.warmup = warmup
        self.min_samples = min_samples
        self.min_r2 = min_r2
        self.min_growth_bytes = min_growth_bytes
        self.min_growth_ratio = min_growth_ratio
        self.plateau_ratio = plateau_ratio
        self._sample_rss = sample_rss
        self._sample_heap = sample_heap
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fork_hook = False
        self._reset_window()
        self._gauges(registry)

    def __repr__(self) -> str:
        return f"<LeakWatch every {self.interval} s: {self._report.verdict}>"

    def __enter__(self) -> LeakWatch:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def report(self) -> LeakReport:
        """The verdict after the latest sample."""
        return self._report

    def samples(self) -> list[MemorySample]:
        """The samples in the window, oldest first (the warm-up's are not kept)."""
        with self._lock:
            return list(self._window)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> LeakWatch:
        """Sample now, then every ``interval`` seconds in a daemon thread."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="redline-leak-watch", daemon=True
            )
            self._thread.start()
        if not self._fork_hook:
            hook = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (m := hook()) and m())
            self._fork_hook = True
        return self

    def stop(self) -> None:
        """Stop sampling; the window and verdict are kept."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        failing = False
        while True:
            try:
                self.sample()
            except Exception:
                # Once per outage, not once per sample.
                if not failing:
                    log.exception("leak watch: sampling memory failed")
                failing = True
            else:
                if failing:
                    log.warning("leak watch: sampling memory works again")
                failing = False
            if self._stop.wait(self.interval):
                return

    def _after_fork(self) -> None:
        # A new process: the parent's samples are not its memory, and its thread is gone.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reset_window()
        self._publish(self._report)
        if self._thread is not None:
            self._thread = None
            self.start()

    def _reset_window(self) -> None:
        self._window: deque[MemorySample] = deque(maxlen=self.window)
        self._first: float | None = None
        self._report = LeakReport("warming-up", "no sample yet", 0, 0.0)

    # -- sampling and judging -------------------------------------------------------------

    def sample(self) -> LeakReport:
        """Take one sample now and judge the window again."""
        now = self._clock()
        rss = float(self._sample_rss())
        heap = float(self._sample_heap()) if self._sample_heap is not None else None
        with self._lock:
            if self._first is None:
                self._first = now
            warming = now - self._first < self.warmup
            if not warming:
                self._window.append(MemorySample(now, rss, heap))
            report = self._judge(list(self._window), now - self._first, warming, rss)
            self._report = report
        self._publish(report)
        return report

    def _judge(
        self, window: list[MemorySample], elapsed: float, warming: bool, rss: float
    ) -> LeakReport:
        n = len(window)
        if warming:
            return LeakReport(
                "warming-up", f"warm-up: {elapsed:.0f} s of {self.warmup:.0f} s", 0, 0.0, rss=rss
            )
        span = window[-1].when - window[0].when
        if n < 3:
            reason = f"{n} of {self.min_samples} samples after warm-up"
            return LeakReport("warming-up", reason, n, span, rss=rss)
        times = [s.when for s in window]
        slope, baseline, r2 = _fit(times, [s.rss for s in window])
        recent = window[n // 2 :]
        recent_slope = _fit([s.when for s in recent], [s.rss for s in recent])[0]
        heap_slope = math.nan
        if window[0].heap is not None:
            heap_slope = _fit(times, [s.heap or 0.0 for s in window])[0]
        growth = slope * span
        floor = max(self.min_growth_bytes, self.min_growth_ratio * baseline)
        if n < self.min_samples:
            verdict, reason = "warming-up", f"{n} of {self.min_samples} samples after warm-up"
        elif slope <= 0:
            verdict, reason = "stable", "RSS is not rising over the window"
        elif r2 < self.min_r2:
            verdict = "stable"
            reason = f"R^2 {r2:.2f} < {self.min_r2}: a sawtooth, a step or noise, not a trend"
        elif growth < floor:
            verdict = "stable"
            reason = (
                f"grew {growth / MiB:.1f} MiB over {span:.0f} s, under the floor of "
                f"{floor / MiB:.1f} MiB (max of {self.min_growth_bytes / MiB:.1f} MiB and "
                f"{self.min_growth_ratio:.0%} of {baseline / MiB:.1f} MiB)"
            )
        elif recent_slope < self.plateau_ratio * slope:
            verdict = "stable"
            reason = (
                f"levelling off: the recent half rises at {recent_slope / slope:.0%} of the "
                f"window's rate (needs {self.plateau_ratio:.0%})"
            )
        else:
            verdict = "growing"
            reason = (
                f"+{growth / MiB:.1f} MiB over {span:.0f} s ({slope * 3600 / MiB:.1f} MiB/h, "
                f"R^2 {r2:.2f}) from {baseline / MiB:.1f} MiB"
            )
        return LeakReport(
            verdict, reason, n, span, slope, r2, growth, baseline, recent_slope, heap_slope, rss
        )

    # -- metrics --------------------------------------------------------------------------

    def _gauges(self, registry: Registry | None) -> None:
        self._slope = Gauge(
            "leak_rss_slope_bytes_per_second",
            "Least-squares slope of the resident memory over the leak watch's window.",
            multiprocess_mode="all",
            registry=None,
        )
        self._heap_slope = Gauge(
            "leak_heap_slope_blocks_per_second",
            "Least-squares slope of the Python heap's allocated blocks over the window.",
            multiprocess_mode="all",
            registry=None,
        )
        self._verdict = Gauge(
            "leak_verdict",
            "Leak watch verdict: 1 for the current one of warming-up, stable, growing.",
            ("verdict",),
            multiprocess_mode="all",
            registry=None,
        )
        if registry is not None:
            registered: list[Gauge] = []
            try:
                for gauge in (self._slope, self._heap_slope, self._verdict):
                    registry.register(gauge)
                    registered.append(gauge)
            except MetricError:
                for gauge in registered:
                    registry.unregister(gauge)
                raise
        self._verdict_children = {v: self._verdict.labels(verdict=v) for v in VERDICTS}
        self._publish(self._report)

    def _publish(self, report: LeakReport) -> None:
        self._slope.set(report.slope)
        self._heap_slope.set(report.heap_slope)
        for verdict, child in self._verdict_children.items():
            child.set(1.0 if verdict == report.verdict else 0.0)


def _fit(times: Sequence[float], values: Sequence[float]) -> tuple[float, float, float]:
    """Least squares ``values ~ a + b (t - times[0])``: ``(b, a, R^2)``; R^2 is 0 for a
    flat series (nothing to explain)."""
    n = len(times)
    t0 = times[0]
    xs = [t - t0 for t in times]
    mx = fsum(xs) / n
    my = fsum(values) / n
    sxx = fsum((x - mx) ** 2 for x in xs)
    syy = fsum((y - my) ** 2 for y in values)
    sxy = fsum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True))
    if sxx == 0:
        return 0.0, my, 0.0
    slope = sxy / sxx
    r2 = sxy * sxy / (sxx * syy) if syy > 0 else 0.0
    return slope, my - slope * mx, r2


def _default_rss() -> Callable[[], float]:
    if _LINUX:
        return read_rss
    if resource is not None:
        return _read_max_rss
    raise RedlineMonitorError(
        "no resident memory source on this platform (no /proc, no resource module): "
        "pass sample_rss= a function returning the RSS in bytes"
    )


# -- tracemalloc, on demand ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllocationGrowth:
    """One allocation site that grew between two snapshots: ``where`` (``file:line`` of the
    allocating frame), ``traceback`` (``file:line``, oldest first), sizes in bytes."""

    where: str
    size_diff: int
    size: int
    count_diff: int
    count: int
    traceback: tuple[str, ...]


# tracemalloc is per process, and so is the snapshot the next diff compares against.
_tracing_lock = threading.Lock()
_reference: tracemalloc.Snapshot | None = None
_started_here = False
_FILTERS = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


def start_tracing(frames: int = 1) -> None:
    """Start ``tracemalloc`` (keeping ``frames`` frames per allocation) unless it is already
    tracing, and take the snapshot the next ``snapshot_diff()`` compares against.

    Tracing costs memory for every live allocation and slows allocations down, several
    times over with many frames: turn it on to find a leak, then ``stop_tracing()``."""
    global _reference, _started_here
    with _tracing_lock:
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
            _started_here = True
        _reference = tracemalloc.take_snapshot().filter_traces(_FILTERS)


def snapshot_diff(top: int = 20) -> list[AllocationGrowth]:
    """The ``top`` allocation sites that grew most, largest first, since ``start_tracing()``
    or the previous ``snapshot_diff()``, whose snapshot the new one replaces."""
    global _reference
    with _tracing_lock:
        if _reference is None or not tracemalloc.is_tracing():
            raise RedlineMonitorError(
                "snapshot_diff() needs tracemalloc tracing since a reference snapshot: "
                "call redline.monitor.start_tracing() first"
            )
        snapshot = tracemalloc.take_snapshot().filter_traces(_FILTERS)
        key = "traceback" if snapshot.traceback_limit > 1 else "lineno"
        stats = snapshot.compare_to(_reference, key)
        _reference = snapshot
    grown = sorted((s for s in stats if s.size_diff > 0), key=lambda s: -s.size_diff)
    out = []
    for stat in grown[:top]:
        frames = tuple(f"{frame.filename}:{frame.lineno}" for frame in stat.traceback)
        out.append(
            AllocationGrowth(
                frames[-1], stat.size_diff, stat.size, stat.count_diff, stat.count, frames
            )
        )
    return out


def stop_tracing() -> None:
    """Drop the reference snapshot and stop ``tracemalloc`` if ``start_tracing()`` started
    it (tracing started otherwise, as by ``PYTHONTRACEMALLOC``, is left on)."""
    global _reference, _started_here
    with _tracing_lock:
        _reference = None
        if _started_here:
            tracemalloc.stop()
            _started_here = False
