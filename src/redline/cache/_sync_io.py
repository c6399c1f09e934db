"""The threaded side of the few primitives that differ between Cache and SyncCache.

See ``_async_io.py``; the names here mirror it one for one.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from redline.cache import _redis_client


def load_redis() -> SimpleNamespace:
    """Threaded redis-py, with socket timeouts: blocking sockets time out cheaply."""
    return _redis_client.load_redis("redis", socket_timeouts=True)


def is_native(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` suits this flavour's decorator (a plain function here)."""
    return not inspect.iscoroutinefunction(fn)


def call_loader(loader: Callable[[], Any]) -> Any:
    result = loader()
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError(
            f"loader {loader!r} returned an awaitable: SyncCache needs a plain function; "
            "use redline.cache.Cache for async loaders"
        )
    return result


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def read_message(conn: Any, timeout: float) -> Any:
    """Read one push message from ``conn``, or None after ``timeout`` seconds."""
    if not conn.can_read(timeout=timeout):
        return None
    return conn.read_response()


def interrupt(conn: Any) -> None:
    """Wake the thread blocked reading ``conn``: its read then fails as a closed connection.

    Only the socket is shut down; the reading thread still owns the connection object.
    """
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Deadlines:
    """Nothing to arm: each blocking socket's own timeout bounds its commands."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, command: Callable[..., Any], *args: Any) -> Any:
        return command(*args)

    def close(self) -> None:
        pass


class Slots:
    """Bounds the Redis operations in flight; callers wait for a free slot."""

    __slots__ = ("_semaphore",)

    def __init__(self, size: int) -> None:
        self._semaphore = threading.BoundedSemaphore(size)

    def take(self) -> bool:
        return self._semaphore.acquire(blocking=False)

    def wait(self, timeout: float) -> None:
        if not self._semaphore.acquire(timeout=timeout):
            raise TimeoutError(f"no Redis connection became free within {timeout}s")

    def release(self) -> None:
        self._semaphore.release()


class Flight:
    """One in-progress load that concurrent callers of the same key wait on."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: Future[Any] = Future()

    def resolve(self, value: Any) -> None:
        self._future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        self._future.set_exception(exc)

    def wait(self, timeout: float | None = None) -> Any:
        """The load's result; TimeoutError after ``timeout`` seconds (the load goes on)."""
        return self._future.result(timeout)


class Worker:
    """A background loop (a daemon thread) that can be stopped."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._thread.join(timeout=5.0)


def current_loop() -> None:
    """Threads have no event loop to follow."""
    return None


def connect(conn: Any, timeout: float) -> None:
    """Open ``conn``; its socket's connect and read timeouts bound the handshake."""
    conn.connect()
