"""The load generator watching itself: is it measuring the target, or its own limits?

A generator that cannot keep up reports its own queueing as the target's latency. Three
signs are watched during a run: event-loop lag (a timer that fires late means every request's
timestamps are late too), schedule lag (open-model arrivals sent after their intended time),
and the process's own CPU use. The verdict goes into ``summary.json`` as ``generator`` and
decides the "saturated" exit code.

Schedule lag is judged on the share of late arrivals, not on the worst one: on a shared
machine the scheduler now and then holds the process up for a few tens of milliseconds, and
one such arrival in a run says nothing about the run's figures. Many late arrivals, or one
very late, do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field

# A generator is saturated when its loop lags by more than LAG_LIMIT_MS, when more than
# LATE_SHARE_LIMIT of its arrivals go out more than LAG_LIMIT_MS late or any goes out more than
# WORST_LAG_LIMIT_MS late, or when it keeps a core this busy: past these, its own queueing
# shows up in the latencies.
LAG_LIMIT_MS = 10.0
LATE_SHARE_LIMIT = 0.01
WORST_LAG_LIMIT_MS = 10 * LAG_LIMIT_MS
CPU_LIMIT = 0.9
_LAG_LIMIT_NS = int(LAG_LIMIT_MS * 1_000_000)


@dataclass
class SelfWatch:
    """Samples event-loop lag every ``interval`` seconds and accounts the process's CPU;
    counts the open-model arrivals, and those sent more than ``LAG_LIMIT_MS`` late."""

    interval: float = 0.1
    loop_lag_ms: list[float] = field(default_factory=list)
    max_schedule_lag_ms: float = 0.0
    arrivals: int = 0
    late_arrivals: int = 0
    _cpu_start: float = 0.0
    _wall_start: float = 0.0
    _cpu: float = 0.0
    _wall: float = 0.0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._cpu_start = time.process_time()
        self._wall_start = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> None:
        self._cpu = time.process_time() - self._cpu_start
        self._wall = time.perf_counter() - self._wall_start
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def schedule_lag(self, lag_ns: int) -> None:
        """Record how late an open-model arrival was sent; once per arrival."""
        self.arrivals += 1
        if lag_ns > _LAG_LIMIT_NS:
            self.late_arrivals += 1
        lag_ms = lag_ns / 1e6
        if lag_ms > self.max_schedule_lag_ms:
            self.max_schedule_lag_ms = lag_ms

    def schedule_lags(self, arrivals: int, late: int, worst_ns: int) -> None:
        """``schedule_lag`` for a batch: ``arrivals`` sent, ``late`` of them more than
        ``LAG_LIMIT_MS`` late, the worst ``worst_ns`` late."""
        self.arrivals += arrivals
        self.late_arrivals += late
        worst_ms = worst_ns / 1e6
        if worst_ms > self.max_schedule_lag_ms:
            self.max_schedule_lag_ms = worst_ms

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.loop_lag_ms.append(max(0.0, (loop.time() - due) * 1000))

    def summary(self, requests: int) -> dict[str, object]:
        """The ``generator`` section of summary.json."""
        cores = os.cpu_count() or 1
        busy = self._cpu / self._wall if self._wall else 0.0
        lag = sorted(self.loop_lag_ms)
        p99_lag = lag[min(len(lag) - 1, int(len(lag) * 0.99))] if lag else 0.0
        late_share = self.late_arrivals / self.arrivals if self.arrivals else 0.0
        reasons = []
        stalls = sum(1 for value in lag if value > LAG_LIMIT_MS)
        # In a short run the p99 of a few samples is their maximum: one hiccup of a busy
        # machine is not saturation, so it takes two stalled samples at least.
        if p99_lag > LAG_LIMIT_MS and stalls >= 2:
            reasons.append(
                f"event loop p99 lag {p99_lag:.1f} ms > {LAG_LIMIT_MS:.0f} ms "
                f"({stalls} of {len(lag)} samples)"
            )
        if late_share > LATE_SHARE_LIMIT:
            reasons.append(
                f"{self.late_arrivals} of {self.arrivals} arrivals ({late_share:.1%}) sent more "
                f"than {LAG_LIMIT_MS:.0f} ms late (> {LATE_SHARE_LIMIT:.0%} of them), "
                f"the worst {self.max_schedule_lag_ms:.1f} ms late"
            )
        if self.max_schedule_lag_ms > WORST_LAG_LIMIT_MS:
            reasons.append(
                f"arrivals sent up to {self.max_schedule_lag_ms:.1f} ms late "
                f"(> {WORST_LAG_LIMIT_MS:.0f} ms)"
            )
        if busy > CPU_LIMIT:
            reasons.append(f"generator used {busy:.0%} of a core (> {CPU_LIMIT:.0%})")
        return {
            "cpu_seconds": round(self._cpu, 4),
            "cpu_us_per_request": round(self._cpu / requests * 1e6, 2) if requests else None,
            "core_busy": round(busy, 3),
            "cores": cores,
            "loop_lag_p99_ms": round(p99_lag, 3),
            "max_schedule_lag_ms": round(self.max_schedule_lag_ms, 3),
            "arrivals": self.arrivals,
            "late_arrivals": self.late_arrivals,
            "late_arrival_share": round(late_share, 4),
            "saturated": bool(reasons),
            "reasons": reasons,
        }
