"""Read-only views of metric values, and how views from several processes combine.

``Registry.collect()`` returns a list of ``MetricFamily``: one per metric, every labelled
series with its value (a float for counters and gauges, a ``HistogramValue`` for histograms).
The exposition, the multi-process snapshot files and later consumers (dashboard) all work
from these views, never from live metrics, so they see one consistent moment.

Merging is exact for counters (sum) and histograms (HDR counts, bucket counts, sums and
counts all add); gauges follow the metric's ``multiprocess_mode``:

- ``sum``: values add (in-flight requests, queue lengths, memory of all workers);
- ``max`` / ``min``: the largest / smallest worker's value (event-loop lag, free slots);
- ``last``: the value most recently changed in any worker (a setting, a version);
- ``all``: one series per worker, told apart by a ``pid`` label.

Families whose definitions differ between processes (a rolling deploy changed the buckets
or the labels) cannot be added: the first definition seen (in a ``SnapshotDirectory``, the
serving process's own) wins and the others are left out, with a warning logged once per
process, rather than producing a wrong sum.
"""

from __future__ import annotations

import logging
import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from ctypes import addressof
from dataclasses import dataclass, field
from functools import cache
from itertools import accumulate, repeat
from operator import sub
from typing import Any

from hdrh.histogram import HdrHistogram
from pyhdrh import add_array

from redline._hdr import new_histogram, percentiles

log = logging.getLogger("redline.monitor")

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
GAUGE_MODES = ("sum", "max", "min", "last", "all")

# Names already warned about as defined differently: once per process, not once per scrape.
_warned: set[str] = set()


class _Span:
    """The counts of an HDR histogram from its lowest to its highest non-zero index: all a
    snapshot needs, at 4 bytes a count (8 past 2**32), where the dense histogram holds 8
    bytes for every index of its range (26 KB with the defaults). A latency distribution
    spanning five decades covers some 2,000 indices; a narrow one a few hundred."""

    __slots__ = ("highest", "digits", "first", "counts", "low", "high")

    def __init__(
        self, highest: int, digits: int, first: int, counts: array, low: int, high: int
    ) -> None:
        self.highest = highest
        self.digits = digits
        self.first = first
        self.counts = counts
        self.low = low
        self.high = high

    @classmethod
    def of(cls, hdr: HdrHistogram) -> _Span | None:
        """The span of a dense histogram, None if it is empty."""
        if not hdr.total_count:
            return None
        first = hdr.get_counts_array_index(hdr.min_value)
        last = hdr.get_counts_array_index(hdr.max_value)
        counts = array("Q")
        counts.frombytes(memoryview(hdr.counts).cast("B")[first * 8 : (last + 1) * 8])
        return cls(
            hdr.highest_trackable_value,
            hdr.significant_figures,
            first,
            _narrow(counts),
            hdr.min_value,
            hdr.max_value,
        )

    def wide(self) -> array:
        """The counts as 8-byte words, as ``add_array`` adds them."""
        return self.counts if self.counts.typecode == "Q" else array("Q", self.counts)

    def add_to(self, hdr: HdrHistogram, total: int) -> None:
        """Add these counts (``total`` of them) into ``hdr``, of the same layout."""
        counts = self.wide()
        address, length = counts.buffer_info()
        add_array(addressof(hdr.counts) + self.first * 8, address, length, 8)
        hdr.total_count += total
        hdr.min_value = min(hdr.min_value, self.low)
        hdr.max_value = max(hdr.max_value, self.high)

    def dense(self, total: int) -> HdrHistogram:
        hdr = new_histogram(self.highest, self.digits)
        self.add_to(hdr, total)
        return hdr

    def percentiles(self, total: int, wanted: tuple[float, ...]) -> dict[float, int]:
        """What ``redline._hdr.percentiles`` gives for the dense histogram, from the span."""
        template = _template(self.highest, self.digits)
        cumulative = list(accumulate(self.counts))
        last = len(cumulative) - 1
        out = {}
        for p in wanted:
            # hdrh's get_target_count_at_percentile, to the same rounding.
            target = max(int((min(p, 100.0) * total / 100) + 0.5), 1)
            index = self.first + min(bisect_left(cumulative, target), last)
            value = template.get_value_from_index(index)
            out[p] = (
                template.get_highest_equivalent_value(value)
                if p
                else template.get_lowest_equivalent_value(value)
            )
        return out

    def pack(self) -> list[Any]:
        # Little-endian on every host, so a snapshot directory on shared storage reads alike.
        counts = self.counts
        if sys.byteorder != "little":
            counts = array(counts.typecode, counts)
            counts.byteswap()
        return [self.first, counts.itemsize, counts.tobytes(), self.low, self.high]

    @classmethod
    def unpack(cls, highest: int, digits: int, packed: list[Any]) -> _Span:
        first, width, raw, low, high = packed
        counts = array("I" if width == 4 else "Q")
        if counts.itemsize != width:
            raise ValueError(f"snapshot counts of {width} bytes are not supported here")
        counts.frombytes(raw)
        if sys.byteorder != "little":
            counts.byteswap()
        return cls(highest, digits, first, counts, low, high)


def _narrow(counts: array) -> array:
    """4-byte counts when they fit, which they do until a bucket holds 4 billion samples."""
    return array("I", counts) if not counts or max(counts) < 2**32 else counts


@cache
def _template(highest: int, digits: int) -> HdrHistogram:
    """An empty histogram of a layout, for its index and value arithmetic."""
    return new_histogram(highest, digits)


class HistogramValue:
    """One histogram series: ``count``, ``sum``, cumulative ``bucket_counts`` (one per upper
    bound of the family's ``buckets``, the last being ``+Inf``, equal to ``count``) and the
    HDR histogram of the samples in units of ``1 / scale`` (``hdr``).

    A series' own snapshot keeps the HDR counts compactly (from the lowest to the highest
    non-zero count, 4 bytes each) and builds the dense ``hdr`` only when asked for it;
    quantiles, merges and the snapshot files work from the compact form. Treat it as
    read-only: it may be shared between several views.
    """

    __slots__ = ("count", "sum", "bucket_counts", "scale", "_hdr", "_span")

    def __init__(
        self,
        count: int,
        sum: float,
        bucket_counts: tuple[int, ...],
        scale: float,
        hdr: HdrHistogram | None = None,
        *,
        span: _Span | None = None,
    ) -> None:
        self.count = count
        self.sum = sum
        self.bucket_counts = bucket_counts
        self.scale = scale
        self._hdr = hdr
        self._span = span

    def __repr__(self) -> str:
        return f"HistogramValue(count={self.count}, sum={self.sum})"

    @property
    def hdr(self) -> HdrHistogram | None:
        """The HDR histogram (integer values, ``value / scale`` in base units), None if empty;
        built anew from the compact form on each access."""
        if self._hdr is not None:
            return self._hdr
        span = self._span
        return span.dense(self.count) if span is not None else None

    def encoded(self) -> bytes | None:
        """The HDR histogram in hdrh's compressed encoding (for hdrh's tools), None if empty."""
        hdr = self.hdr
        return hdr.encode() if hdr is not None and hdr.total_count else None

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) in base units; NaN when there are no samples."""
        return self.quantiles((q,))[q]

    def quantiles(self, qs: Iterable[float] = QUANTILES) -> dict[float, float]:
        """``{q: value}`` for several quantiles at once (one pass over the counts)."""
        qs = tuple(qs)
        wanted = tuple(q * 100 for q in qs)
        if self._hdr is not None:
            if not self._hdr.total_count:
                return dict.fromkeys(qs, math.nan)
            values = percentiles(self._hdr, wanted)
        elif self._span is not None:
            values = self._span.percentiles(self.count, wanted)
        else:
            return dict.fromkeys(qs, math.nan)
        return {q: values[q * 100] / self.scale for q in qs}

    def _add_to(self, hdr: HdrHistogram) -> None:
        if self._hdr is not None:
            hdr.add(self._hdr)
        elif self._span is not None:
            self._span.add_to(hdr, self.count)


@dataclass(slots=True, eq=False)
class MetricFamily:
    """The values of one metric at one moment, keyed by label values in ``labelnames`` order.

    ``samples`` holds floats for counters and gauges, ``HistogramValue`` for histograms.
    Gauges carry their ``multiprocess_mode`` and, under the ``last`` rule, when each series
    last changed (``updated``, ``time.time()``). Histograms carry their layout: bucket bounds,
    ``scale`` (recorded integer = value x scale) and the HDR range and precision.
    """

    name: str
    kind: str
    documentation: str
    labelnames: tuple[str, ...]
    samples: dict[tuple[str, ...], Any]
    multiprocess_mode: str = ""
    updated: dict[tuple[str, ...], float] = field(default_factory=dict)
    buckets: tuple[float, ...] = ()
    scale: float = 1.0
    highest: int = 0
    significant_figures: int = 0

    def signature(self) -> tuple[Any, ...]:
        """What must be equal for two families to be merged."""
        return (
            self.kind,
            self.labelnames,
            self.multiprocess_mode,
            self.buckets,
            self.scale,
            self.highest,
            self.significant_figures,
        )

    def empty_like(self) -> MetricFamily:
        """A family of the same definition with no series."""
        return MetricFamily(
            self.name,
            self.kind,
            self.documentation,
            self.labelnames,
            {},
            self.multiprocess_mode,
            {},
            self.buckets,
            self.scale,
            self.highest,
            self.significant_figures,
        )


# -- merging --------------------------------------------------------------------------------


class _HistogramSum:
    __slots__ = ("count", "sum", "buckets", "hdr", "family")

    def __init__(self, family: MetricFamily) -> None:
        self.family = family
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * len(family.buckets)
        self.hdr: HdrHistogram | None = None

    def add(self, value: HistogramValue) -> None:
        self.count += value.count
        self.sum += value.sum
        self.buckets = [a + b for a, b in zip(self.buckets, value.bucket_counts, strict=True)]
        if not value.count:
            return
        if self.hdr is None:
            self.hdr = new_histogram(self.family.highest, self.family.significant_figures)
        value._add_to(self.hdr)

    def value(self) -> HistogramValue:
        return HistogramValue(
            self.count, self.sum, tuple(self.buckets), self.family.scale, hdr=self.hdr
        )


def merge_families(
    sources: Iterable[tuple[int | None, list[MetricFamily]]], *, gauges: bool = True
) -> list[MetricFamily]:
    """One view of several processes' views, given as ``(pid, families)``; ``gauges=False``
    leaves gauges out (what a dead worker leaves behind has no meaningful gauge)."""
    merged: dict[str, MetricFamily] = {}
    first: dict[str, MetricFamily] = {}
    last_seen: dict[str, dict[tuple[str, ...], float]] = {}
    for pid, families in sources:
        for family in families:
            if family.kind == "gauge" and not gauges:
                continue
            into = merged.get(family.name)
            if into is None:
                first[family.name] = family
                into = merged[family.name] = family.empty_like()
                if family.kind == "gauge" and family.multiprocess_mode == "all":
                    into.labelnames = (*family.labelnames, "pid")
            elif first[family.name].signature() != family.signature():
                if family.name not in _warned:
                    _warned.add(family.name)
                    log.warning(
                        "metric %r is defined differently in another process (%s); "
                        "its series there are left out of the merged view",
                        family.name,
                        _difference(first[family.name], family),
                    )
                continue
            _merge_into(into, family, pid, last_seen.setdefault(family.name, {}))
    out = list(merged.values())
    for family in out:
        if family.kind == "histogram":
            family.samples = {key: acc.value() for key, acc in family.samples.items()}
    return out


def _merge_into(
    into: MetricFamily, family: MetricFamily, pid: int | None, seen: dict[tuple[str, ...], float]
) -> None:
    samples = into.samples
    if family.kind == "counter":
        for key, value in family.samples.items():
            samples[key] = samples.get(key, 0.0) + value
    elif family.kind == "histogram":
        for key, value in family.samples.items():
            acc = samples.get(key)
            if acc is None:
                acc = samples[key] = _HistogramSum(into)
            acc.add(value)
    else:
        mode = family.multiprocess_mode
        for key, value in family.samples.items():
            when = family.updated.get(key, 0.0)
            if mode == "all":
                key = (*key, str(pid))
            old = samples.get(key)
            if old is None:
                samples[key], seen[key] = value, when
            elif mode == "sum":
                samples[key] = old + value
            elif mode == "max":
                samples[key] = max(old, value)
            elif mode == "min":
                samples[key] = min(old, value)
            elif mode == "last" and when >= seen[key]:
                samples[key], seen[key] = value, when
            into.updated[key] = max(into.updated.get(key, 0.0), when)


def _difference(a: MetricFamily, b: MetricFamily) -> str:
    fields = ("kind", "labelnames", "multiprocess_mode", "buckets", "scale", "highest")
    fields += ("significant_figures",)
    parts = [
        f"{name} {getattr(a, name)!r} here, {getattr(b, name)!r} there"
        for name in fields
        if getattr(a, name) != getattr(b, name)
    ]
    return "; ".join(parts)


def subtract_families(
    current: list[MetricFamily], baseline: list[MetricFamily]
) -> list[MetricFamily]:
    """``current`` less ``baseline`` for counters and histograms (gauges are left as they
    are): what a process recorded since the moment ``baseline`` was taken."""
    base = {family.name: family for family in baseline}
    out = []
    for family in current:
        old = base.get(family.name)
        if old is None or family.kind == "gauge" or old.signature() != family.signature():
            out.append(family)
            continue
        diff = family.empty_like()
        diff.updated = family.updated
        for key, value in family.samples.items():
            before = old.samples.get(key)
            if before is None:
                diff.samples[key] = value
            elif family.kind == "counter":
                diff.samples[key] = value - before
            else:
                diff.samples[key] = _histogram_minus(value, before)
        out.append(diff)
    return out


def _histogram_minus(a: HistogramValue, b: HistogramValue) -> HistogramValue:
    """The samples of ``a`` that ``b`` (an earlier view of the same series) had not seen."""
    counts = tuple(x - y for x, y in zip(a.bucket_counts, b.bucket_counts, strict=True))
    span = None
    if a.count - b.count:
        left, right = _span_of(a), _span_of(b)
        assert left is not None
        if right is None:
            span = left
        else:
            first = min(left.first, right.first)
            last = max(left.first + len(left.counts), right.first + len(right.counts))
            # Clamped at 0: a count cannot go down unless b is not an earlier view of a.
            diff = list(
                map(max, map(sub, _dense(left, first, last), _dense(right, first, last)), repeat(0))
            )
            nonzero = [i for i, n in enumerate(diff) if n]
            if nonzero:
                low, high = nonzero[0], nonzero[-1]
                template = _template(left.highest, left.digits)
                span = _Span(
                    left.highest,
                    left.digits,
                    first + low,
                    _narrow(array("Q", diff[low : high + 1])),
                    template.get_value_from_index(first + low),
                    template.get_value_from_index(first + high),
                )
    return HistogramValue(a.count - b.count, a.sum - b.sum, counts, a.scale, span=span)


def _span_of(value: HistogramValue) -> _Span | None:
    if value._span is not None:
        return value._span
    return _Span.of(value._hdr) if value._hdr is not None else None


def _dense(span: _Span, first: int, last: int) -> list[int]:
    """``span``'s counts at indices ``first`` to ``last`` (excluded), zeros around them."""
    before = span.first - first
    after = last - span.first - len(span.counts)
    return [0] * before + span.counts.tolist() + [0] * after


# -- the snapshot file format ---------------------------------------------------------------


def pack_families(families: list[MetricFamily]) -> list[list[Any]]:
    """``families`` as plain lists for msgpack. A histogram series' HDR counts go as its
    span (see ``HistogramValue``): the first index, then the counts as raw little-endian
    4- or 8-byte words, which the snapshot file's compression shrinks further."""
    packed = []
    for family in families:
        if family.kind == "histogram":
            rows = []
            for key, v in family.samples.items():
                span = _span_of(v)
                hdr = span.pack() if span is not None else None
                rows.append([list(key), v.count, v.sum, list(v.bucket_counts), hdr])
        elif family.kind == "gauge":
            rows = [
                [list(key), value, family.updated.get(key, 0.0)]
                for key, value in family.samples.items()
            ]
        else:
            rows = [[list(key), value] for key, value in family.samples.items()]
        packed.append(
            [
                family.name,
                family.kind,
                family.documentation,
                list(family.labelnames),
                family.multiprocess_mode,
                list(family.buckets),
                family.scale,
                family.highest,
                family.significant_figures,
                rows,
            ]
        )
    return packed


def unpack_families(packed: list[list[Any]]) -> list[MetricFamily]:
    """The inverse of ``pack_families``."""
    families = []
    for name, kind, doc, labelnames, mode, buckets, scale, highest, digits, rows in packed:
        family = MetricFamily(
            name=name,
            kind=kind,
            documentation=doc,
            labelnames=tuple(labelnames),
            samples={},
            multiprocess_mode=mode,
            buckets=tuple(buckets),
            scale=scale,
            highest=highest,
            significant_figures=digits,
        )
        samples = family.samples
        if kind == "histogram":
            for key, count, total, counts, hdr in rows:
                value = HistogramValue(count, total, tuple(counts), scale)
                if isinstance(hdr, bytes):  # hdrh's encoding, in snapshot format 1
                    value._hdr = HdrHistogram.decode(hdr)
                elif hdr is not None:
                    value._span = _Span.unpack(highest, digits, hdr)
                samples[tuple(key)] = value
        elif kind == "gauge":
            for key, value, updated in rows:
                samples[tuple(key)] = value
                family.updated[tuple(key)] = updated
        else:
            for key, value in rows:
                samples[tuple(key)] = value
        families.append(family)
    return families
