"""Refresh the dashboard's materialized view on a schedule, one process at a time.

Every app process runs a ``DashboardRefresher``; each tick it takes a transaction-scoped
advisory lock with ``pg_try_advisory_xact_lock`` and, only if it got it, runs
``REFRESH MATERIALIZED VIEW CONCURRENTLY dashboard_monthly``. Ticks fall on multiples of the
interval by the wall clock, so the workers of a service try at the same moment: one takes
the lock and refreshes, the others find it taken and skip the tick instead of queueing
behind it, and the view is refreshed about once per interval, not once per worker. The lock
ends with the transaction, so a crashed refresher cannot hold it. ``CONCURRENTLY`` keeps the
view readable while it is rebuilt (it needs the view's unique index, from revision
``"dashboard_view"``).

A failed refresh (database restarting, statement timeout) is logged and retried next tick: a
stale dashboard is better than a refresher that dies and leaves it stale forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from redline.demo._dsn import asyncpg_url
from redline.demo._errors import DemoConfigError

VIEW = "dashboard_monthly"
LOCK_KEY = 0x72646C6E_64617368  # "rdln" "dash": one advisory lock id for every process
_log = logging.getLogger("redline.demo.refresher")


async def refresh_dashboard(target: AsyncEngine | str) -> bool:
    """Refresh the view concurrently if no other process is; True if this call refreshed it.

    ``target`` is the app's ``AsyncEngine`` or a DSN (a connection is opened for the call).
    """
    if isinstance(target, str):
        engine = create_async_engine(asyncpg_url(target), poolclass=NullPool)
        try:
            return await refresh_dashboard(engine)
        finally:
            await engine.dispose()
    async with target.begin() as connection:
        locked = await connection.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY}
        )
        if not locked:
            return False
        await connection.execute(text(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {VIEW}"))
        return True


class DashboardRefresher:
    """Calls ``refresh_dashboard(engine)`` every ``interval`` seconds in a background task.

    ``on_refresh`` is awaited after each refresh this process made (the app invalidates its
    cached dashboards there). ``start()`` and ``await stop()``; ``refreshes`` counts them.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        interval: float = 5.0,
        *,
        on_refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise DemoConfigError(f"DashboardRefresher interval={interval!r}: give seconds > 0")
        self.engine = engine
        self.interval = float(interval)
        self.on_refresh = on_refresh
        self.refreshes = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> DashboardRefresher:
        """Begin refreshing in the running event loop; the first refresh is at most one
        interval away."""
        if self.running:
            raise RuntimeError("DashboardRefresher is already running")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard-refresh")
        return self

    async def stop(self) -> None:
        """Stop refreshing; a refresh in progress is cancelled (and rolled back)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def tick(self) -> bool:
        """One refresh attempt, as the schedule makes it; True if this process refreshed."""
        try:
            refreshed = await refresh_dashboard(self.engine)
        except Exception as exc:
            self.failures += 1
            _log.warning("Refreshing %s failed, retrying in %.1f s: %s", VIEW, self.interval, exc)
            return False
        if refreshed:
            self.refreshes += 1
            if self.on_refresh is not None:
                try:
                    await self.on_refresh()
                except Exception as exc:
                    _log.warning("The callback after refreshing %s failed: %s", VIEW, exc)
        return refreshed

    async def _run(self) -> None:
        while True:
            # Ticks fall on multiples of the interval of the wall clock, so the workers of
            # a service try at the same moments and the lock lets one of them through.
            await asyncio.sleep(self.interval - time.time() % self.interval)
            await self.tick()
