"""Cache metrics: ``instrument_cache(cache, name=...)`` exports a ``redline.cache`` cache's
``stats()`` (``Cache`` or ``SyncCache``) as Prometheus metrics.

Nothing is recorded per cache operation: the cache counts for itself, and its ``stats()`` is
read when the registry is collected (a scrape, a ``SnapshotDirectory`` write), once per
collection for all the metrics below, which therefore describe one moment. Every metric has
a ``cache`` label (the ``name`` given); several caches share the metrics.

=============================================  =======  =======================================
metric                                         type     from ``stats()``
=============================================  =======  =======================================
``redline_cache_gets_total``                   counter  ``gets``: lookups through the cache
``redline_cache_hits_total{tier}``             counter  ``l1.hits``, ``l2.hits``
``redline_cache_misses_total{tier}``           counter  ``l1.misses``, ``l2.misses``
``redline_cache_hit_ratio{tier}``              gauge    hits / lookups of ``l1``, ``l2``, and
                                                        ``all``: hits in any tier / ``gets``
``redline_cache_sets_total{tier}``             counter  ``l1.sets``, ``l2.sets``
``redline_cache_loads_total``                  counter  ``loads``: loader calls that returned
``redline_cache_load_errors_total``            counter  ``load_errors``: loader calls that raised
``redline_cache_decode_errors_total``          counter  ``decode_errors``
``redline_cache_rejected_total``               counter  ``rejected``: values too big to cache
``redline_cache_latency_seconds``              gauge    ``l1.latency`` (sampled slow-path
``{tier,quantile}``                                     lookups), ``l2.latency`` (Redis
                                                        operations), ``load_latency``
                                                        (``tier="loader"``): quantiles 0.5,
                                                        0.95, 0.99 and 1 (the maximum)
``redline_cache_l1_entries``                   gauge    ``l1.entries``
``redline_cache_l1_bytes``                     gauge    ``l1.bytes``: encoded bytes held
``redline_cache_l1_max_entries``               gauge    ``l1.max_entries``
``redline_cache_l1_max_bytes``                 gauge    ``l1.max_bytes``
``redline_cache_l1_evictions_total``           counter  ``l1.evictions``
``redline_cache_l1_expirations_total``         counter  ``l1.expirations``
``redline_cache_l2_errors_total``              counter  ``l2.errors``
``redline_cache_l2_skipped_total``             counter  ``l2.skipped``: not sent, breaker open
``redline_cache_l2_read_bytes_total``          counter  ``l2.bytes_read``
``redline_cache_l2_written_bytes_total``       counter  ``l2.bytes_written``
``redline_cache_l2_breaker_state``             gauge    ``l2.breaker.state``: 0 closed,
                                                        0.5 half-open, 1 open
``redline_cache_l2_breaker_opened_total``      counter  ``l2.breaker.opened``
``redline_cache_l2_breaker_failures``          gauge    ``l2.breaker.consecutive_failures``
``redline_cache_l2_tracking``                  gauge    ``l2.tracking``: 1 while the
                                                        invalidation stream is connected
``redline_cache_l2_pending_writes``            gauge    ``l2.pending_writes``: queued for replay
=============================================  =======  =======================================

Tiers a cache lacks (no L1, no L2) have no series. A hit ratio with no lookups yet, and a
latency with no samples, is NaN. The latency quantiles are the cache's own (a log-linear
histogram, within 1.6 %), exported as gauges: they are per process and cannot be added up.

Several workers (``SnapshotDirectory``): counters add up; the gauges are merged by the rule
that keeps their meaning: entries, bytes, capacities and pending writes are summed; the
breaker state, its failures and the latency quantiles take the worst worker (``max``: an open
breaker anywhere shows as open); tracking takes ``min`` (0 if any worker lost its stream);
hit ratios are per worker (``all``, with a ``pid`` label), since ratios do not add: the
service-wide ratio is ``sum(rate(redline_cache_hits_total[5m])) /
sum(rate(redline_cache_gets_total[5m]))``. ``Registry.reset()`` (a forked worker) counts the
counters from the cache's values at that moment.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

from redline.monitor._exceptions import MetricError
from redline.monitor._metric import Metric
from redline.monitor._registry import REGISTRY, Registry
from redline.monitor._snapshot import MetricFamily

BREAKER_STATES = {"closed": 0.0, "half_open": 0.5, "open": 1.0}
LATENCY_QUANTILES = (("0.5", "p50_us"), ("0.95", "p95_us"), ("0.99", "p99_us"), ("1", "max_us"))

Stats = dict[str, Any]
Samples = Iterator[tuple[tuple[str, ...], float]]


class _HasStats(Protocol):
    def stats(self) -> Stats: ...


def instrument_cache(
    cache: _HasStats, *, name: str = "default", registry: Registry = REGISTRY
) -> CacheMetrics:
    """Export ``cache.stats()`` as the ``redline_cache_*`` metrics with ``cache=name``;
    returns the registry's ``CacheMetrics`` (``remove(name)`` stops exporting it). The cache
    is held weakly: once it is garbage, its series disappear."""
    metrics = CacheMetrics.of(registry)
    metrics.add(cache, name)
    return metrics


class CacheMetrics:
    """The ``redline_cache_*`` metrics of one registry and the caches they read."""

    _of: ClassVar[weakref.WeakKeyDictionary[Registry, CacheMetrics]] = weakref.WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._caches: dict[str, weakref.ref[_HasStats]] = {}
        self._read: dict[str, Stats] = {}
        self._read_at = -math.inf
        self.families: list[_StatsFamily] = []
        try:
            for spec in _FAMILIES:
                family = spec.build(self, leader=not self.families)
                registry.register(family)
                self.families.append(family)
        except MetricError:
            for family in self.families:
                registry.unregister(family)
            raise

    def __repr__(self) -> str:
        return f"<CacheMetrics of {sorted(self._caches)}>"

    @classmethod
    def of(cls, registry: Registry) -> CacheMetrics:
        """The one of ``registry``, created (and its metrics registered) on first use."""
        with cls._lock:
            metrics = cls._of.get(registry)
            if metrics is None:
                metrics = cls._of[registry] = cls(registry)
            return metrics

    @property
    def names(self) -> list[str]:
        """The names of the caches exported."""
        return [name for name, ref in self._caches.items() if ref() is not None]

    def add(self, cache: _HasStats, name: str = "default") -> None:
        """Export ``cache`` as ``cache=name``; ``MetricError`` if the name is taken."""
        if not callable(getattr(cache, "stats", None)):
            raise MetricError(f"cache {name!r}: {cache!r} has no stats() to read")
        current = self._caches.get(name)
        if current is not None and current() is not None:
            raise MetricError(
                f"a cache named {name!r} is already exported in this registry; give "
                "instrument_cache() another name=, or remove() the old one first"
            )
        self._caches[name] = weakref.ref(cache)
        self._read_at = -math.inf

    def remove(self, name: str) -> None:
        """Stop exporting the cache named ``name``; no error if there is none."""
        self._caches.pop(name, None)
        self._read_at = -math.inf

    def uninstall(self) -> None:
        """Remove the ``redline_cache_*`` metrics from the registry."""
        with self._lock:
            for family in self.families:
                if self.registry.get(family.name) is family:
                    self.registry.unregister(family)
            if CacheMetrics._of.get(self.registry) is self:
                del CacheMetrics._of[self.registry]

    def collect(self) -> list[MetricFamily]:
        """The current values of the cache metrics only."""
        return [family.collect() for family in self.families]

    def stats(self, *, fresh: bool) -> dict[str, Stats]:
        """``stats()`` of every live cache by name: read now if ``fresh``, else the last
        reading when it is under a second old. The first family of a collection reads
        afresh, the others reuse it, so one scrape costs one ``stats()`` per cache."""
        if fresh or time.monotonic() - self._read_at > 1.0:
            read = {}
            for name, ref in list(self._caches.items()):
                cache = ref()
                if cache is None:
                    self._caches.pop(name, None)
                else:
                    read[name] = cache.stats()
            self._read, self._read_at = read, time.monotonic()
        return self._read


class _StatsFamily(Metric):
    """One metric whose series are read from the caches' stats when collected."""

    multiprocess_mode = ""

    def __init__(
        self,
        owner: CacheMetrics,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        samples: Callable[[Stats], Samples],
        *,
        leader: bool,
    ) -> None:
        super().__init__(name, documentation, ("cache", *labelnames), registry=None)
        self._owner = owner
        self._samples = samples
        self._leader = leader

    def _read(self, fresh: bool = False) -> dict[tuple[str, ...], float]:
        out = {}
        for name, stats in self._owner.stats(fresh=fresh or self._leader).items():
            for key, value in self._samples(stats):
                out[(name, *key)] = float(value)
        return out

    def collect(self) -> MetricFamily:
        samples = self._read()
        return MetricFamily(
            name=self.name,
            kind=self.kind,
            documentation=self.documentation,
            labelnames=self.labelnames,
            samples=samples,
            multiprocess_mode=self.multiprocess_mode,
            # Read now: under the "last" rule this is when each value was current.
            updated=dict.fromkeys(samples, time.time()) if self.kind == "gauge" else {},
        )


class _StatsCounter(_StatsFamily):
    kind = "counter"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._origin: dict[tuple[str, ...], float] = {}

    def exported_names(self) -> tuple[str, ...]:
        return (self.name.removesuffix("_total"), self.name)

    def _read(self, fresh: bool = False) -> dict[tuple[str, ...], float]:
        origin = self._origin
        read = super()._read(fresh)
        return {key: value - origin.get(key, 0.0) for key, value in read.items()}

    def _reset(self) -> None:
        # A forked worker counts from here: what the cache counted before belongs to the
        # process it was forked from.
        self._origin = {}
        self._origin = self._read(fresh=True)


class _StatsGauge(_StatsFamily):
    kind = "gauge"

    def __init__(self, *args: Any, mode: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.multiprocess_mode = mode


class _Spec:
    """How to build one family."""

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        samples: Callable[[Stats], Samples],
        mode: str = "sum",
    ) -> None:
        self.kind, self.name, self.documentation = kind, name, documentation
        self.labelnames, self.samples, self.mode = labelnames, samples, mode

    def build(self, owner: CacheMetrics, *, leader: bool) -> _StatsFamily:
        args = (owner, self.name, self.documentation, self.labelnames, self.samples)
        if self.kind == "counter":
            return _StatsCounter(*args, leader=leader)
        return _StatsGauge(*args, leader=leader, mode=self.mode)


# -- reading stats() ------------------------------------------------------------------------


def _total(field: str) -> Callable[[Stats], Samples]:
    def samples(stats: Stats) -> Samples:
        yield (), stats[field]

    return samples


def _per_tier(field: str) -> Callable[[Stats], Samples]:
    def samples(stats: Stats) -> Samples:
        for tier in ("l1", "l2"):
            if stats[tier] is not None:
                yield (tier,), stats[tier][field]

    return samples


def _in_tier(tier: str, *path: str, convert: Callable[[Any], float] = float) -> Any:
    def samples(stats: Stats) -> Samples:
        value = stats[tier]
        if value is not None:
            for field in path:
                value = value[field]
            yield (), convert(value)

    return samples


def _hit_ratios(stats: Stats) -> Samples:
    yield ("all",), stats["hit_ratio"]
    for tier in ("l1", "l2"):
        counts = stats[tier]
        if counts is not None:
            lookups = counts["hits"] + counts["misses"]
            yield (tier,), counts["hits"] / lookups if lookups else math.nan


def _latencies(stats: Stats) -> Samples:
    summaries = [("loader", stats["load_latency"])]
    summaries += [(tier, stats[tier]["latency"]) for tier in ("l1", "l2") if stats[tier]]
    for tier, summary in summaries:
        for quantile, field in LATENCY_QUANTILES:
            micros = summary.get(field) if summary.get("count") else None
            yield (tier, quantile), math.nan if micros is None else micros / 1e6


_TIER = ("tier",)
_FAMILIES = (
    _Spec("counter", "redline_cache_gets_total", "Lookups through the cache.", (), _total("gets")),
    _Spec("counter", "redline_cache_hits_total", "Hits, by tier.", _TIER, _per_tier("hits")),
    _Spec("counter", "redline_cache_misses_total", "Misses, by tier.", _TIER, _per_tier("misses")),
    _Spec(
        "gauge",
        "redline_cache_hit_ratio",
        "Hits over lookups, by tier; tier=all: hits in any tier over lookups.",
        _TIER,
        _hit_ratios,
        mode="all",
    ),
    _Spec("counter", "redline_cache_sets_total", "Writes, by tier.", _TIER, _per_tier("sets")),
    _Spec(
        "counter", "redline_cache_loads_total", "Loader calls that returned.", (), _total("loads")
    ),
    _Spec(
        "counter",
        "redline_cache_load_errors_total",
        "Loader calls that raised.",
        (),
        _total("load_errors"),
    ),
    _Spec(
        "counter",
        "redline_cache_decode_errors_total",
        "Entries that could not be decoded and were dropped.",
        (),
        _total("decode_errors"),
    ),
    _Spec(
        "counter",
        "redline_cache_rejected_total",
        "Values too big to cache.",
        (),
        _total("rejected"),
    ),
    _Spec(
        "gauge",
        "redline_cache_latency_seconds",
        "Latency quantiles since start by tier (l1: sampled slow-path lookups, l2: Redis "
        "operations, loader: loader calls); quantile 1 is the maximum.",
        ("tier", "quantile"),
        _latencies,
        mode="max",
    ),
    _Spec("gauge", "redline_cache_l1_entries", "Entries in L1.", (), _in_tier("l1", "entries")),
    _Spec(
        "gauge",
        "redline_cache_l1_bytes",
        "Encoded bytes held in L1.",
        (),
        _in_tier("l1", "bytes"),
    ),
    _Spec(
        "gauge",
        "redline_cache_l1_max_entries",
        "Most entries L1 keeps.",
        (),
        _in_tier("l1", "max_entries"),
    ),
    _Spec(
        "gauge",
        "redline_cache_l1_max_bytes",
        "Most encoded bytes L1 keeps.",
        (),
        _in_tier("l1", "max_bytes"),
    ),
    _Spec(
        "counter",
        "redline_cache_l1_evictions_total",
        "Entries evicted from L1 to stay within its bounds.",
        (),
        _in_tier("l1", "evictions"),
    ),
    _Spec(
        "counter",
        "redline_cache_l1_expirations_total",
        "Entries dropped from L1 as expired.",
        (),
        _in_tier("l1", "expirations"),
    ),
    _Spec(
        "counter",
        "redline_cache_l2_errors_total",
        "Redis operations that failed.",
        (),
        _in_tier("l2", "errors"),
    ),
    _Spec(
        "counter",
        "redline_cache_l2_skipped_total",
        "Redis operations not sent because the breaker was open.",
        (),
        _in_tier("l2", "skipped"),
    ),
    _Spec(
        "counter",
        "redline_cache_l2_read_bytes_total",
        "Bytes read from Redis.",
        (),
        _in_tier("l2", "bytes_read"),
    ),
    _Spec(
        "counter",
        "redline_cache_l2_written_bytes_total",
        "Bytes written to Redis.",
        (),
        _in_tier("l2", "bytes_written"),
    ),
    _Spec(
        "gauge",
        "redline_cache_l2_breaker_state",
        "State of the Redis circuit breaker: 0 closed, 0.5 half-open, 1 open.",
        (),
        _in_tier("l2", "breaker", "state", convert=BREAKER_STATES.__getitem__),
        mode="max",
    ),
    _Spec(
        "counter",
        "redline_cache_l2_breaker_opened_total",
        "Times the Redis circuit breaker opened.",
        (),
        _in_tier("l2", "breaker", "opened"),
    ),
    _Spec(
        "gauge",
        "redline_cache_l2_breaker_failures",
        "Consecutive Redis failures counted by the breaker.",
        (),
        _in_tier("l2", "breaker", "consecutive_failures"),
        mode="max",
    ),
    _Spec(
        "gauge",
        "redline_cache_l2_tracking",
        "1 while the Redis invalidation stream keeping L1 current is connected, else 0.",
        (),
        _in_tier("l2", "tracking"),
        mode="min",
    ),
    _Spec(
        "gauge",
        "redline_cache_l2_pending_writes",
        "Writes queued while Redis was unreachable, to replay on recovery.",
        (),
        _in_tier("l2", "pending_writes"),
    ),
)
