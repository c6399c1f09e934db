"""Remembered validators (``CachePolicy.validator_ttl``): a validator's answer kept in the
response cache under the route's tags on a real Redis, so a 304 skips even the validator's
query until a write invalidates a tag (redline/http/_response_cache.py ``validators``)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redline.cache import Cache
from redline.http import CachePolicy, CachePolicyError, HTTPCacheMiddleware, Purger, cache_policy
from redline.http._middleware import CacheRouteError


class Funds:
    """The data behind the route, and how often the validator and the handler ran."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {"7": 1, "8": 1}
        self.asked: list[str] = []
        self.runs: list[str] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def version(self, request: Request) -> int:
        fund_id = request.path_params["fund_id"]
        self.asked.append(fund_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("database is down")
        return self.versions[fund_id]


def make_app(funds: Funds, cache: Cache | None, **policy: Any) -> HTTPCacheMiddleware:
    async def fund(request: Request) -> Response:
        fund_id = request.path_params["fund_id"]
        funds.runs.append(fund_id)
        return PlainTextResponse(f"fund {fund_id} v{funds.versions[fund_id]}")

    options = {"max_age": 0, "s_maxage": 60, "tags": ("fund:{fund_id}", "funds")}
    options |= {"validator": funds.version, "validator_ttl": 300} | policy
    app = Starlette(routes=[Route("/funds/{fund_id}", fund)])
    return HTTPCacheMiddleware(
        app, policies={"/funds/*": CachePolicy("public", **options)}, cache=cache
    )


@pytest.fixture
def namespace() -> str:
    return uuid.uuid4().hex


@pytest.fixture
async def cache(redis_url: str, namespace: str) -> AsyncIterator[Cache]:
    async with Cache.from_url(redis_url, namespace=namespace, timeout=1.0) as cache:
        yield cache


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def revalidate(client: httpx.AsyncClient, etag: str, path: str = "/funds/7") -> Any:
    return await client.get(path, headers={"If-None-Match": etag})


async def test_a_remembered_validator_answers_304s_without_being_asked(cache: Cache) -> None:
    funds = Funds()
    async with client_for(make_app(funds, cache)) as client:
        etag = (await client.get("/funds/7")).headers["etag"]
        answers = [await revalidate(client, etag) for _ in range(5)]
    assert [a.status_code for a in answers] == [304] * 5
    assert all(a.headers["etag"] == etag for a in answers)
    assert funds.asked == ["7"] and funds.runs == ["7"]


async def test_a_write_and_invalidate_tags_give_a_new_etag(cache: Cache) -> None:
    funds = Funds()
    async with client_for(make_app(funds, cache)) as client:
        old = (await client.get("/funds/7")).headers["etag"]
        funds.versions["7"] = 2  # the write...
        forgotten = await revalidate(client, old)
        await cache.invalidate_tags("fund:7")  # ...and what its write path must do
        fresh = await revalidate(client, old)
        new = fresh.headers["etag"]
        again = await revalidate(client, new)
        other = await client.get("/funds/8")
    # Until a tag is invalidated the remembered answer stands: that is the promise, and why
    # validator_ttl needs tags.
    assert forgotten.status_code == 304
    assert fresh.status_code == 200 and fresh.text == "fund 7 v2" and new != old
    assert again.status_code == 304
    assert other.status_code == 200
    assert funds.asked == ["7", "7", "8"]


async def test_purger_purge_makes_remembered_validators_current(cache: Cache) -> None:
    funds = Funds()
    purger = Purger(cache=cache)
    async with client_for(make_app(funds, cache)) as client:
        old = (await client.get("/funds/7")).headers["etag"]
        funds.versions["7"] = 3
        result = await purger.purge(["funds"])
        fresh = await revalidate(client, old)
    assert result.ok
    assert fresh.status_code == 200 and fresh.headers["etag"] != old


async def test_another_process_invalidating_reaches_this_one(
    cache: Cache, redis_url: str, namespace: str
) -> None:
    funds = Funds()
    async with client_for(make_app(funds, cache)) as client:
        old = (await client.get("/funds/7")).headers["etag"]
        funds.versions["7"] = 4
        # Another app process's cache: same Redis, same namespace, its own L1.
        async with Cache.from_url(redis_url, namespace=namespace) as other:
            await other.invalidate_tags("fund:7")
        deadline = asyncio.get_running_loop().time() + 10
        while (answer := await revalidate(client, old)).status_code == 304:
            assert asyncio.get_running_loop().time() < deadline, "invalidation never arrived"
            await asyncio.sleep(0.05)
    assert answer.status_code == 200 and answer.text == "fund 7 v4"


async def test_concurrent_revalidations_ask_the_validator_once(cache: Cache) -> None:
    funds = Funds()
    async with client_for(make_app(funds, cache)) as client:
        etag = (await client.get("/funds/7")).headers["etag"]
        await cache.invalidate_tags("fund:7")
        funds.asked.clear()
        funds.gate = asyncio.Event()
        waiting = [asyncio.create_task(revalidate(client, etag)) for _ in range(5)]
        while not funds.asked:
            await asyncio.sleep(0.01)
        funds.gate.set()
        answers = await asyncio.gather(*waiting)
    assert [a.status_code for a in answers] == [304] * 5
    assert funds.asked == ["7"]


async def test_a_failing_validator_runs_the_handler_and_is_not_remembered(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    funds = Funds()
    async with client_for(make_app(funds, cache)) as client:
        etag = (await client.get("/funds/7")).headers["etag"]
        await cache.invalidate_tags("fund:7")
        funds.fail = True
        with caplog.at_level(logging.ERROR, logger="redline.http"):
            failed = await revalidate(client, etag)
        funds.fail = False
        recovered = await revalidate(client, etag)
    # The handler ran; its body's hash is not the validator's tag the client holds.
    assert failed.status_code == 200 and failed.text == "fund 7 v1"
    assert funds.runs == ["7", "7"]
    assert "validator of route /funds/{fund_id} failed" in caplog.text
    assert "database is down" in caplog.text
    assert recovered.status_code == 304 and funds.asked[-1] == "7"
    assert len(funds.runs) == 2  # the recovered validator answered before the handler


async def test_a_malformed_remembered_entry_is_not_trusted(cache: Cache, redis_url: str) -> None:
    funds = Funds()
    async with client_for(make_app(funds, cache)) as client:
        etag = (await client.get("/funds/7")).headers["etag"]
        prefix = cache._keys.entries.encode()
        with redis.Redis.from_url(redis_url) as raw:
            keys = [k[len(prefix) :].decode() for k in raw.keys(b"*") if k.startswith(prefix)]
        remembered = [key for key in keys if key.startswith("validator:")]
        assert len(remembered) == 1
        # An ETag that would split the header, as a compromised Redis might hold.
        await cache.set(remembered[0], {"v": 1, "etag": '"x"\r\nSet-Cookie: a=b', "modified": None})
        answer = await revalidate(client, etag)
    assert answer.status_code == 304 and answer.headers["etag"] == etag
    assert "set-cookie" not in answer.headers
    assert funds.asked == ["7", "7"]


async def test_credentialed_requests_are_not_remembered_for_everyone(cache: Cache) -> None:
    funds = Funds()
    async with client_for(make_app(funds, cache)) as client:
        etag = (await client.get("/funds/7")).headers["etag"]
        for _ in range(2):
            personal = await client.get(
                "/funds/7", headers={"If-None-Match": etag, "Authorization": "Bearer x"}
            )
            assert personal.status_code == 304
            assert personal.headers["cache-control"] == "private, max-age=0"
    assert funds.asked == ["7", "7", "7"]  # asked every time: no user to key an answer on


async def test_a_marked_policy_without_a_cache_is_asked_every_time_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    funds = Funds()
    policy = CachePolicy(
        "public", max_age=0, tags=("fund:{fund_id}",), validator=funds.version, validator_ttl=60
    )

    @cache_policy(policy)
    async def fund(request: Request) -> Response:
        return PlainTextResponse("fund")

    app = HTTPCacheMiddleware(Starlette(routes=[Route("/funds/{fund_id}", fund)]))
    with caplog.at_level(logging.WARNING, logger="redline.http"):
        async with client_for(app) as client:
            etag = (await client.get("/funds/7")).headers["etag"]
            answers = [await revalidate(client, etag) for _ in range(3)]
    assert [a.status_code for a in answers] == [304] * 3
    assert funds.asked == ["7"] * 4
    assert caplog.text.count("has no cache= to remember validators in") == 1


def test_validator_ttl_without_a_cache_is_refused_when_the_policy_is_known() -> None:
    with pytest.raises(CacheRouteError, match="pass cache="):
        make_app(Funds(), None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"validator_ttl": 0}, "must be a whole number of seconds > 0"),
        ({"validator_ttl": 1.5}, "must be a whole number of seconds > 0"),
        ({"validator_ttl": 60}, "set validator"),
        ({"validator_ttl": 60, "validator": len}, "needs tags"),
        (
            {"validator_ttl": 60, "validator": len, "tags": ("t",), "visibility": "private"},
            "vary_user",
        ),
    ],
)
def test_validator_ttl_misconfigurations_are_refused(options: dict[str, Any], message: str) -> None:
    options.setdefault("visibility", "public")
    with pytest.raises(CachePolicyError, match=message):
        CachePolicy(**options)
