"""Server metrics during a run: scrape the target's Prometheus endpoint (``--metrics-url``).

Latency says the server got slow; its own series say why (memory creeping up, a cache hit
ratio falling). The ``Scraper`` GETs the endpoint every ``interval`` seconds on the run's
clock, so ``summary["server"]`` lines up with the latency timeline and thresholds can judge
server series (``process_resident_memory_bytes: last < 500e6``).

The text is parsed by ``prometheus_client.parser``, already a dependency, rather than by a
parser of our own: the format's escaping, ``# TYPE`` lines and ``_total`` naming rules are
easy to get subtly wrong, and its authors keep it in step with what exporters emit. It is
pure Python (about 15 us per sample), so parsing runs in a worker thread, away from the
event loop that times the requests.

Each sample becomes a series keyed ``name{label="value",...}`` (labels sorted, values
escaped as in the exposition format; a bare ``name`` without labels)::

    {"last": 7.0, "min": 3.0, "max": 7.0, "avg": 5.0, "rate": 0.4, "values": [[t, v], ...]}

``t`` is seconds since ``start_ns`` (``time.perf_counter_ns``, the Recorder's clock) at the
response's first byte. ``rate``, only on counters with two samples or more, is the
per-second increase over the run, a drop counting as a restart from zero as in Prometheus'
``rate()``; ``values`` keep the raw counter values. Counters are ``counter`` families, untyped
``*_total`` samples, and the ``_count`` and ``_sum`` of histograms and summaries.

What is left out, and why:

- ``_bucket`` samples of histograms, unless ``buckets=True``: one series per bucket per label
  set would crowd out everything else under ``max_series``; ``_count``, ``_sum`` and summary
  quantiles are kept.
- NaN and infinite samples (a summary quantile with no observations): JSON has no such
  numbers. A series that never had a finite sample does not appear.
- Series first seen after ``max_series`` others: dropped, counted in ``status()``.
- Timestamps in the exposition: every sample of one scrape takes that scrape's ``t``.

A failed scrape (connection refused, no answer within ``timeout``, a status other than 200, a
response over ``max_bytes``, text that does not parse) never raises into the run: it is
counted in ``status()``, with the reason, and the next scrape goes on.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redline.load._http import Connection, HTTPError, Target

__all__ = ["Scraper", "slope"]

# Ask for the classic text format: an endpoint that can also serve OpenMetrics picks that only
# when asked, and the text parser reads the classic one.
_ACCEPT = [("Accept", "text/plain;version=0.0.4;q=1.0, */*;q=0.1")]
_COUNTER_PARTS = {"histogram": ("_count", "_sum"), "summary": ("_count", "_sum")}


class _ScrapeFailed(Exception):
    """One scrape that produced nothing; the message is ``status()["last_error"]``."""


class _CappedConnection(Connection):
    """A ``Connection`` that hangs up once a response grows past ``max_bytes``, while reading.

    The limit is on the bytes received, so a runaway endpoint cannot fill the generator's
    memory before the timeout; ``over`` tells the caller why the request ended.
    """

    max_bytes = 0
    received = 0
    over = False

    def data_received(self, data: bytes) -> None:
        if self.over:
            return
        self.received += len(data)
        if self.received > self.max_bytes:
            self.over = True
            self.close()
            return
        super().data_received(data)


class _Series:
    __slots__ = ("counter", "points", "min", "max", "total", "increase")

    def __init__(self, counter: bool) -> None:
        self.counter = counter
        self.points: list[list[float]] = []
        self.min = math.inf
        self.max = -math.inf
        self.total = 0.0
        self.increase = 0.0

    def add(self, t: float, value: float) -> None:
        if self.points:
            previous = self.points[-1][1]
            # A counter that went down restarted from zero: its whole value is new.
            self.increase += value - previous if value >= previous else value
        self.points.append([t, value])
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.total += value

    def summary(self) -> dict[str, Any]:
        points = self.points
        out: dict[str, Any] = {
            "last": points[-1][1],
            "min": self.min,
            "max": self.max,
            "avg": self.total / len(points),
        }
        if self.counter and len(points) > 1 and points[-1][0] > points[0][0]:
            out["rate"] = self.increase / (points[-1][0] - points[0][0])
        # A copy: the run goes on appending to this series after the summary is taken.
        out["values"] = list(points)
        return out


class Scraper:
    """Scrapes one Prometheus text endpoint every ``interval`` seconds during a run.

    ``timeout`` bounds each scrape (connect, request and body); ``start_ns`` is the run's
    ``time.perf_counter_ns()`` origin; at most ``max_series`` series are kept and a response
    over ``max_bytes`` is a failed scrape. ``verify=False`` accepts any TLS certificate.
    An invalid URL raises ``ValueError`` here, before the run.
    """

    def __init__(
        self,
        url: str,
        *,
        interval: float = 1.0,
        timeout: float = 2.0,
        start_ns: int | None = None,
        max_series: int = 2000,
        max_bytes: int = 8 << 20,
        buckets: bool = False,
        verify: bool = True,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError(f"interval and timeout must be positive, not {interval}, {timeout}")
        if max_series < 1 or max_bytes < 1:
            raise ValueError(
                f"max_series and max_bytes must be at least 1, not {max_series}, {max_bytes}"
            )
        parts = urlsplit(url)
        # Target takes no query; a scrape URL may have one (/federate?match[]=...).
        self._target = Target.parse(
            urlunsplit(parts._replace(query="", fragment="")), verify=verify
        )
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.start_ns = time.perf_counter_ns() if start_ns is None else start_ns
        self.max_series = max_series
        self.max_bytes = max_bytes
        self.buckets = buckets
        self._series: dict[str, _Series] = {}
        self._scrapes = 0
        self._errors = 0
        self._last_error: str | None = None
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Scrape now, then every ``interval`` seconds, on the running event loop."""
        if self._task is not None:
            raise RuntimeError(f"the scraper of {self.url} is already running")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop scraping, after one last scrape so the series reach the end of the run.

        A scrape in flight is abandoned (and not counted); the last one takes at most
        ``timeout`` seconds.
        """
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.result()  # the loop only ends by cancellation; anything else is a bug
        await self._scrape()

    def summary(self) -> dict[str, dict[str, Any]]:
        """The ``summary["server"]`` mapping: series key to aggregates and ``values``."""
        return {key: series.summary() for key, series in self._series.items()}

    def status(self) -> dict[str, Any]:
        """How scraping went, for ``summary["server_scrape"]``.

        ``scrapes`` counts the attempts, ``errors`` the failed ones with ``last_error`` the
        latest reason, ``series`` the series kept, ``dropped_series`` the most one scrape
        had beyond ``max_series``.
        """
        return {
            "url": self.url,
            "scrapes": self._scrapes,
            "errors": self._errors,
            "last_error": self._last_error,
            "series": len(self._series),
            "dropped_series": self._dropped,
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            await self._scrape()
            due += self.interval
            now = loop.time()
            if due < now:
                # A scrape slower than the interval: skip the ticks it overran, keep the grid.
                due += math.ceil((now - due) / self.interval) * self.interval
            await asyncio.sleep(due - now)

    async def _scrape(self) -> None:
        try:
            text, t = await self._fetch()
            samples = await asyncio.to_thread(_parse, text, self.buckets, self.url)
        except _ScrapeFailed as exc:
            self._scrapes += 1
            self._errors += 1
            self._last_error = str(exc)
            return
        self._scrapes += 1
        dropped = 0
        for key, (value, counter) in samples.items():
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= self.max_series:
                    dropped += 1
                    continue
                series = self._series[key] = _Series(counter)
            series.add(t, value)
        self._dropped = max(self._dropped, dropped)

    async def _fetch(self) -> tuple[str, float]:
        """The body of one GET and its ``t``; every failure is a ``_ScrapeFailed``."""
        conn: _CappedConnection | None = None
        try:
            # One connection per scrape: an idle keep-alive connection the server dropped
            # between scrapes would otherwise show up as a failed scrape.
            async with asyncio.timeout(self.timeout):
                conn = await _CappedConnection.open(self._target, self.timeout)
                conn.max_bytes = self.max_bytes
                response = await conn.request("GET", self._path, _ACCEPT, timeout=self.timeout)
        except TimeoutError:
            raise _ScrapeFailed(f"{self.url}: no response within {self.timeout:g} s") from None
        except HTTPError as exc:
            if conn is not None and conn.over:
                raise _ScrapeFailed(self._too_large()) from None
            raise _ScrapeFailed(str(exc)) from None  # it names the URL already
        finally:
            if conn is not None:
                conn.close()
        if conn.over:
            raise _ScrapeFailed(self._too_large())
        if response.status != 200:
            raise _ScrapeFailed(f"{self.url}: HTTP {response.status}, expected 200")
        try:
            text = response.body.decode()
        except UnicodeDecodeError as exc:
            raise _ScrapeFailed(f"{self.url}: the response is not UTF-8 text: {exc}") from None
        return text, round((response.first_byte_ns - self.start_ns) / 1e9, 3)

    def _too_large(self) -> str:
        return f"{self.url}: response larger than max_bytes ({self.max_bytes} bytes)"


def _parse(text: str, buckets: bool, url: str) -> dict[str, tuple[float, bool]]:
    """``{key: (value, is_counter)}`` in exposition order, the last of duplicate samples."""
    # Imported here: a run without --metrics-url does not pay for it at start-up.
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, tuple[float, bool]] = {}
    try:
        for family in text_string_to_metric_families(text):
            parts = _COUNTER_PARTS.get(family.type, ())
            for sample in family.samples:
                name, value = sample.name, sample.value
                if not math.isfinite(value) or (name.endswith("_bucket") and not buckets):
                    continue
                counter = (
                    (family.type == "counter" and not name.endswith("_created"))
                    or (family.type == "unknown" and name.endswith("_total"))
                    or name.endswith(parts)
                )
                samples[_key(name, sample.labels)] = (float(value), counter)
    except Exception as exc:  # a third-party parser reading untrusted text: any error
        raise _ScrapeFailed(f"{url}: not Prometheus text: {exc}") from None
    return samples


def _key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    pairs = ",".join(f'{k}="{_escape(labels[k])}"' for k in sorted(labels))
    return f"{name}{{{pairs}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def slope(values: Sequence[Sequence[float]]) -> float:
    """Least-squares slope of ``[t, v]`` pairs in units per second; NaN below two points."""
    try:
        return statistics.linear_regression([p[0] for p in values], [p[1] for p in values]).slope
    except statistics.StatisticsError:
        return math.nan
