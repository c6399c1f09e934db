"""Deterministic seed data at any scale, loaded with COPY.

``seed(dsn, scale=1)`` fills a migrated, empty database with a small but realistic dataset:

==========================  =========  ====================================================
table                       scale 1    shape
==========================  =========  ====================================================
``funds``                   50         vintages 2015-2026, three currencies
``investors``               2 000      pensions, endowments, family offices, ...
``commitments``             ~6 000     1-5 funds per investor
``capital_calls``           20 000     due 2023-2027; status follows the due date
``payments``                ~14 000    paid calls in full (1-2 instalments), some partial
``users``                   100        80 % of them an investor's portal user
``workflows``               200        1-12 steps, 0-30 % failure rate
``workflow_executions``     20 000     history; a few still queued or running
``workflow_retries``        ~1 000     failed runs waiting for a retry, or given up
==========================  =========  ====================================================

Every count grows linearly with ``scale`` (at least one row each). The same ``scale`` and
``seed`` always give the same rows, ids and timestamps included: every table draws from its
own random generator seeded by ``(seed, table)``, and times are offsets from a fixed
reference instant rather than from the clock. Each seed user's email is
``user{n}@example.com`` and password ``DEMO_PASSWORD``.

All rows go in through ``COPY`` (asyncpg's ``copy_records_to_table``) in one transaction, so
a failure leaves the database as it was; identity sequences are moved past the loaded ids,
and ``ANALYZE`` runs last so the planner sees the data's real shape from the first query.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import asyncpg

from redline.demo._auth import hash_password
from redline.demo._dsn import plain_dsn, redact
from redline.demo._errors import DemoConfigError, DemoError, SchemaError

DEMO_PASSWORD = "redline-demo"
"""The password of every seeded user."""

REFERENCE_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
"""'Now' for the seeded world: due dates before it are past, created times lie before it."""

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(table, rows_done, rows_total)`` after every batch loaded."""

_BATCH = 5_000

_BASE_COUNTS = {
    "funds": 50,
    "investors": 2_000,
    "users": 100,
    "capital_calls": 20_000,
    "workflows": 200,
    "workflow_executions": 20_000,
}

# Tables in load order (parents first); TRUNCATE takes them all at once.
TABLES = (
    "funds",
    "investors",
    "commitments",
    "capital_calls",
    "payments",
    "users",
    "workflows",
    "workflow_executions",
    "workflow_retries",
)

_FUND_WORDS = (
    "Alder", "Basalt", "Cedar", "Delta", "Ember", "Fjord", "Granite", "Harbor", "Iris",
    "Juniper", "Kestrel", "Larch", "Meridian", "Northwind", "Obsidian", "Pinnacle", "Quarry",
    "Redwood", "Summit", "Tidewater", "Umber", "Vantage", "Willow", "Yarrow", "Zephyr",
)  # fmt: skip
_FUND_KINDS = ("Capital", "Partners", "Ventures", "Growth", "Infrastructure", "Credit")
_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")
_CURRENCIES = ("USD", "EUR", "GBP")
_SURNAMES = (
    "Abernathy", "Bergstrom", "Castellanos", "Drummond", "Eriksen", "Fairbanks", "Gallagher",
    "Hollister", "Ishikawa", "Jablonski", "Kowalczyk", "Lindqvist", "Montague", "Nakamura",
    "Oyelaran", "Pemberton", "Quintero", "Rasmussen", "Sandoval", "Thornbury", "Underhill",
    "Valentijn", "Whitcombe", "Xiong", "Yellowhorse", "Zielinski", "Achterberg", "Blackwood",
    "Cardenas", "Delacroix", "Eastwood", "Fitzgerald", "Greenhalgh", "Hargreaves", "Iversen",
    "Jorgensen", "Kingsley", "Lockhart", "Marchetti", "Novak",
)  # fmt: skip
_INVESTOR_KINDS = (
    ("pension", "Pension Fund"),
    ("endowment", "University Endowment"),
    ("foundation", "Foundation"),
    ("family_office", "Family Office"),
    ("insurer", "Insurance"),
    ("sovereign", "Sovereign Wealth Fund"),
    ("fund_of_funds", "Fund of Funds"),
)
_COUNTRIES = ("US", "GB", "DE", "FR", "NL", "SE", "CH", "JP", "SG", "CA", "AU", "NO")
_TRIGGERS = ("schedule", "webhook", "capital_call.issued", "payment.received", "manual")
_WORKFLOW_VERBS = (
    "Send", "Reconcile", "Notify", "Sync", "Archive", "Export", "Validate", "Remind",
)  # fmt: skip
_WORKFLOW_OBJECTS = (
    "call notices", "payment receipts", "investor statements", "KYC documents",
    "overdue reminders", "NAV reports", "ledger entries", "wire instructions",
)  # fmt: skip
_ERRORS = (
    "TimeoutError: step 'deliver' exceeded 30s",
    "HTTP 502 from webhook endpoint",
    "ValidationError: missing field 'iban'",
    "ConnectionResetError: peer reset the connection",
)


@dataclasses.dataclass(frozen=True)
class SeedCounts:
    """How many rows ``seed`` loaded into each table."""

    funds: int
    investors: int
    commitments: int
    capital_calls: int
    payments: int
    users: int
    workflows: int
    workflow_executions: int
    workflow_retries: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def scaled_counts(scale: float) -> dict[str, int]:
    """The fixed row counts at ``scale`` (the others follow from the generated data)."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise DemoConfigError(f"scale={scale!r}: give a number above 0, e.g. 1 or 0.05")
    return {table: max(1, round(base * scale)) for table, base in _BASE_COUNTS.items()}


def _rng(seed: int, table: str) -> random.Random:
    return random.Random(f"{seed}:{table}")


def _money(value: float) -> Decimal:
    return Decimal(f"{value:.2f}")


def _before_reference(rng: random.Random, days: int) -> dt.datetime:
    return REFERENCE_TIME - dt.timedelta(seconds=rng.randrange(days * 86_400))


def _funds(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    rows = []
    for fund_id in range(1, count + 1):
        word = _FUND_WORDS[(fund_id - 1) % len(_FUND_WORDS)]
        kind = rng.choice(_FUND_KINDS)
        number = _ROMAN[((fund_id - 1) // len(_FUND_WORDS)) % len(_ROMAN)]
        rows.append(
            (
                fund_id,
                f"{word} {kind} Fund {number}",
                rng.randint(2015, 2026),
                rng.choice(_CURRENCIES),
                _money(rng.randint(50, 2_000) * 1_000_000),
                _before_reference(rng, 3_000),
            )
        )
    return rows


def _investors(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    rows = []
    for investor_id in range(1, count + 1):
        first = rng.choice(_SURNAMES)
        second = rng.choice(_SURNAMES)
        kind, label = rng.choice(_INVESTOR_KINDS)
        name = f"{first}-{second} {label}" if rng.random() < 0.4 else f"{first} {label}"
        rows.append(
            (
                investor_id,
                f"{name} #{investor_id}",
                kind,
                rng.choice(_COUNTRIES),
                _before_reference(rng, 3_000),
            )
        )
    return rows


def _commitments(rng: random.Random, investors: int, funds: int) -> list[tuple[Any, ...]]:
    rows = []
    for investor_id in range(1, investors + 1):
        for fund_id in sorted(rng.sample(range(1, funds + 1), min(funds, rng.randint(1, 5)))):
            amount = _money(rng.randint(1, 200) * 250_000)
            created = _before_reference(rng, 2_000)
            rows.append((len(rows) + 1, fund_id, investor_id, amount, created))
    return rows


def _call_status(rng: random.Random, due: dt.date) -> str:
    roll = rng.random()
    if due < REFERENCE_TIME.date():
        return "paid" if roll < 0.7 else "overdue" if roll < 0.9 else "cancelled"
    return "draft" if roll < 0.3 else "issued" if roll < 0.9 else "cancelled"


def _calls_and_payments(
    rng: random.Random, count: int, commitments: Sequence[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []
    payments: list[tuple[Any, ...]] = []
    first_due = dt.date(2023, 1, 1)
    for call_id in range(1, count + 1):
        _, fund_id, investor_id, committed, _ = rng.choice(commitments)
        amount = _money(float(committed) * rng.uniform(0.02, 0.25))
        due = first_due + dt.timedelta(days=rng.randrange(5 * 365))
        status = _call_status(rng, due)
        created = dt.datetime.combine(due, dt.time(), dt.UTC) - dt.timedelta(
            days=rng.randint(10, 60), seconds=rng.randrange(86_400)
        )
        updated = created + dt.timedelta(seconds=rng.randrange(30 * 86_400))
        version = 1 if status == "draft" else rng.randint(2, 4)
        calls.append(
            (call_id, fund_id, investor_id, amount, due, status, created, updated, version)
        )
        if status == "paid" or (status in ("issued", "overdue") and rng.random() < 0.2):
            parts = [amount] if rng.random() < 0.6 else _split_amount(rng, amount)
            if status != "paid":
                parts = [_money(float(amount) * rng.uniform(0.1, 0.6))]
            for part in parts:
                paid_at = created + dt.timedelta(seconds=rng.randrange(60 * 86_400))
                payments.append(
                    (
                        len(payments) + 1,
                        call_id,
                        part,
                        f"WIRE-{call_id:08d}-{len(payments)}",
                        paid_at,
                    )
                )
    return calls, payments


def _split_amount(rng: random.Random, amount: Decimal) -> list[Decimal]:
    first = _money(float(amount) * rng.uniform(0.3, 0.7))
    return [first, amount - first]


def _users(rng: random.Random, count: int, investors: int) -> list[tuple[Any, ...]]:
    # One hash for every seeded user: scrypt is slow on purpose, and seeding thousands of
    # users must not take minutes. Users created through the API get their own salt.
    password_hash = hash_password(DEMO_PASSWORD, salt=rng.randbytes(16))
    rows = []
    for user_id in range(1, count + 1):
        investor_id = (user_id - 1) % investors + 1 if rng.random() < 0.8 else None
        created = _before_reference(rng, 1_000)
        name = f"{rng.choice(_SURNAMES)} User {user_id}"
        rows.append(
            (
                user_id,
                f"user{user_id}@example.com",
                name,
                password_hash,
                investor_id,
                created,
                created,
            )
        )
    return rows


def _workflows(rng: random.Random, count: int, users: int) -> list[tuple[Any, ...]]:
    rows = []
    for workflow_id in range(1, count + 1):
        name = f"{rng.choice(_WORKFLOW_VERBS)} {rng.choice(_WORKFLOW_OBJECTS)} #{workflow_id}"
        created = _before_reference(rng, 700)
        rows.append(
            (
                workflow_id,
                name,
                rng.choice(_TRIGGERS),
                rng.randint(1, 12),
                rng.choice((0, 0, 2, 5, 10, 30)),
                3,
                rng.randint(1, users),
                created,
                created,
            )
        )
    return rows


def _executions_and_retries(
    rng: random.Random, count: int, workflows: Sequence[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    executions: list[tuple[Any, ...]] = []
    retries: list[tuple[Any, ...]] = []
    for execution_id in range(1, count + 1):
        workflow = rng.choice(workflows)
        workflow_id, steps, failure_rate = workflow[0], workflow[3], workflow[4]
        queued = _before_reference(rng, 365)
        if count - execution_id < max(1, count // 500):
            status = rng.choice(("queued", "running"))
        else:
            status = "failed" if rng.randrange(100) < failure_rate else "succeeded"
        started = finished = duration = error = None
        if status != "queued":
            started = queued + dt.timedelta(milliseconds=rng.randint(5, 2_000))
        if status in ("succeeded", "failed"):
            duration = steps * rng.randint(20, 400)
            finished = started + dt.timedelta(milliseconds=duration)
        if status == "failed":
            error = rng.choice(_ERRORS)
        attempt = 1 if status != "failed" else rng.randint(1, 3)
        executions.append(
            (execution_id, workflow_id, status, attempt, queued, started, finished, duration, error)
        )
        if status == "failed" and rng.random() < 0.5:
            dead = attempt >= 3
            retries.append(
                (
                    len(retries) + 1,
                    workflow_id,
                    execution_id,
                    attempt,
                    "dead" if dead else "pending",
                    error,
                    finished + dt.timedelta(seconds=30 * 2**attempt),
                    finished,
                    finished,
                )
            )
    return executions, retries


_COLUMNS = {
    "funds": ("id", "name", "vintage_year", "currency", "target_size", "created_at"),
    "investors": ("id", "name", "kind", "country", "created_at"),
    "commitments": ("id", "fund_id", "investor_id", "amount", "created_at"),
    "capital_calls": (
        "id", "fund_id", "investor_id", "amount", "due_date", "status", "created_at",
        "updated_at", "version",
    ),
    "payments": ("id", "capital_call_id", "amount", "reference", "paid_at"),
    "users": ("id", "email", "name", "password_hash", "investor_id", "created_at", "updated_at"),
    "workflows": (
        "id", "name", "trigger", "steps", "failure_rate", "max_attempts", "owner_id",
        "created_at", "updated_at",
    ),
    "workflow_executions": (
        "id", "workflow_id", "status", "attempt", "queued_at", "started_at", "finished_at",
        "duration_ms", "error",
    ),
    "workflow_retries": (
        "id", "workflow_id", "execution_id", "attempts", "status", "last_error",
        "next_attempt_at", "created_at", "updated_at",
    ),
}  # fmt: skip


def generate(scale: float = 1.0, *, seed: int = 0) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows at ``scale``, in load order, without touching a database."""
    counts = scaled_counts(scale)
    data: dict[str, list[tuple[Any, ...]]] = {}
    data["funds"] = _funds(_rng(seed, "funds"), counts["funds"])
    data["investors"] = _investors(_rng(seed, "investors"), counts["investors"])
    data["commitments"] = _commitments(
        _rng(seed, "commitments"), counts["investors"], counts["funds"]
    )
    data["capital_calls"], data["payments"] = _calls_and_payments(
        _rng(seed, "capital_calls"), counts["capital_calls"], data["commitments"]
    )
    data["users"] = _users(_rng(seed, "users"), counts["users"], counts["investors"])
    data["workflows"] = _workflows(_rng(seed, "workflows"), counts["workflows"], counts["users"])
    data["workflow_executions"], data["workflow_retries"] = _executions_and_retries(
        _rng(seed, "workflow_executions"), counts["workflow_executions"], data["workflows"]
    )
    return data


def _batches(rows: list[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    for start in range(0, len(rows), _BATCH):
        yield rows[start : start + _BATCH]


async def _check_empty(connection: asyncpg.Connection, dsn: str, replace: bool) -> None:
    missing = [
        table
        for table in TABLES
        if await connection.fetchval("SELECT to_regclass($1)", f"public.{table}") is None
    ]
    if missing:
        raise SchemaError(
            f"{redact(dsn)} lacks tables {', '.join(missing)}; run "
            "redline.demo.upgrade(dsn) before seeding"
        )
    if replace:
        await connection.execute(f"TRUNCATE {', '.join(TABLES)}, sessions RESTART IDENTITY")
        return
    for table in TABLES:
        if await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            raise DemoError(
                f"table {table} in {redact(dsn)} already has rows; seed an empty database, "
                "or pass replace=True to empty it first"
            )


async def aseed(
    dsn: str,
    scale: float = 1.0,
    *,
    seed: int = 0,
    progress: ProgressCallback | bool = False,
    replace: bool = False,
    analyze: bool = True,
) -> SeedCounts:
    """Load the seed data into the migrated database at ``dsn``; see the module docstring.

    ``progress=True`` shows a Rich progress bar; a callable receives ``(table, done, total)``
    after each batch instead. ``replace=True`` empties the tables first; otherwise a table
    that already has rows is an error.
    """
    scaled_counts(scale)
    if progress is True:
        return await _with_rich_progress(dsn, scale, seed=seed, replace=replace, analyze=analyze)
    report = progress if callable(progress) else None
    data = await asyncio.to_thread(generate, scale, seed=seed)
    connection = await asyncpg.connect(plain_dsn(dsn))
    try:
        async with connection.transaction():
            await _check_empty(connection, dsn, replace)
            for table, rows in data.items():
                done = 0
                for batch in _batches(rows):
                    await connection.copy_records_to_table(
                        table, records=batch, columns=_COLUMNS[table]
                    )
                    done += len(batch)
                    if report is not None:
                        report(table, done, len(rows))
                if report is not None and not rows:
                    report(table, 0, 0)
                await connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
        # The dashboard's view (revision "dashboard_view") was built over the empty tables.
        if await connection.fetchval("SELECT to_regclass('public.dashboard_monthly')"):
            await connection.execute("REFRESH MATERIALIZED VIEW dashboard_monthly")
        if analyze:
            await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return SeedCounts(**{table: len(rows) for table, rows in data.items()})


async def _with_rich_progress(
    dsn: str, scale: float, *, seed: int, replace: bool, analyze: bool
) -> SeedCounts:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns) as bar:
        tasks: dict[str, Any] = {}

        def report(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done)

        return await aseed(dsn, scale, seed=seed, progress=report, replace=replace, analyze=analyze)


def seed(
    dsn: str,
    scale: float = 1.0,
    *,
    seed: int = 0,
    progress: ProgressCallback | bool = False,
    replace: bool = False,
    analyze: bool = True,
) -> SeedCounts:
    """Synchronous ``aseed``: for scripts and threads without a running event loop."""
    return asyncio.run(
        aseed(dsn, scale, seed=seed, progress=progress, replace=replace, analyze=analyze)
    )
