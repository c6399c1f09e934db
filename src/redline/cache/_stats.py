"""Latency recording for cache statistics, on HdrHistogram (2 significant digits)."""

from __future__ import annotations

import threading

from hdrh.histogram import HdrHistogram

_MAX_NS = 60 * 1_000_000_000


class Latency:
    """Records durations in ns; reports percentiles in µs."""

    __slots__ = ("_hist", "_lock")

    def __init__(self) -> None:
        self._hist = HdrHistogram(1, _MAX_NS, 2)
        self._lock = threading.Lock()

    def record(self, ns: int) -> None:
        with self._lock:
            self._hist.record_value(min(max(ns, 1), _MAX_NS))

    def summary(self) -> dict[str, float]:
        with self._lock:
            hist = self._hist
            if not hist.get_total_count():
                return {"count": 0}
            return {
                "count": hist.get_total_count(),
                "p50_us": hist.get_value_at_percentile(50) / 1000,
                "p95_us": hist.get_value_at_percentile(95) / 1000,
                "p99_us": hist.get_value_at_percentile(99) / 1000,
                "max_us": hist.get_max_value() / 1000,
            }
