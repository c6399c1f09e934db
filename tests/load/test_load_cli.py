"""``redline load run``: summary.json and the exit codes CI relies on."""

import json
import subprocess
import sysconfig
from pathlib import Path

REDLINE = str(Path(sysconfig.get_path("scripts")) / "redline")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REDLINE, "load", "run", *args], capture_output=True, text=True, timeout=60
    )


def test_a_bad_plan_exits_2_naming_file_line_and_field(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("scenarios:\n  s:\n    executor: constant-vu\n    vus: 1\n    duration: 1s\n")
    result = run_cli(str(plan), "--target", "http://127.0.0.1:1", "--out", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "plan.yaml:3" in result.stdout
    assert "executor" in result.stdout


def test_failed_thresholds_exit_99_and_summary_json_says_why(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "target: http://127.0.0.1:1\n"
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 0.5s\n"
        "    flow:\n      - get: /\n      - think: 0.05\n"
        'thresholds:\n  - "errors: rate < 0.01"\n'
    )
    result = run_cli(str(plan), "--out", str(tmp_path))
    assert result.returncode == 99, result.stdout + result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["thresholds"]["errors: rate < 0.01"] == {"ok": False, "value": 1.0}
    assert summary["requests"]["failed"] == summary["requests"]["total"] > 0
    assert summary["generator"]["saturated"] is False


async def run_cli_async(*args: str) -> tuple[int, str]:
    """The CLI in a subprocess while this test's event loop keeps serving."""
    import asyncio

    process = await asyncio.create_subprocess_exec(
        REDLINE,
        "load",
        "run",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    return process.returncode, output.decode()


async def test_a_passing_run_writes_summary_report_and_junit(http_server, tmp_path):
    import xml.etree.ElementTree as ET

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 2\n    duration: 1s\n"
        "    flow:\n      - get: {url: /delay/5, name: five}\n"
        'thresholds:\n  - "latency{name:five}: p(95) < 1000"\n'
    )
    out = tmp_path / "out"

    code, output = await run_cli_async(
        str(plan), "--target", http_server.url, "--out", str(out), "--no-progress"
    )

    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["total"] == len(http_server.seen) > 10
    assert summary["thresholds"]["latency{name:five}: p(95) < 1000"]["ok"] is True
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("tests") == "2"
    html = (out / "report.html").read_text()
    assert "five" in html and "latency{name:five}: p(95) &lt; 1000" in html


async def test_abort_on_fail_ends_the_run_early_and_exits_99(http_server, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 30s\n"
        "    flow:\n      - get: /status/500\n      - think: 0.01\n"
        'thresholds:\n  - "errors: rate < 0.05 !"\n'
    )

    code, output = await run_cli_async(
        str(plan), "--target", http_server.url, "--out", str(tmp_path), "--no-progress"
    )

    assert code == 99, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["aborted"]["at_s"] < 5
    assert summary["duration_s"] < 6


async def test_metrics_url_series_appear_in_the_summary_and_carry_thresholds(http_server, tmp_path):
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    Gauge("app_memory_bytes", "memory", registry=registry).set(123456)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 1.5s\n"
            "    flow:\n      - get: /x\n      - think: 0.01\n"
            'thresholds:\n  - "app_memory_bytes: max < 100000"\n'
        )
        metrics = f"http://127.0.0.1:{server.server_port}/metrics"

        code, output = await run_cli_async(
            str(plan),
            "--target",
            http_server.url,
            "--metrics-url",
            metrics,
            "--out",
            str(tmp_path),
            "--no-progress",
        )
    finally:
        server.shutdown()

    assert code == 99, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["server"]["app_memory_bytes"]["last"] == 123456
    assert summary["server_scrape"]["errors"] == 0
    assert summary["thresholds"]["app_memory_bytes: max < 100000"] == {
        "ok": False,
        "value": 123456.0,
    }


async def test_workers_option_runs_processes_and_merges(http_server, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 2\n    duration: 1s\n"
        "    flow:\n      - get: /x\n      - think: 0.005\n"
    )

    code, output = await run_cli_async(
        str(plan),
        "--target",
        http_server.url,
        "--workers",
        "2",
        "--out",
        str(tmp_path),
        "--no-progress",
    )

    assert code == 0, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["generator"]["workers"] == 2
    assert summary["requests"]["total"] == len(http_server.seen) > 20


def test_progress_line_shows_elapsed_load_rate_percentiles_and_errors():
    from rich.console import Console

    from redline.load._cli import _LiveProgress
    from redline.load._metrics import Recorder
    from redline.load._runner import Progress

    recorder = Recorder(start_ns=0)
    for i in range(100):  # second 0: 100 requests of 10 ms, 5 of them failed
        recorder.record(
            "a", None, i * 1_000_000, i * 1_000_000 + 10_000_000, 200, "timeout" if i < 5 else None
        )
    recorder.record("a", None, 1_000_000_000, 1_001_000_000, 200, None)  # opens second 1
    console = Console(record=True, width=200, force_terminal=False)
    progress = _LiveProgress(console, enabled=True)

    with progress:
        progress.update(Progress(1.0, 30.0, recorder, 7, None))
        progress.update(Progress(2.0, 30.0, recorder, 7, None))  # within 10 s: no new line

    text = console.export_text()
    assert text.count("\n") == 1, text
    assert "1.0 s  (29 s left)  7 VUs  100 req/s" in text
    assert "p50 10.01" in text and "errors 5" in text and "requests 101" in text
