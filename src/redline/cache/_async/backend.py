"""Redis tier operations: timeouts, circuit breaker, replay after outages, invalidation tracking.

Every public method returns None (or False) instead of raising when Redis is unreachable,
slow or the breaker is open; callers then serve from L1 or the loader. Writes that could not
reach Redis (deletes, tag invalidations, pattern deletes, and sets, which turn into deletes)
are kept and replayed before the next operation once Redis answers, so an outage never
leaves L2 holding a value that the application already replaced or invalidated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from redline.cache import _scripts
from redline.cache._async_io import (
    Deadlines,
    Slots,
    Worker,
    connect,
    current_loop,
    interrupt,
    load_redis,
    read_message,
    sleep,
)
from redline.cache._breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from redline.cache._keys import KeySpace, escape_glob
from redline.cache._redis_tier import RedisTier
from redline.cache._stats import Latency

log = logging.getLogger("redline.cache")

_SCAN_COUNT = 1000
_UNLINK_BATCH = 1000


class AsyncRedisBackend:
    """The L2 side of one cache."""

    def __init__(self, tier: RedisTier, keys: KeySpace, sink: Any) -> None:
        redis = load_redis()
        self.tier = tier
        self.keys = keys
        self.breaker = Breaker(tier.breaker_threshold, tier.breaker_duration)
        self.latency = Latency()
        self.errors = 0
        self.skipped = 0
        self.bytes_read = 0  # counted by the cache, which looks at every blob anyway
        self.bytes_written = 0
        self.tracking = False
        self.tracked_reads = tier.consistency == "tracked"
        self._sink = sink
        self._pending: list[tuple[str, Any]] = []
        self._overflow = False
        self._closing = False
        self._listener: Worker | None = None
        self._listen_conn: Any = None
        errors = redis.exceptions
        no_retry = redis.Retry(redis.NoBackoff(), 0)
        # Connections are driven directly (send, read) rather than through redis-py's client
        # and pool layers, whose locks, retries and hooks cost more CPU than the rest of a
        # cache read. Slots bounds the operations in flight, so at most pool_size
        # connections exist, and makes callers wait for a slot instead of failing.
        self._replaying = False
        self._loop: Any = None
        self._bind(current_loop())
        self._pool = redis.ConnectionPool.from_url(
            tier.url, retry=no_retry, **tier.pool_kwargs(socket_timeout=redis.socket_timeouts)
        )
        try:
            # Builds a connection object without connecting, so that a misspelt option
            # fails here, at construction, instead of on first use.
            self._pool.connection_class(**self._pool.connection_kwargs)
        except TypeError as exc:
            raise TypeError(
                f"RedisTier options {sorted(tier.options)}: not accepted by redis-py ({exc})"
            ) from None
        self._listen_kwargs = {
            **self._pool.connection_kwargs,
            "socket_timeout": max(tier.timeout, tier.connect_timeout),
        }
        self._outage_errors = (errors.ConnectionError, errors.TimeoutError, OSError, TimeoutError)
        self._errors = (errors.RedisError, OSError, TimeoutError)
        self._noscript = errors.NoScriptError
        self._error_reply = errors.ResponseError
        self._broken = (errors.ConnectionError, ConnectionError)

    def _bind(self, loop: Any) -> None:
        """Start afresh on ``loop``: connections, slots and tasks belong to the loop they
        were made on (a second ``asyncio.run`` in a script or a Celery task)."""
        self._loop = loop
        self._idle: list[Any] = []
        self._slots = Slots(self.tier.pool_size)
        self._deadlines = Deadlines(self.tier.timeout)
        self._listener = None
        self.tracking = False

    # -- the guarded call -------------------------------------------------------------------

    async def _run(self, op: Callable[..., Any], *args: Any) -> Any:
        if self._loop is not current_loop():
            self._bind(current_loop())
        breaker = self.breaker
        state = CLOSED if breaker.state == CLOSED else breaker.acquire()
        if state == OPEN or self._replaying:
            self.skipped += 1
            return None
        if self._listener is None and self.tier.tracking and not self._closing:
            self._listener = Worker(self._listen, name="redline-cache-tracking")
        start = perf_counter_ns()
        try:
            if not self._slots.take():
                await self._slots.wait(self.tier.pool_timeout)
            try:
                if self._pending or self._overflow:
                    await self._replay()
                result = await op(*args)
            finally:
                self._slots.release()
        except self._errors as exc:
            self.errors += 1
            if isinstance(exc, self._outage_errors):
                was = self.breaker.state
                self.breaker.failure()
                if was != OPEN and self.breaker.state == OPEN:
                    log.warning(
                        "redis %s unreachable (%s: %s); L2 off for %.1fs, serving L1 and loaders",
                        self.tier.url.split("@")[-1],
                        type(exc).__name__,
                        exc,
                        self.breaker.duration,
                    )
            else:
                # Redis answered, so it is reachable: a probe must not leave the breaker open.
                self.breaker.success()
                log.warning("redis command failed: %s: %s", type(exc).__name__, exc)
            return None
        if state == HALF_OPEN:
            log.warning("redis %s answers again; L2 back on", self.tier.url.split("@")[-1])
        if breaker.failures or breaker.state != CLOSED:
            breaker.success()
        self.latency.record(perf_counter_ns() - start)
        return result

    async def _script(self, script: _scripts.Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._command("EVALSHA", script.sha, len(keys), *keys, *args)
        except self._noscript:
            return await self._command("EVAL", script.source, len(keys), *keys, *args)

    async def _command(self, *args: Any) -> Any:
        """One Redis command, failing with TimeoutError after ``tier.timeout`` seconds.

        Only called inside a slot, so an idle connection or room for a new one exists.
        """
        try:
            idle = self._idle.pop()
        except IndexError:  # none left (threads may race for the last one)
            idle = None
        if idle is not None:
            try:
                return await self._deadlines.run(self._exchange, idle, args)
            except self._broken:
                # Likely closed while idle (Redis restarted, a proxy timed it out): so are
                # its idle siblings. A fresh connection tells a dead server from a dead socket.
                idle, self._idle = self._idle, []
                for conn in idle:
                    await conn.disconnect()
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        # Connecting gets connect_timeout, then each handshake reply and the command itself
        # get timeout, like any command.
        await connect(conn, self.tier.timeout)
        return await self._deadlines.run(self._exchange, conn, args)

    async def _exchange(self, conn: Any, args: tuple[Any, ...]) -> Any:
        try:
            await conn.send_command(*args)
            reply = await conn.read_response()
        except self._error_reply:
            self._idle.append(conn)  # an error reply leaves the connection in step
            raise
        except BaseException:
            # The reply may still be on its way: this connection is out of step for good.
            await conn.disconnect()
            raise
        self._idle.append(conn)
        return reply

    # -- operations -------------------------------------------------------------------------

    async def get(self, rkeys: list[str]) -> list[bytes | None] | None:
        """Return the raw entries (None where missing), or None when Redis is unavailable."""
        return await self._run(self._command, "MGET", *rkeys)

    async def read(self, rkeys: list[str]) -> tuple[list[bytes | None], float] | None:
        """Like :meth:`get`, with tags checked in Redis; also return the server time (µs)."""
        reply = await self._run(self._script, _scripts.READ, rkeys, [self.keys.tags])
        if reply is None:
            return None
        return reply[:-1], float(reply[-1])

    async def write(
        self, items: list[tuple[str, bytes, int]], age: float
    ) -> tuple[float, list[bool]] | None:
        """Store (rkey, blob, ttl ms) items read ``age`` s ago from their source.

        Returns (server time µs, stored flags), or None when Redis is unavailable.
        """
        args: list[Any] = [self.keys.tags, int(age * 1e6)]
        for _, blob, ttl_ms in items:
            args.append(ttl_ms)
            args.append(blob)
        reply = await self._run(self._script, _scripts.WRITE, [rkey for rkey, _, _ in items], args)
        if reply is None:
            # Whatever L2 holds for these keys is now older than what the caller wrote.
            self._defer("unlink", [rkey for rkey, _, _ in items])
            return None
        self.bytes_written += sum(len(blob) for _, blob, _ in items)
        return float(reply[0]), [bool(flag) for flag in reply[1:]]

    async def unlink(self, rkeys: list[str]) -> bool:
        done = await self._run(self._unlink, rkeys)
        if done is None:
            self._defer("unlink", rkeys)
            return False
        return True

    async def _unlink(self, rkeys: list[str]) -> int:
        removed = 0
        for i in range(0, len(rkeys), _UNLINK_BATCH):
            removed += await self._command("UNLINK", *rkeys[i : i + _UNLINK_BATCH])
        return removed

    async def invalidate_tags(self, tags: tuple[str, ...], ttl_ms: int) -> float | None:
        """Set the clocks of ``tags`` to the server time; return it, or None."""
        tag_keys = [self.keys.tag(tag) for tag in tags]
        at = await self._run(self._script, _scripts.INVALIDATE, tag_keys, [ttl_ms])
        if at is None:
            self._defer("tags", (tags, ttl_ms))
            return None
        return float(at)

    async def tag_times(self, tags: list[str]) -> list[float | None] | None:
        raw = await self._run(self._command, "MGET", *[self.keys.tag(tag) for tag in tags])
        if raw is None:
            return None
        return [None if value is None else float(value) for value in raw]

    async def lock(self, rkey: str, token: str, lease_ms: int) -> bool | None:
        """Take a load lock: True (taken), False (held by another), None (Redis unavailable)."""
        return await self._run(self._set_nx, rkey, token, lease_ms)

    async def _set_nx(self, rkey: str, token: str, lease_ms: int) -> bool:
        return await self._command("SET", rkey, token, "NX", "PX", lease_ms) is not None

    async def unlock(self, rkey: str, token: str) -> None:
        # A lock that cannot be released expires with its lease.
        await self._run(self._script, _scripts.UNLOCK, [rkey], [token])

    async def unlink_matching(self, pattern: str) -> int | None:
        """UNLINK entries whose L1 key matches the Redis glob ``pattern``, by SCAN batches."""
        match = escape_glob(self.keys.entries) + pattern
        removed = await self._run(self._scan_unlink, match)
        if removed is None:
            self._defer("match", pattern)
        return removed

    async def _scan_unlink(self, match: str) -> int:
        removed = 0
        cursor = 0
        while True:
            cursor, found = await self._command(
                "SCAN", cursor, "MATCH", match, "COUNT", _SCAN_COUNT
            )
            cursor = int(cursor)
            if found:
                removed += await self._command("UNLINK", *found)
            if not cursor:
                return removed

    # -- replay after an outage -------------------------------------------------------------

    def _defer(self, kind: str, arg: Any) -> None:
        if self._overflow:
            return
        if len(self._pending) >= self.tier.max_pending:
            log.warning(
                "more than %d writes missed Redis; every entry of %s will be deleted on recovery",
                self.tier.max_pending,
                self.keys.prefix,
            )
            self._overflow = True
            self._pending.clear()
            return
        self._pending.append((kind, arg))

    async def _replay(self) -> None:
        pending, self._pending = self._pending, []
        overflow, self._overflow = self._overflow, False
        # Until the replay is through, Redis may still hold what it is deleting: other
        # operations treat L2 as unavailable (and defer their writes) meanwhile.
        self._replaying = True
        try:
            if overflow:
                await self._scan_unlink(escape_glob(self.keys.entries) + "*")
                return
            unlinks = [rkey for kind, arg in pending if kind == "unlink" for rkey in arg]
            if unlinks:
                await self._unlink(unlinks)
            for kind, arg in pending:
                if kind == "tags":
                    tags, ttl_ms = arg
                    keys = [self.keys.tag(tag) for tag in tags]
                    await self._script(_scripts.INVALIDATE, keys, [ttl_ms])
                elif kind == "match":
                    await self._scan_unlink(escape_glob(self.keys.entries) + arg)
        except BaseException:
            self._pending[:0] = pending
            self._overflow = self._overflow or overflow
            raise
        finally:
            self._replaying = False
        log.info("replayed %d writes that missed Redis during the outage", len(pending))

    # -- invalidation tracking --------------------------------------------------------------

    async def _listen(self) -> None:
        """Keep one connection subscribed to Redis invalidations for this cache's prefix."""
        delay = 0.05
        refused = ""
        while not self._closing:
            conn = self._pool.connection_class(**self._listen_kwargs)
            self._listen_conn = conn
            try:
                await conn.connect()
                await conn.send_command("CLIENT", "ID")
                client_id = await conn.read_response()
                await conn.send_command(
                    "CLIENT",
                    "TRACKING",
                    "ON",
                    "REDIRECT",
                    client_id,
                    "BCAST",
                    "PREFIX",
                    self.keys.prefix,
                )
                await conn.read_response()
                await conn.send_command("SUBSCRIBE", "__redis__:invalidate")
                await conn.read_response()
                # Invalidations may have been missed while not subscribed.
                self._sink.on_tracking_start()
                self.tracking = True
                delay = 0.05
                while not self._closing:
                    message = await read_message(conn, 0.5)
                    if message is None:
                        await self._sink.on_idle()
                    elif message[0] == b"message":
                        await self._sink.on_invalidate(message[2])
            except self._errors as exc:
                if self.tracking and not self._closing:
                    log.warning(
                        "redis invalidation stream lost (%s); L1 is cleared on reconnect", exc
                    )
                elif not isinstance(exc, self._outage_errors) and str(exc) != refused:
                    # Redis said no (e.g. an ACL user without "&*" may not SUBSCRIBE): retries
                    # will not help until it is reconfigured, and L1 is bypassed meanwhile.
                    refused = str(exc)
                    log.warning(
                        "redis refused the invalidation listener (%s: %s); values read from "
                        "Redis are not kept in L1 until it is allowed",
                        type(exc).__name__,
                        exc,
                    )
            except Exception:
                log.exception("redis invalidation listener failed; reconnecting")
            finally:
                self.tracking = False
                await conn.disconnect()
            await sleep(delay)
            delay = min(delay * 2, 1.0)

    def tracking_ok(self) -> bool:
        """True when L1 may keep values read from L2: invalidations are being received."""
        return self.tracking or not self.tier.tracking

    # -- lifecycle --------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "skipped": self.skipped,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "latency": self.latency.summary(),
            "breaker": {
                "state": self.breaker.state,
                "opened": self.breaker.opened,
                "consecutive_failures": self.breaker.failures,
            },
            "tracking": self.tracking,
            "pending_writes": len(self._pending),
        }

    async def aclose(self) -> None:
        self._closing = True
        if self._listener is not None:
            # Wake a listener blocked in its idle read rather than wait for the read to end.
            interrupt(self._listen_conn)
            await self._listener.stop()
            self._listener = None
        await self._deadlines.close()
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()
        await self._pool.disconnect()
