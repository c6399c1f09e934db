"""What the reference application runs on, and which of redline's layers it switches on.

The demo measures each layer by running the same app under different ``Settings``:

- ``dashboard_source``: ``"live"`` aggregates ``capital_calls`` and ``payments`` per
  request; ``"matview"`` reads the ``dashboard_monthly`` materialized view (revision
  ``"dashboard_view"``), refreshed every ``refresh_interval`` seconds.
- ``cache``: ``"none"``, ``"l1"`` (``Cache.memory()``, per process) or ``"l1+l2"``
  (``Cache.from_url(redis_url)``, shared through Redis).
- ``http_cache``: ``HTTPCacheMiddleware``: Cache-Control per route, ETags and 304s, surrogate
  keys, and (with a cache) the response cache on the same two-tier cache as the data, so the
  write paths' tag invalidations drop cached responses too (``_http``).
- ``metrics``: ``MetricsMiddleware``, ``/metrics``, the dashboard at ``/_redline/`` and the
  engine and cache instrumented.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal

from redline.demo._dsn import plain_dsn
from redline.demo._errors import DemoConfigError

DashboardSource = Literal["live", "matview"]
CacheMode = Literal["none", "l1", "l1+l2"]

DASHBOARD_SOURCES: tuple[str, ...] = ("live", "matview")
CACHE_MODES: tuple[str, ...] = ("none", "l1", "l1+l2")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Configuration of one ``create_app``; every bad value raises ``DemoConfigError``.

    ==========================  ==============  ================================================
    field                       default         meaning
    ==========================  ==============  ================================================
    ``dsn``                     (required)      PostgreSQL URL (``postgresql://...``)
    ``dashboard_source``        ``"live"``      ``"live"`` or ``"matview"``
    ``cache``                   ``"none"``      ``"none"``, ``"l1"`` or ``"l1+l2"``
    ``redis_url``               ``None``        Redis URL; required by ``cache="l1+l2"``
    ``http_cache``              ``False``       HTTP caching: policies, ETags, response cache
    ``metrics``                 ``False``       metrics middleware, ``/metrics``, dashboard
    ``pool_size``               ``20``          connections kept open by the engine
    ``max_overflow``            ``10``          extra connections under bursts (each opened
                                                and closed again: keep bursts rare)
    ``pool_timeout``            ``5.0`` s       wait for a free connection, then 503
    ``statement_timeout``       ``5.0`` s       PostgreSQL cancels longer statements
    ``cache_ttl``               ``600.0`` s     TTL of cached reads: a safety net, since every
                                                write path invalidates what it changes
    ``search_lag``              ``10`` s        how long a search may miss the latest writes:
                                                searches are cached that long, and writes do
                                                not invalidate them (a search index's refresh)
    ``cache_namespace``         ``"demo"``      cache namespace (Redis key part)
    ``refresh_interval``        ``30.0`` s      matview refresh period (how stale the
                                                dashboard may be); 0 turns it off
    ``session_ttl``             ``86400.0`` s   how long a login lasts
    ``secure_cookies``          ``True``        session cookie only over HTTPS
    ``metrics_dir``             ``None``        with several worker processes: a directory
                                                they share, so that ``/metrics`` in any of
                                                them is the merged view of all
                                                (``monitor.SnapshotDirectory``)
    ``registry``                ``None``        metrics ``Registry``; None = a new one per app
    ==========================  ==============  ================================================
    """

    dsn: str
    dashboard_source: DashboardSource = "live"
    cache: CacheMode = "none"
    redis_url: str | None = None
    http_cache: bool = False
    metrics: bool = False
    pool_size: int = 20
    max_overflow: int = 10
    pool_timeout: float = 5.0
    statement_timeout: float = 5.0
    cache_ttl: float = 600.0
    search_lag: int = 10
    cache_namespace: str = "demo"
    refresh_interval: float = 30.0
    session_ttl: float = 86_400.0
    secure_cookies: bool = True
    metrics_dir: str | None = None
    registry: Any = None

    def __post_init__(self) -> None:
        plain_dsn(self.dsn)
        if self.dashboard_source not in DASHBOARD_SOURCES:
            raise DemoConfigError(
                f"Settings.dashboard_source={self.dashboard_source!r}: choose one of "
                f"{', '.join(map(repr, DASHBOARD_SOURCES))}"
            )
        if self.cache not in CACHE_MODES:
            raise DemoConfigError(
                f"Settings.cache={self.cache!r}: choose one of {', '.join(map(repr, CACHE_MODES))}"
            )
        if self.cache == "l1+l2" and not self.redis_url:
            raise DemoConfigError(
                "Settings.cache='l1+l2' needs Settings.redis_url (e.g. redis://127.0.0.1:6379/0)"
            )
        for name, minimum in (("pool_size", 1), ("max_overflow", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise DemoConfigError(f"Settings.{name}={value!r}: give an integer >= {minimum}")
        for name in ("pool_timeout", "statement_timeout", "cache_ttl", "session_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise DemoConfigError(f"Settings.{name}={value!r}: give a number of seconds > 0")
        lag = self.search_lag
        if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
            raise DemoConfigError(
                f"Settings.search_lag={lag!r}: give a whole number of seconds >= 1"
            )
        interval = self.refresh_interval
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise DemoConfigError(
                f"Settings.refresh_interval={interval!r}: give seconds >= 0 (0 turns it off)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``DATABASE_URL``, ``REDIS_URL`` and ``REDLINE_DEMO_*`` variables.

        ``REDLINE_DEMO_CACHE``, ``REDLINE_DEMO_DASHBOARD``, ``REDLINE_DEMO_METRICS`` and
        ``REDLINE_DEMO_HTTP_CACHE`` (1/0), ``REDLINE_DEMO_POOL_SIZE``; keyword ``overrides``
        win over the environment.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if "DATABASE_URL" in env:
            values["dsn"] = env["DATABASE_URL"]
        if "REDIS_URL" in env:
            values["redis_url"] = env["REDIS_URL"]
        if "REDLINE_DEMO_CACHE" in env:
            values["cache"] = env["REDLINE_DEMO_CACHE"]
        if "REDLINE_DEMO_DASHBOARD" in env:
            values["dashboard_source"] = env["REDLINE_DEMO_DASHBOARD"]
        for name in ("metrics", "http_cache"):
            variable = f"REDLINE_DEMO_{name.upper()}"
            if variable in env:
                values[name] = env[variable].lower() in ("1", "true", "yes", "on")
        if "REDLINE_DEMO_POOL_SIZE" in env:
            raw = env["REDLINE_DEMO_POOL_SIZE"]
            try:
                values["pool_size"] = int(raw)
            except ValueError:
                raise DemoConfigError(f"REDLINE_DEMO_POOL_SIZE={raw!r}: give an integer") from None
        values.update(overrides)
        if "dsn" not in values:
            raise DemoConfigError("Settings need a dsn: set DATABASE_URL or pass dsn=...")
        return cls(**values)
