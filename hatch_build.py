"""Build hook: compile redline's optional C extensions when a C compiler is at hand.

redline runs without them: each one has a pure-Python twin that does the same work, slower:
the load engine's fast lane (``redline/load/_lane.c``, twin ``LaneConnection`` in
``redline/load/_flow.py``) and ``MetricsMiddleware``'s per-request path
(``redline/monitor/_request.c``, twin ``MetricsMiddleware._serve`` in
``redline/monitor/_middleware.py``); and a histogram flush's counting
(``redline/monitor/_tally.c``, twin ``HistogramChild._add`` in
``redline/monitor/_histogram.py``). So a build never fails for want of a compiler: it says
why it skipped, and the package stays pure Python; one extension that fails to compile leaves
the others built.

- ``pip install .`` / ``python -m build``: the extension is compiled into a temporary
  folder and put in the wheel, which is then tagged for this interpreter and platform.
- ``pip install -e .``: the package is imported from ``src/``, so the extension is compiled
  in place, next to its source (git ignores it).
- ``REDLINE_PURE_PYTHON=1`` at build time skips the compilation; at run time it makes
  redline ignore a compiled extension (see ``redline.load._flow`` and
  ``redline.monitor._middleware``).

Linux only for now: the lane's timestamps must be ``time.perf_counter_ns()`` values, which
only Linux promises to be ``CLOCK_MONOTONIC`` (the middleware reads the same clock). One C
file per extension and no third-party headers, so a plain ``cc -shared`` against Python's
headers is enough, and keeps setuptools out of the build.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Module name -> C source, relative to the project root.
EXTENSIONS = {
    "redline.load._lane": "src/redline/load/_lane.c",
    "redline.monitor._request": "src/redline/monitor/_request.c",
    "redline.monitor._tally": "src/redline/monitor/_tally.c",
}


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if not sys.platform.startswith("linux"):
            # The C lane needs perf_counter_ns to be CLOCK_MONOTONIC, which only Linux promises.
            self.app.display_info("redline: C extensions are built on Linux only")
            return
        if os.environ.get("REDLINE_PURE_PYTHON", "0") != "0":
            self.app.display_info("redline: REDLINE_PURE_PYTHON is set, C extensions skipped")
            return
        compiler = _compiler()
        if compiler is None:
            self.app.display_warning(
                "redline: no C compiler found (set CC), building pure Python: the load "
                "engine's fast lane and MetricsMiddleware's request path will run their "
                "Python versions"
            )
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        editable = version == "editable"
        # A wheel's extensions are built apart and added to it; removed in finalize().
        out_dir = root if editable else Path(tempfile.mkdtemp(prefix="redline-build-"))
        if not editable:
            self._out_dir = out_dir
        built_any = False
        for module, source in EXTENSIONS.items():
            relative = Path(*module.split(".")).with_suffix("")
            name = relative.name + suffix
            target = (root / source).parent / name if editable else out_dir / name
            try:
                _compile(compiler, root / source, target)
            except (OSError, subprocess.CalledProcessError) as exc:
                detail = getattr(exc, "stderr", None) or str(exc)
                self.app.display_warning(
                    f"redline: could not compile {source}, {module} stays pure Python:\n{detail}"
                )
                continue
            built_any = True
            if not editable:
                build_data["force_include"][str(target)] = str(relative.parent / name)
        if built_any and not editable:
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        out_dir = getattr(self, "_out_dir", None)
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
            self._out_dir = None


def _compiler() -> list[str] | None:
    command = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    argv = shlex.split(command)
    if not argv or shutil.which(argv[0]) is None:
        return None
    return argv


def _compile(compiler: list[str], source: Path, target: Path) -> None:
    include = sysconfig.get_paths()["include"]
    flags = ["-O2", "-fPIC", "-Wall", "-Wextra", "-fvisibility=hidden"]
    partial = target.with_name(target.name + ".tmp")
    subprocess.run(
        [*compiler, *flags, f"-I{include}", str(source), "-shared", "-o", str(partial)],
        check=True,
        capture_output=True,
        text=True,
    )
    # Replaced in one step: a running process that has the old file mapped keeps it.
    partial.replace(target)
