"""Explicit timers: ``start(name)`` ... ``end(...)`` for spans that no ``with`` block encloses
(a workflow step begun in one callback and finished in another).

``start(name, **labels)`` returns a ``TimerToken``; ``end(token)`` records the seconds since
into the histogram ``name`` and returns them. The histogram is created on first use (in
``REGISTRY`` unless ``registry=`` says otherwise) with the label names of that first call;
an existing one is used as it is. Name durations ``..._seconds``, as Prometheus does.

Ending by token is safe anywhere: in another thread, task or callback. ``end(name)`` is
there for code shaped like the old ``PerformanceMonitor`` calls: it ends the most recent
timer of that name started *in the current context*, that is the current asyncio task (each
task runs in its own copy of the context) or the current thread. Two requests timing the same
name concurrently therefore never end each other's timer. A timer started in a task and
ended by name in another task or thread is not found there (``TimerError``): end it by
token. Ending a timer twice raises ``TimerError`` instead of recording twice, even when two
threads race to end it.
"""

from __future__ import annotations

from contextvars import ContextVar
from time import perf_counter
from typing import Any

from redline.monitor._exceptions import TimerError
from redline.monitor._histogram import Histogram
from redline.monitor._registry import REGISTRY, Registry

_OPEN: ContextVar[tuple[TimerToken, ...]] = ContextVar("redline_monitor_timers", default=())


class TimerToken:
    """A started timer: pass it to ``end()``."""

    __slots__ = ("name", "_observe", "_started")

    def __init__(self, name: str, observe: Any) -> None:
        self.name = name
        self._observe = observe
        # Ending pops the start time: list.pop is atomic, so only one end() can have it.
        self._started = [perf_counter()]

    def __repr__(self) -> str:
        state = "running" if self._started else "ended"
        return f"<TimerToken {self.name!r} {state}>"

    @property
    def running(self) -> bool:
        """Whether ``end()`` has not been called yet."""
        return bool(self._started)


def start(name: str, /, *, registry: Registry | None = None, **labels: Any) -> TimerToken:
    """Start timing into histogram ``name`` (seconds) with these label values."""
    registry = REGISTRY if registry is None else registry
    hist = registry.get_or_create(
        name,
        Histogram,
        lambda: Histogram(
            name,
            f"Duration of {name}, timed by redline.monitor.start()/end().",
            tuple(labels),
            registry=None,
        ),
    )
    target = hist.labels(**labels) if hist.labelnames or labels else hist
    token = TimerToken(name, target.observe)
    # A new tuple per change: the context of a task or thread is its own, never shared.
    _OPEN.set((*(t for t in _OPEN.get() if t._started), token))
    return token


def end(timer: TimerToken | str, /) -> float:
    """Stop ``timer`` (a token, or the name of a timer started in this task or thread),
    record its duration and return it in seconds."""
    if isinstance(timer, str):
        timer = _pop_by_name(timer)
    try:
        started = timer._started.pop()
    except IndexError:
        raise TimerError(f"timer {timer.name!r} was already ended") from None
    seconds = perf_counter() - started
    timer._observe(seconds)
    return seconds


def _pop_by_name(name: str) -> TimerToken:
    running = _OPEN.get()
    for i in range(len(running) - 1, -1, -1):
        token = running[i]
        if token.name == name and token._started:
            _OPEN.set(running[:i] + running[i + 1 :])
            return token
    raise TimerError(
        f"no timer {name!r} is running in this task or thread: start({name!r}) here, or "
        "end() the token that start() returned"
    )
