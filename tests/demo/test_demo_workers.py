"""The demo's app under several uvicorn workers: every worker serves, the merged ``/metrics``
counts them all, and stopping the app stops every worker and leaves no snapshot files."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from redline.demo._runner import AppProcess, parse_metrics
from redline.demo._stack import Services

SETTINGS = {"dashboard_source": "live", "cache": "l1+l2", "http_cache": False}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_two_workers_serve_and_one_metrics_page_counts_both(demo_url, redis_url, tmp_path):
    services = Services(database_url=demo_url, redis_url=redis_url)
    app = AppProcess(services, SETTINGS, tmp_path / "app.log", workers=2)
    with app:
        metrics_dir = app.metrics_dir
        assert metrics_dir is not None
        pids = set()
        for _ in range(200):  # a new connection each: the kernel spreads them over both
            pids.add(json.loads(_get(f"{app.url}/health"))["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2
        assert app.process is not None and app.process.pid not in pids  # the supervisor's
        for call in range(1, 41):
            _get(f"{app.url}/capital-calls/{call}")
        samples = parse_metrics(app.metrics())
        served = sum(
            value for (name, labels), value in samples.items() if name == "demo_read_requests_total"
        )
        # Forty reads, whichever worker answered each (health checks are not reads).
        assert served == 40
        assert sorted(metrics_dir.iterdir())  # the workers' snapshot files
    assert app.process is None
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in _state(pid)
    assert not metrics_dir.exists()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_the_cpu_of_a_process_tree_includes_its_children():
    import subprocess
    import sys

    from redline.demo._runner import process_tree_cpu

    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])",
        ]
    )
    try:
        seen = 0.0
        while parent.poll() is None:
            seen = max(seen, process_tree_cpu(parent.pid) or 0.0)
        # The child burnt 0.5 s of CPU; the parent only waited for it.
        assert seen >= 0.3
    finally:
        parent.wait()
    assert process_tree_cpu(parent.pid) is None  # gone
