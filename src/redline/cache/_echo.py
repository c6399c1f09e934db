"""Recognising the invalidation messages that a cache's own writes cause.

With ``CLIENT TRACKING ... BCAST`` Redis tells every subscriber, the writer included, about
every write. Without this, each ``set`` would be followed by its own echo dropping the value
it had just put in L1. Before a write the cache expects one echo per key; an expected echo
is consumed instead of evicting. Counting, rather than flagging, keeps a foreign write that
lands between our write and its echo from being mistaken for ours: whatever the order of
the messages, the last one evicts unless all of them were ours.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class Echoes:
    """Per-key count of invalidation messages expected from this cache's own writes."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def expect(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1

    def cancel(self, keys: Iterable[str]) -> None:
        """The writes to ``keys`` did not happen (or may not have): expect no echo."""
        with self._lock:
            for key in keys:
                self._consume(key)

    def consume(self, key: str) -> bool:
        """True when a message about ``key`` was expected (and is now accounted for)."""
        with self._lock:
            return self._consume(key)

    def _consume(self, key: str) -> bool:
        count = self._counts.get(key)
        if not count:
            return False
        if count == 1:
            del self._counts[key]
        else:
            self._counts[key] = count - 1
        return True

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def __len__(self) -> int:
        return len(self._counts)
