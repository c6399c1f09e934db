"""What this process knows of tag invalidation times.

Invalidating a tag is O(1): it stores the time of the invalidation under the tag, in Redis
and here. An entry remembers the time its value was read from the source (``asof``), and is
stale when any of its tags was invalidated at or after that time. Nothing is ever enumerated.
"""

from __future__ import annotations

import math


class TagClock:
    """Latest invalidation time per tag, in server microseconds."""

    __slots__ = ("_times", "epoch")

    def __init__(self) -> None:
        self._times: dict[str, float] = {}
        # Bumped whenever a tag time changes, so that an L1 hit on a tagged entry checked
        # fresh at the current epoch needs no per-tag lookups.
        self.epoch = 0

    def fresh(self, tags: tuple[str, ...], asof: float) -> bool:
        """True when no tag in ``tags`` was invalidated at or after ``asof``."""
        times = self._times
        return all(times.get(tag, -1.0) < asof for tag in tags)

    def invalidate(self, tags: tuple[str, ...], at: float) -> None:
        self.epoch += 1
        for tag in tags:
            if self._times.get(tag, -1.0) < at:
                self._times[tag] = at

    def unknown(self, tag: str) -> None:
        """Mark ``tag`` as changed elsewhere: its entries are stale until :meth:`learn`."""
        self.epoch += 1
        self._times[tag] = math.inf

    def learn(self, tag: str, at: float | None) -> None:
        """Record the authoritative time for ``tag`` (``None``: never invalidated)."""
        self.epoch += 1
        self._times[tag] = -1.0 if at is None else at

    def unknown_tags(self) -> list[str]:
        return [tag for tag, at in self._times.items() if at == math.inf]

    def prune(self, before: float) -> None:
        """Forget invalidations older than ``before``: no live L1 entry can predate them."""
        if len(self._times) > 1024:
            self._times = {t: at for t, at in self._times.items() if at >= before}

    def __len__(self) -> int:
        return len(self._times)
