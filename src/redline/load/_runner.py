"""Runs a plan: executors start virtual users (closed model) or dispatch arrivals at their
scheduled times (open model); the recorder measures; the self-watch judges the generator.

The open-model scheduler never drops an arrival silently: one that finds no free user and no
room for a new one is counted as dropped, and every arrival records how late it went out.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redline.load._http import Response, Target
from redline.load._metrics import Recorder
from redline.load._plan import Feed, Plan, Request, Scenario, Think, render, render_json
from redline.load._self_watch import SelfWatch
from redline.load._thresholds import evaluate_all, parse, required_percentiles
from redline.load._vu import VU

FlowFunction = Callable[[VU], Awaitable[Any]]
_CONTROL_TICK = 0.1  # seconds between closed-model adjustments of the number of users


@dataclass
class RunResult:
    summary: dict[str, Any]
    passed: bool
    saturated: bool


async def run(plan: Plan, target: str, *, timeout: float = 10.0) -> RunResult:
    """Run every scenario of ``plan`` against ``target``; return the summary and verdicts."""
    base = Target.parse(target)
    recorder = Recorder()
    watch = SelfWatch()
    watch.start()
    try:
        await asyncio.gather(
            *(_scenario(s, base, recorder, watch, timeout) for s in plan.scenarios)
        )
    finally:
        recorder.stop()
        await watch.stop()
    summary = recorder.summary(extra=required_percentiles([parse(t) for t in plan.thresholds]))
    summary["generator"] = watch.summary(summary["requests"]["total"])
    summary["thresholds"] = evaluate_all(plan.thresholds, summary)
    passed = all(verdict["ok"] for verdict in summary["thresholds"].values())
    return RunResult(summary, passed, bool(summary["generator"]["saturated"]))


async def _scenario(
    scenario: Scenario, target: Target, recorder: Recorder, watch: SelfWatch, timeout: float
) -> None:
    await asyncio.sleep(scenario.start_after)
    flow = scenario.flow if callable(scenario.flow) else _interpret(scenario.flow)
    if scenario.executor.open_model:
        await _open(scenario, flow, target, recorder, watch, timeout)
    else:
        await _closed(scenario, flow, target, recorder, timeout)


async def _iteration(scenario: Scenario, flow: FlowFunction, vu: VU, recorder: Recorder) -> None:
    try:
        await flow(vu)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a broken scenario counts as failing, the run goes on
        recorder.record_check_failure(scenario.name, f"scenario raised {type(exc).__name__}")
    vu.iteration += 1


async def _closed(
    scenario: Scenario, flow: FlowFunction, target: Target, recorder: Recorder, timeout: float
) -> None:
    executor = scenario.executor
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + executor.total_duration
    users: list[tuple[VU, asyncio.Event, asyncio.Task[None]]] = []
    numbers = itertools.count()

    async def user(vu: VU, retire: asyncio.Event) -> None:
        try:
            while not retire.is_set() and loop.time() < end:
                await _iteration(scenario, flow, vu, recorder)
        finally:
            vu.close()

    while (now := loop.time()) < end:
        wanted = executor.vus_at(now - start)
        while len(users) < wanted:
            vu, retire = VU(next(numbers), target, recorder, timeout), asyncio.Event()
            users.append((vu, retire, loop.create_task(user(vu, retire))))
        while len(users) > wanted:
            users.pop()[1].set()  # finishes its iteration, then leaves
        recorder.record_vus(time.perf_counter_ns(), len(users))
        await asyncio.sleep(min(_CONTROL_TICK, max(0.0, end - now)))
    for _, retire, _task in users:
        retire.set()
    grace = getattr(executor, "graceful_ramp_down", timeout)
    tasks = [task for _, _, task in users]
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()


async def _open(
    scenario: Scenario,
    flow: FlowFunction,
    target: Target,
    recorder: Recorder,
    watch: SelfWatch,
    timeout: float,
) -> None:
    executor = scenario.executor
    loop = asyncio.get_running_loop()
    idle = [VU(n, target, recorder, timeout) for n in range(executor.pre_allocated_vus)]
    count = len(idle)
    running: set[asyncio.Task[None]] = set()

    async def dispatch(vu: VU) -> None:
        await _iteration(scenario, flow, vu, recorder)
        idle.append(vu)

    t0 = time.perf_counter_ns()
    for offset in executor.arrivals():
        intended = t0 + int(offset * 1e9)
        wait = intended - time.perf_counter_ns()
        if wait > 0:
            await asyncio.sleep(wait / 1e9)
        lag = time.perf_counter_ns() - intended
        watch.schedule_lag(lag)
        if lag > 1_000_000:
            recorder.record_late(scenario.name, lag)
        if idle:
            vu = idle.pop()
        elif count < executor.max_vus:
            vu = VU(count, target, recorder, timeout)
            count += 1
        else:
            recorder.record_dropped(scenario.name)
            continue
        vu.intended_ns = intended
        task = loop.create_task(dispatch(vu))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.wait(running, timeout=timeout)
    for vu in idle:
        vu.close()


# -- declarative flows ------------------------------------------------------------------------


class _Feeds:
    """Rows of the CSV feeds of a run, handed out per the feed's mode."""

    def __init__(self) -> None:
        self._rows: dict[Path, list[dict[str, str]]] = {}
        self._next: dict[Path, int] = {}

    def take(self, feed: Feed) -> dict[str, str]:
        rows = self._rows.get(feed.file)
        if rows is None:
            with open(feed.file, newline="") as handle:
                rows = self._rows[feed.file] = list(csv.DictReader(handle))
        if feed.mode == "random":
            return random.choice(rows)
        index = self._next.get(feed.file, 0)
        self._next[feed.file] = index + 1
        if feed.mode == "unique" and index >= len(rows):
            raise LookupError(f"feed {feed.file.name}: all {len(rows)} unique rows used")
        return rows[index % len(rows)]


def _interpret(flow: tuple[Any, ...]) -> FlowFunction:
    feeds = _Feeds()

    async def run_flow(vu: VU) -> None:
        for step in flow:
            if isinstance(step, Think):
                await vu.think(step.min, step.max)
            elif isinstance(step, Feed):
                vu.vars.update(feeds.take(step))
            elif isinstance(step, Request):
                await _request(vu, step)

    return run_flow


async def _request(vu: VU, step: Request) -> None:
    variables = vu.vars
    response = await vu.request(
        step.method,
        render(step.url, variables),
        name=step.name,
        headers={k: render(v, variables) for k, v in step.headers.items()},
        json=render_json(step.json, variables) if step.json is not None else None,
        body=render(step.body, variables).encode() if step.body is not None else None,
    )
    if step.check is not None:
        ok = vu.check(response, step.check.status, name=step.name)
        wanted = step.check.body_contains
        if ok and wanted and response is not None and wanted.encode() not in response.body:
            vu.recorder.record_check_failure(step.name, "body_contains")
    if response is not None:
        for capture in step.capture:
            variables[capture.var] = _captured(response, capture)


def _captured(response: Response, capture: Any) -> Any:
    if capture.header is not None:
        return response.header(capture.header)
    value: Any = response.json()
    for part in capture.json_path:
        value = value[part]
    return value
