"""Histogram: a distribution (request latency, response size) with accurate, mergeable
percentiles and classic Prometheus buckets.

Values are in base units (seconds, bytes) and are kept as whole units of ``1 / scale``: by
default microseconds (``scale=1_000_000``, a value is truncated to the microsecond) from 0
to 1 h (``max_value=3600.0``). Each series holds HdrHistogram counts of them, so the
percentiles of any number of samples cost a bounded amount of memory and merge across
processes exactly (counts add).

Precision: ``significant_figures=2`` by default. HdrHistogram then splits every power of two
into 128 equal sub-buckets and reports the top of a sample's sub-bucket, so a percentile is
at most 1/128 = 0.78 % above the true sample (and never below it by more than the 1 us
truncation): within the 1 % promised from 128 us up. Three figures would give 0.1 % for
seven times the counts, and encode, decode and merge 3-10 times slower, which a registry of
many labelled series and a snapshot every second would pay for little. Pass
``significant_figures=3`` where 0.1 % matters, ``scale=1e9`` (nanoseconds) for
durations well under 100 us.

Memory: a series keeps the HDR counts only from the lowest to the highest index it has
recorded (8 bytes each), not hdrh's dense array over the whole range (26 KB with the
defaults), and its snapshot keeps them at 4 bytes each (see ``HistogramValue``): latencies
spanning five decades take some 1,200-2,500 indices, 10-20 KB live plus 5-10 KB for the
snapshot; a narrow distribution a few KB.

Recording: ``observe()`` only appends the value to an ``array('d')`` (one C call, atomic
under the GIL, so concurrent threads lose nothing, and a value that is not a number is
refused right there). Reading a series, and ``observe()`` itself every 8192 values, flushes
the buffer in bulk: the values are sorted once, then counted into the HDR counts (the
indices of hdrh's ``record_value``, in a few C-level passes: no Python code runs per value)
and into the buckets (one ``bisect`` per bound), and summed. That costs 0.15-0.3 us a value;
the larger the flush, the less the HDR part costs per value, and 8192 values (64 KB) is
what a busy series may hold between flushes. Where ``_tally.c`` was compiled at install, the
flush counts the values in C instead, unsorted: each value's index from its integer unit, as
hdrh's ``record_value`` computes it, and a binary search over the bucket bounds (about 24 ns
a value, against 190-250 ns for the sort and bisect in Python; the tests check that both
give the same counts, sum and buckets). The flush consumes a counted prefix of the buffer in
place (``n = len(buf)``, process ``buf[:n]``, ``del buf[:n]``) under
a lock that only flushes take: appends that land meanwhile are past ``n`` and stay for the
next flush. Swapping in a fresh buffer instead would lose the values of a writer that fetched
the old buffer just before the swap.

Buckets: the classic ``_bucket{le=...}`` series are counted exactly from the raw values
(``value <= le``), not interpolated from the HDR sub-buckets, so ``le="0.5"`` means what an
SLO written against it means, for any bounds a user picks. The default bounds run from 0.5
ms to 60 s in 1-2.5-5 steps: services made fast by caching answer in well under 5 ms, where
prometheus_client's defaults start. NaN values are dropped; infinities count as
``+-max_value``; values outside ``0 .. max_value`` count at the nearest edge of the HDR
histogram (their exact value still goes to the sum and the buckets).
"""

from __future__ import annotations

import math
import os
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import add, sub
from typing import Any

from pyhdrh import add_array

from redline._hdr import _edges, _index_tables, _unit
from redline.monitor._exceptions import MetricError
from redline.monitor._metric import Metric
from redline.monitor._registry import REGISTRY, Registry
from redline.monitor._snapshot import HistogramValue, MetricFamily, _narrow, _Span
from redline.monitor._timer import Timer

INF = math.inf
DEFAULT_BUCKETS = (
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
    5.0,
    10.0,
    30.0,
    60.0,
    INF,
)
FLUSH_AT = 8192

try:  # the flush's counting in C where it was compiled at install (see _tally.c)
    from redline.monitor._tally import tally as _compiled_tally
except ImportError:  # pragma: no cover - no compiler at install, or not Linux
    _compiled_tally = None
# Read when a histogram's layout is made; the tests run both.
_tally: Any = None if os.environ.get("REDLINE_PURE_PYTHON", "0") != "0" else _compiled_tally


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """``count`` upper bounds ``start, start * factor, ...`` and ``+Inf``, as in
    prometheus_client (for sizes: ``exponential_buckets(256, 4, 8)`` is 256 B .. 4 MiB)."""
    if start <= 0 or factor <= 1 or count < 1:
        raise MetricError(
            f"exponential_buckets({start!r}, {factor!r}, {count!r}): need start > 0, "
            "factor > 1 and count >= 1"
        )
    return (*(start * factor**i for i in range(count)), INF)


class _Layout:
    """What every series of one histogram shares: units, HDR range and bucket bounds."""

    __slots__ = ("scale", "highest", "max_value", "digits", "buckets", "bounds")
    __slots__ += ("tally", "shifts", "bases", "bound_array")

    def __init__(
        self, name: str, buckets: Iterable[float], scale: float, max_value: float, digits: int
    ) -> None:
        where = f"histogram {name!r}"
        if not scale > 0:
            raise MetricError(f"{where}: scale must be > 0, got {scale!r}")
        self.scale = scale
        self.highest = round(max_value * scale)
        self.max_value = max_value
        if self.highest < 2:
            raise MetricError(
                f"{where}: max_value {max_value!r} x scale {scale!r} must be at least 2"
            )
        if digits not in (1, 2, 3, 4, 5):
            raise MetricError(f"{where}: significant_figures must be 1..5, got {digits!r}")
        self.digits = digits
        bounds = [float(b) for b in buckets]
        if not bounds or bounds[-1] != INF:
            bounds.append(INF)
        for low, high in zip(bounds, bounds[1:], strict=False):
            if not low < high:
                raise MetricError(f"{where}: buckets must increase, got {low!r} then {high!r}")
        if bounds[0] < 0 or math.isnan(bounds[0]):
            raise MetricError(f"{where}: buckets must be >= 0, got {bounds[0]!r}")
        self.buckets = tuple(bounds)
        self.bounds = self.buckets[:-1]
        # For the C flush: the same edges and bounds as doubles, made once per layout.
        # Units beyond 2**53 are not all doubles, nor is every int scale: such a layout keeps
        # the Python flush, which divides exactly.
        exact = self.highest < 2**53 and float(scale) == scale
        self.tally = _tally if exact else None
        shifts, bases = _index_tables(self.highest, digits)
        self.shifts, self.bases = array("q", shifts), array("q", bases)
        self.bound_array = array("d", self.bounds)


class HistogramChild:
    """One labelled series of a histogram."""

    __slots__ = ("observe", "_pending", "_lock", "_layout", "_counts", "_first", "_low", "_high")
    __slots__ += ("_count", "_sum", "_le", "_view")

    def __init__(self, layout: _Layout) -> None:
        self._layout = layout
        self._pending = array("d")
        self._lock = threading.Lock()
        # The HDR counts from the lowest to the highest index recorded (8 bytes each, grown
        # as samples land outside), not hdrh's dense array over the whole range.
        self._counts: array | None = None
        self._first = 0
        self._low = self._high = 0
        self._count = 0
        self._sum = 0.0
        self._le = [0] * len(layout.bounds)
        self._view: HistogramValue | None = None
        self.observe = _recorder(self._pending, self._flush)

    def time(self) -> Timer:
        """A context manager and decorator (sync or async functions) that records the
        duration of the block or of each call, in seconds."""
        return Timer(self.observe)

    def _observe_all(self, values: Iterable[float]) -> None:
        """Record many values at once (``MetricsMiddleware`` adds its requests in bulk)."""
        pending = self._pending
        pending.extend(values)
        if len(pending) >= FLUSH_AT:
            self._flush()

    def snapshot(self) -> HistogramValue:
        """Everything recorded so far, as a read-only value (cached until the next sample)."""
        self._flush()
        with self._lock:
            view = self._view
            if view is None:
                span = None
                if self._counts is not None:
                    layout = self._layout
                    span = _Span(
                        layout.highest,
                        layout.digits,
                        self._first,
                        _narrow(self._counts),
                        self._low,
                        self._high,
                    )
                view = self._view = HistogramValue(
                    self._count, self._sum, (*self._le, self._count), self._layout.scale, span=span
                )
            return view

    def _flush(self) -> None:
        with self._lock:
            pending = self._pending
            n = len(pending)
            if n:
                chunk = pending[:n]
                del pending[:n]
                self._add(chunk)

    def _add(self, chunk: array) -> None:
        layout = self._layout
        if layout.tally is not None:
            self._add_compiled(chunk, layout)
            return
        # A plain sum, not fsum: 4 times cheaper, and its rounding (about 1e-13 relative over
        # a chunk) is far below what a sum of latencies needs.
        total = sum(chunk)
        if math.isfinite(total):
            values = sorted(chunk)
        else:
            # A NaN (dropped) or an infinity (kept at the edge) among the values, summed in
            # the order recorded, as the C flush sums them.
            edge = layout.max_value
            values = [v if -INF < v < INF else math.copysign(edge, v) for v in chunk if v == v]
            if not values:
                return
            total = sum(values)
            values.sort()
        self._add_counts(values, layout)
        self._count += len(values)
        self._sum += total
        le = self._le
        for i, bound in enumerate(layout.bounds):
            le[i] += bisect_right(values, bound)
        self._view = None

    def _add_compiled(self, chunk: array, layout: _Layout) -> None:
        # What _add does, counted by _tally.c in two passes over the values, unsorted: each
        # value's index from its integer unit, as hdrh's record_value computes it.
        tallied = layout.tally(
            chunk,
            layout.shifts,
            layout.bases,
            layout.scale,
            layout.highest,
            layout.bound_array,
            layout.max_value,
        )
        if tallied is None:
            return
        raw, first, n, total, lowest, highest, below = tallied
        counts = array("Q")
        counts.frombytes(raw)
        self._merge_counts(
            counts,
            first,
            _unit(lowest, layout.scale, layout.highest),
            _unit(highest, layout.scale, layout.highest),
        )
        self._count += n
        self._sum += total
        self._le = list(map(add, self._le, below))
        self._view = None

    def _add_counts(self, values: list[float], layout: _Layout) -> None:
        # The HDR counts of sorted values: the lower edge of every counts index the values
        # span, divided by the scale, is bisected into them (see redline._hdr); no Python
        # code runs per value. Indices are exactly those of hdrh's record_value.
        edges = _edges(layout.highest, layout.digits, layout.scale)
        first = bisect_right(edges, values[0])
        last = bisect_right(edges, values[-1])
        positions = [0, *map(bisect_left, repeat(values), edges[first:last]), len(values)]
        counts = array("Q", map(sub, positions[1:], positions[:-1]))
        low = _unit(values[0], layout.scale, layout.highest)
        high = _unit(values[-1], layout.scale, layout.highest)
        self._merge_counts(counts, first, low, high)

    def _merge_counts(self, counts: array, first: int, low: int, high: int) -> None:
        # Adds counts of indices first .. first + len(counts) - 1 to this series' counts.
        mine = self._counts
        if mine is None:
            self._counts, self._first, self._low, self._high = counts, first, low, high
            return
        if first < self._first:
            grown = array("Q", bytes(8 * (self._first - first)))
            grown.extend(mine)
            mine, self._first = grown, first
        beyond = first + len(counts) - (self._first + len(mine))
        if beyond > 0:
            mine.frombytes(bytes(8 * beyond))
        address = mine.buffer_info()[0] + 8 * (first - self._first)
        add_array(address, counts.buffer_info()[0], len(counts), 8)
        self._counts = mine
        self._low = min(self._low, low)
        self._high = max(self._high, high)

    def _reset(self) -> None:
        with self._lock:
            del self._pending[:]
            self._counts = None
            self._count = 0
            self._sum = 0.0
            self._le = [0] * len(self._layout.bounds)
            self._view = None


def _recorder(pending: array, flush: Callable[[], None]) -> Callable[[float], None]:
    # A closure rather than a method: its cells are cheaper to reach than a slot of self,
    # and this runs once per sample.
    append = pending.append
    limit = FLUSH_AT

    def observe(value: float) -> None:
        """Record one value, in base units (seconds, bytes)."""
        append(value)
        if len(pending) >= limit:
            flush()

    return observe


class Histogram(Metric):
    """A distribution: ``Histogram(name, documentation, labelnames=(), *,
    buckets=DEFAULT_BUCKETS, scale=1_000_000, max_value=3600.0, significant_figures=2,
    unit="", registry=REGISTRY)``.

    Defaults suit durations in seconds. For sizes in bytes:
    ``Histogram("response_size_bytes", "...", scale=1, max_value=2**32,
    buckets=exponential_buckets(256, 4, 8))``. Label names ``le`` and ``quantile`` are
    reserved: the exposition uses them for the bucket and quantile series.
    """

    kind = "histogram"
    _reserved_labels = frozenset({"le", "quantile"})

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        scale: float = 1_000_000,
        max_value: float = 3600.0,
        significant_figures: int = 2,
        unit: str = "",
        registry: Registry | None = REGISTRY,
    ) -> None:
        self._layout = _Layout(name, buckets, scale, max_value, significant_figures)
        super().__init__(name, documentation, labelnames, unit=unit, registry=registry)

    @property
    def buckets(self) -> tuple[float, ...]:
        """The bucket upper bounds, ending with ``+Inf``."""
        return self._layout.buckets

    def exported_names(self) -> tuple[str, ...]:
        name = self.name
        suffixes = ("", "_bucket", "_sum", "_count", "_quantiles")
        return tuple(name + suffix for suffix in suffixes)

    def observe(self, value: float) -> None:
        """Record one value on a histogram without labels."""
        raise self._no_labels_given("observe")

    def time(self) -> Timer:
        """Time a block or function into a histogram without labels."""
        raise self._no_labels_given("time")

    def snapshot(self) -> HistogramValue:
        """Everything a histogram without labels recorded so far."""
        raise self._no_labels_given("snapshot")

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._layout)

    def _bind(self, child: Any) -> None:
        self.observe = child.observe  # type: ignore[method-assign]
        self.time = child.time  # type: ignore[method-assign]
        self.snapshot = child.snapshot  # type: ignore[method-assign]

    def collect(self) -> MetricFamily:
        layout = self._layout
        return MetricFamily(
            name=self.name,
            kind=self.kind,
            documentation=self.documentation,
            labelnames=self.labelnames,
            samples={key: child.snapshot() for key, child in self._items()},
            buckets=layout.buckets,
            scale=layout.scale,
            highest=layout.highest,
            significant_figures=layout.digits,
        )
