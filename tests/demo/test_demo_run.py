"""``redline demo`` end to end, as CI runs it: a tiny scale and short steps, throwaway servers it
starts itself, the table, ``summary.json``, ``report.html``, the exit code that follows the
targets, and nothing left running afterwards, also after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from redline.demo._runner import STEP_NAMES
from redline.demo._targets import TARGETS

TINY = ["--scale", "0.02", "--duration", "2", "--warmup", "0.5", "--vus", "7", "--users", "30"]


def redline() -> str:
    return str(Path(sys.executable).with_name("redline"))


def ports_started(summary: dict) -> list[int]:
    return [
        int(p) for p in re.findall(r"on port (\d+)", " ".join(summary["environment"]["started"]))
    ]


def is_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env


def test_demo_runs_every_step_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [redline(), "demo", *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=demo_env(),
    )
    summary = orjson.loads((out / "summary.json").read_bytes())
    failed = [t for t in summary["targets"] if t["status"] == "fail"]
    # The exit code follows the targets: 1 when one fails, 0 when none does.
    assert done.returncode == (1 if failed else 0), done.stdout[-3000:] + done.stderr[-3000:]
    assert [step["name"] for step in summary["steps"]] == list(STEP_NAMES)
    for step in summary["steps"]:
        figures = step["figures"]
        assert figures["requests"] > 0, step["name"]
        assert figures["error_rate"] == 0, (step["name"], figures["errors"])
        assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
        assert figures["index_hit_ratio"] is not None
        assert figures["app_cpu_ms_per_request"] > 0
        assert step["endpoints"], step["name"]
    by_name = {step["name"]: step["figures"] for step in summary["steps"]}
    assert by_name["baseline"]["cache_hit_ratio"] is None  # no cache, no lookups
    assert by_name["baseline"]["reads_from_cache"] is None
    for name in ("l1", "l2", "http"):
        assert 0 < by_name[name]["cache_hit_ratio"] <= 1
        assert 0 < by_name[name]["reads_from_cache"] <= 1
    assert by_name["users"]["vus"] == 30
    assert len(summary["targets"]) == len(TARGETS)
    assert summary["verdict"] == ("fail" if failed else "pass")
    # The table and the targets in the terminal.
    assert "What each layer buys" in done.stdout and "Targets" in done.stdout
    html = (out / "report.html").read_text()
    assert "redline demo" in html and "Plotly.newPlot" in html
    for name in ("baseline", "http", "users"):
        assert (out / f"app-{name}.log").exists()
    # Everything it started is stopped.
    ports = ports_started(summary)
    assert len(ports) == 2
    assert not any(is_listening(port) for port in ports)


def test_demo_only_runs_the_steps_named_and_skips_targets_it_cannot_judge(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    out = tmp_path / "out"
    env = {**demo_env(), "DATABASE_URL": pg_url, "REDIS_URL": redis_url}
    done = subprocess.run(
        [redline(), "demo", *TINY, "--only", "l1", "--only", "http", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert [step["name"] for step in summary["steps"]] == ["l1", "http"]
    assert summary["environment"]["started"] == []  # it used the servers it was given
    statuses = {t["target"]: t["status"] for t in summary["targets"]}
    assert statuses["Read-mix throughput vs baseline"] == "skipped"
    assert statuses["Concurrent users held"] == "skipped"
    failed = [t for t in summary["targets"] if t["status"] == "fail"]
    assert done.returncode == (1 if failed else 0), done.stdout[-3000:]


def test_demo_rejects_an_unknown_step(tmp_path: Path) -> None:
    done = subprocess.run(
        [redline(), "demo", "--only", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=demo_env(),
    )
    assert done.returncode == 2
    assert "--only nope: unknown step" in done.stdout
    assert "baseline" in done.stdout


def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        [redline(), "demo", *TINY, "--duration", "30", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_env(),
    )
    lines: list[str] = []
    deadline = time.monotonic() + 300
    assert process.stdout is not None
    # Wait until the first load step runs: its app process and both servers are up.
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Baseline" in line:
            break
    text = "".join(lines)
    ports = [int(p) for p in re.findall(r"on port (\d+)", text)]
    assert len(ports) == 2, text
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 130, text + rest
    assert "interrupted" in rest
    assert not any(is_listening(port) for port in ports)
    logs = list(out.glob("app-*.log"))
    assert logs  # the app had been started, and was stopped with the rest
    if sys.platform.startswith("linux"):
        leftovers = subprocess.run(
            ["pgrep", "-f", f"redline.demo._serve.*{out}"], capture_output=True, text=True
        )
        assert leftovers.stdout == ""


def test_keep_leaves_the_full_configuration_up_until_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        [redline(), "demo", *TINY, "--only", "http", "--keep", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_env(),
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(lines)
    app = re.search(r"app:\s+(http://127\.0\.0\.1:\d+)", text)
    assert app is not None, text
    with urllib.request.urlopen(app.group(1) + "/health", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(app.group(1) + "/_redline/", timeout=10) as response:
        assert "text/html" in response.headers["content-type"]
    ports = [int(p) for p in re.findall(r"on port (\d+)", text)]
    app_port = int(app.group(1).rsplit(":", 1)[1])
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    summary = orjson.loads((out / "summary.json").read_bytes())
    failed = [t for t in summary["targets"] if t["status"] == "fail"]
    # Ctrl-C is how --keep ends: the status is still the targets' verdict.
    assert process.returncode == (1 if failed else 0), text + rest
    assert not any(is_listening(port) for port in [*ports, app_port])
