"""The measurement store of a load run: HDR latency histograms, counters and time series.

Latencies are kept in microseconds in HdrHistograms (1 us .. 1 h, 3 significant digits), so
memory does not grow with the number of requests and merging workers is exact: adding the
counts arrays of N histograms gives the histogram of all samples.

Two latencies per request:

- ``latency``: from the *intended* send time when the open-model scheduler set one, else from
  the actual send. Time a request spent waiting behind a stalled generator or server counts
  (coordinated-omission corrected).
- ``service_time``: from the actual send; what the server took once it got the request.

Recording is the hot path of the engine, and ``HdrHistogram.record_value`` is pure Python
(~1.3 us a value). ``record()`` therefore only appends raw nanoseconds to ``array('q')``
buffers; once per interval (1 s of the run's timeline) each buffer is counted by microsecond
value with ``Counter`` (in C), the distinct values are turned into counts-array indices with
C-level ``map`` calls over precomputed shift tables, and the resulting counts array is added
to each histogram by hdrh's own C ``add_array``. The indices are exactly those
``record_value`` computes, so every percentile is identical to hdrh's own. A request costs
about 0.5-1 us in all, against 4-6 us for three ``record_value`` calls.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from itertools import repeat
from operator import floordiv
from typing import Any

import msgpack
from hdrh.histogram import HdrHistogram

from redline._hdr import HIGHEST_US as HIGHEST_US  # the latency range, for this module's users
from redline._hdr import _Counted, new_histogram, percentiles
from redline._hdr import mean as _mean

INTERVAL_NS = 1_000_000_000
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
TIMESERIES_PERCENTILES = (50.0, 95.0, 99.0)
_EXPORT_VERSION = 1


def percentile_key(percentile: float) -> str:
    """The summary key of a percentile: 95 -> ``p95``, 99.9 -> ``p999``."""
    return "p" + format(percentile, "g").replace(".", "")


def _latency_fields(hist: HdrHistogram, extra: tuple[float, ...]) -> dict[str, float]:
    wanted = tuple(dict.fromkeys(PERCENTILES + extra))
    values = percentiles(hist, wanted)
    fields = {percentile_key(p): values[p] / 1000 for p in wanted}
    fields["max"] = hist.get_max_value() / 1000
    fields["min"] = (hist.get_min_value() if hist.total_count else 0) / 1000
    fields["avg"] = _mean(hist) / 1000
    return fields


def _decode(blob: bytes | None) -> HdrHistogram:
    return HdrHistogram.decode(blob) if blob else new_histogram()


def _encode(hist: HdrHistogram) -> bytes | None:
    return hist.encode() if hist.total_count else None


class _Stats:
    """Everything known about one request name (or all of them)."""

    __slots__ = (
        "latency",
        "service_time",
        "requests",
        "failed",
        "dropped",
        "late",
        "max_lag_ns",
        "checks_failed",
        "errors",
    )

    def __init__(self) -> None:
        self.latency = new_histogram()
        self.service_time = new_histogram()
        self.requests = self.failed = self.dropped = self.late = 0
        self.max_lag_ns = self.checks_failed = 0
        self.errors: Counter[str] = Counter()

    def export(self) -> dict[str, Any]:
        return {
            "latency": _encode(self.latency),
            "service_time": _encode(self.service_time),
            "counters": [
                self.requests,
                self.failed,
                self.dropped,
                self.late,
                self.max_lag_ns,
                self.checks_failed,
            ],
            "errors": dict(self.errors),
        }

    def merge(self, data: dict[str, Any]) -> None:
        for hist, key in ((self.latency, "latency"), (self.service_time, "service_time")):
            if data[key]:
                hist.decode_and_add(data[key])
        requests, failed, dropped, late, max_lag_ns, checks_failed = data["counters"]
        self.requests += requests
        self.failed += failed
        self.dropped += dropped
        self.late += late
        self.max_lag_ns = max(self.max_lag_ns, max_lag_ns)
        self.checks_failed += checks_failed
        self.errors.update(data["errors"])

    def summary(self, seconds: float, extra: tuple[float, ...]) -> dict[str, Any]:
        return {
            "requests": {
                "total": self.requests,
                "failed": self.failed,
                "dropped": self.dropped,
                "late": self.late,
                "checks_failed": self.checks_failed,
                "max_late_ms": self.max_lag_ns / 1e6,
            },
            "rps": self.requests / seconds if seconds > 0 else 0.0,
            "latency_ms": _latency_fields(self.latency, extra),
            "service_time_ms": _latency_fields(self.service_time, extra),
            "errors": dict(self.errors.most_common()),
        }


class _Interval:
    """One second of the run: its counters and its latency histogram, encoded once closed."""

    __slots__ = ("requests", "failed", "dropped", "late", "blob", "row")

    def __init__(self) -> None:
        self.requests = self.failed = self.dropped = self.late = 0
        self.blob: bytes | None = None
        self.row: dict[str, float | None] | None = None


class Recorder:
    """Records every request of one process; ``export()``/``merge()`` combine processes exactly.

    Timestamps are ``time.perf_counter_ns()`` values (CLOCK_MONOTONIC on Linux, shared by all
    processes); workers of one run pass the same ``start_ns`` so their intervals line up.
    """

    def __init__(self, start_ns: int | None = None) -> None:
        self.start_ns = time.perf_counter_ns() if start_ns is None else start_ns
        self.stop_ns: int | None = None
        self._total = _Stats()
        self._stats: dict[str, _Stats] = {}
        self._pending: dict[str, tuple[array, array, array]] = {}
        self._stragglers: dict[int, dict[str, tuple[array, array, array]]] = {}
        self._intervals: dict[int, _Interval] = {}
        self._vus: dict[int, float] = {}
        self._rate: dict[int, float] = {}
        # Open-model arrivals per scenario: [scheduled, dropped, late, worst lateness ns].
        self._scenarios: dict[str, list[int]] = {}
        # [_low_ns, _high_ns] for the C lane, which reads them without an attribute lookup.
        self._window = array("q", [0, 0])
        self._open_interval(0)

    # -- recording (hot path) ------------------------------------------------------------

    def record(
        self,
        name: str,
        intended_ns: int | None,
        sent_ns: int,
        done_ns: int,
        status: int | None,
        error: str | None,
    ) -> None:
        """One finished request; ``error`` (a reason such as ``timeout``) marks it failed."""
        if not self._low_ns <= done_ns < self._high_ns:
            self._record_elsewhen(name, intended_ns, sent_ns, done_ns, error)
            return
        buffers = self._pending.get(name)
        if buffers is None:
            buffers = self._pending[name] = (array("q"), array("q"), array("q"))
        if intended_ns is None:
            buffers[2].append(done_ns - sent_ns)
        else:
            buffers[0].append(done_ns - intended_ns)
            buffers[1].append(done_ns - sent_ns)
        if error is not None:
            self._count_failure(name, error, self._current)

    # -- recording (rare events) ---------------------------------------------------------

    def record_check_failure(self, name: str, check: str) -> None:
        """A check on a response of ``name`` failed; counted apart from failed requests."""
        reason = f"check: {check}"
        for stats in (self._total, self._endpoint(name)):
            stats.checks_failed += 1
            stats.errors[reason] += 1

    def record_scheduled(self, scenario: str, count: int = 1) -> None:
        """``count`` open-model arrivals of ``scenario`` came due (sent, late or dropped)."""
        self._scenario(scenario)[0] += count

    def record_dropped(self, scenario: str, count: int = 1, now_ns: int | None = None) -> None:
        """``count`` open-model arrivals of ``scenario`` that were never sent."""
        self._interval_at(now_ns).dropped += count
        self._total.dropped += count
        self._scenario(scenario)[1] += count

    def record_late(self, scenario: str, lag_ns: int, now_ns: int | None = None) -> None:
        """An open-model arrival of ``scenario`` sent ``lag_ns`` after its intended time."""
        self._interval_at(now_ns).late += 1
        total = self._total
        total.late += 1
        total.max_lag_ns = max(total.max_lag_ns, lag_ns)
        counts = self._scenario(scenario)
        counts[2] += 1
        counts[3] = max(counts[3], lag_ns)

    def _scenario(self, name: str) -> list[int]:
        counts = self._scenarios.get(name)
        if counts is None:
            counts = self._scenarios[name] = [0, 0, 0, 0]
        return counts

    def record_vus(self, t_ns: int, vus: float) -> None:
        """The number of active VUs at ``t_ns``; the last value of each second is kept."""
        self._vus[self._second(t_ns)] = vus

    def record_rate(self, t_ns: int, rate: float) -> None:
        """The target arrival rate (per second) at ``t_ns``; the last of each second is kept."""
        self._rate[self._second(t_ns)] = rate

    def stop(self, stop_ns: int | None = None) -> None:
        """Mark the end of the run; the run's duration is ``stop_ns - start_ns``."""
        self.stop_ns = time.perf_counter_ns() if stop_ns is None else stop_ns
        self.flush()

    @property
    def requests(self) -> int:
        """Requests recorded so far."""
        self.flush()
        return self._total.requests

    def sink(self, name: str) -> array:
        """The buffer of closed-model samples of ``name`` (service times in ns), for a caller
        that appends to it directly: valid while ``_low_ns <= done_ns < _high_ns``; outside
        that window call ``record()``, which moves to the next interval. Buffers live as long
        as the recorder (a flush empties them in place)."""
        buffers = self._pending.get(name)
        if buffers is None:
            buffers = self._pending[name] = (array("q"), array("q"), array("q"))
        return buffers[2]

    def flush(self) -> None:
        """Move buffered samples into the histograms (done once per interval on its own)."""
        pending = self._pending
        self._flush_into(self._current, self._live, pending)
        for buffers in pending.values():
            for buffer in buffers:
                del buffer[:]
        stragglers, self._stragglers = self._stragglers, {}
        for second, by_name in stragglers.items():
            interval = self._intervals[second]
            hist = _decode(interval.blob)
            self._flush_into(second, hist, by_name)
            interval.blob = _encode(hist)

    def _flush_into(
        self, second: int, live: HdrHistogram, pending: dict[str, tuple[array, array, array]]
    ) -> None:
        interval = self._intervals[second]
        interval.row = None
        total = self._total
        for name, (open_latency, open_service, closed) in pending.items():
            stats = self._endpoint(name)
            n = len(open_latency) + len(closed)
            stats.requests += n
            total.requests += n
            interval.requests += n
            for samples, targets in (
                (
                    closed,
                    (stats.latency, stats.service_time, total.latency, total.service_time, live),
                ),
                (open_latency, (stats.latency, total.latency, live)),
                (open_service, (stats.service_time, total.service_time)),
            ):
                if samples:
                    counted = _Counted(map(floordiv, samples, repeat(1000)))
                    for hist in targets:
                        counted.add_to(hist)

    # -- merging -------------------------------------------------------------------------

    def export(self, *, timeline: bool = True) -> bytes:
        """Everything recorded, as bytes another process can ``merge()`` losslessly;
        ``timeline=False`` leaves out the per-second series (a small running total)."""
        self.flush()
        intervals = {}
        for second, interval in self._intervals.items() if timeline else ():
            blob = _encode(self._live) if second == self._current else interval.blob
            intervals[second] = [
                interval.requests,
                interval.failed,
                interval.dropped,
                interval.late,
                blob,
            ]
        return msgpack.packb(
            {
                "version": _EXPORT_VERSION,
                "start_ns": self.start_ns,
                "stop_ns": self.stop_ns,
                "total": self._total.export(),
                "endpoints": {name: stats.export() for name, stats in self._stats.items()},
                "intervals": intervals,
                "vus": self._filled(self._vus) if timeline else {},
                "rate": self._filled(self._rate) if timeline else {},
                "scenarios": self._scenarios,
            }
        )

    def live(self) -> dict[str, Any]:
        """A cheap look at the run so far, for progress displays: totals, and the latest
        complete second's rate and latency percentiles (whole-run ones when there is no
        per-second series, as in a view merged from ``export(timeline=False)``)."""
        self.flush()
        total = self._total
        out: dict[str, Any] = {
            "requests": total.requests,
            "failed": total.failed,
            "dropped": total.dropped,
            "checks_failed": total.checks_failed,
        }
        last = self._intervals.get(self._current - 1)
        if last is not None and last.blob:
            hist = _decode(last.blob)
            out["rps"] = last.requests
        else:
            hist = total.latency
            end = self.stop_ns if self.stop_ns is not None else time.perf_counter_ns()
            seconds = (end - self.start_ns) / 1e9
            out["rps"] = total.requests / seconds if seconds > 0 else 0.0
        values = percentiles(hist, TIMESERIES_PERCENTILES)
        for p in TIMESERIES_PERCENTILES:
            out[percentile_key(p)] = values[p] / 1000
        return out

    def merge(self, blob: bytes) -> None:
        """Add another recorder's ``export()``: counters sum, histograms add count by count."""
        data = msgpack.unpackb(blob, strict_map_key=False)
        if data["version"] != _EXPORT_VERSION:
            raise ValueError(f"cannot merge a recorder export of version {data['version']}")
        self.flush()
        if not (self._stats or self._vus or self._rate):
            # A fresh recorder (the coordinator's) takes the run's clock from the first worker.
            self.start_ns = data["start_ns"]
            self._intervals = {}
            self._open_interval(0)
        shift = round((data["start_ns"] - self.start_ns) / INTERVAL_NS)
        if data["stop_ns"] is not None:
            self.stop_ns = max(self.stop_ns or 0, data["stop_ns"])
        self._total.merge(data["total"])
        for name, stats in data["endpoints"].items():
            self._endpoint(name).merge(stats)
        for name, (scheduled, dropped, late, worst) in data.get("scenarios", {}).items():
            counts = self._scenario(name)
            counts[0] += scheduled
            counts[1] += dropped
            counts[2] += late
            counts[3] = max(counts[3], worst)
        for second, (requests, failed, dropped, late, hist_blob) in data["intervals"].items():
            self._merge_interval(second + shift, requests, failed, dropped, late, hist_blob)
        for mine, theirs in ((self._vus, data["vus"]), (self._rate, data["rate"])):
            shifted = {second + shift: value for second, value in theirs.items()}
            ours, others = self._filled(mine), self._filled(shifted)
            mine.clear()
            mine.update({s: ours.get(s, 0) + others.get(s, 0) for s in ours.keys() | others.keys()})

    # -- reading -------------------------------------------------------------------------

    def summary(self, extra: tuple[float, ...] = ()) -> dict[str, Any]:
        """The run as ``summary.json`` shows it; ``extra`` percentiles add keys such as ``p75``."""
        self.flush()
        end = self.stop_ns if self.stop_ns is not None else time.perf_counter_ns()
        seconds = max(end - self.start_ns, 0) / 1e9
        out = self._total.summary(seconds, extra)
        out["duration_s"] = seconds
        out["endpoints"] = {}
        for name, stats in sorted(self._stats.items()):
            endpoint = out["endpoints"][name] = stats.summary(seconds, extra)
            for key in ("dropped", "late", "max_late_ms"):  # counted per scenario, not here
                del endpoint["requests"][key]
        if self._scenarios:
            out["requests"]["scheduled"] = sum(c[0] for c in self._scenarios.values())
            out["scenarios"] = {
                name: {
                    "scheduled": scheduled,
                    "dropped": dropped,
                    "late": late,
                    "max_late_ms": worst / 1e6,
                }
                for name, (scheduled, dropped, late, worst) in sorted(self._scenarios.items())
            }
        out["timeseries"] = self._timeseries(seconds)
        return out

    def window(self, first_second: int, last_second: int) -> HdrHistogram:
        """The latency histogram (all names, in us) of seconds ``first..last`` inclusive,
        exact: the per-second histograms added count by count."""
        self.flush()
        hist = new_histogram()
        for second in range(max(first_second, 0), last_second + 1):
            if second == self._current:
                hist.add(self._live)
            else:
                interval = self._intervals.get(second)
                if interval is not None and interval.blob:
                    hist.decode_and_add(interval.blob)
        return hist

    # -- internals -----------------------------------------------------------------------

    def _endpoint(self, name: str) -> _Stats:
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = _Stats()
        return stats

    def _count_failure(self, name: str, reason: str, second: int) -> None:
        self._intervals[second].failed += 1
        for stats in (self._total, self._endpoint(name)):
            stats.failed += 1
            stats.errors[reason] += 1

    def _second(self, t_ns: int) -> int:
        return max((t_ns - self.start_ns) // INTERVAL_NS, 0)

    def _interval_at(self, now_ns: int | None) -> _Interval:
        second = self._current if now_ns is None else self._second(now_ns)
        interval = self._intervals.get(second)
        if interval is None:
            interval = self._intervals[second] = _Interval()
        return interval

    def _open_interval(self, second: int) -> None:
        self._current = second
        interval = self._intervals.get(second)
        if interval is None:
            interval = self._intervals[second] = _Interval()
        self._live = _decode(interval.blob)
        interval.blob = None
        interval.row = None
        # Interval 0 also takes anything stamped before the start.
        self._low_ns = self.start_ns + second * INTERVAL_NS if second else -(1 << 62)
        self._high_ns = self.start_ns + (second + 1) * INTERVAL_NS
        self._window[0] = self._low_ns
        self._window[1] = self._high_ns

    def _record_elsewhen(
        self,
        name: str,
        intended_ns: int | None,
        sent_ns: int,
        done_ns: int,
        error: str | None,
    ) -> None:
        second = self._second(done_ns)
        if second > self._current:
            # Samples arrive in completion order, so this runs about once a second.
            self.flush()
            self._intervals[self._current].blob = _encode(self._live)
            self._open_interval(second)
            self.record(name, intended_ns, sent_ns, done_ns, None, error)
            return
        # A straggler stamped in an earlier second (completion order is not quite timestamp
        # order): buffered for that second, whose histogram is reopened once at the next flush.
        by_name = self._stragglers.get(second)
        if by_name is None:
            by_name = self._stragglers[second] = {}
        buffers = by_name.get(name)
        if buffers is None:
            buffers = by_name[name] = (array("q"), array("q"), array("q"))
        if intended_ns is None:
            buffers[2].append(done_ns - sent_ns)
        else:
            buffers[0].append(done_ns - intended_ns)
            buffers[1].append(done_ns - sent_ns)
        self._interval_at(done_ns)
        if error is not None:
            self._count_failure(name, error, second)

    def _merge_interval(
        self, second: int, requests: int, failed: int, dropped: int, late: int, blob: bytes | None
    ) -> None:
        interval = self._interval_at(self.start_ns + second * INTERVAL_NS)
        interval.requests += requests
        interval.failed += failed
        interval.dropped += dropped
        interval.late += late
        interval.row = None
        if not blob:
            return
        if second == self._current:
            self._live.decode_and_add(blob)
        elif interval.blob is None:
            interval.blob = blob
        else:
            hist = _decode(interval.blob)
            hist.decode_and_add(blob)
            interval.blob = _encode(hist)

    def _last_second(self) -> int:
        seconds = [*self._intervals, *self._vus, *self._rate]
        if self.stop_ns is not None:
            seconds.append(self._second(self.stop_ns - 1))
        return max(seconds)

    def _filled(self, gauge: dict[int, float]) -> dict[int, float]:
        # A gauge holds its value until it changes: carry it forward to every second.
        if not gauge:
            return {}
        filled, value = {}, None
        for second in range(min(gauge), self._last_second() + 1):
            value = gauge.get(second, value)
            filled[second] = value
        return filled

    def _timeseries(self, seconds: float) -> list[dict[str, Any]]:
        vus, rate = self._filled(self._vus), self._filled(self._rate)
        rows = []
        for second in range(self._last_second() + 1):
            interval = self._intervals.get(second) or _Interval()
            if interval.row is None or second == self._current:
                hist = self._live if second == self._current else _decode(interval.blob)
                values = percentiles(hist, TIMESERIES_PERCENTILES) if hist.total_count else {}
                interval.row = {
                    percentile_key(p): (values[p] / 1000 if values else None)
                    for p in TIMESERIES_PERCENTILES
                }
            # The last second may be cut short by the end of the run.
            width = min(1.0, max(seconds - second, 0.05))
            rows.append(
                {
                    "t": second,
                    "rps": interval.requests / width,
                    **interval.row,
                    "errors": interval.failed,
                    "dropped": interval.dropped,
                    "late": interval.late,
                    "vus": vus.get(second),
                    "rate": rate.get(second),
                }
            )
        return rows
