"""Process metrics: memory, CPU, file descriptors, garbage collection and the interpreter.

``install_process_metrics(registry=REGISTRY)`` adds the metrics prometheus_client and the
Go client export under the same names, read when the registry is collected (a scrape, or
a ``SnapshotDirectory`` write), never on a timer of their own:

=================================================  =======  ====================================
metric                                             type     source
=================================================  =======  ====================================
``process_resident_memory_bytes``                  gauge    ``/proc/self/statm`` (Linux)
``process_virtual_memory_bytes``                   gauge    ``/proc/self/statm`` (Linux)
``process_resident_memory_max_bytes``              gauge    ``getrusage`` peak RSS (POSIX)
``process_open_fds``                               gauge    ``/proc/self/fd`` (Linux),
                                                            ``/dev/fd`` (macOS)
``process_max_fds``                                gauge    ``RLIMIT_NOFILE`` soft limit (POSIX)
``process_start_time_seconds``                     gauge    ``/proc/self/stat`` (Linux)
``process_cpu_seconds_total``                      counter  ``os.times()`` (everywhere)
``python_gc_collections_total{generation}``        counter  ``gc.get_stats()``
``python_gc_objects_collected_total{generation}``  counter  ``gc.get_stats()``
``python_gc_objects_uncollectable_total{gen...}``  counter  ``gc.get_stats()``
``python_gc_collection_seconds{generation}``       histo.   ``gc.callbacks``
``python_info{implementation,major,minor,...}``    gauge    ``sys`` (always 1)
=================================================  =======  ====================================

A metric whose source the platform lacks is not exported rather than exported wrong: macOS
and the BSDs have no current RSS, virtual size or start time without psutil (the peak RSS,
``process_resident_memory_max_bytes``, is there everywhere ``resource`` is), and Windows
has only CPU time, GC and ``python_info``.

Several workers (see ``SnapshotDirectory``): each rule is chosen so the merged view means
something. The gauges are per process (``multiprocess_mode="all"``, a ``pid`` label): the
RSS of forked workers shares copy-on-write pages, so a sum would overstate memory, and a sum
of fd limits or start times means nothing. ``python_info`` is the same in every worker
(``max``). The counters and the GC histogram add up: the service's CPU seconds (``rate()``
is the cores it uses) and its collections; a dead worker's share is folded, not lost.
``Registry.reset()``, which a forked worker runs, zeroes the counters by taking the
current reading as their origin, since GC statistics are inherited across ``fork()``.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redline.monitor._counter import Counter, CounterChild
from redline.monitor._exceptions import MetricError
from redline.monitor._gauge import Gauge
from redline.monitor._histogram import Histogram
from redline.monitor._metric import Metric
from redline.monitor._registry import REGISTRY, Registry
from redline.monitor._snapshot import MetricFamily

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

_PROC = Path("/proc/self")
_LINUX = (_PROC / "statm").exists()
_PAGE = os.sysconf("SC_PAGE_SIZE") if _LINUX else 1
# ru_maxrss is in KiB on Linux and the BSDs, bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024
GC_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    math.inf,
)

_installed: weakref.WeakKeyDictionary[Registry, ProcessMetrics] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()


def install_process_metrics(registry: Registry = REGISTRY) -> ProcessMetrics:
    """Add the process, GC and interpreter metrics to ``registry`` and return them as a
    ``ProcessMetrics``; installing again in the same registry returns the same one."""
    with _install_lock:
        installed = _installed.get(registry)
        if installed is None or not installed.installed:
            installed = _installed[registry] = ProcessMetrics(registry)
        return installed


class ProcessMetrics:
    """The installed process metrics of one registry: a ``Collector`` of just them, and
    ``uninstall()``. Made by ``install_process_metrics``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.metrics: list[Metric] = []
        self._gc_started = 0.0
        try:
            self._install()
        except MetricError:
            self._unregister()
            raise
        self._gc_observe = tuple(
            self._gc_seconds.labels(generation=str(g)).observe for g in self._generations
        )
        gc.callbacks.append(self._on_gc)

    def __repr__(self) -> str:
        state = "installed" if self.installed else "uninstalled"
        return f"<ProcessMetrics {state}, {len(self.metrics)} metrics>"

    @property
    def installed(self) -> bool:
        """Whether the metrics are in the registry (not yet uninstalled)."""
        return self._on_gc in gc.callbacks

    def collect(self) -> list[MetricFamily]:
        """The current value of these metrics only."""
        return [metric.collect() for metric in self.metrics]

    def uninstall(self) -> None:
        """Remove the metrics from the registry and stop timing collections."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._unregister()
        with _install_lock:
            if _installed.get(self.registry) is self:
                del _installed[self.registry]

    def _unregister(self) -> None:
        for metric in self.metrics:
            if self.registry.get(metric.name) is metric:
                self.registry.unregister(metric)
        self.metrics.clear()

    def _install(self) -> None:
        def gauge(name: str, help: str, read: Callable[[], float], mode: str = "all") -> None:
            metric = Gauge(name, help, multiprocess_mode=mode, registry=self.registry)
            metric.set_function(read)
            self.metrics.append(metric)

        if _LINUX:
            gauge("process_resident_memory_bytes", "Resident memory size in bytes.", read_rss)
            gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", _read_vms)
        if resource is not None:
            gauge(
                "process_resident_memory_max_bytes",
                "Peak resident memory size in bytes since the process started.",
                _read_max_rss,
            )
        fd_dir = _fd_dir()
        if fd_dir is not None:
            gauge("process_open_fds", "Number of open file descriptors.", fd_dir.count)
        if resource is not None:
            gauge("process_max_fds", "Maximum number of open file descriptors.", _read_max_fds)
        if _start_time() is not None:
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                _StartTime(),
            )
        cpu = _ReadCounter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            registry=self.registry,
        )
        cpu.set_function(_read_cpu)
        self.metrics.append(cpu)

        self._generations = range(len(gc.get_stats()))
        for name, stat, help in (
            ("python_gc_collections", "collections", "Times this generation was collected."),
            ("python_gc_objects_collected", "collected", "Objects collected during gc."),
            ("python_gc_objects_uncollectable", "uncollectable", "Uncollectable objects found."),
        ):
            counter = _ReadCounter(name, help, ("generation",), registry=self.registry)
            for g in self._generations:
                counter.labels(generation=str(g)).set_function(_gc_stat(g, stat))
            self.metrics.append(counter)
        self._gc_seconds = Histogram(
            "python_gc_collection_seconds",
            "Time spent in garbage collections, by generation.",
            ("generation",),
            buckets=GC_BUCKETS,
            scale=1e9,
            max_value=60.0,
            registry=self.registry,
        )
        self.metrics.append(self._gc_seconds)

        info = sys.version_info
        python = Gauge(
            "python_info",
            "Python platform information.",
            ("implementation", "major", "minor", "patchlevel", "version"),
            multiprocess_mode="max",
            registry=self.registry,
        )
        python.labels(
            implementation=sys.implementation.name,
            major=info.major,
            minor=info.minor,
            patchlevel=info.micro,
            version=sys.version.split()[0],
        ).set(1)
        self.metrics.append(python)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Collections never nest (CPython does not start one inside another, nor inside
        # the callbacks), so one start time suffices. observe() is an array append; it
        # takes the histogram's lock only to flush 4096 values, and never from inside a
        # flush of this histogram, which empties the buffer before allocating anything.
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_observe[info["generation"]](time.perf_counter() - self._gc_started)


class _ReadChild(CounterChild):
    """A counter series read from a cumulative source, counted from the last reset."""

    __slots__ = ("_function", "_origin")

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._function: Callable[[], float] | None = None
        self._origin = 0.0
        self.inc = self._refuse

    def _refuse(self, amount: float = 1) -> None:
        raise MetricError(f"counter {self._name!r} is read from the process; it cannot be inc()")

    def set_function(self, function: Callable[[], float]) -> None:
        self._function = function

    @property
    def value(self) -> float:
        function = self._function
        return float(function()) - self._origin if function is not None else 0.0

    def _reset(self) -> None:
        function = self._function
        self._origin = float(function()) if function is not None else 0.0


class _ReadCounter(Counter):
    """A counter whose series read their totals from the process when collected."""

    def set_function(self, function: Callable[[], float]) -> None:
        raise self._no_labels_given("set_function")

    def _new_child(self) -> _ReadChild:
        return _ReadChild(self.name)

    def _bind(self, child: Any) -> None:
        super()._bind(child)
        self.set_function = child.set_function  # type: ignore[method-assign]


# -- readings ---------------------------------------------------------------------------------


def read_rss() -> float:
    """The resident set size of this process in bytes (Linux)."""
    with open("/proc/self/statm", "rb") as file:
        return float(int(file.read().split()[1]) * _PAGE)


def _read_vms() -> float:
    with open("/proc/self/statm", "rb") as file:
        return float(int(file.read().split()[0]) * _PAGE)


def _read_max_rss() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT)


def _read_max_fds() -> float:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return math.inf if soft == resource.RLIM_INFINITY else float(soft)


def _read_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _gc_stat(generation: int, stat: str) -> Callable[[], float]:
    return lambda: gc.get_stats()[generation][stat]


class _FdDir:
    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def count(self) -> float:
        # Counts the descriptor listing the directory too, as prometheus_client does.
        return float(len(os.listdir(self.path)))


def _fd_dir() -> _FdDir | None:
    if _LINUX:
        return _FdDir("/proc/self/fd")
    if sys.platform == "darwin":
        # /dev/fd lists every descriptor on macOS; on the BSDs only 0-2 without fdescfs.
        return _FdDir("/dev/fd")
    return None


class _StartTime:
    """The process's start time, read again in a forked child (gunicorn --preload): each
    worker reports its own, not the parent's."""

    def __init__(self) -> None:
        self._pid = -1
        self._value = math.nan

    def __call__(self) -> float:
        pid = os.getpid()
        if pid != self._pid:
            start = _start_time()
            self._value = math.nan if start is None else start
            self._pid = pid
        return self._value


def _start_time() -> float | None:
    if not _LINUX:
        return None
    try:
        stat = (_PROC / "stat").read_text()
        boot = next(
            line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, StopIteration):
        return None
    # Fields after the command name, which may hold spaces and parens; starttime is field 22.
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
