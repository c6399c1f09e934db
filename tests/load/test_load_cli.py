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
