import threading

import pytest

from redline.cache import _breaker
from redline.cache._breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    """A hand-driven stand-in for time.monotonic, so windows end exactly when a test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(_breaker, "monotonic", clock)
    return clock


def open_breaker(threshold: int = 1, duration: float = 1.0) -> Breaker:
    breaker = Breaker(threshold=threshold, duration=duration)
    for _ in range(threshold):
        assert breaker.acquire() == CLOSED
        breaker.failure()
    assert breaker.state == OPEN
    return breaker


@pytest.mark.parametrize(
    ("threshold", "duration", "message"),
    [(0, 1.0, "breaker_threshold=0"), (1, 0.0, "breaker_duration=0.0"), (1, -1.0, "> 0")],
)
def test_invalid_settings_are_rejected_with_the_setting_named(
    threshold: int, duration: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Breaker(threshold=threshold, duration=duration)


def test_a_new_breaker_is_closed_and_lets_every_call_through() -> None:
    breaker = Breaker()
    assert [breaker.acquire() for _ in range(5)] == [CLOSED] * 5
    assert (breaker.state, breaker.failures, breaker.opened) == (CLOSED, 0, 0)


@pytest.mark.usefixtures("clock")
def test_default_threshold_opens_on_the_first_failure() -> None:
    breaker = Breaker()
    breaker.failure()
    assert breaker.state == OPEN
    assert breaker.opened == 1


@pytest.mark.usefixtures("clock")
def test_it_stays_closed_until_threshold_consecutive_failures() -> None:
    breaker = Breaker(threshold=3)
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED
    assert breaker.acquire() == CLOSED
    breaker.failure()
    assert breaker.state == OPEN
    assert breaker.failures == 3


@pytest.mark.usefixtures("clock")
def test_a_success_resets_the_consecutive_failure_count() -> None:
    breaker = Breaker(threshold=3)
    breaker.failure()
    breaker.failure()
    breaker.success()
    assert breaker.failures == 0
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED


def test_an_open_breaker_skips_every_call_until_the_window_ends(clock: Clock) -> None:
    breaker = open_breaker(duration=1.0)
    assert [breaker.acquire() for _ in range(100)] == [OPEN] * 100
    clock.now += 0.999
    assert breaker.acquire() == OPEN
    assert breaker.state == OPEN


def test_exactly_one_caller_probes_when_the_window_ends(clock: Clock) -> None:
    breaker = open_breaker(duration=1.0)
    clock.now += 1.0
    assert breaker.acquire() == HALF_OPEN
    assert breaker.state == HALF_OPEN
    # While the probe is out, everybody else is skipped for the rest of its window.
    assert [breaker.acquire() for _ in range(50)] == [OPEN] * 50
    clock.now += 0.999
    assert breaker.acquire() == OPEN


def test_a_probe_that_never_reports_back_expires_after_one_window(clock: Clock) -> None:
    breaker = open_breaker(duration=1.0)
    clock.now += 1.0
    assert breaker.acquire() == HALF_OPEN  # and its caller is cancelled: no success, no failure
    clock.now += 1.0
    assert breaker.acquire() == HALF_OPEN
    assert breaker.acquire() == OPEN
    breaker.success()
    assert breaker.acquire() == CLOSED


def test_exactly_one_of_many_threads_gets_the_probe(clock: Clock) -> None:
    breaker = open_breaker(duration=1.0)
    clock.now += 1.0
    start = threading.Barrier(16)
    results: list[str] = []

    def race() -> None:
        start.wait()
        results.extend(breaker.acquire() for _ in range(100))

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(HALF_OPEN) == 1
    assert results.count(OPEN) == len(results) - 1


def test_a_successful_probe_closes_the_breaker(clock: Clock) -> None:
    breaker = open_breaker()
    clock.now += 1.0
    assert breaker.acquire() == HALF_OPEN
    breaker.success()
    assert (breaker.state, breaker.failures) == (CLOSED, 0)
    assert [breaker.acquire() for _ in range(5)] == [CLOSED] * 5


def test_a_failed_probe_reopens_for_a_whole_new_window(clock: Clock) -> None:
    breaker = open_breaker(duration=1.0)
    clock.now += 1.0
    assert breaker.acquire() == HALF_OPEN
    clock.now += 0.3  # the probe itself took a while to time out
    breaker.failure()
    assert breaker.state == OPEN
    assert breaker.opened == 2
    clock.now += 0.999
    assert breaker.acquire() == OPEN
    clock.now += 0.001
    assert breaker.acquire() == HALF_OPEN


def test_with_a_higher_threshold_one_failed_probe_still_reopens(clock: Clock) -> None:
    breaker = open_breaker(threshold=3)
    clock.now += 1.0
    assert breaker.acquire() == HALF_OPEN
    breaker.failure()
    assert breaker.state == OPEN
    assert breaker.acquire() == OPEN


def test_one_probe_per_window_over_a_long_outage(clock: Clock) -> None:
    breaker = open_breaker(duration=0.5)
    probes = 0
    # 10 s of calls every 10 ms against a dead server: each probe fails at once.
    for _ in range(1000):
        clock.now += 0.01
        state = breaker.acquire()
        if state == HALF_OPEN:
            probes += 1
            breaker.failure()
        else:
            assert state == OPEN
    assert 19 <= probes <= 21
    assert breaker.opened == probes + 1
