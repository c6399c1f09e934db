"""Several worker processes, one merged view: exact merges, dead workers folded once."""

import fcntl
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import monitor_worker
import msgpack
import pytest
import zstandard
from prometheus_client.parser import text_string_to_metric_families

from redline import monitor
from redline.monitor._multiprocess import ARCHIVE


def parse(body: bytes) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples[(name, frozenset((k, str(v)) for k, v in labels.items()))]


def snapshot_files(directory):
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def run_dead_worker(directory, code: str) -> int:
    """Runs ``code`` in a new Python process sharing ``directory``, then returns its pid
    (dead by then). ``code`` sees ``monitor`` and ``shared`` (started)."""
    script = (
        textwrap.dedent(
            f"""
        import os
        from redline import monitor
        shared = monitor.SnapshotDirectory({str(directory)!r}, interval=60, expire_after=600)
        shared.start()
        """
        )
        + textwrap.dedent(code)
        + "\nprint(os.getpid())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return int(done.stdout.split()[-1])


def test_four_worker_processes_merge_exactly_and_a_dead_one_is_folded_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for index in range(4):
        ours, theirs = context.Pipe()
        process = context.Process(
            target=monitor_worker.run, args=(str(tmp_path), index, theirs), daemon=True
        )
        process.start()
        pipes.append(ours)
        processes.append(process)
    try:
        pids = []
        for pipe in pipes:
            assert pipe.poll(120), "a worker did not start"
            pids.append(pipe.recv()[1])
        # The 'last' gauge changes in the order 0, 1, 3, 2: worker 2's value is the latest.
        for index in (0, 1, 3, 2):
            pipes[index].send("set")
            assert pipes[index].recv() == "done"
        # Other workers' snapshots are up to one interval (0.2 s here) old.
        time.sleep(0.5)
        # Worker 0 records one more job and exits at once: only its at-exit write has it.
        pipes[0].send("exit")
        processes[0].join(30)
        assert processes[0].exitcode == 0
        assert any(f"worker-{pids[0]}-" in name for name in snapshot_files(tmp_path))

        pipes[1].send("render")
        first = parse(pipes[1].recv())

        # Counters: every worker's jobs, the dead one's included, each once.
        for kind in ("email", "report"):
            expected = sum(monitor_worker.jobs(i)[kind] for i in range(4))
            assert value(first, "jobs_total", kind=kind) == expected
        assert value(first, "jobs_total", kind="shutdown") == 1

        # Histograms: counts, buckets exact; quantiles within 1 % of the exact ones.
        everything = [monitor_worker.samples(i) for i in range(4)]
        for r, route in enumerate(monitor_worker.ROUTES):
            values = sorted(v for batch in everything for v in batch[r::2])
            n = len(values)
            assert value(first, "request_duration_seconds_count", route=route) == n
            assert value(first, "request_duration_seconds_sum", route=route) == pytest.approx(
                math.fsum(values), rel=1e-12
            )
            for bound in monitor.DEFAULT_BUCKETS:
                le = "+Inf" if bound == math.inf else repr(bound)
                got = value(first, "request_duration_seconds_bucket", route=route, le=le)
                assert got == sum(1 for v in values if v <= bound), le
            for q in (0.5, 0.9, 0.99):
                exact = values[math.ceil(q * n) - 1]
                merged = value(first, "request_duration_seconds_quantiles", route=route, quantile=q)
                assert abs(merged - exact) / exact < 0.01, (q, merged, exact)

        # Gauges, per rule, from the live workers 1..3 only (the dead one's are dropped).
        assert value(first, "inflight") == 2 + 3 + 4
        assert value(first, "loop_lag_seconds") == pytest.approx(0.4)
        assert value(first, "free_slots") == 10 - 3
        assert value(first, "config_version") == 2
        by_pid = {
            dict(labels)["pid"]: v for (name, labels), v in first.items() if name == "worker_index"
        }
        assert by_pid == {str(pids[i]): i for i in (1, 2, 3)}

        # The dead worker's file is gone; the directory holds the live ones and the archive.
        names = snapshot_files(tmp_path)
        assert ARCHIVE in names
        assert not any(f"worker-{pids[0]}-" in name for name in names)
        assert len(names) == 3 + 1

        # Another worker's view, later: the folded counts are there once, not twice.
        time.sleep(0.5)
        pipes[2].send("render")
        second = parse(pipes[2].recv())
        for key in ("email", "report", "shutdown"):
            assert value(second, "jobs_total", kind=key) == value(first, "jobs_total", kind=key)
        for route in monitor_worker.ROUTES:
            count = ("request_duration_seconds_count", frozenset({("route", route)}))
            assert second[count] == first[count]
    finally:
        for pipe, process in zip(pipes, processes, strict=True):
            if process.is_alive():
                pipe.send("exit")
                process.join(30)


def test_dead_workers_counts_are_folded_once_and_the_directory_stays_small(tmp_path):
    registry = monitor.Registry()
    counter = monitor.Counter("jobs", "Jobs.", registry=registry)
    hist = monitor.Histogram("job_seconds", "Jobs.", registry=registry)
    counter.inc(2)
    hist.observe(0.5)
    shared = monitor.SnapshotDirectory(tmp_path, registry=registry, expire_after=600)

    for run in range(1, 4):
        run_dead_worker(
            tmp_path,
            """
            jobs = monitor.Counter("jobs", "Jobs.")
            hist = monitor.Histogram("job_seconds", "Jobs.")
            jobs.inc(5)
            for _ in range(10):
                hist.observe(0.25)
            """,
        )
        view = {family.name: family for family in shared.collect()}
        assert view["jobs_total"].samples[()] == 2 + 5 * run
        assert view["job_seconds"].samples[()].count == 1 + 10 * run
        assert view["job_seconds"].samples[()].bucket_counts[8] == 10 * run  # le=0.25
        # The archive alone, however many workers died: reading wrote no file of its own.
        assert snapshot_files(tmp_path) == [ARCHIVE]

    again = {family.name: family for family in shared.collect()}
    assert again["jobs_total"].samples[()] == 2 + 5 * 3


def test_a_dead_workers_gauges_are_dropped(tmp_path):
    registry = monitor.Registry()
    monitor.Gauge("inflight", "In flight.", registry=registry).set(1)
    shared = monitor.SnapshotDirectory(tmp_path, registry=registry)

    run_dead_worker(tmp_path, 'monitor.Gauge("inflight", "In flight.").set(5)')

    view = {family.name: family for family in shared.collect()}
    assert view["inflight"].samples[()] == 1


def test_an_interrupted_fold_does_not_count_the_worker_twice(tmp_path):
    registry = monitor.Registry()
    shared = monitor.SnapshotDirectory(tmp_path, registry=registry)
    run_dead_worker(tmp_path, 'monitor.Counter("jobs", "Jobs.").inc(3)')
    (dead,) = tmp_path.glob("worker-*.msgpack")
    kept = tmp_path / "kept"
    shutil.copy(dead, kept)

    first = {family.name: family for family in shared.collect()}
    # As if the folding process had died after writing the archive, before deleting.
    shutil.copy(kept, dead)
    kept.unlink()
    second = {family.name: family for family in shared.collect()}

    assert first["jobs_total"].samples[()] == second["jobs_total"].samples[()] == 3
    assert not dead.exists()


def test_a_stalled_worker_folded_while_alive_counts_later_samples_once(tmp_path):
    stalled_registry, reader_registry = monitor.Registry(), monitor.Registry()
    jobs = monitor.Counter("jobs", "Jobs.", registry=stalled_registry)
    hist = monitor.Histogram("job_seconds", "Jobs.", registry=stalled_registry)
    stalled = monitor.SnapshotDirectory(
        tmp_path, registry=stalled_registry, interval=0.05, expire_after=0.2
    )
    reader = monitor.SnapshotDirectory(
        tmp_path, registry=reader_registry, interval=0.05, expire_after=0.2
    )
    jobs.inc(3)
    hist.observe(0.1)
    stalled.write()
    old_file = stalled.file
    time.sleep(0.3)

    folded = {family.name: family for family in reader.collect()}
    assert not old_file.exists()
    assert folded["jobs_total"].samples[()] == 3

    jobs.inc(2)
    hist.observe(0.2)
    stalled.write()
    resumed = {family.name: family for family in reader.collect()}

    assert stalled.file != old_file
    assert resumed["jobs_total"].samples[()] == 5
    value = resumed["job_seconds"].samples[()]
    assert (value.count, value.sum) == (2, pytest.approx(0.3))
    assert value.quantile(1.0) == pytest.approx(0.2, rel=0.01)


def test_a_snapshot_from_a_reused_pid_counts_as_dead(tmp_path):
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("process start times come from /proc")
    impostor_registry = monitor.Registry()
    monitor.Counter("jobs", "Jobs.", registry=impostor_registry).inc(4)
    impostor = monitor.SnapshotDirectory(tmp_path, registry=impostor_registry)
    # Our own pid, but a process start time that is not ours: an earlier owner of the pid.
    impostor._process_start = 1
    impostor.write()
    reader = monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry())

    view = {family.name: family for family in reader.collect()}

    assert view["jobs_total"].samples[()] == 4
    assert not impostor.file.exists()
    assert (tmp_path / ARCHIVE).exists()


def test_the_periodic_writer_folds_dead_workers_without_a_scrape(tmp_path):
    registry = monitor.Registry()
    with monitor.SnapshotDirectory(tmp_path, registry=registry, interval=0.05) as shared:
        run_dead_worker(tmp_path, 'monitor.Counter("jobs", "Jobs.").inc(1)')
        deadline = time.monotonic() + 10
        while ARCHIVE not in snapshot_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert snapshot_files(tmp_path) == sorted([ARCHIVE, shared.file.name])


def test_a_forked_worker_starts_from_zero(tmp_path):
    registry = monitor.Registry()
    jobs = monitor.Counter("jobs", "Jobs.", registry=registry)
    jobs.inc(5)
    shared = monitor.SnapshotDirectory(tmp_path, registry=registry, interval=10).start()
    try:
        pid = os.fork()
        if pid == 0:
            try:
                jobs.inc(1)
                shared.write()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        view = {family.name: family for family in shared.collect()}
    finally:
        shared.close()
    assert view["jobs_total"].samples[()] == 5 + 1


def test_an_unreadable_snapshot_is_skipped_and_deleted_once_stale(tmp_path, caplog):
    shared = monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry(), expire_after=60)
    junk = tmp_path / "worker-1-junk.msgpack"
    junk.write_bytes(b"not msgpack at all")

    shared.collect()
    assert junk.exists()
    assert "unreadable" in caplog.text

    old = time.time() - 120
    os.utime(junk, (old, old))
    shared.collect()
    assert not junk.exists()


def test_the_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(monitor.ENV_DIRECTORY, raising=False)
    with pytest.raises(monitor.SnapshotError, match="REDLINE_MONITOR_DIR"):
        monitor.SnapshotDirectory(registry=monitor.Registry())

    monkeypatch.setenv(monitor.ENV_DIRECTORY, str(tmp_path / "shared"))
    shared = monitor.SnapshotDirectory(registry=monitor.Registry())
    shared.write()
    assert shared.file.parent == tmp_path / "shared"
    assert shared.file.exists()


def test_expiry_must_leave_room_for_several_writes(tmp_path):
    with pytest.raises(monitor.SnapshotError, match="expire_after"):
        monitor.SnapshotDirectory(tmp_path, interval=1.0, expire_after=1.5)


def test_the_snapshot_file_is_a_msgpack_header_and_a_zstd_compressed_msgpack_body(tmp_path):
    registry = monitor.Registry()
    monitor.Counter("jobs", "Jobs.", registry=registry).inc()
    shared = monitor.SnapshotDirectory(tmp_path, registry=registry)
    shared.write()

    data = shared.file.read_bytes()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    header = unpacker.unpack()
    body = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(data[unpacker.tell() :]))

    assert header["format"] == 2
    assert header["pid"] == os.getpid()
    assert time.time() - header["written"] < 10
    assert body[0][0] == "jobs_total"


def test_temporary_files_of_writers_that_died_are_removed_once_stale(tmp_path):
    shared = monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry(), expire_after=60)
    stale, fresh = tmp_path / ".tmp-1-dead-worker.msgpack", tmp_path / ".tmp-2-busy.msgpack"
    stale.write_bytes(b"half written")
    fresh.write_bytes(b"being written")
    old = time.time() - 120
    os.utime(stale, (old, old))

    assert shared.fold() == 0

    assert not stale.exists()
    assert fresh.exists()


def jobs_counted(directory) -> float:
    reader = monitor.SnapshotDirectory(
        directory, registry=monitor.Registry(), interval=60, expire_after=600
    )
    view = {family.name: family for family in reader.collect()}
    return view["jobs_total"].samples[()] if "jobs_total" in view else 0


def start_script(tmp_path, code: str) -> subprocess.Popen:
    """Starts ``code`` in a new Python process; returns once it printed ``ready``."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def get_over_unix_socket(path, target: str = "/") -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        request = f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        client.sendall(request.encode())
        response = b""
        while chunk := client.recv(65536):
            response += chunk
    return response


def test_a_uvicorn_worker_stopped_by_sigterm_keeps_every_count(tmp_path):
    shared_dir, app_dir, sock = tmp_path / "metrics", tmp_path / "app", tmp_path / "app.sock"
    app_dir.mkdir()
    (app_dir / "counting_app.py").write_text(
        textwrap.dedent(
            f"""
            from redline import monitor

            jobs = monitor.Counter("jobs", "Jobs.")
            # 60 s apart: only the write at the signal can carry the requests below.
            shared = monitor.SnapshotDirectory({str(shared_dir)!r}, interval=60,
                                               expire_after=600).start()


            async def app(scope, receive, send):
                jobs.inc()
                await send({{"type": "http.response.start", "status": 200, "headers": []}})
                await send({{"type": "http.response.body", "body": b"ok"}})
            """
        )
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "counting_app:app", "--app-dir", str(app_dir),
         "--uds", str(sock), "--lifespan", "off", "--log-level", "warning"]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                first = get_over_unix_socket(sock)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
        assert first.startswith(b"HTTP/1.1 200")
        for _ in range(49):
            assert get_over_unix_socket(sock).startswith(b"HTTP/1.1 200")

        server.send_signal(signal.SIGTERM)
        # uvicorn re-raises SIGTERM under the default handler after its graceful shutdown.
        assert server.wait(30) == -signal.SIGTERM
    finally:
        server.kill()
        server.wait()

    assert jobs_counted(shared_dir) == 50


def test_a_sigterm_handler_installed_before_start_still_runs(tmp_path):
    ran = tmp_path / "handler-ran"
    process = start_script(
        tmp_path,
        f"""
        import os, signal, time
        from redline import monitor

        def on_sigterm(signum, frame):
            open({str(ran)!r}, "w").close()
            os._exit(3)  # no atexit: only the write at the signal keeps the jobs

        signal.signal(signal.SIGTERM, on_sigterm)
        monitor.SnapshotDirectory({str(tmp_path)!r}, interval=60, expire_after=600).start()
        monitor.Counter("jobs", "Jobs.").inc(7)
        print("ready", flush=True)
        time.sleep(60)
        """,
    )
    process.send_signal(signal.SIGTERM)

    assert process.wait(30) == 3
    assert ran.exists()
    assert jobs_counted(tmp_path) == 7


def test_a_sigterm_during_a_write_does_not_hang_the_process(tmp_path):
    process = start_script(
        tmp_path,
        f"""
        import time
        from redline import monitor

        shared = monitor.SnapshotDirectory({str(tmp_path)!r}, interval=60,
                                           expire_after=600).start()
        # As if the signal interrupted the main thread in the middle of a write.
        shared._write_lock.acquire()
        print("ready", flush=True)
        time.sleep(60)
        """,
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)

    assert process.wait(30) == -signal.SIGTERM
    assert time.monotonic() - started < 10


def test_close_puts_the_previous_sigterm_handler_back(tmp_path):
    def previous(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, previous)
    try:
        shared = monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry()).start()
        assert signal.getsignal(signal.SIGTERM) == shared._on_sigterm
        shared.close()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)


# -- graceful shutdown: what finishes after SIGTERM still counts ------------------------------


def counted(directory, name: str) -> float:
    """The merged total of every series of counter ``name`` in ``directory``."""
    reader = monitor.SnapshotDirectory(
        directory, registry=monitor.Registry(), interval=60, expire_after=600
    )
    view = {family.name: family for family in reader.collect()}
    return sum(view[name].samples.values()) if name in view else 0


def serve_app_file(tmp_path, source: str, *, lifespan: str) -> tuple[subprocess.Popen, object]:
    """Runs ``source`` (defining ``app``) under ``uvicorn --workers 2`` on a Unix socket;
    returns once it answers. Workers import the app after uvicorn has put its SIGTERM
    handler in, so the SnapshotDirectory's handler runs first: at the signal, before the
    graceful shutdown."""
    app_dir, sock = tmp_path / "app", tmp_path / "app.sock"
    app_dir.mkdir()
    (app_dir / "shutdown_app.py").write_text(textwrap.dedent(source))
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "shutdown_app:app", "--app-dir", str(app_dir),
         "--uds", str(sock), "--lifespan", lifespan, "--workers", "2",
         "--log-level", "warning"]
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            assert get_over_unix_socket(sock).startswith(b"HTTP/1.1 ")
            return server, sock
        except (FileNotFoundError, ConnectionRefusedError):
            assert server.poll() is None, "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)


def test_a_request_in_flight_at_sigterm_is_in_the_last_snapshot(tmp_path):
    shared_dir, marker, go = tmp_path / "metrics", tmp_path / "in-flight", tmp_path / "go"
    server, sock = serve_app_file(
        tmp_path,
        f"""
        import asyncio, pathlib
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from redline import monitor

        # 60 s apart: only writes at shutdown can carry the slow request.
        shared = monitor.SnapshotDirectory({str(shared_dir)!r}, interval=60,
                                           expire_after=600).start()

        async def slow(request):
            pathlib.Path({str(marker)!r}).touch()
            while not pathlib.Path({str(go)!r}).exists():
                await asyncio.sleep(0.02)
            return PlainTextResponse("done")

        app = monitor.MetricsMiddleware(Starlette(routes=[Route("/slow", slow)]))
        """,
        lifespan="off",
    )
    answers = []
    try:
        client = threading.Thread(
            target=lambda: answers.append(get_over_unix_socket(sock, "/slow")), daemon=True
        )
        client.start()
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)  # while /slow is in flight
        time.sleep(0.5)  # the workers' SIGTERM handlers have run
        go.touch()
        client.join(30)
        assert server.wait(30) == 0
    finally:
        server.kill()
        server.wait()

    assert answers and answers[0].startswith(b"HTTP/1.1 200")
    reader = monitor.SnapshotDirectory(shared_dir, registry=monitor.Registry())
    view = {family.name: family for family in reader.collect()}
    assert view["http_requests_total"].samples[("/slow", "GET", "200")] == 1


def test_what_the_app_records_at_lifespan_shutdown_is_in_the_last_snapshot(tmp_path):
    shared_dir = tmp_path / "metrics"
    server, _ = serve_app_file(
        tmp_path,
        f"""
        import contextlib
        from starlette.applications import Starlette
        from redline import monitor

        shared = monitor.SnapshotDirectory({str(shared_dir)!r}, interval=60,
                                           expire_after=600).start()
        closed = monitor.Counter("pools_closed", "Pools closed at shutdown.")

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            closed.inc()  # after the write at the signal

        app = monitor.MetricsMiddleware(Starlette(lifespan=lifespan))
        """,
        lifespan="on",
    )
    try:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        server.kill()
        server.wait()

    assert counted(shared_dir, "pools_closed_total") == 2  # one per worker


# -- reading: no writes, no exclusive lock -------------------------------------------------------


def test_collect_writes_nothing_and_counts_this_process_as_it_is_now(tmp_path):
    registry = monitor.Registry()
    jobs = monitor.Counter("jobs", "Jobs.", registry=registry)
    shared = monitor.SnapshotDirectory(
        tmp_path, registry=registry, interval=60, expire_after=600
    ).start()
    try:
        written = shared.file.read_bytes()
        jobs.inc(4)  # after the write at start

        view = {family.name: family for family in shared.collect()}

        assert view["jobs_total"].samples[()] == 4
        assert shared.file.read_bytes() == written
    finally:
        shared.close()


def test_a_reader_does_not_wait_for_writers_holding_the_shared_lock(tmp_path):
    monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry()).write()
    # A writer in the middle of its write, from another open file description.
    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        reader = monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry())
        done = threading.Event()
        thread = threading.Thread(target=lambda: (reader.collect(), done.set()), daemon=True)
        thread.start()

        assert done.wait(10), "collect() waited for the writer's shared lock"
    finally:
        os.close(fd)
        thread.join(10)


def test_a_histogram_series_snapshot_is_compact_in_memory_and_on_disk(tmp_path):
    registry = monitor.Registry()
    hist = monitor.Histogram("latency_seconds", "Latency.", ("route",), registry=registry)
    rng = random.Random(5)
    for route in range(20):
        child = hist.labels(route=f"/r{route}")
        for _ in range(5000):  # five decades: 20 us to 2 s
            child.observe(rng.lognormvariate(-4.6, 1.5))
    value = hist.labels(route="/r0").snapshot()
    shared = monitor.SnapshotDirectory(tmp_path, registry=registry)
    shared.write()

    dense = monitor.Histogram("d_seconds", "D.", registry=None)
    dense.observe(1.0)
    dense_bytes = dense.snapshot().hdr.counts_len * 8  # what a dense copy holds: 26 KB
    held = value._span.counts.itemsize * len(value._span.counts)
    assert held < dense_bytes / 3
    assert value._hdr is None  # no dense copy kept
    assert shared.file.stat().st_size / 20 < 2_000  # bytes per series in the file
    reader = monitor.SnapshotDirectory(tmp_path, registry=monitor.Registry())
    restored = {family.name: family for family in reader.collect()}
    assert restored["latency_seconds"].samples[("/r0",)].quantiles() == value.quantiles()
