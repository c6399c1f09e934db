"""SyncCache is generated from Cache's source; the checked-in copy must match it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sync_cache_is_regenerated_from_the_async_source() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_sync.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_when_the_generated_copy_is_edited_by_hand(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_sync", ROOT / "scripts" / "gen_sync.py")
    gen_sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_sync)
    generated = gen_sync.generate()
    assert "class SyncCache" in generated["cache.py"]
    assert "async def" not in generated["cache.py"]
    assert "await " not in generated["cache.py"]
    target = tmp_path / "_sync"
    target.mkdir()
    for name, text in generated.items():
        (target / name).write_text(text)
    (target / "cache.py").write_text(generated["cache.py"] + "\n# hand edit\n")
    gen_sync.TARGET = target
    assert gen_sync.main(["--check"]) == 1
