"""Migrations of redline.demo: every revision up and down, against a real PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from redline._servers import PostgresServer
from redline.demo import (
    BASELINE,
    DASHBOARD_VIEW,
    INDEXES,
    REVISIONS,
    DemoConfigError,
    current_revision,
    downgrade,
    upgrade,
)
from redline.demo._migrate import _config
from redline.demo.models import Base

INDEX_NAMES = {
    "capital_calls_fund_status_due_idx",
    "capital_calls_due_id_idx",
    "capital_calls_open_due_idx",
    "capital_calls_investor_idx",
    "payments_capital_call_idx",
    "commitments_investor_idx",
    "sessions_user_idx",
    "users_investor_idx",
    "workflow_executions_history_idx",
    "workflow_executions_active_idx",
    "workflow_retries_pending_idx",
    "workflow_retries_execution_idx",
    "investors_name_trgm_idx",
    "funds_name_trgm_idx",
}
TABLES = {
    "users",
    "sessions",
    "funds",
    "investors",
    "commitments",
    "capital_calls",
    "payments",
    "workflows",
    "workflow_executions",
    "workflow_retries",
}


def _database(pg_server: PostgresServer, pg_url: str) -> str:
    return pg_url.rsplit("/", 1)[1]


def _lines(pg_server: PostgresServer, pg_url: str, sql: str) -> set[str]:
    out = pg_server.psql(sql, database=_database(pg_server, pg_url))
    return set(out.splitlines()) if out else set()


def _indexes(pg_server: PostgresServer, pg_url: str) -> set[str]:
    return _lines(pg_server, pg_url, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")


def _tables(pg_server: PostgresServer, pg_url: str) -> set[str]:
    return _lines(pg_server, pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")


def _matviews(pg_server: PostgresServer, pg_url: str) -> set[str]:
    return _lines(
        pg_server, pg_url, "SELECT matviewname FROM pg_matviews WHERE schemaname = 'public'"
    )


def test_the_revision_list_matches_the_migration_scripts():
    script = ScriptDirectory.from_config(_config())
    chain = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert tuple(chain) == REVISIONS == (BASELINE, INDEXES, DASHBOARD_VIEW)


def test_each_revision_creates_its_objects_and_its_downgrade_removes_them(pg_server, pg_url):
    assert current_revision(pg_url) is None

    upgrade(pg_url, BASELINE)
    assert current_revision(pg_url) == BASELINE
    assert _tables(pg_server, pg_url) >= TABLES
    baseline_indexes = _indexes(pg_server, pg_url)
    assert not baseline_indexes & INDEX_NAMES

    upgrade(pg_url, INDEXES)
    assert current_revision(pg_url) == INDEXES
    assert _indexes(pg_server, pg_url) >= INDEX_NAMES
    valid = _lines(
        pg_server,
        pg_url,
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indisvalid",
    )
    assert valid >= INDEX_NAMES
    assert not _matviews(pg_server, pg_url)

    upgrade(pg_url, DASHBOARD_VIEW)
    assert current_revision(pg_url) == DASHBOARD_VIEW
    assert _matviews(pg_server, pg_url) == {"dashboard_monthly"}
    unique = _lines(
        pg_server,
        pg_url,
        "SELECT indexname FROM pg_indexes WHERE tablename = 'dashboard_monthly' "
        "AND indexdef LIKE 'CREATE UNIQUE INDEX%(fund_id, status, month)'",
    )
    assert unique == {"dashboard_monthly_key"}

    downgrade(pg_url, INDEXES)
    assert current_revision(pg_url) == INDEXES
    assert not _matviews(pg_server, pg_url)
    assert _indexes(pg_server, pg_url) >= INDEX_NAMES

    downgrade(pg_url, BASELINE)
    assert current_revision(pg_url) == BASELINE
    assert _indexes(pg_server, pg_url) == baseline_indexes

    downgrade(pg_url)
    assert current_revision(pg_url) is None
    assert not TABLES & _tables(pg_server, pg_url)


def test_the_baseline_has_only_primary_keys_and_unique_constraints(pg_server, pg_url):
    upgrade(pg_url, BASELINE)
    secondary = _lines(
        pg_server,
        pg_url,
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND NOT i.indisprimary AND NOT i.indisunique",
    )
    assert secondary == set()


def test_the_models_describe_the_baseline_schema(pg_url):
    upgrade(pg_url, BASELINE)
    engine = create_engine(
        pg_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool
    )
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": False}
            )
            diff = [
                change
                for change in compare_metadata(context, Base.metadata)
                # The version table is Alembic's, not the app's.
                if not (change[0] == "remove_table" and change[1].name == "redline_demo_version")
            ]
    finally:
        engine.dispose()
    assert diff == []


def test_an_invalid_index_left_by_a_failed_concurrent_build_is_rebuilt(pg_server, pg_url):
    upgrade(pg_url, BASELINE)
    database = _database(pg_server, pg_url)
    # What a cancelled CREATE INDEX CONCURRENTLY leaves behind: the name taken, the index unused.
    pg_server.psql(
        "CREATE INDEX capital_calls_investor_idx ON capital_calls (investor_id);"
        "UPDATE pg_index SET indisvalid = false "
        "WHERE indexrelid = 'capital_calls_investor_idx'::regclass",
        database=database,
    )
    upgrade(pg_url, INDEXES)
    valid = pg_server.psql(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'capital_calls_investor_idx'::regclass",
        database=database,
    )
    assert valid == "t"


@pytest.mark.parametrize("action", [upgrade, downgrade])
def test_an_unknown_revision_is_refused_with_the_choices(pg_url, action):
    with pytest.raises(DemoConfigError, match=r"revision 'indices' is unknown.*'indexes'"):
        action(pg_url, "indices")


def test_a_dsn_that_is_not_postgresql_is_refused():
    with pytest.raises(DemoConfigError, match="mysql"):
        upgrade("mysql://localhost/app")
