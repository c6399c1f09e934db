"""One ``/metrics`` for several worker processes (uvicorn ``--workers``, gunicorn), through
snapshot files in a shared directory.

Each worker process keeps its metrics in memory as usual and, with ``SnapshotDirectory``
started, writes ONE file with its whole registry state: every second (``interval``), at the
end of a graceful shutdown and at exit. The file is a msgpack header (id, pid, host, process
start, time written), then every family as msgpack compressed with zstd: counters, gauges
with their merge rule and time of change, histograms with bucket counts, sum, count and the
span of their HDR counts as raw words (see ``HistogramValue``). It is written to a temporary
file and renamed over the old one, so readers see a whole snapshot or the previous one.
Serving ``/metrics`` in any worker reads the other workers' files and merges them with its
own registry as it is then: counters add, histograms add exactly, gauges follow their
``multiprocess_mode``. Reading writes nothing.

Why not prometheus_client's multiprocess mode: it keeps one mmap file per metric type and
pid, which pile up as workers are recycled (gunicorn ``max_requests``) until someone wipes the
directory; a dead worker's live gauges must be cleaned up by hand through a gunicorn hook;
gauge semantics across workers are easy to get wrong; and its histograms are classic buckets,
whose percentiles were 12-25 % off here. Here the directory holds at most one file per live
worker plus one archive:

- A worker is dead when its pid is gone (or a zombie, or reused: the process start time in
  the header no longer matches) or when its snapshot is older than ``expire_after``
  (a worker on another host, whose pid cannot be checked). A dead worker's counters and
  histograms are FOLDED into ``archive.msgpack`` so no count is lost, its gauges are dropped
  (they described a process that is gone), and its file is deleted.
- Folding happens under an exclusive ``flock`` on ``.lock``; writers and readers take it
  shared, so scrapes wait neither for each other nor for writes, and a scrape that finds a
  dead worker lets go, folds, and reads again. Two workers never fold the same file twice,
  and no reader sees a worker both in its file and in the archive (a counter would jump).
  The archive records the ids it folded, so a fold interrupted between writing the archive
  and deleting the files is not counted twice.
- A worker that was folded while still alive (stalled past ``expire_after``) notices that
  its file is gone on its next write and from then on writes only what it recorded since the
  snapshot that was folded, under a new id, so nothing is counted twice.
- A worker forked from a process that had recorded (gunicorn ``--preload``) starts from zero:
  what was recorded before the fork belongs to the parent's snapshot.

Point ``REDLINE_MONITOR_DIR`` (or ``directory=``) at a directory of the host, ideally tmpfs,
per service. Files from a previous run of the service are kept: live ones age out and are
folded, the archive keeps counting. Requires POSIX ``flock`` (Linux, macOS).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import zstandard

from redline.monitor._exceptions import SnapshotError
from redline.monitor._registry import REGISTRY, Registry
from redline.monitor._snapshot import (
    MetricFamily,
    merge_families,
    pack_families,
    subtract_families,
    unpack_families,
)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("redline.monitor")

ENV_DIRECTORY = "REDLINE_MONITOR_DIR"
ARCHIVE = "archive.msgpack"
_WORKER_GLOB = "worker-*.msgpack"
# 2: the body is zstd-compressed and histograms carry their HDR counts as spans of raw words;
# 1 (hdrh's base64 encoding, uncompressed) is still read.
_FORMAT = 2
_HOST = socket.gethostname()
_PROC = Path("/proc/self/stat").exists()
# Every SnapshotDirectory of this process (see collect()).
_INSTANCES: weakref.WeakSet[SnapshotDirectory] = weakref.WeakSet()
# Holds SIGTERM once it was received: a graceful shutdown is under way, and
# MetricsMiddleware writes the last snapshots when its last request in flight ends.
SIGNALLED: set[int] = set()
# How long a SIGTERM waits for the last write before the previous handler runs anyway: the
# signal may interrupt the main thread while it holds a lock the write needs.
_SIGNAL_WRITE_TIMEOUT = 2.0


class SnapshotDirectory:
    """The merged view of ``registry`` in every worker process sharing ``directory``.

    ``SnapshotDirectory(directory=None, *, registry=REGISTRY, interval=1.0,
    expire_after=60.0)``; ``directory`` defaults to ``$REDLINE_MONITOR_DIR``. Call
    ``start()`` in every worker (it writes at once, then every ``interval`` seconds and at
    exit) and serve ``MetricsApp(this)``; ``collect()`` returns the merged families, this
    process counted from its registry as it is, and writes nothing. Usable as a context
    manager (start, then close).

    Exit includes SIGTERM, which servers such as uvicorn end with by re-raising it under the
    default handler, skipping ``atexit``: ``start()`` in the main thread chains a SIGTERM
    handler in front of the current one. It writes (in a helper thread, waiting at most
    2 s, so a lock held by the interrupted code cannot hang it), then does what the previous
    handler did: calls it, ignores the signal, or restores the default and re-raises.
    ``close()`` puts the previous handler back. What requests still in flight at the signal
    record during the graceful shutdown that follows is written by ``MetricsMiddleware`` once
    none is left in flight and again at lifespan shutdown (``write_last_snapshots``), or by
    ``close()`` at lifespan shutdown in an app without it. SIGINT is left alone: Python's
    default raises ``KeyboardInterrupt``, which reaches
    ``atexit``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        registry: Registry = REGISTRY,
        interval: float = 1.0,
        expire_after: float = 60.0,
    ) -> None:
        if fcntl is None:
            raise SnapshotError("multi-process metrics need POSIX file locks (Linux, macOS)")
        if directory is None:
            directory = os.environ.get(ENV_DIRECTORY) or None
        if directory is None:
            raise SnapshotError(
                f"no snapshot directory: pass directory= or set {ENV_DIRECTORY} to a "
                "directory shared by the worker processes (tmpfs is best)"
            )
        if not interval > 0:
            raise SnapshotError(f"interval must be > 0 seconds, got {interval!r}")
        if not expire_after > 2 * interval:
            raise SnapshotError(
                f"expire_after ({expire_after!r} s) must exceed two write intervals "
                f"({interval!r} s each), or live workers would look dead"
            )
        self.path = Path(directory)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SnapshotError(f"cannot create snapshot directory {self.path}: {exc}") from exc
        self.registry = registry
        self.interval = interval
        self.expire_after = expire_after
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._atexit = False
        self._sigterm_previous: Any = None
        self._fork_hook = False
        self._new_identity()
        self._baseline: list[MetricFamily] | None = None
        _INSTANCES.add(self)

    def __repr__(self) -> str:
        return f"<SnapshotDirectory {str(self.path)!r} as {self._id}>"

    def __enter__(self) -> SnapshotDirectory:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def file(self) -> Path:
        """This process's snapshot file."""
        return self._file

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> SnapshotDirectory:
        """Write now, then every ``interval`` seconds in a daemon thread, and at exit."""
        self.write()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="redline-monitor-snapshots", daemon=True
            )
            self._thread.start()
        if not self._atexit:
            atexit.register(self._at_exit)
            self._atexit = True
        self._chain_sigterm()
        if not self._fork_hook:
            hook = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (m := hook()) and m())
            self._fork_hook = True
        return self

    def close(self) -> None:
        """Stop the periodic writes and write a last time."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        if self._atexit:
            atexit.unregister(self._at_exit)
            self._atexit = False
        self._unchain_sigterm()
        self.write()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self.write()
                self.fold()
            except Exception:
                # Once per outage, not once a second.
                if not failing:
                    log.exception("writing metrics snapshot %s failed", self._file)
                failing = True
            else:
                if failing:
                    log.warning("writing metrics snapshot %s works again", self._file)
                failing = False

    def _at_exit(self) -> None:
        self._stop.set()
        self._write_last()

    def _write_last(self) -> None:
        try:
            self.write()
        except Exception:
            log.exception("writing the last metrics snapshot %s failed", self._file)

    def _chain_sigterm(self) -> None:
        if self._sigterm_previous is not None:
            return  # already chained (a forked child inherits the handler)
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may install signal handlers
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None:
            return  # installed outside Python: it could not be called or restored
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_previous = previous

    def _unchain_sigterm(self) -> None:
        # Left in place (outside the main thread, or under a handler installed after it), the
        # closed handler only passes the signal on.
        if (
            self._sigterm_previous is not None
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == self._on_sigterm
        ):
            signal.signal(signal.SIGTERM, self._sigterm_previous)
            self._sigterm_previous = None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        SIGNALLED.add(signum)
        previous = self._sigterm_previous
        if self._atexit:
            # Not in this thread: the interrupted code may hold the write lock, a metric's
            # lock or the directory's flock, and would wait for this handler to return.
            writer = threading.Thread(
                target=self._write_last, name="redline-monitor-last-snapshot", daemon=True
            )
            writer.start()
            writer.join(_SIGNAL_WRITE_TIMEOUT)
            if writer.is_alive():
                log.error("the last metrics snapshot %s was not written in time", self._file)
        if previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            self._sigterm_previous = None
            signal.raise_signal(signum)
        elif previous != signal.SIG_IGN:
            previous(signum, frame)

    def _after_fork(self) -> None:
        if not self._atexit:
            return  # not started, or closed: the child decides for itself
        # What the parent recorded stays in the parent's snapshot; this is a new worker. Its
        # locks may have been held by a parent thread at the fork: fresh ones.
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self.registry.reset()
        self._new_identity()
        self._baseline = None
        if self._thread is not None:
            self._thread = None
            self.start()

    def _new_identity(self) -> None:
        self._pid = os.getpid()
        self._id = f"{self._pid}-{uuid.uuid4().hex[:12]}"
        self._file = self.path / f"worker-{self._id}.msgpack"
        self._process_start = _process_start(self._pid)
        self._last_written: list[MetricFamily] | None = None

    # -- writing --------------------------------------------------------------------------

    def write(self) -> None:
        """Write this process's snapshot now."""
        with self._write_lock:
            families = self.registry.collect()
            with self._locked(fcntl.LOCK_SH):
                written = self._unfolded(families)
                header = {
                    "format": _FORMAT,
                    "id": self._id,
                    "pid": self._pid,
                    "host": _HOST,
                    "start": self._process_start,
                    "written": time.time(),
                }
                _write_atomically(self._file, header, written, self._id)
                self._last_written = families

    def _unfolded(self, families: list[MetricFamily]) -> list[MetricFamily]:
        """What of ``families`` (the registry now) the archive does not hold. Under the
        write lock and the directory's lock."""
        if self._last_written is not None and not self._file.exists():
            # Folded into the archive while alive: the archive now holds everything up to
            # the last snapshot, so count only what came after, as a new worker.
            self._baseline = self._last_written
            self._new_identity()
        if self._baseline is None:
            return families
        return subtract_families(families, self._baseline)

    # -- reading and folding --------------------------------------------------------------

    def collect(self) -> list[MetricFamily]:
        """The merged view of every live worker and the archive. This process counts as its
        registry is now, not as its file last was, so its figures are current; nothing is
        written (a process that only reads leaves no file). Readers share the directory's
        lock with writers and each other; only folding dead workers, which a read that
        finds some does first, takes it alone."""
        mine = self._files_of_this_registry()
        for _ in range(3):
            with self._write_lock:
                families = self.registry.collect()
                with self._locked(fcntl.LOCK_SH):
                    own = self._unfolded(families)
                    archive, live, dead = self._read_all(skip=mine | {self._file})
            if not dead:
                break
            self.fold()
        return merge_families([(self._pid, own), *live, (None, archive)])

    def _files_of_this_registry(self) -> set[Path]:
        # Other SnapshotDirectory instances of this process on the same registry and
        # directory: their files are this registry too, which collect() reads live.
        return {
            other._file
            for other in list(_INSTANCES)
            if other is not self and other.registry is self.registry and other.path == self.path
        }

    def fold(self) -> int:
        """Fold dead workers' snapshots into the archive now; returns how many were folded.
        The periodic writer calls this; a scrape that finds dead workers does too."""
        now = time.time()
        suspects = False
        for path in self._worker_files():
            if path == self._file:
                continue
            try:
                header, _ = _read(path, body=False)
            except FileNotFoundError:
                continue
            except Exception:
                suspects = True
                break
            if self._is_dead(header, now):
                suspects = True
                break
        if not suspects and not any(self._stale_tmp(now)):
            return 0
        with self._locked(fcntl.LOCK_EX):
            before = len(self._worker_files())
            self._fold_dead()
            return before - len(self._worker_files())

    def _read_all(
        self, skip: set[Path]
    ) -> tuple[list[MetricFamily], list[tuple[int, list[MetricFamily]]], list[Path]]:
        """The archive, the live workers' snapshots (but those in ``skip``) and the paths
        of dead ones, changing nothing. Under the directory's lock, shared or exclusive:
        files are replaced by rename, so each is read whole."""
        now = time.time()
        archive_header, archive = self._read_archive()
        already = set(archive_header.get("folded", ()))
        live: list[tuple[int, list[MetricFamily]]] = []
        dead: list[Path] = []
        for path in self._worker_files():
            if path in skip:
                continue
            try:
                header, body = _read(path)
                families = unpack_families(body)
            except FileNotFoundError:
                continue
            except Exception as exc:
                self._unreadable(path, exc, now)
                continue
            if header["id"] in already:
                # Folded by a fold that was interrupted before it could delete the file.
                dead.append(path)
            elif self._is_dead(header, now):
                dead.append(path)
            else:
                live.append((header["pid"], families))
        return archive, live, dead

    def _fold_dead(self) -> None:
        # Under the exclusive lock: fold the dead into the archive, delete their files.
        now = time.time()
        archive_header, archive = self._read_archive()
        already = set(archive_header.get("folded", ()))
        dead: list[tuple[Path, dict[str, Any], list[MetricFamily]]] = []
        for path in self._worker_files():
            if path == self._file:
                continue
            try:
                header, body = _read(path)
                families = unpack_families(body)
            except FileNotFoundError:
                continue
            except Exception as exc:
                self._unreadable(path, exc, now)
                continue
            if header["id"] in already:
                path.unlink(missing_ok=True)
            elif self._is_dead(header, now):
                dead.append((path, header, families))
        if dead:
            archive = merge_families(
                [(None, archive), *((h["pid"], f) for _, h, f in dead)], gauges=False
            )
            folded = [header["id"] for _, header, _ in dead]
            header = {"format": _FORMAT, "folded": folded, "written": now}
            _write_atomically(self.path / ARCHIVE, header, archive, self._id)
            for path, header, _ in dead:
                path.unlink(missing_ok=True)
                log.info("folded the metrics of dead worker %s into the archive", header["id"])
        for tmp in self._stale_tmp(now):
            # Left by a process that died while writing.
            tmp.unlink(missing_ok=True)

    def _stale_tmp(self, now: float) -> Iterator[Path]:
        for tmp in self.path.glob(".tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if now - tmp.stat().st_mtime > self.expire_after:
                    yield tmp

    def _read_archive(self) -> tuple[dict[str, Any], list[MetricFamily]]:
        path = self.path / ARCHIVE
        try:
            header, body = _read(path)
            return header, unpack_families(body)
        except FileNotFoundError:
            return {}, []
        except Exception as exc:
            # Keep the unreadable archive for inspection rather than overwrite it blindly.
            aside = path.with_name(f"{ARCHIVE}.unreadable-{int(time.time())}")
            path.replace(aside)
            log.error("metrics archive %s is unreadable (%s); moved to %s", path, exc, aside)
            return {}, []

    def _unreadable(self, path: Path, exc: Exception, now: float) -> None:
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            return
        if age > self.expire_after:
            path.unlink(missing_ok=True)
            log.error("deleted unreadable stale metrics snapshot %s (%s)", path, exc)
        else:
            log.warning("skipped unreadable metrics snapshot %s (%s)", path, exc)

    def _is_dead(self, header: dict[str, Any], now: float) -> bool:
        if now - header["written"] > self.expire_after:
            return True
        if header["host"] != _HOST:
            return False
        return not _alive(header["pid"], header["start"])

    def _worker_files(self) -> list[Path]:
        return sorted(self.path.glob(_WORKER_GLOB))

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        # A new open file description each time: flock locks belong to it, so threads (and a
        # forked child sharing descriptors) exclude each other like separate processes.
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)


def write_last_snapshots() -> None:
    """Write the snapshot of every started ``SnapshotDirectory`` of this process now: a
    graceful shutdown has let the requests in flight finish (see ``MetricsMiddleware``)."""
    for directory in list(_INSTANCES):
        if directory._atexit:
            directory._write_last()


def _write_atomically(
    path: Path, header: dict[str, Any], families: list[MetricFamily], owner: str
) -> None:
    # The header stays plain, so that judging a worker alive or dead reads only it.
    body = zstandard.ZstdCompressor(level=3).compress(msgpack.packb(pack_families(families)))
    tmp = path.with_name(f".tmp-{owner}-{path.name}")
    tmp.write_bytes(msgpack.packb(header) + body)
    os.replace(tmp, path)


def _read(path: Path, *, body: bool = True) -> tuple[dict[str, Any], Any]:
    data = path.read_bytes()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    header = unpacker.unpack()
    version = header.get("format") if isinstance(header, dict) else None
    if version not in (1, _FORMAT):
        raise ValueError(f"unknown snapshot format {version!r}")
    if not body:
        return header, None
    if header["format"] == 1:  # written by an earlier version: plain msgpack, hdrh blobs
        return header, unpacker.unpack()
    # A decompressor per read: they may not be shared between threads.
    raw = zstandard.ZstdDecompressor().decompress(data[unpacker.tell() :])
    return header, msgpack.unpackb(raw, raw=False)


def _proc_stat(pid: int) -> list[str] | None:
    # Fields of /proc/<pid>/stat after the command name, which may hold spaces and parens.
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), None elsewhere."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int, started: int | None) -> bool:
    if _PROC:
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return started is None or int(fields[19]) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
