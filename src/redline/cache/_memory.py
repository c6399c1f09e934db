"""The in-process tier (L1): a bounded, TTL-aware map with second-chance (CLOCK) eviction.

Written here rather than taken from cachetools because the cache's hot path reads the map
directly (one dict lookup and one clock read per hit), and because L1 must bound bytes as
well as entries, keep each entry's tags and ``asof`` time, and never outlive L2's TTL.
A hit only bumps the entry's own hit count; eviction gives entries hit since the last pass a
second chance, which approximates LRU without reordering on every read. Those per-entry
counts are also the tier's hit statistics, so a hit pays for one increment, not two.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from time import monotonic
from typing import Any

# Entry layout: a list, so that a hit can bump its count (HITS) in place. SEEN is the tag
# clock's epoch when the entry's tags were last found fresh (see TagClock.epoch).
VALUE, EXPIRES, TAGS, ASOF, SIZE, HITS, SEEN = range(7)


class MemoryTier:
    """In-process L1 tier bounded by ``max_entries`` and ``max_bytes``.

    ``ttl`` caps how long any entry lives in L1 (seconds), whatever its L2 TTL: it bounds
    staleness when invalidation messages from Redis cannot be received.
    """

    def __init__(
        self, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024, ttl: float = 60.0
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"MemoryTier max_entries={max_entries}: must be >= 1")
        if max_bytes < 1:
            raise ValueError(f"MemoryTier max_bytes={max_bytes}: must be >= 1")
        if ttl <= 0:
            raise ValueError(f"MemoryTier ttl={ttl}: must be > 0 seconds")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = float(ttl)
        self.data: OrderedDict[str, list[Any]] = OrderedDict()
        self.bytes = 0
        self.retired_hits = 0
        self.misses = 0
        self.sets = 0
        self.evictions = 0
        self.expirations = 0
        # Mutations come from the caller and from the invalidation listener's thread.
        self._lock = threading.Lock()

    @property
    def hits(self) -> int:
        return self.retired_hits + sum(entry[HITS] for entry in list(self.data.values()))

    def lookup(self, key: str) -> list[Any] | None:
        """Return the live entry for ``key`` without checking tags, dropping it if expired."""
        entry = self.data.get(key)
        if entry is None:
            return None
        if entry[EXPIRES] <= monotonic():
            with self._lock:
                if self.data.get(key) is entry:
                    self._remove(key)
                    self.expirations += 1
            return None
        return entry

    def put(
        self,
        key: str,
        value: Any,
        expires: float,
        tags: tuple[str, ...] | None,
        asof: float,
        size: int,
        seen: int = -1,
        check: Callable[[], bool] | None = None,
    ) -> None:
        """Keep ``value``; with ``check``, only if it still holds once the tier is locked
        (the invalidation listener may be changing things in another thread)."""
        with self._lock:
            self._remove(key)
            if check is not None and not check():
                return
            if size > self.max_bytes:
                return
            self.data[key] = [value, expires, tags or None, asof, size, 0, seen]
            self.bytes += size
            self.sets += 1
            if len(self.data) > self.max_entries or self.bytes > self.max_bytes:
                self._evict()

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._remove(key)

    def _remove(self, key: str) -> bool:
        entry = self.data.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry[SIZE]
        self.retired_hits += entry[HITS]
        return True

    def snapshot(self) -> list[str]:
        return list(self.data)

    def clear(self) -> None:
        with self._lock:
            self.retired_hits += sum(entry[HITS] for entry in self.data.values())
            self.data.clear()
            self.bytes = 0

    def _evict(self) -> None:
        data = self.data
        now = monotonic()
        # An entry hit since the last pass goes back to the end once, so this ends.
        while data and (len(data) > self.max_entries or self.bytes > self.max_bytes):
            key, entry = data.popitem(last=False)
            if entry[HITS] and entry[EXPIRES] > now:
                self.retired_hits += entry[HITS]
                entry[HITS] = 0
                data[key] = entry
                continue
            self.bytes -= entry[SIZE]
            self.retired_hits += entry[HITS]
            self.evictions += 1

    def __len__(self) -> int:
        return len(self.data)
