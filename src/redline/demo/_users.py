"""Login, logout and the user's private page (``/me``).

A login answers the session token in the body and as an ``HttpOnly``, ``SameSite=Lax``
cookie (``Secure`` unless ``Settings.secure_cookies`` is off, for plain-HTTP demos); API
clients may send it as ``Authorization: Bearer <token>`` instead. The password check runs in a
worker thread: scrypt takes tens of milliseconds of CPU, which must not stall the event loop.

``/me`` is private. Its cache key carries the user id from the verified session
(``user:{id}:me``), never anything the client chose, and it is tagged ``user:{id}``, which
``invalidate_user`` clears after every change to the user.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from redline.demo._auth import check_login, new_token, token_hash
from redline.demo._caching import invalidate_user
from redline.demo._state import (
    SESSION_COOKIE,
    CurrentUser,
    State,
    json_body,
    json_response,
    problem,
    session_token,
)
from redline.demo.schemas import Holding, Login, LoginOut, Me, MeUpdate, UserOut

router = APIRouter(tags=["users"])

# scrypt costs ~16 MB and tens of milliseconds of CPU per login, on purpose: a burst of logins
# (every user of a shift arriving at 9:00) must queue here rather than take every core and
# starve the requests of users already logged in. One hash at a time per core.
_HASHING = asyncio.Semaphore(os.cpu_count() or 1)


@router.post("/auth/login", response_model=LoginOut)
async def login(state: State, body: Login):
    """Start a session for a correct email and password; 401 otherwise (same for both)."""
    async with state.reader.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT id, email, name, password_hash FROM users WHERE email = :email"),
                {"email": body.email},
            )
        ).first()
    async with _HASHING:
        ok = await run_in_threadpool(check_login, body.password, row[3] if row else None)
    if not ok:
        raise problem(401, "bad_credentials", "the email or the password is wrong")
    token = new_token()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=state.settings.session_ttl)
    async with state.engine.begin() as connection:
        # Expired sessions are swept per user at login, so the table stays as small as the
        # set of live sessions without a background job.
        await connection.execute(
            text("DELETE FROM sessions WHERE user_id = :user AND expires_at <= now()"),
            {"user": row[0]},
        )
        await connection.execute(
            text(
                "INSERT INTO sessions (token_hash, user_id, expires_at) "
                "VALUES (:hash, :user, :expires)"
            ),
            {"hash": token_hash(token), "user": row[0], "expires": expires},
        )
    body_out = LoginOut(
        token=token, expires_at=expires, user=UserOut(id=row[0], email=row[1], name=row[2])
    )
    response = json_response(json_body(body_out))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(state.settings.session_ttl),
        httponly=True,
        secure=state.settings.secure_cookies,
        samesite="lax",
    )
    return response


@router.post("/auth/logout", status_code=204)
async def logout(state: State, request: Request, user: CurrentUser):
    """End the current session, in the database and in every cache."""
    token = session_token(request)
    digest = token_hash(token)
    async with state.engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM sessions WHERE token_hash = :hash"), {"hash": digest}
        )
    await state.cache.invalidate_tags(f"session:{digest.hex()}")
    await invalidate_user(state.cache, user.id)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, httponly=True, secure=state.settings.secure_cookies)
    return response


async def _me(state: State, user_id: int) -> Me:
    async with state.reader.connect() as connection:
        row = (
            (
                await connection.execute(
                    text(
                        "SELECT u.id, u.email, u.name, u.investor_id, i.name AS investor_name "
                        "FROM users u LEFT JOIN investors i ON i.id = u.investor_id "
                        "WHERE u.id = :user"
                    ),
                    {"user": user_id},
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise problem(401, "unauthenticated", "the session's user no longer exists")
        holdings = []
        if row["investor_id"] is not None:
            result = await connection.execute(
                text(
                    """
                    SELECT m.fund_id, f.name AS fund_name, m.amount AS committed,
                           coalesce(
                               sum(c.amount) FILTER (WHERE c.status <> 'cancelled'), 0
                           )::numeric(18, 2) AS called,
                           coalesce(sum(p.paid), 0)::numeric(18, 2) AS paid
                    FROM commitments m
                    JOIN funds f ON f.id = m.fund_id
                    LEFT JOIN capital_calls c
                        ON c.fund_id = m.fund_id AND c.investor_id = m.investor_id
                    LEFT JOIN (
                        SELECT capital_call_id, sum(amount) AS paid FROM payments
                        WHERE capital_call_id IN (
                            SELECT id FROM capital_calls WHERE investor_id = :investor
                        )
                        GROUP BY capital_call_id
                    ) p ON p.capital_call_id = c.id
                    WHERE m.investor_id = :investor
                    GROUP BY m.fund_id, f.name, m.amount ORDER BY m.fund_id
                    """
                ),
                {"investor": row["investor_id"]},
            )
            holdings = [Holding.model_validate(h) for h in result.mappings()]
    return Me(**row, holdings=holdings)


@router.get("/me", response_model=Me)
async def me(state: State, user: CurrentUser):
    """The logged-in user's profile and their investor's holdings: private, per user."""

    async def load() -> bytes:
        return json_body(await _me(state, user.id))

    # Holdings change with the investor's calls and payments: invalidate_capital_call
    # clears the investor's tag.
    tags = [f"user:{user.id}"]
    if user.investor_id is not None:
        tags.append(f"investor:{user.investor_id}")
    response = await state.cached(f"user:{user.id}:me", load, *tags)
    # Private: no shared cache (proxy, CDN) may keep it.
    response.headers["cache-control"] = "private, no-store"
    return response


@router.patch("/me", response_model=Me)
async def update_me(state: State, user: CurrentUser, body: MeUpdate):
    """Change the user's display name."""
    async with state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE users SET name = :name, updated_at = now() WHERE id = :user"),
            {"name": body.name, "user": user.id},
        )
    await invalidate_user(state.cache, user.id)
    response = json_response(json_body(await _me(state, user.id)))
    response.headers["cache-control"] = "private, no-store"
    return response
