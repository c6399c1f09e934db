"""Web Vitals from real visitors: the beacon script, the endpoint it reports to, and p75 per
page and metric with the official ratings.

Setup: mount the app and add the script to every page::

    vitals = monitor.VitalsApp()
    app.mount("/_redline", vitals)     # GET /_redline/vitals.js, POST /_redline/vitals

    <script src="/_redline/vitals.js" defer></script>

Mounted elsewhere, tell the script where to report: ``data-endpoint="/elsewhere/vitals"`` on
its tag (it must be a classic script, not ``type="module"``, to find its own tag).

The beacon (``static/vitals.js``, about 3 KB, no dependencies) reads the browser's
``PerformanceObserver`` entries, in milliseconds from navigation start (from activation for
a prerendered page):

- TTFB: the navigation entry's ``responseStart``.
- FCP: the ``first-contentful-paint`` paint entry.
- LCP: the last ``largest-contentful-paint`` candidate before the first click or key press
  (the browser proposes none after it) or the page being hidden.
- CLS (unitless): layout shifts without recent input, grouped in session windows (a gap of
  under 1 s between shifts, at most 5 s in all); the largest window's sum.
- INP: ``event`` entries of 40 ms or more and the ``first-input`` entry, grouped by
  ``interactionId``; an interaction lasts as long as its longest event (a click is
  pointerdown, pointerup and click). INP is the worst interaction, except that one worst is
  skipped for every 50 interactions (``performance.interactionCount``, where the browser has
  it, counts the fast ones too): with 50-99 interactions the second worst, with 100-149 the
  third, about the 98th percentile. Interactions under 40 ms other than the first are not
  observed; when skipping would reach past the observed ones, the fastest observed one is
  reported, an upper bound on a value that is under 40 ms anyway. A page without
  interaction has no INP.

Paints after the page was first hidden are ignored. Everything is sent once per page view,
in one beacon, when the page is first hidden (``visibilitychange`` to hidden, or
``pagehide``): the last moment a browser, mobile ones included, reliably runs scripts for the
page. That hide ends the page view: nothing is measured or sent after it, even when the
visitor returns to the tab and interacts, so each histogram sample is one page view and none
counts twice. The beacon is ``navigator.sendBeacon(url, json_string)``, which the browser
delivers even as the page unloads, falling back to ``fetch(..., {keepalive: true})``. A
string body goes as ``text/plain``, which needs no CORS preflight to another origin; the
endpoint accepts ``application/json`` too::

    {"page": "/users/42", "nav": "navigate",
     "metrics": [{"name": "LCP", "value": 1234.5, "id": "k2j4h5g6"}, ...]}

``nav`` is the navigation type (``navigate``, ``reload``, ``back_forward``, ``prerender``),
``id`` a random id per metric for downstream deduplication; both optional.

Ingestion checks the whole beacon before recording any of it, so a bad one changes nothing:
at most ``max_bytes`` (413), typed ``application/json``, ``text/plain`` or not at all (415),
JSON (400), known names only, finite values within 0-600000 ms (CLS 0-100), 1 to
``max_metrics`` metrics, a page path starting with ``/``. Errors are JSON naming the field:
``{"error": "metrics[1].value: ...", "field": "metrics[1].value"}``. Unknown keys are
ignored, so a newer script can add some. Pages are labels, so they are bounded: ``pages``
(default ``normalise_page``) maps a path to a label (``/users/42?x=1`` to ``/users/:id``),
labels are cut to 128 characters, and past ``max_pages`` distinct labels new ones count as
``other`` (a bound per process: each worker admits its own first ``max_pages``).

Each metric is a histogram labelled by ``page``: ``web_vitals_lcp_seconds``,
``web_vitals_fcp_seconds``, ``web_vitals_ttfb_seconds``, ``web_vitals_inp_seconds`` (base
units, per Prometheus) and ``web_vitals_cls`` (unitless), with a bucket bound at every
threshold so that the share of good page views is exact in PromQL, e.g.
``web_vitals_lcp_seconds_bucket{le="2.5"} / web_vitals_lcp_seconds_count``; and
``web_vitals_beacons_total{nav}`` counts accepted beacons. ``summary()`` gives p75, count and
rating per page and metric. A rating follows the official thresholds (good if p75 <= the
first, poor if > the second) and is counted exactly from those buckets; the p75 value comes
from the HDR histogram (within 1 %) and is kept on its rating's side of a threshold.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import orjson

from redline.monitor._asgi import Receive, Scope, Send, _lifespan
from redline.monitor._counter import Counter
from redline.monitor._exceptions import RedlineMonitorError
from redline.monitor._histogram import Histogram
from redline.monitor._registry import REGISTRY, Collector, Registry
from redline.monitor._snapshot import MetricFamily

VITALS_THRESHOLDS: dict[str, tuple[float, float]] = {
    "LCP": (2500.0, 4000.0),
    "INP": (200.0, 500.0),
    "CLS": (0.1, 0.25),
    "FCP": (1800.0, 3000.0),
    "TTFB": (800.0, 1800.0),
}
"""``{name: (good, poor)}`` in the beacon's units (ms; CLS unitless): good if <= ``good``,
poor if > ``poor``, needs improvement between."""

_NAVIGATION_TYPES = ("navigate", "reload", "back_forward", "prerender")
_OTHER = "other"
_MAX_PAGE = 128
_MAX_MS = 600_000.0
_MAX_CLS = 100.0
_MAX_ID = 64
_MAX_NAV = 32
_MAX_RAW_PAGE = 2048
_SECONDS_BUCKETS = tuple(
    sorted(
        {0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0}
        | {t / 1000 for name, pair in VITALS_THRESHOLDS.items() if name != "CLS" for t in pair}
    )
)
_CLS_BUCKETS = (0.01, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
_SEGMENT_ID = re.compile(
    r"\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|(?=[a-f]*\d)[0-9a-f]{16,}",
    re.IGNORECASE,
)


class BeaconError(RedlineMonitorError, ValueError):
    """A beacon was refused: ``status`` is the HTTP status (400, 413, 415), ``field`` the
    part of it at fault (``metrics[1].value``, ``body``, ``content-type``)."""

    def __init__(self, field: str, problem: str, status: int = 400) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.status = status


@dataclass(frozen=True, slots=True)
class Beacon:
    """An accepted beacon as recorded: the page label, the navigation type label and
    ``(name, value)`` pairs in the beacon's units (ms; CLS unitless)."""

    page: str
    nav: str
    metrics: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class VitalSummary:
    """One page's one metric: p75 in the beacon's units, page views, and its rating."""

    p75: float
    count: int
    rating: str


def vital_rating(name: str, value: float) -> str:
    """``"good"``, ``"needs-improvement"`` or ``"poor"`` for one value of metric ``name``."""
    good, poor = VITALS_THRESHOLDS[name]
    return "good" if value <= good else "poor" if value > poor else "needs-improvement"


def normalise_page(path: str) -> str:
    """The label of a page path: no query or fragment, numeric, UUID and long hexadecimal
    segments as ``:id`` (``/orders/42?tab=1`` is ``/orders/:id``)."""
    path = path.split("#", 1)[0].split("?", 1)[0]
    return "/".join(":id" if _SEGMENT_ID.fullmatch(s) else s for s in path.split("/"))


class _Vital:
    """How one metric is checked, recorded (``factor`` to base units) and rated."""

    __slots__ = ("name", "histogram", "factor", "high", "good", "poor")

    def __init__(self, name: str, registry: Registry | None) -> None:
        self.name = name
        self.good, self.poor = VITALS_THRESHOLDS[name]
        if name == "CLS":
            self.factor, self.high = 1.0, _MAX_CLS
            metric, buckets = "web_vitals_cls", _CLS_BUCKETS
        else:
            self.factor, self.high = 1000.0, _MAX_MS
            metric, buckets = f"web_vitals_{name.lower()}_seconds", _SECONDS_BUCKETS
        doc = f"{_TITLES[name]}, one sample per page view, by page."

        def make() -> Histogram:
            # 0.1 ms (CLS 0.0001) resolution: finer than browsers report.
            return Histogram(
                metric,
                doc,
                ("page",),
                buckets=buckets,
                scale=10_000,
                max_value=self.high / self.factor,
                registry=None,
            )

        self.histogram = (
            make() if registry is None else registry.get_or_create(metric, Histogram, make)
        )

    def summarise(self, family: MetricFamily) -> dict[str, VitalSummary]:
        """p75, count and rating of every page in ``family`` (this vital's histogram)."""
        good_le = family.buckets.index(self.good / self.factor)
        poor_le = family.buckets.index(self.poor / self.factor)
        out = {}
        for (page,), value in family.samples.items():
            if not value.count:
                continue
            # p75 is the rank-th smallest value, with the rank rule of the HDR histogram.
            rank = max(int(0.75 * value.count + 0.5), 1)
            if value.bucket_counts[good_le] >= rank:
                rating, ceiling = "good", self.good
            elif value.bucket_counts[poor_le] >= rank:
                rating, ceiling = "needs-improvement", self.poor
            else:
                rating, ceiling = "poor", self.high
            p75 = min(value.quantile(0.75) * self.factor, ceiling)
            # Rounded to the resolution recorded: 0.1 ms, CLS 0.0001.
            out[page] = VitalSummary(round(p75, 1 if self.factor > 1 else 4), value.count, rating)
        return out


_TITLES = {
    "LCP": "Largest Contentful Paint in seconds",
    "FCP": "First Contentful Paint in seconds",
    "TTFB": "Time To First Byte in seconds",
    "INP": "Interaction to Next Paint in seconds",
    "CLS": "Cumulative Layout Shift",
}


class VitalsApp:
    """Serves the beacon script (``GET <mount>/vitals.js``) and takes its beacons (``POST
    <mount>/vitals``) into histograms in ``registry`` (``None``: in no registry).

    ``max_bytes`` bounds a beacon's body, ``max_metrics`` its metrics; ``pages`` maps a
    page path to its label (default ``normalise_page``), of which at most ``max_pages``
    are kept before new ones count as ``other``. Apps on one registry share its histograms.
    """

    def __init__(
        self,
        registry: Registry | None = REGISTRY,
        *,
        max_bytes: int = 8192,
        max_metrics: int = 10,
        pages: Callable[[str], str] | None = None,
        max_pages: int = 100,
    ) -> None:
        if max_bytes < 1 or max_metrics < 1 or max_pages < 1:
            raise ValueError(
                f"VitalsApp: max_bytes ({max_bytes}), max_metrics ({max_metrics}) and "
                f"max_pages ({max_pages}) must all be at least 1"
            )
        self.registry = registry
        self.max_bytes = max_bytes
        self.max_metrics = max_metrics
        self.pages = normalise_page if pages is None else pages
        self.max_pages = max_pages
        self._vitals = {name: _Vital(name, registry) for name in VITALS_THRESHOLDS}
        self._beacons = _beacon_counter(registry)
        self._labels: set[str] = set()
        self._lock = threading.Lock()

    # -- ingestion ---------------------------------------------------------------------

    def ingest(self, body: bytes) -> Beacon:
        """Check a beacon's body whole, then record it; ``BeaconError`` (and nothing
        recorded) if any of it is wrong. For frameworks that read the body themselves."""
        if len(body) > self.max_bytes:
            raise _too_large(self.max_bytes)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise BeaconError("body", f"not valid JSON ({error})") from None
        beacon = self._check(data)
        page = self._admit(beacon.page)
        for name, value in beacon.metrics:
            vital = self._vitals[name]
            vital.histogram.labels(page).observe(value / vital.factor)
        self._beacons.labels(beacon.nav).inc()
        return Beacon(page, beacon.nav, beacon.metrics)

    def _check(self, data: Any) -> Beacon:
        if not isinstance(data, dict):
            raise BeaconError("body", f"must be a JSON object, not {_show(data)}")
        page = data.get("page")
        if not isinstance(page, str) or not page.startswith("/"):
            raise BeaconError("page", "required: the page's path, starting with '/'")
        if len(page) > _MAX_RAW_PAGE:
            raise BeaconError("page", f"longer than {_MAX_RAW_PAGE} characters")
        nav = data.get("nav", _OTHER)
        if not isinstance(nav, str) or len(nav) > _MAX_NAV:
            raise BeaconError("nav", f"must be a string of at most {_MAX_NAV} characters")
        items = data.get("metrics")
        if not isinstance(items, list) or not 1 <= len(items) <= self.max_metrics:
            raise BeaconError("metrics", f"required: a list of 1 to {self.max_metrics} metrics")
        metrics = tuple(_metric(item, f"metrics[{i}]") for i, item in enumerate(items))
        label = self.pages(page)[:_MAX_PAGE]
        return Beacon(label, nav if nav in _NAVIGATION_TYPES else _OTHER, metrics)

    def _admit(self, label: str) -> str:
        with self._lock:
            if label in self._labels:
                return label
            if len(self._labels) >= self.max_pages:
                return _OTHER
            self._labels.add(label)
            return label

    # -- aggregation -------------------------------------------------------------------

    def summary(self, source: Collector | None = None) -> dict[str, dict[str, VitalSummary]]:
        """``{page: {metric: VitalSummary}}`` of what was recorded here, or of ``source``
        (a ``SnapshotDirectory`` for all workers); pages and metrics without data absent."""
        if source is None:
            families = {v.name: v.histogram.collect() for v in self._vitals.values()}
        else:
            names = {v.histogram.name: v.name for v in self._vitals.values()}
            families = {names[f.name]: f for f in source.collect() if f.name in names}
        out: dict[str, dict[str, VitalSummary]] = {}
        for name, family in families.items():
            for page, summary in self._vitals[name].summarise(family).items():
                out.setdefault(page, {})[name] = summary
        return out

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"VitalsApp serves HTTP, not {scope['type']!r}")
        path, method = _route_path(scope), scope["method"]
        allowed = _ALLOWED.get(path)
        try:
            if allowed is None:
                raise BeaconError("path", f"{path!r} is not here: GET vitals.js, POST vitals", 404)
            if method not in allowed:
                raise BeaconError("method", f"{method} is not allowed: {', '.join(allowed)}", 405)
            if path == "/vitals.js":
                await _script_response(scope, send)
                return
            _check_content_type(scope)
            body = await _read_body(scope, receive, self.max_bytes)
            if body is None:
                return
            self.ingest(body)
        except BeaconError as error:
            headers = [(b"content-type", b"application/json")]
            if error.status == 405:
                headers.append((b"allow", ", ".join(allowed or ()).encode()))
            body = orjson.dumps({"error": str(error), "field": error.field})
            await _respond(send, error.status, body, headers)
            return
        await _respond(send, 204)


_ALLOWED = {"/vitals": ("POST",), "/vitals.js": ("GET", "HEAD")}


def _metric(item: Any, where: str) -> tuple[str, float]:
    if not isinstance(item, dict):
        raise BeaconError(where, f"must be an object with name and value, not {_show(item)}")
    name = item.get("name")
    if name not in VITALS_THRESHOLDS:
        known = ", ".join(sorted(VITALS_THRESHOLDS))
        raise BeaconError(f"{where}.name", f"unknown metric {_show(name)}; known: {known}")
    value = item.get("value")
    high, unit = (_MAX_CLS, "") if name == "CLS" else (_MAX_MS, " ms")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and 0 <= value <= high)
    ):
        raise BeaconError(
            f"{where}.value",
            f"{name} must be a number from 0 to {high:g}{unit}, not {_show(value)}",
        )
    ident = item.get("id", "")
    if not isinstance(ident, str) or len(ident) > _MAX_ID:
        raise BeaconError(f"{where}.id", f"must be a string of at most {_MAX_ID} characters")
    return name, float(value)


def _show(value: Any) -> str:
    """``value`` as JSON, cut short: error messages echo what was sent, within reason."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _beacon_counter(registry: Registry | None) -> Counter:
    name, doc = "web_vitals_beacons", "Web Vitals beacons accepted, by navigation type."
    if registry is None:
        return Counter(name, doc, ("nav",), registry=None)
    return registry.get_or_create(
        name, Counter, lambda: Counter(name, doc, ("nav",), registry=None)
    )


def _too_large(limit: int) -> BeaconError:
    return BeaconError("body", f"larger than {limit} bytes", status=413)


def _check_content_type(scope: Scope) -> None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media not in (b"application/json", b"text/plain"):
                raise BeaconError(
                    "content-type",
                    f"{media.decode('latin-1')!r} is not accepted: send application/json "
                    "or text/plain",
                    status=415,
                )


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The body, or None if the client went away; ``BeaconError`` 413 as soon as it is
    known to exceed ``limit`` (from Content-Length, or while it streams in)."""
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length" and value.isdigit() and int(value) > limit:
            raise _too_large(limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path in ``path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


@cache
def _script() -> tuple[bytes, bytes]:
    """The beacon script and its ETag."""
    body = files("redline.monitor").joinpath("static", "vitals.js").read_bytes()
    return body, f'"{hashlib.sha256(body).hexdigest()[:20]}"'.encode()


async def _script_response(scope: Scope, send: Send) -> None:
    body, etag = _script()
    # An hour's freshness, then a cheap revalidation: an upgraded script spreads within it.
    headers = [
        (b"content-type", b"text/javascript; charset=utf-8"),
        (b"cache-control", b"public, max-age=3600"),
        (b"etag", etag),
        (b"x-content-type-options", b"nosniff"),
    ]
    wanted = b",".join(v for k, v in scope.get("headers", ()) if k.lower() == b"if-none-match")
    tags = {tag.strip().removeprefix(b"W/") for tag in wanted.split(b",")}
    if etag in tags or b"*" in tags:
        await _respond(send, 304, headers=headers)
    elif scope["method"] == "HEAD":
        await _respond(send, 200, headers=[*headers, (b"content-length", b"%d" % len(body))])
    else:
        await _respond(send, 200, body, headers)


async def _respond(
    send: Send, status: int, body: bytes = b"", headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send a response with its Content-Length (none for 204 and 304, or if given)."""
    headers = list(headers)
    if status not in (204, 304) and not any(k == b"content-length" for k, _ in headers):
        headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
