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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from redline._hdr import new_histogram, percentiles

log = logging.getLogger("redline.monitor")

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
GAUGE_MODES = ("sum", "max", "min", "last", "all")

# Names already warned about as defined differently: once per process, not once per scrape.
_warned: set[str] = set()


class HistogramValue:
    """One histogram series: ``count``, ``sum``, cumulative ``bucket_counts`` (one per upper
    bound of the family's ``buckets``, the last being ``+Inf``, equal to ``count``) and the
    HDR histogram of the samples in units of ``1 / scale`` (``hdr``, decoded on first use).

    Treat it as read-only: it may be shared between several views.
    """

    __slots__ = ("count", "sum", "bucket_counts", "scale", "_hdr", "_blob")

    def __init__(
        self,
        count: int,
        sum: float,
        bucket_counts: tuple[int, ...],
        scale: float,
        hdr: HdrHistogram | None = None,
        blob: bytes | None = None,
    ) -> None:
        self.count = count
        self.sum = sum
        self.bucket_counts = bucket_counts
        self.scale = scale
        self._hdr = hdr
        self._blob = blob

    def __repr__(self) -> str:
        return f"HistogramValue(count={self.count}, sum={self.sum})"

    @property
    def hdr(self) -> HdrHistogram | None:
        """The HDR histogram (integer values, ``value / scale`` in base units), None if empty."""
        if self._hdr is None and self._blob is not None:
            self._hdr = HdrHistogram.decode(self._blob)
        return self._hdr

    def encoded(self) -> bytes | None:
        """The HDR histogram in hdrh's compressed encoding, None if empty."""
        if self._blob is None and self._hdr is not None and self._hdr.total_count:
            self._blob = self._hdr.encode()
        return self._blob

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) in base units; NaN when there are no samples."""
        return self.quantiles((q,))[q]

    def quantiles(self, qs: Iterable[float] = QUANTILES) -> dict[float, float]:
        """``{q: value}`` for several quantiles at once (one pass over the counts)."""
        qs = tuple(qs)
        hdr = self.hdr
        if hdr is None or not hdr.total_count:
            return dict.fromkeys(qs, math.nan)
        values = percentiles(hdr, tuple(q * 100 for q in qs))
        return {q: values[q * 100] / self.scale for q in qs}


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
        if value._hdr is not None:
            self.hdr.add(value._hdr)
        elif value._blob is not None:
            self.hdr.decode_and_add(value._blob)

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
    counts = tuple(x - y for x, y in zip(a.bucket_counts, b.bucket_counts, strict=True))
    hdr = None
    if a.count - b.count:
        left, right = a.hdr, b.hdr
        assert left is not None
        hdr = new_histogram(left.highest_trackable_value, left.significant_figures)
        hdr.add(left)
        if right is not None and right.total_count:
            mine, theirs = hdr.counts, right.counts
            for index in range(right.get_counts_array_index(right.max_value) + 1):
                if theirs[index]:
                    mine[index] -= theirs[index]
            hdr.total_count -= right.total_count
    return HistogramValue(a.count - b.count, a.sum - b.sum, counts, a.scale, hdr=hdr)


# -- the snapshot file format ---------------------------------------------------------------


def pack_families(families: list[MetricFamily]) -> list[list[Any]]:
    """``families`` as plain lists for msgpack (histograms as hdrh-encoded blobs)."""
    packed = []
    for family in families:
        if family.kind == "histogram":
            rows = [
                [list(key), v.count, v.sum, list(v.bucket_counts), v.encoded()]
                for key, v in family.samples.items()
            ]
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
            for key, count, total, counts, blob in rows:
                samples[tuple(key)] = HistogramValue(count, total, tuple(counts), scale, blob=blob)
        elif kind == "gauge":
            for key, value, updated in rows:
                samples[tuple(key)] = value
                family.updated[tuple(key)] = updated
        else:
            for key, value in rows:
                samples[tuple(key)] = value
        families.append(family)
    return families
