# Generated from _async/cache.py by scripts/gen_sync.py: do not edit, regenerate.
"""The two-tier cache: in-process L1 in front of Redis L2.

This file is the single source of the cache's logic. ``scripts/gen_sync.py`` turns it into
``_sync/cache.py`` (``SyncCache``); edit this file, then regenerate.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
import secrets
from collections.abc import Callable, Iterable, Mapping
from time import monotonic, perf_counter_ns, time
from typing import Any

from redline.cache._sync.backend import SyncRedisBackend
from redline.cache._sync_io import Flight, call_loader, is_native
from redline.cache._callkey import CallKey
from redline.cache._codecs import Codec, Compressor, get_codec
from redline.cache._entry import pack, unpack
from redline.cache._exceptions import CacheKeyError, CodecError
from redline.cache._keys import KeySpace, check_tags, glob_to_regex
from redline.cache._memory import ASOF, HITS, SEEN, TAGS, VALUE, MemoryTier
from redline.cache._redis_tier import RedisTier
from redline.cache._stats import Latency
from redline.cache._tags import TagClock

log = logging.getLogger("redline.cache")

_MISS: Any = object()
_DEFAULT_L1: Any = object()
_BATCH = 500
_SAMPLE = 64  # time one slow-path L1 lookup in this many
_WRITTEN = 4096  # keys whose last change is remembered (see Cache._touch)


class _Abandoned(Exception):
    """The caller that was loading a key was cancelled; a waiter takes over."""


class SyncCache:
    """A two-tier cache: ``l1`` in this process, ``l2`` in Redis shared by all processes.

    Either tier may be None. ``default_ttl`` applies when a call passes no ``ttl``;
    ``max_ttl`` bounds every TTL and is how long tag invalidations are remembered.
    """

    def __init__(
        self,
        l1: MemoryTier | None = _DEFAULT_L1,
        l2: RedisTier | None = None,
        *,
        namespace: str = "default",
        version: int | str = 1,
        default_ttl: float = 300.0,
        max_ttl: float = 7 * 86400.0,
        codec: str | Codec = "msgpack",
        compress_threshold: int = 1024,
        compress_level: int = 3,
        max_value_bytes: int = 16 * 1024 * 1024,
        key_prefix: str = "redline",
        max_key_length: int = 250,
        lock: bool = False,
        lock_lease: float = 10.0,
    ) -> None:
        if not 0 < default_ttl <= max_ttl:
            raise ValueError(
                f"default_ttl={default_ttl}: must be > 0 and <= max_ttl={max_ttl} seconds"
            )
        self._l1: MemoryTier | None = MemoryTier() if l1 is _DEFAULT_L1 else l1
        # The hit path reads this dict directly; with no L1 it is an always-empty dict.
        self._data: Any = self._l1.data if self._l1 is not None else {}
        self._keys = KeySpace(namespace, version, key_prefix, max_key_length)
        self._codec = get_codec(codec)
        self._compressor = Compressor(
            level=compress_level,
            threshold=compress_threshold,
            max_size=max(max_value_bytes, 1),
        )
        self._default_ttl = float(default_ttl)
        self._max_ttl = float(max_ttl)
        self._max_value_bytes = max_value_bytes
        self._tags = TagClock()
        self._flights: dict[str, Flight] = {}
        if lock_lease <= 0:
            raise ValueError(f"lock_lease={lock_lease}: must be > 0 seconds")
        self._lock = lock
        self._lock_lease = float(lock_lease)
        # Loads this process waits for in other processes, woken by the invalidation stream.
        self._peers: dict[str, Flight] = {}
        # A clock of changes: every write, delete and invalidation ticks it. A read or write
        # that began at generation g fills L1 only if its key has not changed since: the
        # generation of each key's last change is in _written (the latest _WRITTEN keys),
        # and _barrier is the last change of every key at once (clear, a lost invalidation
        # stream, or keys dropped from _written). Per key, not one counter for the cache:
        # under concurrent load some key changes at every moment, and one counter would
        # keep almost every value out of L1.
        self._generation = 0
        self._barrier = 0
        self._written: dict[str, int] = {}
        # Server clock minus local clock, bounded from below and above by the round trip
        # in which it was measured: asof times use the low bound, L1 expiry the high one.
        self._last_stamp = 0.0
        self._offset_low = 0.0
        self._offset_high = 0.0
        self._clock_known = False
        self._l2 = SyncRedisBackend(l2, self._keys, self) if l2 is not None else None
        self._l2_hits = 0
        self._l2_misses = 0
        self._l2_sets = 0
        self._loads = 0
        self._load_errors = 0
        self._decode_errors = 0
        self._rejected = 0
        self._sample = 0
        self._l1_latency = Latency()
        self._load_latency = Latency()

    @classmethod
    def memory(cls, **options: Any) -> SyncCache:
        """An L1-only cache; ``max_entries``, ``max_bytes`` and ``l1_ttl`` size the tier."""
        tier = {k: options.pop(k) for k in ("max_entries", "max_bytes") if k in options}
        if "l1_ttl" in options:
            tier["ttl"] = options.pop("l1_ttl")
        return cls(l1=MemoryTier(**tier), l2=None, **options)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SyncCache:
        """L1 + Redis L2 from a ``redis://`` or ``rediss://`` URL with default settings.

        Keywords of the cache's constructor configure the cache; the others go to
        :meth:`RedisTier.from_url`, which passes those that are not its fields (for example
        ``ssl_ca_certs``) to redis-py.
        """
        own = set(inspect.signature(cls).parameters)
        tier = {k: options.pop(k) for k in list(options) if k not in own}
        return cls(l1=MemoryTier(), l2=RedisTier.from_url(url, **tier), **options)

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value cached under ``key``, or ``default``."""
        try:
            entry = self._data[key]
            # Literal indices (EXPIRES, TAGS, SEEN, HITS, VALUE): a named constant costs a
            # global lookup each, a fifth of this path.
            if entry[1] > monotonic() and (entry[2] is None or entry[6] == self._tags.epoch):
                entry[5] += 1
                return entry[0]
        except (KeyError, TypeError):
            pass
        # The miss path is inlined too: one coroutine less per Redis read.
        local = self._keys.local(key)
        if self._l1 is not None:
            value = self._l1_get(local)
            if value is not _MISS:
                return value
        if self._l2 is not None:
            found = self._l2_get([local])
            return found.get(local, default)
        return default

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys found; L1 first, then one Redis round trip."""
        found: dict[str, Any] = {}
        missing: dict[str, str] = {}
        for key in keys:
            local = self._keys.local(key)
            value = self._l1_get(local)
            if value is _MISS:
                missing[local] = key
            else:
                found[key] = value
        if missing and self._l2 is not None:
            wanted = list(missing)
            for i in range(0, len(wanted), _BATCH):
                hits = self._l2_get(wanted[i : i + _BATCH])
                for local, value in hits.items():
                    found[missing[local]] = value
        return found

    def get_or_set(
        self,
        key: str,
        loader: Callable[[], Any],
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> Any:
        """Return the cached value, or call ``loader`` once per process and cache its result.

        Concurrent callers of a missing key wait for one load; a loader exception reaches
        every waiter and nothing is cached.
        """
        try:
            entry = self._data[key]
        except (KeyError, TypeError):
            return self._get_or_load(key, loader, ttl, tags)
        # Literal indices (EXPIRES, TAGS, SEEN, HITS, VALUE): a named constant costs a
        # global lookup each, a fifth of this path.
        if entry[1] > monotonic() and (entry[2] is None or entry[6] == self._tags.epoch):
            entry[5] += 1
            return entry[0]
        return self._get_or_load(key, loader, ttl, tags)

    def _get_or_load(
        self, key: str, loader: Callable[[], Any], ttl: float | None, tags: Iterable[str]
    ) -> Any:
        local = self._keys.local(key)
        value = self._l1_get(local)
        if value is not _MISS:
            return value
        tags = check_tags(tags)
        ttl = self._ttl(ttl, key)
        while True:
            flight = self._flights.get(local)
            if flight is None:
                flight = Flight()
                if self._flights.setdefault(local, flight) is flight:
                    break
                continue
            try:
                return flight.wait()
            except _Abandoned:
                continue
        try:
            value = self._load(local, loader, ttl, tags)
        except Exception as exc:
            flight.fail(exc)
            raise
        except BaseException:
            flight.fail(_Abandoned())
            raise
        finally:
            if self._flights.get(local) is flight:
                del self._flights[local]
        flight.resolve(value)
        return value

    def _load(
        self, local: str, loader: Callable[[], Any], ttl: float, tags: tuple[str, ...]
    ) -> Any:
        # The value's age is counted from before the L2 read, on this process's monotonic
        # clock: Redis stamps the entry "now minus age", so an invalidation that lands while
        # the loader runs always makes the result stale, whatever the wall clocks do.
        started = monotonic()
        token = None
        if self._l2 is not None:
            value = (self._l2_get([local])).get(local, _MISS)
            if value is not _MISS:
                return value
            if self._lock and self._l2.tracking:
                value, token = self._lead_or_follow(local)
                if value is not _MISS:
                    return value
        try:
            load_started = perf_counter_ns()
            try:
                value = call_loader(loader)
            except Exception:
                self._load_errors += 1
                raise
            finally:
                self._load_latency.record(perf_counter_ns() - load_started)
            self._loads += 1
            self._store({local: value}, ttl, tags, monotonic() - started)
            return value
        finally:
            if token is not None:
                self._l2.unlock(self._keys.lock(local), token)  # type: ignore[union-attr]

    def _lead_or_follow(self, local: str) -> tuple[Any, str | None]:
        """Become the one process loading ``local``, or wait for the one that is.

        Returns (value, None) when another process loaded it, or (_MISS, token) when this
        process holds the lock and loads (token None: no lock could be had, load anyway).
        A follower wakes on the invalidation message of the entry or of the lock, so it
        waits for the leader's write, not for a polling interval.
        """
        assert self._l2 is not None
        lock_key = self._keys.lock(local)
        token = secrets.token_hex(8)
        lease_ms = int(self._lock_lease * 1000)
        give_up = monotonic() + self._lock_lease
        while True:
            waiter = Flight()
            self._peers[local] = waiter
            try:
                held = self._l2.lock(lock_key, token, lease_ms)
                if held is None:
                    return _MISS, None
                # The leader may have written between our read and our lock attempt.
                found = self._l2_get([local])
                if local in found:
                    if held:
                        self._l2.unlock(lock_key, token)
                    return found[local], None
                if held:
                    return _MISS, token
                waiter.wait(max(0.0, give_up - monotonic()))
            except TimeoutError:
                return _MISS, None  # the leader is too slow: load here too
            finally:
                if self._peers.get(local) is waiter:
                    del self._peers[local]

    def _touch(self, locals_: Iterable[str]) -> int:
        """Record a change of ``locals_``; returns its generation."""
        self._generation += 1
        generation = self._generation
        written = self._written
        for local in locals_:
            written.pop(local, None)
            written[local] = generation
        if len(written) > _WRITTEN:
            # Forget the older half; the barrier stands for them (only reads and writes
            # in flight across it lose their L1 fill). pop with a default: SyncCache's
            # invalidation listener thread may be forgetting the same keys.
            for local in list(itertools.islice(written, len(written) // 2)):
                self._barrier = max(self._barrier, written.pop(local, 0))
        return generation

    def _touch_all(self) -> None:
        """Record a change of every key."""
        self._generation += 1
        self._barrier = self._generation
        self._written.clear()

    def _unchanged(self, local: str, generation: int) -> bool:
        """Whether ``local`` has not changed since ``generation``."""
        return self._barrier <= generation and self._written.get(local, 0) <= generation

    def _l1_get(self, local: str) -> Any:
        l1 = self._l1
        if l1 is None:
            return _MISS
        epoch = self._tags.epoch  # before the check: a change meanwhile forces a recheck
        self._sample += 1
        timed = self._sample % _SAMPLE == 0
        start = perf_counter_ns() if timed else 0
        entry = l1.lookup(local)
        value = _MISS
        if entry is None:
            l1.misses += 1
        elif entry[TAGS] is not None and not self._tags.fresh(entry[TAGS], entry[ASOF]):
            l1.delete(local)
            l1.misses += 1
        else:
            entry[SEEN] = epoch
            entry[HITS] += 1
            value = entry[VALUE]
        if timed:
            self._l1_latency.record(perf_counter_ns() - start)
        return value

    def _l2_get(self, locals_: list[str]) -> dict[str, Any]:
        """Read ``locals_`` from L2 in one round trip; fill L1 with what it returns."""
        l2 = self._l2
        assert l2 is not None
        prefix = self._keys.entries
        rkeys = [prefix + local for local in locals_]
        generation = self._generation
        checked = not (l2.tracking and self._clock_known and l2.tracked_reads)
        if checked:
            sent = time()
            reply = l2.read(rkeys)
            blobs, server_now = reply if reply is not None else (None, 0.0)
            if reply is not None:
                self._observe_clock(server_now, sent, time())
        else:
            blobs = l2.get(rkeys)
        if blobs is None:
            self._l2_misses += len(locals_)
            return {}
        fill = self._l1 is not None and l2.tracking_ok()
        found: dict[str, Any] = {}
        broken: list[str] = []
        unsure: list[tuple[str, bytes, tuple[Any, ...]]] = []
        for local, blob in zip(locals_, blobs, strict=True):
            if blob is None:
                self._l2_misses += 1
                continue
            l2.bytes_read += len(blob)
            try:
                header = unpack(blob)
            except CodecError as exc:
                self._drop_undecodable(local, exc)
                broken.append(prefix + local)
                continue
            if header[3] and not checked:
                verdict = self._tags.verdict(header[3], header[1])
                if verdict is None:
                    unsure.append((local, blob, header))
                    continue
                if verdict is False:
                    self._drop_stale(local, broken)
                    continue
            self._accept(local, blob, header, fill, generation, found, broken)
        if unsure:
            # Tags this process has not seen yet: read their times once; the invalidation
            # stream keeps them current from then on.
            self._learn_tags(sorted({tag for _, _, header in unsure for tag in header[3]}))
            # Whatever arrived meanwhile may have replaced these values: _accept checks.
            for local, blob, header in unsure:
                verdict = self._tags.verdict(header[3], header[1])
                if verdict is True:
                    self._accept(local, blob, header, fill, generation, found, broken)
                elif verdict is False:
                    self._drop_stale(local, broken)
                else:  # the tag times could not be read: a miss, not a verdict
                    self._l2_misses += 1
        if broken:
            l2.unlink(broken)
        return found

    def _accept(
        self,
        local: str,
        blob: bytes,
        header: tuple[Any, ...],
        fill: bool,
        generation: int,
        found: dict[str, Any],
        broken: list[str],
    ) -> None:
        """Decode an entry read from L2 into ``found`` and, when ``fill``, into L1 (unless
        anything changed since ``generation``)."""
        compressed, asof, expires, tags, body = header
        try:
            if compressed:
                body = self._compressor.decompress(body)
            value = self._codec.decode(body)
        except CodecError as exc:
            self._drop_undecodable(local, exc)
            broken.append(self._keys.entries + local)
            return
        self._l2_hits += 1
        found[local] = value
        if not fill or not self._unchanged(local, generation):
            return
        epoch = self._tags.epoch
        if not tags or self._tags.fresh(tags, asof):
            l1 = self._l1
            assert l1 is not None
            # The L1 copy expires no later than the L2 entry it came from.
            lifetime = min((expires - self._now_late()) / 1e6, l1.ttl)
            if lifetime > 0:
                l1.put(
                    local,
                    value,
                    monotonic() + lifetime,
                    tags,
                    asof,
                    len(blob),
                    epoch,
                    check=lambda: self._unchanged(local, generation),
                )

    def _drop_stale(self, local: str, broken: list[str]) -> None:
        self._l2_misses += 1
        broken.append(self._keys.entries + local)

    def _drop_undecodable(self, local: str, exc: CodecError) -> None:
        # An entry this cache cannot read is a miss, and is removed for everyone.
        log.warning("dropping undecodable cache entry %r: %s", local, exc)
        self._decode_errors += 1
        self._l2_misses += 1

    # -- writes -----------------------------------------------------------------------------

    def set(
        self, key: str, value: Any, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Cache ``value`` under ``key`` for ``ttl`` seconds, tagged with ``tags``."""
        self._store({self._keys.local(key): value}, self._ttl(ttl, key), check_tags(tags))

    def set_many(
        self, mapping: Mapping[str, Any], ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Cache every item of ``mapping``; one Redis round trip per 500 items."""
        tags = check_tags(tags)
        ttl = self._ttl(ttl, "set_many")
        batch: dict[str, Any] = {}
        for key, value in mapping.items():
            batch[self._keys.local(key)] = value
            if len(batch) >= _BATCH:
                self._store(batch, ttl, tags)
                batch = {}
        if batch:
            self._store(batch, ttl, tags)

    def _store(
        self, values: dict[str, Any], ttl: float, tags: tuple[str, ...], age: float = 0.0
    ) -> None:
        """Write ``values``; ``age`` (s) is how old they were already: the load's duration."""
        encoded: list[tuple[str, Any, bytes, bool]] = []
        for local, value in values.items():
            try:
                body = self._codec.encode(value)
            except CodecError as exc:
                raise CodecError(f"cannot cache key {local!r}: {exc}") from None
            size = len(body)
            body, compressed = self._compressor.compress(body)
            # The size before compression counts: a reader must inflate it, and the
            # decompression guard stops at max_value_bytes.
            if size > self._max_value_bytes:
                log.warning(
                    "not caching key %r: %d bytes encoded, over max_value_bytes=%d",
                    local,
                    size,
                    self._max_value_bytes,
                )
                self._rejected += 1
                self._delete([local])
                continue
            encoded.append((local, value, body, compressed))
        if not encoded:
            return
        # Reads in flight that began before this write must not fill L1 after it.
        generation = self._touch([local for local, _, _, _ in encoded])
        sent = monotonic()
        stored = [True] * len(encoded)
        stamp = 0.0
        reached = False
        if self._l2 is not None:
            ttl_ms = max(1, int(ttl * 1000))
            items = [
                (self._keys.entry(local), pack(body, compressed, tags), ttl_ms)
                for local, _, body, compressed in encoded
            ]
            sent_wall = time()
            reply = self._l2.write(items, age)
            if reply is not None:
                reached = True
                server_now, stored = reply
                self._observe_clock(server_now, sent_wall, time())
                stamp = server_now - age * 1e6
                self._l2_sets += sum(stored)
        if not stamp:
            stamp = self._now() - age * 1e6
        l1 = self._l1
        if l1 is None:
            return
        # Another write or invalidation since ours began makes our value possibly older.
        # While Redis takes writes but the invalidation stream is down, L1 would not hear of
        # later writes elsewhere; while Redis is out, L1 is all there is (bounded by its ttl).
        epoch = self._tags.epoch
        fresh = (not reached or self._l2.tracking_ok()) and (  # type: ignore[union-attr]
            not tags or self._tags.fresh(tags, stamp)
        )
        lifetime = min(ttl, l1.ttl)
        for (local, value, body, _), ok in zip(encoded, stored, strict=True):
            if ok and fresh and self._unchanged(local, generation):
                l1.put(
                    local,
                    value,
                    sent + lifetime,
                    tags,
                    stamp,
                    len(body),
                    epoch,
                    check=lambda local=local: self._unchanged(local, generation),
                )
            else:
                l1.delete(local)

    def delete(self, key: str) -> None:
        """Remove ``key`` from both tiers."""
        self._delete([self._keys.local(key)])

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` from both tiers; one Redis round trip per 1000 keys."""
        self._delete([self._keys.local(key) for key in keys])

    def _delete(self, locals_: list[str]) -> None:
        self._touch(locals_)
        if self._l1 is not None:
            for local in locals_:
                self._l1.delete(local)
        if self._l2 is not None and locals_:
            self._l2.unlink([self._keys.entry(local) for local in locals_])

    def invalidate_tags(self, *tags: str) -> None:
        """Make every entry tagged with any of ``tags`` stale, in O(1) per tag."""
        tags = check_tags(tags)
        if not tags:
            return
        self._generation += 1
        self._tags.invalidate(tags, self._now())
        if self._l2 is not None:
            sent = time()
            at = self._l2.invalidate_tags(tags, int(self._max_ttl * 1000))
            if at is not None:
                self._observe_clock(at, sent, time())
                self._tags.invalidate(tags, at)

    def invalidate_pattern(self, pattern: str) -> int:
        """Delete entries whose key matches the Redis glob ``pattern`` (``*``, ``?``, ``[]``).

        L2 is walked with SCAN and UNLINK in batches, never KEYS. Returns how many entries
        were removed from L2 (or from L1 when there is no L2).
        """
        if not isinstance(pattern, str) or not pattern:
            raise CacheKeyError(f"pattern {pattern!r}: must be a non-empty str")
        self._touch_all()
        removed = 0
        if self._l1 is not None:
            match = glob_to_regex(pattern).fullmatch
            for local in self._l1.snapshot():
                if match(local) and self._l1.delete(local):
                    removed += 1
        if self._l2 is not None:
            removed = self._l2.unlink_matching(pattern) or 0
        return removed

    def clear(self) -> None:
        """Delete every entry of this cache's namespace and version, in both tiers."""
        self._touch_all()
        if self._l1 is not None:
            self._l1.clear()
        if self._l2 is not None:
            self._l2.unlink_matching("*")

    def warm(self, items: Any, ttl: float | None = None, tags: Iterable[str] = ()) -> int:
        """Load ``items`` (a mapping, or an iterable or async iterable of pairs); return count."""
        if isinstance(items, Mapping):
            items = items.items()
        batch: dict[str, Any] = {}
        count = 0
        if hasattr(items, "__iter__"):
            for key, value in items:
                batch[key] = value
                if len(batch) >= _BATCH:
                    count += self._warm_batch(batch, ttl, tags)
        else:
            for key, value in items:
                batch[key] = value
                if len(batch) >= _BATCH:
                    count += self._warm_batch(batch, ttl, tags)
        return count + self._warm_batch(batch, ttl, tags)

    def _warm_batch(
        self, batch: dict[str, Any], ttl: float | None, tags: Iterable[str]
    ) -> int:
        count = len(batch)
        if count:
            self.set_many(batch, ttl=ttl, tags=tags)
            batch.clear()
        return count

    # -- decorator --------------------------------------------------------------------------

    def cached(
        self,
        ttl: float | Callable[..., Any] | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] = (),
        key: str | Callable[..., str] | None = None,
    ) -> Any:
        """Cache a function's results; ``key`` and ``tags`` may be ``"{arg}"`` templates.

        The decorated function gains ``key_for(*args, **kwargs)`` and
        ``invalidate(*args, **kwargs)``.
        """
        if callable(ttl):
            return self.cached()(ttl)

        def decorate(fn: Callable[..., Any]) -> Any:
            if not is_native(fn):
                raise TypeError(
                    f"{type(self).__name__}.cached cannot wrap {fn.__qualname__}: "
                    "use Cache for async functions and SyncCache for plain ones"
                )
            build = CallKey(fn, key, tags)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                call_key, call_tags = build(args, kwargs)
                return self.get_or_set(
                    call_key, lambda: fn(*args, **kwargs), ttl=ttl, tags=call_tags
                )

            def invalidate(*args: Any, **kwargs: Any) -> None:
                self.delete(build(args, kwargs)[0])

            wrapper.key_for = lambda *args, **kwargs: build(args, kwargs)[0]  # type: ignore[attr-defined]
            wrapper.invalidate = invalidate  # type: ignore[attr-defined]
            return wrapper

        return decorate

    # -- invalidation stream (called by the backend's listener) -----------------------------

    def on_tracking_start(self) -> None:
        self._touch_all()
        self._tags.forget()
        # Messages may have been missed: followers look again.
        for local in list(self._peers):
            self._wake(local)
        if self._l1 is not None:
            self._l1.clear()

    def on_invalidate(self, rkeys: list[bytes] | None) -> None:
        if rkeys is None:  # FLUSHDB / FLUSHALL
            self._touch_all()
            if self._l1 is not None:
                self._l1.clear()
            return
        entries, tags_prefix = self._keys.entries, self._keys.tags
        changed: list[str] = []
        for raw in rkeys:
            rkey = raw.decode()
            if rkey.startswith(entries):
                local = rkey[len(entries) :]
                self._wake(local)
                self._touch((local,))
                if self._l1 is not None:
                    self._l1.delete(local)
            elif rkey.startswith(self._keys.locks):
                self._wake(rkey[len(self._keys.locks) :])
            elif rkey.startswith(tags_prefix):
                self._generation += 1
                tag = rkey[len(tags_prefix) :]
                self._tags.unknown(tag)
                changed.append(tag)
        if changed:
            self._learn_tags(changed)
        self._sweep_tags()

    def _sweep_tags(self) -> None:
        # Times older than twice L1's longest lifetime can no longer make an entry stale.
        horizon = 2 * self._l1.ttl if self._l1 is not None else 0.0
        self._tags.sweep(self._now() - horizon * 1e6)

    def _wake(self, local: str) -> None:
        waiter = self._peers.pop(local, None)
        if waiter is not None:
            waiter.resolve(None)

    def on_idle(self) -> None:
        unknown = self._tags.unknown_tags()
        if unknown:
            self._learn_tags(unknown)
        self._sweep_tags()

    def _learn_tags(self, tags: list[str]) -> None:
        assert self._l2 is not None
        since = self._tags.epoch
        times = self._l2.tag_times(tags)
        if times is not None:
            for tag, at in zip(tags, times, strict=True):
                self._tags.learn(tag, at, since)

    # -- helpers ----------------------------------------------------------------------------

    def _ttl(self, ttl: float | None, key: str) -> float:
        if ttl is None:
            return self._default_ttl
        if (
            not isinstance(ttl, (int, float))
            or isinstance(ttl, bool)
            or not 0 < ttl <= self._max_ttl
        ):
            raise ValueError(
                f"ttl={ttl!r} for key {key!r}: must be > 0 and <= max_ttl={self._max_ttl}"
            )
        return float(ttl)

    def _observe_clock(self, server_us: float, sent: float, received: float) -> None:
        """Learn the server's clock from a time it reported between ``sent`` and ``received``."""
        self._offset_low = server_us - received * 1e6
        self._offset_high = server_us - sent * 1e6
        self._clock_known = True

    def _now_late(self) -> float:
        """A server time (µs) no earlier than now."""
        return time() * 1e6 + self._offset_high

    def _now(self) -> float:
        """Server-clock µs as best known here; strictly increasing within this cache."""
        now = max(time() * 1e6 + self._offset_low, self._last_stamp + 1.0)
        self._last_stamp = now
        return now

    def stats(self) -> dict[str, Any]:
        """Counters and latency percentiles per tier, loads, breaker state and hit ratio."""
        l1 = self._l1
        l1_hits = l1.hits if l1 is not None else 0
        l1_misses = l1.misses if l1 is not None else 0
        hits = l1_hits + self._l2_hits
        gets = hits + (self._l2_misses if self._l2 is not None else l1_misses)
        result: dict[str, Any] = {
            "hit_ratio": hits / gets if gets else math.nan,
            "gets": gets,
            "hits": hits,
            "misses": gets - hits,
            "loads": self._loads,
            "load_errors": self._load_errors,
            "load_latency": self._load_latency.summary(),
            "decode_errors": self._decode_errors,
            "rejected": self._rejected,
            "l1": None,
            "l2": None,
        }
        if l1 is not None:
            result["l1"] = {
                "hits": l1_hits,
                "misses": l1_misses,
                "sets": l1.sets,
                "evictions": l1.evictions,
                "expirations": l1.expirations,
                "entries": len(l1),
                "bytes": l1.bytes,
                "max_entries": l1.max_entries,
                "max_bytes": l1.max_bytes,
                "latency": self._l1_latency.summary(),
            }
        if self._l2 is not None:
            result["l2"] = {
                "hits": self._l2_hits,
                "misses": self._l2_misses,
                "sets": self._l2_sets,
                **self._l2.summary(),
            }
        return result

    def close(self) -> None:
        """Stop the invalidation listener and close Redis connections."""
        if self._l2 is not None:
            self._l2.close()

    def __enter__(self) -> SyncCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
