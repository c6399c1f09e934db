"""The reference application's schema as SQLAlchemy 2 models.

Two domains share one database, as in the two platforms redline grew from:

- **Fund administration.** ``funds`` raise money from ``investors`` through ``commitments``
  (one per fund and investor); a ``capital_calls`` row asks one investor for part of a
  commitment by a due date and moves draft -> issued -> paid, or to overdue or cancelled;
  ``payments`` settle calls. Calls carry a ``version`` for optimistic concurrency.
- **Workflow automation.** ``workflows`` are run as ``workflow_executions`` (queued, running,
  succeeded, failed, with timings, attempt and error); a failed execution waits in
  ``workflow_retries`` until it is retried or gives up.
- **Users and sessions.** A user may belong to an investor (a limited partner's portal user);
  ``sessions`` are keyed by the SHA-256 of the session token, so a database leak yields no
  usable token and the lookup needs no secondary index.

These models describe revision 1 (the *baseline*): primary keys, foreign keys, and the unique
and check constraints that keep the data correct, but no secondary index. Indexes and the
dashboard's materialized view come in later migrations (see ``migrations/versions``), so the
demo can measure what each one buys. Migrations are written out by hand and do not import
this module: a migration must stay what it was when it shipped.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CALL_STATUSES = ("draft", "issued", "paid", "overdue", "cancelled")
"""Every status a capital call can have."""

CALL_TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"issued", "cancelled"}),
    "issued": frozenset({"paid", "overdue", "cancelled"}),
    "overdue": frozenset({"paid", "cancelled"}),
    "paid": frozenset(),
    "cancelled": frozenset(),
}
"""The statuses a call may move to from each status; paid and cancelled are final."""

EXECUTION_STATUSES = ("queued", "running", "succeeded", "failed")
"""Every status a workflow execution can have."""

RETRY_STATUSES = ("pending", "dead")
"""A retry waits (``pending``) or has used up its attempts (``dead``)."""

Money = Numeric(18, 2)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _now() -> object:
    return func.now()


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}
    metadata = MetaData(
        naming_convention={
            "pk": "%(table_name)s_pkey",
            "fk": "%(table_name)s_%(column_0_name)s_fkey",
            "uq": "%(table_name)s_%(column_0_name)s_key",
            "ck": "%(table_name)s_%(constraint_name)s_check",
        }
    )


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    investor_id: Mapped[int | None] = mapped_column(ForeignKey("investors.id"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class Session(Base):
    __tablename__ = "sessions"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    expires_at: Mapped[dt.datetime]


class Fund(Base):
    __tablename__ = "funds"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    vintage_year: Mapped[int] = mapped_column(SmallInteger)
    currency: Mapped[str] = mapped_column(Text)
    target_size: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class Investor(Base):
    __tablename__ = "investors"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    country: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class Commitment(Base):
    __tablename__ = "commitments"
    __table_args__ = (UniqueConstraint("fund_id", "investor_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    fund_id: Mapped[int] = mapped_column(ForeignKey("funds.id"))
    investor_id: Mapped[int] = mapped_column(ForeignKey("investors.id"))
    amount: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class CapitalCall(Base):
    __tablename__ = "capital_calls"
    __table_args__ = (
        CheckConstraint(_in("status", CALL_STATUSES), name="status"),
        CheckConstraint("amount > 0", name="amount"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    fund_id: Mapped[int] = mapped_column(ForeignKey("funds.id"))
    investor_id: Mapped[int] = mapped_column(ForeignKey("investors.id"))
    amount: Mapped[Decimal] = mapped_column(Money)
    due_date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    version: Mapped[int] = mapped_column(Integer, server_default="1")


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (CheckConstraint("amount > 0", name="amount"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    capital_call_id: Mapped[int] = mapped_column(ForeignKey("capital_calls.id"))
    amount: Mapped[Decimal] = mapped_column(Money)
    reference: Mapped[str] = mapped_column(Text)
    paid_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (
        CheckConstraint("steps BETWEEN 1 AND 50", name="steps"),
        CheckConstraint("failure_rate BETWEEN 0 AND 100", name="failure_rate"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(Text)
    steps: Mapped[int] = mapped_column(SmallInteger)
    failure_rate: Mapped[int] = mapped_column(SmallInteger)
    max_attempts: Mapped[int] = mapped_column(SmallInteger, server_default="3")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class WorkflowExecution(Base):
    __tablename__ = "workflow_executions"
    __table_args__ = (CheckConstraint(_in("status", EXECUTION_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id"))
    status: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(SmallInteger, server_default="1")
    queued_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class WorkflowRetry(Base):
    __tablename__ = "workflow_retries"
    __table_args__ = (CheckConstraint(_in("status", RETRY_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id"))
    execution_id: Mapped[int] = mapped_column(ForeignKey("workflow_executions.id"))
    attempts: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    last_error: Mapped[str] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
