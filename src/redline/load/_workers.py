"""``--workers N``: one run spread over N processes, measured as one.

One event loop drives one core. To go past it the run is split: each worker process loads
the same plan and runs its shard (every N-th open-model arrival, a 1/N share of closed-model
users, see ``run(shard=...)``) on a recorder that starts at the same instant as the
others', so their per-second intervals line up. Once a second each worker sends the
coordinator a running total (``Recorder.export(timeline=False)``, a few kilobytes); the
coordinator merges them into a view for the progress display and for abort-on-fail
thresholds, and tells the workers to stop when one fails. At the end each worker sends its
whole recording and the coordinator merges them: HDR histograms add count by count, so the
merged percentiles are those of one histogram of every sample.

Thresholds, the ``--metrics-url`` scraper and the preset verdicts run in the coordinator
only, on the merged data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redline.load._errors import RedlineLoadError
from redline.load._metrics import Recorder
from redline.load._plan import (
    ConstantArrivalRate,
    ConstantVUs,
    Plan,
    apply_preset,
    load_plan,
    parse_duration,
)
from redline.load._runner import Progress, RunResult, Tick, conclude, run
from redline.load._scrape import Scraper
from redline.load._thresholds import parse, required_percentiles

if TYPE_CHECKING:
    from multiprocessing.connection import Connection


class WorkerError(RedlineLoadError):
    """A worker process failed to start, died, or did not finish: the run has no result."""


_START_DELAY_NS = 100_000_000  # workers start together this long after the last is ready
_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class PlanSpec:
    """A plan file and the command line's changes to it, loadable in any process."""

    path: Path
    preset: str | None = None
    vus: int | None = None
    rate: float | None = None
    duration: str | None = None

    def load(self) -> Plan:
        """The plan, overridden and reshaped; PlanError/ValueError say what is wrong.

        ``preset`` is a name with optional options: ``spike`` or ``spike:factor=20,hold=5s``;
        ``duration`` also sets the preset's length (a soak lasts 30 minutes otherwise)."""
        plan = _overridden(load_plan(self.path), self.vus, self.rate, self.duration)
        if not self.preset:
            return plan
        name, options = parse_preset(self.preset)
        if self.duration is not None and name != "load":
            options.setdefault("duration", self.duration)
        return apply_preset(plan, name, **options)


def parse_preset(text: str) -> tuple[str, dict[str, Any]]:
    """``"spike:factor=20,hold=5s"`` as ``("spike", {"factor": 20.0, "hold": "5s"})``."""
    name, _, rest = text.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(
                f"--preset {text!r}: options are key=value pairs separated by commas, "
                f"e.g. spike:factor=20,hold=5s (got {item!r})"
            )
        value = value.strip()
        try:
            options[key.strip()] = int(value) if value.isdigit() else float(value)
        except ValueError:
            options[key.strip()] = value  # a duration such as 5s
    return name.strip(), options


def _overridden(plan: Plan, vus: int | None, rate: float | None, duration: str | None) -> Plan:
    seconds = parse_duration(duration) if duration is not None else None
    scenarios = []
    for scenario in plan.scenarios:
        executor: Any = scenario.executor
        changes: dict[str, Any] = {}
        if isinstance(executor, ConstantVUs) and vus is not None:
            changes["vus"] = vus
        if isinstance(executor, ConstantArrivalRate) and rate is not None:
            changes["rate"] = rate * executor.time_unit
        if isinstance(executor, ConstantVUs | ConstantArrivalRate) and seconds is not None:
            changes["duration"] = seconds
        if changes:
            scenario = dataclasses.replace(
                scenario, executor=dataclasses.replace(executor, **changes)
            )
        scenarios.append(scenario)
    return dataclasses.replace(plan, scenarios=tuple(scenarios))


# -- the worker side ----------------------------------------------------------------------


def _worker(
    spec: PlanSpec, target: str, timeout: float, shard: tuple[int, int], pipe: Connection
) -> None:
    """A worker process: load the plan, wait for the common start, run the shard."""
    try:
        # Thresholds are judged by the coordinator on everyone's data, never on a share.
        plan = dataclasses.replace(spec.load(), thresholds=())
    except Exception as exc:  # the coordinator loaded it first, so this is unexpected
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("ready",))
    message = pipe.recv()
    if message[0] != "go":
        return
    start_ns = message[1]
    pause = (start_ns - time.perf_counter_ns()) / 1e9
    if pause > 0:
        time.sleep(pause)
    recorder = Recorder(start_ns=start_ns)
    quiet_gc()

    def on_tick(progress: Progress) -> bool:
        pipe.send(("tick", recorder.export(timeline=False), progress.vus, progress.rate))
        stop = False
        while pipe.poll():
            stop = stop or pipe.recv() == ("stop",)
        return stop

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        result = runner.run(
            run(plan, target, timeout=timeout, on_tick=on_tick, recorder=recorder, shard=shard)
        )
    pipe.send(("done", recorder.export(), result.summary["generator"]))


def quiet_gc() -> None:
    """Fewer garbage collections during a run: the engine allocates little that lives long,
    and a young-generation pass every 700 allocations showed up in profiles. Objects
    alive at the start (modules, the plan) are frozen out of every later pass. No full
    collection first: it cost 15 ms of start-up for the little garbage that imports leave."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def loop_factory() -> Any:
    """uvloop when installed: its loop costs less CPU per request than asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - e.g. on Windows
        return None
    return uvloop.new_event_loop


# -- the coordinator side -----------------------------------------------------------------


class _Worker:
    def __init__(self, index: int, process: Any, pipe: Connection) -> None:
        self.index = index
        self.process = process
        self.pipe = pipe
        self.latest: bytes | None = None
        self.vus = 0
        self.rate: float | None = None
        self.final: bytes | None = None
        self.generator: dict[str, Any] | None = None
        self.failed: str | None = None


async def run_workers(
    spec: PlanSpec,
    target: str,
    workers: int,
    *,
    timeout: float = 10.0,
    on_tick: Tick | None = None,
    metrics_url: str | None = None,
) -> RunResult:
    """Run ``spec`` over ``workers`` processes and merge what they measured."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    plan = spec.load()  # errors surface here, before any process starts
    # Imported here: a run of one process (the common case) does not pay for it at start-up.
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    crew: list[_Worker] = []
    for index in range(workers):
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker,
            args=(spec, target, timeout, (index, workers), theirs),
            name=f"redline-load-worker-{index}",
            daemon=True,
        )
        process.start()
        theirs.close()
        crew.append(_Worker(index, process, ours))
    try:
        return await _coordinate(plan, crew, timeout, on_tick, metrics_url)
    finally:
        for worker in crew:
            if worker.process.is_alive():
                worker.process.terminate()
            worker.process.join(timeout=5)
            worker.pipe.close()


async def _coordinate(
    plan: Plan,
    crew: list[_Worker],
    timeout: float,
    on_tick: Tick | None,
    metrics_url: str | None,
) -> RunResult:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[_Worker, tuple[Any, ...] | None]] = asyncio.Queue()

    def readable(worker: _Worker) -> None:
        try:
            message = worker.pipe.recv()
        except (EOFError, OSError):
            loop.remove_reader(worker.pipe.fileno())
            message = None
        inbox.put_nowait((worker, message))

    for worker in crew:
        loop.add_reader(worker.pipe.fileno(), readable, worker)
    try:
        await _all_ready(crew, inbox)
        start_ns = time.perf_counter_ns() + _START_DELAY_NS
        for worker in crew:
            worker.pipe.send(("go", start_ns))
        scraper = Scraper(metrics_url, start_ns=start_ns) if metrics_url else None
        if scraper is not None:
            scraper.start()
        try:
            aborted = await _follow(plan, crew, inbox, start_ns, scraper, on_tick, timeout)
        finally:
            if scraper is not None:
                await scraper.stop()
    finally:
        for worker in crew:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(worker.pipe.fileno())
    merged = Recorder(start_ns=start_ns)
    for worker in crew:
        merged.merge(worker.final)  # type: ignore[arg-type]
    return conclude(
        plan,
        merged,
        _generator([w.generator for w in crew], merged.requests),  # type: ignore[misc]
        aborted=aborted,
        scraper=scraper,
    )


async def _all_ready(
    crew: list[_Worker], inbox: asyncio.Queue[tuple[_Worker, tuple[Any, ...] | None]]
) -> None:
    waiting = set(range(len(crew)))
    try:
        async with asyncio.timeout(_READY_TIMEOUT):
            while waiting:
                worker, message = await inbox.get()
                if message is None or message[0] == "error":
                    detail = message[1] if message else f"exit code {worker.process.exitcode}"
                    raise WorkerError(f"worker {worker.index} failed to start: {detail}")
                waiting.discard(worker.index)
    except TimeoutError:
        raise WorkerError(
            f"workers {sorted(waiting)} were not ready within {_READY_TIMEOUT:g} s"
        ) from None


async def _follow(
    plan: Plan,
    crew: list[_Worker],
    inbox: asyncio.Queue[tuple[_Worker, tuple[Any, ...] | None]],
    start_ns: int,
    scraper: Scraper | None,
    on_tick: Tick | None,
    timeout: float,
) -> dict[str, Any] | None:
    thresholds = [parse(t) for t in plan.thresholds]
    breakpoint_run = plan.preset is not None and plan.preset.name == "breakpoint"
    watching = thresholds if breakpoint_run else [t for t in thresholds if t.abort_on_fail]
    extra = required_percentiles(watching)
    aborted: dict[str, Any] | None = None
    running = len(crew)
    deadline = time.monotonic() + plan.total_duration + timeout + 60
    while running:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                worker, message = await inbox.get()
        except TimeoutError:
            raise WorkerError("workers did not finish in time") from None
        if message is None:
            if worker.final is None:
                raise WorkerError(
                    f"worker {worker.index} exited with code {worker.process.exitcode}"
                    " before reporting"
                )
            continue
        kind = message[0]
        if kind == "done":
            worker.final, worker.generator = message[1], message[2]
            running -= 1
            continue
        if kind != "tick":
            continue
        worker.latest, worker.vus, worker.rate = message[1], message[2], message[3]
        if worker.index != 0:
            continue  # one look a second, on the first worker's beat
        view = Recorder(start_ns=start_ns)
        for other in crew:
            if other.latest is not None:
                view.merge(other.latest)
        elapsed = (time.perf_counter_ns() - start_ns) / 1e9
        rates = [w.rate for w in crew if w.rate is not None]
        if on_tick is not None:
            on_tick(
                Progress(
                    elapsed,
                    plan.total_duration,
                    view,
                    sum(w.vus for w in crew),
                    sum(rates) if rates else None,
                )
            )
        if watching and aborted is None:
            summary = view.summary(extra=extra)
            if scraper is not None:
                summary["server"] = scraper.summary()
            failing = [
                t
                for t in watching
                if elapsed >= t.delay_abort_eval
                and summary["requests"]["total"]
                and not t.evaluate(summary)[0]
            ]
            if failing:
                aborted = {"at_s": round(elapsed, 3), "by": [t.expression for t in failing]}
                for other in crew:
                    with contextlib.suppress(OSError):
                        other.pipe.send(("stop",))
    return aborted


def _generator(parts: list[dict[str, Any]], requests: int) -> dict[str, Any]:
    """The workers' self-watch verdicts as one: CPU adds up, the worst lag counts."""
    cpu = sum(part["cpu_seconds"] for part in parts)
    arrivals = sum(part.get("arrivals", 0) for part in parts)
    late = sum(part.get("late_arrivals", 0) for part in parts)
    reasons = [
        f"worker {index}: {reason}"
        for index, part in enumerate(parts)
        for reason in part["reasons"]
    ]
    return {
        "cpu_seconds": round(cpu, 4),
        "cpu_us_per_request": round(cpu / requests * 1e6, 2) if requests else None,
        "core_busy": max(part["core_busy"] for part in parts),
        "cores": parts[0]["cores"],
        "workers": len(parts),
        "loop_lag_p99_ms": max(part["loop_lag_p99_ms"] for part in parts),
        "max_schedule_lag_ms": max(part["max_schedule_lag_ms"] for part in parts),
        "arrivals": arrivals,
        "late_arrivals": late,
        "late_arrival_share": round(late / arrivals, 6) if arrivals else 0.0,
        "saturated": any(part["saturated"] for part in parts),
        "reasons": reasons,
    }


__all__ = ["PlanSpec", "WorkerError", "loop_factory", "parse_preset", "quiet_gc", "run_workers"]
