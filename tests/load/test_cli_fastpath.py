"""The fast path of ``redline load run`` (``redline.load._cli.run_fast``): Typer's options,
runs, output and exit codes, without importing typer or pydantic.

The Typer path is forced with ``--``, which the fast parser leaves to Typer and which means
the same to click: ``run --target URL -- plan.yaml`` is ``run plan.yaml --target URL``.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import sysconfig
from pathlib import Path

import pytest
import typer.main

from redline.cli import app
from redline.load._cli import RunOptions, parse_run_args

REDLINE = str(Path(sysconfig.get_path("scripts")) / "redline")
MAIN = [sys.executable, "-m", "redline"]  # redline.__main__:main, the fast entry point
RUN = typer.main.get_command(app).commands["load"].commands["run"]
OPTIONS = [opt for p in RUN.params for opt in (*p.opts, *p.secondary_opts) if opt[:2] == "--"]


def typer_options(args: list[str]) -> RunOptions:
    """What Typer makes of ``redline load run ARGS``: its parser and its conversions."""
    return RunOptions(**RUN.make_context("run", list(args)).params)


@pytest.mark.parametrize(
    "args",
    [
        ["p.yaml"],
        [
            "p.yaml",
            "--target",
            "http://127.0.0.1:8000",
            "--preset",
            "spike:factor=20,hold=5s",
            "--vus",
            "10",
            "--rate",
            "2.5",
            "--duration",
            "30s",
            "--workers",
            "2",
            "--metrics-url",
            "http://127.0.0.1:9000/metrics",
            "--timeout",
            "3",
            "--progress",
            "--out",
            "o",
        ],
        ["--out=o", "--no-progress", "plan.py", "--vus=007", "--timeout=0.25", "--rate=10"],
        ["p.yaml", "--target=", "--out=", "--duration="],
        ["dir with space/p.yaml", "--target", "http://h/?a=b"],
    ],
    ids=lambda args: " ".join(args),
)
def test_plain_arguments_read_as_typer_reads_them(args):
    assert parse_run_args(args) == typer_options(args)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_typer_declares_is_read_without_typer(option):
    flag = next(p for p in RUN.params if option in (*p.opts, *p.secondary_opts)).is_flag
    args = ["p.yaml", option] if flag else ["p.yaml", option, "3"]

    options = parse_run_args(args)

    assert options is not None, f"{option} is not in redline.load._cli's parser"
    assert options == typer_options(args)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["p.yaml", "--help"],
        ["p.yaml", "-h"],
        ["p.yaml", "--bogus", "1"],
        ["p.yaml", "--tar", "http://h"],
        ["a.yaml", "b.yaml"],
        [""],
        ["-"],
        ["--", "p.yaml"],
        ["p.yaml", "--vus", "1e3"],
        ["p.yaml", "--vus", "-1"],
        ["p.yaml", "--vus", "1_000"],
        ["p.yaml", "--vus", "１"],  # a full-width digit
        ["p.yaml", "--rate", ".5"],
        ["p.yaml", "--timeout", "inf"],
        ["p.yaml", "--workers", "0"],
        ["p.yaml", "--target"],
        ["p.yaml", "--target", "--vus", "1"],
        ["p.yaml", "--progress=yes"],
        ["p.yaml", "--vus", "1", "--vus", "2"],
        ["p.yaml", "--progress", "--no-progress"],
    ],
    ids=lambda args: " ".join(args) or "nothing",
)
def test_what_the_parser_is_not_sure_of_goes_to_typer(args):
    assert parse_run_args(args) is None


def test_shell_completion_goes_to_typer(monkeypatch):
    monkeypatch.setenv("_REDLINE_COMPLETE", "bash_complete")

    assert parse_run_args(["p.yaml"]) is None


async def redline(*argv: str, interrupt_at_line: int | None = None) -> tuple[int, str, str]:
    """A command in a subprocess while this test's event loop serves; Ctrl-C it once it has
    printed `interrupt_at_line` lines."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    first = b""
    if interrupt_at_line is not None:
        assert process.stdout is not None
        for _ in range(interrupt_at_line):
            first += await asyncio.wait_for(process.stdout.readline(), 60)
        process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 90)
    return process.returncode, (first + out).decode(), err.decode()


async def both_paths(plan: Path, *options: str, **kwargs: int) -> tuple[tuple, tuple]:
    """``redline load run`` of PLAN through the fast path and through Typer."""
    fast = await redline(*MAIN, "load", "run", str(plan), *options, **kwargs)
    typer_ = await redline(*MAIN, "load", "run", *options, "--", str(plan), **kwargs)
    return fast, typer_


def shape(output: str) -> str:
    """Output with its measurements masked: numbers, and the table's widths they set."""
    return re.sub(r"[─━ ]+", " ", re.sub(r"\d+(\.\d+)?", "N", output))


def write_plan(tmp_path: Path, name: str, text: str) -> Path:
    plan = tmp_path / name
    plan.write_text(text)
    return plan


async def test_a_passing_run_gives_typers_output_and_exit_0(http_server, tmp_path):
    plan = write_plan(
        tmp_path,
        "plan.yaml",
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 2\n    duration: 0.5s\n"
        "    flow:\n      - get: {url: /delay/2, name: two}\n"
        'thresholds:\n  - "latency{name:two}: p(95) < 1000"\n',
    )

    fast, typer_ = await both_paths(
        plan, "--target", http_server.url, "--out", str(tmp_path / "out"), "--no-progress"
    )

    assert fast[0] == typer_[0] == 0, (fast, typer_)
    assert shape(fast[1]) == shape(typer_[1])
    assert "PASS latency{name:two}: p(95) < 1000" in fast[1]
    assert fast[2] == typer_[2] == ""
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["endpoints"]["two"]["requests"]["total"] > 10
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "junit.xml").exists()


async def test_a_bad_plan_exits_2_naming_file_and_line_as_typer_does(tmp_path):
    plan = write_plan(
        tmp_path,
        "plan.yaml",
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 1s\n"
        "    flow:\n      - get: /\n      - thinks: 1\n",
    )

    fast, typer_ = await both_paths(plan, "--target", "http://127.0.0.1:1", "--out", str(tmp_path))

    assert fast == typer_
    assert fast[0] == 2
    assert f"{plan}:8" in fast[1] and "thinks" in fast[1], fast


async def test_bad_options_exit_2_with_typers_usage_error(tmp_path):
    plan = write_plan(tmp_path, "plan.yaml", "scenarios: {}\n")

    for options in (["--workers", "0"], ["--vus", "many"], ["--bogus"]):
        code, out, err = await redline(*MAIN, "load", "run", str(plan), *options)

        assert code == 2, (options, out, err)
        assert out == ""
        assert "Usage:" in err and "redline load run" in err, (options, err)


async def test_no_target_exits_2_with_typers_usage_error_on_both_paths(tmp_path):
    plan = write_plan(
        tmp_path,
        "plan.yaml",
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 1s\n"
        "    flow:\n      - get: /\n",
    )

    fast, typer_ = await both_paths(plan, "--out", str(tmp_path))

    assert fast == typer_
    code, out, err = fast
    assert code == 2 and out == ""
    assert "no target: pass --target URL or set target in the plan" in err
    assert "Usage:" in err


async def test_a_failed_threshold_exits_99_on_both_paths(tmp_path):
    plan = write_plan(
        tmp_path,
        "plan.yaml",
        "target: http://127.0.0.1:1\n"
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 0.5s\n"
        "    flow:\n      - get: /\n      - think: 0.05\n"
        'thresholds:\n  - "errors: rate < 0.01"\n',
    )

    fast, typer_ = await both_paths(plan, "--out", str(tmp_path))

    assert fast[0] == typer_[0] == 99, (fast, typer_)
    assert shape(fast[1]) == shape(typer_[1])
    assert "FAIL errors: rate < 0.01 (value 1.0)" in fast[1]


async def test_a_saturated_generator_exits_98_on_both_paths(http_server, tmp_path):
    # 2 ms of CPU per arrival at 2000 a second is four cores' worth of work.
    plan = write_plan(
        tmp_path,
        "plan.py",
        "import time\n\n"
        "from redline.load import ConstantArrivalRate, scenario\n\n\n"
        '@scenario(ConstantArrivalRate(rate=2000, duration=1, max_vus=100), name="s")\n'
        "async def burn(vu):\n"
        "    deadline = time.perf_counter() + 0.002\n"
        "    while time.perf_counter() < deadline:\n"
        "        pass\n"
        '    await vu.get("/", name="burn")\n',
    )

    fast, typer_ = await both_paths(plan, "--target", http_server.url, "--out", str(tmp_path))

    assert fast[0] == typer_[0] == 98, (fast, typer_)
    # Which limits the run crossed depends on the machine: each path names at least one.
    assert "generator saturated: " in fast[1] and "generator saturated: " in typer_[1]


async def test_ctrl_c_exits_130_without_outputs_on_both_paths(tmp_path):
    plan = write_plan(
        tmp_path,
        "plan.py",
        "import time\n\n"
        "from redline.load import ConstantVUs, scenario\n\n"
        'print("loading the plan", flush=True)\n'
        "time.sleep(60)\n\n\n"
        "@scenario(ConstantVUs(vus=1, duration=1))\n"
        "async def s(vu):\n"
        '    await vu.get("/")\n',
    )
    out = tmp_path / "out"

    fast, typer_ = await both_paths(
        plan, "--target", "http://127.0.0.1:1", "--out", str(out), interrupt_at_line=1
    )

    assert fast == typer_ == (130, "loading the plan\n", "")
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "absent"),
    [(MAIN, ("typer", "pydantic")), ([REDLINE], ("pydantic",))],
    ids=["python -m redline", "console script"],
)
async def test_the_fast_path_skips_typers_imports(http_server, tmp_path, argv, absent):
    plan = write_plan(
        tmp_path,
        "plan.yaml",
        "scenarios:\n  s:\n    executor: constant-vus\n    vus: 1\n    duration: 0.2s\n"
        "    flow:\n      - get: /\n",
    )
    if argv[0] == REDLINE:
        argv = [sys.executable, REDLINE]  # the installed script, run by this interpreter

    code, out, err = await redline(
        argv[0],
        "-X",
        "importtime",
        *argv[1:],
        "load",
        "run",
        str(plan),
        "--target",
        http_server.url,
        "--out",
        str(tmp_path),
    )

    assert code == 0, out + err
    imported = {line.rsplit("|", 1)[1].strip() for line in err.splitlines() if "|" in line}
    assert "redline.load._runner" in imported
    for package in absent:
        assert package not in imported
    assert json.loads((tmp_path / "summary.json").read_text())["requests"]["total"] > 0
