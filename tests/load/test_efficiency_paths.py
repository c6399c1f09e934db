"""The engine's cheap paths give the results of the plain ones: the open-model dispatcher (one
timer that sends every due arrival in a batch), compiled flows started from inside it,
Python flows without a coroutine per iteration, and the trimmed ``VU.request``."""

import asyncio
import time

import uvloop
from conftest import HTTPTestServer

from redline.load._flow import CompiledFlow
from redline.load._http import Target
from redline.load._metrics import Recorder
from redline.load._plan import ConstantArrivalRate, ConstantVUs, Feed, Plan, Request, Scenario
from redline.load._runner import run
from redline.load._vu import VU


def plan_of(executor, flow):
    return Plan(scenarios=(Scenario("s", executor, flow),))


class Timings(Recorder):
    """A recorder that also keeps each request's raw (intended, sent, done) timestamps."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int | None, int, int]] = []

    def record(self, name, intended_ns, sent_ns, done_ns, status, error):
        self.seen.append((intended_ns, sent_ns, done_ns))
        super().record(name, intended_ns, sent_ns, done_ns, status, error)


async def test_arrivals_due_together_go_out_in_one_batch_each_at_its_own_intended_time(
    http_server,
):
    executor = ConstantArrivalRate(rate=200, duration=0.5, pre_allocated_vus=50)
    recorder = Timings()
    # The event loop is blocked from 0.1 s to 0.2 s: the 20 arrivals meant for that time are
    # all due at once when it comes back, and go out together.
    asyncio.get_running_loop().call_later(0.1, time.sleep, 0.1)

    result = await run(plan_of(executor, (Request(url="/"),)), http_server.url, recorder=recorder)

    offsets = list(executor.arrivals())
    intended = sorted(i for i, _, _ in recorder.seen)
    assert len(intended) == len(offsets) == len(http_server.seen) == 100
    # Exactly the schedule, to the nanosecond, batch or not.
    assert [i - intended[0] for i in intended] == [int(o * 1e9) for o in offsets]
    # Never sent before its time; the batch was sent late, and its latency counts the wait.
    lateness = [sent - i for i, sent, _ in recorder.seen]
    assert min(lateness) >= 0
    batch = [late for late in lateness if late > 20_000_000]
    assert len(batch) >= 10
    requests = result.summary["requests"]
    assert requests["late"] >= len(batch)
    assert requests["max_late_ms"] >= 80
    generator = result.summary["generator"]
    assert generator["arrivals"] == 100
    assert generator["late_arrivals"] >= 10
    assert result.summary["latency_ms"]["max"] >= max(batch) / 1e6 - 0.001
    assert requests["dropped"] == requests["failed"] == 0


def test_on_uvloop_no_arrival_goes_out_before_its_intended_time():
    # uvloop rounds a timer to the nearest millisecond: one may fire before the arrival it
    # was armed for is due, and the dispatcher must then wait, not send.
    executor = ConstantArrivalRate(rate=500, duration=0.5, pre_allocated_vus=20)

    async def main() -> Timings:
        server = HTTPTestServer()
        await server.start()
        recorder = Timings()
        try:
            await run(plan_of(executor, (Request(url="/"),)), server.url, recorder=recorder)
        finally:
            await server.stop()
        return recorder

    recorder = uvloop.run(main())

    assert len(recorder.seen) == 250
    assert all(sent >= intended for intended, sent, _ in recorder.seen)


async def test_a_worker_dispatches_every_nth_arrival_of_the_schedule_from_its_own(http_server):
    executor = ConstantArrivalRate(rate=200, duration=0.5, pre_allocated_vus=10)
    recorder = Timings()

    result = await run(
        plan_of(executor, (Request(url="/"),)), http_server.url, recorder=recorder, shard=(1, 3)
    )

    offsets = list(executor.arrivals())[1::3]
    intended = sorted(i for i, _, _ in recorder.seen)
    assert result.summary["requests"]["total"] == len(intended) == len(offsets) == 33
    first = int(offsets[0] * 1e9)
    assert [i - intended[0] for i in intended] == [int(o * 1e9) - first for o in offsets]


async def test_an_abort_stops_the_open_model_while_it_waits_for_the_next_arrival(http_server):
    # One arrival every 10 s: the abort at the first tick (1 s) must not wait for the next.
    executor = ConstantArrivalRate(rate=0.1, duration=60, pre_allocated_vus=1)
    started = time.monotonic()

    result = await run(
        plan_of(executor, (Request(url="/"),)), http_server.url, on_tick=lambda progress: True
    )

    assert time.monotonic() - started < 3
    assert result.aborted
    assert result.summary["requests"]["total"] == len(http_server.seen) == 1


async def test_an_abort_stops_the_open_model_while_it_waits_for_iterations_in_flight(
    http_server,
):
    # The schedule is over at 0.5 s, its requests hang, and they may take 60 s: the abort at
    # 1 s ends the wait, and the requests in flight are abandoned unrecorded.
    executor = ConstantArrivalRate(rate=10, duration=0.5, pre_allocated_vus=5)
    started = time.monotonic()

    result = await run(
        plan_of(executor, (Request(url="/hang"),)),
        http_server.url,
        timeout=60,
        on_tick=lambda progress: True,
    )

    assert time.monotonic() - started < 3
    assert result.aborted
    assert len(http_server.seen) == 5
    assert result.summary["requests"]["total"] == 0


async def test_open_model_waits_for_the_iterations_in_flight_when_the_schedule_ends(http_server):
    executor = ConstantArrivalRate(rate=100, duration=0.2, pre_allocated_vus=5)

    result = await run(plan_of(executor, (Request(url="/delay/300"),)), http_server.url)

    assert result.summary["requests"]["total"] == 20
    assert result.summary["requests"]["failed"] == 0
    assert result.summary["latency_ms"]["min"] >= 300


async def test_an_iteration_that_never_waits_calls_back_from_the_loop_not_from_start(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("id\n1\n2\n")
    recorder = Recorder()
    flow = CompiledFlow("s", (Feed(rows),), recorder)
    user = flow.bind(VU(0, Target.parse("http://127.0.0.1:9"), recorder))
    calls = []

    user.start(calls.append)

    assert calls == []
    await asyncio.sleep(0)
    assert calls == [user]
    assert user.vu.vars == {"id": "1"}
    assert user.vu.iteration == 1


async def test_a_first_request_that_fails_to_encode_calls_back_from_the_loop_not_from_start():
    recorder = Recorder()
    flow = CompiledFlow("s", (Request(url="/", headers={"X-A": "{value}"}),), recorder)
    user = flow.bind(VU(0, Target.parse("http://127.0.0.1:9"), recorder))
    user.vu.vars["value"] = "a\r\nInjected: 1"  # a header may not hold a line break
    calls = []

    user.start(calls.append)

    assert calls == []
    await asyncio.sleep(0)
    assert calls == [user]
    assert recorder.summary()["requests"]["checks_failed"] == 1


async def test_a_user_cancelled_before_its_deferred_callback_is_never_called_back(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("id\n1\n")
    recorder = Recorder()
    user = CompiledFlow("s", (Feed(rows),), recorder).bind(
        VU(0, Target.parse("http://127.0.0.1:9"), recorder)
    )
    calls = []

    user.start(calls.append)
    user.cancel()
    await asyncio.sleep(0.01)

    assert calls == []


async def test_many_arrivals_of_a_flow_that_never_waits_run_on_one_user(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("id\n1\n")
    executor = ConstantArrivalRate(rate=1000, duration=0.3, pre_allocated_vus=1, max_vus=1)

    result = await run(plan_of(executor, (Feed(rows),)), "http://127.0.0.1:9")

    # Each iteration hands its user back one loop turn later: the dispatcher is never
    # re-entered, and the user is free again for the arrivals that follow.
    requests = result.summary["requests"]
    assert result.summary["generator"]["arrivals"] == 300
    assert requests["total"] == requests["checks_failed"] == 0
    assert requests["dropped"] < 300


async def test_python_flows_count_a_raising_iteration_and_go_on(http_server):
    async def flaky(vu):
        if vu.iteration % 2:
            raise ValueError("odd iteration")
        await vu.get("/", name="even")

    open_model = ConstantArrivalRate(rate=100, duration=0.2, pre_allocated_vus=1, max_vus=1)
    opened = await run(plan_of(open_model, flaky), http_server.url)
    closed = await run(plan_of(ConstantVUs(2, 0.3), flaky), http_server.url)

    for result in (opened, closed):
        requests = result.summary["requests"]
        assert requests["total"] > 5
        assert abs(requests["checks_failed"] - requests["total"]) <= 2
        assert result.summary["errors"]["check: scenario raised ValueError"] > 5
    assert opened.summary["requests"]["total"] + opened.summary["requests"]["checks_failed"] == (
        20 - opened.summary["requests"]["dropped"]
    )


async def test_a_vu_sends_its_headers_the_requests_own_and_its_cookie_jar_as_it_is_now(
    http_server,
):
    vu = VU(0, Target.parse(http_server.url), Recorder())
    vu.headers.update({"Authorization": "Bearer a", "X-Tenant": "t1"})
    vu.cookies["session"] = "s1"

    await vu.get("/", headers={"X-Tenant": "t2", "X-Trace": "1"})
    vu.cookies["session"] = "s2"
    vu.cookies["theme"] = "dark"
    await vu.post("/echo", json={"a": 1})
    del vu.cookies["session"]
    vu.cookies["session"] = "s2"  # the same pairs in another order
    await vu.get("/", headers={"Cookie": "mine=1", "Content-Type": "text/plain"})
    vu.cookies.clear()
    vu.headers.clear()
    await vu.get("/")
    await vu.put("/", body=b"x")
    vu.close()

    fixed = {b"Host", b"User-Agent", b"Connection"}
    heads = [
        [(k.decode(), v.decode()) for k, v in head if k not in fixed] for head in http_server.heads
    ]
    assert heads == [
        [
            ("Authorization", "Bearer a"),
            ("X-Tenant", "t2"),
            ("X-Trace", "1"),
            ("Cookie", "session=s1"),
        ],
        [
            ("Authorization", "Bearer a"),
            ("X-Tenant", "t1"),
            ("Cookie", "session=s2; theme=dark"),
            ("Content-Type", "application/json"),
            ("Content-Length", "7"),
        ],
        [
            ("Authorization", "Bearer a"),
            ("X-Tenant", "t1"),
            ("Cookie", "theme=dark; session=s2"),
            ("Content-Type", "text/plain"),
        ],
        [],
        [("Content-Length", "1")],
    ]
    assert [(method, body) for method, _, body in http_server.seen] == [
        ("GET", b""),
        ("POST", b'{"a":1}'),
        ("GET", b""),
        ("GET", b""),
        ("PUT", b"x"),
    ]
