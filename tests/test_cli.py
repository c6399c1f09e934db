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
