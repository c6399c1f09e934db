"""Secondary indexes, built CONCURRENTLY so a running application keeps writing.

Each index serves a query of the application (``redline.demo``):

- composite ``capital_calls (fund_id, status, due_date)``: the call list filtered by fund and
  status, sorted by due date, and the fund detail's totals per status;
- composite ``capital_calls (due_date, id)``: the unfiltered call list, in its sort order;
- partial ``capital_calls (due_date) WHERE status IN ('issued', 'overdue')``: the hot path
  of open calls (what is due, what is late), a small fraction of the table;
- ``capital_calls (investor_id)``, ``payments (capital_call_id)``, ``commitments
  (investor_id)``, ``sessions (user_id)``, ``users (investor_id)``: foreign keys that are joined
  or filtered on, which PostgreSQL does not index by itself;
- composite ``workflow_executions (workflow_id, queued_at DESC, id DESC)``: execution history
  per workflow, newest first;
- partial ``workflow_executions (queued_at) WHERE status IN ('queued', 'running')``: active runs;
- partial ``workflow_retries (next_attempt_at) WHERE status = 'pending'``: the retry queue;
- GIN ``pg_trgm`` on ``investors (name)`` and ``funds (name)``: ``ILIKE '%text%'`` search,
  which no B-tree can serve. Where the server lacks the extension (the contrib package is not
  installed, as with the PostgreSQL wheel ``redline demo`` falls back to), B-tree indexes on
  ``lower(name)`` take their place: they serve prefix searches only, and the migration says so
  in a warning.

``CREATE INDEX CONCURRENTLY`` cannot run in a transaction, so each runs in an autocommit
block. A concurrent build that fails (a deadlock, a cancelled statement) leaves an INVALID
index behind, which ``IF NOT EXISTS`` would then skip forever; each build therefore first
drops an invalid index of the same name. The ``pg_trgm`` extension is created if missing and
not dropped on downgrade: it is database-wide, other objects may use it, and dropping it needs
rights the application's role should not hold.

Revision ID: indexes
Revises: baseline
"""

import logging

from alembic import op

revision = "indexes"
down_revision = "baseline"
branch_labels = None
depends_on = None

INDEXES: dict[str, str] = {
    "capital_calls_fund_status_due_idx": "capital_calls (fund_id, status, due_date)",
    "capital_calls_due_id_idx": "capital_calls (due_date, id)",
    "capital_calls_open_due_idx": (
        "capital_calls (due_date) WHERE status IN ('issued', 'overdue')"
    ),
    "capital_calls_investor_idx": "capital_calls (investor_id)",
    "payments_capital_call_idx": "payments (capital_call_id)",
    "commitments_investor_idx": "commitments (investor_id)",
    "sessions_user_idx": "sessions (user_id)",
    "users_investor_idx": "users (investor_id)",
    "workflow_executions_history_idx": (
        "workflow_executions (workflow_id, queued_at DESC, id DESC)"
    ),
    "workflow_executions_active_idx": (
        "workflow_executions (queued_at) WHERE status IN ('queued', 'running')"
    ),
    "workflow_retries_pending_idx": ("workflow_retries (next_attempt_at) WHERE status = 'pending'"),
    "workflow_retries_execution_idx": "workflow_retries (execution_id)",
}
SEARCH_INDEXES: dict[str, str] = {
    "investors_name_trgm_idx": "investors USING gin (name gin_trgm_ops)",
    "funds_name_trgm_idx": "funds USING gin (name gin_trgm_ops)",
}
# Without pg_trgm: the same names, so that downgrade drops whichever was built.
FALLBACK_SEARCH_INDEXES: dict[str, str] = {
    "investors_name_trgm_idx": "investors (lower(name) text_pattern_ops)",
    "funds_name_trgm_idx": "funds (lower(name) text_pattern_ops)",
}


def _has_trgm() -> bool:
    found = op.get_bind().exec_driver_sql(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'"
    )
    return found.first() is not None


def upgrade() -> None:
    indexes = dict(INDEXES)
    if _has_trgm():
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        indexes.update(SEARCH_INDEXES)
    else:
        logging.getLogger("redline.demo").warning(
            "PostgreSQL has no pg_trgm extension (install the contrib package): name search "
            "gets B-tree indexes on lower(name), which serve prefix searches only"
        )
        indexes.update(FALLBACK_SEARCH_INDEXES)
    with op.get_context().autocommit_block():
        for name, definition in indexes.items():
            invalid = op.get_bind().exec_driver_sql(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %(name)s AND NOT i.indisvalid",
                {"name": name},
            )
            if invalid.first() is not None:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in reversed([*INDEXES, *SEARCH_INDEXES]):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
