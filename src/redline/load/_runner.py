"""Runs a plan: executors start virtual users (closed model) or dispatch arrivals at their
scheduled times (open model); the recorder measures; the self-watch judges the generator.

The open-model scheduler never drops an arrival silently: one that finds no free user and no
room for a new one is counted as dropped, and every arrival records how late it went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redline.load._flow import CompiledFlow, FlowRun, Until
from redline.load._http import Target
from redline.load._metrics import Recorder
from redline.load._plan import Plan, Scenario
from redline.load._scrape import Scraper
from redline.load._self_watch import LAG_LIMIT_MS, SelfWatch
from redline.load._thresholds import evaluate_all, parse, required_percentiles
from redline.load._verdicts import verdicts
from redline.load._vu import VU

FlowFunction = Callable[[VU], Awaitable[Any]]
Tick = Callable[["Progress"], None]
_CONTROL_TICK = 0.1  # seconds between closed-model adjustments of the number of users
_RETRY_S = 0.001  # how long an open-model dispatcher woken too early waits before looking again
# An arrival sent later than this counts in requests.late: above the loops' millisecond
# timer resolution, below the generator's own saturation limit.
_LATE_NS = 5_000_000
_WATCH_LATE_NS = int(LAG_LIMIT_MS * 1_000_000)  # later than this, in the generator's too


@dataclass
class RunResult:
    summary: dict[str, Any]
    passed: bool
    saturated: bool
    aborted: bool = False


@dataclass
class Progress:
    """What the run looks like now, handed to the ``on_tick`` callback once a second."""

    elapsed_s: float
    duration_s: float
    recorder: Recorder
    vus: int
    rate: float | None


class _Run:
    """What the executors of one run share: where to send, where to record, when to stop."""

    def __init__(
        self,
        target: Target,
        recorder: Recorder,
        watch: SelfWatch,
        timeout: float,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.target = target
        self.shard, self.shards = shard
        self.recorder = recorder
        self.watch = watch
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()  # set when an abort-on-fail threshold ends the run
        self.vus: dict[str, int] = {}
        self.rates: dict[str, float] = {}
        self.untils: list[Until] = []  # closed-model users stop when these do
        self.aborted_at: float | None = None
        self.aborted_by: list[str] = []

    def stop(self, elapsed: float, by: list[str]) -> None:
        """End the run now: executors stop starting iterations, users leave."""
        self.aborted_at = round(elapsed, 3)
        self.aborted_by = by
        self.stopped.set()
        for until in self.untils:
            until.stop = True

    def record_gauges(self, now_ns: int) -> None:
        """Users and arrival rate of all scenarios together, for the per-second series."""
        self.recorder.record_vus(now_ns, sum(self.vus.values()))
        if self.rates:
            self.recorder.record_rate(now_ns, sum(self.rates.values()))

    def share(self, count: int) -> int:
        """This worker's share of ``count`` users: the shares of all workers add up."""
        n, i = self.shards, self.shard
        return count * (i + 1) // n - count * i // n


async def run(
    plan: Plan,
    target: str,
    *,
    timeout: float = 10.0,
    on_tick: Tick | None = None,
    recorder: Recorder | None = None,
    metrics_url: str | None = None,
    shard: tuple[int, int] = (0, 1),
) -> RunResult:
    """Run every scenario of ``plan`` against ``target``; return the summary and verdicts.

    Once a second ``on_tick`` (if given) sees the progress (returning True stops the run),
    and thresholds marked abort-on-fail (all of them under the breakpoint preset) are
    evaluated: a failing one stops the run early. ``metrics_url`` is scraped during the
    run for ``summary["server"]``. ``shard=(i, n)`` runs worker ``i``'s share of ``n``:
    every n-th arrival of the open model and a 1/n share of the closed model's users.
    """
    base = Target.parse(target)
    for threshold in plan.thresholds:
        parse(threshold)  # a bad one fails here, before any load is sent
    recorder = recorder if recorder is not None else Recorder()
    scraper = Scraper(metrics_url, start_ns=recorder.start_ns) if metrics_url else None
    watch = SelfWatch()
    watch.start()
    if scraper is not None:
        scraper.start()
    state = _Run(base, recorder, watch, timeout, shard)
    scenarios = asyncio.gather(*(_scenario(s, state) for s in plan.scenarios))
    ticker = asyncio.get_running_loop().create_task(_ticks(plan, state, scraper, on_tick))
    try:
        await scenarios
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        recorder.stop()
        await watch.stop()
        if scraper is not None:
            await scraper.stop()
    aborted = {"at_s": state.aborted_at, "by": state.aborted_by} if state.aborted_by else None
    return conclude(
        plan,
        recorder,
        watch.summary(recorder.requests),
        aborted=aborted,
        scraper=scraper,
    )


def conclude(
    plan: Plan,
    recorder: Recorder,
    generator: dict[str, Any],
    *,
    aborted: dict[str, Any] | None = None,
    scraper: Scraper | None = None,
) -> RunResult:
    """The summary of a finished run (of one process, or merged from workers) and its
    verdicts: thresholds, preset verdicts, generator saturation."""
    thresholds = [parse(t) for t in plan.thresholds]
    summary = recorder.summary(extra=required_percentiles(thresholds))
    summary["generator"] = generator
    if scraper is not None:
        summary["server"] = scraper.summary()
        summary["server_scrape"] = scraper.status()
    if aborted:
        summary["aborted"] = aborted
    summary["thresholds"] = evaluate_all(thresholds, summary)
    found = verdicts(plan, recorder, summary)
    if found:
        summary["verdicts"] = found
    passed = all(verdict["ok"] for verdict in summary["thresholds"].values())
    return RunResult(summary, passed, bool(generator["saturated"]), aborted is not None)


def _snapshot(state: _Run, scraper: Scraper | None, extra: tuple[float, ...]) -> dict[str, Any]:
    summary = state.recorder.summary(extra=extra)
    if scraper is not None:
        summary["server"] = scraper.summary()
    return summary


async def _ticks(plan: Plan, state: _Run, scraper: Scraper | None, on_tick: Tick | None) -> None:
    loop = state.loop
    started = loop.time()
    thresholds = [parse(t) for t in plan.thresholds]
    breakpoint_run = plan.preset is not None and plan.preset.name == "breakpoint"
    # The breakpoint preset ramps until something breaks: every threshold stops it.
    watching = thresholds if breakpoint_run else [t for t in thresholds if t.abort_on_fail]
    extra = required_percentiles(watching)
    while True:
        await asyncio.sleep(1.0 - (loop.time() - started) % 1.0)
        elapsed = loop.time() - started
        if on_tick is not None:
            rates = [r for r in state.rates.values() if r is not None]
            progress = Progress(
                elapsed,
                plan.total_duration,
                state.recorder,
                sum(state.vus.values()),
                sum(rates) if rates else None,
            )
            if on_tick(progress) is True and not state.stopped.is_set():
                state.stop(elapsed, ["stopped by the coordinator"])
        if watching and not state.stopped.is_set():
            summary = _snapshot(state, scraper, extra)
            failing = [
                t
                for t in watching
                if elapsed >= t.delay_abort_eval
                and summary["requests"]["total"]
                and not t.evaluate(summary)[0]
            ]
            if failing:
                state.stop(elapsed, [t.expression for t in failing])


async def _scenario(scenario: Scenario, state: _Run) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.stopped.wait(), scenario.start_after)
    if state.stopped.is_set():
        return
    if callable(scenario.flow):
        users: _Users = _Tasks(scenario, scenario.flow, state)
    else:
        users = _Callbacks(scenario, CompiledFlow(scenario.name, scenario.flow, state.recorder))
    if scenario.executor.open_model:
        await _open(scenario, users, state)
    else:
        await _closed(scenario, users, state)


class _Users:
    """How an executor runs iterations of a scenario's flow on virtual users."""

    def loop(self, vu: VU, until: Until) -> asyncio.Future[None]:
        """Run iterations on ``vu`` until ``until`` stops them or the user is retired; the
        future ends with the user."""
        raise NotImplementedError

    def retire(self, vu: VU) -> None:
        """Let ``vu`` finish its iteration, then leave."""
        raise NotImplementedError

    def once(self, vu: VU, done: Callable[[VU], None]) -> None:
        """Run one iteration on ``vu``, then call ``done(vu)``."""
        raise NotImplementedError

    def cancel(self, vu: VU) -> None:
        """Stop ``vu`` mid-iteration, recording nothing more."""
        raise NotImplementedError


class _Tasks(_Users):
    """Python flows: each user a task (closed model), each iteration a task (open model)."""

    def __init__(self, scenario: Scenario, flow: FlowFunction, state: _Run) -> None:
        self.scenario = scenario
        self.flow = flow
        self.recorder = state.recorder
        self.loop_ = state.loop
        self.tasks: dict[VU, asyncio.Task[None]] = {}
        self.retired: set[VU] = set()

    def _failed(self, exc: Exception) -> None:
        # A broken scenario counts as failing; the run goes on.
        self.recorder.record_check_failure(
            self.scenario.name, f"scenario raised {type(exc).__name__}"
        )

    def loop(self, vu: VU, until: Until) -> asyncio.Future[None]:
        clock, retired, flow = self.loop_.time, self.retired, self.flow

        async def user() -> None:
            # Iterations are awaited here, not in a coroutine of their own: one frame less
            # to create and to pass every response through.
            try:
                while not until.stop and vu not in retired and clock() < until.deadline:
                    try:
                        await flow(vu)
                    except Exception as exc:
                        self._failed(exc)
                    vu.iteration += 1
            finally:
                vu.close()
                self.tasks.pop(vu, None)
                retired.discard(vu)

        task = self.tasks[vu] = self.loop_.create_task(user())
        return task

    def retire(self, vu: VU) -> None:
        self.retired.add(vu)

    def once(self, vu: VU, done: Callable[[VU], None]) -> None:
        flow = self.flow

        async def one() -> None:
            try:
                await flow(vu)
            except Exception as exc:
                self._failed(exc)
            finally:
                self.tasks.pop(vu, None)
            vu.iteration += 1
            done(vu)

        self.tasks[vu] = self.loop_.create_task(one())

    def cancel(self, vu: VU) -> None:
        task = self.tasks.pop(vu, None)
        if task is not None:
            task.cancel()
        vu.close()


class _Callbacks(_Users):
    """Declarative flows: compiled to callbacks, no task per user or per iteration."""

    def __init__(self, scenario: Scenario, flow: CompiledFlow) -> None:
        self.flow = flow
        self.runs: dict[VU, FlowRun] = {}

    def _run_of(self, vu: VU) -> FlowRun:
        run = self.runs.get(vu)
        if run is None:
            run = self.runs[vu] = self.flow.bind(vu)
        return run

    def loop(self, vu: VU, until: Until) -> asyncio.Future[None]:
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def leave(run: FlowRun) -> None:
            vu.close()
            self.runs.pop(vu, None)
            if not finished.done():
                finished.set_result(None)

        self._run_of(vu).loop(until, leave)
        return finished

    def retire(self, vu: VU) -> None:
        run = self.runs.get(vu)
        if run is not None:
            run.retired = True

    def once(self, vu: VU, done: Callable[[VU], None]) -> None:
        self._run_of(vu).start(lambda run: done(run.vu))

    def cancel(self, vu: VU) -> None:
        run = self.runs.pop(vu, None)
        if run is not None:
            run.cancel()
        vu.close()


async def _closed(scenario: Scenario, users: _Users, state: _Run) -> None:
    executor = scenario.executor
    loop = state.loop
    start = loop.time()
    until = Until(start + executor.total_duration)
    state.untils.append(until)
    grace = getattr(executor, "graceful_ramp_down", state.timeout)
    active: list[tuple[VU, asyncio.Future[None]]] = []
    # Users removed by a ramp down: they finish their iteration within ``grace``, or are cut.
    leaving: list[tuple[VU, asyncio.Future[None], float]] = []
    numbers = itertools.count()
    stopped = state.stopped

    while (now := loop.time()) < until.deadline and not stopped.is_set():
        wanted = state.share(executor.vus_at(now - start))
        while len(active) < wanted:
            vu = VU(next(numbers), state.target, state.recorder, state.timeout)
            active.append((vu, users.loop(vu, until)))
        while len(active) > wanted:
            vu, future = active.pop()
            users.retire(vu)  # finishes its iteration, then leaves
            leaving.append((vu, future, now))
        still = []
        for vu, future, since in leaving:
            if future.done():
                continue
            if now - since >= grace:
                users.cancel(vu)
                future.cancel()
            else:
                still.append((vu, future, since))
        leaving = still
        state.vus[scenario.name] = len(active)
        state.record_gauges(time.perf_counter_ns())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                stopped.wait(), min(_CONTROL_TICK, max(0.0, until.deadline - now))
            )
    until.stop = True
    state.vus[scenario.name] = 0
    state.record_gauges(time.perf_counter_ns())
    if stopped.is_set():
        grace = 0.0
    remaining = [*active, *((vu, future) for vu, future, _ in leaving)]
    pending = [future for _, future in remaining if not future.done()]
    if pending:
        await asyncio.wait(pending, timeout=grace)
    for vu, future in remaining:
        if not future.done():
            users.cancel(vu)
            future.cancel()


async def _open(scenario: Scenario, users: _Users, state: _Run) -> None:
    """Dispatch the scenario's arrivals at their intended times until the schedule is over,
    then let the iterations in flight finish (within the request timeout).

    One timer callback sends every arrival that is due, in order, then arms itself for the
    next one: no task, future or timer per arrival, and a compiled flow's first request goes
    out from the callback itself. An arrival never goes out before its intended time; the
    loops' timers have millisecond resolution, so it may go out up to about a millisecond
    after, and its latency counts that from the intended time.
    """
    executor = scenario.executor
    loop = state.loop
    recorder, watch, target, timeout = state.recorder, state.watch, state.target, state.timeout
    max_vus = -(-executor.max_vus // state.shards)
    idle = [
        VU(n, target, recorder, timeout)
        for n in range(-(-executor.pre_allocated_vus // state.shards))
    ]
    count = len(idle)
    busy: set[VU] = set()
    drained: asyncio.Future[None] | None = None
    name = scenario.name
    stopped = state.stopped
    once = users.once
    # This worker's arrivals: every n-th of the schedule, from its own.
    schedule = itertools.islice(executor.arrivals(), state.shard, None, state.shards)
    clock = time.perf_counter_ns
    t0 = clock()
    # Loop time of a perf_counter_ns reading: the loops' clock is time.monotonic's, and both
    # are CLOCK_MONOTONIC on Linux; the skew keeps them together where they are not.
    skew = time.monotonic() - t0 * 1e-9
    offset = next(schedule, None)
    next_second = 0
    scheduled: asyncio.Future[None] = loop.create_future()  # every arrival dispatched
    timer: asyncio.TimerHandle | None = None

    def done(vu: VU) -> None:
        busy.discard(vu)
        idle.append(vu)
        if drained is not None and not busy and not drained.done():
            drained.set_result(None)

    def dispatch() -> None:
        nonlocal offset, next_second, count, timer
        timer = None
        if stopped.is_set():
            return
        arrivals = late = worst = 0
        try:
            while offset is not None:
                intended = t0 + int(offset * 1e9)
                now = clock()
                if intended > now:
                    if not arrivals:
                        # Woken before anything was due (uvloop rounds a timer to the nearest
                        # millisecond): wait a whole millisecond rather than poll.
                        timer = loop.call_later(max((intended - now) * 1e-9, _RETRY_S), dispatch)
                    else:
                        timer = loop.call_at(intended * 1e-9 + skew, dispatch)
                    return
                if offset >= next_second:
                    # The target rate, once a second, for the report's arrival-rate series.
                    # This worker sends every n-th arrival: its share of the rate.
                    state.rates[name] = executor.rate_at(offset) / state.shards
                    state.vus[name] = len(busy)
                    state.record_gauges(now)
                    next_second = int(offset) + 1
                lag = now - intended
                arrivals += 1
                if lag > worst:
                    worst = lag
                if lag > _LATE_NS:
                    recorder.record_late(name, lag)
                    if lag > _WATCH_LATE_NS:
                        late += 1
                offset = next(schedule, None)
                if idle:
                    vu = idle.pop()
                elif count < max_vus:
                    vu = VU(count, target, recorder, timeout)
                    count += 1
                else:
                    recorder.record_dropped(name)
                    continue
                vu.intended_ns = intended
                busy.add(vu)
                once(vu, done)
        except Exception as exc:  # the scenario fails, as it would have in a coroutine
            scheduled.set_exception(exc)
            return
        finally:
            if arrivals:
                watch.schedule_lags(arrivals, late, worst)
                recorder.record_scheduled(name, arrivals)
        scheduled.set_result(None)

    abort = loop.create_task(stopped.wait())
    try:
        dispatch()
        await asyncio.wait((scheduled, abort), return_when=asyncio.FIRST_COMPLETED)
        state.rates[name] = 0.0
        state.vus[name] = 0
        state.record_gauges(time.perf_counter_ns())
        if scheduled.done():
            scheduled.result()
        if busy and not stopped.is_set():
            drained = loop.create_future()
            await asyncio.wait(
                (drained, abort), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
    finally:
        abort.cancel()
        if timer is not None:
            timer.cancel()
        for vu in list(busy):
            users.cancel(vu)
        for vu in idle:
            vu.close()
