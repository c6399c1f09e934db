"""Request and response bodies of the demo API (Pydantic v2).

Request models reject unknown fields (``extra="forbid"``), so a typo in a client is a 422
naming the field rather than a silently ignored value. Money is ``Decimal`` with two places
and travels as a JSON string ("1250000.00"), never as a float.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

CallStatus = Literal["draft", "issued", "paid", "overdue", "cancelled"]
ExecutionStatus = Literal["queued", "running", "succeeded", "failed"]
RetryStatus = Literal["pending", "dead"]
Amount = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=2)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel):
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


# -- funds ----------------------------------------------------------------------------------


class FundOut(BaseModel):
    id: int
    name: str
    vintage_year: int
    currency: str
    target_size: Decimal


class FundPage(Page):
    items: list[FundOut]


class StatusTotal(BaseModel):
    status: CallStatus
    calls: int
    amount: Decimal
    paid: Decimal


class FundDetail(FundOut):
    committed: Decimal
    investors: int
    calls_by_status: list[StatusTotal]


# -- capital calls --------------------------------------------------------------------------


class CallOut(BaseModel):
    id: int
    fund_id: int
    fund_name: str
    investor_id: int
    investor_name: str
    amount: Decimal
    due_date: dt.date
    status: CallStatus
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class CallDetail(CallOut):
    paid: Decimal
    outstanding: Decimal


class CallPage(Page):
    items: list[CallOut]


class CallCreate(_Input):
    fund_id: int = Field(gt=0)
    investor_id: int = Field(gt=0)
    amount: Amount
    due_date: dt.date
    status: Literal["draft", "issued"] = "draft"


class CallStatusUpdate(_Input):
    status: CallStatus
    version: int = Field(ge=1, description="the version the client last read")


class PaymentCreate(_Input):
    amount: Amount
    reference: Name


class PaymentOut(BaseModel):
    id: int
    capital_call_id: int
    amount: Decimal
    reference: str
    paid_at: dt.datetime


class PaymentList(BaseModel):
    items: list[PaymentOut]


# -- dashboard ------------------------------------------------------------------------------


class SeriesPoint(BaseModel):
    month: dt.date
    status: CallStatus
    calls: int
    amount: Decimal
    paid: Decimal


class Dashboard(BaseModel):
    source: Literal["live", "matview"]
    fund_id: int | None
    totals: list[StatusTotal]
    series: list[SeriesPoint]


# -- workflows ------------------------------------------------------------------------------


class WorkflowCreate(_Input):
    name: Name
    trigger: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")] = "manual"
    steps: int = Field(default=3, ge=1, le=50)
    failure_rate: int = Field(default=0, ge=0, le=100, description="percent of runs that fail")
    max_attempts: int = Field(default=3, ge=1, le=10)


class WorkflowOut(BaseModel):
    id: int
    name: str
    trigger: str
    steps: int
    failure_rate: int
    max_attempts: int
    owner_id: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


class WorkflowPage(Page):
    items: list[WorkflowOut]


class ExecutionOut(BaseModel):
    id: int
    workflow_id: int
    status: ExecutionStatus
    attempt: int
    queued_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_ms: int | None
    error: str | None


class ExecutionPage(Page):
    items: list[ExecutionOut]


class RetryOut(BaseModel):
    id: int
    workflow_id: int
    execution_id: int
    attempts: int
    status: RetryStatus
    last_error: str
    next_attempt_at: dt.datetime


class RetryPage(Page):
    items: list[RetryOut]


# -- users ----------------------------------------------------------------------------------


class Login(_Input):
    email: Annotated[
        str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[^@\s]+@[^@\s]+$")
    ]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class UserOut(BaseModel):
    id: int
    email: str
    name: str


class LoginOut(BaseModel):
    token: str = Field(description="also set as the session cookie; or send as a Bearer token")
    expires_at: dt.datetime
    user: UserOut


class Holding(BaseModel):
    fund_id: int
    fund_name: str
    committed: Decimal
    called: Decimal
    paid: Decimal


class Me(UserOut):
    investor_id: int | None
    investor_name: str | None
    holdings: list[Holding]


class MeUpdate(_Input):
    name: Name
