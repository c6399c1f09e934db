"""Configuration of the Redis tier (L2), shared by Cache and SyncCache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RedisTier:
    """Where and how to reach Redis; each cache opens its own pool from this.

    ``timeout`` bounds every Redis operation (seconds); a failure opens the circuit breaker
    for ``breaker_duration`` seconds after ``breaker_threshold`` consecutive failures. The
    pool holds at most ``pool_size`` connections and a caller waits up to ``pool_timeout``
    for one instead of failing. ``tracking`` subscribes to Redis invalidation messages
    (``CLIENT TRACKING ... BCAST``) so that L1 drops entries changed by other processes.
    ``max_pending`` bounds the deletes and invalidations kept while Redis is unreachable
    and replayed when it is back. ``consistency="tracked"`` reads entries with a plain
    ``MGET`` and checks their tags against the tag times this process tracks through the
    invalidation stream; ``"strict"`` checks them inside Redis with a script on every read
    (one round trip either way; strict costs more Redis CPU and sees another process's
    invalidation even before its message arrives).
    """

    url: str = "redis://127.0.0.1:6379/0"
    timeout: float = 0.05
    connect_timeout: float = 0.25
    pool_size: int = 100
    pool_timeout: float = 1.0
    breaker_threshold: int = 1
    breaker_duration: float = 1.0
    tracking: bool = True
    max_pending: int = 10_000
    consistency: str = "tracked"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"RedisTier url={self.url!r}: must start with redis://, rediss:// or unix://"
            )
        for name in ("timeout", "connect_timeout", "pool_timeout", "breaker_duration"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RedisTier {name}={getattr(self, name)}: must be > 0 seconds")
        if self.consistency not in ("tracked", "strict"):
            raise ValueError(
                f"RedisTier consistency={self.consistency!r}: must be 'tracked' or 'strict'"
            )
        for name in ("pool_size", "breaker_threshold", "max_pending"):
            if getattr(self, name) < 1:
                raise ValueError(f"RedisTier {name}={getattr(self, name)}: must be >= 1")

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> RedisTier:
        """Build a tier from a ``redis://`` / ``rediss://`` URL (user, password, db, TLS).

        Settings that are fields of this class set them; any other keyword (for example
        ``ssl_ca_certs`` or ``ssl_certfile``) is passed to redis-py's connection pool.
        """
        names = set(cls.__dataclass_fields__) - {"url", "options"}
        own = {k: v for k, v in settings.items() if k in names}
        extra = {k: v for k, v in settings.items() if k not in names}
        return cls(url=url, options=extra, **own)

    def pool_kwargs(self, socket_timeout: bool) -> dict[str, Any]:
        """redis-py pool options; without ``socket_timeout`` the caller bounds each command."""
        return {
            "max_connections": self.pool_size,
            "socket_timeout": self.timeout if socket_timeout else None,
            "socket_connect_timeout": self.connect_timeout,
            "protocol": 2,
            "retry_on_timeout": False,
            **self.options,
        }
