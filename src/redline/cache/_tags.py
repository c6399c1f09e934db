"""What this process knows of tag invalidation times.

Invalidating a tag is O(1): it stores the time of the invalidation under the tag, in Redis
and here. An entry remembers the time its value was read from the source (``asof``), and is
stale when any of its tags was invalidated at or after that time. Nothing is ever enumerated.
"""

from __future__ import annotations

import math
from time import monotonic

PRUNE_EVERY = 5.0  # seconds between sweeps of times too old to matter
LIMIT = 65_536  # tags known as never invalidated are dropped past this many entries


class TagClock:
    """Latest invalidation time per tag, in server microseconds."""

    __slots__ = ("_times", "_marked", "_forgotten", "_next_sweep", "epoch")

    def __init__(self) -> None:
        self._times: dict[str, float] = {}
        # Epoch of the last forget(): a time read from Redis before it may predate it.
        self._forgotten = 0
        self._next_sweep = 0.0
        # Epoch at which each tag was last reported changed; a time read from Redis before
        # that report must not overwrite it.
        self._marked: dict[str, int] = {}
        # Bumped whenever a tag time changes, so that an L1 hit on a tagged entry checked
        # fresh at the current epoch needs no per-tag lookups.
        self.epoch = 0

    def fresh(self, tags: tuple[str, ...], asof: float) -> bool:
        """True when no tag in ``tags`` was invalidated at or after ``asof``."""
        times = self._times
        return all(times.get(tag, -1.0) < asof for tag in tags)

    def verdict(self, tags: tuple[str, ...], asof: float) -> bool | None:
        """True (fresh), False (stale), or None when a tag's time is not known here.

        Used for values read from Redis without the read script: only tags whose time this
        process has read from Redis (and tracks since) can vouch for them.
        """
        times = self._times
        unknown = False
        for tag in tags:
            at = times.get(tag)
            if at is None or at == math.inf:
                unknown = True
            elif at >= asof:
                return False
        return None if unknown else True

    def forget(self) -> None:
        """Drop everything known: the invalidation stream was interrupted."""
        self.epoch += 1
        self._forgotten = self.epoch
        self._times.clear()
        self._marked.clear()

    def invalidate(self, tags: tuple[str, ...], at: float) -> None:
        self.epoch += 1
        for tag in tags:
            if self._times.get(tag, -1.0) < at:
                self._times[tag] = at

    def unknown(self, tag: str) -> None:
        """Mark ``tag`` as changed elsewhere: its entries are stale until :meth:`learn`."""
        self.epoch += 1
        self._times[tag] = math.inf
        self._marked[tag] = self.epoch

    def learn(self, tag: str, at: float | None, since: int) -> None:
        """Record ``tag``'s time as read from Redis (``None``: never invalidated).

        ``since`` is the epoch when the read was sent: if the tag was reported changed after
        that, the time read may predate the change and is ignored.
        """
        if since < self._forgotten or self._marked.get(tag, -1) > since:
            return
        self.epoch += 1
        self._times[tag] = -1.0 if at is None else at

    def unknown_tags(self) -> list[str]:
        return [tag for tag, at in self._times.items() if at == math.inf]

    def sweep(self, before: float) -> None:
        """Every PRUNE_EVERY seconds, forget times older than ``before`` (server µs).

        An L1 entry cannot outlive them, and a tag forgotten is read again from Redis when
        a value read from Redis needs it. Past LIMIT tags, those known as never invalidated
        go too, for the same reason.
        """
        now = monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + PRUNE_EVERY
        crowded = len(self._times) > LIMIT
        self._times = {
            tag: at
            for tag, at in list(self._times.items())
            if at >= before and not (crowded and at == -1.0)
        }
        self._marked = {tag: e for tag, e in list(self._marked.items()) if tag in self._times}
