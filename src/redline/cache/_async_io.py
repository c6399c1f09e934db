"""The asyncio side of the few primitives that differ between Cache and SyncCache.

Everything else in ``_async/`` is turned into ``_sync/`` by ``scripts/gen_sync.py``; this
module and ``_sync_io.py`` hold the parts that are not a mere removal of ``await``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from redline.cache import _redis_client


def load_redis() -> SimpleNamespace:
    """redis-py for asyncio, without socket timeouts: they cost a task per send here, so
    Deadlines bounds each command instead."""
    return _redis_client.load_redis("redis.asyncio", socket_timeouts=False)


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


class Deadlines:
    """Bounds awaited Redis commands to ``seconds`` each, with one timer for all of them.

    ``asyncio.timeout`` arms and cancels a timer per command (about 5 µs here, a few per cent
    of a loopback round trip); this records the task in a dict instead and lets one watchdog,
    ticking while commands are in flight, cancel those overdue. A command may so run up to a
    quarter of ``seconds`` longer before it fails with TimeoutError.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._tick = max(seconds / 4, 0.002)
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def run(self, command: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        loop = asyncio.get_running_loop()
        self._due[task] = loop.time() + self.seconds
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch(), name="redline-cache-deadlines")
        try:
            return await command(*args)
        except asyncio.CancelledError:
            # Ours alone, it becomes a timeout; with someone else's, the cancellation stands.
            if task not in self._expired or task.uncancel() > cancelling:
                raise
            raise TimeoutError(f"Redis did not answer within {self.seconds}s") from None
        finally:
            del self._due[task]
            self._expired.discard(task)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._due:
                await asyncio.sleep(self._tick)
                now = loop.time()
                for task, due in list(self._due.items()):
                    if due <= now and task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._watchdog = None

    async def close(self) -> None:
        if self._watchdog is not None:
            await Worker.cancel(self._watchdog)


class Slots:
    """Bounds the Redis operations in flight; callers wait, first come first served."""

    __slots__ = ("free", "_waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take(self) -> bool:
        """Take a slot if one is free now (no await, so no cost on the common path)."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a slot, raising TimeoutError after."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it already
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the waiter
                return
        self.free += 1


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

    async def wait(self, timeout: float | None = None) -> Any:
        """The load's result; TimeoutError after ``timeout`` seconds (the load goes on)."""
        if timeout is None:
            return await asyncio.shield(self._future)
        return await asyncio.wait_for(asyncio.shield(self._future), timeout)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Worker:
    """A background loop (an asyncio task) that can be stopped."""

    def __init__(self, target: Callable[[], Awaitable[None]], name: str) -> None:
        self._task = asyncio.get_running_loop().create_task(target(), name=name)

    async def stop(self) -> None:
        await self.cancel(self._task)

    @staticmethod
    async def cancel(task: asyncio.Task[Any]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def current_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop (None outside one)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def connect(conn: Any, timeout: float) -> None:
    """Open ``conn``: TCP and TLS within its connect timeout, each handshake reply (AUTH,
    SELECT, CLIENT SETINFO) within ``timeout``, as any command."""
    conn.socket_timeout = timeout
    try:
        await conn.connect()
    finally:
        conn.socket_timeout = None  # from now on Deadlines bounds its commands
