"""Counter: a value that only goes up (requests served, bytes sent, errors).

``inc()`` appends the amount to an ``array('d')`` instead of adding under a lock: an append
is one C call, atomic under the GIL, so threads never lose an increment, and it costs about
half of prometheus_client's locked add. Reading the value (collect, a snapshot) folds the
pending amounts in, consuming a counted prefix of the array in place (see
``HistogramChild``), and so does ``inc()`` itself every 4096 appends to bound memory.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from itertools import islice
from math import fsum
from math import inf as INF
from typing import Any

from redline.monitor._exceptions import MetricError
from redline.monitor._metric import Metric
from redline.monitor._snapshot import MetricFamily

FLUSH_AT = 4096


class CounterChild:
    """One labelled series of a counter."""

    __slots__ = ("inc", "_pending", "_value", "_lock", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._pending = array("d")
        self._value = 0.0
        self._lock = threading.Lock()
        self.inc = _incrementer(name, self._pending, self._flush)

    @property
    def value(self) -> float:
        """The total so far."""
        self._flush()
        return self._value

    def _flush(self) -> None:
        with self._lock:
            pending = self._pending
            n = len(pending)
            if n:
                self._value += fsum(islice(pending, n))
                del pending[:n]

    def _reset(self) -> None:
        with self._lock:
            del self._pending[:]
            self._value = 0.0


def _incrementer(name: str, pending: array, flush: Callable[[], None]) -> Callable[[float], None]:
    # A closure rather than a method, as HistogramChild.observe: it runs once per event.
    append = pending.append
    limit = FLUSH_AT

    def inc(amount: float = 1) -> None:
        """Add ``amount`` (>= 0, default 1)."""
        if not 0 <= amount < INF:
            # NaN or infinity would stay in the total for good: refused like a negative.
            problem = "is negative" if amount < 0 else "is not a finite number"
            raise MetricError(
                f"counter {name!r}: inc({amount!r}) {problem}; counters only go up, by "
                "finite amounts (use a Gauge for values that go down)"
            )
        append(amount)
        if len(pending) >= limit:
            flush()

    return inc


class Counter(Metric):
    """A monotonic counter, as prometheus_client's: ``Counter(name, documentation,
    labelnames=(), *, unit="", registry=REGISTRY)``.

    The exposition names it ``<name>_total`` whether or not ``name`` ends so (Prometheus'
    convention); both spellings find it in ``Registry.get``. No ``_created`` series is
    exported.
    """

    kind = "counter"

    @staticmethod
    def _normalise_name(name: str) -> str:
        return name if name.endswith("_total") else name + "_total"

    def exported_names(self) -> tuple[str, ...]:
        return (self.name.removesuffix("_total"), self.name)

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (>= 0, default 1) to a counter without labels."""
        raise self._no_labels_given("inc")

    @property
    def value(self) -> float:
        """The total of a counter without labels."""
        if self.labelnames:
            raise self._no_labels_given("value")
        return self._series[()].value

    def _new_child(self) -> CounterChild:
        return CounterChild(self.name)

    def _bind(self, child: Any) -> None:
        self.inc = child.inc  # type: ignore[method-assign]

    def collect(self) -> MetricFamily:
        return MetricFamily(
            name=self.name,
            kind=self.kind,
            documentation=self.documentation,
            labelnames=self.labelnames,
            samples={key: child.value for key, child in self._items()},
        )
