"""The asyncio side of the few primitives that differ between Cache and SyncCache.

Everything else in ``_async/`` is turned into ``_sync/`` by ``scripts/gen_sync.py``; this
module and ``_sync_io.py`` hold the parts that are not a mere removal of ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from redline.cache._exceptions import RedlineCacheError


def load_redis() -> SimpleNamespace:
    """redis-py's client classes for this flavour, or a clear error when it is missing."""
    try:
        import redis.asyncio as client
        from redis import backoff, exceptions
    except ImportError:  # pragma: no cover - depends on the environment
        raise RedlineCacheError(
            "the Redis tier needs redis-py: pip install 'redline[redis]'"
        ) from None
    return SimpleNamespace(
        Redis=client.Redis,
        BlockingConnectionPool=client.BlockingConnectionPool,
        Retry=client.retry.Retry,
        NoBackoff=backoff.NoBackoff,
        exceptions=exceptions,
    )


def is_native(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` suits this flavour's decorator (a coroutine function here)."""
    return inspect.iscoroutinefunction(fn)


async def call_loader(loader: Callable[[], Any]) -> Any:
    result = loader()
    if inspect.isawaitable(result):
        result = await result
    return result


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def read_message(conn: Any, timeout: float) -> Any:
    """Read one push message from ``conn``, or None after ``timeout`` seconds."""
    return await conn.read_response(timeout=timeout)


def interrupt(conn: Any) -> None:
    """Nothing to do: stopping the Worker cancels the task that is reading ``conn``."""


class Flight:
    """One in-progress load that concurrent callers of the same key wait on."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # A load that nobody waited for must not log "exception was never retrieved".
        self._future.add_done_callback(_consume)

    def resolve(self, value: Any) -> None:
        self._future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        self._future.set_exception(exc)

    async def wait(self) -> Any:
        return await asyncio.shield(self._future)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Worker:
    """A background loop (an asyncio task) that can be stopped."""

    def __init__(self, target: Callable[[], Awaitable[None]], name: str) -> None:
        self._task = asyncio.get_running_loop().create_task(target(), name=name)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def in_async_context() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
