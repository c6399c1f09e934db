"""``start(name)`` / ``end(token or name)``: explicit timers, safe across tasks and threads."""

import asyncio
import threading
import time

import pytest

from redline import monitor


@pytest.fixture
def registry():
    return monitor.Registry()


def count(registry, name, *labels):
    return registry.get(name).collect().samples[labels].count


def test_start_end_with_a_token_records_seconds_into_a_new_histogram(registry):
    token = monitor.start("checkout_seconds", registry=registry, step="payment")
    time.sleep(0.02)
    seconds = monitor.end(token)

    hist = registry.get("checkout_seconds")
    assert isinstance(hist, monitor.Histogram)
    assert hist.labelnames == ("step",)
    got = hist.labels(step="payment").snapshot()
    assert got.count == 1
    assert 0.02 <= seconds < 0.2
    assert got.sum == seconds
    assert not token.running


def test_an_existing_histogram_is_used_as_it_is(registry):
    hist = monitor.Histogram("job_seconds", "Mine.", ("kind",), registry=registry)

    monitor.end(monitor.start("job_seconds", registry=registry, kind="email"))

    assert registry.get("job_seconds") is hist
    assert hist.labels(kind="email").snapshot().count == 1
    with pytest.raises(monitor.MetricError, match="missing label 'kind'"):
        monitor.start("job_seconds", registry=registry)


def test_a_name_taken_by_another_type_is_refused(registry):
    monitor.Counter("jobs", "Help.", registry=registry)

    with pytest.raises(monitor.MetricError, match="'jobs_total' is a counter .* not a histogram"):
        monitor.start("jobs", registry=registry)


def test_ending_twice_raises_instead_of_recording_twice(registry):
    token = monitor.start("job_seconds", registry=registry)
    monitor.end(token)

    with pytest.raises(monitor.TimerError, match="'job_seconds' was already ended"):
        monitor.end(token)
    assert count(registry, "job_seconds") == 1


def test_threads_racing_to_end_one_token_record_it_once(registry):
    for _ in range(50):
        token = monitor.start("race_seconds", registry=registry)
        barrier = threading.Barrier(4)
        errors = []

        def finish(token=token, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                monitor.end(token)
            except monitor.TimerError:
                errors.append(1)

        threads = [threading.Thread(target=finish) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(errors) == 3
    assert count(registry, "race_seconds") == 50


def test_end_by_name_ends_the_latest_timer_of_this_name_started_here(registry):
    outer = monitor.start("step_seconds", registry=registry)
    inner = monitor.start("step_seconds", registry=registry)

    monitor.end("step_seconds")
    assert (outer.running, inner.running) == (True, False)
    monitor.end("step_seconds")
    assert not outer.running
    with pytest.raises(monitor.TimerError, match="no timer 'step_seconds' is running"):
        monitor.end("step_seconds")


async def test_concurrent_tasks_ending_by_name_never_end_each_others_timer(registry):
    # "first" starts, "second" starts 20 ms later, "first" ends before "second": a stack
    # shared by both tasks would hand "first" the timer of "second" (30 ms instead of 50).
    durations = {}

    async def request(name, wait, duration):
        await asyncio.sleep(wait)
        monitor.start("request_seconds", registry=registry)
        await asyncio.sleep(duration)
        durations[name] = monitor.end("request_seconds")

    await asyncio.gather(request("first", 0, 0.05), request("second", 0.02, 0.08))

    assert durations["first"] >= 0.05
    assert durations["second"] >= 0.08
    assert count(registry, "request_seconds") == 2


def test_threads_ending_by_name_see_only_their_own_timers(registry):
    durations = {}

    def work(name, wait, duration):
        time.sleep(wait)
        monitor.start("thread_seconds", registry=registry)
        time.sleep(duration)
        durations[name] = monitor.end("thread_seconds")

    threads = [
        threading.Thread(target=work, args=("first", 0, 0.05)),
        threading.Thread(target=work, args=("second", 0.02, 0.08)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert durations["first"] >= 0.05
    assert durations["second"] >= 0.08


def test_a_timer_started_in_another_thread_is_ended_by_token_not_by_name(registry):
    tokens = []
    thread = threading.Thread(
        target=lambda: tokens.append(monitor.start("cross_seconds", registry=registry))
    )
    thread.start()
    thread.join()

    with pytest.raises(monitor.TimerError, match="end\\(\\) the token"):
        monitor.end("cross_seconds")
    monitor.end(tokens[0])
    assert count(registry, "cross_seconds") == 1


def test_timers_ended_by_token_do_not_pile_up_in_the_context(registry):
    from redline.monitor._stopwatch import _OPEN

    for _ in range(1000):
        monitor.end(monitor.start("loop_seconds", registry=registry))

    assert len(_OPEN.get()) <= 1


def test_the_default_registry_is_used_without_registry():
    token = monitor.start("test_stopwatch_default_seconds")
    monitor.end(token)
    hist = monitor.REGISTRY.get("test_stopwatch_default_seconds")
    try:
        assert hist.snapshot().count == 1
    finally:
        monitor.REGISTRY.unregister(hist)
