"""SQLAlchemy instrumentation, against a real PostgreSQL through psycopg (sync) and asyncpg
(async): every behaviour test runs on both, through the same driver interface."""

import asyncio
import collections
import logging
import math
import string
import threading
import time

import pytest
import sqlalchemy
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from redline import monitor
from redline.monitor._sqlalchemy import _operation

# -- drivers: one interface over a sync and an async engine -------------------------------


class SyncDriver:
    def __init__(self, url, **options):
        self.engine = create_engine(
            url.replace("postgresql://", "postgresql+psycopg://"), **options
        )

    def execute(self, sql, params=None):
        with self.engine.connect() as conn:
            result = conn.execute(text(sql), params or {})
            rows = result.all() if result.returns_rows else None
            conn.commit()
            return rows

    def connect(self):
        return self.engine.connect()

    def release(self, conn):
        conn.close()

    def invalidate(self, conn):
        conn.invalidate()

    def wait_behind_held_connection(self, seconds):
        """Check out the only connection, and another that waits ``seconds`` for it."""
        held = self.engine.connect()
        releaser = threading.Timer(seconds, held.close)
        releaser.start()
        with self.engine.connect():
            pass
        releaser.join()

    def dispose(self):
        self.engine.dispose()


class AsyncDriver:
    def __init__(self, url, **options):
        self.runner = asyncio.Runner()
        self.engine = create_async_engine(
            url.replace("postgresql://", "postgresql+asyncpg://"), **options
        )

    def execute(self, sql, params=None):
        async def execute():
            async with self.engine.connect() as conn:
                result = await conn.execute(text(sql), params or {})
                rows = result.all() if result.returns_rows else None
                await conn.commit()
                return rows

        return self.runner.run(execute())

    def connect(self):
        async def connect():
            return await self.engine.connect()

        return self.runner.run(connect())

    def release(self, conn):
        self.runner.run(conn.close())

    def invalidate(self, conn):
        self.runner.run(conn.invalidate())

    def wait_behind_held_connection(self, seconds):
        async def scenario():
            held = await self.engine.connect()

            async def release():
                await asyncio.sleep(seconds)
                await held.close()

            releaser = asyncio.create_task(release())
            async with self.engine.connect():
                pass
            await releaser

        self.runner.run(scenario())

    def dispose(self):
        self.runner.run(self.engine.dispose())


@pytest.fixture(params=["psycopg", "asyncpg"])
def make_driver(request, pg_url):
    drivers = []

    def make(**options):
        kind = SyncDriver if request.param == "psycopg" else AsyncDriver
        driver = kind(pg_url, **options)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.dispose()
        if isinstance(driver, AsyncDriver):
            driver.runner.close()


@pytest.fixture
def registry():
    return monitor.Registry()


@pytest.fixture
def instrument(registry):
    monitors = []

    def instrument(driver, **options):
        options = {"name": "main", "registry": registry, **options}
        engine_monitor = monitor.instrument_engine(driver.engine, **options)
        monitors.append(engine_monitor)
        return engine_monitor

    yield instrument
    for engine_monitor in monitors:
        engine_monitor.close()


def sample(registry, name, **labels):
    """The value of one series (a float, or a HistogramValue), None if it does not exist."""
    for family in registry.collect():
        if family.name == name:
            return family.samples.get(tuple(labels[label] for label in family.labelnames))
    return None


def queries(registry, engine="main"):
    return {
        op: sample(registry, "db_queries_total", engine=engine, operation=op)
        for op in ("SELECT", "INSERT", "UPDATE", "DELETE", "other")
    }


# -- queries ------------------------------------------------------------------------------


def test_every_statement_is_counted_once_by_operation(make_driver, instrument, registry):
    driver = make_driver()
    instrument(driver)

    driver.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    driver.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
    driver.execute("INSERT INTO items VALUES (:id, :name)", {"id": 3, "name": "c"})
    driver.execute("SELECT * FROM items")
    driver.execute("/* report */ (SELECT count(*) FROM items)")
    driver.execute("WITH one AS (SELECT 1 AS id) UPDATE items SET name = 'z' WHERE id = 1")
    driver.execute("delete from items where id = 2")

    assert queries(registry) == {"SELECT": 2, "INSERT": 2, "UPDATE": 1, "DELETE": 1, "other": 1}
    assert (
        sample(registry, "db_query_duration_seconds", engine="main", operation="INSERT").count == 2
    )


def test_statements_sent_on_the_driver_connection_are_recorded_by_hand(
    pg_url, instrument, registry
):
    driver = AsyncDriver(pg_url, pool_size=1)
    engine_monitor = instrument(driver, slow_query_seconds=0.05)

    async def raw(sql, *args):
        async with driver.engine.connect() as conn:
            connection = (await conn.get_raw_connection()).driver_connection
            started = time.perf_counter()
            try:
                rows = await connection.fetch(sql, *args)
            except Exception as exc:
                engine_monitor.record(sql, time.perf_counter() - started, exc)
                raise
            engine_monitor.record(sql, time.perf_counter() - started)
            return rows

    try:
        rows = driver.runner.run(raw("SELECT $1::int + 1 AS n, pg_sleep(0.06)", 41))
        assert rows[0]["n"] == 42
        with pytest.raises(Exception) as raised:
            driver.runner.run(raw("SELECT 1 / 0"))
        # SQLAlchemy's events saw neither statement; record() counted both, and the error.
        assert queries(registry)["SELECT"] == 2
        duration = sample(registry, "db_query_duration_seconds", engine="main", operation="SELECT")
        assert duration.count == 2 and duration.sum >= 0.06
        error = type(raised.value).__name__
        assert error == "DivisionByZeroError"
        assert sample(registry, "db_query_errors_total", engine="main", error=error) == 1
        assert [entry.statement for entry in engine_monitor.slow_queries()] == [
            "SELECT ?::int + ? AS n, pg_sleep(?)"
        ]
        engine_monitor.close()
        engine_monitor.record("SELECT 1", 0.001)  # after close: ignored
        assert queries(registry)["SELECT"] == 2
    finally:
        driver.dispose()
        driver.runner.close()


def test_an_executemany_is_one_execution(make_driver, instrument, registry):
    driver = make_driver()
    driver.execute("CREATE TABLE items (id int)")
    instrument(driver)

    driver.execute("INSERT INTO items VALUES (:id)", [{"id": i} for i in range(50)])

    assert queries(registry)["INSERT"] == 1
    assert driver.execute("SELECT count(*) FROM items") == [(50,)]


def test_a_slow_statement_lands_in_the_histogram_and_the_slow_log(
    make_driver, instrument, registry, caplog
):
    driver = make_driver()
    engine_monitor = instrument(driver)
    started = time.time()

    with caplog.at_level(logging.WARNING, logger="redline.monitor.sqlalchemy"):
        driver.execute("SELECT pg_sleep(0.3)")
        driver.execute("SELECT 1")

    duration = sample(registry, "db_query_duration_seconds", engine="main", operation="SELECT")
    assert duration.count == 2
    assert 0.3 <= duration.sum < 2.0
    assert duration.quantile(1.0) >= 0.3
    [slow] = engine_monitor.slow_queries()
    assert slow.statement == "SELECT pg_sleep(?)"
    assert (slow.engine, slow.operation, slow.count) == ("main", "SELECT", 1)
    assert 0.3 <= slow.max_seconds == slow.last_seconds == slow.total_seconds < 2.0
    assert started <= slow.last_seen <= time.time()
    assert sample(registry, "db_slow_queries_total", engine="main", operation="SELECT") == 1
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "SELECT pg_sleep(?)" in record.getMessage()
    assert record.db_statement == "SELECT pg_sleep(?)"
    assert record.db_duration_seconds == slow.max_seconds


def test_slow_runs_of_one_statement_shape_share_an_entry(make_driver, instrument):
    driver = make_driver()
    engine_monitor = instrument(driver, slow_query_seconds=0.1)

    driver.execute("SELECT pg_sleep(0.15)")
    driver.execute("SELECT pg_sleep(:seconds)", {"seconds": 0.3})

    [slow] = engine_monitor.slow_queries()
    assert slow.statement == "SELECT pg_sleep(?)"
    assert slow.count == 2
    assert slow.max_seconds >= 0.3 and slow.last_seconds == slow.max_seconds
    assert slow.total_seconds >= 0.45
    assert slow.mean_seconds == slow.total_seconds / 2


def test_the_slow_log_and_its_warning_never_hold_parameter_or_literal_values(
    make_driver, instrument, caplog
):
    driver = make_driver()
    engine_monitor = instrument(driver)

    with caplog.at_level(logging.WARNING, logger="redline.monitor.sqlalchemy"):
        driver.execute(
            "SELECT pg_sleep(0.25), 'hunter2' AS password, CAST(:token AS text) AS token, 4711 "
            "-- for alice@example.com",
            {"token": "tok-8f3a9c"},
        )

    [slow] = engine_monitor.slow_queries()
    assert slow.statement == "SELECT pg_sleep(?), ? AS password, CAST(? AS text) AS token, ?"
    logged = " ".join(record.getMessage() for record in caplog.records)
    for secret in ("hunter2", "tok-8f3a9c", "alice", "4711"):
        assert secret not in slow.statement
        assert secret not in logged


def test_failed_statements_are_counted_by_the_class_the_application_catches(
    make_driver, instrument, registry
):
    driver = make_driver()
    driver.execute("CREATE TABLE items (id int PRIMARY KEY)")
    driver.execute("INSERT INTO items VALUES (1)")
    instrument(driver)
    raised = collections.Counter()

    for statement in ("SELECT * FROM no_such_table", "INSERT INTO items VALUES (1)") + (
        "SELECT 1 / 0",
    ) * 2:
        with pytest.raises(sqlalchemy.exc.DBAPIError) as caught:
            driver.execute(statement)
        raised[type(caught.value).__name__] += 1

    errors = {
        error: sample(registry, "db_query_errors_total", engine="main", error=error)
        for error in raised
    }
    assert errors == dict(raised)
    # Both drivers map these two alike; a division by zero is a DataError under psycopg but
    # a plain DBAPIError under asyncpg, whose dialect maps fewer server errors.
    assert raised["ProgrammingError"] == raised["IntegrityError"] == 1
    # A failed statement is still a statement: errors / queries is the error ratio.
    assert queries(registry) == {"SELECT": 3, "INSERT": 1, "UPDATE": 0, "DELETE": 0, "other": 0}


def test_a_statement_that_fails_slowly_is_in_the_slow_log(make_driver, instrument, registry):
    driver = make_driver()
    engine_monitor = instrument(driver)

    with pytest.raises(sqlalchemy.exc.DBAPIError) as caught:
        driver.execute("SELECT pg_sleep(0.25), 1 / n FROM generate_series(0, 0) AS n")

    [slow] = engine_monitor.slow_queries()
    assert slow.statement == "SELECT pg_sleep(?), ? / n FROM generate_series(?, ?) AS n"
    assert slow.max_seconds >= 0.25
    error = type(caught.value).__name__
    assert sample(registry, "db_query_errors_total", engine="main", error=error) == 1


# -- the pool -----------------------------------------------------------------------------


def pool_state(registry):
    return {
        name: sample(registry, f"db_pool_{name}", engine="main")
        for name in ("size", "checked_out", "overflow", "usage_ratio")
    }


def test_checked_out_rises_while_connections_are_held_and_returns_to_zero(
    make_driver, instrument, registry
):
    driver = make_driver(pool_size=2, max_overflow=3)
    instrument(driver)
    assert pool_state(registry) == {"size": 2, "checked_out": 0, "overflow": 0, "usage_ratio": 0}

    held = [driver.connect() for _ in range(3)]
    assert pool_state(registry) == {
        "size": 2,
        "checked_out": 3,
        "overflow": 1,
        "usage_ratio": 0.6,
    }
    assert b'db_pool_usage_ratio{engine="main"} 0.6\n' in monitor.generate_latest(registry)

    for conn in held:
        driver.release(conn)
    assert pool_state(registry) == {"size": 2, "checked_out": 0, "overflow": 0, "usage_ratio": 0}
    assert sample(registry, "db_pool_connections_created_total", engine="main") == 3


def test_pool_gauges_merge_across_workers_by_sum_except_the_ratio_by_max(
    make_driver, instrument, registry
):
    instrument(make_driver())

    modes = {
        family.name: family.multiprocess_mode
        for family in registry.collect()
        if family.name.startswith("db_pool") and family.kind == "gauge"
    }
    assert modes == {
        "db_pool_checked_out": "sum",
        "db_pool_size": "sum",
        "db_pool_overflow": "sum",
        "db_pool_usage_ratio": "max",
    }


def test_a_checkout_blocked_on_an_exhausted_pool_is_timed(make_driver, instrument, registry):
    driver = make_driver(pool_size=1, max_overflow=0)
    instrument(driver)

    driver.wait_behind_held_connection(0.3)

    wait = sample(registry, "db_pool_wait_seconds", engine="main")
    assert wait.count == 2
    # The sync driver starts the release timer just before the second checkout starts.
    assert 0.29 <= wait.quantile(1.0) < 2.0
    assert wait.quantile(0.5) < 0.29  # the first checkout did not wait
    use = sample(registry, "db_pool_use_seconds", engine="main")
    assert use.count == 2
    assert use.quantile(1.0) >= 0.3  # the held connection


def test_a_checkout_that_times_out_is_counted_with_its_wait(make_driver, instrument, registry):
    driver = make_driver(pool_size=1, max_overflow=0, pool_timeout=0.2)
    instrument(driver)
    held = driver.connect()

    with pytest.raises(sqlalchemy.exc.TimeoutError):
        driver.connect()

    assert sample(registry, "db_pool_timeouts_total", engine="main") == 1
    assert sample(registry, "db_pool_wait_seconds", engine="main").quantile(1.0) >= 0.19
    assert pool_state(registry)["usage_ratio"] == 1.0
    driver.release(held)
    assert pool_state(registry)["checked_out"] == 0


def test_an_invalidated_connection_is_counted_and_checked_back_in(
    make_driver, instrument, registry
):
    driver = make_driver()
    instrument(driver)
    conn = driver.connect()

    driver.invalidate(conn)
    driver.release(conn)
    driver.execute("SELECT 1")

    assert sample(registry, "db_pool_invalidations_total", engine="main") == 1
    assert sample(registry, "db_pool_connections_created_total", engine="main") == 2
    assert pool_state(registry)["checked_out"] == 0


def test_monitoring_survives_engine_dispose(make_driver, instrument, registry):
    driver = make_driver()
    instrument(driver)
    driver.execute("SELECT 1")
    held = driver.connect()

    driver.dispose()
    assert pool_state(registry)["checked_out"] == 1  # lent by the pool dispose() replaced
    driver.release(held)
    driver.execute("SELECT 1")

    assert queries(registry)["SELECT"] == 2
    assert sample(registry, "db_pool_wait_seconds", engine="main").count == 3
    assert sample(registry, "db_pool_connections_created_total", engine="main") == 2
    assert pool_state(registry)["checked_out"] == 0


def test_a_detached_connection_no_longer_counts_as_checked_out(pg_url, instrument, registry):
    driver = SyncDriver(pg_url)
    instrument(driver)
    conn = driver.connect()
    assert pool_state(registry)["checked_out"] == 1

    conn.detach()
    assert pool_state(registry)["checked_out"] == 0
    conn.close()
    driver.dispose()


def test_an_unbounded_pool_has_no_usage_ratio(pg_url, instrument, registry):
    driver = SyncDriver(pg_url, pool_size=0)
    instrument(driver)
    conn = driver.connect()

    state = pool_state(registry)
    assert state["checked_out"] == 1
    assert math.isnan(state["usage_ratio"])
    conn.close()
    driver.dispose()


def test_a_pool_without_a_size_exports_only_checked_out(pg_url, instrument, registry):
    driver = SyncDriver(pg_url, poolclass=NullPool)
    instrument(driver)
    conn = driver.connect()

    assert pool_state(registry) == {
        "size": None,
        "checked_out": 1,
        "overflow": None,
        "usage_ratio": None,
    }
    conn.close()
    assert pool_state(registry)["checked_out"] == 0
    driver.dispose()


# -- the slow-query log -------------------------------------------------------------------


def test_the_slow_log_keeps_the_most_recently_seen_statements(make_driver, instrument):
    driver = make_driver()
    engine_monitor = instrument(driver, slow_query_seconds=0, slow_log_size=2)

    driver.execute("SELECT pg_sleep(0.01) AS a")
    driver.execute("SELECT pg_sleep(0.1) AS b")
    driver.execute("SELECT pg_sleep(0.01) AS a")
    driver.execute("SELECT pg_sleep(0.2) AS c")

    assert [q.statement for q in engine_monitor.slow_queries()] == [
        "SELECT pg_sleep(?) AS c",
        "SELECT pg_sleep(?) AS a",
    ]


def test_slow_queries_lists_every_engine_of_a_registry_worst_first(
    make_driver, instrument, registry
):
    one, two = make_driver(), make_driver()
    instrument(one, name="one", slow_query_seconds=0.05)
    instrument(two, name="two", slow_query_seconds=0.05)

    one.execute("SELECT pg_sleep(0.1) AS first")
    two.execute("SELECT pg_sleep(0.3) AS second")
    one.execute("SELECT pg_sleep(0.2) AS third")

    assert [(q.engine, q.statement) for q in monitor.slow_queries(registry)] == [
        ("two", "SELECT pg_sleep(?) AS second"),
        ("one", "SELECT pg_sleep(?) AS third"),
        ("one", "SELECT pg_sleep(?) AS first"),
    ]
    assert monitor.slow_queries(monitor.Registry()) == []


def test_no_warning_is_logged_without_a_logger(make_driver, instrument, caplog):
    driver = make_driver()
    engine_monitor = instrument(driver, slow_query_seconds=0, logger=None)

    with caplog.at_level(logging.DEBUG):
        driver.execute("SELECT 1")

    assert len(engine_monitor.slow_queries()) == 1
    assert not [r for r in caplog.records if r.name.startswith("redline")]


# -- lifecycle ----------------------------------------------------------------------------


def test_close_stops_recording_and_removes_the_pool_gauges(make_driver, registry):
    driver = make_driver()
    engine_monitor = monitor.instrument_engine(driver.engine, name="main", registry=registry)
    driver.execute("SELECT 1")

    engine_monitor.close()
    engine_monitor.close()
    driver.execute("SELECT 1")

    assert queries(registry)["SELECT"] == 1
    assert pool_state(registry) == dict.fromkeys(("size", "checked_out", "overflow", "usage_ratio"))
    sync_engine = getattr(driver.engine, "sync_engine", driver.engine)
    assert "connect" not in vars(sync_engine.pool)
    with monitor.instrument_engine(driver.engine, name="main", registry=registry):
        driver.execute("SELECT 1")
    assert queries(registry)["SELECT"] == 2
    assert monitor.slow_queries(registry) == []


def test_an_engine_cannot_be_instrumented_twice(make_driver, instrument, registry):
    driver = make_driver()
    instrument(driver)

    with pytest.raises(monitor.MetricError, match="already instrumented as engine 'main'"):
        monitor.instrument_engine(driver.engine, name="other", registry=monitor.Registry())
    with pytest.raises(monitor.MetricError, match="engine name 'main' is already used"):
        monitor.instrument_engine(make_driver().engine, name="main", registry=registry)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": ""}, "name must be a non-empty string"),
        ({"slow_query_seconds": -1}, "slow_query_seconds must be >= 0"),
        ({"slow_query_seconds": math.nan}, "slow_query_seconds must be >= 0"),
        ({"slow_log_size": 0}, "slow_log_size must be an int >= 1"),
    ],
)
def test_bad_options_are_refused(options, message):
    engine = create_engine("sqlite://")
    with pytest.raises(monitor.MetricError, match=message):
        monitor.instrument_engine(engine, registry=monitor.Registry(), **options)


def test_a_clashing_metric_in_the_registry_is_reported(registry):
    monitor.Counter("db_queries", "Someone else's.", ("service",), registry=registry)

    with pytest.raises(monitor.MetricError, match="has labels \\('service',\\)"):
        monitor.instrument_engine(create_engine("sqlite://"), registry=registry)


# -- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        # strings, with every way of putting a quote in one
        ("SELECT * FROM t WHERE a = 'it''s'", "SELECT * FROM t WHERE a = ?"),
        ("SELECT E'it\\'s', e'a\\\\', N'x', X'ff', B'01', U&'d\\0061t'", "SELECT ?, ?, ?, ?, ?, ?"),
        ("SELECT 'C:\\', 'next'", "SELECT ?, ?"),
        ("SELECT $$it's $1$$, $body$ x $$ y $body$", "SELECT ?, ?"),
        ("SELECT 'unterminated, secret", "SELECT ?"),
        ("SELECT INTERVAL '1 day', DATE '2024-01-01'", "SELECT INTERVAL ?, DATE ?"),
        # numbers, and digits that are names
        ("SELECT 1, 1.5, .5, 1e10, 2.5E-3, 0x1F, 1_000", "SELECT ?, ?, ?, ?, ?, ?, ?"),
        ("SELECT t1.col2 FROM t1 LIMIT 10 OFFSET 20", "SELECT t1.col2 FROM t1 LIMIT ? OFFSET ?"),
        ("SELECT a - 1, -2, (+3), x = -4, f(-5)", "SELECT a - ?, ?, (?), x = ?, f(?)"),
        # bind markers of every paramstyle; casts are kept
        (
            "UPDATE t SET a = %(a)s, b = %s, c = $1, d = :d, e = ? WHERE f = $2::int",
            "UPDATE t SET a = ?, b = ?, c = ?, d = ?, e = ? WHERE f = ?::int",
        ),
        ("SELECT a::text, b -> 'k' ->> 'j' FROM t", "SELECT a::text, b -> ? ->> ? FROM t"),
        # comments, nested ones too, and whitespace
        ("-- user alice\nSELECT 1 /* a /* b */ c */ ;", "SELECT ?"),
        ("SELECT\n\t a ,\r\n  b\nFROM   t", "SELECT a , b FROM t"),
        ("SELECT a/**/FROM t", "SELECT a FROM t"),
        # quoted identifiers are names, kept as written
        ('SELECT "Weird ""Name"" 1", `x` FROM "T"', 'SELECT "Weird ""Name"" 1", `x` FROM "T"'),
        # lists collapse to one item; a list of different things is kept
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (?)"),
        (
            "SELECT * FROM t WHERE id IN (%(id_1_1)s::INTEGER, %(id_1_2)s::INTEGER) "
            "AND x NOT IN ($3, $4)",
            "SELECT * FROM t WHERE id IN (?::INTEGER) AND x NOT IN (?)",
        ),
        (
            "SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4))",
            "SELECT * FROM t WHERE (a, b) IN ((?, ?))",
        ),
        (
            "SELECT * FROM t WHERE a IN (b, c) OR a IN (1)",
            "SELECT * FROM t WHERE a IN (b, c) OR a IN (?)",
        ),
        (
            "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c IN (1, 2))",
            "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c IN (?))",
        ),
        (
            "SELECT * FROM t WHERE a = ANY(ARRAY[1, 2, 3])",
            "SELECT * FROM t WHERE a = ANY(ARRAY[?])",
        ),
        (
            "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z') RETURNING id",
            "INSERT INTO t (a, b) VALUES (?, ?) RETURNING id",
        ),
        ("INSERT INTO t (a, b) VALUES (%(a)s, %(b)s)", "INSERT INTO t (a, b) VALUES (?, ?)"),
        ("INSERT INTO t VALUES (1, now()), (2, 3)", "INSERT INTO t VALUES (?, now()), (?, ?)"),
        ("", ""),
    ],
)
def test_normalise_statement(statement, expected):
    assert monitor.normalise_statement(statement) == expected


def test_strings_are_read_with_the_servers_escaping_rules():
    statement = "SELECT 'a\\', b, \"c\" FROM t"
    mysql = {"backslash_escapes": True, "double_quoted_strings": True}

    assert monitor.normalise_statement(statement) == 'SELECT ?, b, "c" FROM t'
    assert monitor.normalise_statement(statement, **mysql) == "SELECT ?"
    assert monitor.normalise_statement('SELECT "c" FROM t', **mysql) == "SELECT ? FROM t"


def test_a_huge_statement_is_cut_without_showing_a_value():
    rows = ", ".join(f"({i}, 'secret{i}')" for i in range(20_000))
    huge = f"INSERT INTO t VALUES {rows}"

    normalised = monitor.normalise_statement(huge)

    assert normalised.startswith("INSERT INTO t VALUES (?, ?)")
    assert normalised.endswith("…")
    assert "secret" not in normalised
    assert len(monitor.normalise_statement("SELECT " + "a, " * 5000 + "b")) == 4096


def _literal(kind, secret):
    if kind == "string":
        return "'" + secret.replace("'", "''") + "'"
    if kind == "escape":
        return "E'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == "dollar":
        return f"$q$ {secret} $q$"
    if kind == "line comment":
        return "1 -- " + secret.replace("\n", " ") + "\n"
    return "1 /* " + secret.replace("*/", "") + " */"


@given(
    secret=st.text(
        alphabet=string.ascii_letters + string.digits + " '\"\\$-/*;\n(),%", max_size=40
    ),
    kinds=st.lists(
        st.sampled_from(["string", "escape", "dollar", "line comment", "block comment"]),
        min_size=1,
        max_size=3,
    ),
)
def test_no_literal_or_comment_text_survives_normalisation(secret, kinds):
    secret = "zq" + secret  # a marker no SQL here contains
    literals = [_literal(kind, secret) for kind in kinds]
    statement = f"SELECT {', '.join(literals)} FROM t WHERE a IN ({literals[0]}, 2)"

    assert "zq" not in monitor.normalise_statement(statement)


@given(st.text(max_size=200), st.booleans(), st.booleans())
def test_normalisation_never_fails_and_is_idempotent(statement, backslashes, double_quotes):
    options = {"backslash_escapes": backslashes, "double_quoted_strings": double_quotes}

    once = monitor.normalise_statement(statement, **options)

    assert monitor.normalise_statement(once, **options) == once


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("SELECT 1", "SELECT"),
        ("  select\n1", "SELECT"),
        ("((SELECT 1) UNION (SELECT 2))", "SELECT"),
        ("insert into t values (1)", "INSERT"),
        ("UPDATE t SET a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("-- note\nDELETE FROM t", "DELETE"),
        ("/* a /* nested */ note */ UPDATE t SET a = 1", "UPDATE"),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT"),
        (
            "WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM r) SELECT * FROM r",
            "SELECT",
        ),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "SELECT"),
        ("WITH a AS MATERIALIZED (SELECT 1), b AS (SELECT 2) DELETE FROM t", "DELETE"),
        ("CREATE TABLE t (a int)", "other"),
        ("EXPLAIN SELECT 1", "other"),
        ("SELECTED", "other"),
        ("", "other"),
        ("WITH", "other"),
    ],
)
def test_operation_of_a_statement(statement, operation):
    assert _operation(statement) == operation


# -- overhead -----------------------------------------------------------------------------


def test_overhead_per_query_is_printed(capsys):
    """Not a timed assertion: the cost of the listeners on SQLite's in-memory ``SELECT 1``
    (a few microseconds a query), where a network database would hide it."""
    engine = create_engine("sqlite://")
    n = 5000

    def per_query():
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            best = math.inf
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(n):
                    conn.exec_driver_sql("SELECT 1")
                best = min(best, (time.perf_counter() - start) / n)
        return best

    bare = per_query()
    registry = monitor.Registry()
    with monitor.instrument_engine(engine, registry=registry):
        instrumented = per_query()

    assert sample(registry, "db_queries_total", engine="default", operation="SELECT") == 5 * n + 1
    with capsys.disabled():
        print(
            f"\nSQLAlchemy instrumentation overhead: {(instrumented - bare) * 1e6:.1f} us/query "
            f"({bare * 1e6:.1f} -> {instrumented * 1e6:.1f} us, SQLite SELECT 1)"
        )
