"""Funds, capital calls and payments: the fund administration half of the API.

Reads are cache-aside (see ``_caching``); every write commits before it calls
``invalidate_capital_call``. Status changes use optimistic concurrency: the client sends the
``version`` it read, and a stale one is answered 409 with the current version instead of
overwriting someone else's change.

Creating a call and moving its status are one statement each, run in autocommit: a single
statement is atomic, so ``BEGIN``, a checking ``SELECT`` and ``COMMIT`` would add three round
trips and buy nothing. The checks live in the statement (the foreign keys; ``WHERE version =
... AND status = ANY(...)``, which PostgreSQL re-evaluates on the row it locks), and only a
statement that changed nothing is followed by a read that says why (404, 409 or 422).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from redline.demo._caching import invalidate_capital_call
from redline.demo._paging import Limit, Offset, Where, page_body
from redline.demo._state import (
    CurrentUser,
    State,
    fetch_rows,
    json_body,
    json_response,
    problem,
)
from redline.demo.models import CALL_TRANSITIONS
from redline.demo.schemas import (
    CallCreate,
    CallDetail,
    CallPage,
    CallStatus,
    CallStatusUpdate,
    FundDetail,
    FundPage,
    PaymentCreate,
    PaymentList,
    PaymentOut,
    StatusTotal,
)

router = APIRouter(tags=["funds and capital calls"])

_CALL_COLUMNS = """
    c.id, c.fund_id, f.name AS fund_name, c.investor_id, i.name AS investor_name, c.amount,
    c.due_date, c.status, c.version, c.created_at, c.updated_at
"""
_CALL_TABLES = """
    FROM capital_calls c
    JOIN funds f ON f.id = c.fund_id
    JOIN investors i ON i.id = c.investor_id
"""


def query_error(field: str, message: str, where: str = "query") -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming ``field``."""
    return HTTPException(
        422, detail=[{"loc": [where, field], "msg": message, "type": "value_error"}]
    )


# -- funds ----------------------------------------------------------------------------------


@router.get("/funds", response_model=FundPage)
async def list_funds(
    state: State,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
    vintage_year: Annotated[int | None, Query(ge=1900, le=2100)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
):
    """Funds by id, optionally of one currency or vintage."""

    async def load() -> bytes:
        where = Where()
        where.add("currency = :currency", currency=currency)
        where.add("vintage_year = :vintage", vintage=vintage_year)
        return await page_body(
            state,
            FundPage,
            "SELECT id, name, vintage_year, currency, target_size FROM funds "
            f"WHERE {where} ORDER BY id",
            where.params,
            limit,
            offset,
        )

    return await state.cached(f"funds:{currency}:{vintage_year}:{limit}:{offset}", load, "funds")


async def _status_totals(connection: AsyncConnection, fund_id: int) -> list[StatusTotal]:
    rows = await fetch_rows(
        connection,
        """
        SELECT c.status, count(*) AS calls, sum(c.amount) AS amount,
               coalesce(sum(p.paid), 0)::numeric(18, 2) AS paid
        FROM capital_calls c
        LEFT JOIN (
            SELECT capital_call_id, sum(amount) AS paid FROM payments
            WHERE capital_call_id IN (SELECT id FROM capital_calls WHERE fund_id = :fund)
            GROUP BY capital_call_id
        ) p ON p.capital_call_id = c.id
        WHERE c.fund_id = :fund
        GROUP BY c.status ORDER BY c.status
        """,
        {"fund": fund_id},
    )
    return [StatusTotal.model_validate(row) for row in rows]


@router.get("/funds/{fund_id}", response_model=FundDetail)
async def get_fund(state: State, fund_id: int):
    """One fund, with its commitments and its calls' totals per status."""

    async def load() -> bytes:
        async with state.reader.connect() as connection:
            rows = await fetch_rows(
                connection,
                """
                SELECT f.id, f.name, f.vintage_year, f.currency, f.target_size,
                       (SELECT coalesce(sum(amount), 0)::numeric(18, 2) FROM commitments
                        WHERE fund_id = f.id)
                           AS committed,
                       (SELECT count(*) FROM commitments WHERE fund_id = f.id) AS investors
                FROM funds f WHERE f.id = :fund
                """,
                {"fund": fund_id},
            )
            if not rows:
                raise problem(404, "not_found", f"fund {fund_id} does not exist")
            totals = await _status_totals(connection, fund_id)
        return json_body(FundDetail(**rows[0], calls_by_status=totals))

    return await state.cached(f"fund:{fund_id}", load, f"fund:{fund_id}")


# -- capital calls --------------------------------------------------------------------------


@router.get("/capital-calls", response_model=CallPage)
async def list_calls(
    state: State,
    fund_id: Annotated[int | None, Query(ge=1)] = None,
    investor_id: Annotated[int | None, Query(ge=1)] = None,
    status: CallStatus | None = None,
    due_from: dt.date | None = None,
    due_to: dt.date | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
):
    """Calls by due date, filtered by fund, investor, status and a due date range."""
    if due_from is not None and due_to is not None and due_from > due_to:
        raise query_error("due_to", f"due_to {due_to} is before due_from {due_from}")

    async def load() -> bytes:
        where = Where()
        where.add("c.fund_id = :fund_id", fund_id=fund_id)
        where.add("c.investor_id = :investor_id", investor_id=investor_id)
        where.add("c.status = :status", status=status)
        where.add("c.due_date >= :due_from", due_from=due_from)
        where.add("c.due_date <= :due_to", due_to=due_to)
        return await page_body(
            state,
            CallPage,
            f"SELECT {_CALL_COLUMNS} {_CALL_TABLES} WHERE {where} ORDER BY c.due_date, c.id",
            where.params,
            limit,
            offset,
        )

    key = f"calls:{fund_id}:{investor_id}:{status}:{due_from}:{due_to}:{limit}:{offset}"
    # A list within one fund changes only with that fund's calls.
    tag = f"fund:{fund_id}" if fund_id is not None else "calls"
    return await state.cached(key, load, tag)


@router.get("/capital-calls/search", response_model=CallPage)
async def search_calls(
    state: State,
    q: Annotated[str, Query(min_length=3, max_length=100)],
    limit: Limit = 20,
    offset: Offset = 0,
):
    """Calls whose investor's or fund's name contains ``q`` (any case), latest due first.

    ``ILIKE '%q%'`` finds substrings anywhere in a name; revision ``"indexes"`` adds GIN
    trigram indexes on both names, which serve it (hence the 3-character minimum).

    Results may lag writes by up to ``Settings.search_lag`` seconds (10), as a search index's
    refresh interval does: they are cached that long and no write path invalidates them.
    """
    needle = q.strip().lower()
    if len(needle) < 3:
        raise query_error("q", "give at least 3 characters besides spaces")
    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

    async def load() -> bytes:
        return await page_body(
            state,
            CallPage,
            f"""
            SELECT {_CALL_COLUMNS} {_CALL_TABLES}
            WHERE c.investor_id IN (SELECT id FROM investors WHERE name ILIKE :pattern)
               OR c.fund_id IN (SELECT id FROM funds WHERE name ILIKE :pattern)
            ORDER BY c.due_date DESC, c.id DESC
            """,
            {"pattern": pattern},
            limit,
            offset,
        )

    # Not invalidated by writes: a search may lag them by up to ``search_lag`` seconds.
    return await state.cached(
        f"calls:search:{limit}:{offset}:{needle}", load, "search", ttl=state.settings.search_lag
    )


def _detail_sql(calls: str, where: str) -> str:
    """A call's detail (as ``c``) from ``calls``: the table, or a CTE of rows just written."""
    return f"""
        SELECT {_CALL_COLUMNS},
               (SELECT coalesce(sum(amount), 0)::numeric(18, 2) FROM payments
                WHERE capital_call_id = c.id) AS paid
        FROM {calls} c
        JOIN funds f ON f.id = c.fund_id
        JOIN investors i ON i.id = c.investor_id
        WHERE {where}
        """


_DETAIL = _detail_sql("capital_calls", "c.id = :call")


def _detail(row: Any) -> CallDetail:
    return CallDetail(**row, outstanding=row["amount"] - row["paid"])


@router.get("/capital-calls/{call_id}", response_model=CallDetail)
async def get_call(state: State, call_id: int):
    """One call, with what has been paid on it."""

    async def load() -> bytes:
        rows = await state.read(_DETAIL, {"call": call_id})
        if not rows:
            raise problem(404, "not_found", f"capital call {call_id} does not exist")
        return json_body(_detail(rows[0]))

    return await state.cached(f"call:{call_id}", load, f"call:{call_id}")


_CREATE = (
    "WITH created AS (INSERT INTO capital_calls (fund_id, investor_id, amount, due_date, status) "
    "VALUES (:fund, :investor, :amount, :due, :status) RETURNING *)"
    + _detail_sql("created", "true")
)


@router.post("/capital-calls", response_model=CallDetail, status_code=201)
async def create_call(state: State, user: CurrentUser, body: CallCreate):
    """Create a call (draft or issued) for an existing fund and investor."""
    params = {
        "fund": body.fund_id,
        "investor": body.investor_id,
        "amount": body.amount,
        "due": body.due_date,
        "status": body.status,
    }
    try:
        rows = await state.write(_CREATE, params)
    except asyncpg.ForeignKeyViolationError:
        # A foreign key refused the fund or the investor: say which.
        async with state.reader.connect() as connection:
            await _missing_parent(connection, body.fund_id, body.investor_id)
        raise
    detail = _detail(rows[0])
    await invalidate_capital_call(state.cache, detail.id, body.fund_id, body.investor_id)
    response = json_response(json_body(detail), 201)
    response.headers["location"] = f"/capital-calls/{detail.id}"
    return response


async def _missing_parent(connection: AsyncConnection, fund_id: int, investor_id: int) -> None:
    """Raise the 422 naming the fund or investor that does not exist."""
    found = (
        await connection.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM funds WHERE id = :fund), "
                "EXISTS (SELECT 1 FROM investors WHERE id = :investor)"
            ),
            {"fund": fund_id, "investor": investor_id},
        )
    ).one()
    if not found[0]:
        raise query_error("fund_id", f"fund {fund_id} does not exist", "body")
    if not found[1]:
        raise query_error("investor_id", f"investor {investor_id} does not exist", "body")
    raise problem(409, "conflict", "the call could not be created; try again")


async def _lock_call(connection: AsyncConnection, call_id: int, columns: str) -> Any:
    """``columns`` of call ``call_id`` (as ``c``), locked until the transaction ends; else 404.

    Holding the lock, a check of the call's status and the write that depends on it cannot
    interleave with another writer's.
    """
    row = (
        await connection.execute(
            text(f"SELECT {columns} FROM capital_calls c WHERE c.id = :call FOR UPDATE"),
            {"call": call_id},
        )
    ).first()
    if row is None:
        raise problem(404, "not_found", f"capital call {call_id} does not exist")
    return row


async def _set_status(connection: AsyncConnection, call_id: int, status: str) -> None:
    """Move the call to ``status``: a new ``version``, so clients holding the old one get 409."""
    await connection.execute(
        text(
            "UPDATE capital_calls SET status = :status, version = version + 1, "
            "updated_at = now() WHERE id = :call"
        ),
        {"status": status, "call": call_id},
    )


# The statuses a call may come from, per status it moves to.
_FROM: dict[str, list[str]] = {
    target: sorted(source for source, nexts in CALL_TRANSITIONS.items() if target in nexts)
    for target in CALL_TRANSITIONS
}
_MOVE = (
    "WITH moved AS (UPDATE capital_calls SET status = :status, version = version + 1, "
    "updated_at = now() WHERE id = :call AND version = :version AND status = ANY(:sources) "
    "RETURNING *)" + _detail_sql("moved", "true")
)


@router.patch("/capital-calls/{call_id}/status", response_model=CallDetail)
async def update_call_status(state: State, user: CurrentUser, call_id: int, body: CallStatusUpdate):
    """Move a call to another status, if ``version`` is still the current one.

    409 ``version_conflict`` (with ``current_version``) when someone changed the call since
    the client read it; 409 ``invalid_transition`` when the status cannot follow the
    current one (paid and cancelled are final).
    """
    params = {
        "status": body.status,
        "call": call_id,
        "version": body.version,
        "sources": _FROM[body.status],
    }
    rows = await state.write(_MOVE, params)
    if not rows:
        async with state.reader.connect() as connection:
            await _why_not_moved(connection, call_id, body)
    detail = _detail(rows[0])
    await invalidate_capital_call(state.cache, call_id, detail.fund_id, detail.investor_id)
    return json_response(json_body(detail))


async def _why_not_moved(connection: AsyncConnection, call_id: int, body: CallStatusUpdate) -> None:
    """Raise the 404 or 409 that explains why the status update matched no row."""
    row = (
        await connection.execute(
            text("SELECT status, version FROM capital_calls WHERE id = :call"), {"call": call_id}
        )
    ).first()
    if row is None:
        raise problem(404, "not_found", f"capital call {call_id} does not exist")
    status, version = row
    if version != body.version:
        raise problem(
            409,
            "version_conflict",
            f"capital call {call_id} is at version {version}, not {body.version}; "
            "read it again and retry",
            current_version=version,
        )
    allowed = sorted(CALL_TRANSITIONS[status]) or ["none: it is final"]
    raise problem(
        409,
        "invalid_transition",
        f"capital call {call_id} cannot go from {status} to {body.status}; "
        f"allowed: {', '.join(allowed)}",
        current_status=status,
    )


# -- payments -------------------------------------------------------------------------------


_PAYMENTS = (
    "SELECT p.id, p.capital_call_id, p.amount, p.reference, p.paid_at FROM capital_calls c "
    "LEFT JOIN payments p ON p.capital_call_id = c.id WHERE c.id = :call "
    "ORDER BY p.paid_at, p.id"
)


@router.get("/capital-calls/{call_id}/payments", response_model=PaymentList)
async def list_payments(state: State, call_id: int):
    """The payments made on one call, oldest first."""

    async def load() -> bytes:
        # One round trip: no row means no such call, a row of NULLs a call with no payment.
        rows = await state.read(_PAYMENTS, {"call": call_id})
        if not rows:
            raise problem(404, "not_found", f"capital call {call_id} does not exist")
        items = [PaymentOut.model_validate(row) for row in rows if row["id"] is not None]
        return json_body(PaymentList(items=items))

    return await state.cached(f"call:{call_id}:payments", load, f"call:{call_id}")


@router.post("/capital-calls/{call_id}/payments", response_model=PaymentOut, status_code=201)
async def create_payment(state: State, user: CurrentUser, call_id: int, body: PaymentCreate):
    """Record a payment on an issued or overdue call; the payment that settles it marks it paid.

    409 ``not_payable`` for a call in another status, 409 ``overpayment`` for more than
    what is outstanding.
    """
    async with state.engine.begin() as connection:
        status, amount, fund_id, investor_id, paid = await _lock_call(
            connection,
            call_id,
            "status, amount, fund_id, investor_id, "
            "(SELECT coalesce(sum(amount), 0) FROM payments WHERE capital_call_id = c.id)",
        )
        if status not in ("issued", "overdue"):
            raise problem(
                409,
                "not_payable",
                f"capital call {call_id} is {status}; only issued or overdue calls take payments",
            )
        outstanding: Decimal = amount - paid
        if body.amount > outstanding:
            raise problem(
                409,
                "overpayment",
                f"payment of {body.amount} exceeds the {outstanding} outstanding on call {call_id}",
                outstanding=str(outstanding),
            )
        row = (
            (
                await connection.execute(
                    text(
                        "INSERT INTO payments (capital_call_id, amount, reference) "
                        "VALUES (:call, :amount, :reference) "
                        "RETURNING id, capital_call_id, amount, reference, paid_at"
                    ),
                    {"call": call_id, "amount": body.amount, "reference": body.reference},
                )
            )
            .mappings()
            .one()
        )
        if body.amount == outstanding:
            await _set_status(connection, call_id, "paid")
    await invalidate_capital_call(state.cache, call_id, fund_id, investor_id)
    return json_response(json_body(PaymentOut.model_validate(row)), 201)
