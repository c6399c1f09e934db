"""Circuit breaker for the Redis tier.

After ``threshold`` consecutive failures the breaker opens for ``duration`` seconds and every
L2 operation is skipped at once. When the window ends, exactly one caller is let through as a
probe; if it succeeds the breaker closes, otherwise it opens for another window. So a hung
Redis costs one timeout per window, not one per call.
"""

from __future__ import annotations

import threading
from time import monotonic

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    """Consecutive-failure circuit breaker; thread-safe."""

    def __init__(self, threshold: int = 1, duration: float = 1.0) -> None:
        if threshold < 1:
            raise ValueError(f"breaker_threshold={threshold}: must be >= 1")
        if duration <= 0:
            raise ValueError(f"breaker_duration={duration}: must be > 0 seconds")
        self.threshold = threshold
        self.duration = duration
        self.state = CLOSED
        self.failures = 0
        self.opened = 0
        self._until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> str:
        """Return CLOSED (go ahead), HALF_OPEN (go ahead as the probe) or OPEN (skip)."""
        if self.state == CLOSED:
            return CLOSED
        with self._lock:
            if self.state != CLOSED and monotonic() >= self._until:
                # A probe that never reported back (its caller was cancelled) expires too.
                self.state = HALF_OPEN
                self._until = monotonic() + self.duration
                return HALF_OPEN
            return OPEN if self.state != CLOSED else CLOSED

    def success(self) -> None:
        if self.state != CLOSED or self.failures:
            with self._lock:
                self.state = CLOSED
                self.failures = 0

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.state == HALF_OPEN or self.failures >= self.threshold:
                if self.state != OPEN:
                    self.opened += 1
                self.state = OPEN
                self._until = monotonic() + self.duration
