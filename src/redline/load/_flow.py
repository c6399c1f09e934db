"""Declarative flows compiled to callbacks: the engine's fast path.

A YAML plan's flow is a list of steps (requests, think times, feeds). Running it as a
coroutine costs a task switch, a future and a few awaits per request: about 10 us of
generator CPU on a 2-core VM, as much as the sockets themselves. Here each virtual user
walks its flow from inside the connection's completion callback instead: when a response
is complete the next request is encoded and written before control goes back to the
event loop, and think times are ``call_later`` timers. Requests whose URL, headers and body
hold no ``{var}`` are encoded once per target; only a cookie jar or a template makes a
request rebuild its bytes.

A looping user whose flow is only plain requests goes further, on the lane
(``LaneConnection``): the next request leaves from inside the parser's callback. Its C twin
(``CompiledLaneConnection``, from ``_lane.c``, built at install when a compiler is found) does
the same for ordinary responses without running any Python, and hands every other read to the
Python lane; ``REDLINE_PURE_PYTHON=1`` turns it off. On a 2-core VM the C lane brought the
generator's own CPU per request from 15-19 us to 12-15 us, wrk's level (docs/load.md).

Python plans (``async def flow(vu)``) keep running as coroutines (see ``_runner``).
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import httptools
import orjson

from redline.load._http import Callback, Connection, HTTPError, ProtocolError, Response
from redline.load._metrics import Recorder
from redline.load._plan import Feed, Request, Think, render, render_json, template_variables
from redline.load._vu import VU

Done = Callable[["FlowRun"], None]


class FeedExhausted(LookupError):
    """A ``unique`` feed has handed out every row: the user that asked stops looping."""


class Feeds:
    """Rows of the CSV feeds of a run, handed out per the feed's mode."""

    def __init__(self) -> None:
        self._rows: dict[Path, list[dict[str, str]]] = {}
        self._next: dict[Path, int] = {}

    def take(self, feed: Feed) -> dict[str, str]:
        rows = self._rows.get(feed.file)
        if rows is None:
            with open(feed.file, newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                # Column names as the plan check saw them: stripped of spaces.
                names = [name.strip() for name in next(reader)]
                rows = self._rows[feed.file] = [
                    dict(zip(names, row, strict=False)) for row in reader if row
                ]
        if feed.mode == "random":
            return random.choice(rows)
        index = self._next.get(feed.file, 0)
        self._next[feed.file] = index + 1
        if feed.mode == "unique" and index >= len(rows):
            raise FeedExhausted(f"feed {feed.file.name}: all {len(rows)} unique rows used")
        return rows[index % len(rows)]


class _Send:
    """A request step, with its bytes cached when nothing in it varies."""

    __slots__ = ("step", "name", "method", "head", "templated", "plain", "ok", "_cached")

    def __init__(self, step: Request) -> None:
        self.step = step
        self.name = step.name
        self.method = step.method
        self.head = step.method == "HEAD"
        texts = [step.url, *step.headers.values()]
        if step.body is not None:
            texts.append(step.body)
        if step.json is not None:
            texts.append(orjson.dumps(step.json).decode())
        self.templated = any(template_variables(text) for text in texts)
        check = step.check
        # Plain: fixed bytes and nothing to read from the response but its status.
        self.plain = (
            not self.templated
            and not self.head
            and not step.capture
            and (check is None or not check.body_contains)
        )
        self.ok = check.status if check is not None else None
        self._cached: bytes | None = None

    def encode(self, vu: VU) -> bytes:
        if not self.templated and not vu.cookies and not vu.headers:
            cached = self._cached
            if cached is None:
                cached = self._cached = self._encode(vu, {})
            return cached
        return self._encode(vu, vu.vars)

    def _encode(self, vu: VU, variables: dict[str, Any]) -> bytes:
        step = self.step
        headers = {**vu.headers, **{k: render(v, variables) for k, v in step.headers.items()}}
        if vu.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in vu.cookies.items())
        body = None
        if step.json is not None:
            body = orjson.dumps(render_json(step.json, variables))
            headers.setdefault("Content-Type", "application/json")
        elif step.body is not None:
            body = render(step.body, variables).encode()
        target = vu.target
        return target.encode(
            self.method,
            target.path(render(step.url, variables)),
            list(headers.items()) or None,
            body,
        )


class CompiledFlow:
    """A declarative flow ready to run on many virtual users at once."""

    def __init__(self, scenario: str, steps: tuple[Any, ...], recorder: Recorder) -> None:
        self.scenario = scenario
        self.recorder = recorder
        self.feeds = Feeds()
        self.steps: tuple[_Send | Think | Feed, ...] = tuple(
            _Send(step) if isinstance(step, Request) else step for step in steps
        )
        # Only plain requests: looping users run on the fast lane (see LaneConnection).
        self.lane = bool(self.steps) and all(
            type(step) is _Send and step.plain for step in self.steps
        )

    def bind(self, vu: VU) -> FlowRun:
        """The runner of this flow for ``vu``; reused for every iteration of that user."""
        return FlowRun(self, vu)


class Until:
    """When a looping user stops: at loop time ``deadline``, or once ``stop`` is set."""

    __slots__ = ("deadline", "stop")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.stop = False


class FlowRun:
    """One virtual user walking a compiled flow.

    ``start(done)`` runs one iteration (open model); ``loop(until, done)`` runs iterations
    back to back until ``until`` says stop or the user is retired (closed model). Either way
    ``done(self)`` is called once at the end, never from inside ``start``/``loop`` itself.
    """

    __slots__ = (
        "flow",
        "vu",
        "loop_",
        "steps",
        "count",
        "position",
        "done",
        "active",
        "until",
        "retired",
        "waited",
        "starting",
        "pending",
        "sent_ns",
        "intended_ns",
        "timer",
        "_on_response",
    )

    def __init__(self, flow: CompiledFlow, vu: VU) -> None:
        self.flow = flow
        self.vu = vu
        self.loop_ = asyncio.get_running_loop()
        self.steps = flow.steps
        self.count = len(flow.steps)
        self.position = 0
        self.done: Done | None = None
        self.active = False
        self.until: Until | None = None
        self.retired = False  # set by a ramp down: finish this iteration, then leave
        self.waited = False
        self.starting = False  # inside start(): done(self) must wait for the loop
        self.pending: _Send | None = None
        self.sent_ns = 0
        self.intended_ns: int | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._on_response = self.on_response  # one bound method for the VU's lifetime

    def start(self, done: Done) -> None:
        """Run one iteration, then ``done(self)``. The steps up to the first that waits run
        now: the open-model dispatcher calls this from its own timer, so the first request
        goes out without another trip through the event loop."""
        self.until = None
        self._begin(done)
        self.starting = True
        try:
            self.advance()
        finally:
            self.starting = False

    def loop(self, until: Until, done: Done) -> None:
        """Run iterations until ``until`` stops them or ``retired`` is set, then ``done``."""
        self.until = until
        self._begin(done)
        self.loop_.call_soon(self.advance)

    def _begin(self, done: Done) -> None:
        self.position = 0
        self.done = done
        self.active = True
        self.waited = False

    def _finish(self) -> None:
        done = self.done
        if done is not None:
            done(self)

    def cancel(self) -> None:
        """Stop mid-iteration: the request in flight is abandoned unrecorded, ``done`` is not
        called, the connection is closed."""
        self.active = False
        self.done = None
        self.pending = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        conn = self.vu._conn
        if conn is not None:
            conn.cancel()
            self.vu._conn = None

    def advance(self) -> None:
        """Run steps until one has to wait (a request, a think time) or the user is done."""
        if not self.active:
            return
        steps = self.steps
        while True:
            position = self.position
            if position < self.count:
                step = steps[position]
                self.position = position + 1
                kind = type(step)
                try:
                    if kind is _Send:
                        self.waited = True
                        self.send(step)  # type: ignore[arg-type]
                        return
                    if kind is Think:
                        self.waited = True
                        low, high = step.min, step.max  # type: ignore[union-attr]
                        delay = low if high == low else random.uniform(low, high)
                        self.timer = self.loop_.call_later(delay, self._resume)
                        return
                    self.vu.vars.update(self.flow.feeds.take(step))  # type: ignore[arg-type]
                except Exception as exc:  # a broken step fails the iteration; the run goes on
                    self.flow.recorder.record_check_failure(
                        self.flow.scenario, f"scenario raised {type(exc).__name__}"
                    )
                    self.position = self.count
                    if type(exc) is FeedExhausted:
                        self.retired = True  # no rows left for this user: it leaves
                continue
            # The iteration is over.
            self.vu.iteration += 1
            until = self.until
            if (
                until is not None
                and not until.stop
                and not self.retired
                and self.loop_.time() < until.deadline
            ):
                self.position = 0
                if not self.waited:
                    # An iteration that never waits would hold the event loop forever.
                    self.loop_.call_soon(self.advance)
                    return
                self.waited = False
                continue
            self.active = False
            if self.starting:
                # An iteration that never waited (or failed before its first request) ends
                # inside start(): call back from the loop, so that the caller is never
                # re-entered (a dispatcher would hand this user its next arrival at once).
                self.loop_.call_soon(self._finish)
                return
            done = self.done
            if done is not None:
                done(self)
            return

    def _resume(self) -> None:
        self.timer = None
        self.advance()

    def send(self, step: _Send) -> None:
        vu = self.vu
        self.pending = step
        self.intended_ns, vu.intended_ns = vu.intended_ns, None
        self.sent_ns = time.perf_counter_ns()
        data = step.encode(vu)
        conn = vu._conn
        if conn is None:
            self.loop_.create_task(self._connect_and_send(data, step.head))
            return
        try:
            conn.send(data, step.head, vu.timeout, self._on_response)
        except HTTPError as exc:
            self.loop_.call_soon(self._on_response, None, exc)

    async def _connect_and_send(self, data: bytes, head: bool) -> None:
        vu = self.vu
        try:
            if self.flow.lane and self.until is not None:
                conn = await Lane.open(vu.target, vu.timeout)
                conn.bind(self)
            else:
                conn = await Connection.open(vu.target, vu.timeout)
        except HTTPError as exc:
            self._on_response(None, exc)
            return
        if not self.active or self.pending is None:  # cancelled while connecting
            conn.close()
            return
        vu._conn = conn
        try:
            conn.send(data, head, vu.timeout, self._on_response)
        except HTTPError as exc:
            self._on_response(None, exc)

    def on_response(self, response: Response | None, error: HTTPError | None) -> None:
        step = self.pending
        if step is None or not self.active:
            return
        self.pending = None
        vu = self.vu
        recorder = self.flow.recorder
        if response is None:
            vu._drop_connection()
            reason = error.reason if error is not None else "closed"
            recorder.record(
                step.name, self.intended_ns, self.sent_ns, time.perf_counter_ns(), None, reason
            )
            self.advance()
            return
        if not response.reusable:
            vu._drop_connection()
        status = response.status
        recorder.record(
            step.name,
            self.intended_ns,
            response.sent_ns,
            response.done_ns,
            status,
            f"status:{status}" if status >= 500 else None,
        )
        if response.has_cookies:
            vu._keep_cookies(response)
        request = step.step
        if request.check is not None or request.capture:
            try:
                check = request.check
                if check is not None:
                    if status not in check.status:
                        recorder.record_check_failure(step.name, f"status {status}")
                    elif check.body_contains and check.body_contains.encode() not in response.body:
                        recorder.record_check_failure(step.name, "body_contains")
                for capture in request.capture:
                    vu.vars[capture.var] = _captured(response, capture)
            except Exception as exc:
                reason = f"scenario raised {type(exc).__name__}"
                recorder.record_check_failure(self.flow.scenario, reason)
                self.position = self.count
        self.advance()


class LaneConnection(Connection):
    """A connection that runs a looping user's plain flow without leaving the parser.

    When a response is complete, expected (status accepted and below 500, no cookie set,
    connection kept open) and the user goes on, its service time goes straight into the
    recorder's buffer and the next request's bytes go out, from inside the parser's
    callback: no response object, no callback chain, no clock read beyond the two
    timestamps. Anything else takes the general path (``FlowRun.on_response``), which
    handles it as for any flow. This is what holds a plain flow's cost per request near
    a bare protocol's (see docs/load.md, "Efficiency").
    """

    keeps_body = False  # plain flows read statuses only
    watches_head = False  # plain flows send no HEAD; a head's end is found below when needed

    def data_received(self, data: bytes) -> None:
        # Connection.data_received without the headers-complete callback it relies on.
        if not self._first_byte_ns:
            # No clock read: a plain flow never shows a response's first-byte time.
            self._first_byte_ns = 1
            self._raw = data
        elif not self._headers_done:
            # A head split across reads, or a body after a head: keep bytes up to its end.
            self._raw += data
            self._headers_done = self._raw.find(b"\r\n\r\n") >= 0
        if self._waiter is None:
            self._abort()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ProtocolError(f"malformed response from {self._target.url}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._headers_done and self._raw.find(b"\r\n\r\n") >= 0:
            self._headers_done = True
        Connection.connection_lost(self, exc)

    def bind(self, run: FlowRun) -> None:
        """Serve ``run``'s user, whose flow is all plain requests (``CompiledFlow.lane``)."""
        vu = run.vu
        recorder = vu.recorder
        self.run = run
        self.recorder = recorder
        self.cookies = vu.cookies
        self.count = run.count
        self.lane = [
            (step, step.encode(vu), step.ok, recorder.sink(step.name), step.name)
            for step in run.steps
        ]
        # Loop time from a perf_counter_ns reading: both clocks are CLOCK_MONOTONIC on
        # Linux; the offset keeps them together where they are not.
        self.offset = self._loop.time() - perf_counter_ns() * 1e-9
        until = run.until
        # The user's end in perf_counter_ns, compared with each response's timestamp.
        self.until_ns = int((until.deadline - self.offset) * 1e9) if until is not None else 0

    def _on_timer(self) -> None:
        # The lane does not move the deadline per request: it follows from the send time.
        if self._waiter is not None and self._sent_ns > 1:
            self._deadline = self._sent_ns * 1e-9 + self.offset + self._timeout
        Connection._on_timer(self)

    def _on_message_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        raw = self._raw
        if (
            status >= 500
            or status < 200
            # find, not in: bytes.__contains__ tries an int first and pays for an exception.
            # (Set-Cookie and set-cookie are seen; no server spells it all in capitals.)
            or raw.find(b"ookie") >= 0
            or self.cookies
            or not parser.should_keep_alive()
        ):
            Connection._on_message_complete(self)
            return
        run = self.run
        position = run.position
        _, _, ok, sink, name = self.lane[position - 1]
        if ok is not None and status not in ok:
            Connection._on_message_complete(self)
            return
        done = perf_counter_ns()
        recorder = self.recorder
        if recorder._low_ns <= done < recorder._high_ns:
            sink.append(done - self._sent_ns)
        else:
            recorder.record(name, None, self._sent_ns, done, status, None)
        if position == self.count:
            until = run.until
            if until is None or until.stop or run.retired or done >= self.until_ns:
                # The user stops: the general path ends the iteration.
                self._waiter = None
                run.pending = None
                run.advance()
                return
            run.vu.iteration += 1
            position = 0
        run.position = position + 1
        step, data, _, _, _ = self.lane[position]
        run.pending = step
        self._headers_done = False
        self._first_byte_ns = 0
        self._sent_ns = perf_counter_ns()
        self._transport.write(data)  # type: ignore[union-attr]


def _compiled_lane() -> type[LaneConnection] | None:
    try:
        from redline.load._lane import LaneCore
    except ImportError:  # built without a C compiler: the Python lane does the same work
        return None

    class CompiledLaneConnection(LaneCore, LaneConnection):
        """``LaneConnection`` with its per-response work in C (``_lane.c``).

        The C ``data_received`` takes a read that holds exactly one complete, ordinary
        response (Content-Length or chunked, HTTP/1.1 keep-alive, a status of 200-499 that
        the step accepts, no cookie) and does what ``LaneConnection._on_message_complete``
        would: record the service time, write the next request. Any other read goes whole to
        ``LaneConnection.data_received``, so both lanes record the same thing (the lane tests
        run on both).
        """

        _py_data_received = LaneConnection.data_received

        def send(
            self,
            data: bytes,
            head: bool,
            timeout: float,
            callback: Callback | asyncio.Future[Response],
        ) -> None:
            # The general path sends: the C side must read the flow's position again.
            self._forget()
            Connection.send(self, data, head, timeout, callback)

        def bind(self, run: FlowRun) -> None:
            LaneConnection.bind(self, run)
            steps = tuple(
                (step, data, ok, sink.append, name) for step, data, ok, sink, name in self.lane
            )
            self._bind_core(run, self.recorder, self.cookies, steps, self.until_ns)

    CompiledLaneConnection.__qualname__ = "CompiledLaneConnection"
    return CompiledLaneConnection


# The C lane when it was compiled (see hatch_build.py at the project root), else None.
CompiledLaneConnection = _compiled_lane()


def lane_class() -> type[LaneConnection]:
    """The fast lane's connection class: the C one unless absent or REDLINE_PURE_PYTHON=1."""
    if CompiledLaneConnection is None or os.environ.get("REDLINE_PURE_PYTHON", "0") != "0":
        return LaneConnection
    return CompiledLaneConnection


# Chosen once per process (workers inherit the environment).
Lane = lane_class()


def _captured(response: Response, capture: Any) -> Any:
    if capture.header is not None:
        return response.header(capture.header)
    value: Any = response.json()
    for part in capture.json_path:
        value = value[part]
    return value
