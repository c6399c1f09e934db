"""Registries: the set of metrics one exposition shows.

``REGISTRY`` is the default that metrics join unless given ``registry=`` (another
``Registry``, or ``None`` for none), as in prometheus_client; tests and libraries that want
isolation create their own. A registry refuses two metrics whose exposition would clash
(``http_requests`` the gauge and ``http_requests_total`` the counter, or a gauge named like
a histogram's ``_count``), naming both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

from redline.monitor._exceptions import MetricError

if TYPE_CHECKING:
    from redline.monitor._metric import Metric
    from redline.monitor._snapshot import MetricFamily

M = TypeVar("M", bound="Metric")


class Collector(Protocol):
    """Anything that can produce a view of metrics: a ``Registry``, a ``SnapshotDirectory``."""

    def collect(self) -> list[MetricFamily]: ...


class Registry:
    """A named set of metrics, collected together."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._metrics: dict[str, Metric] = {}
        self._owners: dict[str, Metric] = {}

    def __repr__(self) -> str:
        return f"<Registry of {len(self._metrics)} metrics>"

    def __iter__(self) -> Iterator[Metric]:
        with self._lock:
            return iter(list(self._metrics.values()))

    def __len__(self) -> int:
        return len(self._metrics)

    def register(self, metric: Metric) -> None:
        """Add ``metric``; ``MetricError`` if a name it exports is taken."""
        names = metric.exported_names()
        with self._lock:
            for name in names:
                other = self._owners.get(name)
                if other is not None:
                    raise MetricError(
                        f"{metric.kind} {metric.name!r} cannot be registered: {other.kind} "
                        f"{other.name!r} already exports {name!r} in this registry; choose "
                        "another name, or unregister the old metric first"
                    )
            self._metrics[metric.name] = metric
            for name in names:
                self._owners[name] = metric

    def unregister(self, metric: Metric) -> None:
        """Remove ``metric``; ``MetricError`` if it is not in this registry."""
        with self._lock:
            if self._metrics.get(metric.name) is not metric:
                raise MetricError(f"{metric.kind} {metric.name!r} is not in this registry")
            del self._metrics[metric.name]
            for name in metric.exported_names():
                self._owners.pop(name, None)

    def clear(self) -> None:
        """Remove every metric."""
        with self._lock:
            self._metrics.clear()
            self._owners.clear()

    def get(self, name: str) -> Metric | None:
        """The metric exporting ``name`` (``http_requests`` finds the counter
        ``http_requests_total`` too), or None."""
        with self._lock:
            return self._owners.get(name)

    def get_or_create(self, name: str, kind: type[M], factory: Callable[[], M]) -> M:
        """The metric named ``name``, made by ``factory()`` and registered if absent; one
        caller creates it even when several race. ``MetricError`` if it is not a ``kind``."""
        with self._lock:
            metric = self._owners.get(name)
            if metric is None:
                metric = factory()
                self.register(metric)
        if not isinstance(metric, kind):
            raise MetricError(
                f"{metric.name!r} is a {metric.kind} in this registry, not a {kind.kind}"
            )
        return metric

    def collect(self) -> list[MetricFamily]:
        """The current value of every metric, in registration order."""
        with self._lock:
            metrics = list(self._metrics.values())
        return [metric.collect() for metric in metrics]

    def reset(self) -> None:
        """Zero every metric in place, keeping the metrics and their children (a worker
        forked from a process that had recorded starts from nothing)."""
        for metric in self:
            metric._reset()


REGISTRY = Registry()
