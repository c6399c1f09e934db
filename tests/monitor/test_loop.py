"""Event-loop lag: a real loop blocked for known durations shows them, an idle loop shows
next to nothing, one timer per interval, and the lifespan helpers."""

import asyncio
import threading
import time

import pytest
import uvloop

from redline import monitor
from redline.monitor import LoopLagMiddleware, LoopLagMonitor

INTERVAL = 0.02


@pytest.fixture
def registry():
    return monitor.Registry()


def block(seconds):
    """Blocks the thread (and so its loop) for ``seconds``; how long it really took."""
    start = time.perf_counter()
    time.sleep(seconds)
    return time.perf_counter() - start


def lags(registry):
    return registry.get("event_loop_lag_seconds").snapshot()


def stalls(registry):
    return registry.get("event_loop_long_stalls_total").value


async def test_an_idle_loop_shows_near_zero_lag(registry):
    async with LoopLagMonitor(INTERVAL, registry=registry) as lag_monitor:
        await asyncio.sleep(0.6)
        worst = lag_monitor.max_lag()
    recorded = lags(registry)

    assert recorded.count >= 15
    # asyncio rounds the selector's timeout up to the millisecond; a busy machine adds
    # the wait for a core.
    assert recorded.quantile(0.5) < 0.01
    assert worst < 0.1
    assert stalls(registry) == 0


@pytest.mark.parametrize("blocked", [0.05, 0.15, 0.3])
async def test_a_loop_blocked_by_time_sleep_shows_the_stall(registry, blocked):
    async with LoopLagMonitor(INTERVAL, registry=registry) as lag_monitor:
        await asyncio.sleep(0.1)
        stalled = block(blocked)
        await asyncio.sleep(0.1)
        worst = lag_monitor.max_lag()
    recorded = lags(registry)

    # The stall began somewhere within an interval: the timer was late by at least
    # the stall less one interval, and by no more than the stall plus scheduling noise.
    assert stalled - INTERVAL - 0.005 <= worst <= stalled + 0.03
    assert recorded.quantile(1.0) == pytest.approx(worst, rel=0.01, abs=1e-5)
    assert stalls(registry) == (1 if blocked >= 0.1 + INTERVAL else 0)
    assert registry.get("event_loop_lag_max_seconds").value == pytest.approx(worst, abs=0.002)


async def test_each_stall_over_the_threshold_counts_once(registry):
    async with LoopLagMonitor(INTERVAL, threshold=0.05, registry=registry):
        for blocked in (0.1, 0.01, 0.2, 0.01, 0.12):
            time.sleep(blocked)
            await asyncio.sleep(0.06)

    assert stalls(registry) == 3


async def test_a_stall_in_progress_shows_in_the_gauge_read_from_another_thread(registry):
    seen = []
    lag_monitor = LoopLagMonitor(INTERVAL, registry=registry)
    gauge = registry.get("event_loop_lag_max_seconds")

    def scrape_during_stall():
        time.sleep(0.3)
        seen.append(gauge.value)

    async with lag_monitor:
        await asyncio.sleep(0.05)
        scraper = threading.Thread(target=scrape_during_stall)
        scraper.start()
        time.sleep(0.5)
        await asyncio.sleep(0)
        scraper.join()

    assert 0.2 <= seen[0] <= 0.35


async def test_the_max_gauge_forgets_stalls_older_than_the_window(registry):
    async with LoopLagMonitor(INTERVAL, window=0.3, registry=registry) as lag_monitor:
        await asyncio.sleep(0.05)
        time.sleep(0.15)
        await asyncio.sleep(0.05)
        assert lag_monitor.max_lag() > 0.1
        await asyncio.sleep(0.4)
        assert lag_monitor.max_lag() < 0.05


async def test_one_timer_per_interval_and_none_after_stop(registry):
    lag_monitor = LoopLagMonitor(0.05, registry=registry).start()
    await asyncio.sleep(0.52)
    lag_monitor.stop()
    ticks = lags(registry).count
    await asyncio.sleep(0.2)

    assert 8 <= ticks <= 10
    assert lags(registry).count == ticks
    assert not lag_monitor.running


async def test_monitors_sharing_a_registry_share_the_metrics_and_the_gauge_shows_the_worst(
    registry,
):
    async with (
        LoopLagMonitor(INTERVAL, registry=registry),
        LoopLagMonitor(INTERVAL * 2, registry=registry) as slower,
    ):
        await asyncio.sleep(0.05)
        time.sleep(0.2)
        await asyncio.sleep(0.1)
        shared = registry.get("event_loop_lag_max_seconds").value
        assert shared >= slower.max_lag()

    assert len(registry) == 3
    assert stalls(registry) == 2


def test_start_without_a_running_loop_says_how_to_start(registry):
    with pytest.raises(monitor.RedlineMonitorError, match="no running event loop"):
        LoopLagMonitor(registry=registry).start()


def test_bad_settings_are_refused(registry):
    with pytest.raises(monitor.RedlineMonitorError, match="interval"):
        LoopLagMonitor(0, registry=registry)
    with pytest.raises(monitor.RedlineMonitorError, match="window"):
        LoopLagMonitor(1.0, window=0.5, registry=registry)


def test_uvloop_stalls_are_measured_too(registry):
    async def main():
        async with LoopLagMonitor(INTERVAL, registry=registry) as lag_monitor:
            await asyncio.sleep(0.1)
            stalled = block(0.2)
            await asyncio.sleep(0.1)
            return stalled, lag_monitor.max_lag()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        stalled, worst = runner.run(main())

    # libuv's loop time is in whole milliseconds.
    assert stalled - INTERVAL - 0.005 <= worst <= stalled + 0.03
    assert stalls(registry) == 1


def test_exposition_and_worker_merge_rule(registry):
    async def main():
        async with LoopLagMonitor(INTERVAL, registry=registry):
            await asyncio.sleep(0.05)

    asyncio.run(main())
    text = monitor.generate_latest(registry).decode()

    assert "# TYPE event_loop_lag_seconds histogram" in text
    assert "# TYPE event_loop_lag_max_seconds gauge" in text
    assert "# TYPE event_loop_long_stalls_total counter" in text
    assert registry.get("event_loop_lag_max_seconds").multiprocess_mode == "max"
    # A stopped monitor has no stall in progress.
    assert registry.get("event_loop_lag_max_seconds").value < 0.05


# -- ASGI ------------------------------------------------------------------------------------------


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].removeprefix("lifespan.")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_middleware_runs_the_monitor_from_lifespan_startup_to_shutdown(registry):
    middleware = LoopLagMiddleware(app, interval=INTERVAL, registry=registry)
    inbox: asyncio.Queue = asyncio.Queue()
    sent = []

    async def send(message):
        sent.append(message["type"])

    lifespan = asyncio.create_task(middleware({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await asyncio.sleep(0.1)
    assert middleware.monitor.running
    assert lags(registry).count >= 2

    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan

    assert not middleware.monitor.running
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_middleware_starts_on_the_first_request_without_lifespan(registry):
    middleware = LoopLagMiddleware(app, interval=INTERVAL, registry=registry)
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    await middleware({"type": "http", "method": "GET", "path": "/"}, receive, send)

    assert sent[0]["status"] == 204
    assert middleware.monitor.running
    middleware.monitor.stop()


async def test_with_the_defaults_a_stall_just_after_a_tick_still_counts_as_long(registry):
    async with LoopLagMonitor(registry=registry):
        await asyncio.sleep(0.12)
        # A tick falling due inside a 0.25 s stall looks late by the part of the stall after
        # it: with a 0.25 s interval that could be almost nothing, with the 0.05 s default
        # it is at least 0.2 s.
        block(0.25)
        await asyncio.sleep(0.12)

    assert stalls(registry) == 1
