"""Gauge: a value that goes up and down (requests in flight, pool connections in use).

Changes take a lock: ``inc``/``dec`` read and write the value, and a ``set`` racing an
``inc`` must not be undone by it. Under the ``last`` multi-process rule each change also
records when it happened (``time.time()``), which that rule compares across workers.

``multiprocess_mode`` says how workers' values combine into one (see ``redline.monitor``'s
multi-process view): ``sum`` (the default: in-flight requests, queue lengths and memory add
up across workers), ``max``, ``min``, ``last`` (the most recent change wins) or ``all`` (one
series per worker, with a ``pid`` label). In a single process the mode changes nothing.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
from collections.abc import Callable, Iterable
from time import time
from typing import Any, TypeVar

from redline.monitor._exceptions import MetricError
from redline.monitor._metric import Metric
from redline.monitor._registry import REGISTRY, Registry
from redline.monitor._snapshot import GAUGE_MODES, MetricFamily

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("redline.monitor")
# Gauge series whose function failed, logged once each rather than at every scrape.
_failing: set[tuple[str, tuple[str, ...]]] = set()


class GaugeChild:
    """One labelled series of a gauge."""

    __slots__ = ("_value", "_updated", "_stamp", "_function", "_lock")

    def __init__(self, stamp: bool = False) -> None:
        self._value = 0.0
        self._updated = 0.0
        self._stamp = stamp
        self._function: Callable[[], float] | None = None
        self._lock = threading.Lock()

    def set(self, value: float) -> None:
        """Set the value."""
        value = float(value)
        with self._lock:
            self._value = value
            if self._stamp:
                self._updated = time()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (default 1)."""
        with self._lock:
            self._value += amount
            if self._stamp:
                self._updated = time()

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount`` (default 1)."""
        with self._lock:
            self._value -= amount
            if self._stamp:
                self._updated = time()

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from ``function()`` whenever the gauge is collected."""
        self._function = function

    def track_inprogress(self) -> InProgress:
        """A context manager and decorator (sync or async functions) that adds 1 while the
        block or call runs."""
        return InProgress(self)

    @property
    def value(self) -> float:
        """The current value (``function()`` if one is set)."""
        function = self._function
        return float(function()) if function is not None else self._value

    def _reset(self) -> None:
        with self._lock:
            self._value = 0.0
            self._updated = 0.0


class InProgress:
    """``Gauge.track_inprogress()``: +1 on entry, -1 on exit."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: GaugeChild) -> None:
        self._gauge = gauge

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(self, *exc_info: object) -> None:
        self._gauge.dec()

    def __call__(self, function: F) -> F:
        gauge = self._gauge
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def tracked_async(*args: Any, **kwargs: Any) -> Any:
                gauge.inc()
                try:
                    return await function(*args, **kwargs)
                finally:
                    gauge.dec()

            return tracked_async  # type: ignore[return-value]

        @functools.wraps(function)
        def tracked(*args: Any, **kwargs: Any) -> Any:
            gauge.inc()
            try:
                return function(*args, **kwargs)
            finally:
                gauge.dec()

        return tracked  # type: ignore[return-value]


class Gauge(Metric):
    """A value that goes up and down: ``Gauge(name, documentation, labelnames=(), *,
    multiprocess_mode="sum", unit="", registry=REGISTRY)``."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        multiprocess_mode: str = "sum",
        unit: str = "",
        registry: Registry | None = REGISTRY,
    ) -> None:
        if multiprocess_mode not in GAUGE_MODES:
            raise MetricError(
                f"gauge {name!r}: multiprocess_mode {multiprocess_mode!r} is not one of "
                f"{', '.join(GAUGE_MODES)}"
            )
        if multiprocess_mode == "all" and "pid" in labelnames:
            raise MetricError(
                f"gauge {name!r}: label name 'pid' is reserved by multiprocess_mode='all', "
                "which adds it; rename the label"
            )
        self.multiprocess_mode = multiprocess_mode
        super().__init__(name, documentation, labelnames, unit=unit, registry=registry)

    def set(self, value: float) -> None:
        """Set a gauge without labels."""
        raise self._no_labels_given("set")

    def inc(self, amount: float = 1) -> None:
        """Add to a gauge without labels."""
        raise self._no_labels_given("inc")

    def dec(self, amount: float = 1) -> None:
        """Subtract from a gauge without labels."""
        raise self._no_labels_given("dec")

    def set_function(self, function: Callable[[], float]) -> None:
        """Read a gauge without labels from ``function()`` when collected."""
        raise self._no_labels_given("set_function")

    def track_inprogress(self) -> InProgress:
        """+1 while a block or call runs, on a gauge without labels."""
        raise self._no_labels_given("track_inprogress")

    @property
    def value(self) -> float:
        """The value of a gauge without labels."""
        if self.labelnames:
            raise self._no_labels_given("value")
        return self._series[()].value

    def _new_child(self) -> GaugeChild:
        return GaugeChild(stamp=self.multiprocess_mode == "last")

    def _bind(self, child: Any) -> None:
        self.set = child.set  # type: ignore[method-assign]
        self.inc = child.inc  # type: ignore[method-assign]
        self.dec = child.dec  # type: ignore[method-assign]
        self.set_function = child.set_function  # type: ignore[method-assign]
        self.track_inprogress = child.track_inprogress  # type: ignore[method-assign]

    def collect(self) -> MetricFamily:
        now = time()
        samples, updated = {}, {}
        for key, child in self._items():
            try:
                samples[key] = child.value
            except Exception:
                # A failing set_function() source (a closed pool, a gone file) must not take
                # the whole exposition down with it: this series reads NaN meanwhile.
                if (self.name, key) not in _failing:
                    _failing.add((self.name, key))
                    log.exception(
                        "gauge %r%s: its function raised; exported as NaN", self.name, key
                    )
                samples[key] = math.nan
            updated[key] = now if child._function is not None else child._updated
        return MetricFamily(
            name=self.name,
            kind=self.kind,
            documentation=self.documentation,
            labelnames=self.labelnames,
            samples=samples,
            multiprocess_mode=self.multiprocess_mode,
            updated=updated,
        )
