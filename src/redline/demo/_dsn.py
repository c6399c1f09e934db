"""One DSN in, the three spellings the demo's drivers want out.

Users pass whatever their platform gives them (``postgres://``, ``postgresql://``, or an
SQLAlchemy URL with a driver). The app runs on asyncpg through SQLAlchemy, the seed loader
talks to asyncpg directly (for COPY), and Alembic runs synchronously on psycopg, since its
command API is synchronous and concurrent index builds need plain autocommit connections.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from redline.demo._errors import DemoConfigError

_SCHEMES = ("postgres", "postgresql")


def _split(dsn: str) -> tuple[str, str]:
    if not isinstance(dsn, str) or "://" not in dsn:
        raise DemoConfigError(
            f"dsn {dsn!r} is not a PostgreSQL URL; give postgresql://user@host:port/database"
        )
    scheme, rest = dsn.split("://", 1)
    base = scheme.split("+", 1)[0].lower()
    if base not in _SCHEMES:
        raise DemoConfigError(
            f"dsn scheme {scheme!r} is not PostgreSQL; give postgresql://user@host:port/database"
        )
    if not urlsplit(dsn).path.strip("/"):
        raise DemoConfigError(f"dsn {redact(dsn)!r} names no database; add /DATABASE to it")
    return base, rest


def plain_dsn(dsn: str) -> str:
    """``postgresql://...``, as libpq and asyncpg.connect() take it."""
    return "postgresql://" + _split(dsn)[1]


def asyncpg_url(dsn: str) -> str:
    """``postgresql+asyncpg://...``, for SQLAlchemy's async engine."""
    return "postgresql+asyncpg://" + _split(dsn)[1]


def psycopg_url(dsn: str) -> str:
    """``postgresql+psycopg://...``, for Alembic's synchronous engine."""
    return "postgresql+psycopg://" + _split(dsn)[1]


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
