"""Purge adapters against a local HTTP server standing in for the Fastly and Cloudflare APIs.

There is no internet here, so ``ScriptedAPI`` records every call (method, path, headers, body,
client port) and answers from a script: a status and body per call, optionally after a delay,
so that tests can make the CDN fail, throttle or time out on demand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from redline.cache import Cache, SyncCache
from redline.http._purge import (
    CloudflarePurger,
    FastlyPurger,
    PurgeError,
    Purger,
    SyncPurger,
    VarnishPurger,
)
from redline.http._surrogate import SurrogateKeyError

TOKEN = "s3cr3t-T0KEN-value"


@dataclass
class Reply:
    status: int = 200
    body: object = None  # JSON-encoded unless bytes
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    port: int
    at: float

    def json(self) -> object:
        return json.loads(self.body)


class ScriptedAPI(ThreadingHTTPServer):
    """Answers calls from ``script`` in order, then with ``default``; records each call."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[Call] = []
        self.script: list[Reply] = []
        self.default = Reply()
        self.events: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_reply(self, call: Call) -> Reply:
        with self.lock:
            self.calls.append(call)
            self.events.append("cdn")
            return self.script.pop(0) if self.script else self.default


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedAPI
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        call = Call(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length),
            port=self.client_address[1],
            at=time.monotonic(),
        )
        reply = self.server.next_reply(call)
        if reply.delay:
            time.sleep(reply.delay)
        if isinstance(reply.body, bytes):
            body = reply.body
        else:
            default = {"success": True, "errors": [], "result": {"id": "x"}}
            body = json.dumps(default if reply.body is None else reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up waiting: that is the point of a delayed reply

    do_POST = do_PURGE = do_BAN = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    server = ScriptedAPI()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def fastly(api: ScriptedAPI, **options: object) -> FastlyPurger:
    options = {"backoff": 0.01, **options}
    return FastlyPurger("svc1", TOKEN, base_url=api.url, **options)  # type: ignore[arg-type]


def cloudflare(api: ScriptedAPI, **options: object) -> CloudflarePurger:
    options = {"backoff": 0.01, **options}
    return CloudflarePurger("zone9", TOKEN, base_url=api.url, **options)  # type: ignore[arg-type]


# -- Fastly -----------------------------------------------------------------------------------


async def test_fastly_posts_keys_with_its_auth_header(api: ScriptedAPI) -> None:
    async with Purger(fastly(api)) as purger:
        result = await purger.purge(["fund:7", "funds"])
    assert result.ok and result.tags == ("fund:7", "funds")
    [call] = api.calls
    assert (call.method, call.path) == ("POST", "/service/svc1/purge")
    assert call.headers["fastly-key"] == TOKEN
    assert call.headers["surrogate-key"] == "fund:7 funds"
    assert "fastly-soft-purge" not in call.headers
    assert "authorization" not in call.headers
    [outcome] = result.outcomes
    assert outcome.target == "fastly service svc1"
    assert (outcome.purged, outcome.failed, outcome.attempts) == (("fund:7", "funds"), (), 1)


async def test_fastly_soft_purge_sends_the_soft_header(api: ScriptedAPI) -> None:
    async with Purger(fastly(api, soft=True)) as purger:
        await purger.purge(["a"])
    assert api.calls[0].headers["fastly-soft-purge"] == "1"


async def test_fastly_batches_at_most_256_keys_per_call(api: ScriptedAPI) -> None:
    tags = [f"k{i}" for i in range(600)]
    async with Purger(fastly(api)) as purger:
        result = await purger.purge(tags)
    sent = [call.headers["surrogate-key"].split() for call in api.calls]
    assert [len(batch) for batch in sent] == [256, 256, 88]
    assert [tag for batch in sent for tag in batch] == tags
    assert result.ok and result.outcomes[0].attempts == 3


async def test_fastly_batches_long_keys_by_header_size(api: ScriptedAPI) -> None:
    tags = [f"{i:04d}" + "x" * 996 for i in range(20)]  # 1000 bytes each
    async with Purger(fastly(api)) as purger:
        assert (await purger.purge(tags)).ok
    sizes = [len(call.headers["surrogate-key"]) for call in api.calls]
    assert len(sizes) > 1 and max(sizes) <= 8 * 1024
    assert sum(len(call.headers["surrogate-key"].split()) for call in api.calls) == 20


# -- Cloudflare -------------------------------------------------------------------------------


async def test_cloudflare_posts_tags_as_json_with_bearer_auth(api: ScriptedAPI) -> None:
    async with Purger(cloudflare(api)) as purger:
        result = await purger.purge(["fund:7", "funds"])
    assert result.ok
    [call] = api.calls
    assert (call.method, call.path) == ("POST", "/zones/zone9/purge_cache")
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["content-type"] == "application/json"
    assert call.json() == {"tags": ["fund:7", "funds"]}
    assert result.outcomes[0].target == "cloudflare zone zone9"


async def test_cloudflare_sends_batches_of_at_most_30_tags_one_after_another(
    api: ScriptedAPI,
) -> None:
    api.default = Reply(delay=0.05)
    tags = [f"t{i}" for i in range(65)]
    async with Purger(cloudflare(api)) as purger:
        assert (await purger.purge(tags)).ok
    batches = [call.json()["tags"] for call in api.calls]  # type: ignore[index]
    assert [len(batch) for batch in batches] == [30, 30, 5]
    assert [tag for batch in batches for tag in batch] == tags
    # Sequential: each call starts after the previous answer was sent.
    starts = [call.at for call in api.calls]
    assert all(later - earlier >= 0.04 for earlier, later in zip(starts, starts[1:], strict=False))


async def test_cloudflare_batch_size_can_be_raised(api: ScriptedAPI) -> None:
    async with Purger(cloudflare(api, max_tags_per_call=100)) as purger:
        await purger.purge([f"t{i}" for i in range(65)])
    assert len(api.calls) == 1


async def test_cloudflare_success_false_is_a_failure_even_with_200(api: ScriptedAPI) -> None:
    api.default = Reply(body={"success": False, "errors": [{"code": 1134, "message": "quota"}]})
    async with Purger(cloudflare(api)) as purger:
        result = await purger.purge(["a"])
    assert not result.ok and result.failed_tags == ("a",)
    [outcome] = result.failed
    assert "quota" in (outcome.error or "") and "1134" in (outcome.error or "")
    # A refusal is not an outage: retrying cannot help.
    assert outcome.attempts == 1 and len(api.calls) == 1


# -- Varnish (the protocol; tests/http/test_varnish_edge.py runs it against a real Varnish) -----


async def test_varnish_purges_send_tags_in_header_sized_batches(api: ScriptedAPI) -> None:
    api.default = Reply(headers={"xkey-purged": "2"})
    tags = [f"fund:{i:016d}" for i in range(1000)]  # 21 bytes each, ~21 KB in all
    async with Purger(VarnishPurger(api.url)) as purger:
        result = await purger.purge(tags)
    assert {(call.method, call.path) for call in api.calls} == {("PURGE", "/")}
    sent = [call.headers["xkey-purge"] for call in api.calls]
    assert len(sent) == 4 and max(map(len, sent)) <= 6 * 1024
    assert [tag for header in sent for tag in header.split()] == tags
    assert result.ok and result.outcomes[0].count == 8


async def test_varnish_soft_purge_uses_the_softpurge_header(api: ScriptedAPI) -> None:
    api.default = Reply(headers={"xkey-purged": "0"})
    async with Purger(VarnishPurger(api.url, soft=True)) as purger:
        assert (await purger.purge(["a"])).ok
    assert api.calls[0].headers["xkey-softpurge"] == "a"
    assert "xkey-purge" not in api.calls[0].headers


async def test_varnish_ban_sends_an_escaped_whole_tag_regex(api: ScriptedAPI) -> None:
    async with Purger(VarnishPurger(api.url, mode="ban")) as purger:
        assert (await purger.purge(["fund:7", "a.b|c*"])).ok
    [call] = api.calls
    assert (call.method, call.path) == ("BAN", "/")
    assert call.headers["xkey-ban"] == (
        r"(^|[[:space:],])(fund:7|a\x{2e}b\x{7c}c\x{2a})($|[[:space:],])"
    )


async def test_a_varnish_answer_without_a_purge_count_is_a_failure(api: ScriptedAPI) -> None:
    # A 200 from something other than the xkey handler (the app, a proxy) purged nothing.
    async with Purger(VarnishPurger(api.url)) as purger:
        result = await purger.purge(["a"])
    assert not result.ok and "xkey-purged" in (result.outcomes[0].error or "")


# -- retries, timeouts, partial failure ---------------------------------------------------------


async def test_transient_errors_are_retried_until_success(api: ScriptedAPI) -> None:
    api.script = [Reply(status=503), Reply(status=502)]
    async with Purger(fastly(api, retries=2)) as purger:
        result = await purger.purge(["a"])
    assert result.ok and result.outcomes[0].attempts == 3 and len(api.calls) == 3


async def test_429_is_retried_after_the_servers_retry_after(api: ScriptedAPI) -> None:
    api.script = [Reply(status=429, headers={"retry-after": "5"})]
    async with Purger(cloudflare(api, retries=1, max_backoff=0.3)) as purger:
        started = time.monotonic()
        result = await purger.purge(["a"])
    assert result.ok and len(api.calls) == 2
    # Retry-After asked for 5s, far over backoff=0.01; max_backoff caps the wait at 0.3s.
    waited = api.calls[1].at - api.calls[0].at
    assert 0.25 <= waited < 3 and time.monotonic() - started < 4


async def test_client_errors_are_not_retried(api: ScriptedAPI) -> None:
    api.default = Reply(status=403, body={"msg": "token lacks purge_select"})
    async with Purger(fastly(api, retries=3)) as purger:
        result = await purger.purge(["a", "b"])
    [outcome] = result.outcomes
    assert not outcome.ok and outcome.attempts == 1 and len(api.calls) == 1
    assert outcome.failed == ("a", "b") and outcome.purged == ()
    assert "403" in (outcome.error or "") and "purge_select" in (outcome.error or "")


async def test_retries_are_bounded_and_failure_is_reported_not_raised(
    api: ScriptedAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.default = Reply(status=500)
    async with Purger(fastly(api, retries=2)) as purger:
        with caplog.at_level(logging.WARNING, logger="redline.http.purge"):
            result = await purger.purge(["a"])
    assert not result.ok and len(api.calls) == 3 and result.outcomes[0].attempts == 3
    assert result.failed_tags == ("a",)
    [record] = [r for r in caplog.records if r.name == "redline.http.purge"]
    assert "fastly service svc1" in record.getMessage() and "HTTP 500" in record.getMessage()


async def test_a_slow_cdn_times_out_each_attempt(api: ScriptedAPI) -> None:
    api.default = Reply(delay=3.0)
    async with Purger(fastly(api, timeout=0.3, retries=1)) as purger:
        started = time.monotonic()
        result = await purger.purge(["a"])
    elapsed = time.monotonic() - started
    [outcome] = result.outcomes
    assert not outcome.ok and outcome.attempts == 2 and len(api.calls) == 2
    assert "Timeout" in (outcome.error or "")
    assert elapsed < 2.5


async def test_the_purge_deadline_bounds_the_whole_call(api: ScriptedAPI) -> None:
    api.default = Reply(delay=3.0)
    async with Purger(fastly(api, timeout=30), cloudflare(api, timeout=30), timeout=0.5) as purger:
        started = time.monotonic()
        result = await purger.purge(["a"])
    assert time.monotonic() - started < 2.0
    assert [o.target for o in result.failed] == ["fastly service svc1", "cloudflare zone zone9"]
    assert all("timed out" in (o.error or "") for o in result.outcomes)


async def test_partial_failure_names_the_tags_that_were_not_purged(api: ScriptedAPI) -> None:
    api.script = [Reply(), Reply(status=400, body={"success": False, "errors": ["bad"]})]
    tags = [f"t{i}" for i in range(65)]
    async with Purger(cloudflare(api)) as purger:
        result = await purger.purge(tags)
    [outcome] = result.outcomes
    assert outcome.purged == tuple(tags[:30] + tags[60:])
    assert outcome.failed == tuple(tags[30:60]) == result.failed_tags
    assert len(api.calls) == 3 and not result.ok


async def test_one_failing_cdn_does_not_stop_the_others(api: ScriptedAPI) -> None:
    down = ScriptedAPI()  # closed at once: nothing listens, connections are refused
    down.server_close()
    broken = FastlyPurger("svc1", TOKEN, base_url=down.url, timeout=0.5, retries=0)
    async with Purger(broken, cloudflare(api)) as purger:
        result = await purger.purge(["a"])
    by_target = {outcome.target: outcome for outcome in result.outcomes}
    assert by_target["cloudflare zone zone9"].ok
    assert not by_target["fastly service svc1"].ok
    assert [o.target for o in result.failed] == ["fastly service svc1"]


async def test_connections_are_reused_between_purges(api: ScriptedAPI) -> None:
    async with Purger(fastly(api)) as purger:
        for tag in ("a", "b", "c"):
            await purger.purge([tag])
    assert len(api.calls) == 3
    assert len({call.port for call in api.calls}) == 1


# -- tokens never leak --------------------------------------------------------------------------


async def test_tokens_never_appear_in_reprs_outcomes_or_logs(
    api: ScriptedAPI, caplog: pytest.LogCaptureFixture
) -> None:
    # A hostile or buggy API echoing the credential back must not get it into our logs.
    api.default = Reply(status=401, body={"error": f"bad key {TOKEN}", "success": False})
    adapters = [fastly(api), cloudflare(api)]
    purger = Purger(*adapters)
    with caplog.at_level(logging.DEBUG):
        result = await purger.purge(["a"])
        await purger.aclose()
    assert len(api.calls) == 2 and not result.ok
    texts = [repr(purger), repr(SyncPurger(*adapters)), *map(repr, adapters), repr(result)]
    texts += [record.getMessage() for record in caplog.records]
    assert any("[token]" in (o.error or "") for o in result.outcomes)
    for text in texts:
        assert TOKEN not in text


def test_a_bad_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(PurgeError, match="token") as exc:
        FastlyPurger("svc1", "abc\r\nX-Injected: 1")
    assert "X-Injected" not in str(exc.value)


def test_tokens_are_only_sent_over_https_except_to_loopback() -> None:
    with pytest.raises(PurgeError, match="https"):
        CloudflarePurger("zone9", TOKEN, base_url="http://api.example.com/client/v4")
    assert CloudflarePurger("z", TOKEN, base_url="http://127.0.0.1:9/").base_url == (
        "http://127.0.0.1:9"
    )


# -- input validation --------------------------------------------------------------------------


@pytest.mark.parametrize("tags", ["fund:7", ["has space"], ["a,b"], [""], ["caf\u00e9"], [7]])
async def test_invalid_tags_raise_before_anything_is_purged(api: ScriptedAPI, tags: object) -> None:
    async with Purger(fastly(api)) as purger:
        with pytest.raises(SurrogateKeyError):
            await purger.purge(tags)  # type: ignore[arg-type]
    assert api.calls == []


async def test_no_tags_purge_nothing(api: ScriptedAPI) -> None:
    async with Purger(fastly(api)) as purger:
        result = await purger.purge([])
    assert result.ok and result.outcomes == () and api.calls == []


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Purger(object()), "adapters must be"),  # type: ignore[arg-type]
        (lambda: Purger(cache=object()), "invalidate_tags"),  # type: ignore[arg-type]
        (lambda: Purger(timeout=0), "timeout"),
        (lambda: VarnishPurger("http://127.0.0.1:6081", mode="hard"), "'xkey' or 'ban'"),  # type: ignore[arg-type]
        (lambda: VarnishPurger("http://127.0.0.1:6081", mode="ban", soft=True), "cannot be soft"),
        (lambda: VarnishPurger([]), "at least one"),
        (lambda: VarnishPurger("127.0.0.1:6081"), "http:// or https://"),
        (lambda: FastlyPurger("", TOKEN), "service_id"),
        (lambda: FastlyPurger("svc", TOKEN, retries=-1), "retries"),
        (lambda: CloudflarePurger("z", TOKEN, max_tags_per_call=0), "max_tags_per_call"),
        (lambda: CloudflarePurger("z", TOKEN, timeout="5"), "timeout"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration_is_named(build: object, message: str) -> None:
    with pytest.raises(PurgeError, match=message):
        build()  # type: ignore[operator]


# -- the app's own caches -----------------------------------------------------------------------


async def test_the_data_cache_is_invalidated_by_the_same_call(
    api: ScriptedAPI, redis_url: str
) -> None:
    cache = Cache.from_url(redis_url)
    other = Cache.from_url(redis_url)  # another process's view of the same Redis
    try:
        await cache.set("fund-7", {"nav": 1}, tags=["fund:7"])
        await cache.set("fund-8", {"nav": 2}, tags=["fund:8"])
        assert await other.get("fund-7") == {"nav": 1}
        async with Purger(fastly(api), cache=cache) as purger:
            result = await purger.purge(["fund:7"])
        assert result.ok
        assert [o.target for o in result.outcomes] == ["cache Cache", "fastly service svc1"]
        assert await cache.get("fund-7") is None and await other.get("fund-7") is None
        assert await other.get("fund-8") == {"nav": 2}
    finally:
        await cache.aclose()
        await other.aclose()


class RecordingCache:
    """Notes when it was invalidated in the API's event list, to check the order of steps."""

    def __init__(self, api: ScriptedAPI, error: Exception | None = None) -> None:
        self.api = api
        self.error = error

    async def invalidate_tags(self, *tags: str) -> None:
        await asyncio.sleep(0.05)
        with self.api.lock:
            self.api.events.append("cache")
        if self.error is not None:
            raise self.error


async def test_caches_are_invalidated_before_any_cdn_is_purged(api: ScriptedAPI) -> None:
    async with Purger(fastly(api), cloudflare(api), cache=[RecordingCache(api)] * 2) as purger:
        result = await purger.purge(["a"])
    assert api.events == ["cache", "cache", "cdn", "cdn"]
    assert [o.target for o in result.outcomes[:2]] == [
        "cache RecordingCache #1",
        "cache RecordingCache #2",
    ]


async def test_a_failing_cache_is_reported_and_the_cdns_are_still_purged(
    api: ScriptedAPI,
) -> None:
    cache = RecordingCache(api, error=ConnectionError("redis down"))
    async with Purger(fastly(api), cache=cache) as purger:
        result = await purger.purge(["a"])
    assert [o.ok for o in result.outcomes] == [False, True]
    assert "redis down" in (result.outcomes[0].error or "")
    assert result.failed_tags == ("a",)


# -- sync apps ----------------------------------------------------------------------------------


def test_sync_purger_blocks_until_every_target_answered(api: ScriptedAPI, redis_url: str) -> None:
    cache = SyncCache.from_url(redis_url)
    cache.set("fund-7", 1, tags=["fund:7"])
    with SyncPurger(fastly(api), cloudflare(api), cache=cache) as purger:
        first = purger.purge(["fund:7"])
        second = purger.purge(["fund:8"])
    assert first.ok and second.ok and len(api.calls) == 4
    assert cache.get("fund-7") is None
    with pytest.raises(SurrogateKeyError):
        SyncPurger(fastly(api)).purge("fund:7")
    cache.close()


def test_sync_purger_close_stops_its_thread(api: ScriptedAPI) -> None:
    purger = SyncPurger(fastly(api))
    purger.purge(["a"])
    assert any(t.name == "redline-purge" for t in threading.enumerate())
    purger.close()
    purger.close()
    assert not any(t.name == "redline-purge" for t in threading.enumerate())


def test_sync_purger_works_in_a_forked_worker(api: ScriptedAPI) -> None:
    # gunicorn --preload forks workers from a parent that may already have purged.
    purger = SyncPurger(fastly(api))
    assert purger.purge(["parent"]).ok
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            code = 0 if purger.purge(["child"]).ok else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while (status := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked worker's purge hung")
        time.sleep(0.05)
    purger.close()
    assert os.waitstatus_to_exitcode(status[1]) == 0
    assert [call.headers["surrogate-key"] for call in api.calls] == ["parent", "child"]
