"""Workflows, their executions and the failure retry queue: the automation half of the API.

Running a workflow records an execution as ``running``, simulates its steps in-process (a
millisecond each, so the demo measures the API and the database rather than a sleep), then
records ``succeeded`` or ``failed``. Whether a run fails is decided by a hash of the workflow,
the execution and the attempt against the workflow's ``failure_rate``: the same seed data
fails the same way on every machine, yet a retry (a new attempt) can succeed. A failed run
enters ``workflow_retries``; retrying it runs a new attempt, which leaves the queue on
success or is marked ``dead`` once ``max_attempts`` is used up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from redline.demo._caching import invalidate_workflow, invalidate_workflow_runs
from redline.demo._paging import Limit, Offset, Where, page_body
from redline.demo._state import (
    CurrentUser,
    State,
    fetch_rows,
    json_body,
    json_response,
    problem,
)
from redline.demo.schemas import (
    ExecutionOut,
    ExecutionPage,
    ExecutionStatus,
    RetryPage,
    RetryStatus,
    WorkflowCreate,
    WorkflowOut,
    WorkflowPage,
)

router = APIRouter(tags=["workflows"])

STEP_SECONDS = 0.001
_WORKFLOW_COLUMNS = (
    "id, name, trigger, steps, failure_rate, max_attempts, owner_id, created_at, updated_at"
)
_EXECUTION_COLUMNS = (
    "id, workflow_id, status, attempt, queued_at, started_at, finished_at, duration_ms, error"
)
_RETRY_COLUMNS = "id, workflow_id, execution_id, attempts, status, last_error, next_attempt_at"


def fails(workflow_id: int, execution_id: int, attempt: int, failure_rate: int) -> bool:
    """Whether this attempt fails: deterministic, and ``failure_rate`` % of attempts do."""
    digest = hashlib.sha256(f"{workflow_id}:{execution_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < failure_rate


async def _workflow(connection: AsyncConnection, workflow_id: int) -> Any:
    rows = await fetch_rows(
        connection,
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE id = :workflow",
        {"workflow": workflow_id},
    )
    if not rows:
        raise problem(404, "not_found", f"workflow {workflow_id} does not exist")
    return rows[0]


@router.post("/workflows", response_model=WorkflowOut, status_code=201)
async def create_workflow(state: State, user: CurrentUser, body: WorkflowCreate):
    """Create a workflow owned by the logged-in user."""
    async with state.engine.begin() as connection:
        rows = await fetch_rows(
            connection,
            "INSERT INTO workflows (name, trigger, steps, failure_rate, max_attempts, owner_id) "
            "VALUES (:name, :trigger, :steps, :failure_rate, :max_attempts, :owner) "
            f"RETURNING {_WORKFLOW_COLUMNS}",
            {**body.model_dump(), "owner": user.id},
        )
    workflow = WorkflowOut.model_validate(rows[0])
    await invalidate_workflow(state.cache, workflow.id)
    response = json_response(json_body(workflow), 201)
    response.headers["location"] = f"/workflows/{workflow.id}"
    return response


@router.get("/workflows", response_model=WorkflowPage)
async def list_workflows(
    state: State,
    trigger: Annotated[str | None, Query(max_length=64)] = None,
    owner_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
):
    """Workflows by id, optionally by trigger or owner."""

    async def load() -> bytes:
        where = Where()
        where.add("trigger = :trigger", trigger=trigger)
        where.add("owner_id = :owner", owner=owner_id)
        return await page_body(
            state,
            WorkflowPage,
            f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE {where} ORDER BY id",
            where.params,
            limit,
            offset,
        )

    key = f"workflows:{trigger}:{owner_id}:{limit}:{offset}"
    return await state.cached(key, load, "workflows")


@router.get("/workflows/{workflow_id}", response_model=WorkflowOut)
async def get_workflow(state: State, workflow_id: int):
    """One workflow."""
    return json_response(await _workflow_body(state, workflow_id))


async def _workflow_body(state: State, workflow_id: int) -> bytes:
    """The workflow's JSON, cache-aside: what ``GET /workflows/{id}`` answers."""

    async def load() -> bytes:
        rows = await state.read(
            f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE id = :workflow",
            {"workflow": workflow_id},
        )
        if not rows:
            raise problem(404, "not_found", f"workflow {workflow_id} does not exist")
        return json_body(WorkflowOut.model_validate(rows[0]))

    key = f"workflow:{workflow_id}"
    return await state.cache.get_or_set(key, load, ttl=state.settings.cache_ttl, tags=(key,))


@router.get("/workflows/{workflow_id}/executions", response_model=ExecutionPage)
async def list_executions(
    state: State,
    workflow_id: int,
    status: ExecutionStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
):
    """A workflow's execution history, newest first, optionally of one status."""

    async def load() -> bytes:
        where = Where("workflow_id = :workflow", workflow=workflow_id)
        where.add("status = :status", status=status)
        await _workflow_body(state, workflow_id)  # 404 for an unknown workflow; usually cached
        return await page_body(
            state,
            ExecutionPage,
            f"SELECT {_EXECUTION_COLUMNS} FROM workflow_executions WHERE {where} "
            "ORDER BY queued_at DESC, id DESC",
            where.params,
            limit,
            offset,
        )

    key = f"workflow:{workflow_id}:executions:{status}:{limit}:{offset}"
    return await state.cached(key, load, f"workflow:{workflow_id}:runs")


async def _execute(state: State, workflow: Any, attempt: int) -> ExecutionOut:
    """Run one attempt of ``workflow``: record it running, simulate its steps, record the end.

    Each record is one statement in autocommit (atomic by itself): a transaction around it
    would add a ``BEGIN`` and a ``COMMIT`` round trip and change nothing.
    """
    started_row = await state.write(
        "INSERT INTO workflow_executions (workflow_id, status, attempt, started_at) "
        "VALUES (:workflow, 'running', :attempt, now()) RETURNING id",
        {"workflow": workflow["id"], "attempt": attempt},
    )
    execution_id = started_row[0]["id"]
    started = time.perf_counter()
    # The steps take their time in one sleep: a timer per step would cost the process a
    # wake-up each, CPU that no real workflow engine's caller spends while it waits.
    await asyncio.sleep(STEP_SECONDS * workflow["steps"])
    failed = fails(workflow["id"], execution_id, attempt, workflow["failure_rate"])
    duration_ms = round((time.perf_counter() - started) * 1000)
    error = f"step {workflow['steps']} failed (simulated, attempt {attempt})" if failed else None
    rows = await state.write(
        "UPDATE workflow_executions SET status = :status, finished_at = now(), "
        "duration_ms = :duration, error = :error "
        f"WHERE id = :id RETURNING {_EXECUTION_COLUMNS}",
        {
            "status": "failed" if failed else "succeeded",
            "duration": duration_ms,
            "error": error,
            "id": execution_id,
        },
    )
    return ExecutionOut.model_validate(rows[0])


def _backoff(attempts: int) -> dt.timedelta:
    """Exponential: 1 min after the first failure, 2 after the second, ..."""
    return dt.timedelta(seconds=30 * 2 ** min(attempts, 10))


@router.post("/workflows/{workflow_id}/run", response_model=ExecutionOut, status_code=201)
async def run_workflow(state: State, user: CurrentUser, workflow_id: int):
    """Run the workflow now; a failed run is queued for retry."""
    # The cached detail (invalidated whenever the workflow changes) has what a run needs.
    workflow = orjson.loads(await _workflow_body(state, workflow_id))
    execution = await _execute(state, workflow, attempt=1)
    if execution.status == "failed":
        await state.write(
            "INSERT INTO workflow_retries (workflow_id, execution_id, attempts, status, "
            "last_error, next_attempt_at) VALUES (:workflow, :execution, 1, :status, "
            "CAST(:error AS text), now() + :backoff)",
            {
                "workflow": workflow_id,
                "execution": execution.id,
                "status": "dead" if workflow["max_attempts"] <= 1 else "pending",
                "error": execution.error,
                "backoff": _backoff(1),
            },
        )
    await invalidate_workflow_runs(state.cache, workflow_id)
    return json_response(json_body(execution), 201)


@router.get("/retries", response_model=RetryPage)
async def list_retries(
    state: State,
    status: RetryStatus = "pending",
    workflow_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
):
    """The retry queue: failed runs by when they are next due (``dead``: given up)."""

    async def load() -> bytes:
        where = Where("status = :status", status=status)
        where.add("workflow_id = :workflow", workflow=workflow_id)
        return await page_body(
            state,
            RetryPage,
            f"SELECT {_RETRY_COLUMNS} FROM workflow_retries WHERE {where} "
            "ORDER BY next_attempt_at, id",
            where.params,
            limit,
            offset,
        )

    return await state.cached(f"retries:{status}:{workflow_id}:{limit}:{offset}", load, "retries")


@router.post("/retries/{retry_id}/retry", response_model=ExecutionOut, status_code=201)
async def retry(state: State, user: CurrentUser, retry_id: int):
    """Run the next attempt of a queued failure now.

    The queue row stays locked while the attempt runs, so two clients cannot retry it twice
    (the second gets 409 ``retry_in_progress``). 409 ``retry_dead`` once it has given up.
    """
    async with state.engine.begin() as connection:
        rows = await fetch_rows(
            connection,
            f"SELECT {_RETRY_COLUMNS} FROM workflow_retries WHERE id = :id FOR UPDATE SKIP LOCKED",
            {"id": retry_id},
        )
        if not rows:
            exists = await connection.scalar(
                text("SELECT EXISTS (SELECT 1 FROM workflow_retries WHERE id = :id)"),
                {"id": retry_id},
            )
            if exists:
                raise problem(409, "retry_in_progress", f"retry {retry_id} is running already")
            raise problem(404, "not_found", f"retry {retry_id} does not exist")
        queued = rows[0]
        if queued["status"] == "dead":
            raise problem(
                409, "retry_dead", f"retry {retry_id} gave up after {queued['attempts']} attempts"
            )
        workflow = await _workflow(connection, queued["workflow_id"])
        execution = await _execute(state, workflow, attempt=queued["attempts"] + 1)
        if execution.status == "succeeded":
            await connection.execute(
                text("DELETE FROM workflow_retries WHERE id = :id"), {"id": retry_id}
            )
        else:
            attempts = queued["attempts"] + 1
            await connection.execute(
                text(
                    "UPDATE workflow_retries SET attempts = :attempts, execution_id = :execution, "
                    "status = :status, last_error = CAST(:error AS text), updated_at = now(), "
                    "next_attempt_at = now() + :backoff WHERE id = :id"
                ),
                {
                    "attempts": attempts,
                    "execution": execution.id,
                    "status": "dead" if attempts >= workflow["max_attempts"] else "pending",
                    "error": execution.error,
                    "backoff": _backoff(attempts),
                    "id": retry_id,
                },
            )
    await invalidate_workflow_runs(state.cache, queued["workflow_id"])
    return json_response(json_body(execution), 201)
