"""The analytics dashboard: totals and monthly time series per fund and call status.

Two sources answer the same question with the same numbers:

- ``live`` aggregates ``capital_calls`` joined with per-call payment sums on every request:
  always current, and a full scan of both tables when no fund is chosen;
- ``matview`` sums rows of ``dashboard_monthly`` (one per fund, status and month), which
  ``DashboardRefresher`` refreshes on a schedule: a few thousand small rows, as fresh as the
  last refresh.

Both produce rows of ``(month, status, calls, amount, paid)``; the totals per status are summed
from them in one place, so the two sources cannot drift apart in how they add up.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query

from redline.demo._state import State, json_body
from redline.demo.schemas import Dashboard, SeriesPoint, StatusTotal

router = APIRouter(tags=["dashboard"])

_LIVE = """
SELECT date_trunc('month', c.due_date)::date AS month, c.status, count(*) AS calls,
       sum(c.amount) AS amount, coalesce(sum(p.paid), 0)::numeric(18, 2) AS paid
FROM capital_calls c
LEFT JOIN (
    SELECT capital_call_id, sum(amount) AS paid FROM payments {payments_filter}
    GROUP BY capital_call_id
) p ON p.capital_call_id = c.id
{calls_filter}
GROUP BY 1, 2 ORDER BY 1, 2
"""

_MATVIEW = """
SELECT month, status, sum(calls) AS calls, sum(amount) AS amount, sum(paid) AS paid
FROM dashboard_monthly {filter}
GROUP BY 1, 2 ORDER BY 1, 2
"""


def _sql(source: str, fund_id: int | None) -> str:
    if source == "matview":
        return _MATVIEW.format(filter="" if fund_id is None else "WHERE fund_id = :fund")
    if fund_id is None:
        return _LIVE.format(payments_filter="", calls_filter="")
    return _LIVE.format(
        payments_filter=(
            "WHERE capital_call_id IN (SELECT id FROM capital_calls WHERE fund_id = :fund)"
        ),
        calls_filter="WHERE c.fund_id = :fund",
    )


def build(source: str, fund_id: int | None, rows: list[Any]) -> Dashboard:
    """The dashboard from ``(month, status, calls, amount, paid)`` rows."""
    series = [SeriesPoint.model_validate(row) for row in rows]
    totals: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    for point in series:
        total = totals[point.status]
        total[0] += point.calls
        total[1] += point.amount
        total[2] += point.paid
    return Dashboard(
        source=source,
        fund_id=fund_id,
        totals=[
            StatusTotal(status=status, calls=calls, amount=amount, paid=paid)
            for status, (calls, amount, paid) in sorted(totals.items())
        ],
        series=series,
    )


def dashboard_tags(source: str, fund_id: int | None) -> tuple[str, ...]:
    """What a dashboard depends on. Live aggregates change with every call write (``dashboard``,
    or the fund's tag); the materialized view changes only when it is refreshed
    (``dashboards``), so call writes leave its cached dashboards alone: between refreshes the
    view is the stated staleness."""
    if source == "matview":
        return ("dashboards",)
    return ("dashboards", "dashboard" if fund_id is None else f"fund:{fund_id}")


@router.get("/dashboard", response_model=Dashboard)
async def dashboard(state: State, fund_id: Annotated[int | None, Query(ge=1)] = None):
    """Totals per status and the monthly series by due date, over all funds or one."""
    source = state.settings.dashboard_source

    async def load() -> bytes:
        rows = await state.read(_sql(source, fund_id), {"fund": fund_id})
        return json_body(build(source, fund_id, rows))

    tags = dashboard_tags(source, fund_id)
    return await state.cached(f"dashboard:{source}:{fund_id}", load, *tags)
