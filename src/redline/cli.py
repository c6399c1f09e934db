"""The `redline` command line."""

from __future__ import annotations

from typing import Annotated

import typer

from redline import __version__
from redline.load._cli import app as load_app

app = typer.Typer(
    name="redline",
    help="Make Python web backends fast, and prove it.",
    no_args_is_help=True,
)
app.add_typer(load_app, name="load")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"redline {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Make Python web backends fast, and prove it."""


@app.command()
def demo(
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="REDIS_URL",
            help="Use this Redis instead of starting a throwaway one.",
        ),
    ] = None,
) -> None:
    """Tour the two-tier cache against a real Redis, measuring each claim."""
    from redline._cache_tour import run

    raise typer.Exit(run(redis_url))
