"""The dashboard's materialized view, and the unique index its concurrent refresh needs.

``dashboard_monthly`` holds one row per fund, call status and month of due date: how many
calls, their amount, and what has been paid on them. The dashboard's totals per fund and
status are sums over its months, and its time series are its rows, so one small view serves
both instead of aggregating the whole ``capital_calls`` and ``payments`` tables per request.

``REFRESH MATERIALIZED VIEW CONCURRENTLY`` lets readers keep reading during a refresh, and
needs a unique index over plain columns covering every row: ``(fund_id, status, month)``.
The view is as fresh as its last refresh; ``redline.demo.DashboardRefresher`` refreshes it on
a schedule, one process at a time.

Revision ID: dashboard_view
Revises: indexes
"""

from alembic import op

revision = "dashboard_view"
down_revision = "indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE MATERIALIZED VIEW dashboard_monthly AS
        SELECT c.fund_id,
               c.status,
               date_trunc('month', c.due_date)::date AS month,
               count(*) AS calls,
               sum(c.amount) AS amount,
               coalesce(sum(p.paid), 0)::numeric(18, 2) AS paid
        FROM capital_calls c
        LEFT JOIN (
            SELECT capital_call_id, sum(amount) AS paid FROM payments GROUP BY capital_call_id
        ) p ON p.capital_call_id = c.id
        GROUP BY c.fund_id, c.status, date_trunc('month', c.due_date)::date
        WITH DATA
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX dashboard_monthly_key ON dashboard_monthly (fund_id, status, month)"
    )


def downgrade() -> None:
    op.execute("DROP MATERIALIZED VIEW dashboard_monthly")
