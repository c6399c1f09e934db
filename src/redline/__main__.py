"""``redline`` and ``python -m redline``: the command line's entry point.

``redline load run`` starts here without importing typer (``redline.load._cli.run_fast``):
the load benchmark charges the whole process to the tool, start-up included. Everything else,
and any ``load run`` arguments the fast path is not sure of, goes to the Typer app in
``redline.cli``.
"""

import sys


def main() -> None:
    """Run the ``redline`` command line with ``sys.argv``; exit with its code."""
    if sys.argv[1:3] == ["load", "run"]:
        from redline.load._cli import run_fast

        code = run_fast(sys.argv[3:])
        if code is not None:
            sys.exit(code)
    from redline.cli import app

    app()


if __name__ == "__main__":
    main()
