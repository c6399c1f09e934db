"""Process metrics: standard names read from the OS at collect time, GC counts and pause
times, and merge rules that keep per-process values per process."""

import gc
import os
import resource
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from redline import monitor
from redline.monitor._process import read_rss

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture
def registry():
    registry = monitor.Registry()
    installed = monitor.install_process_metrics(registry)
    yield registry
    installed.uninstall()


def value(registry, name, **labels):
    family = next(f for f in registry.collect() if f.name == name)
    return family.samples[tuple(str(v) for v in labels.values())]


def test_exposition_has_the_standard_names_and_types_prometheus_parses(registry):
    text = monitor.generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    gauges = (
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_resident_memory_max_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "python_info",
    )
    counters = (
        "process_cpu_seconds",
        "python_gc_collections",
        "python_gc_objects_collected",
        "python_gc_objects_uncollectable",
    )
    for name in gauges:
        assert families[name].type == "gauge", name
    for name in counters:
        assert families[name].type == "counter", name
    assert families["python_gc_collection_seconds"].type == "histogram"
    generations = {s.labels["generation"] for s in families["python_gc_collections"].samples}
    assert generations == {"0", "1", "2"}


def test_memory_matches_proc_and_the_peak_is_at_least_the_current(registry):
    rss = value(registry, "process_resident_memory_bytes")
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    vm_rss = int(fields["VmRSS"].split()[0]) * 1024

    assert rss == pytest.approx(vm_rss, rel=0.05)
    assert value(registry, "process_virtual_memory_bytes") > rss
    assert value(registry, "process_resident_memory_max_bytes") >= rss * 0.95


def test_memory_is_read_at_each_collect(registry):
    before = value(registry, "process_resident_memory_bytes")
    block = bytearray(64 << 20)
    during = value(registry, "process_resident_memory_bytes")
    del block

    assert during - before > 60 << 20


def test_open_fds_counts_a_newly_opened_file_and_max_fds_is_the_soft_limit(registry, tmp_path):
    before = value(registry, "process_open_fds")
    with open(tmp_path / "x", "w"):
        during = value(registry, "process_open_fds")

    assert during == before + 1
    assert value(registry, "process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_start_time_is_when_the_process_started():
    code = (
        "from redline import monitor; r = monitor.Registry(); monitor.install_process_metrics(r);"
        "print(next(f for f in r.collect() if f.name == 'process_start_time_seconds')"
        ".samples[()])"
    )
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after = time.time()

    # /proc's boot time is whole seconds and the start is in clock ticks.
    assert before - 1.1 <= float(out.stdout) <= after + 1.1


def test_cpu_seconds_grow_with_work(registry):
    before = value(registry, "process_cpu_seconds_total")
    cpu_before = time.process_time()
    while time.process_time() - cpu_before < 0.3:
        pass
    spent = value(registry, "process_cpu_seconds_total") - before
    cpu_spent = time.process_time() - cpu_before

    # os.times() counts in clock ticks (10 ms); process_time() is finer.
    assert spent == pytest.approx(cpu_spent, abs=0.05)


def test_gc_collections_and_their_durations_are_counted_by_generation(registry):
    gc.disable()  # only the collections below, and the cycles wait for them
    try:
        collections = value(registry, "python_gc_collections_total", generation=2)
        collected = value(registry, "python_gc_objects_collected_total", generation=2)
        for _ in range(1000):
            cycle = []
            cycle.append(cycle)
        del cycle
        for _ in range(3):
            gc.collect(2)
        collections_after = value(registry, "python_gc_collections_total", generation=2)
        collected_after = value(registry, "python_gc_objects_collected_total", generation=2)
        pauses = value(registry, "python_gc_collection_seconds", generation=2)
    finally:
        gc.enable()

    assert collections_after == collections + 3
    assert collected_after >= collected + 1000
    assert pauses.count >= 3
    assert 0 < pauses.sum < 1.0
    assert pauses.quantile(0.5) > 0


def test_python_info_describes_the_interpreter(registry):
    family = next(f for f in registry.collect() if f.name == "python_info")
    ((labels, one),) = family.samples.items()

    assert dict(zip(family.labelnames, labels, strict=True)) == {
        "implementation": sys.implementation.name,
        "major": str(sys.version_info.major),
        "minor": str(sys.version_info.minor),
        "patchlevel": str(sys.version_info.micro),
        "version": sys.version.split()[0],
    }
    assert one == 1.0


def test_gauges_merge_per_worker_and_python_info_stays_one(registry):
    families = registry.collect()
    merged = {f.name: f for f in monitor.merge_families([(101, families), (102, families)])}

    rss = merged["process_resident_memory_bytes"]
    assert rss.labelnames == ("pid",)
    assert set(rss.samples) == {("101",), ("102",)}
    assert set(merged["process_start_time_seconds"].samples) == {("101",), ("102",)}
    assert list(merged["python_info"].samples.values()) == [1.0]
    cpu = {f.name: f for f in families}["process_cpu_seconds_total"].samples[()]
    assert merged["process_cpu_seconds_total"].samples[()] == pytest.approx(2 * cpu)


def test_reset_zeroes_the_counters_as_in_a_forked_worker(registry):
    gc.collect(2)
    registry.reset()

    assert value(registry, "python_gc_collections_total", generation=2) == 0
    assert value(registry, "process_cpu_seconds_total") < 0.05
    gc.collect(2)
    assert value(registry, "python_gc_collections_total", generation=2) == 1
    assert value(registry, "python_gc_collection_seconds", generation=2).count == 1


def test_a_forked_worker_adds_only_its_own_collections(registry, tmp_path):
    for _ in range(5):
        gc.collect(2)
    shared = monitor.SnapshotDirectory(tmp_path, registry=registry, interval=10).start()
    try:
        parent = value(registry, "python_gc_collections_total", generation=2)
        pid = os.fork()
        if pid == 0:
            try:
                gc.collect(2)
                shared.write()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        view = {family.name: family for family in shared.collect()}
    finally:
        shared.close()

    assert view["python_gc_collections_total"].samples[("2",)] == parent + 1
    # The dead child's gauges are dropped; the parent's RSS is its own series.
    assert set(view["process_resident_memory_bytes"].samples) == {(str(os.getpid()),)}


def test_installing_twice_returns_the_installation_and_uninstall_removes_everything():
    registry = monitor.Registry()
    callbacks = len(gc.callbacks)

    installed = monitor.install_process_metrics(registry)
    assert monitor.install_process_metrics(registry) is installed
    assert len(gc.callbacks) == callbacks + 1
    assert {f.name for f in installed.collect()} == {f.name for f in registry.collect()}

    installed.uninstall()
    assert len(registry) == 0
    assert len(gc.callbacks) == callbacks
    assert monitor.install_process_metrics(registry) is not installed
    monitor.install_process_metrics(registry).uninstall()


def test_a_name_taken_in_the_registry_fails_and_leaves_nothing_behind():
    registry = monitor.Registry()
    monitor.Gauge("process_open_fds", "Mine.", registry=registry)
    callbacks = len(gc.callbacks)

    with pytest.raises(monitor.MetricError, match="process_open_fds"):
        monitor.install_process_metrics(registry)
    assert [m.name for m in registry] == ["process_open_fds"]
    assert len(gc.callbacks) == callbacks


def test_process_counters_cannot_be_incremented(registry):
    cpu = registry.get("process_cpu_seconds_total")

    with pytest.raises(monitor.MetricError, match="read from the process"):
        cpu.inc()


def test_read_rss_is_cheap():
    start = time.perf_counter()
    for _ in range(1000):
        read_rss()
    assert (time.perf_counter() - start) / 1000 < 200e-6


def test_a_forked_child_reports_its_own_start_time(tmp_path):
    import os
    import sys
    import time

    from redline.monitor import Registry, install_process_metrics

    if not sys.platform.startswith("linux"):
        pytest.skip("start time comes from /proc")
    registry = Registry()
    install_process_metrics(registry)
    start = registry.get("process_start_time_seconds")

    def value() -> float:
        (family,) = [f for f in registry.collect() if f.name == "process_start_time_seconds"]
        return next(iter(family.samples.values()))

    parent = value()
    time.sleep(1.1)  # /proc's start time counts clock ticks: the child's must differ
    out = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # the child
        out.write_text(repr(value()))
        os._exit(0)
    os.waitpid(pid, 0)

    assert start is not None
    assert float(out.read_text()) > parent + 1.0
