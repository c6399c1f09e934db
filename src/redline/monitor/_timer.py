"""Timer: time a block or every call of a function into a histogram, in seconds.

``with hist.time():`` and ``@hist.time()`` (sync and async functions) as in
prometheus_client. The clock is ``time.perf_counter()``; the duration is recorded when the
block or call ends, whether it returns or raises. A decorated function gets its own start
time per call, so one decorator serves any number of threads and tasks at once; a ``with``
block needs its own timer (``hist.time()`` makes a new one each time).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from time import perf_counter
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Timer:
    """Calls ``observe(seconds)`` at the end of a ``with`` block or of each decorated call;
    ``elapsed`` holds the last block's duration."""

    __slots__ = ("_observe", "_start", "elapsed")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._start = 0.0
        self.elapsed: float | None = None

    def __enter__(self) -> Timer:
        self._start = perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.elapsed = perf_counter() - self._start
        self._observe(self.elapsed)

    def __call__(self, function: F) -> F:
        observe = self._observe
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = perf_counter()
                try:
                    return await function(*args, **kwargs)
                finally:
                    observe(perf_counter() - start)

            return timed_async  # type: ignore[return-value]

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                observe(perf_counter() - start)

        return timed  # type: ignore[return-value]
