import subprocess
import sysconfig
from pathlib import Path

from typer.testing import CliRunner

from redline import __version__
from redline.cli import app

runner = CliRunner()


def console_script() -> str:
    # The script pip installed next to this interpreter, whether or not its venv is on PATH.
    return str(Path(sysconfig.get_path("scripts")) / "redline")


def test_help_shows_usage() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_version_prints_name_and_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"redline {__version__}\n"


def test_installed_script_shows_help() -> None:
    result = subprocess.run([console_script(), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_installed_script_prints_version() -> None:
    result = subprocess.run([console_script(), "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"redline {__version__}\n"


def test_cache_tour_tours_the_cache_against_a_redis_it_starts_and_every_claim_passes() -> None:
    result = subprocess.run(
        [console_script(), "cache-tour"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout
    assert "FAIL" not in result.stdout
    assert "across two processes" in result.stdout


def test_cache_tour_uses_the_redis_it_is_given(redis_url: str) -> None:
    result = subprocess.run(
        [console_script(), "cache-tour", "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert redis_url in result.stdout
    # Without a server of its own to stop, the outage step is left out.
    assert "SIGSTOP" not in result.stdout


def test_cache_tour_fails_clearly_when_the_given_redis_is_unreachable() -> None:
    result = subprocess.run(
        [console_script(), "cache-tour", "--redis-url", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stdout
