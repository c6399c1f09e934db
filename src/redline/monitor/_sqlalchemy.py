"""SQLAlchemy instrumentation: queries, errors, the connection pool and a slow-query log, for
sync ``Engine`` and ``AsyncEngine`` alike.

``instrument_engine(engine)`` listens to SQLAlchemy's core events (an ``AsyncEngine`` is
instrumented through its ``sync_engine``, where its events fire) and records, labelled
``engine=<name>``:

- ``db_queries_total{operation}`` and ``db_query_duration_seconds{operation}``: every cursor
  execution, from ``before_cursor_execute`` to ``after_cursor_execute`` (or to
  ``handle_error`` when it fails), timed on the execution context. One execution is one
  round trip: an ``executemany`` counts once, a bulk INSERT sent in batches once per batch.
  With an ``AsyncEngine`` the time is the awaited time the caller saw. ``operation`` is
  SELECT, INSERT, UPDATE, DELETE (also after ``WITH ...``, leading comments or parentheses)
  or ``other`` (DDL, EXPLAIN, SET, ...): a fixed set, so the series stay bounded.
- ``db_query_errors_total{error}``: statements (or their result fetches) that raised, by
  the class name of the exception the application catches: SQLAlchemy's PEP 249 category
  (``ProgrammingError``, ``IntegrityError``, ``OperationalError``, ...), or the raised
  class itself when SQLAlchemy does not wrap it (``CancelledError``). The category is the
  driver dialect's mapping: asyncpg's maps fewer server errors than psycopg's (a division by
  zero is ``DataError`` under psycopg, plain ``DBAPIError`` under asyncpg). A failed
  statement also counts in ``db_queries_total``. Failures to open a connection or to
  pre-ping one ran no statement and are not counted here.
- ``db_slow_queries_total{operation}`` and the slow-query log (below).
- The pool: ``db_pool_checked_out`` (connections lent out now), and for a ``QueuePool`` (the
  default of ``create_engine`` and, as ``AsyncAdaptedQueuePool``, of
  ``create_async_engine``) ``db_pool_size`` (``pool_size``), ``db_pool_overflow``
  (connections open beyond ``pool_size``, ``max(0, pool.overflow())``) and
  ``db_pool_usage_ratio``: checked out / (``pool_size`` + ``max_overflow``), the share of
  the most connections the pool will ever lend at once, so 1.0 means the next checkout
  waits; NaN for a pool without that bound (``pool_size=0`` or ``max_overflow=-1``). The
  issue's target is < 0.8. These gauges are read when metrics are collected, not kept up
  on every checkout. Other pools (``NullPool``, ``StaticPool``) have no size to compare to.
- ``db_pool_wait_seconds``: how long getting a connection took (OpenTelemetry's
  ``db.client.connection.wait_time``): waiting for a free one, opening a new one when the
  pool has room, the pre-ping. SQLAlchemy fires ``checkout`` once the connection is in hand
  and has no event for the start, so the pool's public ``connect()`` is wrapped on the pool
  instance (never the class), again after ``Engine.dispose()`` replaces the pool (the
  ``engine_disposed`` event), and unwrapped by ``close()``. A checkout that fails counts
  too, with its wait; ``db_pool_timeouts_total`` counts those that gave up because the pool
  stayed exhausted for ``pool_timeout``.
- ``db_pool_use_seconds``: how long each connection was held, checkout to checkin
  (``db.client.connection.use_time``); ``db_pool_connections_created_total`` (the
  ``connect`` event: pool growth and churn) and ``db_pool_invalidations_total``
  (``invalidate``: disconnects and errors that discarded a connection).

``db_pool_checked_out`` counts ``checkout`` events less ``checkin``/``detach`` events, with
a mark on each pool record so that a checkin SQLAlchemy sends after a failed checkout, or a
second ``checkout`` on a reconnect, cannot skew it. It is counted rather than read from
``QueuePool.checkedout()`` because that works for every pool class, keeps counting the
connections lent by a pool that ``dispose()`` replaced until they come back, and because
reading the asyncio pool's queue from the scrape thread could race its lazy creation.

Across worker processes (``SnapshotDirectory``) the size, checked-out and overflow gauges
add up (each worker has its own pool, the sum is what the service holds against the
database) and the usage ratio takes the fullest worker's (``max``); counters and histograms
merge exactly.

The slow-query log: a statement that took ``slow_query_seconds`` or more (default 0.2 s) is
kept in a bounded in-memory log, one entry per normalised statement with its count of slow
runs, worst, total and last duration and when it was last seen; when ``slow_log_size``
statements are held, a new one evicts the least recently seen. ``monitor.slow_queries()``
returns the worst first, for every engine of the registry (the dashboard's view);
``EngineMonitor.slow_queries()`` for one. Each slow run is also logged at WARNING on
``logger`` (``redline.monitor.sqlalchemy``; ``logger=None`` for none). The log is per
process.

Privacy: statements are normalised before they are kept or logged, and parameter values are
never read. Literals (strings, ``E'...'``, dollar-quoted bodies, numbers) and bind markers
(``$1``, ``%(name)s``, ``%s``, ``:name``, ``?``) become ``?``, so neither bound values nor
values a program pasted into its SQL (e-mail addresses, tokens) reach a log, a dashboard or
an incident ticket. Comments are dropped; IN-lists, ARRAY literals and repeated VALUES rows
collapse to one item (``IN (?)``: ``IN`` of 3 or 300 ids is one statement); whitespace
collapses to one space; a trailing ``;`` goes. Quoted identifiers (``"name"``) are kept.
Strings are read the way the server reads them, as the dialect found out on its first
connection: backslash escapes where PostgreSQL's standard_conforming_strings is off or in
MySQL, and MySQL's ``"..."`` as a string unless ANSI_QUOTES; reading them any other way
could take a value for SQL. Not understood: MySQL's ``#`` comments (their text is kept).

Until ``close()``, the event listeners and the registry's gauges keep the engine alive:
instrument engines that live as long as the process, or close the monitor with the engine.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from redline.monitor._counter import Counter
from redline.monitor._exceptions import MetricError
from redline.monitor._gauge import Gauge
from redline.monitor._histogram import Histogram
from redline.monitor._metric import Metric
from redline.monitor._registry import REGISTRY, Registry

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

M = TypeVar("M", bound=Metric)
F = TypeVar("F", bound=Callable[..., str])

OPERATIONS = ("SELECT", "INSERT", "UPDATE", "DELETE", "other")
MAX_STATEMENT_LENGTH = 4096
"""Normalised statements longer than this are cut, ending with "…"."""

# Normalising reads at most this much of a statement (a bulk INSERT with inline values can
# be megabytes); the rest is cut before normalising, which can only hide text, never show it.
_MAX_INPUT = 65536
# Statements up to this long are cached by text (SQLAlchemy sends the same string object for
# a cached statement); longer ones are scanned each time rather than pinned in memory.
_CACHED_LENGTH = 8192

_log = logging.getLogger("redline.monitor.sqlalchemy")


# -- normalisation ------------------------------------------------------------------------

_IDENTIFIER_QUOTES = r'"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z)'
_REST = (
    r"(?P<dollar>\$(?:[^\W\d]\w*)?\$)"
    r"|(?P<bind>%\([^()]*\)s|%s|\$\d+|\?|:[^\W\d]\w*)"
    r"|(?P<number>0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<word>[^\W\d][\w$]*)"
    r"|(?P<op>::|->>|->|#>>|#>|<=|>=|<>|!=|\|\||&&|@>|<@|[-+*/%<>=~!@#^&|])"
    r"|(?P<other>.)"
)
_VALUES = frozenset({"string", "dollar", "bind", "number"})


@functools.cache
def _token_pattern(backslash_escapes: bool, double_quoted_strings: bool) -> re.Pattern[str]:
    """The tokenizer of one way of quoting; every alternative but the last needs context."""

    def quoted(quote: str) -> str:
        # With backslash escapes, a backslash takes the next character (or ends the text).
        body = rf"[^{quote}\\]|\\.?" if backslash_escapes else rf"[^{quote}]"
        return rf"{quote}(?:{body}|{quote}{quote})*(?:{quote}|\Z)"

    strings = [
        r"[Ee]'(?:[^'\\]|\\.?|'')*(?:'|\Z)",  # PostgreSQL's E'...' always has escapes
        r"(?:[BbXxNn]|[Uu]&)?" + quoted("'"),
    ]
    identifiers = _IDENTIFIER_QUOTES
    if double_quoted_strings:
        strings.append(quoted('"'))
        identifiers = r"`[^`]*(?:`|\Z)"
    return re.compile(
        r"(?P<space>\s+)|(?P<comment>--[^\r\n]*|/\*)"
        rf"|(?P<string>{'|'.join(strings)})|(?P<ident>{identifiers})|{_REST}",
        re.DOTALL,
    )


_BLOCK_COMMENT_EDGE = re.compile(r"/\*|\*/")


@dataclass(slots=True)
class _Token:
    kind: str
    text: str
    gap: bool  # whitespace or a comment came before it


def _tokens(sql: str, pattern: re.Pattern[str]) -> Iterator[_Token]:
    """The tokens of ``sql`` without whitespace and comments; literals and binds as ``?``."""
    pos, end_of_sql, gap = 0, len(sql), False
    match = pattern.match
    while pos < end_of_sql:
        found = match(sql, pos)
        assert found is not None  # the last alternative matches any character
        kind, text, end = found.lastgroup or "other", found.group(), found.end()
        if kind == "space" or kind == "comment":
            if text == "/*":
                end = _block_comment_end(sql, end)
            gap = True
            pos = end
            continue
        if kind == "dollar":
            close = sql.find(text, end)
            end = end_of_sql if close < 0 else close + len(text)
        yield _Token(kind, "?" if kind in _VALUES else text, gap)
        gap = False
        pos = end


def _block_comment_end(sql: str, pos: int) -> int:
    # PostgreSQL nests block comments; read nested, a comment ends at or after a flat reading.
    depth = 1
    for edge in _BLOCK_COMMENT_EDGE.finditer(sql, pos):
        depth += 1 if edge.group() == "/*" else -1
        if depth == 0:
            return edge.end()
    return len(sql)


def _short_cached(function: F) -> F:
    """Cache ``function(statement, ...)`` for statements up to ``_CACHED_LENGTH`` long."""
    cached = functools.lru_cache(maxsize=1024)(function)

    @functools.wraps(function)
    def wrapper(statement: str, *args: Any) -> str:
        if len(statement) <= _CACHED_LENGTH:
            return cached(statement, *args)
        return function(statement, *args)

    return wrapper  # type: ignore[return-value]


def normalise_statement(
    statement: str, *, backslash_escapes: bool = False, double_quoted_strings: bool = False
) -> str:
    """``statement`` with literals and bind markers as ``?``, comments dropped, IN-lists and
    repeated VALUES rows collapsed, whitespace collapsed: its shape, without any value.

    Strings are read as the server reads them: ``backslash_escapes`` for MySQL (unless
    NO_BACKSLASH_ESCAPES) or PostgreSQL with standard_conforming_strings off;
    ``double_quoted_strings`` for MySQL without ANSI_QUOTES. ``EngineMonitor`` takes both
    from the engine's dialect.
    """
    return _normalise(statement, backslash_escapes, double_quoted_strings)


@_short_cached
def _normalise(statement: str, backslash_escapes: bool, double_quoted_strings: bool) -> str:
    cut = len(statement) > _MAX_INPUT
    pattern = _token_pattern(backslash_escapes, double_quoted_strings)
    tokens = _tokens(statement[:_MAX_INPUT] if cut else statement, pattern)
    folded = _collapse(_fold_signs(tokens))
    while folded and folded[-1].text == ";":
        folded.pop()
    parts: list[str] = []
    for token in folded:
        if token.gap and parts:
            parts.append(" ")
        parts.append(token.text)
    if cut:
        parts.append(" …")
    text = "".join(parts)
    if len(text) > MAX_STATEMENT_LENGTH:
        text = text[: MAX_STATEMENT_LENGTH - 1] + "…"
    return text


def _fold_signs(tokens: Iterator[_Token]) -> list[_Token]:
    """Tokens with the sign of a signed number folded into it: ``= -5`` is ``= ?``."""
    out: list[_Token] = []
    for token in tokens:
        if (
            token.kind == "number"
            and not token.gap
            and out
            and out[-1].text in ("-", "+")
            and (len(out) == 1 or out[-2].kind == "op" or out[-2].text in ("(", ",", "["))
        ):
            token.gap = out.pop().gap
        out.append(token)
    return out


def _collapse(tokens: list[_Token]) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        out.append(token)
        i += 1
        if token.kind != "word" or i == n:
            continue
        keyword, opener = token.text.upper(), tokens[i].text
        if (keyword == "IN" and opener == "(") or (keyword == "ARRAY" and opener == "["):
            close = _closing(tokens, i)
            items = _split(tokens[i + 1 : close]) if close is not None else []
            if close is not None and len(items) > 1 and _all_same(items):
                out.append(tokens[i])
                out.extend(_collapse(items[0]))
                out.append(tokens[close])
                i = close + 1
        elif keyword == "VALUES" and opener == "(":
            rows, after = _rows(tokens, i)
            if len(rows) > 1 and _all_same(rows):
                out.extend(_collapse(rows[0]))
                i = after
    return out


def _closing(tokens: list[_Token], start: int) -> int | None:
    """The index of the bracket that closes the one at ``start``, or None."""
    depth = 0
    for i in range(start, len(tokens)):
        text = tokens[i].text
        if text == "(" or text == "[":
            depth += 1
        elif text == ")" or text == "]":
            depth -= 1
            if depth == 0:
                return i
    return None


def _split(tokens: list[_Token]) -> list[list[_Token]]:
    """The comma-separated items of a bracketed list's inside."""
    items: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        text = token.text
        if text == "," and depth == 0:
            items.append([])
            continue
        if text == "(" or text == "[":
            depth += 1
        elif text == ")" or text == "]":
            depth -= 1
        items[-1].append(token)
    return items


def _rows(tokens: list[_Token], start: int) -> tuple[list[list[_Token]], int]:
    """The ``(...), (...)`` rows of a VALUES list from ``start``, and the index after them."""
    rows: list[list[_Token]] = []
    i = start
    while (close := _closing(tokens, i)) is not None:
        rows.append(tokens[i : close + 1])
        i = close + 1
        if not (i + 1 < len(tokens) and tokens[i].text == "," and tokens[i + 1].text == "("):
            break
        i += 1
    return rows, i


def _all_same(items: list[list[_Token]]) -> bool:
    first = [token.text for token in items[0]]
    return all([token.text for token in item] == first for item in items[1:])


_LEADING_WORD = re.compile(r"[\s(]*([A-Za-z]+)\b")
_VERBS = frozenset(OPERATIONS[:-1])


# What each recent statement does, by its text: a dict lookup is a quarter of the scan.
_known_operations: dict[str, str] = {}


def _operation(statement: str) -> str:
    """SELECT, INSERT, UPDATE, DELETE or ``other``: what ``statement`` does."""
    operation = _known_operations.get(statement)
    if operation is None:
        operation = _find_operation(statement)
        if len(statement) <= _CACHED_LENGTH:
            if len(_known_operations) >= 4096:
                _known_operations.clear()
            _known_operations[statement] = operation
    return operation


def _find_operation(statement: str) -> str:
    found = _LEADING_WORD.match(statement)
    if found is not None:
        word = found.group(1).upper()
        if word in _VERBS:
            return word
        if word != "WITH":
            return "other"
    # A leading comment, or a CTE: the verb is the first one outside the WITH's brackets.
    return _scanned_operation(statement)


def _scanned_operation(statement: str) -> str:
    depth = 0
    in_with = False
    for token in _tokens(statement, _token_pattern(False, False)):
        text = token.text
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif token.kind == "word":
            word = text.upper()
            if not in_with:
                if word in _VERBS:
                    return word
                if word != "WITH":
                    return "other"
                in_with, depth = True, 0
            elif depth == 0 and word in _VERBS:
                return word
    return "other"


# -- the slow-query log -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlowQuery:
    """One normalised statement in the slow-query log: its slow runs on one engine."""

    engine: str
    operation: str
    statement: str
    count: int
    total_seconds: float
    max_seconds: float
    last_seconds: float
    last_seen: float
    """When it last ran slow, as ``time.time()``."""

    @property
    def mean_seconds(self) -> float:
        return self.total_seconds / self.count


class _SlowLog:
    """At most ``size`` statements; a new one evicts the least recently seen."""

    def __init__(self, engine: str, size: int) -> None:
        self._engine = engine
        self._size = size
        self._entries: OrderedDict[str, SlowQuery] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, statement: str, operation: str, seconds: float) -> None:
        now = time.time()
        with self._lock:
            old = self._entries.pop(statement, None)
            if old is None:
                entry = SlowQuery(
                    self._engine, operation, statement, 1, seconds, seconds, seconds, now
                )
            else:
                entry = SlowQuery(
                    self._engine,
                    operation,
                    statement,
                    old.count + 1,
                    old.total_seconds + seconds,
                    max(old.max_seconds, seconds),
                    seconds,
                    now,
                )
            self._entries[statement] = entry
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def entries(self) -> list[SlowQuery]:
        with self._lock:
            return list(self._entries.values())


def _worst_first(entries: Iterator[SlowQuery] | list[SlowQuery]) -> list[SlowQuery]:
    return sorted(entries, key=lambda q: (q.max_seconds, q.last_seen), reverse=True)


# -- the instrumentation ------------------------------------------------------------------

# Every live monitor by registry and name (for slow_queries() and to refuse a second monitor
# of one name), and by engine (to refuse instrumenting one engine twice).
_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[Registry, dict[str, EngineMonitor]] = (
    weakref.WeakKeyDictionary()
)
_by_engine: weakref.WeakKeyDictionary[Engine, EngineMonitor] = weakref.WeakKeyDictionary()
_marks = itertools.count()

# Where the start of a cursor execution waits for its end: on SQLAlchemy's execution
# context, which lives exactly as long as one statement and is never shared.
_START = "_redline_monitor_start"

_ENGINE = ("engine",)


def instrument_engine(
    engine: Any,
    *,
    name: str = "default",
    registry: Registry = REGISTRY,
    slow_query_seconds: float = 0.2,
    slow_log_size: int = 50,
    logger: logging.Logger | None = _log,
) -> EngineMonitor:
    """Record the queries, errors and pool of ``engine`` (an ``Engine`` or ``AsyncEngine``)
    into ``registry``, labelled ``engine=name``; ``close()`` on the result detaches it.

    Statements taking ``slow_query_seconds`` or more go to a slow-query log of
    ``slow_log_size`` normalised statements and, unless ``logger`` is None, are logged at
    WARNING.
    """
    if not isinstance(name, str) or not name:
        raise MetricError(f"instrument_engine: name must be a non-empty string, got {name!r}")
    if not slow_query_seconds >= 0:
        raise MetricError(
            f"instrument_engine: slow_query_seconds must be >= 0 (math.inf for no slow-query "
            f"log), got {slow_query_seconds!r}"
        )
    if not isinstance(slow_log_size, int) or slow_log_size < 1:
        raise MetricError(
            f"instrument_engine: slow_log_size must be an int >= 1, got {slow_log_size!r}"
        )
    return EngineMonitor(engine, name, registry, slow_query_seconds, slow_log_size, logger)


def slow_queries(registry: Registry = REGISTRY) -> list[SlowQuery]:
    """The slow-query log of every engine instrumented into ``registry``, worst first."""
    with _lock:
        monitors = list(_by_registry.get(registry, {}).values())
    return _worst_first([query for m in monitors for query in m._slow_log.entries()])


class EngineMonitor:
    """The instrumentation of one engine, made by ``instrument_engine()``."""

    def __init__(
        self,
        engine: Any,
        name: str,
        registry: Registry,
        slow_query_seconds: float,
        slow_log_size: int,
        logger: logging.Logger | None,
    ) -> None:
        from sqlalchemy.exc import TimeoutError as PoolTimeoutError
        from sqlalchemy.pool import QueuePool

        self.engine = engine
        self.name = name
        self.registry = registry
        self.slow_query_seconds = slow_query_seconds
        self.logger = logger
        sync_engine: Engine = getattr(engine, "sync_engine", engine)
        self._engine = sync_engine
        self._slow_log = _SlowLog(name, slow_log_size)
        self._pool_timeout_error = PoolTimeoutError
        self._mark = f"redline.monitor.checkout#{next(_marks)}"
        self._lock = threading.Lock()
        self._checked_out = 0
        self._wrapped: tuple[Pool, Callable[[], Any]] | None = None
        self._closed = False

        with _lock:
            other = _by_engine.get(sync_engine)
            if other is not None:
                raise MetricError(
                    f"{sync_engine!r} is already instrumented as engine {other.name!r}; "
                    "call close() on that monitor before instrumenting it again"
                )
            named = _by_registry.setdefault(registry, {})
            if name in named:
                raise MetricError(
                    f"engine name {name!r} is already used by {named[name]._engine!r} in this "
                    "registry; give each engine its own name="
                )
            self._define_metrics(registry, isinstance(sync_engine.pool, QueuePool))
            named[name] = self
            _by_engine[sync_engine] = self
        self._listen()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EngineMonitor {self.name!r} of {self._engine!r}, {state}>"

    def record(self, statement: str, seconds: float, error: BaseException | None = None) -> None:
        """Count a statement that ran outside SQLAlchemy's execution, and so fired none of
        its events: one sent on the driver's own connection
        (``(await conn.get_raw_connection()).driver_connection``), which a hot read path may
        do to skip the Core layer's work per statement. It lands in the same metrics and
        slow-query log as the engine's own statements; with ``error`` (what it raised) it
        also counts in ``db_query_errors_total``, by the class name. Ignored once closed."""
        if self._closed:
            return
        if error is not None:
            self._errors.labels(self.name, type(error).__name__).inc()
        self._record(statement, seconds)

    def slow_queries(self) -> list[SlowQuery]:
        """This engine's slow-query log, worst first."""
        return _worst_first(self._slow_log.entries())

    def close(self) -> None:
        """Stop recording and remove the pool gauges; counters and histograms keep their
        counts. Safe to call twice."""
        from sqlalchemy import event

        with _lock:
            if self._closed:
                return
            self._closed = True
            _by_registry.get(self.registry, {}).pop(self.name, None)
            _by_engine.pop(self._engine, None)
        for identifier, listener in self._listeners:
            event.remove(self._engine, identifier, listener)
        if self._wrapped is not None:
            pool, timed_connect = self._wrapped
            if vars(pool).get("connect") is timed_connect:
                del pool.connect
        for gauge in self._gauges:
            gauge.remove(self.name)

    def __enter__(self) -> EngineMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- setup --------------------------------------------------------------------------

    def _define_metrics(self, registry: Registry, queue_pool: bool) -> None:
        name = self.name
        by_operation = ("engine", "operation")
        queries = _metric(registry, Counter, "db_queries", "Statements executed.", by_operation)
        duration = _metric(
            registry,
            Histogram,
            "db_query_duration_seconds",
            "Time from sending a statement to its result.",
            by_operation,
        )
        slow = _metric(
            registry,
            Counter,
            "db_slow_queries",
            "Statements that took at least the engine's slow_query_seconds.",
            by_operation,
        )
        # Every operation's series exists from the start, so rate() sees the first query.
        self._by_operation = {
            operation: (
                queries.labels(name, operation),
                duration.labels(name, operation),
                slow.labels(name, operation),
            )
            for operation in OPERATIONS
        }
        self._errors = _metric(
            registry,
            Counter,
            "db_query_errors",
            "Statements that raised, by SQLAlchemy exception class.",
            ("engine", "error"),
        )
        self._pool_wait = _metric(
            registry,
            Histogram,
            "db_pool_wait_seconds",
            "Time to get a connection from the pool, including opening one.",
            _ENGINE,
        ).labels(name)
        self._pool_use = _metric(
            registry,
            Histogram,
            "db_pool_use_seconds",
            "Time a connection was checked out of the pool.",
            _ENGINE,
        ).labels(name)
        self._timeouts = _metric(
            registry,
            Counter,
            "db_pool_timeouts",
            "Checkouts that gave up waiting for a free connection.",
            _ENGINE,
        ).labels(name)
        self._created = _metric(
            registry,
            Counter,
            "db_pool_connections_created",
            "Database connections the pool opened.",
            _ENGINE,
        ).labels(name)
        self._invalidations = _metric(
            registry,
            Counter,
            "db_pool_invalidations",
            "Connections the pool discarded as broken.",
            _ENGINE,
        ).labels(name)
        gauges: list[tuple[str, str, str, Callable[[], float]]] = [
            (
                "db_pool_checked_out",
                "Connections checked out of the pool now.",
                "sum",
                lambda: self._checked_out,
            )
        ]
        if queue_pool:
            gauges += [
                ("db_pool_size", "The pool's pool_size.", "sum", self._pool_size),
                (
                    "db_pool_overflow",
                    "Connections open beyond pool_size.",
                    "sum",
                    self._pool_overflow,
                ),
                (
                    "db_pool_usage_ratio",
                    "Checked out / (pool_size + max_overflow); NaN if unbounded.",
                    "max",
                    self._pool_usage_ratio,
                ),
            ]
        self._gauges = [
            _metric(registry, Gauge, gauge_name, documentation, _ENGINE, multiprocess_mode=mode)
            for gauge_name, documentation, mode, _ in gauges
        ]
        # Only once every metric is known to fit, so a misfit leaves no series behind.
        for gauge, (*_, function) in zip(self._gauges, gauges, strict=True):
            gauge.labels(name).set_function(function)

    def _listen(self) -> None:
        from sqlalchemy import event

        self._listeners: list[tuple[str, Callable[..., Any]]] = [
            ("before_cursor_execute", self._on_before_execute),
            ("after_cursor_execute", self._on_after_execute),
            ("handle_error", self._on_error),
            ("engine_disposed", self._on_disposed),
            ("checkout", self._on_checkout),
            ("checkin", self._on_checkin),
            ("detach", self._on_checkin),
            ("connect", self._on_connect),
            ("invalidate", self._on_invalidate),
        ]
        for identifier, listener in self._listeners:
            event.listen(self._engine, identifier, listener)
        self._wrap_pool(self._engine.pool)

    def _wrap_pool(self, pool: Pool) -> None:
        # SQLAlchemy has no event for the start of a checkout, only for its end.
        connect = pool.connect
        wait, timeouts, timeout_error = self._pool_wait, self._timeouts, self._pool_timeout_error

        def timed_connect() -> Any:
            start = perf_counter()
            try:
                return connect()
            except timeout_error:
                timeouts.inc()
                raise
            finally:
                wait.observe(perf_counter() - start)

        pool.connect = timed_connect  # type: ignore[method-assign]
        self._wrapped = (pool, timed_connect)

    # -- statements ---------------------------------------------------------------------

    def _on_before_execute(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if context is not None:
            context.__dict__[_START] = perf_counter()

    def _on_after_execute(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        end = perf_counter()
        start = context.__dict__.pop(_START, None) if context is not None else None
        if start is not None:
            self._record(statement, end - start)

    def _on_error(self, ctx: Any) -> None:
        context = ctx.execution_context
        if context is None and ctx.statement is None:
            return  # opening or pre-pinging a connection failed: no statement ran
        error = ctx.sqlalchemy_exception
        if error is None:
            error = ctx.original_exception
        self._errors.labels(self.name, type(error).__name__).inc()
        # A statement that failed while executing has not been recorded yet.
        start = context.__dict__.pop(_START, None) if context is not None else None
        if start is not None and ctx.statement is not None:
            self._record(ctx.statement, perf_counter() - start)

    def _record(self, statement: str, seconds: float) -> None:
        operation = _operation(statement)
        queries, duration, slow = self._by_operation[operation]
        queries.inc()
        duration.observe(seconds)
        if seconds < self.slow_query_seconds:
            return
        slow.inc()
        dialect = self._engine.dialect
        # Known once the first connection has asked the server (SHOW, sql_mode).
        text = _normalise(
            statement,
            getattr(dialect, "_backslash_escapes", False),
            dialect.name in ("mysql", "mariadb")
            and not getattr(dialect, "_server_ansiquotes", False),
        )
        self._slow_log.add(text, operation, seconds)
        if self.logger is not None:
            self.logger.warning(
                "Slow query on engine %r: %.3f s: %s",
                self.name,
                seconds,
                text,
                extra={
                    "db_engine": self.name,
                    "db_operation": operation,
                    "db_statement": text,
                    "db_duration_seconds": seconds,
                },
            )

    # -- the pool -----------------------------------------------------------------------

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        info = record.record_info
        if self._mark not in info:
            with self._lock:
                self._checked_out += 1
        info[self._mark] = perf_counter()

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        # Also for detach(); a checkin after a failed checkout finds no mark.
        start = record.record_info.pop(self._mark, None)
        if start is None:
            return
        self._pool_use.observe(perf_counter() - start)
        with self._lock:
            self._checked_out -= 1

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        self._created.inc()

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        self._invalidations.inc()

    def _on_disposed(self, engine: Any) -> None:
        self._wrap_pool(self._engine.pool)

    def _pool_size(self) -> float:
        return self._engine.pool.size()  # type: ignore[attr-defined]

    def _pool_overflow(self) -> float:
        return max(0, self._engine.pool.overflow())  # type: ignore[attr-defined]

    def _pool_usage_ratio(self) -> float:
        pool = self._engine.pool
        # QueuePool keeps max_overflow only in this attribute; -1 means no limit.
        max_overflow = pool._max_overflow  # type: ignore[attr-defined]
        capacity = pool.size() + max_overflow if max_overflow >= 0 else 0  # type: ignore[attr-defined]
        return self._checked_out / capacity if capacity > 0 else math.nan


def _metric(
    registry: Registry,
    kind: type[M],
    name: str,
    documentation: str,
    labelnames: tuple[str, ...],
    **options: Any,
) -> M:
    """The registry's metric ``name``, shared by every engine, created on first use."""
    exported = f"{name}_total" if kind is Counter else name
    metric = registry.get_or_create(
        exported,
        kind,
        lambda: kind(name, documentation, labelnames, registry=None, **options),  # type: ignore[call-arg]
    )
    if metric.labelnames != labelnames:
        raise MetricError(
            f"{metric.kind} {metric.name!r} in this registry has labels {metric.labelnames}, "
            f"not the {labelnames} the SQLAlchemy instrumentation records; rename or "
            "unregister it"
        )
    return metric
