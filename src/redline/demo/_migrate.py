"""Run the demo's Alembic migrations from Python, with nothing but a DSN.

Users of the demo (and ``redline demo``) never see an ``alembic.ini``: the script location is
this package's ``migrations`` folder and the connection is opened here, on psycopg, and lent
to ``migrations/env.py``. The revision ids are words, so a runner can step through them:

======================  =========================================================
``"baseline"``          tables, primary and foreign keys, constraints; no index
``"indexes"``           composite, partial and trigram indexes, built CONCURRENTLY
``"dashboard_view"``    the dashboard's materialized view and its unique index
======================  =========================================================

The functions are synchronous (Alembic's command API is); from async code call them through
``asyncio.to_thread``. Upgrading to the ``"indexes"`` revision on a live database does not
block the application's writes.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from redline.demo._dsn import psycopg_url
from redline.demo._errors import DemoConfigError

BASELINE = "baseline"
INDEXES = "indexes"
DASHBOARD_VIEW = "dashboard_view"
REVISIONS = (BASELINE, INDEXES, DASHBOARD_VIEW)
"""Every revision, oldest first; ``"head"`` is the last."""

VERSION_TABLE = "redline_demo_version"
_SCRIPTS = Path(__file__).with_name("migrations")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def _check(revision: str, *, allow: tuple[str, ...]) -> str:
    if revision not in (*REVISIONS, *allow):
        choices = ", ".join(repr(r) for r in (*REVISIONS, *allow))
        raise DemoConfigError(f"revision {revision!r} is unknown; choose one of {choices}")
    return revision


def _run(dsn: str, action: str, revision: str) -> None:
    engine = create_engine(psycopg_url(dsn), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            config = _config()
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
            connection.commit()
    finally:
        engine.dispose()


def upgrade(dsn: str, revision: str = "head") -> None:
    """Migrate the database at ``dsn`` up to ``revision`` (default: the newest)."""
    _run(dsn, "upgrade", _check(revision, allow=("head",)))


def downgrade(dsn: str, revision: str = "base") -> None:
    """Migrate the database at ``dsn`` down to ``revision``; ``"base"`` drops every table."""
    _run(dsn, "downgrade", _check(revision, allow=("base",)))


def current_revision(dsn: str) -> str | None:
    """The revision the database at ``dsn`` is at, or None if it was never migrated."""
    engine = create_engine(psycopg_url(dsn), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None
            row = connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").first()
            return row[0] if row else None
    finally:
        engine.dispose()


def revision_at_least(current: str | None, wanted: str) -> bool:
    """Whether a database at revision ``current`` has everything revision ``wanted`` adds."""
    if current is None:
        return False
    return REVISIONS.index(current) >= REVISIONS.index(wanted)
