"""Generate the sync cache (src/redline/cache/_sync/) from the async source (_async/).

Usage: python scripts/gen_sync.py [--check]

With --check, exit 1 if the generated files differ from what is in the tree.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "redline" / "cache" / "_async"
TARGET = ROOT / "src" / "redline" / "cache" / "_sync"
HEADER = "# Generated from _async/{name} by scripts/gen_sync.py: do not edit, regenerate.\n"
REPLACEMENTS = {
    "Cache": "SyncCache",
    "_async": "_sync",
    "_async_io": "_sync_io",
    "aclose": "close",
}


def generate() -> dict[str, str]:
    """Return {file name: generated text} for every module of the async source."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "_async"
        src.mkdir()
        files = sorted(SOURCE.glob("*.py"))
        for path in files:
            (src / path.name).write_text(path.read_text())
        rule = unasync.Rule(str(src) + "/", str(Path(tmp) / "_sync") + "/", REPLACEMENTS)
        unasync.unasync_files([str(src / path.name) for path in files], rules=[rule])
        return {
            path.name: HEADER.format(name=path.name) + (Path(tmp) / "_sync" / path.name).read_text()
            for path in files
        }


def main(argv: list[str]) -> int:
    generated = generate()
    if "--check" in argv:
        stale = [
            name
            for name, text in generated.items()
            if not (TARGET / name).exists() or (TARGET / name).read_text() != text
        ]
        extra = {p.name for p in TARGET.glob("*.py")} - set(generated)
        if stale or extra:
            print(
                f"_sync/ is out of date ({', '.join(sorted(stale + list(extra)))}): "
                "run python scripts/gen_sync.py"
            )
            return 1
        return 0
    TARGET.mkdir(exist_ok=True)
    for name, text in generated.items():
        (TARGET / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
