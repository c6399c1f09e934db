"""Paged lists: the ``limit`` and ``offset`` query parameters, optional filters, one page.

Every list endpoint answers the same way: the rows of one query in a fixed order, ``limit``
at a time from ``offset``, and ``next_offset`` for the following page (``null`` on the last).
A page fetches ``limit + 1`` rows, so whether another page follows costs no ``count(*)``.

``page_body`` answers a list in one call: the page as its JSON bytes (what the cache
stores). ``fetch_page`` is the page model alone. Filters are built with ``Where``: each
condition names its parameter, whose value is bound, never written into the SQL; a filter
the client left out adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from fastapi import Query

from redline.demo._state import DemoState, json_body
from redline.demo.schemas import Page

MAX_OFFSET = 100_000
"""The deepest offset a list accepts: deeper pages cost a scan of every row before them."""

Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]

P = TypeVar("P", bound=Page)


class Where:
    """A ``WHERE`` clause of ANDed conditions and the parameters they bind.

    ``str(where)`` is the clause without the keyword (``TRUE`` when there is no condition);
    ``where.params`` are its bound values.
    """

    def __init__(self, condition: str | None = None, **params: Any) -> None:
        self.conditions: list[str] = [] if condition is None else [condition]
        self.params: dict[str, Any] = dict(params)

    def add(self, condition: str, **params: Any) -> None:
        """AND ``condition`` (``"currency = :currency"``) unless one of its ``params`` is None.

        None stands for a filter the client did not give, so it adds no condition.
        """
        if any(value is None for value in params.values()):
            return
        self.conditions.append(condition)
        self.params.update(params)

    def __str__(self) -> str:
        return " AND ".join(self.conditions) or "TRUE"


def next_offset(rows: list[Any], limit: int, offset: int) -> int | None:
    """Pages fetch ``limit + 1`` rows: one more means there is a next page (and is dropped)."""
    if len(rows) > limit:
        del rows[limit:]
        return offset + limit
    return None


async def fetch_page(
    state: DemoState,
    page: type[P],
    sql: str,
    params: Mapping[str, Any],
    limit: int,
    offset: int,
) -> P:
    """The ``page`` model of ``sql``'s rows from ``offset``, at most ``limit`` of them.

    ``sql`` is a query ending in its ``ORDER BY`` (a page needs a fixed order); this appends
    ``LIMIT :limit OFFSET :offset`` and binds them with ``params``. Read on a connection of
    its own, in autocommit (``DemoState.read``).
    """
    rows = await state.read(
        f"{sql} LIMIT :limit OFFSET :offset",
        {**params, "limit": limit + 1, "offset": offset},
    )
    following = next_offset(rows, limit, offset)
    return page.model_validate(
        {"items": rows, "limit": limit, "offset": offset, "next_offset": following}
    )


async def page_body(
    state: DemoState,
    page: type[Page],
    sql: str,
    params: Mapping[str, Any],
    limit: int,
    offset: int,
) -> bytes:
    """``fetch_page`` as the JSON body a route answers."""
    return json_body(await fetch_page(state, page, sql, params, limit, offset))
